//! A private php-fpm master: `php-fpm8.2 -F -y <conf> -p <dir>` as our child.

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use crate::fastcgi::{self, FcgiResponse};
use crate::process::{children_of, signal, wait_until, Supervised};
use crate::Result;
use crate::{free_port, io_err, log_tail, nobody_group, running_as_root, Error, InstanceDir};

/// The php-fpm binary; override with `CUTOVER_TESTSTACK_PHP_FPM`.
pub const DEFAULT_PHP_FPM: &str = "/usr/sbin/php-fpm8.2";

/// `ping.path` of every pool: answered `pong` by a worker without running a script.
pub const FPM_PING_PATH: &str = "/fpm-ping";
/// `pm.status_path` of every pool (send it as `SCRIPT_NAME`).
pub const FPM_STATUS_PATH: &str = "/fpm-status";
const READY_LINE: &str = "ready to handle connections";

/// Where the pool listens, as requested in [`FpmOptions`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FpmListen {
    /// A unix socket `php-fpm.sock` in the instance's temp dir, mode 0666.
    #[default]
    Unix,
    /// `127.0.0.1:<free port>`, only 127.0.0.1 allowed as client.
    Tcp,
}

/// Where a FastCGI client (nginx, a test) reaches a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FastcgiTarget {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl fmt::Display for FastcgiTarget {
    /// The form nginx's `fastcgi_pass` takes: `unix:/path` or `127.0.0.1:9000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FastcgiTarget::Unix(path) => write!(f, "unix:{}", path.display()),
            FastcgiTarget::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// How to run the private pool. `Default` is production-like: 4 static workers, OPcache
/// on with `validate_timestamps=0`, `process_control_timeout` unset (0), unix socket —
/// except `file_update_protection = 0` (see there).
#[derive(Clone, Debug)]
pub struct FpmOptions {
    /// `pm = static`, `pm.max_children = workers`.
    pub workers: u32,
    /// `process_control_timeout` in seconds; `None` leaves php-fpm's default of 0, with
    /// which a reload terminates in-flight requests almost at once.
    pub process_control_timeout: Option<u32>,
    /// `opcache.validate_timestamps`; false (production) means never revalidate.
    pub validate_timestamps: bool,
    /// `opcache.revalidate_freq` in seconds (only matters with `validate_timestamps`).
    pub revalidate_freq: u32,
    /// `opcache.file_update_protection` in seconds. PHP's default is 2: a script modified
    /// less than 2 s ago is compiled on every request and never cached. Tests write a
    /// release and request it at once, so that would hide exactly the staleness they look
    /// for; the default here is 0 (cache at once). Set 2 to reproduce production fully.
    pub file_update_protection: u32,
    /// More ini settings, passed as `-d name=value` to the master, after ours (so they
    /// win). The system php.ini and conf.d are still read: OPcache is loaded from there.
    pub extra_ini: Vec<(String, String)>,
    pub listen: FpmListen,
    /// `php_admin_value[open_basedir]` for the pool. With it set, the OPcache probe at
    /// start is skipped (the probe script lives outside any basedir a test would pick).
    pub open_basedir: Option<PathBuf>,
    /// Raw pool directives appended to the pool section, e.g. `security.limit_extensions = .php .phtml`.
    pub extra_pool: String,
    /// A php-fpm.conf text to run instead of the generated pool (e.g. a snippet under
    /// test). Its `pid`, `error_log`, `daemonize`, `listen*`, `user` and `group` lines are
    /// dropped for the instance's own, which go into its first pool with the ping and
    /// status paths; `workers`, `process_control_timeout`, `open_basedir` and
    /// `extra_pool` are then not used (the `-d` ini settings still are).
    pub config: Option<String>,
    /// At start, run a script in the pool and fail unless OPcache reports itself enabled.
    pub check_opcache: bool,
    /// Bound for start-up and for the pool to answer again after a reload.
    pub start_timeout: Duration,
    /// Bound for a graceful stop (SIGQUIT) before SIGKILL.
    pub stop_timeout: Duration,
}

