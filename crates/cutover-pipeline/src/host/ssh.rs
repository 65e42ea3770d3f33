//! Reaching a host's agent: `ssh HOST exec <path>/.cutover/bin/cutover-<build> agent`, or
//! the same binary as a local process for a host without `ssh`. The agent binary is this
//! very executable, uploaded once per build (its name carries a hash of our own bytes, so
//! both ends always run the same code).
//!
//! Host key checking is ssh's and stays on; the only text that reaches the remote shell is
//! the agent's path, single-quoted.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cutover_protocol::{recv, send, Limits, ProtocolError, Reply, Request, PROTOCOL};

use crate::plan::{SshTarget, Transport};
use crate::HostError;

type Result<T, E = HostError> = std::result::Result<T, E>;

/// Exit statuses of our remote one-liners (sh uses 126/127 for its own failures).
const AGENT_MISSING: i32 = 97;
const WRONG_PLATFORM: i32 = 98;

/// Where and how to reach one host's agent.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub transport: Transport,
    pub path: PathBuf,
}

impl Target {
    fn ssh(&self) -> Option<&SshTarget> {
        match &self.transport {
            Transport::Ssh(ssh) => Some(ssh),
            _ => None,
        }
    }
}

/// An open session with one host's agent.
pub struct Agent {
    child: Child,
    input: BufReader<ChildStdout>,
    output: Counting<BufWriter<ChildStdin>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    pub hostname: String,
}

impl Agent {
    /// Connects, uploading the agent first when the host does not have this build (only
    /// with `upload`; else `None`: a dry run writes nothing on a host, not even the agent).
    pub fn connect(target: &Target, upload_missing: bool) -> Result<Option<Agent>> {
        match Agent::spawn(target)? {
            Spawned::Ready(agent) => Ok(Some(*agent)),
            Spawned::Missing if !upload_missing => Ok(None),
            Spawned::Missing => {
                upload(target)?;
                match Agent::spawn(target)? {
                    Spawned::Ready(agent) => Ok(Some(*agent)),
                    Spawned::Missing => Err(host_error(
                        "the agent is still missing after uploading it",
                        Vec::new(),
                    )),
                }
            }
        }
    }

    fn spawn(target: &Target) -> Result<Spawned> {
        let mut command = match target.ssh() {
            Some(ssh) => {
                let bin = quote(&agent_path(&target.path).display().to_string());
                let script = format!("test -x {bin} || exit {AGENT_MISSING}; exec {bin} agent");
                ssh_command(ssh, &script)
            }
            None => {
                let mut command = Command::new(self_exe()?);
                command.arg("agent");
                command
            }
        };
        tracing::info!(host = %target.name, command = ?command, "starting the agent");
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| host_error(&format!("could not start ssh: {e}"), Vec::new()))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let tail = Arc::clone(&stderr);
            std::thread::spawn(move || collect_tail(pipe, &tail));
        }
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(host_error("no pipes to ssh", Vec::new()));
        };
        let mut agent = Agent {
            child,
            input: BufReader::with_capacity(64 * 1024, stdout),
            output: Counting::new(BufWriter::with_capacity(256 * 1024, stdin)),
            stderr,
            hostname: String::new(),
        };
        let hello = Request::Hello {
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let reply = send(&mut agent.output, &hello)
            .and_then(|()| recv::<Reply>(&mut agent.input, &Limits::DEFAULT));
        match reply {
            Ok(Reply::Hello {
                protocol,
                version,
                hostname,
                ..
            }) => {
                if protocol != PROTOCOL {
                    let e = ProtocolError::Version {
                        ours: PROTOCOL,
                        theirs: protocol,
                        version,
                    };
                    return Err(agent.protocol_error(e));
                }
                agent.hostname = hostname;
                Ok(Spawned::Ready(Box::new(agent)))
            }
            Ok(other) => Err(agent.protocol_error(ProtocolError::Unexpected {
                expected: "hello",
                got: other.name().to_string(),
            })),
            Err(e) if e.is_disconnect() => {
                if agent.exit_code() == Some(AGENT_MISSING) {
                    return Ok(Spawned::Missing);
                }
                Err(agent.protocol_error(e))
            }
            Err(e) => Err(agent.protocol_error(e)),
        }
    }

    /// Sends a request and reads its reply; a `Failed` reply becomes the host's error.
    pub fn call(&mut self, request: &Request) -> Result<Reply> {
        send(&mut self.output, request).map_err(|e| self.protocol_error(e))?;
        self.reply()
    }

    /// Sends without waiting for the reply (the fleet's broadcast).
    pub fn send(&mut self, request: &Request) -> Result<()> {
        send(&mut self.output, request).map_err(|e| self.protocol_error(e))
    }

    pub fn reply(&mut self) -> Result<Reply> {
        match recv::<Reply>(&mut self.input, &Limits::DEFAULT) {
            Ok(Reply::Failed(failure)) => Err(HostError::from_failure(failure)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(self.protocol_error(e)),
        }
    }

    /// The stream the content of files goes to (after a `Need` reply).
    pub fn writer(&mut self) -> &mut dyn Write {
        &mut self.output
    }

    pub fn bytes_sent(&self) -> u64 {
        self.output.count.load(Ordering::Relaxed)
    }

    /// A broken or hostile conversation: say what ssh and the agent printed, if anything.
    pub fn protocol_error(&mut self, error: ProtocolError) -> HostError {
        let disconnect = error.is_disconnect();
        let status = if disconnect {
            self.wait_exit(Duration::from_secs(2))
        } else {
            None
        };
        let mut causes: Vec<String> = self
            .stderr
            .lock()
            .map(|tail| tail.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(status) = status {
            causes.push(format!("ssh exited with {status}"));
        }
        let message = if disconnect {
            "lost the connection to the agent".to_string()
        } else {
            format!("refused what the agent sent: {error}")
        };
        let mut error = host_error(&message, causes);
        if !disconnect {
            error.hints = vec![
                "the agent misbehaved; nothing it sent was acted on. Remove <path>/.cutover/bin on the host to force a fresh upload".into(),
            ];
        }
        error
    }

    fn exit_code(&mut self) -> Option<i32> {
        self.wait_exit(Duration::from_secs(5))
            .and_then(|s| s.code())
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, limit)
    }

    /// Ends the session: closing stdin tells the agent to finish; it releases the lock.
    pub fn close(self) {
        let Agent {
            mut child, output, ..
        } = self;
        drop(output);
        if wait_child(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => return None,
        }
    }
}

