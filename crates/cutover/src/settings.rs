//! Settings resolve here, once per command: flags beat the environment (clap reads both),
//! which beats cutover.toml, which beats the defaults.

use std::path::{Path, PathBuf};

use cutover_config::{AgentMode, Config, HostSettings};
use cutover_core::assets::AssetOptions;
use cutover_core::deploy::DeployOptions;
use cutover_core::history::Source;
use cutover_core::{DeployPath, ReleaseId};
use cutover_pipeline::{
    AgentBinary, AgentSource, DeployJob, HostPlan, ManifestCache, SourceTree, SshTarget, Transport,
};
use cutover_protocol::{Access, StageSpec};
use cutover_refresh::RefreshSpec;

use crate::cli::{ChangeArgs, DeployArgs, GlobalArgs, TargetArgs};
use crate::error::{CommandError, Result};
use crate::inventory;

pub const CONFIG_FILE: &str = "cutover.toml";

/// An explicit --config must exist; the default ./cutover.toml is optional.
pub fn load_config(global: &GlobalArgs) -> Result<Config> {
    load_config_near(global, None)
}

/// As `load_config`, and for a deploy also the app's own cutover.toml in SOURCE, so
/// `cutover deploy ./app --to PATH` uses the settings that ship with the app.
pub fn load_config_near(global: &GlobalArgs, source: Option<&Path>) -> Result<Config> {
    if let Some(path) = &global.config {
        return Ok(cutover_config::load(path)?);
    }
    let candidates =
        std::iter::once(PathBuf::from(CONFIG_FILE)).chain(source.map(|dir| dir.join(CONFIG_FILE)));
    for path in candidates {
        if path.is_file() {
            return Ok(cutover_config::load(&path)?);
        }
    }
    Ok(Config::default())
}