impl Default for FpmOptions {
    fn default() -> Self {
        FpmOptions {
            workers: 4,
            process_control_timeout: None,
            validate_timestamps: false,
            revalidate_freq: 2,
            file_update_protection: 0,
            extra_ini: Vec::new(),
            listen: FpmListen::Unix,
            open_basedir: None,
            extra_pool: String::new(),
            config: None,
            check_opcache: true,
            start_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// What the probe script saw inside the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolProbe {
    /// `getmypid()` of the worker that answered.
    pub pid: u32,
    /// `posix_geteuid()` of that worker.
    pub uid: u32,
    /// `opcache_get_status(false)['opcache_enabled']`.
    pub opcache_enabled: bool,
    /// `ini_get('opcache.validate_timestamps')` as PHP reports it ("0"/"1"/"").
    pub validate_timestamps: String,
    pub revalidate_freq: String,
    /// `opcache_get_status(false)['restart_pending']`.
    pub restart_pending: bool,
}

/// A running private php-fpm. Stopped (SIGQUIT to the master, SIGKILL after
/// [`FpmOptions::stop_timeout`]) by [`PhpFpm::stop`] or on drop.
pub struct PhpFpm {
    process: Supervised,
    target: FastcgiTarget,
    pidfile: PathBuf,
    error_log: PathBuf,
    output_log: PathBuf,
    probe_script: PathBuf,
    options: FpmOptions,
    // Dropped last: the processes must be gone before their directory is.
    dir: InstanceDir,
}

impl PhpFpm {
    /// Starts the pool and returns once it answers a FastCGI ping (and, with
    /// `check_opcache`, once a script in the pool reports OPcache enabled). On timeout
    /// or early exit the error carries the tail of the error log. A TCP port that turns
    /// out to be taken is retried with another one.
    pub fn start(options: FpmOptions) -> Result<PhpFpm> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(options.clone()) {
                Err(Error::Server { tail, .. })
                    if options.listen == FpmListen::Tcp
                        && attempt < 3
                        && tail.contains("Address already in use") =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }

    fn start_once(options: FpmOptions) -> Result<PhpFpm> {
        let dir = InstanceDir::new("cutover-fpm-")?;
        let target = match options.listen {
            FpmListen::Unix => FastcgiTarget::Unix(dir.join("php-fpm.sock")),
            FpmListen::Tcp => FastcgiTarget::Tcp(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::LOCALHOST,
                free_port(),
            ))),
        };
        let pidfile = dir.join("php-fpm.pid");
        let error_log = dir.join("php-fpm.log");
        let output_log = dir.join("php-fpm.out");
        let conf = dir.join("php-fpm.conf");
        let probe_dir = dir.join("probe");
        let probe_script = probe_dir.join("teststack-probe.php");
        let blacklist = dir.join("opcache-blacklist.txt");

        write(&conf, &pool_config(&options, &target, &pidfile, &error_log))?;
        fs::create_dir(&probe_dir).map_err(io_err(format!("mkdir {}", probe_dir.display())))?;
        fs::set_permissions(&probe_dir, fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", probe_dir.display())))?;
        write(&probe_script, PROBE_SCRIPT)?;
        // The probe must not show up in OPcache statistics tests look at.
        write(&blacklist, &format!("{}\n", probe_script.display()))?;

        let binary =
            std::env::var("CUTOVER_TESTSTACK_PHP_FPM").unwrap_or_else(|_| DEFAULT_PHP_FPM.into());
        let mut command = Command::new(&binary);
        command
            .arg("-F")
            .arg("-y")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path());
        let mut ini: Vec<(String, String)> = vec![
            ("opcache.enable".into(), "1".into()),
            (
                "opcache.validate_timestamps".into(),
                u8::from(options.validate_timestamps).to_string(),
            ),
            (
                "opcache.revalidate_freq".into(),
                options.revalidate_freq.to_string(),
            ),
            (
                "opcache.file_update_protection".into(),
                options.file_update_protection.to_string(),
            ),
            (
                "opcache.blacklist_filename".into(),
                blacklist.display().to_string(),
            ),
        ];
        ini.extend(options.extra_ini.iter().cloned());
        for (name, value) in &ini {
            command.arg("-d").arg(format!("{name}={value}"));
        }

        let process = Supervised::spawn(command, &output_log)?;
        let fpm = PhpFpm {
            process,
            target,
            pidfile,
            error_log,
            output_log,
            probe_script,
            options,
            dir,
        };
        let timeout = fpm.options.start_timeout;
        fpm.wait_for_ping(timeout, "the pool to answer a FastCGI ping")?;
        if fpm.options.check_opcache && fpm.options.open_basedir.is_none() {
            let probe = fpm.probe()?;
            if !probe.opcache_enabled {
                return Err(fpm.server_error(format!(
                    "OPcache is not enabled inside the pool ({probe:?}); is \
                     /etc/php/8.2/fpm/conf.d/10-opcache.ini present?"
                )));
            }
        }
        Ok(fpm)
    }