enum Spawned {
    Ready(Box<Agent>),
    Missing,
}

fn host_error(message: &str, causes: Vec<String>) -> HostError {
    HostError {
        causes,
        ..HostError::failed(message)
    }
}

fn collect_tail(pipe: impl Read, tail: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(pipe).lines().map_while(std::io::Result::ok) {
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == 10 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

fn ssh_command(target: &SshTarget, script: &str) -> Command {
    let mut command = Command::new("ssh");
    command.current_dir(&target.cwd);
    command.args(&target.options);
    // No password prompts (we own stdin), no pty (binary frames), no forwarding.
    command.args(["-T", "-a", "-x", "-o", "BatchMode=yes"]);
    let dest = target.destination.as_str();
    let (host, port) = split_port(dest);
    if let Some(port) = port {
        command.args(["-p", port]);
    }
    command.arg("--").arg(host.as_ref()).arg(script);
    command
}

/// `user@host:2222` -> (`user@host`, `2222`); `[::1]:22` -> (`::1`, `22`);
/// `user@[::1]:22` -> (`user@::1`, `22`). Anything else (an alias, a bare IPv6 address)
/// goes to ssh as written.
fn split_port(dest: &str) -> (std::borrow::Cow<'_, str>, Option<&str>) {
    let is_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (user, rest) = match dest.split_once('@') {
        Some((user, rest)) if rest.starts_with('[') => (Some(user), rest),
        _ => (None, dest),
    };
    if let Some(bracketed) = rest.strip_prefix('[') {
        if let Some((host, after)) = bracketed.split_once(']') {
            let port = after.strip_prefix(':').filter(|p| is_port(p));
            let host = match user {
                Some(user) => format!("{user}@{host}").into(),
                None => host.into(),
            };
            return (host, port);
        }
    }
    match dest.split_once(':') {
        Some((host, port)) if is_port(port) => (host.into(), Some(port)),
        _ => (dest.into(), None),
    }
}

/// POSIX shell single quotes: everything literal, `'` closed, escaped, reopened.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| {
        HostError::failed(format!(
            "cannot find this cutover executable to run as the agent: {e}"
        ))
    })
}

