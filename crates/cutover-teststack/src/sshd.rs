//! Private OpenSSH servers: one `sshd -D -f <own config>` per test host on 127.0.0.1, as
//! our children, plus one client key, one `known_hosts` and one `ssh_config` that reach
//! them with host key checking on.
//!
//! Nothing in `~/.ssh` or `/etc/ssh` is read or written by us, by `ssh -F` (which skips
//! the user and system client configs) or by the servers (`-f` replaces the system
//! server config; `PermitUserRC no` skips `~/.ssh/rc`). What sshd reads regardless —
//! its compiled-in defaults, `/etc/passwd`, the login shell's own start-up files — is
//! outside our control. As root, sshd needs its privilege-separation directory
//! `/run/sshd`; it is the one system path we create if it is missing.
//!
//! sshd can only log in the user it runs as unless it runs as root, so the hosts log in
//! the current user: root in CI, the developer elsewhere.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::process::{children_of, signal, Supervised};
use crate::Result;
use crate::{free_port, io_err, log_tail, running_as_root, Error, InstanceDir};

/// The sshd binary; override with `CUTOVER_TESTSTACK_SSHD`. It must be an absolute path
/// because sshd re-executes itself for every connection.
pub const DEFAULT_SSHD: &str = "/usr/sbin/sshd";

/// Environment for remote commands, set by sshd before it starts the login shell.
///
/// `PATH`: sshd's compiled-in default leaves out the sbin directories for ordinary users.
///
/// `SHLVL=1`: Debian's bash sources `~/.bashrc` for a command run by sshd when it is the
/// top-level shell, which it decides from `SHLVL`. The test user's `.bashrc` belongs to
/// the machine, not the test (on a developer box it may start pyenv or nvm, costing
/// hundreds of milliseconds per connection and changing `PATH`), so the remote shell
/// believes it is nested and skips it. Shells that always read a start-up file (zsh's
/// `~/.zshenv`) still do.
const REMOTE_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SHLVL=1";

/// Bound for all hosts together to accept an `ssh <name> true`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for an sshd to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a host is started again on a fresh port when the one we picked was taken.
const BIND_ATTEMPTS: u32 = 3;

/// Several private sshd instances ("hosts") on 127.0.0.1, each on its own port with its
/// own ed25519 host key, sharing one temp directory, one client key, one `known_hosts`
/// and one `ssh_config`. Every host is stopped (with whatever its connections run) by
/// [`SshHosts::stop`] or on drop.
///
/// Keep the value in the thread that started it: the servers get `PR_SET_PDEATHSIG`,
/// which fires when that thread exits (see the crate docs).
pub struct SshHosts {
    hosts: Vec<SshHost>,
    user: String,
    client_key: PathBuf,
    known_hosts: PathBuf,
    ssh_config: PathBuf,
    // Dropped last: the servers must be gone before their directory is.
    dir: InstanceDir,
}

struct SshHost {
    name: String,
    port: u16,
    config: PathBuf,
    host_key: PathBuf,
    log: PathBuf,
    output_log: PathBuf,
    process: Option<Supervised>,
}

