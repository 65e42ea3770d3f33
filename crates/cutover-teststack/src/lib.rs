//! Private php-fpm, nginx, Apache (mod_php) and sshd instances for tests.
//!
//! The claims cutover makes are about real PHP processes (OPcache, the realpath cache,
//! php-fpm reloads, Apache graceful restarts), so the tests that prove them run Debian's
//! `php-fpm8.2`, `nginx` and `apache2` with `libapache2-mod-php8.2`.
//! Every instance started here is private: its own temp directory holding its config,
//! pid file, logs, socket and nginx temp paths; TCP only on 127.0.0.1; nothing under
//! `/etc`, `/run/php` or `/var/log` is written. php-fpm still reads the system php.ini and
//! `conf.d` (that is where OPcache is loaded from); our settings are `-d` overrides on its
//! command line, which survive reloads because the master re-executes itself with the
//! same arguments. Apache's mod_php reads `/etc/php/8.2/apache2` the same way, with our
//! settings as `php_admin_value` lines in its own `httpd.conf`. Instances run as our
//! child processes and are stopped by pid (SIGQUIT or SIGTERM, then SIGKILL after a
//! bound), by [`PhpFpm::stop`]/[`Nginx::stop`]/[`Apache::stop`] or on drop. Apache runs in
//! its own process group: its prefork parent signals its whole group on stop.
//!
//! # Users and permissions
//!
//! When the tests run as an ordinary user, the php-fpm workers and nginx workers run as
//! that user. When they run as root, php-fpm refuses to run a pool as root (without
//! `-R`, which we deliberately do not pass) and nginx drops its workers to `nobody`, so
//! both run their workers as `nobody:nogroup`. Then **every tree a worker must read — a
//! docroot, a deploy path, a script — must be world-readable and every directory above it
//! world-traversable**. [`make_readable_by_workers`] does that for trees inside the temp
//! directory.
//!
//! # Lifetime
//!
//! Each child gets `PR_SET_PDEATHSIG = SIGTERM`, so a test binary that dies without
//! unwinding does not leave php-fpm or nginx behind. Linux sends that signal when the
//! *thread* that started the child exits: keep an instance in the thread that started it
//! (the normal case for a `#[test]`), or start shared instances from a thread that lives
//! as long as the process.
//!
//! # SSH hosts
//!
//! [`SshHosts`] starts several private `sshd` on 127.0.0.1 (one per test "host", each
//! with its own port and host key) and writes one `ssh_config` that reaches them with a
//! generated client key, its own `known_hosts` and `StrictHostKeyChecking yes`. Nothing
//! in `~/.ssh` or `/etc/ssh` is read or written (`ssh -F`, `sshd -f`, `PermitUserRC no`);
//! as root, sshd's privilege-separation directory `/run/sshd` is created if missing. The
//! hosts log in the user the tests run as (sshd can log in no one else unless root).
//!
//! Set `CUTOVER_TESTSTACK_KEEP=1` to keep the temp directories (config, logs) after the
//! instances stop; their paths are printed on stderr.

mod apache;
mod debian;
mod fastcgi;
mod fpm;
mod http;
mod nginx;
mod process;
mod sshd;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use apache::{
    write_config as write_apache_config, Apache, ApacheOptions, ApacheProbe, DEFAULT_APACHE,
};
pub use debian::debian_packages;
pub use fastcgi::FcgiResponse;
pub use fpm::{
    FastcgiTarget, FpmListen, FpmOptions, PhpFpm, PoolProbe, DEFAULT_PHP_FPM, FPM_PING_PATH,
    FPM_STATUS_PATH,
};
pub use http::{http_get, http_get_timeout, HttpConnection, HttpResponse};
pub use nginx::{write_config as write_nginx_config, Nginx, NginxOptions, DEFAULT_NGINX};
pub use process::process_running;
pub use sshd::{SshHosts, DEFAULT_SSHD};

