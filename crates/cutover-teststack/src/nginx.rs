//! A private nginx: `nginx -p <dir> -c <dir>/nginx.conf -e <dir>/error.log`, `daemon off`,
//! as our child, listening on 127.0.0.1 only.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::process::Signal;

use crate::fpm::FastcgiTarget;
use crate::http::http_get_timeout;
use crate::process::{children_of, wait_until, Supervised};
use crate::Result;
use crate::{free_port, io_err, log_tail, nobody_group, running_as_root, Error, InstanceDir};

/// The nginx binary; override with `CUTOVER_TESTSTACK_NGINX`.
pub const DEFAULT_NGINX: &str = "/usr/sbin/nginx";

/// A location answered by nginx itself, used to know the port is ours and up.
const PING_LOCATION: &str = "/__teststack/ping";

/// How to run the private nginx: one server on 127.0.0.1 whose `*.php` go to `fastcgi`
/// and whose other paths fall back to `/index.php` (a typical PHP front controller).
#[derive(Clone, Debug)]
pub struct NginxOptions {
    /// The server `root`, e.g. `<deploy>/current/public`. Must be readable by the workers
    /// (see [`crate::make_readable_by_workers`]).
    pub root: PathBuf,
    pub fastcgi: FastcgiTarget,
    /// Pass `$realpath_root` instead of `$document_root` in `SCRIPT_FILENAME` and
    /// `DOCUMENT_ROOT`, so PHP sees the release the `current` symlink resolves to now.
    pub realpath_root: bool,
    /// Turn on `open_file_cache` (`open_file_cache_valid 60s`, errors cached too).
    pub open_file_cache: bool,
    /// Raw directives added inside the `server` block.
    pub extra_server: String,
    /// A whole `server { … }` block to run instead of the generated one (e.g. a snippet
    /// under test). Its `listen` lines are replaced by the instance's own and the ping
    /// location is added after its first `{`; `root`, `fastcgi` and the other server
    /// options are then not used. Debian's `fastcgi_params` is copied next to the config,
    /// so `include fastcgi_params;` works.
    pub server: Option<String>,
    /// Raw directives added inside the `http` block.
    pub extra_http: String,
    /// Listen on this port of 127.0.0.1; `None` picks a free one (retried if taken).
    pub port: Option<u16>,
    /// `worker_processes`.
    pub worker_processes: u32,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
}

