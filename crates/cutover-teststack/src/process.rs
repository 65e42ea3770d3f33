//! A server process we started, stopped by pid.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::{io_err, Result};

/// True when `/proc/<pid>` exists and is not a zombie.
///
/// A zombie has exited; it only waits for its parent to collect it, so it counts as gone.
pub fn process_running(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z')
}

struct Stat {
    state: char,
    ppid: u32,
    start_time: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces and ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... starttime(22), counted from 1 for the pid.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Live processes whose parent is `pid`, each with its start time so that a recycled pid
/// is never signalled by mistake.
pub(crate) fn children_of(pid: u32) -> Vec<(u32, u64)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: Vec<(u32, u64)> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|candidate| {
            let s = stat(candidate)?;
            (s.ppid == pid && s.state != 'Z').then_some((candidate, s.start_time))
        })
        .collect();
    children.sort_unstable();
    children
}

fn same_process(pid: u32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_time == start_time && s.state != 'Z')
}

pub(crate) fn signal(pid: u32, sig: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    kill_process(pid, sig).map_err(std::io::Error::from)
}

/// A server we spawned. Stopping it signals exactly this pid (and, if it must be killed,
/// the children it had), never processes found by name.
pub(crate) struct Supervised {
    // A Mutex so that status checks work through `&self` (wait loops borrow it twice).
    child: Mutex<Option<Child>>,
    pid: u32,
}

impl Supervised {
    /// Spawns `command` with stdout and stderr appended to `output_log`.
    pub(crate) fn spawn(mut command: Command, output_log: &Path) -> Result<Self> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(output_log)
            .map_err(io_err(format!("open {}", output_log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("dup {}", output_log.display())))?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // php-fpm talks to systemd when this is set; a test instance must not.
            .env_remove("NOTIFY_SOCKET");
        // SAFETY: the closure only makes one prctl(2) system call, which is
        // async-signal-safe, and touches no memory shared with the parent.
        unsafe {
            command.pre_exec(|| {
                // If the test binary dies without running our Drop, the server goes too.
                rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
                    .map_err(std::io::Error::from)
            });
        }
        let program = format!("{:?}", command.get_program());
        let child = command
            .spawn()
            .map_err(io_err(format!("start {program}")))?;
        Ok(Supervised {
            pid: child.id(),
            child: Mutex::new(Some(child)),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the process has exited (collecting it), else `None`.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        let mut guard = self
            .child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `graceful`, waits up to `bound` for the process to exit, then SIGKILLs it and
    /// every child it had. Afterwards neither the process nor its children are running
    /// (children are waited for up to `bound` more; the master normally collects them).
    /// Does nothing the second time.
    pub(crate) fn stop(&mut self, graceful: Signal, bound: Duration) {
        let slot = self
            .child
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(mut child) = slot.take() else {
            return;
        };
        let children = children_of(self.pid);
        if matches!(child.try_wait(), Ok(None)) {
            let _ = signal(self.pid, graceful);
            let deadline = Instant::now() + bound;
            loop {
                match child.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        for &(pid, start) in &children {
                            if same_process(pid, start) {
                                let _ = signal(pid, Signal::KILL);
                            }
                        }
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => break,
                }
            }
        }
        let deadline = Instant::now() + bound;
        for &(pid, start) in &children {
            while same_process(pid, start) {
                if Instant::now() >= deadline {
                    let _ = signal(pid, Signal::KILL);
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Signal::TERM, Duration::from_secs(5));
    }
}

/// Polls `ready` every 50 ms until it returns `Some`, `give_up` returns an error, or
/// `timeout` passes (then `None`).
pub(crate) fn wait_until<T>(
    timeout: Duration,
    mut give_up: impl FnMut() -> Result<()>,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        give_up()?;
        if let Some(value) = ready() {
            return Ok(Some(value));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}