/// Everything that can go wrong while starting, talking to or stopping a test instance.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The server did not come up (or back up after a reload) in time, or exited.
    #[error("{server}: {message}\n--- last lines of {log} ---\n{tail}")]
    Server {
        server: &'static str,
        message: String,
        log: PathBuf,
        tail: String,
    },
    /// An HTTP request failed or its response could not be parsed.
    #[error("HTTP GET {url}: {message}")]
    Http { url: String, message: String },
    /// A FastCGI request failed or its response could not be parsed.
    #[error("FastCGI {target}: {message}")]
    Fastcgi { target: String, message: String },
    /// The SSH test hosts cannot be set up (names, user, keys, sshd's config) or a host
    /// name is unknown.
    #[error("ssh test hosts: {message}")]
    Ssh { message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process may take it before we bind it again; the servers here retry with a
/// fresh port when they chose it themselves and their bind fails.
pub fn free_port() -> u16 {
    // Port 0 makes the kernel pick an unused ephemeral port; failing to bind port 0 on
    // loopback means the machine has no usable network at all.
    match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
    {
        Ok(addr) => addr.port(),
        Err(err) => panic!("cannot bind 127.0.0.1:0 to find a free port: {err}"),
    }
}

/// True when this process runs as root, so workers run as `nobody:nogroup`.
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Makes `path` readable by the php-fpm and nginx workers when they run as `nobody`:
/// directories get `a+rx`, files `a+r` (symlinks are left alone, their targets are
/// handled where they live), recursively. Directories above `path` that are inside the
/// system temp directory (such as the `/tmp/.tmpXXXX` a `tempfile::TempDir` creates with
/// mode 0700) get `a+x`. Fails when a directory above `path` outside the temp directory
/// is not traversable by others, naming it, because then no worker can reach the tree.
pub fn make_readable_by_workers(path: &Path) -> Result<()> {
    let path = fs::canonicalize(path).map_err(io_err(format!("resolve {}", path.display())))?;
    chmod_tree(&path)?;
    let temp_root = fs::canonicalize(std::env::temp_dir()).ok();
    for dir in path.ancestors().skip(1) {
        let meta = fs::metadata(dir).map_err(io_err(format!("stat {}", dir.display())))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 != 0 {
            continue;
        }
        let inside_temp = temp_root
            .as_deref()
            .is_some_and(|root| dir.starts_with(root) && dir != root);
        if inside_temp {
            set_mode(dir, mode | 0o111)?;
        } else {
            return Err(Error::Io {
                context: format!(
                    "{} is above {} and not traversable by other users (mode {:o}); \
                     workers running as nobody cannot reach the tree",
                    dir.display(),
                    path.display(),
                    mode & 0o7777
                ),
                source: io::Error::from(io::ErrorKind::PermissionDenied),
            });
        }
    }
    Ok(())
}

fn chmod_tree(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(io_err(format!("stat {}", path.display())))?;
    let mode = meta.permissions().mode();
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        set_mode(path, mode | 0o555)?;
        let entries = fs::read_dir(path).map_err(io_err(format!("read dir {}", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("read dir {}", path.display())))?;
            chmod_tree(&entry.path())?;
        }
    } else {
        set_mode(path, mode | 0o444)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777)).map_err(io_err(format!(
        "chmod {:o} {}",
        mode & 0o7777,
        path.display()
    )))
}

/// A private temp directory for one instance: traversable by the workers, removed on drop
/// unless `CUTOVER_TESTSTACK_KEEP` is set.
pub(crate) struct InstanceDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl InstanceDir {
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(io_err(format!(
                "create a temp dir in {}",
                std::env::temp_dir().display()
            )))?;
        let path = dir.path().to_path_buf();
        // nginx workers connect to the php-fpm socket in here and php-fpm workers read
        // the probe script, possibly as nobody.
        set_mode(&path, 0o755)?;
        if running_as_root() {
            make_readable_by_workers(&path)?;
        }
        Ok(InstanceDir {
            dir: Some(dir),
            path,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        if std::env::var_os("CUTOVER_TESTSTACK_KEEP").is_some_and(|v| !v.is_empty() && v != "0") {
            if let Some(dir) = self.dir.take() {
                eprintln!("cutover-teststack: keeping {}", dir.keep().display());
            }
        }
    }
}

/// The last `lines` lines of a log file, or a note saying why there are none.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

/// The group `nobody` belongs to on this system: `nogroup` on Debian, `nobody` elsewhere.
pub(crate) fn nobody_group() -> &'static str {
    let groups = fs::read_to_string("/etc/group").unwrap_or_default();
    if groups.lines().any(|line| line.starts_with("nogroup:")) {
        "nogroup"
    } else {
        "nobody"
    }
}
