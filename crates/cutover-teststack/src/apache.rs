//! A private Apache with mod_php: Debian's `apache2 -f <dir>/httpd.conf -DFOREGROUND` as
//! our child, with a self-contained config (no /etc/apache2 includes, no `APACHE_*`
//! environment), prefork, listening on 127.0.0.1 only.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use crate::http::http_get_timeout;
use crate::process::{children_of, signal, wait_until, Supervised};
use crate::Result;
use crate::{free_port, io_err, log_tail, nobody_group, running_as_root, Error, InstanceDir};

/// The Apache binary; override with `CUTOVER_TESTSTACK_APACHE`.
pub const DEFAULT_APACHE: &str = "/usr/sbin/apache2";
/// Debian's module directory (`libapache2-mod-php8.2` puts `libphp8.2.so` there).
const MODULES: &str = "/usr/lib/apache2/modules";
const PHP_MODULE: &str = "libphp8.2.so";
/// Served by the instance itself (an alias into its own directory), never by the app.
const PING_PATH: &str = "/__teststack/ping.txt";
const PROBE_PATH: &str = "/__teststack/probe.php";
const PROBE_SCRIPT: &str = r#"<?php
$s = function_exists('opcache_get_status') ? opcache_get_status(false) : false;
echo json_encode([
    'pid' => getmypid(),
    'opcache_enabled' => is_array($s) && !empty($s['opcache_enabled']),
    'validate_timestamps' => (string) ini_get('opcache.validate_timestamps'),
    'opcache_start_time' => is_array($s) ? $s['opcache_statistics']['start_time'] : 0,
]), "\n";
"#;

/// How to run the private Apache. `Default` (with a root) is production-like for mod_php:
/// prefork with a fixed number of children, OPcache on with `validate_timestamps=0`,
/// Apache's default keep-alive (on, 5 s).
#[derive(Clone, Debug)]
pub struct ApacheOptions {
    /// `DocumentRoot`, e.g. `<deploy>/current/public`. Must be readable by the children
    /// (see [`crate::make_readable_by_workers`]).
    pub root: PathBuf,
    /// Load mod_php (`php_module`) and hand it `*.php`. Without it the instance serves
    /// files only, like an Apache that passes PHP to php-fpm.
    pub php: bool,
    /// Children: `StartServers` = `MinSpareServers` = `MaxSpareServers` = `MaxRequestWorkers`.
    pub workers: u32,
    /// `opcache.validate_timestamps`; false (production) means never revalidate.
    pub validate_timestamps: bool,
    /// `KeepAliveTimeout` in seconds (Apache's default is 5).
    pub keepalive_timeout: u32,
    /// The MPM: `prefork` (the only one mod_php starts under), `event` or `worker`.
    pub mpm: String,
    /// Raw directives appended to the config.
    pub extra: String,
    /// Listen on this port of 127.0.0.1; `None` picks a free one (retried if taken).
    pub port: Option<u16>,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
}

impl ApacheOptions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ApacheOptions {
            root: root.into(),
            php: true,
            workers: 4,
            validate_timestamps: false,
            keepalive_timeout: 5,
            mpm: "prefork".into(),
            extra: String::new(),
            port: None,
            start_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// What the probe script saw inside a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApacheProbe {
    /// `getmypid()` of the child that answered.
    pub pid: u32,
    pub opcache_enabled: bool,
    /// `ini_get('opcache.validate_timestamps')` ("0"/"1").
    pub validate_timestamps: String,
    /// `opcache_get_status()['opcache_statistics']['start_time']`: when the shared cache
    /// this child uses was created.
    pub opcache_start_time: u64,
}

/// A running private Apache. Stopped (SIGTERM to the parent, SIGKILL after
/// [`ApacheOptions::stop_timeout`]) by [`Apache::stop`] or on drop.
pub struct Apache {
    process: Supervised,
    port: u16,
    conf: PathBuf,
    pidfile: PathBuf,
    error_log: PathBuf,
    output_log: PathBuf,
    options: ApacheOptions,
    dir: InstanceDir,
}

impl Apache {
    /// Starts Apache and returns once its ping file answers on the port with this
    /// instance's nonce (and, with `php`, once the probe reports OPcache enabled). On
    /// timeout or early exit the error carries the error log's tail.
    pub fn start(options: ApacheOptions) -> Result<Apache> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(options.clone()) {
                Err(Error::Server { tail, .. })
                    if options.port.is_none()
                        && attempt < 3
                        && tail.contains("Address already in use") =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }

