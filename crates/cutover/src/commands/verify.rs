//! `cutover verify`: the test the RAKUS article ran by hand, built in. Bounded keep-alive
//! load against a URL while `current` flips between two releases through the same
//! switch + refresh path a deploy uses; then the last switch, to B, and how long until
//! every request shows B. With `--assets`, each page's assets are fetched right after it,
//! as a browser would: a page rendered by one release asking the other for its CSS.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cutover_core::ReleaseId;

use crate::cli::{ChangeArgs, GlobalArgs, VerifyArgs};
use crate::error::{CommandError, Kind, Result};
use crate::printer::Printer;
use crate::progress::HostLines;
use crate::{hosts, settings};

/// Requests that start this long after a switch count as "after a switch".
const AFTER_SWITCH: f64 = 5.0;
/// Assets fetched per page at most: keeps one load iteration bounded whatever the page.
const ASSETS_PER_PAGE: usize = 16;
/// Bytes read of one asset at most; a longer one is cut (and its connection not reused).
const ASSET_BYTES: u64 = 16 << 20;
/// Failing asset URLs shown in the verdict.
const ASSET_EXAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    A,
    B,
    Mixed,
    Neither,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the load started.
    start: f64,
    latency: f64,
    /// 0 when no HTTP answer came.
    status: u16,
    served: Served,
}

impl Sample {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Which release produced (parts of) a page.
struct Marker {
    pattern: regex::Regex,
    a: String,
    b: String,
}

impl Marker {
    fn new(custom: Option<&str>, a: &ReleaseId, b: &ReleaseId) -> Result<Marker> {
        let text = match custom {
            Some(text) => text.to_string(),
            None => format!(
                r"\b({}|{})\b",
                regex::escape(a.as_str()),
                regex::escape(b.as_str())
            ),
        };
        let pattern = regex::Regex::new(&text).map_err(|e| {
            CommandError::usage(
                format!("--release-marker is not a valid regex: {e}"),
                "e.g. `release=(\\S+)`",
            )
        })?;
        Ok(Marker {
            pattern,
            a: a.to_string(),
            b: b.to_string(),
        })
    }

