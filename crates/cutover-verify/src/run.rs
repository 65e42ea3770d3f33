//! One verify run: a baseline of load, then a flip every so often for a while, the last
//! one to B, then load until B is seen by all (or the settle time ends).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cutover_core::ReleaseId;

use crate::judge::{judge, judge_assets};
use crate::load::{load, Seen};
use crate::marker::Marker;
use crate::page_url::PageUrl;
use crate::verdict::Verdict;

/// How a flip happens: the caller's business (cutover's own switch, a command, a fleet).
pub trait Flip {
    type Error;
    /// Returns the moment `release` was in place (the rename, or the command's end);
    /// whatever follows it inside the flip (a cache refresh) counts toward visibility.
    fn flip_to(&self, release: &ReleaseId) -> Result<Instant, Self::Error>;
}

/// What to measure and for how long. Every loop is bounded: by these durations, and by
/// `max_requests` whatever they are.
#[derive(Debug)]
pub struct Scenario {
    pub page: PageUrl,
    pub marker: Marker,
    /// Flipped from; expected to be in place when the run starts, for the baseline.
    pub a: ReleaseId,
    /// Flipped to; the run ends on it.
    pub b: ReleaseId,
    /// Keep-alive connections requesting at once.
    pub concurrency: u64,
    pub max_requests: u64,
    /// Load before the first flip, for the steady-state latency.
    pub baseline: Duration,
    /// How long to flip.
    pub duration: Duration,
    pub flip_every: Duration,
    /// Load after the last flip, waiting for B to be seen by all.
    pub settle: Duration,
    /// Fetch each page's same-origin assets after it.
    pub assets: bool,
}

/// One flip, in seconds since the load started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Switch {
    pub asked: f64,
    /// When the new release was in place: the rename fell between `asked` and this.
    pub done: f64,
}

/// Runs the load and the flips; a failed flip stops the run and is returned as it came.
pub fn run<F: Flip>(scenario: &Scenario, flip: &F) -> Result<Verdict, F::Error> {
    let (a, b) = (&scenario.a, &scenario.b);
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let budget = AtomicU64::new(scenario.max_requests);
    let seen: Mutex<Seen> = Mutex::new(Seen::default());
    let mut switches: Vec<Switch> = Vec::new();
    let mut switch_to = |release: &ReleaseId| -> Result<(), F::Error> {
        let asked = started.elapsed().as_secs_f64();
        let in_place = flip.flip_to(release)?;
        switches.push(Switch {
            asked,
            done: in_place.saturating_duration_since(started).as_secs_f64(),
        });
        Ok(())
    };
    let flipped = std::thread::scope(|scope| {
        for _ in 0..scenario.concurrency {
            scope.spawn(|| {
                load(
                    &scenario.page,
                    scenario.assets,
                    &scenario.marker,
                    started,
                    &stop,
                    &budget,
                    &seen,
                )
            });
        }
        let flipping = (|| -> Result<(), F::Error> {
            pause(scenario.baseline, &stop);
            let until = Instant::now() + scenario.duration;
            let mut on = a;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                let next_flip = Instant::now() + scenario.flip_every;
                on = if on == a { b } else { a };
                switch_to(on)?;
                pause(next_flip.saturating_duration_since(Instant::now()), &stop);
            }
            if on != b {
                switch_to(b)?;
            }
            pause(scenario.settle, &stop);
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        flipping
    });
    flipped?;
    let seconds = started.elapsed().as_secs_f64();
    let seen = seen.into_inner().unwrap_or_default();
    let mut verdict = judge(scenario, &seen.samples, &switches, seconds);
    if scenario.assets {
        verdict.add_assets(judge_assets(scenario, &seen, &switches));
    }
    Ok(verdict)
}

/// Sleeps `length`, or less if told to stop.
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use cutover_core::ReleaseId;

    use super::{run, Flip, Scenario};
    use crate::marker::Marker;
    use crate::page_url::PageUrl;

    /// Serves the release last flipped to as its page, one request per connection.
    fn serve(current: Arc<Mutex<String>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let body = current.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    struct Recorded {
        current: Arc<Mutex<String>>,
        flips: Mutex<Vec<String>>,
        fail: bool,
    }

    impl Recorded {
        /// A flip that changes what a new server shows (or fails), and the server's URL.
        fn serving(fail: bool) -> (Recorded, String) {
            let current = Arc::new(Mutex::new("v1".to_string()));
            let url = serve(current.clone());
            let flip = Recorded {
                current,
                flips: Mutex::new(Vec::new()),
                fail,
            };
            (flip, url)
        }
    }

    impl Flip for Recorded {
        type Error = String;
        fn flip_to(&self, release: &ReleaseId) -> Result<Instant, String> {
            if self.fail {
                return Err(format!("cannot flip to {release}"));
            }
            *self.current.lock().unwrap() = release.to_string();
            self.flips.lock().unwrap().push(release.to_string());
            Ok(Instant::now())
        }
    }

    fn scenario(url: &str) -> Scenario {
        let (a, b) = (
            ReleaseId::parse("v1").unwrap(),
            ReleaseId::parse("v2").unwrap(),
        );
        Scenario {
            page: PageUrl::parse(url).unwrap(),
            marker: Marker::new(None, &a, &b).unwrap(),
            a,
            b,
            concurrency: 2,
            max_requests: 10_000,
            baseline: Duration::from_millis(50),
            duration: Duration::from_millis(250),
            flip_every: Duration::from_millis(50),
            settle: Duration::from_millis(200),
            assets: false,
        }
    }

    #[test]
    fn a_run_flips_back_and_forth_and_ends_on_b() {
        let (flip, url) = Recorded::serving(false);
        let verdict = run(&scenario(&url), &flip).unwrap();
        let flips = flip.flips.into_inner().unwrap();
        assert!(flips.len() >= 4, "{flips:?}");
        assert_eq!(flips.last().map(String::as_str), Some("v2"));
        assert!(flips.windows(2).all(|pair| pair[0] != pair[1]), "{flips:?}");
        assert_eq!(verdict.switches, flips.len());
        assert_eq!((verdict.failed, verdict.mixed), (0, 0), "{verdict:?}");
        assert!(verdict.served.a > 0 && verdict.served.b > 0, "{verdict:?}");
        assert!(verdict.visibility_ms.is_some(), "{verdict:?}");
        assert!(verdict.passed, "{verdict:?}");
        assert_eq!(verdict.url, url);
    }

    #[test]
    fn a_failed_flip_ends_the_run_with_its_error() {
        let (flip, url) = Recorded::serving(true);
        let scenario = Scenario {
            duration: Duration::from_secs(10),
            ..scenario(&url)
        };
        let started = Instant::now();
        let error = run(&scenario, &flip).unwrap_err();
        assert_eq!(error, "cannot flip to v2");
        // Stopped at the first flip, not after the duration and the settle time.
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
