//! `cutover verify`: the test the RAKUS article ran by hand, built in. Bounded keep-alive
//! load against a URL while `current` flips between two releases through the same
//! switch + refresh path a deploy uses; then the last switch, to B, and how long until
//! every request shows B.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cutover_core::activate::activate;
use cutover_core::history::EventKind;
use cutover_core::{DeployPath, Mode, ReleaseId};

use crate::cli::{ChangeArgs, GlobalArgs, VerifyArgs};
use crate::error::{CommandError, Kind, Result};
use crate::printer::Printer;
use crate::refresh::{self, RefreshPlan};
use crate::settings;

/// Requests that start this long after a switch count as "after a switch".
const AFTER_SWITCH: f64 = 5.0;

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
    passed: bool,
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
    // Held for the whole run when cutover switches: no deploy may interleave.
    let guard;
    let switcher = match &args.switch_command {
        Some(command) => Switcher::Command(command),
        None if settings::on_hosts(&args.target, &config)? => {
            let fleet = crate::fleet::Fleet::open(&config, &args.target, printer)?;
            fleet.require(&a)?;
            fleet.require(&b)?;
            Switcher::Fleet(std::sync::Mutex::new(fleet))
        }
        None => {
            let deploy = settings::existing_deploy_path(&args.target, &config)?;
            deploy.require_release(&a)?;
            deploy.require_release(&b)?;
            let plan = refresh::plan(&config, &deploy)?;
            let change = ChangeArgs {
                dry_run: false,
                wait_lock: args.wait_lock,
            };
            guard = settings::guard(&deploy, &change)?;
            Switcher::Current {
                deploy,
                mode: guard.mode(),
                plan,
            }
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
    let samples: Mutex<Vec<Sample>> = Mutex::new(Vec::new());
    let mut switches: Vec<f64> = Vec::new();
    let mut last_switch = 0.0;
    let flipped: Result<()> = std::thread::scope(|scope| {
        for _ in 0..args.concurrency {
            scope.spawn(|| load(&args.url, &marker, started, &stop, &budget, &samples));
        }
        let flipping = (|| -> Result<()> {
            pause(args.baseline, &stop);
            let until = Instant::now() + args.duration;
            let mut on = a.clone();
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                let next_flip = Instant::now() + args.flip_every;
                on = if on == a { b.clone() } else { a.clone() };
                switches.push(switcher.switch_to(&on)?.since(started));
                pause(next_flip.saturating_duration_since(Instant::now()), &stop);
            }
            if on != b {
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
    let samples = samples.into_inner().unwrap_or_default();
    let verdict = judge(args, &a, &b, &samples, &switches, last_switch, seconds);
    let json = serde_json::to_value(&verdict).unwrap_or_default();
    printer.result(&json, || describe(&verdict));
    if verdict.passed {
        Ok(())
    } else {
        Err(CommandError {
            kind: Kind::Failed,
            message: format!(
                "verify failed: {} failed, {} mixed, {}",
                verdict.failed,
                verdict.mixed,
                match verdict.visibility_ms {
                    Some(ms) => format!("{b} visible to all after {ms:.0} ms"),
                    None => format!("{b} never visible to every request"),
                }
            ),
            causes: Vec::new(),
            hints: vec![
                "a request that never shows the new release means a stale cache: see [refresh] in README; failed requests during a reload: process_control_timeout".into(),
            ],
        })
    }
}

struct Switched(Instant);
impl Switched {
    fn since(&self, start: Instant) -> f64 {
        self.0.saturating_duration_since(start).as_secs_f64()
    }
}

/// How a flip happens: cutover's own switch + refresh, or the user's command.
// One value per run: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Switcher<'a> {
    Current {
        deploy: DeployPath,
        mode: Mode<'a>,
        plan: Option<RefreshPlan>,
    },
    Command(&'a str),
    /// Every host of [hosts], over one open session each.
    Fleet(std::sync::Mutex<crate::fleet::Fleet>),
}

impl Switcher<'_> {
    /// Returns the moment the new release was in place (the rename, or the command's end);
    /// the refresh comes after it, so its time counts toward visibility.
    fn switch_to(&self, id: &ReleaseId) -> Result<Switched> {
        match self {
            Switcher::Current { deploy, mode, plan } => {
                let activation = activate(deploy, id, EventKind::Switched, *mode)?;
                let renamed = Instant::now();
                if !activation.unchanged {
                    refresh::after_switch(
                        plan.as_ref(),
                        deploy,
                        *mode,
                        id,
                        activation.previous.as_ref(),
                    )?;
                }
                Ok(Switched(renamed))
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
            Switcher::Fleet(fleet) => {
                let mut fleet = fleet.lock().map_err(|_| CommandError {
                    kind: crate::error::Kind::Failed,
                    message: "the fleet session was poisoned by a panic".into(),
                    causes: Vec::new(),
                    hints: Vec::new(),
                })?;
                Ok(Switched(fleet.switch_to(id)?))
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

/// One keep-alive connection requesting until told to stop or the budget is spent.
fn load(
    url: &str,
    marker: &Marker,
    started: Instant,
    stop: &AtomicBool,
    budget: &AtomicU64,
    out: &Mutex<Vec<Sample>>,
) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_idle_connections_per_host(1)
        .build();
    let mut local = Vec::new();
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
        local.push(Sample {
            start,
            latency,
            status,
            served: marker.classify(&body),
        });
        if status == 0 {
            // No server: do not spin.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Ok(mut all) = out.lock() {
        all.extend(local);
    }
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
        passed: failed == 0 && mixed == 0 && visibility_ms.is_some(),
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
         {}\n",
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
        if v.passed { "PASS" } else { "FAIL" },
    )
}

#[cfg(test)]
mod tests {
    use super::Sorted;

    #[test]
    fn percentiles_use_the_nearest_rank_of_sorted_values() {
        let values = Sorted::new((1..=100).rev().map(|ms| ms as f64 / 1000.0).collect());
        assert_eq!(values.ms(50.0), Some(51.0));
        assert_eq!(values.ms(99.0), Some(99.0));
        assert_eq!(values.ms(100.0), Some(100.0));
        assert_eq!(Sorted::new(Vec::new()).ms(99.0), None);
    }
}