/// `cutover-<version>-<first 16 hex of blake3(own executable)>`.
fn agent_name() -> Result<&'static str> {
    static NAME: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let name = NAME.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let file = std::fs::File::open(&exe).map_err(|e| e.to_string())?;
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(file).map_err(|e| e.to_string())?;
        let hex = hasher.finalize().to_hex();
        Ok(format!(
            "cutover-{}-{}",
            env!("CARGO_PKG_VERSION"),
            &hex[..16]
        ))
    });
    name.as_deref().map_err(|e| {
        HostError::failed(format!(
            "cannot read this cutover executable to upload it: {e}"
        ))
    })
}

fn agent_path(deploy_path: &Path) -> PathBuf {
    let name = agent_name().unwrap_or("cutover-agent");
    deploy_path
        .join(cutover_core::layout::STATE)
        .join("bin")
        .join(name)
}

/// Copies this executable to the host, under a temporary name then renamed, so a
/// concurrent connect never runs half a binary.
fn upload(target: &Target) -> Result<()> {
    agent_name()?;
    let Some(ssh) = target.ssh() else {
        return Err(HostError::internal(
            "only an ssh host gets the agent uploaded",
        ));
    };
    let bin = agent_path(&target.path);
    let dir = bin.parent().unwrap_or(Path::new("/"));
    let temp = dir.join(format!(".upload-{}", std::process::id()));
    let platform = format!("{} {}", uname_os(), std::env::consts::ARCH);
    let script = format!(
        "[ \"$(uname -sm)\" = {platform} ] || {{ echo \"this host is $(uname -sm); the agent is built for \"{platform} >&2; exit {WRONG_PLATFORM}; }}; \
         umask 022 && mkdir -p {dir} && cat > {temp} && chmod 755 {temp} && mv -f {temp} {bin} && \
         for old in {dir}/cutover-*; do [ \"$old\" = {bin} ] || rm -f \"$old\"; done",
        platform = quote(&platform),
        dir = quote(&dir.display().to_string()),
        temp = quote(&temp.display().to_string()),
        bin = quote(&bin.display().to_string()),
    );
    let mut command = ssh_command(ssh, &script);
    tracing::info!(host = %target.name, command = ?command, "uploading the agent");
    let exe = self_exe()?;
    let file = std::fs::File::open(&exe)
        .map_err(|e| host_error(&format!("cannot read {}: {e}", exe.display()), Vec::new()))?;
    let output = command
        .stdin(Stdio::from(file))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| host_error(&format!("could not start ssh: {e}"), Vec::new()))?;
    if output.status.success() {
        return Ok(());
    }
    let causes = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    let mut error = host_error("could not upload the agent", causes);
    error.hints = vec![if output.status.code() == Some(WRONG_PLATFORM) {
        "deploy from a machine of the same platform as the hosts (cutover uploads itself)".into()
    } else {
        "check that ssh reaches the host (`ssh HOST true` with the same [ssh] options) and that the deploy user can write the deploy path".into()
    }];
    Err(error)
}

fn uname_os() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "freebsd" => "FreeBSD",
        other => other,
    }
}

/// Counts what goes out, for the bytes-sent figures.
struct Counting<W> {
    inner: W,
    count: AtomicU64,
}

impl<W> Counting<W> {
    fn new(inner: W) -> Self {
        Counting {
            inner,
            count: AtomicU64::new(0),
        }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_split_off_a_port() {
        fn split(dest: &str) -> (&str, Option<&str>) {
            let (host, port) = split_port(dest);
            (Box::leak(host.into_owned().into_boxed_str()), port)
        }
        assert_eq!(split("deploy@web1:22"), ("deploy@web1", Some("22")));
        assert_eq!(split("web1"), ("web1", None));
        assert_eq!(split("deploy@web1"), ("deploy@web1", None));
        assert_eq!(split("[::1]:2222"), ("::1", Some("2222")));
        assert_eq!(split("[::1]"), ("::1", None));
        assert_eq!(split("web1:ssh"), ("web1:ssh", None));
        assert_eq!(split("deploy@[::1]:2222"), ("deploy@::1", Some("2222")));
        assert_eq!(
            split("deploy@[fe80::1%eth0]"),
            ("deploy@fe80::1%eth0", None)
        );
    }

    #[test]
    fn quoting_keeps_everything_literal() {
        assert_eq!(quote("/var/www/app"), "'/var/www/app'");
        assert_eq!(quote("it's; rm -rf /"), r"'it'\''s; rm -rf /'");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote("a'b $(x) `y` \"z\"")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a'b $(x) `y` \"z\"");
    }
}