    fn classify(&self, body: &str) -> Served {
        let (mut a, mut b) = (false, false);
        for found in self.pattern.captures_iter(body) {
            let Some(name) = found.get(1).or_else(|| found.get(0)) else {
                continue;
            };
            a |= name.as_str() == self.a;
            b |= name.as_str() == self.b;
        }
        match (a, b) {
            (true, true) => Served::Mixed,
            (true, false) => Served::A,
            (false, true) => Served::B,
            (false, false) => Served::Neither,
        }
    }
}

/// One asset request that was not answered 2xx.
#[derive(Debug, Clone)]
struct AssetFailure {
    /// When its page was requested (seconds since the load started).
    page_start: f64,
    /// When the asset's answer came.
    end: f64,
    /// 0 when no HTTP answer came.
    status: u16,
    /// The release that rendered the page.
    page: Served,
    url: String,
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    samples: Vec<Sample>,
    asset_requests: usize,
    asset_failures: Vec<AssetFailure>,
}

#[derive(Debug, serde::Serialize)]
struct Verdict {
    url: String,
    between: [String; 2],
    requests: usize,
    seconds: f64,
    requests_per_second: f64,
    concurrency: u64,
    switches: usize,
    failed: usize,
    mixed: usize,
    served: Served3,
    latency_ms: Latency,
    /// From the last switch's rename until every request showed B; `null` if never.
    visibility_ms: Option<f64>,
    /// Only with `--assets`: without it the JSON is what it always was.
    #[serde(skip_serializing_if = "Option::is_none")]
    assets: Option<AssetVerdict>,
    passed: bool,
}

#[derive(Debug, serde::Serialize)]
struct AssetVerdict {
    requests: usize,
    /// Not answered 2xx (or not at all).
    failed: usize,
    not_found: usize,
    /// Failures with a switch between the page's request and the asset's answer.
    failed_after_switch: usize,
    /// Failures by the release whose marker the page showed (neither: none or both).
    failed_by_page: Served3,
    examples: Vec<AssetExample>,
}

#[derive(Debug, serde::Serialize)]
struct AssetExample {
    url: String,
    status: u16,
    /// The release that rendered the page asking for it, if its marker showed one.
    page: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct Served3 {
    a: usize,
    b: usize,
    neither: usize,
}

#[derive(Debug, serde::Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p99_after_switch: Option<f64>,
    p99_steady: Option<f64>,
}

pub fn verify(args: &VerifyArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    let (a, b) = between(&args.between)?;
    if !args.url.starts_with("http://") {
        return Err(CommandError::usage(
            format!("--url `{}` is not an http:// URL", args.url),
            "request the app where it runs, e.g. `--url http://127.0.0.1/index.php`",
        ));
    }
    let marker = Marker::new(args.release_marker.as_deref(), &a, &b)?;
    let page = match args.assets {
        true => Some(PageUrl::parse(&args.url).ok_or_else(|| {
            CommandError::usage(
                format!("--url `{}` names no host to fetch assets from", args.url),
                "e.g. `--url http://127.0.0.1/index.php`",
            )
        })?),
        false => None,
    };
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
            let fleet = hosts::open(
                &plans,
                access,
                settings::parallel(None),
                hosts::quiet_observer(),
                &lines,
            )?
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

    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let budget = AtomicU64::new(args.max_requests);
    let seen: Mutex<Seen> = Mutex::new(Seen::default());
    let mut switches: Vec<f64> = Vec::new();
    // When each switch was asked for: the rename fell between that and its `switches` time.
    let mut switches_asked: Vec<f64> = Vec::new();
    let mut last_switch = 0.0;
    let flipped: Result<()> = std::thread::scope(|scope| {
        for _ in 0..args.concurrency {
            scope.spawn(|| {
                let page = page.as_ref();
                load(&args.url, page, &marker, started, &stop, &budget, &seen)
            });
        }
        let flipping = (|| -> Result<()> {
            pause(args.baseline, &stop);
            let until = Instant::now() + args.duration;
            let mut on = a.clone();
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                let next_flip = Instant::now() + args.flip_every;
                on = if on == a { b.clone() } else { a.clone() };
                switches_asked.push(started.elapsed().as_secs_f64());
                switches.push(switcher.switch_to(&on)?.since(started));
                pause(next_flip.saturating_duration_since(Instant::now()), &stop);
            }
            if on != b {
                switches_asked.push(started.elapsed().as_secs_f64());
                switches.push(switcher.switch_to(&b)?.since(started));
            }
            last_switch = switches.last().copied().unwrap_or(0.0);
            pause(args.settle, &stop);
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        flipping
    });
    flipped?;
    let seconds = started.elapsed().as_secs_f64();
    let seen = seen.into_inner().unwrap_or_default();
    let mut verdict = judge(args, &a, &b, &seen.samples, &switches, last_switch, seconds);
    if args.assets {
        let spans: Vec<(f64, f64)> = switches_asked.into_iter().zip(switches.clone()).collect();
        verdict.add_assets(judge_assets(&seen, &spans, &a, &b));
    }
    let json = serde_json::to_value(&verdict).unwrap_or_default();
    printer.result(&json, || describe(&verdict));
    if verdict.passed {
        Ok(())
    } else {
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
        Err(CommandError {
            kind: Kind::Failed,
            message: format!(
                "verify failed: {} failed, {} mixed, {}{assets}",
                verdict.failed,
                verdict.mixed,
                match verdict.visibility_ms {
                    Some(ms) => format!("{b} visible to all after {ms:.0} ms"),
                    None => format!("{b} never visible to every request"),
                }
            ),
            causes: Vec::new(),
            hints,
            hosts: None,
        })
    }
}

struct Switched(Instant);
impl Switched {
    fn since(&self, start: Instant) -> f64 {
        self.0.saturating_duration_since(start).as_secs_f64()
    }
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
    fn switch_to(&self, id: &ReleaseId) -> Result<Switched> {
        match self {
            Switcher::Fleet(fleet) => {
                let mut fleet = fleet.lock().map_err(|_| {
                    CommandError::internal("the fleet session was poisoned by a panic")
                })?;
                Ok(Switched(fleet.switch_to(id)?))
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
                    &cutover_core::stage::Silent,
                )?;
                Ok(Switched(Instant::now()))
            }
        }
    }
}

fn pause(length: Duration, stop: &AtomicBool) {
    let until = Instant::now() + length;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }
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

/// One keep-alive connection requesting until told to stop or the budget is spent; with
/// `page`, each page's assets follow it on the same connection, as a browser's would.
fn load(
    url: &str,
    page: Option<&PageUrl>,
    marker: &Marker,
    started: Instant,
    stop: &AtomicBool,
    budget: &AtomicU64,
    out: &Mutex<Seen>,
) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_idle_connections_per_host(1)
        .build();
    let mut local = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
        {
            break;
        }
        let start = started.elapsed().as_secs_f64();
        let (status, body) = match agent.get(url).call() {
            Ok(response) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(ureq::Error::Status(code, response)) => {
                (code, response.into_string().unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        };
        let latency = started.elapsed().as_secs_f64() - start;
        let sample = Sample {
            start,
            latency,
            status,
            served: marker.classify(&body),
        };
        local.samples.push(sample);
        // An error page's assets are not the app's: only a page that worked is followed.
        if let Some(page) = page.filter(|_| sample.ok()) {
            for asset in page_assets(page, &body, ASSETS_PER_PAGE) {
                let status = fetch_asset(&agent, &asset);
                local.asset_requests += 1;
                if !(200..300).contains(&status) {
                    local.asset_failures.push(AssetFailure {
                        page_start: start,
                        end: started.elapsed().as_secs_f64(),
                        status,
                        page: sample.served,
                        url: asset,
                    });
                }
            }
        }
        if status == 0 {
            // No server: do not spin.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Ok(mut all) = out.lock() {
        all.samples.extend(local.samples);
        all.asset_requests += local.asset_requests;
        all.asset_failures.extend(local.asset_failures);
    }
}

/// The asset's status (0: no answer).
fn fetch_asset(agent: &ureq::Agent, url: &str) -> u16 {
    use std::io::Read;
    let response = match agent.get(url).call() {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(_) => return 0,
    };
    let status = response.status();
    // Read to the end so the keep-alive connection serves the next request, as a browser's.
    let _ = std::io::copy(
        &mut response.into_reader().take(ASSET_BYTES),
        &mut std::io::sink(),
    );
    status
}

/// Latencies in seconds, sorted once so several percentiles can be read from them.
struct Sorted(Vec<f64>);

impl Sorted {
    fn new(mut values: Vec<f64>) -> Sorted {
        values.sort_by(f64::total_cmp);
        Sorted(values)
    }

    /// The `p`th percentile in milliseconds (nearest rank); `None` with no values.
    fn ms(&self, p: f64) -> Option<f64> {
        let last = self.0.len().checked_sub(1)?;
        let rank = ((p / 100.0) * last as f64).round() as usize;
        Some(self.0[rank.min(last)] * 1000.0)
    }
}

fn judge(
    args: &VerifyArgs,
    a: &ReleaseId,
    b: &ReleaseId,
    samples: &[Sample],
    switches: &[f64],
    last_switch: f64,
    seconds: f64,
) -> Verdict {
    let count = |served| {
        samples
            .iter()
            .filter(|s| s.ok() && s.served == served)
            .count()
    };
    let after_switch = |s: &&Sample| {
        switches
            .iter()
            .any(|&at| s.start >= at && s.start < at + AFTER_SWITCH)
    };
    let first_switch = switches.first().copied().unwrap_or(f64::INFINITY);
    let latencies = |keep: &dyn Fn(&Sample) -> bool| {
        samples
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.latency)
            .collect::<Vec<_>>()
    };
    // Visibility: from the last rename until the end of the last request, started after
    // it, that did not show B. Not visible if such requests continue to the end.
    let settle_end = samples.iter().map(|s| s.start).fold(last_switch, f64::max);
    let not_b: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start >= last_switch && !(s.ok() && s.served == Served::B))
        .collect();
    let tail = last_switch + (settle_end - last_switch) * 0.8;
    let visibility_ms = if not_b.iter().any(|s| s.start >= tail) {
        None
    } else {
        Some(
            not_b
                .iter()
                .map(|s| (s.start + s.latency - last_switch).max(0.0))
                .fold(0.0, f64::max)
                * 1000.0,
        )
    };
    let all = Sorted::new(latencies(&|_| true));
    let failed = samples.iter().filter(|s| !s.ok()).count();
    let mixed = samples.iter().filter(|s| s.served == Served::Mixed).count();
    Verdict {
        url: args.url.clone(),
        between: [a.to_string(), b.to_string()],
        requests: samples.len(),
        seconds,
        requests_per_second: samples.len() as f64 / seconds.max(f64::EPSILON),
        concurrency: args.concurrency,
        switches: switches.len(),
        failed,
        mixed,
        served: Served3 {
            a: count(Served::A),
            b: count(Served::B),
            neither: count(Served::Neither),
        },
        latency_ms: Latency {
            p50: all.ms(50.0).unwrap_or(0.0),
            p99: all.ms(99.0).unwrap_or(0.0),
            p99_after_switch: Sorted::new(latencies(&|s| after_switch(&s))).ms(99.0),
            p99_steady: Sorted::new(latencies(&|s| s.start + s.latency < first_switch)).ms(99.0),
        },
        visibility_ms,
        assets: None,
        passed: failed == 0 && mixed == 0 && visibility_ms.is_some(),
    }
}