    fn start_once(options: ApacheOptions) -> Result<Apache> {
        let dir = InstanceDir::new("cutover-apache-")?;
        let port = options.port.unwrap_or_else(free_port);
        let nonce = format!("{}-{}", std::process::id(), port);
        let conf = dir.join("httpd.conf");
        let pidfile = dir.join("apache.pid");
        let error_log = dir.join("error.log");
        let output_log = dir.join("apache.out");
        let own = dir.join("teststack");
        fs::create_dir(&own).map_err(io_err(format!("mkdir {}", own.display())))?;
        write(
            &own.join("ping.txt"),
            &format!("teststack-apache {nonce}\n"),
        )?;
        write(&own.join("probe.php"), PROBE_SCRIPT)?;
        if running_as_root() {
            crate::make_readable_by_workers(&own)?;
        }
        write(&conf, &config(&options, port, dir.path(), &own))?;

        let binary =
            std::env::var("CUTOVER_TESTSTACK_APACHE").unwrap_or_else(|_| DEFAULT_APACHE.into());
        let mut command = Command::new(binary);
        // FOREGROUND: the parent stays our child, so it is stopped by pid like the others.
        command.arg("-f").arg(&conf).arg("-DFOREGROUND");
        // Its own process group: on stop and on a non-graceful restart the prefork parent
        // signals its whole group (killpg), which would otherwise be the test binary's.
        command.process_group(0);
        let process = Supervised::spawn(command, &output_log)?;
        let apache = Apache {
            process,
            port,
            conf,
            pidfile,
            error_log,
            output_log,
            options,
            dir,
        };

        let timeout = apache.options.start_timeout;
        let ping = apache.url(PING_PATH);
        let mut last_error = String::new();
        let ready = wait_until(
            timeout,
            || apache.check_alive(),
            || match http_get_timeout(&ping, Duration::from_secs(2)) {
                Ok(response) if response.status == 200 && response.text().contains(&nonce) => {
                    Some(())
                }
                Ok(response) => {
                    last_error = format!("status {}: {:?}", response.status, response.text());
                    None
                }
                Err(err) => {
                    last_error = err.to_string();
                    None
                }
            },
        )?;
        if ready.is_none() {
            return Err(apache.server_error(format!(
                "timed out after {}s waiting for {ping}; last error: {last_error}",
                timeout.as_secs()
            )));
        }
        if apache.options.php {
            let probe = apache.probe()?;
            if !probe.opcache_enabled {
                return Err(apache.server_error(format!(
                    "OPcache is not enabled in mod_php ({probe:?}); is \
                     /etc/php/8.2/apache2/conf.d/10-opcache.ini present?"
                )));
            }
        }
        Ok(apache)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The parent's pid (unchanged by a graceful restart).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The `PidFile` Apache writes, as cutover's `apache_pidfile` would name it.
    pub fn pidfile(&self) -> &Path {
        &self.pidfile
    }

    /// The config file: `apache2 -f <conf> -k graceful` restarts this instance.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The binary this instance runs.
    pub fn binary(&self) -> String {
        std::env::var("CUTOVER_TESTSTACK_APACHE").unwrap_or_else(|_| DEFAULT_APACHE.into())
    }

    /// The parent's current children.
    pub fn child_pids(&self) -> Vec<u32> {
        children_of(self.pid())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The instance's private directory (config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn options(&self) -> &ApacheOptions {
        &self.options
    }

    /// Runs the probe script in whichever child takes the request.
    pub fn probe(&self) -> Result<ApacheProbe> {
        let url = self.url(PROBE_PATH);
        let response = http_get_timeout(&url, Duration::from_secs(10))?;
        let text = response.text();
        let bad = |message: String| Error::Http {
            url: url.clone(),
            message,
        };
        if response.status != 200 {
            return Err(bad(format!("status {}: {text:?}", response.status)));
        }
        let field = |name: &str| -> Option<&str> {
            let key = format!("\"{name}\":");
            let rest = &text[text.find(&key)? + key.len()..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim().trim_matches('"'))
        };
        let parse = || -> Option<ApacheProbe> {
            Some(ApacheProbe {
                pid: field("pid")?.parse().ok()?,
                opcache_enabled: field("opcache_enabled")? == "true",
                validate_timestamps: field("validate_timestamps")?.to_string(),
                opcache_start_time: field("opcache_start_time")?.parse().ok()?,
            })
        };
        parse().ok_or_else(|| bad(format!("not the probe's JSON: {text:?}")))
    }

    /// SIGUSR1 to the parent (what `apachectl -k graceful` sends); returns at once.
    pub fn graceful(&self) -> Result<()> {
        signal(self.pid(), Signal::USR1).map_err(io_err(format!("SIGUSR1 apache {}", self.pid())))
    }

    /// The error log (PHP's warnings and fatal errors land here too) and Apache's own
    /// stdout/stderr.
    pub fn error_log(&self) -> String {
        let mut text = fs::read_to_string(&self.error_log).unwrap_or_default();
        if let Ok(out) = fs::read_to_string(&self.output_log) {
            text.push_str(&out);
        }
        text
    }

    /// True while the parent runs.
    pub fn running(&self) -> bool {
        self.process.exited().is_none()
    }

    /// Stops Apache: SIGTERM to the parent (which stops its children), SIGKILL after
    /// [`ApacheOptions::stop_timeout`]. Returns once none of them is running.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.process.stop(Signal::TERM, self.options.stop_timeout);
    }

