//! php-fpm reload: SIGUSR2 to the master, which stops its workers and re-executes itself
//! with the same listening sockets; requests arriving meanwhile wait in the backlog.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Pool;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read the php-fpm pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the php-fpm pid file {path} does not hold a pid: {text:?}")]
    BadPid { path: PathBuf, text: String },
    #[error("cannot signal the php-fpm master (pid {pid}): {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "php-fpm (pid {pid}) did not answer from new workers within {waited:.1} s of the reload"
    )]
    NotBack { pid: u32, waited: f64 },
}

impl ReloadError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ReloadError::PidFile { .. } | ReloadError::BadPid { .. } => {
                "set [refresh] fpm_pidfile to the `pid` of php-fpm's global config (Debian: /run/php/php8.2-fpm.pid)".into()
            }
            ReloadError::Signal { .. } => {
                "cutover must run as the php-fpm master's user (or root) to reload it; or use strategy \"command\" with `sudo systemctl reload php8.2-fpm`".into()
            }
            ReloadError::NotBack { .. } => {
                "check php-fpm's error log: a config error stops the master from coming back".into()
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReloadReport {
    pub master_pid: u32,
    /// Seconds from the signal until new workers answered.
    pub back_after: f64,
}

/// Reloads php-fpm and returns once the pool answers from workers that did not exist before
/// the signal: an old worker still answering would still hold the old release's caches.
pub fn reload(
    pidfile: &Path,
    pool: Option<&Pool>,
    wait: Duration,
) -> Result<ReloadReport, ReloadError> {
    let text = std::fs::read_to_string(pidfile).map_err(|source| ReloadError::PidFile {
        path: pidfile.to_path_buf(),
        source,
    })?;
    let pid: u32 = text.trim().parse().map_err(|_| ReloadError::BadPid {
        path: pidfile.to_path_buf(),
        text: text.trim().to_string(),
    })?;
    let old_workers = children_of(pid);
    let target = rustix::process::Pid::from_raw(pid as i32).ok_or(ReloadError::BadPid {
        path: pidfile.to_path_buf(),
        text: text.trim().to_string(),
    })?;
    let started = Instant::now();
    rustix::process::kill_process(target, rustix::process::Signal::USR2).map_err(|e| {
        ReloadError::Signal {
            pid,
            source: e.into(),
        }
    })?;
    loop {
        let workers = children_of(pid);
        let fresh = !workers.is_empty() && workers.iter().all(|w| !old_workers.contains(w));
        let answered = match (fresh, pool) {
            (false, _) => false,
            (true, None) => true,
            // The pool must also answer, and from a new worker.
            (true, Some(pool)) => pool.status().is_ok_and(|s| !old_workers.contains(&s.pid)),
        };
        if answered {
            return Ok(ReloadReport {
                master_pid: pid,
                back_after: started.elapsed().as_secs_f64(),
            });
        }
        if started.elapsed() >= wait {
            return Err(ReloadError::NotBack {
                pid,
                waited: started.elapsed().as_secs_f64(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live (non-zombie) processes whose parent is `pid`, read from /proc.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The command name may contain spaces and parentheses: fields follow the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split(' ');
            let state = fields.next()?;
            let parent: u32 = fields.next()?.parse().ok()?;
            (parent == pid && state != "Z").then_some(child)
        })
        .collect()
}

/// The php-fpm master's `process_control_timeout` in seconds, read from the config file its
/// process title names (`php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)`).
/// `None` when that cannot be read (another user's process, a renamed title).
///
/// It matters because a reload with the default of 0 does not let workers finish: php-fpm
/// terminates them at once and their in-flight requests get 502.
pub fn process_control_timeout(pidfile: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let title = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let title = String::from_utf8_lossy(&title);
    let config = title.split_once('(')?.1.rsplit_once(')')?.0;
    parse_process_control_timeout(&std::fs::read_to_string(config).ok()?)
}

/// Reads `process_control_timeout` from the `[global]` section of php-fpm.conf text; 0 when
/// it is not set (php-fpm's default). Units: s (default), m, h, d.
pub fn parse_process_control_timeout(text: &str) -> Option<u32> {
    let mut in_global = false;
    let mut value = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with(';') || line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            in_global = line.eq_ignore_ascii_case("[global]");
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        if !in_global || key.trim() != "process_control_timeout" {
            continue;
        }
        let raw = raw.trim().trim_matches('"');
        let (digits, unit) =
            raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
        let number: u32 = digits.parse().ok()?;
        value = match unit.trim() {
            "" | "s" => number,
            "m" => number.saturating_mul(60),
            "h" => number.saturating_mul(3600),
            "d" => number.saturating_mul(86400),
            _ => return None,
        };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::parse_process_control_timeout as parse;

    #[test]
    fn reads_the_global_setting_with_units() {
        assert_eq!(parse("[global]\npid = x\n"), Some(0));
        assert_eq!(parse("[global]\nprocess_control_timeout = 10\n"), Some(10));
        assert_eq!(parse("[global]\nprocess_control_timeout = 2m\n"), Some(120));
        assert_eq!(parse("; process_control_timeout = 9\n[global]\n"), Some(0));
        // A pool section cannot set it.
        assert_eq!(
            parse("[global]\n[www]\nprocess_control_timeout = 10\n"),
            Some(0)
        );
        assert_eq!(parse("[global]\nprocess_control_timeout = ten\n"), None);
    }
}
