//! `cutover verify`: the test the RAKUS article ran by hand, built in. Bounded keep-alive
//! load against a URL while `current` flips between two releases through the same
//! switch + refresh path a deploy uses; then the last switch, to B, and how long until
//! every request shows B. With `--assets`, each page's assets are fetched right after it,
//! as a browser would: a page rendered by one release asking the other for its CSS.
//!
//! The load and the verdict are `cutover_verify`'s; here are the arguments, the flip
//! ([`Switcher`]) and the output.

use std::time::Instant;

use cutover_core::ReleaseId;
use cutover_verify::{AssetVerdict, Flip, Marker, PageUrl, Scenario, Verdict};

use crate::cli::{ChangeArgs, GlobalArgs, VerifyArgs};
use crate::error::{CommandError, Result};
use crate::printer::Printer;
use crate::progress::HostLines;
use crate::{hosts, settings};

pub fn verify(args: &VerifyArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    let (a, b) = between(&args.between)?;
    let page = PageUrl::parse(&args.url)?;
    let marker = Marker::new(args.release_marker.as_deref(), &a, &b)?;
    page.reachable(std::time::Duration::from_secs(10))
        .map_err(|why| {
            CommandError::failed(format!("--url {} cannot be reached: {why}", args.url))
                .with_hint("start the app's web server or correct --url; nothing was switched")
        })?;
    // Held for the whole run when cutover switches: no deploy may interleave.
    let plans;
    let lines;
    let switcher = match &args.switch_command {
        Some(command) => Switcher::Command(command),
        None => {
            plans = settings::host_plans(&args.target, &config)?;
            lines = HostLines::new(printer, &plans);
            let change = ChangeArgs {
                dry_run: false,
                wait_lock: args.wait_lock,
            };
            let access = settings::access(&change, false);
            let fleet = hosts::open(&plans, access, &lines)?
                .require_open("nothing was switched")?
                .require_releases(&[&a, &b])?;
            Switcher::Fleet(std::sync::Mutex::new(fleet))
        }
    };
    switcher.switch_to(&a)?;
    printer.progress_line(&format!(
        "verify: {} connections on {}, flipping {a} <-> {b} every {:?} for {:?}",
        args.concurrency, args.url, args.flip_every, args.duration
    ));
    let scenario = Scenario {
        page,
        marker,
        a,
        b,
        concurrency: args.concurrency,
        max_requests: args.max_requests,
        baseline: args.baseline,
        duration: args.duration,
        flip_every: args.flip_every,
        settle: args.settle,
        assets: args.assets,
    };
    let verdict = cutover_verify::run(&scenario, &switcher)?;
    let json = serde_json::to_value(&verdict).unwrap_or_default();
    printer.result(&json, || describe(&verdict));
    if verdict.passed {
        Ok(())
    } else {
        Err(failure(&verdict))
    }
}

/// The error a failed run ends with: its numbers, and what usually causes them.
fn failure(verdict: &Verdict) -> CommandError {
    let b = &verdict.between[1];
    let mut hints = vec![
        "a request that never shows the new release means a stale cache: see [refresh] in README; failed requests during a reload: process_control_timeout".to_string(),
    ];
    let assets = match &verdict.assets {
        Some(assets) => {
            if assets.failed_after_switch > 0 {
                hints.push("assets failing across a switch: a page rendered by one release asked the other for its files; carry the old release's static files into the new one ([deploy] asset_dirs)".into());
            }
            if assets.failed > assets.failed_after_switch {
                hints.push("assets failing with no switch in between: the page names files its own release does not serve".into());
            }
            format!(
                ", {} of {} asset requests failed ({} not found)",
                assets.failed, assets.requests, assets.not_found
            )
        }
        None => String::new(),
    };
    CommandError::failed(format!(
        "verify failed: {} failed, {} mixed, {}{assets}",
        verdict.failed,
        verdict.mixed,
        match verdict.visibility_ms {
            Some(ms) => format!("{b} visible to all after {ms:.0} ms"),
            None => format!("{b} never visible to every request"),
        }
    ))
    .with_hints(hints)
}

