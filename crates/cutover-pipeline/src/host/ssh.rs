//! Reaching a host's agent: `ssh HOST exec <path>/.cutover/bin/cutover-<build> agent`, or
//! the same binary as a local process for a host without `ssh`. The uploaded agent is the
//! `cutover-agent` built beside this executable (or this executable itself), or with
//! `[ssh] agent_binaries` the file for the host's `uname -sm`;
//! its name carries a hash of its bytes, so a host runs exactly the build it was sent, and
//! it travels gzip-compressed (`gzip -d` is on every host; zstd is not). With
//! `agent = "installed"` nothing is uploaded: the host's own `cutover` is run.
//!
//! Host key checking is ssh's and stays on; the only text that reaches the remote shell is
//! the agent's path (and with `agent_binaries`, the platform names), single-quoted.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cutover_protocol::{recv, send, Limits, ProtocolError, Reply, Request, PROTOCOL};

use super::AgentUpload;
use crate::plan::{AgentSource, SshTarget, Transport};
use crate::HostError;

type Result<T, E = HostError> = std::result::Result<T, E>;

/// Exit statuses of our remote one-liners (sh uses 126/127 for its own failures).
const NOT_INSTALLED: i32 = 96;
const WRONG_PLATFORM: i32 = 98;
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
    /// multiplexed channels. Each handshake costs the host and this machine ~35 ms of CPU.
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
enum Control {
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

const OUR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An agent that may be uploaded: for hosts whose `uname -sm` is `platform`.
struct Candidate {
    platform: String,
    file: PathBuf,
    /// This executable: known to run here, so not checked like a file of the config.
    own: bool,
}

impl Candidate {
    /// `cutover-<version>-<first 16 hex of blake3(file)>`.
    fn name(&self) -> std::result::Result<String, String> {
        static NAMES: Mutex<Vec<(PathBuf, std::result::Result<String, String>)>> =
            Mutex::new(Vec::new());
        let mut names = NAMES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, name)) = names.iter().find(|(file, _)| *file == self.file) {
            return name.clone();
        }
        let name = hash_name(&self.file);
        names.push((self.file.clone(), name.clone()));
        name
    }
}

fn hash_name(file: &Path) -> std::result::Result<String, String> {
    let reader = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(reader).map_err(|e| e.to_string())?;
    let hex = hasher.finalize().to_hex();
    Ok(format!("cutover-{OUR_VERSION}-{}", &hex[..16]))
}

/// What may be uploaded to the target: `[ssh] agent_binaries`, or this executable for
/// hosts of this machine's platform. Nothing for an installed agent or a local process.
fn candidates(target: &Target) -> Result<Vec<Candidate>> {
    match target.ssh().map(|ssh| &ssh.agent) {
        Some(AgentSource::Upload { binaries }) if binaries.is_empty() => Ok(vec![Candidate {
            platform: local_platform(),
            file: own_agent()?,
            own: true,
        }]),
        Some(AgentSource::Upload { binaries }) => Ok(binaries
            .iter()
            .map(|binary| Candidate {
                platform: binary.platform.clone(),
                file: binary.file.clone(),
                own: false,
            })
            .collect()),
        _ => Ok(Vec::new()),
    }
}

/// The remote command that starts the agent: the installed one, or the uploaded one for
/// the host's platform, exiting `MISSING + i` when the host lacks it.
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