    fn check_alive(&self) -> Result<()> {
        match self.process.exited() {
            Some(status) => Err(self.server_error(format!("exited ({status})"))),
            None => Ok(()),
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
            server: "apache",
            message,
            log: self.error_log.clone(),
            tail,
        }
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(io_err(format!("write {}", path.display())))
}

/// Writes `<dir>/httpd.conf` as an instance with `options` would run it, without starting
/// Apache: for tests that only need `apache2 -f FILE -M/-S/-t` on a real config (a
/// threaded MPM with mod_php cannot be started at all). Returns the config's path.
pub fn write_config(options: &ApacheOptions, dir: &Path) -> Result<PathBuf> {
    let own = dir.join("teststack");
    fs::create_dir_all(&own).map_err(io_err(format!("mkdir {}", own.display())))?;
    let conf = dir.join("httpd.conf");
    write(
        &conf,
        &config(options, options.port.unwrap_or(8080), dir, &own),
    )?;
    Ok(conf)
}

fn config(options: &ApacheOptions, port: u16, dir: &Path, own: &Path) -> String {
    let d = dir.display();
    let own = own.display();
    let root = options.root.display();
    let workers = options.workers.max(1);
    let user = if running_as_root() {
        format!("User nobody\nGroup {}\n", nobody_group())
    } else {
        // Only a root parent can change user; Apache ignores the directives otherwise.
        String::new()
    };
    let php = if options.php {
        format!(
            "LoadModule php_module {MODULES}/{PHP_MODULE}\n\
             <FilesMatch \"\\.php$\">\n    SetHandler application/x-httpd-php\n</FilesMatch>\n\
             DirectoryIndex index.php index.html\n\
             php_admin_value opcache.validate_timestamps {vt}\n\
             # Tests write a release and request it at once; PHP's default of 2 s would\n\
             # leave fresh scripts uncached and hide the staleness they look for.\n\
             php_admin_value opcache.file_update_protection 0\n",
            vt = u8::from(options.validate_timestamps),
        )
    } else {
        "DirectoryIndex index.html\n".to_string()
    };
    format!(
        r#"# A private test instance (cutover-teststack): nothing here reads /etc/apache2.
ServerRoot "{d}"
ServerName localhost
LoadModule mpm_{mpm}_module {MODULES}/mod_mpm_{mpm}.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule alias_module {MODULES}/mod_alias.so
LoadModule dir_module {MODULES}/mod_dir.so
LoadModule mime_module {MODULES}/mod_mime.so
{user}Listen 127.0.0.1:{port}
PidFile "{d}/apache.pid"
ErrorLog "{d}/error.log"
LogLevel notice
TypesConfig /dev/null
AddType text/plain .txt
<IfModule mpm_prefork_module>
StartServers {workers}
MinSpareServers {workers}
MaxSpareServers {workers}
MaxRequestWorkers {workers}
</IfModule>
KeepAlive On
KeepAliveTimeout {keepalive}
MaxKeepAliveRequests 0
ServerTokens Prod

<Directory />
    AllowOverride None
    Require all denied
</Directory>
DocumentRoot "{root}"
<Directory "{root}">
    Require all granted
</Directory>
Alias /__teststack/ "{own}/"
<Directory "{own}">
    Require all granted
</Directory>
{php}{extra}
"#,
        keepalive = options.keepalive_timeout,
        mpm = options.mpm,
        extra = options.extra,
    )
}