/// The hosts a command acts on, each resolved once: the deploy path of `--to` (or of
/// `[deploy] path` without `[hosts]` and `[inventory]`) as a fleet of one on this machine,
/// else the hosts of `[inventory]` and `[hosts]` (only those named with `--host`, or
/// having a role given with `--role`).
pub fn host_plans(target: &TargetArgs, config: &Config) -> Result<Vec<HostPlan>> {
    let fleet = names_hosts(config);
    if !fleet && !target.hosts.is_empty() {
        return Err(CommandError::usage(
            "--host needs [hosts] or [inventory] in cutover.toml",
            "add a [hosts.NAME] table per host, or leave out --host to act on --to",
        ));
    }
    if (!fleet || target.to.is_some()) && !target.roles.is_empty() {
        return Err(CommandError::usage(
            "--role selects hosts of [hosts] or [inventory] in cutover.toml",
            "give hosts `roles = [\"web\"]` in [hosts.NAME] and leave out --to",
        ));
    }
    if !fleet || target.to.is_some() {
        return Ok(vec![HostPlan {
            name: LOCAL_HOST.to_string(),
            roles: Vec::new(),
            transport: Transport::InProcess,
            path: deploy_path(target, config)?.root().to_path_buf(),
            refresh: RefreshSpec::from_settings(&config.php, &config.refresh, &config.health)?,
            assets: asset_options(config),
        }]);
    }
    let hosts = resolved_hosts(config)?;
    let host = |name: &str| hosts.iter().find(|h| h.name == name);
    for name in &target.hosts {
        if host(name).is_none() {
            let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(CommandError::usage(
                format!("no host `{name}` in [hosts] or [inventory]"),
                format!("hosts in the config: {}", known.join(", ")),
            ));
        }
    }
    let ssh_cwd = config_dir(config).unwrap_or_else(|| PathBuf::from("."));
    let mut plans = Vec::new();
    for role in &target.roles {
        if !hosts.iter().any(|h| h.settings.roles.contains(role)) {
            let mut known: Vec<&str> = hosts
                .iter()
                .flat_map(|h| h.settings.roles.iter().map(String::as_str))
                .collect();
            known.sort_unstable();
            known.dedup();
            return Err(CommandError::usage(
                format!("no host in [hosts] or [inventory] has the role `{role}`"),
                match known.as_slice() {
                    [] => "give hosts roles: `roles = [\"web\"]` in [hosts.NAME]".to_string(),
                    known => format!("roles in the config: {}", known.join(", ")),
                },
            ));
        }
    }
    for resolved in &hosts {
        let (name, host) = (&resolved.name, &resolved.settings);
        if !target.hosts.is_empty() && !target.hosts.contains(name) {
            continue;
        }
        if !target.roles.is_empty() && !host.roles.iter().any(|r| target.roles.contains(r)) {
            continue;
        }
        let path = host
            .path
            .clone()
            .or_else(|| config.deploy.path.clone())
            .ok_or_else(|| {
                CommandError::usage(
                    format!("host `{name}` has no deploy path"),
                    format!("set `path = \"/var/www/app\"` in [hosts.{name}] or in [deploy]"),
                )
            })?;
        let transport = match &host.ssh {
            Some(destination) => {
                let mut options = config.ssh.options.clone();
                options.extend(host.ssh_options.iter().cloned());
                Transport::Ssh(SshTarget {
                    destination: destination.clone(),
                    options,
                    cwd: ssh_cwd.clone(),
                    agent: agent_source(config, host),
                })
            }
            None => Transport::Process,
        };
        let php = host.php.as_ref().unwrap_or(&config.php);
        let refresh = host.refresh.as_ref().unwrap_or(&config.refresh);
        let health = host.health.as_ref().unwrap_or(&config.health);
        let refresh = RefreshSpec::from_settings(php, refresh, health).map_err(|e| {
            let mut error = CommandError::from(e);
            error.message = format!("host `{name}`: {}", error.message);
            error
        })?;
        plans.push(HostPlan {
            name: name.clone(),
            roles: host.roles.clone(),
            transport,
            path,
            refresh,
            assets: asset_options(config),
        });
    }
    if plans.is_empty() {
        return Err(CommandError::usage(
            format!(
                "no host is both named with --host ({}) and has a role given with --role ({})",
                target.hosts.join(", "),
                target.roles.join(", ")
            ),
            "`cutover config` shows each host's roles; drop one of the flags",
        ));
    }
    Ok(plans)
}

/// Whether cutover.toml names hosts (`[hosts]` or `[inventory]`) rather than one deploy
/// path on this machine.
pub fn names_hosts(config: &Config) -> bool {
    !config.hosts.is_empty() || config.inventory.command.is_some()
}

/// The hosts of `[inventory]` and `[hosts]`, merged, in the order the `once` hooks pick
/// from: the inventory's, then those only in `[hosts]` (by name). Runs the inventory's
/// command, so it is called once per command, before any host is contacted.
pub fn resolved_hosts(config: &Config) -> Result<Vec<inventory::Host>> {
    let listed = match &config.inventory.command {
        Some(command) => run_inventory(command, config)?,
        None => Vec::new(),
    };
    let hosts = inventory::merge(listed, &config.hosts);
    // What cutover-config checks for [hosts] alone, once the inventory's roles are known.
    if config.inventory.command.is_some() {
        for (phase, entries) in config.hooks.phases() {
            for role in entries.iter().flat_map(|entry| &entry.roles) {
                if !hosts.iter().any(|h| h.settings.roles.contains(role)) {
                    return Err(CommandError::usage(
                        format!("no host has the role `{role}` of a hook in `hooks.{phase}`"),
                        "roles are the inventory's groups, or `roles` in [hosts.NAME]",
                    ));
                }
            }
        }
    }
    Ok(hosts)
}

