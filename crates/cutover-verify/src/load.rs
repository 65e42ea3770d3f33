//! One keep-alive connection's load, and what it saw.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use url::Url;

use crate::html::page_assets;
use crate::marker::{Marker, Served};
use crate::page_url::PageUrl;

/// Assets fetched per page at most: keeps one load iteration bounded whatever the page.
const ASSETS_PER_PAGE: usize = 16;
/// Bytes read of one asset at most; a longer one is cut (and its connection not reused).
const ASSET_BYTES: u64 = 16 << 20;

/// One page request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Seconds since the load started.
    pub start: f64,
    pub latency: f64,
    /// 0 when no HTTP answer came.
    pub status: u16,
    pub served: Served,
}

impl Sample {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One asset request that was not answered 2xx.
#[derive(Debug, Clone)]
pub(crate) struct AssetFailure {
    /// When its page was requested (seconds since the load started).
    pub page_start: f64,
    /// When the asset's answer came.
    pub end: f64,
    /// 0 when no HTTP answer came.
    pub status: u16,
    /// The release that rendered the page.
    pub page: Served,
    pub url: String,
}

/// What the connections saw.
#[derive(Default)]
pub(crate) struct Seen {
    pub samples: Vec<Sample>,
    pub asset_requests: usize,
    pub asset_failures: Vec<AssetFailure>,
}

/// One keep-alive connection requesting until told to stop or the budget is spent; with
/// `assets`, each page's assets follow it on the same connection, as a browser's would.
pub(crate) fn load(
    page: &PageUrl,
    assets: bool,
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
        let (status, body) = match agent.request_url("GET", page.url()).call() {
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
        if assets && sample.ok() {
            for asset in page_assets(page, &body, ASSETS_PER_PAGE) {
                let status = fetch_asset(&agent, &asset);
                local.asset_requests += 1;
                if !(200..300).contains(&status) {
                    local.asset_failures.push(AssetFailure {
                        page_start: start,
                        end: started.elapsed().as_secs_f64(),
                        status,
                        page: sample.served,
                        url: asset.into(),
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
fn fetch_asset(agent: &ureq::Agent, url: &Url) -> u16 {
    use std::io::Read;
    let response = match agent.request_url("GET", url).call() {
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
