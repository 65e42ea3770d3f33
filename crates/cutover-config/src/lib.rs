//! `cutover.toml`: typed deploy settings, parsed with diagnostics that name file, line and
//! column (with a hint where one helps), and the commented template `cutover init` writes.

mod diagnose;
mod error;
mod hooks;
mod notify;
pub mod preset;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::ConfigError;
pub use hooks::{HookEntry, HookSettings};
pub use notify::{
    webhook_url, NotifyEvent, NotifySettings, DEFAULT_NOTIFY_TIMEOUT_SECONDS,
    MAX_NOTIFY_TIMEOUT_SECONDS,
};

/// The commented `cutover.toml` that `cutover init` writes.
pub const TEMPLATE: &str = include_str!("template.toml");

/// How many releases stay on a target when `deploy.keep_releases` is not set.
pub const DEFAULT_KEEP_RELEASES: usize = 5;

/// The asset directories when `deploy.asset_dirs` is not set.
pub const DEFAULT_ASSET_DIRS: [&str; 5] = [
    "public/build",
    "public/assets",
    "public/bundles",
    "public/css",
    "public/js",
];

/// How many earlier releases' assets stay reachable when `deploy.keep_asset_releases` is not set.
pub const DEFAULT_KEEP_ASSET_RELEASES: usize = 3;

/// The file in each release holding its id when `deploy.release_file` is not set.
pub const DEFAULT_RELEASE_FILE: &str = "RELEASE";
/// `[hooks] timeout`: long enough for a `composer install` on a slow host, short enough
/// that a hung hook does not hold the deploy lock for ever.
pub const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The Apache parent's pid file when `refresh.apache_pidfile` is not set: Debian's and
/// Ubuntu's (`APACHE_PID_FILE` in /etc/apache2/envvars).
pub const DEFAULT_APACHE_PIDFILE: &str = "/run/apache2/apache2.pid";

/// What `apache-graceful` runs when `refresh.apache_command` is not set. It tests the config
/// before signalling: a bare SIGUSR1 with a broken config makes the Apache parent exit.
pub const DEFAULT_APACHE_COMMAND: &str = "apachectl -k graceful";

// The structs below are the schema. Serde's `deny_unknown_fields` makes them the one list
// of valid keys: an unknown key fails deserialization with the key's span and serde's list
// of expected fields, which `diagnose` turns into a "did you mean" hint. A new key or
// table is a new field here and nothing else.

/// Everything `cutover.toml` says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The file these settings were read from; `None` for defaults.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
    #[serde(deserialize_with = "table")]
    pub deploy: DeploySettings,
    #[serde(deserialize_with = "table")]
    pub shared: SharedSettings,
    #[serde(deserialize_with = "table")]
    pub build: BuildSettings,
    #[serde(deserialize_with = "table")]
    pub hooks: HookSettings,
    #[serde(deserialize_with = "table")]
    pub php: PhpSettings,
    #[serde(deserialize_with = "table")]
    pub refresh: RefreshSettings,
    #[serde(deserialize_with = "table")]
    pub health: HealthSettings,
    #[serde(deserialize_with = "table")]
    pub ssh: SshSettings,
    #[serde(deserialize_with = "table")]
    pub notify: NotifySettings,
    /// `[hosts.<name>]`; empty (and no `[inventory]`) means the deploy path is on this machine.
    #[serde(deserialize_with = "table")]
    pub hosts: BTreeMap<String, HostSettings>,
    #[serde(deserialize_with = "table")]
    pub inventory: InventorySettings,
}

/// `[inventory]`: hosts from an Ansible inventory, merged with `[hosts]` by the binary
/// (which runs the command); this crate only reads and checks the table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventorySettings {
    /// Prints Ansible's JSON inventory, e.g. `ansible-inventory -i hosts.ini --list`; run
    /// with `sh -c` in the config file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// How long `command` may run (default 30s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl InventorySettings {
    /// `timeout`, or [`DEFAULT_INVENTORY_TIMEOUT`].
    pub fn timeout(&self) -> std::time::Duration {
        hooks::parse_timeout(self.timeout.as_deref()).unwrap_or(DEFAULT_INVENTORY_TIMEOUT)
    }
}

