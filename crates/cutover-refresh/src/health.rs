//! After the switch and the refresh: is the new release what is being served?
//!
//! A 2xx is not enough — a stale OPcache answers 200 from the old release — so by default
//! the body must contain the new release id (the app reads it from the RELEASE file).

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cutover_core::{DeployPath, ReleaseId};

use crate::{HealthSpec, RefreshError};

const RETRY_EVERY: Duration = Duration::from_millis(200);
/// Enough of a health page; a larger body is cut, not an error.
const MAX_BODY: u64 = 64 * 1024;

pub struct HealthCheck {
    /// Every probe must pass: through the web server, straight in the pool, or both.
    probes: Vec<Probe>,
    expect_release: bool,
    timeout: Duration,
    http: ureq::Agent,
}

enum Probe {
    Http(url::Url),
    FastCgi {
        pool: cutover_fastcgi::Address,
        script: PathBuf,
    },
}

/// What the last attempt saw.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthReport {
    pub target: String,
    pub attempts: u32,
    pub seconds: f64,
    pub status: Option<u16>,
}

impl HealthCheck {
    pub(crate) fn new(
        spec: &HealthSpec,
        pool: Option<&cutover_php::Pool>,
        deploy: &DeployPath,
    ) -> Result<HealthCheck, RefreshError> {
        let mut probes = Vec::new();
        if let Some(url) = &spec.url {
            probes.push(Probe::Http(crate::spec::health_url(url)?));
        }
        if let Some(script) = &spec.fastcgi_script {
            let pool = pool.ok_or_else(|| {
                RefreshError::settings(
                    "[health] fastcgi_script needs the pool's address",
                    "set `fpm = \"unix:/run/php/php8.2-fpm.sock\"` in the [php] table",
                )
            })?;
            // Through `current`, as a `$document_root` web server would send it.
            let script = deploy.current().join(script.trim_start_matches('/'));
            probes.push(Probe::FastCgi {
                pool: pool.address.clone(),
                script,
            });
        }
        let timeout = Duration::from_millis(spec.timeout_ms);
        Ok(HealthCheck {
            probes,
            expect_release: spec.expect_release,
            timeout,
            // Redirects are answers of their own: a 302 to a login page is not healthy.
            http: ureq::AgentBuilder::new()
                .timeout(timeout)
                .redirects(0)
                .user_agent("cutover")
                .build(),
        })
    }

    /// Retries until the check passes or the timeout ends; the error says what was seen.
    pub fn check(&self, release: &ReleaseId) -> Result<HealthReport, RefreshError> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut status = None;
            let mut verdict = Ok(());
            for probe in &self.probes {
                let seen = self.attempt(probe);
                status = seen.as_ref().ok().map(|(code, _)| *code);
                verdict = match &seen {
                    Ok((code, _)) if !(200..300).contains(code) => {
                        Err(format!("{} answered {code}", probe.target()))
                    }
                    Ok((_, body)) if self.expect_release && !body.contains(release.as_str()) => {
                        Err(format!(
                            "{} answered without the release id {release}: {}",
                            probe.target(),
                            snippet(body)
                        ))
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("{}: {e}", probe.target())),
                };
                if verdict.is_err() {
                    break;
                }
            }
            let report = HealthReport {
                target: self.target(),
                attempts,
                seconds: started.elapsed().as_secs_f64(),
                status,
            };
            tracing::debug!(attempts, ?status, ok = verdict.is_ok(), "health probe");
            match verdict {
                Ok(()) => return Ok(report),
                Err(why) if started.elapsed() >= self.timeout => {
                    return Err(RefreshError::Health {
                        target: report.target,
                        attempts,
                        seconds: report.seconds,
                        why,
                    })
                }
                Err(_) => std::thread::sleep(RETRY_EVERY),
            }
        }
    }

    fn target(&self) -> String {
        let targets: Vec<String> = self.probes.iter().map(Probe::target).collect();
        targets.join(" and ")
    }

    fn attempt(&self, probe: &Probe) -> Result<(u16, String), String> {
        match probe {
            Probe::Http(url) => {
                let response = match self.http.request_url("GET", url).call() {
                    Ok(response) | Err(ureq::Error::Status(_, response)) => response,
                    Err(ureq::Error::Transport(e)) => return Err(transport_error(&e)),
                };
                let status = response.status();
                let mut body = Vec::new();
                response
                    .into_reader()
                    .take(MAX_BODY)
                    .read_to_end(&mut body)
                    .map_err(|e| format!("reading the answer: {e}"))?;
                Ok((status, String::from_utf8_lossy(&body).into_owned()))
            }
            Probe::FastCgi { pool, script } => {
                let mut client = cutover_fastcgi::Client::connect(pool, self.timeout)
                    .map_err(|e| e.to_string())?;
                let response = client
                    .request(&cutover_fastcgi::Request::get(script, ""))
                    .map_err(|e| e.to_string())?;
                Ok((response.status, response.body_text().into_owned()))
            }
        }
    }
}

impl Probe {
    fn target(&self) -> String {
        match self {
            Probe::Http(url) => url.to_string(),
            Probe::FastCgi { pool, script } => format!("{} {}", pool, script.display()),
        }
    }
}

/// ureq's own text repeats the URL, which the caller already names.
fn transport_error(error: &ureq::Transport) -> String {
    let detail = std::error::Error::source(error)
        .map(ToString::to_string)
        .or_else(|| error.message().map(str::to_string))
        .unwrap_or_else(|| error.kind().to_string());
    match error.kind() {
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
            format!("cannot connect: {detail}")
        }
        kind => format!("{kind}: {detail}"),
    }
}

fn snippet(body: &str) -> String {
    let text: String = body.trim().chars().take(120).collect();
    if text.is_empty() {
        "(empty body)".into()
    } else {
        format!("{text:?}")
    }
}
