//! Apache with mod_php: a graceful restart, and knowing when it is done.
//!
//! `apachectl -k graceful` checks the config, sends SIGUSR1 to the parent and returns at
//! once. The parent then re-reads its config, re-runs every module's start-up — PHP's
//! included, so the new children share a fresh OPcache — and forks a new generation of
//! children, while the old ones finish what they are doing. Measured on Debian 12
//! (Apache 2.4, PHP 8.2, prefork, `validate_timestamps=0`):
//!
//! - the first request answered by a new child shows the new release, and OPcache reports
//!   a new `start_time` with only the scripts compiled since;
//! - an old child exits after the request it is serving, but one idle on a keep-alive
//!   connection answers *one more* request on it, from the old cache (with
//!   `Connection: close`), up to `KeepAliveTimeout` after the graceful.
//!
//! So the restart is done when the parent is alive and every child it has was started
//! after the signal: no child of the old generation is left to answer from the old cache.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::reload::children_of;

#[derive(Debug, thiserror::Error)]
pub enum GracefulError {
    #[error("cannot read the Apache pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Apache pid file {path} does not hold a pid: {text:?}")]
    BadPid { path: PathBuf, text: String },
    #[error("Apache is not running: the pid file {path} names pid {pid}, which is not running")]
    NotRunning { path: PathBuf, pid: u32 },
    #[error("the Apache parent (pid {pid}) exited {waited:.1} s after the graceful restart was requested")]
    ParentGone { pid: u32, waited: f64 },
    #[error(
        "Apache (pid {pid}) still had {} child(ren) from before the graceful restart after {waited:.1} s (pids {}); {new} new one(s)",
        .old.len(),
        list(.old)
    )]
    OldChildren {
        pid: u32,
        waited: f64,
        old: Vec<u32>,
        new: usize,
    },
}

fn list(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl GracefulError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            GracefulError::PidFile { .. } | GracefulError::BadPid { .. } | GracefulError::NotRunning { .. } => "set [refresh] apache_pidfile to Apache's `PidFile` (`apachectl -t -D DUMP_RUN_CFG` prints it)".into(),
            GracefulError::ParentGone { .. } => {
                "check Apache's error log: a config error makes the parent exit on a graceful restart (`apachectl -k graceful` tests the config first; a bare SIGUSR1 does not)".into()
            }
            GracefulError::OldChildren { new: 0, .. } => {
                "the parent did not start a new generation: check that [refresh] apache_command restarts the Apache of apache_pidfile, and Apache's error log".into()
            }
            GracefulError::OldChildren { .. } => {
                "old children exit after the request they serve (an idle keep-alive connection gets one more, up to KeepAliveTimeout): raise [refresh] wait_seconds above your longest request".into()
            }
        })
    }
}

/// The Apache parent and the children it had before a graceful restart.
#[derive(Debug, Clone)]
pub struct Generation {
    pid: u32,
    children: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GracefulReport {
    pub parent_pid: u32,
    /// Seconds until no child from before the restart was left.
    pub replaced_after: f64,
    /// Children of the new generation at that moment.
    pub children: usize,
}

impl Generation {
    /// The running parent named by `pidfile`, and its children now.
    pub fn read(pidfile: &Path) -> Result<Generation, GracefulError> {
        let text = std::fs::read_to_string(pidfile).map_err(|source| GracefulError::PidFile {
            path: pidfile.to_path_buf(),
            source,
        })?;
        let pid: u32 = text
            .trim()
            .parse()
            .ok()
            .filter(|pid| *pid > 0)
            .ok_or_else(|| GracefulError::BadPid {
                path: pidfile.to_path_buf(),
                text: text.trim().to_string(),
            })?;
        if !running(pid) {
            return Err(GracefulError::NotRunning {
                path: pidfile.to_path_buf(),
                pid,
            });
        }
        Ok(Generation {
            pid,
            children: children_of(pid),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the parent has PHP loaded (mod_php's `libphp*.so` mapped); `None` when its
    /// memory map cannot be read (another user's process).
    pub fn runs_php(&self) -> Option<bool> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).ok()?;
        Some(maps.lines().any(|line| {
            line.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with("libphp"))
        }))
    }

    /// Waits until the parent is alive and every child it has is new (at least one, none
    /// from `self`), polling /proc every 20 ms for at most `wait`. Call after the graceful
    /// restart was requested: until the parent has handled the signal the old children
    /// are still there, so a restart that has not happened yet is never taken for done.
    pub fn wait_for_next(&self, wait: Duration) -> Result<GracefulReport, GracefulError> {
        let started = Instant::now();
        loop {
            if !running(self.pid) {
                return Err(GracefulError::ParentGone {
                    pid: self.pid,
                    waited: started.elapsed().as_secs_f64(),
                });
            }
            let now = children_of(self.pid);
            let old: Vec<u32> = now
                .iter()
                .copied()
                .filter(|pid| self.children.contains(pid))
                .collect();
            if old.is_empty() && !now.is_empty() {
                return Ok(GracefulReport {
                    parent_pid: self.pid,
                    replaced_after: started.elapsed().as_secs_f64(),
                    children: now.len(),
                });
            }
            if started.elapsed() >= wait {
                return Err(GracefulError::OldChildren {
                    pid: self.pid,
                    waited: started.elapsed().as_secs_f64(),
                    new: now.len() - old.len(),
                    old,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Alive and not a zombie (a parent that exited but was not yet collected is gone).
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_that_names_no_running_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("apache.pid");
        assert!(matches!(
            Generation::read(&pidfile),
            Err(GracefulError::PidFile { .. })
        ));
        std::fs::write(&pidfile, "not a pid\n").unwrap();
        assert!(matches!(
            Generation::read(&pidfile),
            Err(GracefulError::BadPid { .. })
        ));
        // Above pid_max (at most 2^22 on Linux): never a running process.
        std::fs::write(&pidfile, "99999999\n").unwrap();
        assert!(matches!(
            Generation::read(&pidfile),
            Err(GracefulError::NotRunning { pid: 99999999, .. })
        ));
    }

    #[test]
    fn a_parent_without_new_children_times_out_naming_the_old_ones() {
        // This test process stands in for the parent; a child of it that outlives the
        // wait is an "old child" no graceful restart replaced.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("apache.pid");
        std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let generation = Generation::read(&pidfile).unwrap();
        let result = generation.wait_for_next(Duration::from_millis(200));
        let _ = child.kill();
        let _ = child.wait();
        let error = result.expect_err("no graceful restart happened, yet the wait ended");
        let GracefulError::OldChildren { old, .. } = &error else {
            panic!("expected OldChildren, got {error:?}");
        };
        assert!(old.contains(&child.id()), "{error}");
        assert!(
            error.to_string().contains(&child.id().to_string()),
            "{error}"
        );
    }
}
