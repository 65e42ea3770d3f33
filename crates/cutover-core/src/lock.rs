//! One deploy at a time per deploy path.
//!
//! flock(2) rather than a lock file that exists-or-not: the kernel drops it when the holder
//! dies, even by SIGKILL, so a crashed deploy never needs a manual unlock. The file's
//! content only says who holds it, for the error message of the one who waits.

use std::fmt;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    /// RFC 3339.
    pub since: String,
}

impl LockHolder {
    pub fn this_process() -> Self {
        LockHolder {
            user: crate::identity::user(),
            host: crate::identity::host(),
            pid: std::process::id(),
            // args() panics on an argument that is not UTF-8; the record is for people.
            command: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            since: crate::identity::now_rfc3339(),
        }
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pid == 0 {
            return f.write_str("holder unknown");
        }
        write!(
            f,
            "`{}` by {}@{} (pid {}) since {}",
            self.command, self.user, self.host, self.pid, self.since
        )
    }
}

/// Held for as long as it lives.
#[derive(Debug)]
pub struct DeployLock {
    _file: std::fs::File,
}

impl DeployLock {
    /// Takes the lock, failing at once or after `wait` if another process holds it.
    pub fn acquire(path: &Path, wait: Option<Duration>) -> Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx("open the lock", path)?;
        let started = Instant::now();
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let holder = Box::new(read_holder(&mut file));
                    match wait {
                        Some(limit) if started.elapsed() < limit => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Some(_) => {
                            return Err(Error::LockTimeout {
                                path: path.to_path_buf(),
                                holder,
                                waited_secs: started.elapsed().as_secs_f64(),
                            })
                        }
                        None => {
                            return Err(Error::LockHeld {
                                path: path.to_path_buf(),
                                holder,
                            })
                        }
                    }
                }
                Err(e) => return Err(Error::io("lock", path, e.into())),
            }
        }
        write_holder(&mut file, &LockHolder::this_process())
            .ctx("write the lock holder to", path)?;
        Ok(DeployLock { _file: file })
    }
}

fn read_holder(file: &mut std::fs::File) -> LockHolder {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    serde_json::from_str(text.trim()).unwrap_or_default()
}

fn write_holder(file: &mut std::fs::File, holder: &LockHolder) -> std::io::Result<()> {
    let text = serde_json::to_string(holder).map_err(std::io::Error::other)?;
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = DeployLock::acquire(&path, None).unwrap();
        match DeployLock::acquire(&path, None) {
            Err(Error::LockHeld { holder, .. }) => assert_eq!(holder.pid, std::process::id()),
            other => panic!("expected LockHeld, got {other:?}"),
        }
        match DeployLock::acquire(&path, Some(Duration::from_millis(120))) {
            Err(Error::LockTimeout { waited_secs, .. }) => assert!(waited_secs >= 0.1),
            other => panic!("expected LockTimeout, got {other:?}"),
        }
        drop(first);
        DeployLock::acquire(&path, None).unwrap();
    }
}