impl SshHosts {
    /// Starts one sshd per name on `127.0.0.1:<free port>` and returns once `ssh <name> true`
    /// succeeds through [`SshHosts::ssh_config`] for every one of them (bounded at 10 s).
    ///
    /// Names may contain ASCII letters, digits, `.`, `_` and `-` and must be distinct;
    /// they become `Host` names in the `ssh_config` and the host key aliases in
    /// `known_hosts`.
    pub fn start(names: &[&str]) -> Result<SshHosts> {
        check_names(names)?;
        let (user, shell) = login_user()?;
        if running_as_root() {
            make_privsep_dir()?;
        }
        let sshd = sshd_binary()?;
        let dir = InstanceDir::new("cutover-sshd-")?;
        let client_key = dir.join("client_ed25519");
        keygen(&client_key, "cutover-teststack-client")?;
        let authorized_keys = dir.join("authorized_keys");
        let client_pub = read_pub(&client_key)?;
        write(&authorized_keys, &client_pub)?;

        let mut hosts = Vec::with_capacity(names.len());
        for name in names {
            let host_dir = dir.join(name);
            fs::create_dir(&host_dir).map_err(io_err(format!("mkdir {}", host_dir.display())))?;
            let host_key = host_dir.join("ssh_host_ed25519_key");
            keygen(&host_key, &format!("cutover-teststack-{name}"))?;
            hosts.push(SshHost {
                name: name.to_string(),
                port: 0,
                config: host_dir.join("sshd_config"),
                host_key,
                log: host_dir.join("sshd.log"),
                output_log: host_dir.join("sshd.out"),
                process: None,
            });
        }

        let mut ssh_hosts = SshHosts {
            ssh_config: dir.join("ssh_config"),
            known_hosts: dir.join("known_hosts"),
            hosts,
            user,
            client_key,
            dir,
        };
        let penalties = per_source_penalties_supported(&sshd, &ssh_hosts)?;
        let settings = ServerSettings {
            sshd: &sshd,
            user: &ssh_hosts.user,
            authorized_keys: &authorized_keys,
            penalties,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        for host in &mut ssh_hosts.hosts {
            host.launch(&settings, free_port())?;
        }
        // All servers start in parallel; then each must show its banner, on a fresh port
        // if another process took the one we picked.
        for host in &mut ssh_hosts.hosts {
            let mut attempt = 1;
            loop {
                match host.wait_listening(deadline) {
                    Err(_) if host.lost_port_race() && attempt < BIND_ATTEMPTS => {
                        attempt += 1;
                        host.launch(&settings, free_port())?;
                    }
                    other => break other?,
                }
            }
        }
        ssh_hosts.write_client_files()?;

        // Logging in proves the keys, known_hosts and the user's login shell.
        let results: Vec<Result<()>> = thread::scope(|scope| {
            let checks: Vec<_> = ssh_hosts
                .hosts
                .iter()
                .map(|host| {
                    let hosts = &ssh_hosts;
                    let shell = &shell;
                    scope.spawn(move || hosts.wait_login(host, shell, deadline))
                })
                .collect();
            checks
                .into_iter()
                .map(|check| match check.join() {
                    Ok(result) => result,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(ssh_hosts)
    }

    /// The `ssh_config` to pass as `ssh -F`: one `Host <name>` block per host.
    pub fn ssh_config(&self) -> &Path {
        &self.ssh_config
    }

    /// The client's `known_hosts`: one `<name> ssh-ed25519 …` line per host (the config
    /// sets `HostKeyAlias <name>`).
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// The client's private key (its public half is `<path>.pub`).
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The user every host logs in: the user the tests run as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The shared private directory (configs, keys, `<name>/sshd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The host names, in the order given to [`SshHosts::start`].
    pub fn names(&self) -> Vec<String> {
        self.hosts.iter().map(|host| host.name.clone()).collect()
    }

    /// The port `name` listens on (still reported after [`SshHosts::stop`]).
    ///
    /// # Panics
    /// When `name` is not one of the hosts: that is a mistake in the test.
    pub fn port(&self, name: &str) -> u16 {
        self.expect_host(name).port
    }

    /// The pid of `name`'s listening sshd, or `None` once it was stopped.
    ///
    /// # Panics
    /// When `name` is not one of the hosts.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.expect_host(name).process.as_ref().map(Supervised::pid)
    }

    /// `name`'s sshd log (`LogLevel VERBOSE`) plus what it wrote to stdout/stderr.
    ///
    /// # Panics
    /// When `name` is not one of the hosts.
    pub fn log(&self, name: &str) -> String {
        let host = self.expect_host(name);
        let mut text = fs::read_to_string(&host.log).unwrap_or_default();
        if let Ok(out) = fs::read_to_string(&host.output_log) {
            text.push_str(&out);
        }
        text
    }

    /// Stops one host's sshd and ends its open connections and the commands they run, as
    /// if the machine went away; the other hosts keep running. Stopping twice is fine.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        self.host_mut(name)?.stop();
        Ok(())
    }

    /// `ssh -F <config> <name> -- <command>`, stdin not yet set. The remote command runs
    /// through the user's login shell with `PATH` set to the usual system directories.
    pub fn ssh_command(&self, name: &str, command: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-F")
            .arg(&self.ssh_config)
            .arg(name)
            .arg("--")
            .arg(command);
        ssh
    }

    /// Runs `ssh -F <config> <name> -- <command>` with stdin from `/dev/null` and returns
    /// its output, whatever the exit status. An error only when `name` is unknown or ssh
    /// cannot be started.
    pub fn run(&self, name: &str, command: &str) -> Result<Output> {
        self.host(name)?;
        self.ssh_command(name, command)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("run ssh {name} -- {command}")))
    }

    fn host(&self, name: &str) -> Result<&SshHost> {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .ok_or_else(|| self.unknown(name))
    }

    fn host_mut(&mut self, name: &str) -> Result<&mut SshHost> {
        let unknown = self.unknown(name);
        self.hosts
            .iter_mut()
            .find(|host| host.name == name)
            .ok_or(unknown)
    }

    fn expect_host(&self, name: &str) -> &SshHost {
        match self.host(name) {
            Ok(host) => host,
            Err(err) => panic!("{err}"),
        }
    }

    fn unknown(&self, name: &str) -> Error {
        Error::Ssh {
            message: format!("no host {name:?}; the hosts are {:?}", self.names()),
        }
    }

    fn write_client_files(&self) -> Result<()> {
        let mut known_hosts = String::new();
        let mut config = String::from(
            "# Private sshd instances started by cutover-teststack. Use with ssh -F.\n",
        );
        for host in &self.hosts {
            let key = read_pub(&host.host_key)?;
            // Drop the comment: `<type> <base64>`.
            let key: Vec<&str> = key.split_whitespace().take(2).collect();
            known_hosts.push_str(&format!("{} {}\n", host.name, key.join(" ")));
            config.push_str(&client_block(
                host,
                &self.user,
                &self.client_key,
                &self.known_hosts,
            ));
        }
        write(&self.known_hosts, &known_hosts)?;
        write(&self.ssh_config, &config)
    }

    fn wait_login(&self, host: &SshHost, shell: &str, deadline: Instant) -> Result<()> {
        // The server answered its banner, so a failure here is about keys, the user or the
        // shell and will not go away by waiting long; retry briefly for a slow machine.
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                if Instant::now() >= deadline {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            let output = self.run(&host.name, "true")?;
            if output.status.success() {
                return Ok(());
            }
            last = format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let mut message = format!(
            "`ssh -F {} {} true` failed: {last}",
            self.ssh_config.display(),
            host.name
        );
        if !running_as_root() {
            message.push_str(&format!(
                "\nhint: sshd runs as {user} (not root), so it can only log in {user}, \
                 whose login shell is {shell}",
                user = self.user
            ));
        }
        Err(host.server_error(message))
    }
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            host.stop();
        }
    }
}

/// What every host's sshd_config shares.
struct ServerSettings<'a> {
    sshd: &'a Path,
    user: &'a str,
    authorized_keys: &'a Path,
    /// Whether this sshd knows `PerSourcePenalties` (OpenSSH 9.8 and later).
    penalties: bool,
}

impl SshHost {
    /// Writes the config for `port`, checks it with `sshd -t` and starts sshd.
    fn launch(&mut self, settings: &ServerSettings<'_>, port: u16) -> Result<()> {
        self.stop();
        self.port = port;
        write(&self.config, &server_config(self, settings))?;
        let check = Command::new(settings.sshd)
            .arg("-t")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("run {} -t", settings.sshd.display())))?;
        if !check.status.success() {
            return Err(Error::Ssh {
                message: format!(
                    "{} -t -f {} rejected the config for host {} ({}):\n{}",
                    settings.sshd.display(),
                    self.config.display(),
                    self.name,
                    check.status,
                    String::from_utf8_lossy(&check.stderr).trim()
                ),
            });
        }
        let mut command = Command::new(settings.sshd);
        command
            .arg("-D")
            .arg("-f")
            .arg(&self.config)
            .arg("-E")
            .arg(&self.log);
        self.process = Some(Supervised::spawn(command, &self.output_log)?);
        Ok(())
    }

    /// Waits until the port answers with an SSH banner.
    fn wait_listening(&self, deadline: Instant) -> Result<()> {
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.process.as_ref().and_then(Supervised::exited) {
                return Err(self.server_error(format!("exited ({status})")));
            }
            let last_error = match banner(addr) {
                Ok(line) if line.starts_with("SSH-2.0-") => return Ok(()),
                Ok(line) => format!("not an SSH banner: {line:?}"),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.server_error(format!(
                    "timed out after {}s waiting for an SSH banner on {addr}; last error: {last_error}",
                    START_TIMEOUT.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when sshd exited because another process had taken its port.
    fn lost_port_race(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|process| process.exited().is_some())
            && log_tail(&self.log, 20).contains("Address already in use")
    }

    fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        // A stopped host takes its connections with it: the per-connection sshd processes
        // and the commands they run, which would otherwise outlive the listener.
        for (pid, _) in descendants(process.pid()) {
            let _ = signal(pid, Signal::KILL);
        }
        process.stop(Signal::TERM, STOP_TIMEOUT);
    }

    fn server_error(&self, message: String) -> Error {
        let mut tail = log_tail(&self.log, 30);
        let out = log_tail(&self.output_log, 10);
        if !out.trim().is_empty() && !out.starts_with("(cannot read") {
            tail.push_str("\n--- stdout/stderr ---\n");
            tail.push_str(&out);
        }
        Error::Server {
            server: "sshd",
            message: format!("host {} on port {}: {message}", self.name, self.port),
            log: self.log.clone(),
            tail,
        }
    }
}

fn server_config(host: &SshHost, settings: &ServerSettings<'_>) -> String {
    let dir = host.config.parent().unwrap_or(Path::new("/"));
    let penalties = if settings.penalties {
        // Tests make connections that never log in (host key mismatches); OpenSSH 9.8+
        // would otherwise refuse 127.0.0.1 for a while after them.
        "PerSourcePenalties no\n"
    } else {
        ""
    };
    format!(
        r#"# Written by cutover-teststack for host {name}.
ListenAddress 127.0.0.1
AddressFamily inet
Port {port}
HostKey "{host_key}"
PidFile "{pid}"
AuthorizedKeysFile "{authorized_keys}"
AuthorizedKeysCommand none
AuthorizedPrincipalsFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
KerberosAuthentication no
GSSAPIAuthentication no
UsePAM no
# The keys live in a temp directory that sshd's ownership checks would reject.
StrictModes no
# CI runs the tests as root.
PermitRootLogin prohibit-password
AllowUsers {user}
# Tests open many connections at once.
MaxStartups 100:30:200
MaxSessions 100
UseDNS no
PermitUserRC no
PermitUserEnvironment no
PrintMotd no
PrintLastLog no
X11Forwarding no
SetEnv {REMOTE_ENV}
Subsystem sftp internal-sftp
# The default post-quantum key exchange costs ~0.1 s of CPU per side and connection,
# which adds up over hundreds of test connections and buys nothing on loopback.
KexAlgorithms curve25519-sha256
LogLevel VERBOSE
{penalties}"#,
        name = host.name,
        port = host.port,
        host_key = host.host_key.display(),
        pid = dir.join("sshd.pid").display(),
        authorized_keys = settings.authorized_keys.display(),
        user = settings.user,
    )
}

fn client_block(host: &SshHost, user: &str, client_key: &Path, known_hosts: &Path) -> String {
    format!(
        r#"
Host {name}
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile "{key}"
    IdentitiesOnly yes
    IdentityAgent none
    PreferredAuthentications publickey
    UserKnownHostsFile "{known_hosts}"
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    HostKeyAlias {name}
    UpdateHostKeys no
    CheckHostIP no
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
    ControlMaster no
    ControlPath none
    ForwardAgent no
    ForwardX11 no
"#,
        name = host.name,
        port = host.port,
        key = client_key.display(),
        known_hosts = known_hosts.display(),
    )
}

fn check_names(names: &[&str]) -> Result<()> {
    if names.is_empty() {
        return Err(Error::Ssh {
            message: "SshHosts::start needs at least one host name".into(),
        });
    }
    for (i, name) in names.iter().enumerate() {
        let valid = !name.is_empty()
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(Error::Ssh {
                message: format!(
                    "host name {name:?}: use ASCII letters, digits, '.', '_' and '-', \
                     not starting with '-'"
                ),
            });
        }
        if names[..i].contains(name) {
            return Err(Error::Ssh {
                message: format!("host name {name:?} given twice"),
            });
        }
    }
    Ok(())
}

/// The name and login shell of the user we run as, looked up the way sshd will (NSS).
fn login_user() -> Result<(String, String)> {
    let uid = rustix::process::geteuid().as_raw();
    let output = Command::new("getent")
        .arg("passwd")
        .arg(uid.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run getent passwd {uid}")))?;
    let line = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = line.trim_end().split(':').collect();
    let (Some(name), Some(shell)) = (fields.first(), fields.get(6)) else {
        return Err(Error::Ssh {
            message: format!(
                "uid {uid} has no passwd entry (getent passwd {uid}: {}); \
                 sshd can only log in a user it can look up",
                output.status
            ),
        });
    };
    let shell = if shell.is_empty() { "/bin/sh" } else { shell };
    if shell.ends_with("/nologin") || shell.ends_with("/false") {
        return Err(Error::Ssh {
            message: format!(
                "user {name}'s login shell is {shell}; sshd runs remote commands through it, \
                 so the test hosts cannot log in {name}"
            ),
        });
    }
    Ok((name.to_string(), shell.to_string()))
}

fn sshd_binary() -> Result<PathBuf> {
    let sshd = PathBuf::from(
        std::env::var_os("CUTOVER_TESTSTACK_SSHD").unwrap_or_else(|| DEFAULT_SSHD.into()),
    );
    if !sshd.is_absolute() {
        return Err(Error::Ssh {
            message: format!(
                "sshd must be given by absolute path (it re-executes itself), not {}",
                sshd.display()
            ),
        });
    }
    if !sshd.exists() {
        return Err(Error::Ssh {
            message: format!(
                "{} does not exist; install openssh-server or set CUTOVER_TESTSTACK_SSHD",
                sshd.display()
            ),
        });
    }
    Ok(sshd)
}

/// sshd running as root chroots its pre-authentication child into `/run/sshd` and
/// refuses to start without it. Normally systemd or the init script creates it.
fn make_privsep_dir() -> Result<()> {
    let dir = Path::new("/run/sshd");
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => Ok(()),
        // Another test may have created it a moment ago.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(io_err(format!("mkdir {}", dir.display()))(err)),
    }
}

/// Asks this sshd whether it knows `PerSourcePenalties`, using the first host's key.
fn per_source_penalties_supported(sshd: &Path, hosts: &SshHosts) -> Result<bool> {
    let Some(host) = hosts.hosts.first() else {
        return Ok(false);
    };
    let probe = hosts.dir.join("probe_sshd_config");
    write(
        &probe,
        &format!(
            "ListenAddress 127.0.0.1\nHostKey \"{}\"\nUsePAM no\nPerSourcePenalties no\n",
            host.host_key.display()
        ),
    )?;
    let status = Command::new(sshd)
        .arg("-t")
        .arg("-f")
        .arg(&probe)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(io_err(format!("run {} -t", sshd.display())))?;
    Ok(status.success())
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run ssh-keygen for {}", path.display())))?;
    if !output.status.success() {
        return Err(Error::Ssh {
            message: format!(
                "ssh-keygen -f {} failed ({}): {}",
                path.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn read_pub(private_key: &Path) -> Result<String> {
    let mut path = private_key.as_os_str().to_owned();
    path.push(".pub");
    let path = PathBuf::from(path);
    fs::read_to_string(&path).map_err(io_err(format!("read {}", path.display())))
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(io_err(format!("write {}", path.display())))
}

/// The first line the server sends.
fn banner(addr: SocketAddr) -> io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// Every live process below `pid`, parents before their children.
fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let mut all = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        for child in children_of(parent) {
            next.push(child.0);
            all.push(child);
        }
    }
    all
}
