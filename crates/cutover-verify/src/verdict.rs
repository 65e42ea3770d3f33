//! The verdict of a run: its JSON shape is `verify --json`'s, documented in the README.

#[derive(Debug, serde::Serialize)]
pub struct Verdict {
    /// The page's URL as given.
    pub url: String,
    pub between: [String; 2],
    pub requests: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    /// Requests started before the first switch began, per second of that time.
    pub baseline_requests_per_second: Option<f64>,
    /// Requests started from the first switch's start to the last switch's end, per
    /// second of that time (`null` with fewer than two switches).
    pub flipping_requests_per_second: Option<f64>,
    pub concurrency: u64,
    pub switches: usize,
    /// Not answered 2xx (or not at all).
    pub failed: usize,
    /// Naming both releases.
    pub mixed: usize,
    pub served: ReleaseCounts,
    pub latency_ms: Latency,
    /// From the last switch's rename until every request showed B; `null` if never.
    pub visibility_ms: Option<f64>,
    /// Only with assets fetched: without them the JSON is what it always was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assets: Option<AssetVerdict>,
    pub passed: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct AssetVerdict {
    pub requests: usize,
    /// Not answered 2xx (or not at all).
    pub failed: usize,
    pub not_found: usize,
    /// Failures with a switch between the page's request and the asset's answer.
    pub failed_after_switch: usize,
    /// Failures by the release whose marker the page showed (neither: none or both).
    pub failed_by_page: ReleaseCounts,
    pub examples: Vec<AssetExample>,
}

#[derive(Debug, serde::Serialize)]
pub struct AssetExample {
    pub url: String,
    /// 0 when no HTTP answer came.
    pub status: u16,
    /// The release that rendered the page asking for it, if its marker showed one.
    pub page: Option<String>,
}

/// How many of something came from A, from B, or from neither (no marker, or both).
#[derive(Debug, serde::Serialize)]
pub struct ReleaseCounts {
    pub a: usize,
    pub b: usize,
    pub neither: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p99_after_switch: Option<f64>,
    /// Requests started within 1 s after a switch was in place: what users feel of a
    /// cold cache.
    pub p99_first_second: Option<f64>,
    /// Requests started while a switch (with its checks before it) was under way.
    pub p99_during_switch: Option<f64>,
    pub p99_steady: Option<f64>,
}

impl Verdict {
    /// A failed asset request fails the run, as a failed page does.
    pub(crate) fn add_assets(&mut self, assets: AssetVerdict) {
        self.passed &= assets.failed == 0;
        self.assets = Some(assets);
    }
}

#[cfg(test)]
mod tests {
    use super::{Latency, ReleaseCounts, Verdict};

    #[test]
    fn without_assets_the_verdict_has_no_assets_key() {
        let verdict = Verdict {
            url: "http://h/".into(),
            between: ["a".into(), "b".into()],
            requests: 0,
            seconds: 1.0,
            requests_per_second: 0.0,
            baseline_requests_per_second: None,
            flipping_requests_per_second: None,
            concurrency: 1,
            switches: 0,
            failed: 0,
            mixed: 0,
            served: ReleaseCounts {
                a: 0,
                b: 0,
                neither: 0,
            },
            latency_ms: Latency {
                p50: 0.0,
                p99: 0.0,
                p99_after_switch: None,
                p99_first_second: None,
                p99_during_switch: None,
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
                "baseline_requests_per_second",
                "between",
                "concurrency",
                "failed",
                "flipping_requests_per_second",
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
}