/// Runs `[inventory] command` in the config file's directory and reads its hosts. A
/// command that fails or prints no JSON exits 1; JSON whose values break the rules of
/// `[hosts]` is a bad config (2).
fn run_inventory(command: &str, config: &Config) -> Result<Vec<(String, HostSettings)>> {
    let dir = config_dir(config).unwrap_or_else(|| PathBuf::from("."));
    let timeout = config.inventory.timeout();
    let hint = format!(
        "run it by hand in {} to see what it prints; nothing was contacted",
        dir.display()
    );
    let captured =
        cutover_core::command::capture("inventory", command, &dir, timeout, inventory::MAX_OUTPUT)
            .map_err(|e| match e {
                cutover_core::Error::CommandTimedOut { limit, tail, .. } => CommandError::failed(
                    format!(
            "inventory command `{command}` did not finish within {limit}; it was killed"
        ),
                )
                .with_causes(tail)
                .with_hint("raise [inventory] timeout if it is only slow; nothing was contacted"),
                other => CommandError::from(other),
            })?;
    if let Some(failure) = captured.failure {
        return Err(
            CommandError::failed(format!("inventory command `{command}` {failure}"))
                .with_causes(captured.stderr_tail)
                .with_hint(hint),
        );
    }
    if captured.stdout_overflow {
        return Err(CommandError::failed(format!(
            "inventory command `{command}` printed more than {} MiB",
            inventory::MAX_OUTPUT >> 20
        ))
        .with_hint(hint));
    }
    let hosts = inventory::parse(&captured.stdout).map_err(|problem| match problem {
        inventory::Problem::NotJson(why) => CommandError::failed(format!(
            "inventory command `{command}` printed no JSON inventory: {why}"
        ))
        .with_causes(captured.stderr_tail.clone())
        .with_hint(format!(
            "it must print what `ansible-inventory -i FILE --list` prints; {hint}"
        )),
        inventory::Problem::Invalid(why) => CommandError::usage(
            format!("inventory command `{command}`: {why}"),
            hint.clone(),
        ),
    })?;
    // ansible-inventory given a file it cannot read warns and lists no host: that must
    // not become a deploy to the `[hosts]`-only hosts.
    if hosts.is_empty() {
        return Err(CommandError::usage(
            format!("inventory command `{command}` lists no host"),
            hint,
        )
        .with_causes(captured.stderr_tail));
    }
    Ok(hosts)
}

pub use cutover_pipeline::LOCAL_HOST;

/// `[hosts.NAME] agent` and `agent_path` beat `[ssh]`'s.
fn agent_source(config: &Config, host: &cutover_config::HostSettings) -> AgentSource {
    let ssh = &config.ssh;
    match host.agent.or(ssh.agent).unwrap_or_default() {
        AgentMode::Installed => AgentSource::Installed {
            path: host.agent_path.clone().or_else(|| ssh.agent_path.clone()),
        },
        AgentMode::Upload => AgentSource::Upload {
            binaries: ssh
                .agent_binaries
                .iter()
                .map(|(platform, file)| AgentBinary {
                    platform: platform.clone(),
                    file: file.clone(),
                })
                .collect(),
        },
    }
}

pub fn deploy_path(target: &TargetArgs, config: &Config) -> Result<DeployPath> {
    let path = target
        .to
        .clone()
        .or_else(|| config.deploy.path.clone())
        .ok_or_else(|| {
            CommandError::usage(
                "no deploy path given",
                "pass `--to /var/www/app`, or set `path` in the [deploy] table of cutover.toml",
            )
        })?;
    Ok(DeployPath::new(path)?)
}

/// How a command holds the deploy path: a dry run reads only (and creates nothing).
pub fn access(change: &ChangeArgs, create: bool) -> Access {
    if change.dry_run {
        return Access::DryRun;
    }
    Access::Lock {
        wait_ms: change.wait_lock.map(|d| d.as_millis() as u64),
        create,
    }
}

/// `--parallel`, or as many hosts at once as this machine can hold sessions open to.
pub fn parallel(flag: Option<u64>) -> usize {
    flag.map_or_else(default_parallel, |n| n as usize)
}