impl NginxOptions {
    pub fn new(root: impl Into<PathBuf>, fastcgi: FastcgiTarget) -> Self {
        NginxOptions {
            root: root.into(),
            fastcgi,
            realpath_root: false,
            open_file_cache: false,
            extra_server: String::new(),
            server: None,
            extra_http: String::new(),
            port: None,
            worker_processes: 2,
            start_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// A running private nginx. Stopped (SIGQUIT to the master, SIGKILL after
/// [`NginxOptions::stop_timeout`]) by [`Nginx::stop`] or on drop.
pub struct Nginx {
    process: Supervised,
    port: u16,
    error_log: PathBuf,
    access_log: PathBuf,
    output_log: PathBuf,
    pidfile: PathBuf,
    options: NginxOptions,
    dir: InstanceDir,
}

impl Nginx {
    /// Starts nginx and returns once its own ping location answers on the port with this
    /// instance's nonce. On timeout or early exit the error carries the error log's tail.
    pub fn start(options: NginxOptions) -> Result<Nginx> {
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

    fn start_once(options: NginxOptions) -> Result<Nginx> {
        let dir = InstanceDir::new("cutover-nginx-")?;
        let port = options.port.unwrap_or_else(free_port);
        let nonce = nonce();
        let conf = dir.join("nginx.conf");
        let error_log = dir.join("error.log");
        let access_log = dir.join("access.log");
        let output_log = dir.join("nginx.out");
        let pidfile = dir.join("nginx.pid");
        write_config_in(&options, port, &nonce, dir.path())?;

        let binary =
            std::env::var("CUTOVER_TESTSTACK_NGINX").unwrap_or_else(|_| DEFAULT_NGINX.into());
        let mut command = Command::new(binary);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            // Without -e nginx opens /var/log/nginx/error.log before reading the config.
            .arg("-e")
            .arg(&error_log);
        let process = Supervised::spawn(command, &output_log)?;
        let nginx = Nginx {
            process,
            port,
            error_log,
            access_log,
            output_log,
            pidfile,
            options,
            dir,
        };

        let timeout = nginx.options.start_timeout;
        let ping = nginx.url(PING_LOCATION);
        let mut last_error = String::new();
        let ready = wait_until(
            timeout,
            || match nginx.process.exited() {
                Some(status) => Err(nginx.server_error(format!("exited ({status})"))),
                None => Ok(()),
            },
            || match http_get_timeout(&ping, Duration::from_secs(2)) {
                // Another process could hold a port we thought free: only our nonce counts.
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
            return Err(nginx.server_error(format!(
                "timed out after {}s waiting for {ping}; last error: {last_error}",
                timeout.as_secs()
            )));
        }
        Ok(nginx)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn pidfile(&self) -> &Path {
        &self.pidfile
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The instance's private directory (config, logs, temp paths).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn options(&self) -> &NginxOptions {
        &self.options
    }

    /// The config file this instance runs (`nginx -T -c` it to see what nginx sees).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    /// The error log (including what PHP wrote to FastCGI stderr), plus nginx's own
    /// stdout/stderr.
    pub fn error_log(&self) -> String {
        let mut text = fs::read_to_string(&self.error_log).unwrap_or_default();
        if let Ok(out) = fs::read_to_string(&self.output_log) {
            text.push_str(&out);
        }
        text
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(&self.access_log).unwrap_or_default()
    }

    /// Stops nginx: SIGQUIT (graceful) to the master, SIGKILL (master and workers) after
    /// [`NginxOptions::stop_timeout`]. Returns once none of them is running.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.process.stop(Signal::QUIT, self.options.stop_timeout);
    }

    fn server_error(&self, message: String) -> Error {
        let mut tail = log_tail(&self.error_log, 30);
        let out = log_tail(&self.output_log, 10);
        if !out.trim().is_empty() && !out.starts_with("(cannot read") {
            tail.push_str("\n--- stdout/stderr ---\n");
            tail.push_str(&out);
        }
        Error::Server {
            server: "nginx",
            message,
            log: self.error_log.clone(),
            tail,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Writes `<dir>/nginx.conf` (and `fastcgi_params`, and the `temp` directory) as an
/// instance with `options` would run it, without starting nginx: for tests that only need
/// `nginx -T` / `nginx -t` on a real config. Returns the config's path.
pub fn write_config(options: &NginxOptions, dir: &Path) -> Result<PathBuf> {
    write_config_in(options, options.port.unwrap_or(8080), "config-only", dir)
}

fn write_config_in(options: &NginxOptions, port: u16, nonce: &str, dir: &Path) -> Result<PathBuf> {
    let temp = dir.join("temp");
    fs::create_dir_all(&temp).map_err(io_err(format!("mkdir {}", temp.display())))?;
    let params = Path::new("/etc/nginx/fastcgi_params");
    if params.exists() {
        let copy = dir.join("fastcgi_params");
        fs::copy(params, &copy).map_err(io_err(format!("copy {}", params.display())))?;
    }
    let conf = dir.join("nginx.conf");
    fs::write(&conf, config(options, port, nonce, dir))
        .map_err(io_err(format!("write {}", conf.display())))?;
    Ok(conf)
}

/// `server` with the instance's `listen` and its ping location.
fn own_server(server: &str, port: u16, nonce: &str) -> String {
    let mut text = String::new();
    for line in server.lines() {
        if line.trim_start().starts_with("listen ") {
            text.push_str(&format!("    listen 127.0.0.1:{port};\n"));
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    let ping = format!(
        "\n    location = {PING_LOCATION} {{\n        access_log off;\n        default_type text/plain;\n        return 200 \"teststack-nginx {nonce}\\n\";\n    }}\n"
    );
    match text
        .find("server")
        .and_then(|at| text[at..].find('{').map(|b| at + b + 1))
    {
        Some(open) => text.insert_str(open, &ping),
        None => text.push_str(&ping),
    }
    text
}

fn config(options: &NginxOptions, port: u16, nonce: &str, dir: &Path) -> String {
    let d = dir.display();
    let user = if running_as_root() {
        format!("user nobody {};\n", nobody_group())
    } else {
        // The directive only applies when the master runs as root; nginx warns otherwise.
        String::new()
    };
    let root_var = if options.realpath_root {
        "$realpath_root"
    } else {
        "$document_root"
    };
    let open_file_cache = if options.open_file_cache {
        "    open_file_cache max=1000 inactive=60s;\n\
         \x20   open_file_cache_valid 60s;\n\
         \x20   open_file_cache_min_uses 1;\n\
         \x20   open_file_cache_errors on;\n"
    } else {
        ""
    };
    let text = format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
{user}pid {d}/nginx.pid;
error_log {d}/error.log notice;

events {{
    worker_connections 1024;
}}

http {{
    types {{
        text/html html htm;
        text/plain txt;
        text/css css;
        application/javascript js;
        application/json json;
    }}
    default_type application/octet-stream;
    access_log {d}/access.log;
    client_body_temp_path {d}/temp/client_body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    keepalive_timeout 65s;
    keepalive_requests 100000;
    server_tokens off;
{extra_http}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root "{root}";
        index index.php index.html;
{open_file_cache}
        location = {PING_LOCATION} {{
            access_log off;
            default_type text/plain;
            return 200 "teststack-nginx {nonce}\n";
        }}

        location / {{
            try_files $uri $uri/ /index.php$is_args$args;
        }}

        location ~ [^/]\.php(/|$) {{
            fastcgi_split_path_info ^(.+?\.php)(/.*)$;
            # try_files resets $fastcgi_path_info; keep it.
            set $path_info $fastcgi_path_info;
            try_files $fastcgi_script_name =404;

            fastcgi_param SCRIPT_FILENAME {root_var}$fastcgi_script_name;
            fastcgi_param DOCUMENT_ROOT {root_var};
            fastcgi_param PATH_INFO $path_info;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param REQUEST_SCHEME $scheme;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REMOTE_PORT $remote_port;
            fastcgi_param SERVER_ADDR $server_addr;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param REDIRECT_STATUS 200;
            fastcgi_pass {fastcgi};
        }}
{extra_server}
    }}
}}
"#,
        workers = options.worker_processes.max(1),
        root = options.root.display(),
        fastcgi = options.fastcgi,
        extra_http = options.extra_http,
        extra_server = options.extra_server,
    );
    match &options.server {
        None => text,
        Some(server) => {
            // The generated server starts at its `server {` line and is the last block in http.
            let start = text.find("    server {").unwrap_or(text.len());
            let end = text.rfind("}\n").unwrap_or(text.len());
            format!(
                "{}{}\n{}",
                &text[..start],
                own_server(server, port, nonce),
                &text[end..]
            )
        }
    }
}
