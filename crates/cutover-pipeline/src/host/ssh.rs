//! Reaching a host's agent: `ssh HOST exec <path>/.cutover/bin/cutover-<build> agent`, or
//! the same binary as a local process for a host without `ssh`; which file that is and
//! how it is uploaded: `agent_file`. With `agent = "installed"` nothing is uploaded: the
//! host's own `cutover` is run.
//!
//! Host key checking is ssh's and stays on; the only text that reaches the remote shell is
//! the agent's path (and with `agent_binaries`, the platform names), single-quoted.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_protocol::{recv, send, Limits, ProtocolError, Reply, Request, PROTOCOL};

use super::agent_file::{agent_dir, candidates, own_agent, upload, Candidate};
use super::AgentUpload;
use crate::plan::{AgentSource, SshTarget, Transport};
use crate::HostError;

type Result<T, E = HostError> = std::result::Result<T, E>;

/// Exit statuses of our remote one-liners (sh uses 126/127 for its own failures).
const NOT_INSTALLED: i32 = 96;
pub(super) const WRONG_PLATFORM: i32 = 98;
/// `MISSING_LINE i`: the host is of candidate `i`'s platform and lacks that agent; the
/// remote side then waits for stdin to close, keeping the connection for the upload.
const MISSING_LINE: &str = "cutover-agent-missing ";
/// Precedes the host's `uname -sm` on stderr when no agent is for its platform.
const PLATFORM_LINE: &str = "cutover-host-platform: ";

/// Where and how to reach one host's agent.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub transport: Transport,
    pub path: PathBuf,
}

impl Target {
    pub(super) fn ssh(&self) -> Option<&SshTarget> {
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
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    pub hostname: String,
    /// What this connection uploaded first, if anything.
    pub upload: Option<AgentUpload>,
    /// The first connection, when it found the agent missing: the ssh control master the
    /// upload and this session went through, closed after this session.
    master: Option<Box<Agent>>,
    /// The directory of the control socket, removed when the session is dropped.
    mux: Option<Mux>,
}

impl Agent {
    /// Connects, uploading the agent first when the host does not have this build (only
    /// with `upload`; else `None`: a dry run writes nothing on a host, not even the agent).
    ///
    /// One ssh handshake per host even on first contact: the first connection is an ssh
    /// control master; when it finds the agent missing it stays open (its remote side
    /// waits for stdin to close), and the upload and then the session go through it as
    /// multiplexed channels. Here 64 parallel logins took 2.3–2.6 s of two cores.
    pub fn connect(target: &Target, upload_missing: bool) -> Result<Option<Agent>> {
        let candidates = candidates(target)?;
        let mux = match target.ssh() {
            Some(ssh) if matches!(ssh.agent, AgentSource::Upload { .. }) => Some(Mux::new()?),
            _ => None,
        };
        let first = Agent::spawn(target, &candidates, mux.as_ref().map(Mux::master))?;
        let (index, probe) = match first {
            Spawned::Ready(mut agent) => {
                agent.mux = mux;
                return Ok(Some(*agent));
            }
            Spawned::Missing { index, probe } => (index, probe),
        };
        if !upload_missing {
            probe.close();
            return Ok(None);
        }
        let control = mux.as_ref().map(Mux::client);
        let uploaded = match upload(target, &candidates[index], control.as_ref()) {
            Ok(uploaded) => uploaded,
            Err(e) => {
                probe.close();
                return Err(e);
            }
        };
        match Agent::spawn(target, &candidates, control) {
            Ok(Spawned::Ready(mut agent)) => {
                agent.upload = Some(uploaded);
                agent.master = Some(probe);
                agent.mux = mux;
                Ok(Some(*agent))
            }
            Ok(Spawned::Missing { probe: again, .. }) => {
                again.close();
                probe.close();
                Err(host_error(
                    "the agent is still missing after uploading it",
                    Vec::new(),
                ))
            }
            Err(e) => {
                probe.close();
                Err(e)
            }
        }
    }

