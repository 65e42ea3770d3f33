//! One host as the settings resolved it, once, before anything is contacted.

use std::path::PathBuf;

use cutover_core::assets::AssetOptions;
use cutover_refresh::RefreshSpec;

/// The name of the one host of a deploy path given with `--to`.
pub const LOCAL_HOST: &str = "local";

#[derive(Debug, Clone)]
pub struct HostPlan {
    /// The `[hosts]` name; [`LOCAL_HOST`] for a deploy path given with `--to`.
    pub name: String,
    /// `[hosts.NAME] roles`: which hooks run here, and which hosts `--role` selects.
    pub roles: Vec<String>,
    pub transport: Transport,
    pub path: PathBuf,
    pub refresh: RefreshSpec,
    pub assets: AssetOptions,
}

/// How the host's steps are carried out.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Direct calls in this process.
    InProcess,
    /// This executable run as `cutover agent` in a child process on this machine (a
    /// `[hosts]` entry without `ssh`): the whole protocol without a network.
    Process,
    Ssh(SshTarget),
}

/// Where and how to reach a host over ssh.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// `user@host`, `host:port`, or an ssh_config alias.
    pub destination: String,
    pub options: Vec<String>,
    /// Where ssh runs (the config file's directory), so relative paths in options work.
    pub cwd: PathBuf,
    pub agent: AgentSource,
}

/// Where the host's `cutover agent` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSource {
    /// Uploaded when the host lacks it, named after a hash of its bytes: the file for the
    /// host's `uname -sm` when `binaries` is not empty, else this executable (for hosts
    /// of this machine's platform).
    Upload { binaries: Vec<AgentBinary> },
    /// Already on the host: this absolute path, or `cutover` on the PATH.
    Installed { path: Option<String> },
}

impl Default for AgentSource {
    fn default() -> Self {
        AgentSource::Upload {
            binaries: Vec::new(),
        }
    }
}

/// One `[ssh] agent_binaries` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBinary {
    /// As `uname -sm` prints it: `Linux x86_64`.
    pub platform: String,
    pub file: PathBuf,
}
