//! A private nginx + php-fpm stack, or an Apache with mod_php, for manual runs and
//! benchmarks (`scripts/bench-php`).
//!
//! ```sh
//! cargo run --release -p cutover-teststack --example stack -- \
//!     [--realpath-root] [--process-control-timeout N] [--validate-timestamps] \
//!     [--workers N] [--apache] [--readable DIR]... [--ini KEY=VALUE]... --root DIR
//! ```
//!
//! With `--apache`: one Apache (prefork, `--workers` children, mod_php, OPcache with
//! `validate_timestamps=0`) whose `DocumentRoot` is `--root`; the JSON line is
//! `{"url", "apache_pidfile", "apache_conf", "apache_binary", "apache_pid"}`.
//!
//! Starts php-fpm (4 static workers by default, OPcache with `validate_timestamps=0`
//! unless `--validate-timestamps`, which also sets `revalidate_freq=0`) and nginx whose
//! `root` is `--root` (`$document_root`, or `$realpath_root` with `--realpath-root`),
//! makes `--readable` dirs (default: the root) readable by the workers, prints one JSON
//! line `{"url", "fpm", "pidfile", "nginx_pid", "fpm_master_pid"}` on stdout, then
//! blocks until stdin reaches EOF and stops both. The instances live in the main thread
//! (their children get PR_SET_PDEATHSIG from the thread that started them).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use cutover_teststack::{
    make_readable_by_workers, Apache, ApacheOptions, FpmOptions, Nginx, NginxOptions, PhpFpm,
};

struct Args {
    root: PathBuf,
    realpath_root: bool,
    process_control_timeout: Option<u32>,
    validate_timestamps: bool,
    workers: u32,
    apache: bool,
    readable: Vec<PathBuf>,
    /// `--ini key=value`: more ini settings for php-fpm (e.g. an extension to load).
    ini: Vec<(String, String)>,
}

fn usage(message: &str) -> ExitCode {
    eprintln!(
        "stack: {message}\nusage: stack [--realpath-root] [--process-control-timeout N] \
         [--validate-timestamps] [--workers N] [--apache] [--readable DIR]... [--ini KEY=VALUE]... --root DIR"
    );
    ExitCode::from(2)
}

fn parse() -> Result<Args, String> {
    let mut root = None;
    let mut args = Args {
        root: PathBuf::new(),
        realpath_root: false,
        process_control_timeout: None,
        validate_timestamps: false,
        workers: 4,
        apache: false,
        readable: Vec::new(),
        ini: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--root" => root = Some(PathBuf::from(value("--root")?)),
            "--realpath-root" => args.realpath_root = true,
            "--apache" => args.apache = true,
            "--validate-timestamps" => args.validate_timestamps = true,
            "--process-control-timeout" => {
                let v = value("--process-control-timeout")?;
                args.process_control_timeout =
                    Some(v.parse().map_err(|_| format!("bad seconds `{v}`"))?);
            }
            "--workers" => {
                let v = value("--workers")?;
                args.workers = v.parse().map_err(|_| format!("bad count `{v}`"))?;
            }
            "--readable" => args.readable.push(PathBuf::from(value("--readable")?)),
            "--ini" => {
                let v = value("--ini")?;
                let (key, val) = v
                    .split_once('=')
                    .ok_or(format!("--ini `{v}` is not key=value"))?;
                args.ini.push((key.to_string(), val.to_string()));
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    args.root = root.ok_or("--root is required")?;
    if args.readable.is_empty() {
        args.readable.push(args.root.clone());
    }
    Ok(args)
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => return usage(&message),
    };
    for dir in &args.readable {
        if let Err(err) = make_readable_by_workers(dir) {
            eprintln!("stack: {err}");
            return ExitCode::FAILURE;
        }
    }
    if args.apache {
        return apache(&args);
    }
    let fpm = match PhpFpm::start(FpmOptions {
        workers: args.workers,
        process_control_timeout: args.process_control_timeout,
        validate_timestamps: args.validate_timestamps,
        revalidate_freq: if args.validate_timestamps { 0 } else { 2 },
        extra_ini: args.ini.clone(),
        ..FpmOptions::default()
    }) {
        Ok(fpm) => fpm,
        Err(err) => {
            eprintln!("stack: php-fpm: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = NginxOptions::new(&args.root, fpm.fastcgi_target());
    options.realpath_root = args.realpath_root;
    let nginx = match Nginx::start(options) {
        Ok(nginx) => nginx,
        Err(err) => {
            eprintln!("stack: nginx: {err}");
            return ExitCode::FAILURE;
        }
    };
    let line = format!(
        "{{\"url\": {}, \"fpm\": {}, \"pidfile\": {}, \"nginx_pid\": {}, \"fpm_master_pid\": {}}}",
        json_str(&nginx.url("/index.php")),
        json_str(&fpm.fastcgi_target().to_string()),
        json_str(&fpm.pidfile().display().to_string()),
        nginx.pid(),
        fpm.master_pid(),
    );
    print_and_wait(&line);
    nginx.stop();
    fpm.stop();
    ExitCode::SUCCESS
}

fn apache(args: &Args) -> ExitCode {
    let mut options = ApacheOptions::new(&args.root);
    options.workers = args.workers;
    options.validate_timestamps = args.validate_timestamps;
    let apache = match Apache::start(options) {
        Ok(apache) => apache,
        Err(err) => {
            eprintln!("stack: apache: {err}");
            return ExitCode::FAILURE;
        }
    };
    let line = format!(
        "{{\"url\": {}, \"apache_pidfile\": {}, \"apache_conf\": {}, \"apache_binary\": {}, \"apache_pid\": {}}}",
        json_str(&apache.url("/index.php")),
        json_str(&apache.pidfile().display().to_string()),
        json_str(&apache.conf().display().to_string()),
        json_str(&apache.binary()),
        apache.pid(),
    );
    print_and_wait(&line);
    apache.stop();
    ExitCode::SUCCESS
}

/// Prints the JSON line, then blocks until whoever started us closes stdin (or dies).
fn print_and_wait(line: &str) {
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
    let mut sink = [0u8; 4096];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}