fn between(text: &str) -> Result<(ReleaseId, ReleaseId)> {
    let usage = || {
        CommandError::usage(
            format!("--between `{text}` must name two releases"),
            "e.g. `--between 20240101120000,20240102120000` (see `cutover releases`)",
        )
    };
    let (a, b) = text.split_once(',').ok_or_else(usage)?;
    let (a, b) = (
        settings::release_id(a.trim())?,
        settings::release_id(b.trim())?,
    );
    if a == b {
        return Err(usage());
    }
    Ok((a, b))
}

/// How a flip happens: cutover's own switch, refresh and check on every host (a deploy
/// path given with `--to` is a fleet of one), or the user's command.
enum Switcher<'a> {
    Fleet(std::sync::Mutex<cutover_pipeline::Fleet<'a>>),
    Command(&'a str),
}

impl Switcher<'_> {
    /// Returns the moment the new release was in place (the rename, or the command's end);
    /// the refresh comes after it, so its time counts toward visibility.
    fn switch_to(&self, id: &ReleaseId) -> Result<Instant> {
        match self {
            Switcher::Fleet(fleet) => {
                let mut fleet = fleet.lock().map_err(|_| {
                    CommandError::internal("the fleet session was poisoned by a panic")
                })?;
                Ok(fleet.switch_to(id)?)
            }
            Switcher::Command(command) => {
                let here =
                    std::env::current_dir().map_err(|e| cutover_core::Error::io("read", ".", e))?;
                let env = [("CUTOVER_SWITCH_TO", id.as_str())];
                cutover_core::command::run(
                    "switch",
                    command,
                    &here,
                    &env,
                    None,
                    &cutover_core::stage::Silent,
                )?;
                Ok(Instant::now())
            }
        }
    }
}

impl Flip for Switcher<'_> {
    type Error = CommandError;
    fn flip_to(&self, release: &ReleaseId) -> Result<Instant> {
        self.switch_to(release)
    }
}

fn describe(v: &Verdict) -> String {
    let opt = |ms: Option<f64>| ms.map_or("-".to_string(), |ms| format!("{ms:.1} ms"));
    format!(
        "{} requests in {:.1} s ({:.0} req/s), {} connections, {} switches between {} and {}\n\
         \x20 failed (non-2xx or no answer)     {}\n\
         \x20 mixing both releases             {}\n\
         \x20 served by {} / {} / neither       {} / {} / {}\n\
         \x20 latency p50 / p99                {:.1} ms / {:.1} ms\n\
         \x20 p99 in the 5 s after a switch    {} (steady: {})\n\
         \x20 {} visible to every request       {}\n\
         {}{}\n",
        v.requests,
        v.seconds,
        v.requests_per_second,
        v.concurrency,
        v.switches,
        v.between[0],
        v.between[1],
        v.failed,
        v.mixed,
        v.between[0],
        v.between[1],
        v.served.a,
        v.served.b,
        v.served.neither,
        v.latency_ms.p50,
        v.latency_ms.p99,
        opt(v.latency_ms.p99_after_switch),
        opt(v.latency_ms.p99_steady),
        v.between[1],
        v.visibility_ms
            .map_or("never, within the settle time".to_string(), |ms| format!(
                "{ms:.0} ms after the last switch"
            )),
        v.assets
            .as_ref()
            .map_or(String::new(), |assets| describe_assets(v, assets)),
        if v.passed { "PASS" } else { "FAIL" },
    )
}

fn describe_assets(v: &Verdict, assets: &AssetVerdict) -> String {
    let by = &assets.failed_by_page;
    let mut text = format!(
        "\x20 asset requests / failed / 404     {} / {} / {}\n\
         \x20 asset failures across a switch    {}\n\
         \x20 asset failures, page by {} / {} / neither  {} / {} / {}\n",
        assets.requests,
        assets.failed,
        assets.not_found,
        assets.failed_after_switch,
        v.between[0],
        v.between[1],
        by.a,
        by.b,
        by.neither,
    );
    for example in &assets.examples {
        let status = match example.status {
            0 => "no answer".to_string(),
            status => status.to_string(),
        };
        let page = example.page.as_deref().unwrap_or("neither");
        text.push_str(&format!("    {status} {} (page by {page})\n", example.url));
    }
    text
}
