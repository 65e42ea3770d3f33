//! From what the connections saw to the verdict.

use crate::load::{AssetFailure, Sample, Seen};
use crate::marker::Served;
use crate::run::{Scenario, Switch};
use crate::stats::Sorted;
use crate::verdict::{AssetExample, AssetVerdict, Latency, ReleaseCounts, Verdict};

/// Requests that start this long after a switch count as "after a switch".
const AFTER_SWITCH: f64 = 5.0;
/// The window of `p99_first_second`.
const FIRST_SECOND: f64 = 1.0;
/// Failing asset URLs shown in the verdict.
const ASSET_EXAMPLES: usize = 5;

pub(crate) fn judge(
    scenario: &Scenario,
    samples: &[Sample],
    switches: &[Switch],
    seconds: f64,
) -> Verdict {
    let count = |served| {
        samples
            .iter()
            .filter(|s| s.ok() && s.served == served)
            .count()
    };
    let within = |s: &Sample, window: f64| {
        switches
            .iter()
            .any(|switch| s.start >= switch.done && s.start < switch.done + window)
    };
    let during_switch = |s: &Sample| {
        switches
            .iter()
            .any(|switch| s.start >= switch.asked && s.start < switch.done)
    };
    let started_between = |from: f64, to: f64| {
        (to > from).then(|| {
            let n = samples
                .iter()
                .filter(|s| s.start >= from && s.start < to)
                .count();
            n as f64 / (to - from)
        })
    };
    let baseline_rps = switches
        .first()
        .and_then(|first| started_between(0.0, first.asked));
    let flipping_rps = match switches {
        [first, .., last] => started_between(first.asked, last.done),
        _ => None,
    };
    // Steady state ends when the first switch is asked for: what runs before the rename
    // (a pre-warm, a planned OPcache restart) is part of the switch, not of the baseline.
    let first_switch = switches
        .first()
        .map_or(f64::INFINITY, |switch| switch.asked);
    let last_switch = switches.last().map_or(0.0, |switch| switch.done);
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
    // No request after the last switch showed B (all failed, or none ran): never visible.
    let saw_b = samples
        .iter()
        .any(|s| s.start >= last_switch && s.ok() && s.served == Served::B);
    let visibility_ms = if !saw_b || not_b.iter().any(|s| s.start >= tail) {
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
        url: scenario.page.as_given().to_string(),
        between: [scenario.a.to_string(), scenario.b.to_string()],
        requests: samples.len(),
        seconds,
        requests_per_second: samples.len() as f64 / seconds.max(f64::EPSILON),
        baseline_requests_per_second: baseline_rps,
        flipping_requests_per_second: flipping_rps,
        concurrency: scenario.concurrency,
        switches: switches.len(),
        failed,
        mixed,
        served: ReleaseCounts {
            a: count(Served::A),
            b: count(Served::B),
            neither: count(Served::Neither),
        },
        latency_ms: Latency {
            p50: all.ms(50.0).unwrap_or(0.0),
            p99: all.ms(99.0).unwrap_or(0.0),
            p99_after_switch: Sorted::new(latencies(&|s| within(s, AFTER_SWITCH))).ms(99.0),
            p99_first_second: Sorted::new(latencies(&|s| within(s, FIRST_SECOND))).ms(99.0),
            p99_during_switch: Sorted::new(latencies(&during_switch)).ms(99.0),
            p99_steady: Sorted::new(latencies(&|s| s.start + s.latency < first_switch)).ms(99.0),
        },
        visibility_ms,
        assets: None,
        passed: failed == 0 && mixed == 0 && visibility_ms.is_some(),
    }
}

