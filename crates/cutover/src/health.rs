//! After the switch and the refresh: is the new release what is being served?
//!
//! A 2xx is not enough — a stale OPcache answers 200 from the old release — so by default
//! the body must contain the new release id (the app reads it from the RELEASE file).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cutover_config::Config;
use cutover_core::{DeployPath, ReleaseId};

use crate::error::{CommandError, Kind, Result};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(200);
/// Enough of a health page; a larger body is cut, not an error.
const MAX_BODY: usize = 64 * 1024;

pub struct HealthCheck {
    /// Every probe must pass: through the web server, straight in the pool, or both.
    probes: Vec<Probe>,
    expect_release: bool,
    timeout: Duration,
}

enum Probe {
    Http {
        host: String,
        port: u16,
        path: String,
        url: String,
    },
    FastCgi {
        pool: cutover_fastcgi::Address,
        script: PathBuf,
    },
}

/// What the last attempt saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthReport {
    pub target: String,
    pub attempts: u32,
    pub seconds: f64,
    pub status: Option<u16>,
}

pub fn plan(config: &Config, deploy: &DeployPath) -> Result<Option<HealthCheck>> {
    let settings = &config.health;
    let mut probes = Vec::new();
    if let Some(url) = &settings.url {
        probes.push(parse_url(url)?);
    }
    if let Some(script) = &settings.fastcgi_script {
        let fpm = config.php.fpm.as_deref().ok_or_else(|| {
            CommandError::usage(
                "[health] fastcgi_script needs the pool's address",
                "set `fpm = \"unix:/run/php/php8.2-fpm.sock\"` in the [php] table",
            )
        })?;
        let pool = fpm.parse().map_err(|e: cutover_fastcgi::Error| {
            CommandError::usage(
                format!("[php] fpm: {e}"),
                "write `unix:/path/to.sock` or `127.0.0.1:9000`",
            )
        })?;
        // Through `current`, as a `$document_root` web server would send it.
        let script = deploy.current().join(script.trim_start_matches('/'));
        probes.push(Probe::FastCgi { pool, script });
    }
    if probes.is_empty() {
        return Ok(None);
    }
    Ok(Some(HealthCheck {
        probes,
        expect_release: settings.expect_release.unwrap_or(true),
        timeout: settings
            .timeout_seconds
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs),
    }))
}

fn parse_url(url: &str) -> Result<Probe> {
    let bad = |why: &str| {
        CommandError::usage(
            format!("[health] url `{url}` {why}"),
            "write a plain-HTTP URL such as `http://127.0.0.1/health.php` (check the app where it runs, not through TLS)",
        )
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, port.parse().map_err(|_| bad("has a bad port"))?)
        }
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok(Probe::Http {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        path: path.to_string(),
        url: url.to_string(),
    })
}

impl HealthCheck {
    /// Retries until the check passes or the timeout ends; the error says what was seen.
    pub fn check(&self, release: &ReleaseId) -> Result<HealthReport> {
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
            match verdict {
                Ok(()) => return Ok(report),
                Err(why) if started.elapsed() >= self.timeout => {
                    return Err(CommandError {
                        kind: Kind::Failed,
                        message: format!(
                            "health check {} failed after {} attempts in {:.1} s: {why}",
                            report.target, attempts, report.seconds
                        ),
                        causes: Vec::new(),
                        hints: vec![
                            "the app must answer 2xx and print the release id (e.g. read __DIR__ . '/../RELEASE'); a stale OPcache answers with the old id: see [refresh]".into(),
                        ],
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

    fn attempt(&self, probe: &Probe) -> std::result::Result<(u16, String), String> {
        match probe {
            Probe::Http {
                host, port, path, ..
            } => http_get(host, *port, path, self.timeout),
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
            Probe::Http { url, .. } => url.clone(),
            Probe::FastCgi { pool, script } => format!("{} {}", pool, script.display()),
        }
    }
}

/// HTTP/1.0 so the server answers with a plain body ended by closing the connection.
fn http_get(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> std::result::Result<(u16, String), String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: cutover\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY as u64 + 16 * 1024)
        .read_to_end(&mut raw)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the answer has no HTTP header")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or("the answer has no HTTP status")?;
    Ok((status, body.to_string()))
}

fn snippet(body: &str) -> String {
    let text: String = body.trim().chars().take(120).collect();
    if text.is_empty() {
        "(empty body)".into()
    } else {
        format!("{text:?}")
    }
}