/// Each host's session is one ssh process and a few descriptors here, and the deploying
/// side mostly waits for the hosts: the open-file limit is what bounds it (240 hosts at
/// the usual 1,024). Hosts left waiting for a slot stage in a second wave.
fn default_parallel() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024);
    (limit.saturating_sub(64) / 4).clamp(16, 512) as usize
}

pub fn keep_releases(flag: Option<u64>, config: &Config) -> usize {
    flag.map(|n| n as usize)
        .or(config.deploy.keep_releases)
        .unwrap_or(DeployOptions::DEFAULT_KEEP_RELEASES)
}

pub fn release_id(text: &str) -> Result<ReleaseId> {
    Ok(ReleaseId::parse(text)?)
}

/// The deploy: what to stage from where, resolved once for every host. A deploy path on
/// this machine that is the source itself is refused here, before anything is created.
/// The lock returned, when there is one, keeps the git cache's checkout (the source) as it
/// is until the deploy is over.
pub fn deploy_job(
    args: &DeployArgs,
    config: &Config,
    plans: &[HostPlan],
) -> Result<(DeployJob, Option<cutover_git::CacheLock>)> {
    let resolved = deploy_source(args, config)?;
    let dir = resolved.dir;
    for plan in plans {
        if matches!(plan.transport, Transport::InProcess) {
            cutover_core::deploy::check_deploy_path(&DeployPath::new(&plan.path)?, &dir)?;
        }
    }
    let mut opts = DeployOptions::new(&dir);
    opts.exclude = config.deploy.exclude.clone();
    opts.shared_dirs = config.shared.dirs.clone();
    opts.shared_files = config.shared.files.clone();
    let mut excludes = cutover_core::deploy::source_excludes(&opts);
    for ignored in resolved.ignored {
        excludes.add_path(ignored);
    }
    let job = DeployJob {
        tree: SourceTree::new(dir, excludes, ManifestCache::from_env()),
        release: args.release.as_deref().map(release_id).transpose()?,
        spec: StageSpec {
            shared_dirs: config.shared.dirs.clone(),
            shared_files: config.shared.files.clone(),
            build: config.build.run.clone(),
            hooks_follow: !config.hooks.before_switch.is_empty(),
            release_file: config
                .deploy
                .release_file
                .clone()
                .unwrap_or_else(|| DeployOptions::DEFAULT_RELEASE_FILE.to_string()),
            hook_timeout_ms: config.hooks.timeout().as_millis() as u64,
            // In the normal form StageSpec::validate holds a remote host's spec to:
            // cutover.toml accepts `./storage/`.
            writable: config
                .deploy
                .writable
                .iter()
                .map(|path| {
                    path.split('/')
                        .filter(|part| !part.is_empty() && *part != ".")
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .collect(),
            writable_mode: config.deploy.writable_mode.unwrap_or_default(),
            writable_user: config.deploy.writable_user.clone(),
        },
        source: resolved.source,
        keep: keep_releases(args.keep, config),
        dry_run: args.change.dry_run,
    };
    Ok((job, resolved.lock))
}

/// What a deploy stages from.
struct DeploySource {
    /// Canonical.
    dir: PathBuf,
    source: Source,
    /// Relative to `dir`: what git ignores there, left out of the release.
    ignored: Vec<PathBuf>,
    lock: Option<cutover_git::CacheLock>,
}

/// A commit (`--ref`, `[deploy] repository`, `[deploy] branch`) checked out in the git
/// cache; else the source directory, as git would commit it when it is a work tree. A
/// SOURCE argument beats `[deploy] repository`, as flags beat the file.
fn deploy_source(args: &DeployArgs, config: &Config) -> Result<DeploySource> {
    let reference = args.git_ref.as_deref().or(config.deploy.branch.as_deref());
    let repository = match &args.source {
        Some(_) => None,
        None => config.deploy.repository.clone(),
    };
    if let Some(url) = repository {
        let origin = cutover_git::Origin::Repository(url);
        return from_checkout(cutover_git::checkout(&git_cache()?, &origin, reference)?);
    }
    let source = args
        .source
        .clone()
        .or_else(|| config.deploy.source.clone())
        .or_else(|| config_dir(config))
        .ok_or_else(|| {
            CommandError::usage(
                "nothing to deploy: no SOURCE given and no cutover.toml here",
                "pass the app's directory, e.g. `cutover deploy ./app --to /var/www/app`",
            )
        })?;
    let dir = cutover_core::deploy::resolve_source(&source)?;
    if let Some(reference) = reference {
        let origin = cutover_git::Origin::WorkTree(dir);
        return from_checkout(cutover_git::checkout(
            &git_cache()?,
            &origin,
            Some(reference),
        )?);
    }
    Ok(match cutover_git::work_tree(&dir)? {
        Some(tree) => DeploySource {
            dir,
            source: tree.source,
            ignored: tree.ignored,
            lock: None,
        },
        None => DeploySource {
            source: Source {
                path: dir.display().to_string(),
                deployer: deployer(),
                ..Source::default()
            },
            dir,
            ignored: Vec::new(),
            lock: None,
        },
    })
}

fn from_checkout(checkout: cutover_git::Checkout) -> Result<DeploySource> {
    Ok(DeploySource {
        dir: cutover_core::deploy::resolve_source(&checkout.dir)?,
        source: checkout.source,
        ignored: Vec::new(),
        lock: Some(checkout.lock),
    })
}

fn git_cache() -> Result<cutover_git::Cache> {
    cutover_git::Cache::from_env().ok_or_else(|| {
        CommandError::usage(
            "no cache directory for git clones: neither XDG_CACHE_HOME nor HOME is set",
            "set XDG_CACHE_HOME to a directory cutover may keep clones in",
        )
    })
}

/// `[notify] webhook`, when set; a dry run notifies nobody.
pub fn webhook(config: &Config, change: &ChangeArgs) -> Result<Option<cutover_notify::Webhook>> {
    if change.dry_run {
        return Ok(None);
    }
    Ok(cutover_notify::Webhook::from_settings(&config.notify)?)
}

/// Who switched or rolled back, besides the OS user: the CI actor when there is one.
pub fn deployer() -> Option<String> {
    cutover_git::deployer(None, |var| std::env::var(var).ok())
}

/// `[deploy] asset_dirs` and `keep_asset_releases`, or the defaults.
pub fn asset_options(config: &Config) -> AssetOptions {
    let mut assets = AssetOptions::default();
    if let Some(dirs) = &config.deploy.asset_dirs {
        assets.dirs = dirs.clone();
    }
    if let Some(keep) = config.deploy.keep_asset_releases {
        assets.keep = keep;
    }
    assets
}

fn config_dir(config: &Config) -> Option<PathBuf> {
    let origin = config.origin.as_ref()?;
    Some(match origin.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

#[cfg(test)]
mod tests {
    use cutover_core::deploy::DeployOptions;

    /// The template documents cutover-config's defaults; the deploy uses cutover-core's.
    #[test]
    fn documented_defaults_are_the_ones_used() {
        assert_eq!(
            cutover_config::DEFAULT_KEEP_RELEASES,
            DeployOptions::DEFAULT_KEEP_RELEASES
        );
        assert_eq!(
            cutover_config::DEFAULT_RELEASE_FILE,
            DeployOptions::DEFAULT_RELEASE_FILE
        );
        assert_eq!(
            cutover_config::DEFAULT_ASSET_DIRS,
            cutover_core::assets::DEFAULT_DIRS
        );
        assert_eq!(
            cutover_config::DEFAULT_KEEP_ASSET_RELEASES,
            cutover_core::assets::DEFAULT_KEEP
        );
    }
}
