//! Settings resolve here, once per command: flags beat the environment (clap reads both),
//! which beats cutover.toml, which beats the defaults.

use std::path::{Path, PathBuf};

use cutover_config::Config;
use cutover_core::assets::AssetOptions;
use cutover_core::deploy::DeployOptions;
use cutover_core::{DeployLock, DeployPath, Mode, ReleaseId};

use crate::cli::{ChangeArgs, DeployArgs, GlobalArgs, TargetArgs};
use crate::error::{CommandError, Result};

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

/// Whether a command acts on the hosts of `[hosts]` (over their agents) rather than on one
/// deploy path here: there are hosts and no `--to`.
pub fn on_hosts(target: &TargetArgs, config: &Config) -> Result<bool> {
    if config.hosts.is_empty() && !target.hosts.is_empty() {
        return Err(CommandError::usage(
            "--host needs [hosts] in cutover.toml",
            "add a [hosts.NAME] table per host, or leave out --host to act on --to",
        ));
    }
    Ok(!config.hosts.is_empty() && target.to.is_none())
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

/// A deploy path that must already hold releases (switch, rollback, cleanup, releases).
pub fn existing_deploy_path(target: &TargetArgs, config: &Config) -> Result<DeployPath> {
    let deploy = deploy_path(target, config)?;
    if !deploy.exists() {
        return Err(CommandError::usage(
            format!("{} does not exist", deploy.root().display()),
            "check --to; `cutover deploy` creates a deploy path on its first run",
        ));
    }
    Ok(deploy)
}

/// The lock a changing command holds; a dry run holds none (and so creates nothing).
pub struct Guard(Option<DeployLock>);

impl Guard {
    pub fn mode(&self) -> Mode<'_> {
        self.0.as_ref().map_or(Mode::DryRun, Mode::Apply)
    }
}

/// Takes the deploy lock unless --dry-run (creating `.cutover/` when adopting a Capistrano
/// or Deployer path).
pub fn guard(deploy: &DeployPath, change: &ChangeArgs) -> Result<Guard> {
    if change.dry_run {
        return Ok(Guard(None));
    }
    // Refuse a `current` that is a real directory before creating anything beside it.
    deploy.current_link()?;
    deploy.ensure_layout()?;
    let lock = DeployLock::acquire(&deploy.lock_file(), change.wait_lock)?;
    Ok(Guard(Some(lock)))
}

pub fn keep_releases(flag: Option<u64>, config: &Config) -> usize {
    flag.map(|n| n as usize)
        .or(config.deploy.keep_releases)
        .unwrap_or(DeployOptions::DEFAULT_KEEP_RELEASES)
}

pub fn release_id(text: &str) -> Result<ReleaseId> {
    Ok(ReleaseId::parse(text)?)
}

pub fn deploy_options(args: &DeployArgs, config: &Config) -> Result<DeployOptions> {
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
    let mut opts = DeployOptions::new(source);
    opts.release = args.release.as_deref().map(release_id).transpose()?;
    opts.exclude = config.deploy.exclude.clone();
    opts.shared_dirs = config.shared.dirs.clone();
    opts.shared_files = config.shared.files.clone();
    opts.build = config.build.run.clone();
    opts.before_switch = config.hooks.before_switch.clone();
    opts.keep_releases = keep_releases(args.keep, config);
    if let Some(file) = &config.deploy.release_file {
        opts.release_file = file.clone();
    }
    opts.assets = asset_options(config);
    Ok(opts)
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