impl Verdict {
    /// A failed asset request fails the run, as a failed page does.
    fn add_assets(&mut self, assets: AssetVerdict) {
        self.passed &= assets.failed == 0;
        self.assets = Some(assets);
    }
}

/// `switches`: when each was asked for and when it was done, the rename in between.
fn judge_assets(
    seen: &Seen,
    switches: &[(f64, f64)],
    a: &ReleaseId,
    b: &ReleaseId,
) -> AssetVerdict {
    let mut failures = seen.asset_failures.clone();
    failures.sort_by(|x, y| x.end.total_cmp(&y.end));
    let count = |keep: &dyn Fn(&AssetFailure) -> bool| failures.iter().filter(|f| keep(f)).count();
    let release = |served| match served {
        Served::A => Some(a.to_string()),
        Served::B => Some(b.to_string()),
        Served::Mixed | Served::Neither => None,
    };
    let mut examples: Vec<AssetExample> = Vec::new();
    for failure in &failures {
        if examples.len() == ASSET_EXAMPLES {
            break;
        }
        if !examples
            .iter()
            .any(|e| e.url == failure.url && e.status == failure.status)
        {
            examples.push(AssetExample {
                url: failure.url.clone(),
                status: failure.status,
                page: release(failure.page),
            });
        }
    }
    AssetVerdict {
        requests: seen.asset_requests,
        failed: failures.len(),
        not_found: count(&|f| f.status == 404),
        // The page's release was resolved after its request left, the asset's before its
        // answer came: a switch whose rename may lie between the two.
        failed_after_switch: count(&|f| {
            switches
                .iter()
                .any(|&(asked, done)| asked < f.end && f.page_start < done)
        }),
        failed_by_page: Served3 {
            a: count(&|f| f.page == Served::A),
            b: count(&|f| f.page == Served::B),
            neither: count(&|f| matches!(f.page, Served::Mixed | Served::Neither)),
        },
        examples,
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

/// The page verify requests, split for resolving the URLs it references.
#[derive(Debug)]
struct PageUrl {
    /// `http://host:port`, as given.
    origin: String,
    /// `host:port`: what makes an absolute URL same-origin.
    authority: String,
    /// The page's path up to its last `/`, for relative references.
    dir: String,
}

impl PageUrl {
    fn parse(url: &str) -> Option<PageUrl> {
        let scheme = url.get(..7)?;
        if !scheme.eq_ignore_ascii_case("http://") {
            return None;
        }
        let rest = &url[7..];
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.is_empty() {
            return None;
        }
        let path = &rest[end..];
        let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
        let dir = match path.rfind('/') {
            Some(slash) => &path[..=slash],
            None => "/",
        };
        Some(PageUrl {
            origin: url[..7 + end].to_string(),
            authority: authority.to_string(),
            dir: dir.to_string(),
        })
    }

    /// The absolute URL of a reference in the page; `None` for another origin (host, port
    /// or scheme), another scheme (`data:`, `javascript:`…) or a bare fragment. The query
    /// stays, the fragment goes, `.` and `..` segments are resolved.
    fn resolve(&self, reference: &str) -> Option<String> {
        let reference = reference.trim_matches(|c: char| c.is_ascii_whitespace());
        let reference = reference.split('#').next().unwrap_or_default();
        let reference = reference.replace("&amp;", "&").replace("&#38;", "&");
        if reference.is_empty() {
            return None;
        }
        let scheme_end = reference.find(':').filter(|&colon| {
            let scheme = &reference[..colon];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
        let network_path = match scheme_end {
            Some(colon) if reference[..colon].eq_ignore_ascii_case("http") => {
                reference[colon + 1..].strip_prefix("//")?
            }
            Some(_) => return None,
            None => match reference.strip_prefix("//") {
                Some(rest) => rest,
                None => {
                    let path = match reference.starts_with('/') {
                        true => reference.clone(),
                        false => format!("{}{reference}", self.dir),
                    };
                    return Some(format!("{}{}", self.origin, without_dot_segments(&path)));
                }
            },
        };
        let end = network_path.find(['/', '?']).unwrap_or(network_path.len());
        if !network_path[..end].eq_ignore_ascii_case(&self.authority) {
            return None;
        }
        let path = match &network_path[end..] {
            "" => "/".to_string(),
            rest if rest.starts_with('?') => format!("/{rest}"),
            rest => rest.to_string(),
        };
        Some(format!("{}{}", self.origin, without_dot_segments(&path)))
    }
}

/// `/a/./b/../c?q` → `/a/c?q` (RFC 3986 5.2.4, on a path that starts with `/`).
fn without_dot_segments(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.find('?') {
        Some(q) => path_and_query.split_at(q),
        None => (path_and_query, ""),
    };
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            segment => {
                out.push(segment);
                continue;
            }
        }
        // `/a/..` and `/a/.` name a directory: keep the trailing slash.
        if i + 1 == segments.len() {
            out.push("");
        }
    }
    format!("/{}{query}", out.join("/"))
}

/// The same-origin assets a browser fetches as soon as it has `html`, in page order, each
/// once, at most `cap`: `<link href>` whose `rel` loads something (stylesheet, icon,
/// preload, modulepreload, manifest), `<script src>`, `<img src>`. A small tolerant
/// scanner, not an HTML parser: it skips comments and the insides of `<script>` and
/// `<style>`, and does not see `<base href>`, `srcset`, `<source>`, `url()` in CSS,
/// `@import`, or markup written by scripts; of character references it decodes `&amp;`.
fn page_assets(page: &PageUrl, html: &str, cap: usize) -> Vec<String> {
    // ASCII lowercasing keeps every byte offset, so `lower` and `html` index alike.
    let lower = html.to_ascii_lowercase();
    let mut found: Vec<String> = Vec::new();
    let mut at = 0;
    while found.len() < cap {
        let Some(open) = lower[at..].find('<').map(|offset| at + offset) else {
            break;
        };
        if lower[open..].starts_with("<!--") {
            at = lower[open..]
                .find("-->")
                .map_or(lower.len(), |end| open + end + 3);
            continue;
        }
        let name_end = lower[open + 1..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(lower.len(), |end| open + 1 + end);
        let name = &lower[open + 1..name_end];
        at = name_end;
        if !matches!(name, "link" | "script" | "img" | "style") {
            continue;
        }
        let (attributes, end) = attributes(html, name_end);
        at = end;
        let value = |wanted: &str| {
            attributes
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| *value)
        };
        let reference = match name {
            "link" => value("rel")
                .filter(|rel| {
                    rel.split_ascii_whitespace().any(|token| {
                        ["stylesheet", "icon", "preload", "modulepreload", "manifest"]
                            .iter()
                            .any(|loads| token.eq_ignore_ascii_case(loads))
                    })
                })
                .and(value("href")),
            "img" => value("src"),
            _ => {
                // Raw text: whatever looks like a tag in a script or a style is not one.
                let close = format!("</{name}");
                at = lower[at..].find(&close).map_or(lower.len(), |end| at + end);
                value("src").filter(|_| name == "script")
            }
        };
        if let Some(url) = reference.and_then(|reference| page.resolve(reference)) {
            if !found.contains(&url) {
                found.push(url);
            }
        }
    }
    found
}

/// A tag's attributes from just after its name to its `>`: names lowercased, values as
/// written (quoted or not); and where the tag ends.
fn attributes(html: &str, from: usize) -> (Vec<(String, &str)>, usize) {
    let bytes = html.as_bytes();
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut found = Vec::new();
    let mut i = from;
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        match bytes.get(i) {
            None => return (found, bytes.len()),
            Some(b'>') => return (found, i + 1),
            Some(_) => {}
        }
        let start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
        {
            i += 1;
        }
        if i == start {
            // A stray `=`: step over it.
            i += 1;
            continue;
        }
        let name = html[start..i].to_ascii_lowercase();
        i = skip_space(i);
        let mut value = "";
        if bytes.get(i) == Some(&b'=') {
            i = skip_space(i + 1);
            match bytes.get(i) {
                Some(&quote) if quote == b'"' || quote == b'\'' => {
                    let start = i + 1;
                    let end = html[start..]
                        .find(quote as char)
                        .map_or(bytes.len(), |end| start + end);
                    value = &html[start..end];
                    i = (end + 1).min(bytes.len());
                }
                _ => {
                    let start = i;
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                        i += 1;
                    }
                    value = &html[start..i];
                }
            }
        }
        found.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::{page_assets, PageUrl, Sorted};

    fn assets(page: &str, html: &str) -> Vec<String> {
        page_assets(&PageUrl::parse(page).unwrap(), html, 16)
    }

    #[test]
    fn assets_are_same_origin_references_resolved_against_the_page() {
        let html = r##"<!doctype html><html><head>
            <link rel="stylesheet" href="/css/app.1111.css?v=2&amp;x=1">
            <LINK REL='shortcut icon' HREF='favicon.ico'>
            <link rel="canonical" href="/shop/cart">
            <link rel=preload href=../fonts/a.woff2 as=font>
            <script src="js/app.js#main" defer></script>
            <script>document.write('<img src="/not/a/tag.png">')</script>
            <!-- <img src="/commented.png"> -->
            <img alt="x > y" src="./img/../img/logo.png"/>
            <img src="http://127.0.0.1:8080/abs/same.png">
            <img src="//127.0.0.1:8080/proto/relative.png">
            <img src="http://cdn.example.com/external.png">
            <img src="//cdn.example.com/external.png">
            <img src="https://127.0.0.1:8080/other-scheme.png">
            <img src="http://127.0.0.1:9090/other-port.png">
            <img src="data:image/png;base64,iVBORw0KGgo=">
            <img src="javascript:void(0)">
            <img src="#top">
            <img src="">
            <img src="/css/app.1111.css?v=2&x=1">
            </head></html>"##;
        assert_eq!(
            assets("http://127.0.0.1:8080/shop/index.php?page=1", html),
            [
                "http://127.0.0.1:8080/css/app.1111.css?v=2&x=1",
                "http://127.0.0.1:8080/shop/favicon.ico",
                "http://127.0.0.1:8080/fonts/a.woff2",
                "http://127.0.0.1:8080/shop/js/app.js",
                "http://127.0.0.1:8080/shop/img/logo.png",
                "http://127.0.0.1:8080/abs/same.png",
                "http://127.0.0.1:8080/proto/relative.png",
            ]
        );
    }

    #[test]
    fn assets_tolerate_odd_pages_and_stay_bounded() {
        assert_eq!(assets("http://h/", ""), Vec::<String>::new());
        assert_eq!(assets("http://h", "<img src=a.png"), ["http://h/a.png"]);
        assert_eq!(
            assets("http://h/p", "<img = src=\"x.png\"><script src='/s.js'"),
            ["http://h/x.png", "http://h/s.js"]
        );
        assert_eq!(
            assets("http://h/", "<img src=\"/ü/é.png\"> <"),
            ["http://h/ü/é.png"]
        );
        assert_eq!(
            assets("http://h/a/b/", "<img src=\"../..\"><img src=\"?q=1\">"),
            ["http://h/", "http://h/a/b/?q=1"]
        );
        let many: String = (0..40).map(|n| format!("<img src=\"/{n}.png\">")).collect();
        let capped = assets("http://h/", &many);
        assert_eq!(capped.len(), 16);
        assert_eq!(capped[15], "http://h/15.png");
        assert!(PageUrl::parse("http:///index.php").is_none());
        assert!(PageUrl::parse("https://h/").is_none());
    }

    #[test]
    fn without_assets_the_verdict_has_no_assets_key() {
        let verdict = super::Verdict {
            url: "http://h/".into(),
            between: ["a".into(), "b".into()],
            requests: 0,
            seconds: 1.0,
            requests_per_second: 0.0,
            concurrency: 1,
            switches: 0,
            failed: 0,
            mixed: 0,
            served: super::Served3 {
                a: 0,
                b: 0,
                neither: 0,
            },
            latency_ms: super::Latency {
                p50: 0.0,
                p99: 0.0,
                p99_after_switch: None,
                p99_steady: None,
            },
            visibility_ms: None,
            assets: None,
            passed: false,
        };
        let json = serde_json::to_value(&verdict).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        // The README's shape, unchanged by --assets existing.
        assert_eq!(
            keys,
            [
                "between",
                "concurrency",
                "failed",
                "latency_ms",
                "mixed",
                "passed",
                "requests",
                "requests_per_second",
                "seconds",
                "served",
                "switches",
                "url",
                "visibility_ms",
            ]
        );
    }

    #[test]
    fn percentiles_use_the_nearest_rank_of_sorted_values() {
        let values = Sorted::new((1..=100).rev().map(|ms| ms as f64 / 1000.0).collect());
        assert_eq!(values.ms(50.0), Some(51.0));
        assert_eq!(values.ms(99.0), Some(99.0));
        assert_eq!(values.ms(100.0), Some(100.0));
        assert_eq!(Sorted::new(Vec::new()).ms(99.0), None);
    }
}