/// `[inventory] timeout`: `ansible-inventory` takes about a second; a dynamic inventory
/// asking a cloud API may take longer, but never minutes.
pub const DEFAULT_INVENTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `[ssh]`: how every host is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshSettings {
    /// Arguments given to every `ssh` call before the destination, e.g. `["-F", "ssh_config"]`.
    /// ssh runs in the config file's directory, so relative paths are relative to it.
    pub options: Vec<String>,
    /// How each host gets its agent (default `upload`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentMode>,
    /// With `agent = "installed"`: the agent's absolute path on the host; default `cutover`
    /// on the PATH of the ssh session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_path: Option<String>,
    /// With `agent = "upload"`: the executable uploaded to a host, by the host's `uname -sm`
    /// (`"Linux x86_64"`); relative paths are relative to the config file. Empty: cutover
    /// uploads itself, to hosts of its own platform only.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub agent_binaries: BTreeMap<String, PathBuf>,
}

/// `[ssh] agent`: where a host's `cutover agent` comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentMode {
    /// Uploaded on first contact (cutover itself, or `agent_binaries`), named after its hash.
    #[default]
    Upload,
    /// Already on the host (`agent_path`, or `cutover` on the PATH); nothing is uploaded.
    Installed,
}

/// At most this many `[ssh] agent_binaries` (each platform gets its own exit status in the
/// remote script that picks one).
pub const MAX_AGENT_BINARIES: usize = 20;

/// One `[hosts.<name>]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    /// The ssh destination: `user@host`, `user@host:port` or a Host alias of your ssh_config.
    /// Without it, the host is this machine (the agent runs as a local process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
    /// The deploy path on the host; default `[deploy] path`. Must be absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Added after `[ssh] options` for this host.
    pub ssh_options: Vec<String>,
    /// Replace `[ssh] agent` and `[ssh] agent_path` for this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_path: Option<String>,
    /// Which hooks run here (`roles` of a hook entry), and which hosts `--role` selects.
    pub roles: Vec<String>,
    /// Replace the `[php]`, `[refresh]` and `[health]` tables for this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub php: Option<PhpSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSettings>,
}

/// `[deploy]`: where releases go and what they contain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploySettings {
    /// The deploy path on the target; relative paths are resolved against the config file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The directory to deploy; relative paths are resolved against the config file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// A git repository to deploy from instead of `source`: anything `git clone` accepts
    /// (URL, `host:path`, or a local path, relative to the config file's directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The ref deployed when `--ref` is not given (branch, tag or commit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// How many releases to keep on the target; at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_releases: Option<usize>,
    /// Relative path patterns left out of each release (the core leaves out `.git` itself).
    pub exclude: Vec<String>,
    /// The file written into each release holding its id, relative to the release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_file: Option<String>,
    /// Directories whose static files stay reachable in later releases; `[]` turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_dirs: Option<Vec<String>>,
    /// How many earlier releases' assets stay reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_asset_releases: Option<usize>,
    /// Paths relative to the release made writable for the pool's user after staging
    /// (created when missing; a `[shared]` dir is made writable in `shared/`).
    pub writable: Vec<String>,
    /// How `writable` paths are made writable (default `acl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writable_mode: Option<WritableMode>,
    /// Who must be able to write there; default the pool's user when cutover can ask the
    /// pool ([php] fpm), else `www-data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writable_user: Option<String>,
}

pub use cutover_core::writable::WritableMode;

/// The user `[deploy] writable` is for when `writable_user` is not set and the pool cannot
/// be asked: Debian's and Ubuntu's php-fpm user.
pub const DEFAULT_WRITABLE_USER: &str = cutover_core::writable::DEFAULT_USER;

/// `[shared]`: what persists across releases, linked into each one from `shared/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedSettings {
    /// Directories relative to the release root, e.g. `storage`, `var/log`.
    pub dirs: Vec<String>,
    /// Files relative to the release root, e.g. `.env`.
    pub files: Vec<String>,
}

/// `[build]`: commands that turn a staged copy into a release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildSettings {
    pub run: Vec<String>,
}

/// `[php]`: the php-fpm pool serving the app, for `cutover php status|reset`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhpSettings {
    /// The pool's FastCGI address: `unix:/run/php/php8.2-fpm.sock`, a socket path, or `127.0.0.1:9000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fpm: Option<String>,
    /// The pool's `chroot`, if it has one: script paths are sent relative to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fpm_chroot: Option<PathBuf>,
}

