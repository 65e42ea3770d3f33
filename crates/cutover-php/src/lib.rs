//! What cutover knows about PHP at run time: asking a php-fpm pool about its OPcache and
//! resetting it, over FastCGI, without PHP on the deploying machine (like CacheTool).
//!
//! The scripts are written into a directory the pool can read — inside the deploy path by
//! default, never `/tmp`: php-fpm under systemd often has a private /tmp, and
//! `open_basedir` usually admits the app's own tree only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cutover_fastcgi::{Address, Client, Request};

pub mod apache;
pub mod reload;
mod warm;

pub use warm::{
    CacheCounters, CachedScript, CachedTree, CompileBudget, CompileOutcome, CompileStop,
    ReleaseCache,
};

const STATUS_SCRIPT: &str = include_str!("scripts/status.php");
const RESET_SCRIPT: &str = include_str!("scripts/reset.php");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    FastCgi(#[from] cutover_fastcgi::Error),
    #[error("cannot write the script {path} for the pool: {source}")]
    WriteScript {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the script {script} is outside the pool's chroot {chroot}")]
    OutsideChroot { script: PathBuf, chroot: PathBuf },
    #[error("the pool answered {status} instead of the script's JSON: {}", snippet(.body, .stderr))]
    BadReply {
        status: u16,
        body: String,
        stderr: String,
    },
    #[error("OPcache cannot be used through the pool's API: {0}")]
    Opcache(String),
    #[error("OPcache still had a restart pending after {0:.1} s")]
    RestartStillPending(f64),
}

fn snippet(body: &str, stderr: &str) -> String {
    let text = if body.trim().is_empty() { stderr } else { body };
    let text = text.trim();
    let cut: String = text.chars().take(300).collect();
    if cut.is_empty() {
        "(empty)".to_string()
    } else {
        cut
    }
}

impl Error {
    /// What to do about it, in one line.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::FastCgi(e) => e.hint(),
            Error::WriteScript { .. } => Some(
                "cutover writes a small PHP file there for the pool to run; pass --script-dir DIR with a directory the pool user can read".into(),
            ),
            Error::OutsideChroot { .. } => {
                Some("pass --script-dir with a directory inside the chroot".into())
            }
            Error::BadReply { body, stderr, .. } => {
                let text = format!("{body}{stderr}");
                Some(if text.contains("open_basedir") {
                    "the pool's open_basedir excludes the script directory: pass --script-dir with a directory inside open_basedir (the deploy path usually is)".into()
                } else {
                    "check the pool's error log; cutover's script must run unmodified (no auto_prepend_file output)".into()
                })
            }
            Error::Opcache(message) if message.contains("restrict_api") => Some(
                "opcache.restrict_api only admits scripts under its path: set it to a prefix that contains the script directory, or empty".into(),
            ),
            Error::Opcache(message) if message.contains("not loaded") => Some(
                "install and enable OPcache for php-fpm (Debian: php8.2-opcache) — or nothing needs resetting".into(),
            ),
            Error::Opcache(_) => None,
            Error::RestartStillPending(_) => Some(
                "a long request holds the old cache; OPcache kills such workers after opcache.force_restart_timeout (default 180 s)".into(),
            ),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A php-fpm pool reached over FastCGI, and where to put the scripts it should run.
#[derive(Debug, Clone)]
pub struct Pool {
    pub address: Address,
    /// A directory the pool user can read, inside open_basedir.
    pub script_dir: PathBuf,
    /// The pool's `chroot`, if any: script paths are sent relative to it.
    pub chroot: Option<PathBuf>,
    pub timeout: Duration,
}

/// The pool's answer to the status script.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolStatus {
    /// The worker that answered.
    pub pid: u32,
    pub php_version: String,
    pub sapi: String,
    /// Relevant ini values as PHP reports them (strings; `null` when unknown).
    pub ini: std::collections::BTreeMap<String, Option<String>>,
    pub opcache: Option<OpcacheStatus>,
    /// Why `opcache` is missing: not loaded, or the API is restricted.
    pub opcache_error: Option<String>,
    pub realpath_cache_used: u64,
    /// The user the workers run as (their effective uid's name), the default for
    /// `[deploy] writable_user`; `None` without PHP's posix extension (or from an older
    /// script).
    #[serde(default)]
    pub user: Option<String>,
    /// What OPcache holds per release of the deploy path asked about (when asked through
    /// a host, which knows its deploy path; empty when OPcache holds none of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<Vec<ReleaseCache>>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpcacheStatus {
    pub enabled: bool,
    pub cache_full: bool,
    pub restart_pending: bool,
    pub restart_in_progress: bool,
    pub used_memory: u64,
    pub free_memory: u64,
    pub wasted_memory: u64,
    pub cached_scripts: u64,
    pub hits: u64,
    pub misses: u64,
    pub oom_restarts: u64,
    pub manual_restarts: u64,
    pub last_restart_time: i64,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct ResetReply {
    pid: u32,
    reset: bool,
    error: Option<String>,
}

/// What `reset` did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResetReport {
    /// The worker that took the reset.
    pub pid: u32,
    /// Seconds until no restart was pending any more.
    pub settled_after: f64,
    /// The pool's status once the restart had happened.
    pub status: PoolStatus,
}

impl PoolStatus {
    pub fn ini_value(&self, key: &str) -> Option<&str> {
        self.ini.get(key)?.as_deref()
    }
}

impl Pool {
    /// OPcache and ini state as one worker of the pool sees it (OPcache's memory is shared
    /// by every worker of the pool; the realpath cache is per worker).
    pub fn status(&self) -> Result<PoolStatus> {
        let body = self.run("status", STATUS_SCRIPT)?;
        parse_reply(&body)
    }

    /// Asks OPcache to reset and waits, up to `wait`, until the reset has happened.
    ///
    /// `opcache_reset()` only marks a restart pending; OPcache empties the cache at the
    /// start of a request when no other request holds it. Polling with status requests
    /// supplies those request starts, so the wait ends as soon as in-flight requests drain.
    pub fn reset(&self, wait: Duration) -> Result<ResetReport> {
        let started = Instant::now();
        let reply: ResetReply = parse_reply(&self.run("reset", RESET_SCRIPT)?)?;
        if !reply.reset {
            return Err(Error::Opcache(
                reply
                    .error
                    .unwrap_or_else(|| "opcache_reset() failed".into()),
            ));
        }
        loop {
            let status = self.status()?;
            let pending = status
                .opcache
                .as_ref()
                .is_some_and(|o| o.restart_pending || o.restart_in_progress);
            let elapsed = started.elapsed().as_secs_f64();
            if !pending {
                return Ok(ResetReport {
                    pid: reply.pid,
                    settled_after: elapsed,
                    status,
                });
            }
            if started.elapsed() >= wait {
                return Err(Error::RestartStillPending(elapsed));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes `script` under a name derived from its content (so a cached copy can never
    /// be a different version), runs it, removes it.
    fn run(&self, name: &str, script: &str) -> Result<String> {
        self.with_script(name, script, |pool, path| pool.call(path, |r| r))
    }

    /// Writes `script` for the pool, hands its path to `work` (which may run it many
    /// times), removes it.
    fn with_script<T>(
        &self,
        name: &str,
        script: &str,
        work: impl FnOnce(&Pool, &Path) -> Result<T>,
    ) -> Result<T> {
        let hash = blake3::hash(script.as_bytes()).to_hex();
        let path = self
            .script_dir
            .join(format!("cutover-{name}-{}.php", &hash[..12]));
        write_script(&self.script_dir, &path, script)?;
        let result = work(self, &path);
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Runs the script at `path` once (a GET, adjusted by `with`); its body on a 200.
    fn call(&self, path: &Path, with: impl FnOnce(Request) -> Request) -> Result<String> {
        let request = with(Request::get(self.pool_path(path)?, ""));
        self.send(&request)
    }

    /// Runs the script at `path` once with `body` (JSON) as its input.
    fn call_post(&self, path: &Path, body: Vec<u8>) -> Result<String> {
        let request = Request::post(self.pool_path(path)?, "application/json", body);
        self.send(&request)
    }

    /// A fresh connection per request: php-fpm keeps a worker for a connection until it
    /// closes, and cutover's requests must not hold one between them.
    fn send(&self, request: &Request) -> Result<String> {
        let mut client = Client::connect(&self.address, self.timeout)?;
        let response = client.request(request)?;
        let body = response.body_text().into_owned();
        if response.status != 200 {
            return Err(Error::BadReply {
                status: response.status,
                body,
                stderr: response.stderr,
            });
        }
        Ok(body)
    }

    /// `path` as the pool sees it: relative to its chroot, if it has one.
    fn pool_path(&self, path: &Path) -> Result<PathBuf> {
        match &self.chroot {
            Some(chroot) => {
                let inside = path
                    .strip_prefix(chroot)
                    .map_err(|_| Error::OutsideChroot {
                        script: path.to_path_buf(),
                        chroot: chroot.clone(),
                    })?;
                Ok(Path::new("/").join(inside))
            }
            None => Ok(path.to_path_buf()),
        }
    }
}

fn write_script(dir: &Path, path: &Path, script: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |source| Error::WriteScript {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    // Written under a temporary name and renamed: a worker never reads half a script.
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, script).map_err(fail)?;
    // The pool usually runs as another user (www-data): it must be able to read the file.
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644)).map_err(fail)?;
    std::fs::rename(&temp, path).map_err(fail)
}

fn parse_reply<T: serde::de::DeserializeOwned>(body: &str) -> Result<T> {
    serde_json::from_str(body.trim()).map_err(|_| Error::BadReply {
        status: 200,
        body: body.to_string(),
        stderr: String::new(),
    })
}