pub(crate) fn judge_assets(scenario: &Scenario, seen: &Seen, switches: &[Switch]) -> AssetVerdict {
    let mut failures = seen.asset_failures.clone();
    failures.sort_by(|x, y| x.end.total_cmp(&y.end));
    let count = |keep: &dyn Fn(&AssetFailure) -> bool| failures.iter().filter(|f| keep(f)).count();
    let release = |served| match served {
        Served::A => Some(scenario.a.to_string()),
        Served::B => Some(scenario.b.to_string()),
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
                .any(|switch| switch.asked < f.end && f.page_start < switch.done)
        }),
        failed_by_page: ReleaseCounts {
            a: count(&|f| f.page == Served::A),
            b: count(&|f| f.page == Served::B),
            neither: count(&|f| matches!(f.page, Served::Mixed | Served::Neither)),
        },
        examples,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cutover_core::ReleaseId;

    use super::{judge, judge_assets};
    use crate::load::{AssetFailure, Sample, Seen};
    use crate::marker::{Marker, Served};
    use crate::page_url::PageUrl;
    use crate::run::{Scenario, Switch};

    fn scenario() -> Scenario {
        let (a, b) = (
            ReleaseId::parse("v1").unwrap(),
            ReleaseId::parse("v2").unwrap(),
        );
        Scenario {
            page: PageUrl::parse("http://h/").unwrap(),
            marker: Marker::new(None, &a, &b).unwrap(),
            a,
            b,
            concurrency: 1,
            max_requests: 100,
            baseline: Duration::ZERO,
            duration: Duration::ZERO,
            flip_every: Duration::ZERO,
            settle: Duration::ZERO,
            assets: true,
        }
    }

    const SWITCHES: [Switch; 2] = [
        Switch {
            asked: 0.9,
            done: 1.0,
        },
        Switch {
            asked: 1.9,
            done: 2.0,
        },
    ];

    fn sample(start: f64, latency: f64, status: u16, served: Served) -> Sample {
        Sample {
            start,
            latency,
            status,
            served,
        }
    }

    /// Steady A before the switches, a stale A just after the last one, then only B.
    fn samples() -> Vec<Sample> {
        let mut samples = vec![
            sample(0.5, 0.010, 200, Served::A),
            sample(1.5, 0.020, 200, Served::B),
            sample(2.1, 0.050, 200, Served::A),
        ];
        samples.extend((0..5).map(|n| sample(2.5 + n as f64 * 0.4, 0.010, 200, Served::B)));
        samples
    }

    #[test]
    fn visibility_runs_until_the_last_request_not_showing_b_ends() {
        let verdict = judge(&scenario(), &samples(), &SWITCHES, 4.0);
        let visibility = verdict.visibility_ms.unwrap();
        assert!((visibility - 150.0).abs() < 1e-6, "{visibility}");
        assert_eq!((verdict.failed, verdict.mixed, verdict.switches), (0, 0, 2));
        assert_eq!((verdict.served.a, verdict.served.b), (2, 6));
        assert_eq!(verdict.latency_ms.p99_steady, Some(10.0));
        assert_eq!(verdict.between, ["v1", "v2"]);
        assert!(verdict.passed);
    }

    #[test]
    fn the_first_second_and_the_flipping_rate_have_their_own_windows() {
        let mut samples = samples();
        // Started while the first switch ran (0.9..1.0): only "during".
        samples.push(sample(0.95, 0.300, 200, Served::A));
        let verdict = judge(&scenario(), &samples, &SWITCHES, 4.0);
        let latency = &verdict.latency_ms;
        // Within 1 s of a switch: 1.5 (20 ms), 2.1 (50 ms), 2.5 and 2.9 (10 ms).
        assert_eq!(latency.p99_first_second, Some(50.0));
        assert_eq!(latency.p99_during_switch, Some(300.0));
        // One request started in the 0.9 s before the first switch; two from its start to
        // the last one's end (0.95 and 1.5) in 1.1 s.
        let baseline = verdict.baseline_requests_per_second.unwrap();
        assert!((baseline - 1.0 / 0.9).abs() < 1e-9, "{baseline}");
        let flipping = verdict.flipping_requests_per_second.unwrap();
        assert!((flipping - 2.0 / 1.1).abs() < 1e-9, "{flipping}");
    }

    #[test]
    fn a_page_without_b_late_in_the_settle_time_means_never_visible() {
        let mut samples = samples();
        samples.push(sample(4.2, 0.010, 200, Served::Mixed));
        let verdict = judge(&scenario(), &samples, &SWITCHES, 4.5);
        assert_eq!(verdict.visibility_ms, None);
        assert_eq!(verdict.mixed, 1);
        assert!(!verdict.passed);
    }

    #[test]
    fn no_page_showing_b_after_the_last_switch_is_never_visible_not_zero_ms() {
        // Every request failed (nothing answered), or none ran after the switch.
        let failed: Vec<Sample> = (0..10)
            .map(|n| sample(0.5 + n as f64 * 0.3, 0.001, 0, Served::Neither))
            .collect();
        for samples in [failed, Vec::new()] {
            let verdict = judge(&scenario(), &samples, &SWITCHES, 4.0);
            assert_eq!(verdict.visibility_ms, None, "{} samples", samples.len());
            assert!(!verdict.passed);
        }
    }

    #[test]
    fn asset_failures_are_told_apart_by_a_switch_between_page_and_answer() {
        let failure = |page_start: f64, end: f64, status: u16, page: Served| AssetFailure {
            page_start,
            end,
            status,
            page,
            url: format!("http://h/{status}.css"),
        };
        let seen = Seen {
            samples: Vec::new(),
            asset_requests: 10,
            asset_failures: vec![
                failure(3.0, 3.1, 500, Served::Neither),
                failure(0.95, 1.05, 404, Served::A),
                failure(1.95, 2.05, 404, Served::B),
            ],
        };
        let assets = judge_assets(&scenario(), &seen, &SWITCHES);
        assert_eq!(
            (assets.requests, assets.failed, assets.not_found),
            (10, 3, 2)
        );
        assert_eq!(assets.failed_after_switch, 2);
        let by = &assets.failed_by_page;
        assert_eq!((by.a, by.b, by.neither), (1, 1, 1));
        // By when their answers came, each URL and status once.
        let examples: Vec<(&str, u16, Option<&str>)> = assets
            .examples
            .iter()
            .map(|e| (e.url.as_str(), e.status, e.page.as_deref()))
            .collect();
        assert_eq!(
            examples,
            [
                ("http://h/404.css", 404, Some("v1")),
                ("http://h/500.css", 500, None),
            ]
        );
    }
}
