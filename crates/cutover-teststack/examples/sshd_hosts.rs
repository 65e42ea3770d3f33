//! Private sshd hosts for manual runs and benchmarks (`scripts/bench-fleet`).
//!
//! ```sh
//! cargo run --release -p cutover-teststack --example sshd_hosts -- [--hosts N]
//! ```
//!
//! Starts N (default 8) private sshd instances named `h1`..`hN` on 127.0.0.1 with
//! [`SshHosts`] (own host keys, client key, `known_hosts`, strict host key checking) and
//! prints, one item per line on stdout:
//!
//! ```text
//! ssh_config /tmp/cutover-sshd-XXXX/ssh_config
//! host h1 <port> <sshd pid>
//! ...
//! ready
//! ```
//!
//! then blocks until stdin reaches EOF (whoever started us closed it or died) or SIGINT,
//! SIGTERM or SIGHUP arrives, and stops every host by pid (and removes their directory).
//! `ssh -F <ssh_config> h1 -- CMD` reaches the first host. The hosts live in the main
//! thread: their servers get PR_SET_PDEATHSIG from the thread that started them, so they
//! die with this process even when it is killed with SIGKILL.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use cutover_teststack::SshHosts;

/// More than this many sshd on one machine is a mistake, not a benchmark.
const MAX_HOSTS: usize = 64;

static STOP_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: i32) {
    // Only an atomic store: anything else is not async-signal-safe.
    STOP_SIGNAL.store(true, Ordering::SeqCst);
}

extern "C" {
    // libc's signal(3); std links libc anyway, and this crate has no libc dependency.
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

/// Turns SIGHUP, SIGINT and SIGTERM into an orderly stop, so the hosts' directory (keys,
/// configs, logs) is removed as well: the default action would end us without running
/// `Drop`. (PR_SET_PDEATHSIG would still take the servers down.)
fn catch_stop_signals() {
    const SIGHUP: i32 = 1;
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    for signum in [SIGHUP, SIGINT, SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal(signum, on_stop_signal);
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!(
        "sshd_hosts: {message}\nusage: sshd_hosts [--hosts N]   (1..={MAX_HOSTS}, default 8)"
    );
    ExitCode::from(2)
}

fn parse() -> Result<usize, String> {
    let mut count = 8;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--hosts" => {
                let v = it.next().ok_or("--hosts needs a value")?;
                count = v.parse().map_err(|_| format!("bad host count `{v}`"))?;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if count == 0 || count > MAX_HOSTS {
        return Err(format!("--hosts must be 1..={MAX_HOSTS}, not {count}"));
    }
    Ok(count)
}

fn main() -> ExitCode {
    let count = match parse() {
        Ok(count) => count,
        Err(message) => return usage(&message),
    };
    catch_stop_signals();
    let names: Vec<String> = (1..=count).map(|i| format!("h{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let hosts = match SshHosts::start(&refs) {
        Ok(hosts) => hosts,
        Err(err) => {
            eprintln!("sshd_hosts: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut text = format!("ssh_config {}\n", hosts.ssh_config().display());
    for name in hosts.names() {
        let pid = hosts
            .pid(&name)
            .map_or_else(|| "-".into(), |p| p.to_string());
        text.push_str(&format!("host {name} {} {pid}\n", hosts.port(&name)));
    }
    text.push_str("ready\n");
    {
        let mut stdout = std::io::stdout().lock();
        // Nobody reading is no reason to leave the hosts running: carry on to the wait.
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    // A helper thread waits for stdin's EOF, so this thread can also watch for signals
    // (glibc's signal() restarts an interrupted read, which would never return here).
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
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
        let _ = eof_tx.send(());
    });
    while !STOP_SIGNAL.load(Ordering::SeqCst) {
        match eof_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    // Stops every sshd by pid, with the connections and commands they run, then removes
    // the hosts' directory.
    drop(hosts);
    ExitCode::SUCCESS
}