    fn spawn(target: &Target, candidates: &[Candidate], mux: Option<Control>) -> Result<Spawned> {
        let mut command = match target.ssh() {
            Some(ssh) => ssh_command(ssh, mux.as_ref(), &start_script(target, ssh, candidates)),
            None => {
                let mut command = Command::new(own_agent()?);
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
        let stderr_reader = child.stderr.take().map(|pipe| {
            let tail = Arc::clone(&stderr);
            std::thread::spawn(move || collect_tail(pipe, &tail))
        });
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(host_error("no pipes to ssh", Vec::new()));
        };
        let mut agent = Agent {
            child,
            input: BufReader::with_capacity(64 * 1024, stdout),
            output: Counting::new(BufWriter::with_capacity(256 * 1024, stdin)),
            stderr,
            stderr_reader,
            hostname: String::new(),
            upload: None,
            master: None,
            mux: None,
        };
        let hello = Request::Hello {
            protocol: PROTOCOL,
            version: OUR_VERSION.to_string(),
        };
        if let Err(e) = send(&mut agent.output, &hello) {
            return Err(agent.protocol_error(e));
        }
        match missing_line(&mut agent.input) {
            Ok(None) => {}
            Ok(Some(index)) if index < candidates.len() => {
                return Ok(Spawned::Missing {
                    index,
                    probe: Box::new(agent),
                })
            }
            Ok(Some(index)) => {
                return Err(agent.protocol_error(ProtocolError::Unexpected {
                    expected: "hello",
                    got: format!("a missing agent for candidate {index}"),
                }))
            }
            Err(e) => return Err(agent.protocol_error(e)),
        }
        let reply = recv::<Reply>(&mut agent.input, &Limits::DEFAULT);
        match reply {
            Ok(Reply::Hello {
                protocol,
                version,
                hostname,
                ..
            }) => {
                if protocol != PROTOCOL {
                    let message = format!(
                        "the agent on the host is cutover {version} (protocol {protocol}); this is cutover {OUR_VERSION} (protocol {PROTOCOL})"
                    );
                    return Err(agent.refused(target, message, Vec::new()));
                }
                agent.hostname = hostname;
                Ok(Spawned::Ready(Box::new(agent)))
            }
            // An agent of another protocol that checks ours first.
            Ok(Reply::Failed(failure)) => {
                let message = format!(
                    "the agent on the host refused this cutover {OUR_VERSION} (protocol {PROTOCOL})"
                );
                let mut causes = vec![failure.message];
                causes.extend(failure.causes);
                Err(agent.refused(target, message, causes))
            }
            Ok(other) => Err(agent.protocol_error(ProtocolError::Unexpected {
                expected: "hello",
                got: other.name().to_string(),
            })),
            Err(e) if e.is_disconnect() => match agent.exit_code() {
                Some(NOT_INSTALLED) => Err(not_installed(target)),
                Some(WRONG_PLATFORM) => {
                    let lines = agent.stderr_lines();
                    Err(wrong_platform(candidates, &lines))
                }
                _ => Err(agent.protocol_error(e)),
            },
            Err(e) => Err(agent.protocol_error(e)),
        }
    }

    /// An agent that cannot speak with this cutover: nothing was asked of it.
    fn refused(&mut self, target: &Target, message: String, causes: Vec<String>) -> HostError {
        let hint = match target.ssh().map(|ssh| &ssh.agent) {
            Some(AgentSource::Installed { path }) => format!(
                "install cutover {OUR_VERSION} as {} on the host, or set `agent = \"upload\"` in [ssh] or [hosts.{}]",
                path.as_deref().unwrap_or("`cutover` on the PATH"),
                target.name
            ),
            Some(AgentSource::Upload { binaries }) if !binaries.is_empty() => format!(
                "build the files of [ssh] agent_binaries from this cutover's source ({OUR_VERSION})"
            ),
            _ => "deploy with the same cutover version on both ends; remove <path>/.cutover/bin on the host to force a fresh upload".to_string(),
        };
        let _ = self.child.kill();
        let _ = self.wait_exit(Duration::from_secs(2));
        HostError {
            causes,
            hints: vec![hint],
            ..HostError::failed(message)
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
        let mut causes = if status.is_some() {
            self.stderr_lines()
        } else {
            self.stderr_tail()
        };
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

    fn stderr_tail(&self) -> Vec<String> {
        self.stderr
            .lock()
            .map(|tail| tail.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The last lines of stderr once ssh has exited: everything it printed, read to the end.
    fn stderr_lines(&mut self) -> Vec<String> {
        if let Some(reader) = self.stderr_reader.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !reader.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.stderr_tail()
    }

    fn exit_code(&mut self) -> Option<i32> {
        self.wait_exit(Duration::from_secs(5))
            .and_then(|s| s.code())
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, limit)
    }

    /// Ends the session: closing stdin tells the agent to finish; it releases the lock.
    /// Then the control master it went through, if any: its remote side ends at the same
    /// signal, and ssh exits once no channel is left.
    pub fn close(self) {
        let Agent {
            mut child,
            output,
            master,
            ..
        } = self;
        drop(output);
        if wait_child(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(master) = master {
            master.close();
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
    /// The host is of `candidates[index]`'s platform and lacks its agent; `probe` is the
    /// connection that found out, open until closed (see `Agent::connect`).
    Missing {
        index: usize,
        probe: Box<Agent>,
    },
}

/// A private directory for one host's ssh control socket (`ControlPath`). Short, as a unix
/// socket's path must be (ssh adds 17 characters while it creates it), hence /tmp when
/// TMPDIR is long.
struct Mux {
    dir: tempfile::TempDir,
}

/// How a connection uses the control socket.
pub(super) enum Control {
    /// The first connection: it creates the socket and carries the others.
    Master(PathBuf),
    /// Goes through the master's connection (or, if it is gone, connects as usual).
    Client(PathBuf),
}

impl Mux {
    fn new() -> Result<Mux> {
        let temp = std::env::temp_dir();
        let base = if temp.as_os_str().len() <= 60 {
            temp
        } else {
            PathBuf::from("/tmp")
        };
        let dir = tempfile::Builder::new()
            .prefix("cutover-ssh-")
            .tempdir_in(&base)
            .map_err(|e| {
                HostError::failed(format!(
                    "cannot create a directory for the ssh control socket in {}: {e}",
                    base.display()
                ))
            })?;
        Ok(Mux { dir })
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("m")
    }

    fn master(&self) -> Control {
        Control::Master(self.socket())
    }

    fn client(&self) -> Control {
        Control::Client(self.socket())
    }
}

/// Reads the line the start script prints instead of starting a missing agent, if that is
/// what came (a frame starts with its kind, 1 to 3, never a letter).
fn missing_line(input: &mut impl BufRead) -> std::result::Result<Option<usize>, ProtocolError> {
    let first = input.fill_buf().map_err(ProtocolError::Io)?;
    if first.is_empty() || !first[0].is_ascii_alphabetic() {
        return Ok(None);
    }
    let mut line = Vec::new();
    input
        .take(128)
        .read_until(b'\n', &mut line)
        .map_err(ProtocolError::Io)?;
    let text = String::from_utf8_lossy(&line);
    text.trim_end()
        .strip_prefix(MISSING_LINE)
        .and_then(|index| index.parse().ok())
        .map(Some)
        .ok_or(ProtocolError::Unexpected {
            expected: "hello",
            got: format!("the line {:?}", text.trim_end()),
        })
}

pub(super) const OUR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// the host's platform, printing `MISSING_LINE i` and waiting when the host lacks it.
fn start_script(target: &Target, ssh: &SshTarget, candidates: &[Candidate]) -> String {
    if let AgentSource::Installed { path } = &ssh.agent {
        return match path {
            Some(path) => {
                let bin = quote(path);
                format!("test -x {bin} || exit {NOT_INSTALLED}; exec {bin} agent")
            }
            None => format!(
                "command -v cutover >/dev/null 2>&1 || exit {NOT_INSTALLED}; exec cutover agent"
            ),
        };
    }
    let mut script = String::from("case \"$(uname -sm)\" in\n");
    for (index, candidate) in candidates.iter().enumerate() {
        let missing = format!("{{ echo '{MISSING_LINE}{index}'; exec cat >/dev/null; }}");
        let platform = quote(&candidate.platform);
        match candidate.name() {
            Ok(name) => {
                let bin = quote(&agent_dir(&target.path).join(name).display().to_string());
                script.push_str(&format!(
                    "{platform}) test -x {bin} || {missing}; exec {bin} agent;;\n"
                ));
            }
            // The upload checks the file and says what is wrong with it.
            Err(_) => script.push_str(&format!("{platform}) {missing};;\n")),
        }
    }
    script.push_str(&format!(
        "*) echo {line}\"$(uname -sm)\" >&2; exit {WRONG_PLATFORM};;\nesac",
        line = quote(PLATFORM_LINE)
    ));
    script
}

fn not_installed(target: &Target) -> HostError {
    let path = match target.ssh().map(|ssh| &ssh.agent) {
        Some(AgentSource::Installed { path: Some(path) }) => path.clone(),
        _ => "cutover".to_string(),
    };
    let message = if path == "cutover" {
        "no `cutover` on the PATH of an ssh session on the host".to_string()
    } else {
        format!("no agent on the host: `{path}` is not an executable file")
    };
    HostError::failed(message).with_hint(format!(
        "install cutover {OUR_VERSION} there (`agent_path` names where), or set `agent = \"upload\"`"
    ))
}

fn wrong_platform(candidates: &[Candidate], stderr: &[String]) -> HostError {
    let platform = stderr
        .iter()
        .find_map(|line| line.strip_prefix(PLATFORM_LINE))
        .unwrap_or("(its uname -sm was not received)")
        .to_string();
    let known: Vec<String> = candidates
        .iter()
        .map(|c| format!("\"{}\"", c.platform))
        .collect();
    match candidates {
        [only] if only.own => HostError::usage(
            format!(
                "the host is \"{platform}\"; this cutover is built for {} and uploads itself",
                known[0]
            ),
            format!(
                "set [ssh] agent_binaries = {{ \"{platform}\" = \"path/to/cutover\" }} (a cutover built for it; README: \"Hosts of another platform\"), or install one there and set `agent = \"installed\"`"
            ),
        ),
        _ => HostError::usage(
            format!(
                "the host is \"{platform}\"; [ssh] agent_binaries has agents for {}",
                known.join(", ")
            ),
            format!("add \"{platform}\" = \"path/to/cutover\" to [ssh] agent_binaries (a cutover built for it)"),
        ),
    }
}

pub(super) fn host_error(message: &str, causes: Vec<String>) -> HostError {
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

pub(super) fn ssh_command(target: &SshTarget, control: Option<&Control>, script: &str) -> Command {
    let mut command = Command::new("ssh");
    command.current_dir(&target.cwd);
    // Ours first: for each option ssh keeps the first value it is given.
    match control {
        Some(Control::Master(socket)) => {
            command.args(["-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-o"]);
            command.arg(control_path(socket));
        }
        Some(Control::Client(socket)) => {
            command.args(["-o", "ControlMaster=no", "-o"]);
            command.arg(control_path(socket));
        }
        None => {}
    }
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

/// `-o ControlPath=…`, with `%` (ssh's token character) doubled.
fn control_path(socket: &Path) -> String {
    format!(
        "ControlPath={}",
        socket.display().to_string().replace('%', "%%")
    )
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
    fn the_missing_agent_line_is_told_from_a_frame_and_checked() {
        let read = |bytes: &[u8]| missing_line(&mut std::io::BufReader::new(bytes));
        assert_eq!(read(b"cutover-agent-missing 1\n").unwrap(), Some(1));
        // A reply frame (kind 1) is left for the protocol to read; so is nothing at all.
        assert_eq!(read(b"\x01\0\0\0\x02{}").unwrap(), None);
        assert_eq!(read(b"").unwrap(), None);
        for bad in [
            &b"cutover-agent-missing x\n"[..],
            b"Welcome to the host!\n",
            b"cutover-agent-missing 99999999999999999999999\n",
        ] {
            assert!(read(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"cutover-agent-missing ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 500));
        assert!(read(&long).is_err(), "an endless line is cut at 128 bytes");
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