fn ssh_command(target: &SshTarget, control: Option<&Control>, script: &str) -> Command {
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

/// The agent for hosts of this machine's platform (and for a host run as a local process):
/// `cutover-agent` beside this executable when it is of this very version and protocol
/// (asked once per process), else this executable, which serves `agent` too.
fn own_agent() -> Result<PathBuf> {
    static OWN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    OWN.get_or_init(|| {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this cutover executable to run as the agent: {e}"))?;
        let sibling = exe.with_file_name(crate::agent::AGENT_EXE);
        if sibling == exe || is_our_agent(&sibling) {
            return Ok(sibling);
        }
        tracing::info!(
            agent = %sibling.display(),
            "no agent of this build beside cutover: uploading cutover itself"
        );
        Ok(exe)
    })
    .clone()
    .map_err(HostError::failed)
}

fn is_our_agent(file: &Path) -> bool {
    let Ok(output) = Command::new(file).arg("--version").output() else {
        return false;
    };
    output.status.success()
        && String::from_utf8_lossy(&output.stdout).trim_end() == crate::agent::version_line()
}

fn agent_dir(deploy_path: &Path) -> PathBuf {
    deploy_path.join(cutover_core::layout::STATE).join("bin")
}

/// Sends the candidate's file, compressed, to the host under a temporary name then renamed,
/// so a concurrent connect never runs half a binary; `gzip -d` checks the stream's CRC, so
/// a cut connection leaves no agent.
fn upload(
    target: &Target,
    candidate: &Candidate,
    control: Option<&Control>,
) -> Result<AgentUpload> {
    let Some(ssh) = target.ssh() else {
        return Err(HostError::internal(
            "only an ssh host gets the agent uploaded",
        ));
    };
    if !candidate.own {
        check_binary(&candidate.platform, &candidate.file)?;
    }
    let name = candidate.name().map_err(|e| {
        HostError::failed(format!(
            "cannot read {} to upload it: {e}",
            candidate.file.display()
        ))
    })?;
    let packed = compressed(&candidate.file)?;
    let dir = agent_dir(&target.path);
    let bin = dir.join(name);
    let temp = dir.join(format!(".upload-{}", std::process::id()));
    let script = format!(
        "[ \"$(uname -sm)\" = {platform} ] || {{ echo \"this host is $(uname -sm); the agent is built for \"{platform} >&2; exit {WRONG_PLATFORM}; }}; \
         umask 022 && mkdir -p {dir} && gzip -d > {temp} && chmod 755 {temp} && mv -f {temp} {bin} && \
         for old in {dir}/cutover-*; do [ \"$old\" = {bin} ] || rm -f \"$old\"; done",
        platform = quote(&candidate.platform),
        dir = quote(&dir.display().to_string()),
        temp = quote(&temp.display().to_string()),
        bin = quote(&bin.display().to_string()),
    );
    let mut command = ssh_command(ssh, control, &script);
    tracing::info!(
        host = %target.name,
        file = %candidate.file.display(),
        size = packed.size,
        compressed = packed.bytes.len(),
        command = ?command,
        "uploading the agent"
    );
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| host_error(&format!("could not start ssh: {e}"), Vec::new()))?;
    let writer = child.stdin.take().map(|mut stdin| {
        let bytes = Arc::clone(&packed.bytes);
        // A failed write shows as the remote command's failure (gzip: unexpected end).
        std::thread::spawn(move || stdin.write_all(&bytes).is_ok())
    });
    let output = child
        .wait_with_output()
        .map_err(|e| host_error(&format!("ssh failed: {e}"), Vec::new()))?;
    let written = writer.is_some_and(|w| w.join().unwrap_or(false));
    if output.status.success() && written {
        return Ok(AgentUpload {
            platform: candidate.platform.clone(),
            file: candidate.file.display().to_string(),
            size: packed.size,
            bytes_sent: packed.bytes.len() as u64,
        });
    }
    let causes = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    let mut error = host_error("could not upload the agent", causes);
    error.hints = vec![match output.status.code() {
        Some(WRONG_PLATFORM) => "set [ssh] agent_binaries to a cutover built for the host's platform".into(),
        Some(127) => "the host needs `gzip` (and a POSIX sh) to receive the agent; or install cutover there and set `agent = \"installed\"`".into(),
        _ => "check that ssh reaches the host (`ssh HOST true` with the same [ssh] options) and that the deploy user can write the deploy path".into(),
    }];
    Err(error)
}

/// An agent file of the config, checked before it is sent anywhere: a file, executable,
/// and (where the header says) for the platform's machine.
fn check_binary(platform: &str, file: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let problem = |what: String, hint: &str| {
        Err(HostError::usage(
            format!("the agent for \"{platform}\" ({}) {what}", file.display()),
            hint,
        ))
    };
    let build_hint = "build cutover for that platform (README: \"Hosts of another platform\") or fix [ssh] agent_binaries";
    let meta = match std::fs::metadata(file) {
        Ok(meta) => meta,
        Err(e) => return problem(format!("cannot be read: {e}"), build_hint),
    };
    if !meta.is_file() {
        return problem("is not a file".into(), build_hint);
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return problem(
            "is not executable".into(),
            "make it executable (`chmod +x`)",
        );
    }
    let mut head = Vec::with_capacity(20);
    let read = std::fs::File::open(file).and_then(|f| f.take(20).read_to_end(&mut head));
    if let Err(e) = read {
        return problem(format!("cannot be read: {e}"), build_hint);
    }
    let (os, arch) = platform.split_once(' ').unwrap_or((platform, ""));
    if matches!(os, "Linux" | "FreeBSD" | "NetBSD" | "OpenBSD") {
        if head.len() < 20 || head[..4] != *b"\x7fELF" {
            return problem("is not an ELF executable".into(), build_hint);
        }
        let machine = if head[5] == 2 {
            u16::from_be_bytes([head[18], head[19]])
        } else {
            u16::from_le_bytes([head[18], head[19]])
        };
        if let Some(expected) = elf_machine(arch) {
            if machine != expected {
                return problem(
                    format!("is an ELF executable for machine {machine}, not {arch} ({expected})"),
                    build_hint,
                );
            }
        }
    }
    Ok(())
}