/// `[refresh]`: how PHP is made to see the new release after every switch and rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefreshSettings {
    /// Run in order after each switch; empty means none.
    pub strategy: Vec<RefreshStrategy>,
    /// For `fpm-reload`: the php-fpm master's pid file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fpm_pidfile: Option<PathBuf>,
    /// For `command`: run with `sh -c`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// For `apache-graceful`: the Apache parent's pid file (default `/run/apache2/apache2.pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apache_pidfile: Option<PathBuf>,
    /// For `apache-graceful`: what requests the graceful restart, run with `sh -c`
    /// (default `apachectl -k graceful`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apache_command: Option<String>,
    /// Upper bound for each wait (the pool to answer again, OPcache to restart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u64>,
    /// For `prewarm`: how long compiling the new release may take before the switch goes
    /// ahead with what is compiled (default 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prewarm_seconds: Option<u64>,
    /// What a switch does when the pool's OPcache lacks room for the new release beside
    /// the live one (checked with `none` or `prewarm` and `[php] fpm`; default `restart`
    /// with `prewarm`, else `warn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcache_room: Option<OpcacheRoom>,
}

/// `[refresh] opcache_room`: a full OPcache does not restart by itself (scripts of old
/// releases are not "wasted"), it compiles every request's scripts anew, silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpcacheRoom {
    /// Say so in the report and go ahead.
    #[default]
    Warn,
    /// Fail before anything is switched.
    Refuse,
    /// For `prewarm` (its default): when a restart would free enough wasted memory,
    /// restart OPcache before the switch and compile the live release, then the new one,
    /// again; otherwise as `warn`.
    Restart,
    /// As `restart` with `prewarm`, when that makes room. Otherwise go ahead without
    /// pre-warming, and reset OPcache after the switch (the reset waits until no request
    /// holds the old cache): the new release starts cold but fits.
    Reset,
}

/// `[health]`: how to tell, after the switch and refresh, that the new release is served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// An `http://` URL (plain HTTP, usually loopback) that must answer 2xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// And/or a script run straight in the pool ([php] fpm), relative to `current/`; every
    /// configured probe must pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fastcgi_script: Option<String>,
    /// Whether the body must contain the new release id (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_release: Option<bool>,
    /// How long to keep retrying before rolling back (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// One way of making PHP see the new release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefreshStrategy {
    /// `opcache_reset()` in the pool over FastCGI, then wait until the restart happened.
    OpcacheReset,
    /// SIGUSR2 to the php-fpm master, then wait until new workers answer.
    FpmReload,
    /// A graceful restart of Apache running PHP as mod_php, then wait until no child from
    /// before the restart is left.
    ApacheGraceful,
    /// Any command, e.g. `systemctl reload php8.2-fpm`.
    Command,
    /// Nothing: the web server hands PHP resolved paths (nginx `$realpath_root`).
    None,
    /// Before the switch: the new release's copies of the scripts OPcache holds for the
    /// live release compiled into the pool (`$realpath_root` setups; needs `[php] fpm`).
    Prewarm,
}

/// The rule for a `[hosts]` name: it appears in `--host`, output, file names and the
/// agent's `CUTOVER_HOST`, so letters, digits, `.`, `_` and `-` only.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub use cutover_core::writable::is_user_name;
pub use cutover_git::is_local_path as is_local_repository;

/// Parses the text of a `cutover.toml`. `origin` names the file in errors, and relative
/// `deploy.path` / `deploy.source` are resolved against its directory.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let document =
        toml_edit::ImDocument::parse(text).map_err(|err| diagnose::syntax(&err, text, origin))?;
    let mut config = Config::deserialize(toml_edit::de::Deserializer::from(document.clone()))
        .map_err(|err| diagnose::schema(&err, &document, origin))?;
    validate::check(&config).map_err(|problem| problem.into_error(&document, origin))?;

    let base = origin.parent().unwrap_or(Path::new(""));
    for path in [&mut config.deploy.path, &mut config.deploy.source]
        .into_iter()
        .flatten()
    {
        *path = base.join(&*path);
    }
    for file in config.ssh.agent_binaries.values_mut() {
        *file = base.join(&*file);
    }
    if let Some(repository) = &mut config.deploy.repository {
        let local = Path::new(repository.as_str());
        if is_local_repository(repository) && local.is_relative() {
            *repository = base.join(local).display().to_string();
        }
    }
    config.origin = Some(origin.to_path_buf());
    Ok(config)
}

/// Reads and parses the `cutover.toml` at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::io(path, &err))?;
    parse(&text, path)
}

/// Derived structs also accept a TOML array (`[[deploy]]`, `deploy = ["x"]`), filling
/// fields by position; a settings table must be written as a table.
fn table<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct TableOnly<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for TableOnly<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(TableOnly(std::marker::PhantomData))
}