    /// Where clients reach the pool.
    pub fn socket(&self) -> &FastcgiTarget {
        &self.target
    }

    /// Same as [`PhpFpm::socket`], as nginx options want it.
    pub fn fastcgi_target(&self) -> FastcgiTarget {
        self.target.clone()
    }

    pub fn unix_socket(&self) -> Option<&Path> {
        match &self.target {
            FastcgiTarget::Unix(path) => Some(path),
            FastcgiTarget::Tcp(_) => None,
        }
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.target {
            FastcgiTarget::Tcp(addr) => Some(*addr),
            FastcgiTarget::Unix(_) => None,
        }
    }

    /// The master's pid (unchanged by reloads: the master re-executes itself).
    pub fn master_pid(&self) -> u32 {
        self.process.pid()
    }

    /// The pid file php-fpm writes, as cutover's `fpm_pidfile` would name it.
    pub fn pidfile(&self) -> &Path {
        &self.pidfile
    }

    /// The instance's private directory (config, logs, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pids of the master's current children (the workers).
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.master_pid())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The options the pool was started with.
    pub fn options(&self) -> &FpmOptions {
        &self.options
    }

    /// SIGUSR2 to the master, then waits until the re-executed master logs that it is
    /// ready again and the pool answers a ping.
    pub fn reload(&self) -> Result<()> {
        let before = self.ready_count();
        signal(self.master_pid(), Signal::USR2)
            .map_err(io_err(format!("SIGUSR2 php-fpm {}", self.master_pid())))?;
        let timeout = self.options.start_timeout;
        let ready = wait_until(
            timeout,
            || self.check_alive(),
            || (self.ready_count() > before).then_some(()),
        )?;
        if ready.is_none() {
            return Err(self.server_error(format!(
                "not ready again {}s after SIGUSR2",
                timeout.as_secs()
            )));
        }
        self.wait_for_ping(timeout, "the pool to answer after the reload")
    }

    /// The php-fpm error log (master and, via `catch_workers_output`, worker output).
    pub fn error_log(&self) -> String {
        let mut text = fs::read_to_string(&self.error_log).unwrap_or_default();
        if let Ok(out) = fs::read_to_string(&self.output_log) {
            if !out.is_empty() {
                text.push_str(&out);
            }
        }
        text
    }

    pub fn error_log_path(&self) -> &Path {
        &self.error_log
    }

    /// Runs one FastCGI GET for `script` (an absolute path the workers can read) with
    /// `query`, straight to the pool, no web server involved.
    pub fn request(&self, script: &Path, query: &str) -> Result<FcgiResponse> {
        let script = script.display().to_string();
        let root = Path::new(&script)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let uri = if query.is_empty() {
            script.clone()
        } else {
            format!("{script}?{query}")
        };
        fastcgi::request(
            &self.target,
            &[
                ("GATEWAY_INTERFACE", "FastCGI/1.0"),
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_FILENAME", &script),
                ("SCRIPT_NAME", &script),
                ("REQUEST_URI", &uri),
                ("DOCUMENT_URI", &script),
                ("DOCUMENT_ROOT", &root),
                ("QUERY_STRING", query),
                ("SERVER_PROTOCOL", "HTTP/1.1"),
                ("SERVER_SOFTWARE", "cutover-teststack"),
                ("SERVER_NAME", "localhost"),
                ("REMOTE_ADDR", "127.0.0.1"),
            ],
            Duration::from_secs(10),
        )
    }

    /// Runs the built-in probe script in the pool: which worker answered, as whom, and
    /// whether OPcache is on. Fails under `open_basedir` (the probe is outside it).
    pub fn probe(&self) -> Result<PoolProbe> {
        let response = self.request(&self.probe_script, "")?;
        let body = response.body();
        let field = |name: &str| {
            body.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        let parsed = (|| {
            Some(PoolProbe {
                pid: field("pid")?.parse().ok()?,
                uid: field("uid")?.parse().ok()?,
                opcache_enabled: field("opcache_enabled")? == "1",
                validate_timestamps: field("validate_timestamps")?,
                revalidate_freq: field("revalidate_freq")?,
                restart_pending: field("restart_pending")? == "1",
            })
        })();
        parsed.ok_or_else(|| Error::Fastcgi {
            target: self.target.to_string(),
            message: format!(
                "unexpected probe response (status {}): {body:?}, stderr {:?}",
                response.status(),
                String::from_utf8_lossy(&response.stderr)
            ),
        })
    }

    /// Answers the php-fpm ping page (handled by a worker, no script involved).
    pub fn ping(&self) -> Result<()> {
        let response = self.builtin_page(FPM_PING_PATH, "")?;
        if response.body().trim() == "pong" {
            Ok(())
        } else {
            Err(Error::Fastcgi {
                target: self.target.to_string(),
                message: format!("ping answered {:?}", response.body()),
            })
        }
    }

    /// The php-fpm status page (`pm.status_path`), plain text; `query` as php-fpm takes
    /// it, e.g. `"full"` for one block per worker.
    pub fn status(&self) -> Result<String> {
        self.status_query("")
    }

    pub fn status_query(&self, query: &str) -> Result<String> {
        Ok(self.builtin_page(FPM_STATUS_PATH, query)?.body())
    }

    fn builtin_page(&self, path: &str, query: &str) -> Result<FcgiResponse> {
        fastcgi::request(
            &self.target,
            &[
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_FILENAME", path),
                ("SCRIPT_NAME", path),
                ("REQUEST_URI", path),
                ("QUERY_STRING", query),
                ("SERVER_PROTOCOL", "HTTP/1.1"),
            ],
            Duration::from_secs(5),
        )
    }

    /// Stops the pool: SIGQUIT to the master, SIGKILL (master and workers) after
    /// [`FpmOptions::stop_timeout`]. Returns once none of them is running.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.process.stop(Signal::QUIT, self.options.stop_timeout);
        // A master that had to be killed leaves its socket file behind.
        if let FastcgiTarget::Unix(path) = &self.target {
            let _ = fs::remove_file(path);
        }
    }

    fn ready_count(&self) -> usize {
        fs::read_to_string(&self.error_log)
            .map(|log| log.matches(READY_LINE).count())
            .unwrap_or(0)
    }

    fn check_alive(&self) -> Result<()> {
        match self.process.exited() {
            Some(status) => Err(self.server_error(format!("exited ({status})"))),
            None => Ok(()),
        }
    }

    fn wait_for_ping(&self, timeout: Duration, what: &str) -> Result<()> {
        let mut last_error = String::new();
        let result = wait_until(
            timeout,
            || self.check_alive(),
            || match self.ping() {
                Ok(()) => Some(()),
                Err(err) => {
                    last_error = err.to_string();
                    None
                }
            },
        );
        match result {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(self.server_error(format!(
                "timed out after {}s waiting for {what}; last error: {last_error}",
                timeout.as_secs()
            ))),
            Err(err) => Err(err),
        }
    }

    fn server_error(&self, message: String) -> Error {
        let mut tail = log_tail(&self.error_log, 30);
        let out = log_tail(&self.output_log, 10);
        if !out.trim().is_empty() && !out.starts_with("(cannot read") {
            tail.push_str("\n--- stdout/stderr ---\n");
            tail.push_str(&out);
        }
        Error::Server {
            server: "php-fpm",
            message,
            log: self.error_log.clone(),
            tail,
        }
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(io_err(format!("write {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(io_err(format!("chmod {}", path.display())))
}

/// `text` with the instance's own global settings, listen address and user.
fn own_config(text: &str, target: &FastcgiTarget, pidfile: &Path, error_log: &Path) -> String {
    const OURS: [&str; 10] = [
        "pid",
        "error_log",
        "daemonize",
        "listen",
        "listen.owner",
        "listen.group",
        "listen.mode",
        "listen.allowed_clients",
        "user",
        "group",
    ];
    let mut conf = format!(
        "[global]\npid = {}\nerror_log = {}\nlog_level = notice\ndaemonize = no\n",
        pidfile.display(),
        error_log.display()
    );
    let mut pool_seen = false;
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if !line.trim_start().starts_with(';') && OURS.contains(&key) {
            continue;
        }
        conf.push_str(line);
        conf.push('\n');
        let trimmed = line.trim();
        if !pool_seen && trimmed.starts_with('[') && trimmed != "[global]" {
            pool_seen = true;
            if running_as_root() {
                conf.push_str(&format!("user = nobody\ngroup = {}\n", nobody_group()));
            }
            match target {
                FastcgiTarget::Unix(path) => conf.push_str(&format!(
                    "listen = {}\nlisten.mode = 0666\n",
                    path.display()
                )),
                FastcgiTarget::Tcp(addr) => conf.push_str(&format!(
                    "listen = {addr}\nlisten.allowed_clients = 127.0.0.1\n"
                )),
            }
            conf.push_str(&format!(
                "ping.path = {FPM_PING_PATH}\nping.response = pong\npm.status_path = {FPM_STATUS_PATH}\n"
            ));
        }
    }
    conf
}

fn pool_config(
    options: &FpmOptions,
    target: &FastcgiTarget,
    pidfile: &Path,
    error_log: &Path,
) -> String {
    if let Some(text) = &options.config {
        return own_config(text, target, pidfile, error_log);
    }
    let mut conf = format!(
        "[global]\n\
         pid = {pid}\n\
         error_log = {log}\n\
         log_level = notice\n\
         daemonize = no\n",
        pid = pidfile.display(),
        log = error_log.display(),
    );
    if let Some(seconds) = options.process_control_timeout {
        conf.push_str(&format!("process_control_timeout = {seconds}s\n"));
    }
    conf.push_str("\n[teststack]\n");
    if running_as_root() {
        // php-fpm refuses a root pool without -R; run the workers as nobody instead,
        // which is what a production pool's www-data is closer to anyway.
        conf.push_str(&format!("user = nobody\ngroup = {}\n", nobody_group()));
    }
    match target {
        FastcgiTarget::Unix(path) => {
            conf.push_str(&format!("listen = {}\n", path.display()));
            // nginx workers (nobody or the invoking user) and tests running as the
            // invoking user all connect; the socket's directory is private anyway.
            conf.push_str("listen.mode = 0666\n");
        }
        FastcgiTarget::Tcp(addr) => {
            conf.push_str(&format!(
                "listen = {addr}\nlisten.allowed_clients = 127.0.0.1\n"
            ));
        }
    }
    conf.push_str(&format!(
        "listen.backlog = 511\n\
         pm = static\n\
         pm.max_children = {workers}\n\
         ping.path = {FPM_PING_PATH}\n\
         ping.response = pong\n\
         pm.status_path = {FPM_STATUS_PATH}\n\
         catch_workers_output = yes\n\
         decorate_workers_output = no\n",
        workers = options.workers.max(1),
    ));
    if let Some(dir) = &options.open_basedir {
        conf.push_str(&format!(
            "php_admin_value[open_basedir] = {}\n",
            dir.display()
        ));
    }
    if !options.extra_pool.is_empty() {
        conf.push_str(&options.extra_pool);
        conf.push('\n');
    }
    conf
}

const PROBE_SCRIPT: &str = r#"<?php
$s = function_exists('opcache_get_status') ? @opcache_get_status(false) : false;
header('Content-Type: text/plain');
echo "pid=", getmypid(), "\n";
echo "uid=", function_exists('posix_geteuid') ? posix_geteuid() : getmyuid(), "\n";
echo "opcache_enabled=", (is_array($s) && !empty($s['opcache_enabled'])) ? 1 : 0, "\n";
echo "validate_timestamps=", ini_get('opcache.validate_timestamps'), "\n";
echo "revalidate_freq=", ini_get('opcache.revalidate_freq'), "\n";
echo "restart_pending=", (is_array($s) && !empty($s['restart_pending'])) ? 1 : 0, "\n";
"#;