/// ELF `e_machine` of a `uname -m`; `None` where we do not know it (not checked then).
fn elf_machine(arch: &str) -> Option<u16> {
    Some(match arch {
        "x86_64" | "amd64" => 62,
        "aarch64" | "arm64" => 183,
        "i386" | "i486" | "i586" | "i686" => 3,
        "armv6l" | "armv7l" | "armv8l" => 40,
        "riscv64" => 243,
        "ppc64" | "ppc64le" => 21,
        "s390x" => 22,
        _ => return None,
    })
}

/// A file gzip-compressed once per process, whichever host asks first (the others wait).
#[derive(Clone)]
struct Packed {
    size: u64,
    bytes: Arc<Vec<u8>>,
}

fn compressed(file: &Path) -> Result<Packed> {
    static PACKED: Mutex<Vec<(PathBuf, Packed)>> = Mutex::new(Vec::new());
    let mut cache = PACKED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, packed)) = cache.iter().find(|(path, _)| path == file) {
        return Ok(packed.clone());
    }
    let io = |e: std::io::Error| {
        HostError::failed(format!(
            "cannot compress {} to upload it: {e}",
            file.display()
        ))
    };
    let mut reader = std::fs::File::open(file).map_err(io)?;
    let size = reader.metadata().map_err(io)?.len();
    // A release build (~11 MB) gets the better ratio; a debug build (~125 MB, tests and
    // development) the faster compression: level 6 would take ~10 s of it on one core.
    let level = if size > 64 << 20 {
        flate2::Compression::fast()
    } else {
        flate2::Compression::default()
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(size as usize / 3), level);
    std::io::copy(&mut reader, &mut encoder).map_err(io)?;
    let bytes = Arc::new(encoder.finish().map_err(io)?);
    let packed = Packed { size, bytes };
    cache.push((file.to_path_buf(), packed.clone()));
    Ok(packed)
}

/// What `uname -sm` prints on this machine (`Linux x86_64`, `Darwin arm64`).
fn local_platform() -> String {
    let arch = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("macos", "aarch64") => "arm64",
        (_, "x86") => "i686",
        (_, arch) => arch,
    };
    format!("{} {arch}", uname_os())
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
    fn an_agent_file_is_checked_against_the_platform_it_is_listed_for() {
        let exe = std::env::current_exe().unwrap();
        check_binary(&local_platform(), &exe).unwrap();
        if cfg!(target_os = "linux") {
            let other = if cfg!(target_arch = "aarch64") {
                "Linux x86_64"
            } else {
                "Linux aarch64"
            };
            let error = check_binary(other, &exe).unwrap_err();
            assert!(
                error.message.contains("ELF executable for machine"),
                "{error:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("cutover");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        let error = check_binary("Linux x86_64", &script).unwrap_err();
        assert!(error.message.contains("is not executable"), "{error:?}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = check_binary("Linux x86_64", &script).unwrap_err();
        assert!(error.message.contains("not an ELF"), "{error:?}");
        let error = check_binary("Linux x86_64", &dir.path().join("absent")).unwrap_err();
        assert!(error.message.contains("cannot be read"), "{error:?}");
        assert_eq!(error.kind, crate::HostErrorKind::Usage);
    }

    #[test]
    fn compression_round_trips() {
        let exe = std::env::current_exe().unwrap();
        let packed = compressed(&exe).unwrap();
        assert!(packed.bytes.len() < packed.size as usize);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&packed.bytes[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert!(plain == std::fs::read(&exe).unwrap());
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
