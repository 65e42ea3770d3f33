//! Making PHP see the release `current` now names, after every switch and rollback.
//!
//! The switch is atomic on disk, but OPcache is keyed by the unresolved path and each
//! worker caches realpaths: without a refresh, `$document_root` setups keep serving the
//! old release. A refresh that fails would leave exactly that, so the switch is undone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cutover_config::{Config, RefreshStrategy};
use cutover_core::activate::activate;
use cutover_core::history::EventKind;
use cutover_core::{DeployPath, Mode, ReleaseId};
use cutover_php::apache::Generation;
use cutover_php::Pool;

use crate::error::{CommandError, Kind, Result};

const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// What to run after a switch, checked before anything is switched.
pub struct RefreshPlan {
    strategies: Vec<RefreshStrategy>,
    pool: Option<Pool>,
    fpm_pidfile: Option<PathBuf>,
    command: Option<String>,
    apache: Option<ApacheGraceful>,
    wait: Duration,
    health: Option<crate::health::HealthCheck>,
    /// Switching back keeps the failed release's assets reachable, as any switch does.
    assets: cutover_core::assets::AssetOptions,
}

/// `apache-graceful`: where the parent's pid is and what asks for the restart.
struct ApacheGraceful {
    pidfile: PathBuf,
    command: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RefreshReport {
    pub steps: Vec<RefreshStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RefreshStep {
    pub strategy: RefreshStrategy,
    pub seconds: f64,
}

/// `None` when nothing is to be done (no strategy but `none`, and no health check).
pub fn plan(config: &Config, deploy: &DeployPath) -> Result<Option<RefreshPlan>> {
    let settings = &config.refresh;
    let strategies: Vec<_> = settings
        .strategy
        .iter()
        .copied()
        .filter(|s| *s != RefreshStrategy::None)
        .collect();
    let health = crate::health::plan(config, deploy)?;
    if strategies.is_empty() && health.is_none() {
        return Ok(None);
    }
    let pool = match &config.php.fpm {
        Some(text) => Some(Pool {
            address: text.parse().map_err(|e: cutover_fastcgi::Error| {
                CommandError::usage(
                    format!("[php] fpm: {e}"),
                    "write `unix:/path/to.sock`, `/path/to.sock` or `127.0.0.1:9000`",
                )
            })?,
            script_dir: deploy.state_dir().join("php"),
            chroot: config.php.fpm_chroot.clone(),
            timeout: Duration::from_secs(10),
        }),
        None => None,
    };
    let needs = |what: &str, hint: &str| {
        CommandError::usage(format!("[refresh] strategy needs {what}"), hint)
    };
    for strategy in &strategies {
        match strategy {
            RefreshStrategy::OpcacheReset if pool.is_none() => {
                return Err(needs("the pool's address for opcache-reset", "set `fpm = \"unix:/run/php/php8.2-fpm.sock\"` in the [php] table"))
            }
            RefreshStrategy::FpmReload if drops_requests(settings.fpm_pidfile.as_deref()) => {
                return Err(CommandError::usage(
                    "[refresh] fpm-reload would kill in-flight requests: php-fpm's process_control_timeout is 0",
                    "set `process_control_timeout = 10s` in the [global] section of php-fpm.conf (workers then finish their request before the reload), or use strategy \"opcache-reset\"",
                ))
            }
            RefreshStrategy::FpmReload if settings.fpm_pidfile.is_none() => {
                return Err(needs("fpm_pidfile for fpm-reload", "set `fpm_pidfile = \"/run/php/php8.2-fpm.pid\"` in [refresh], or use strategy \"command\" with `systemctl reload php8.2-fpm`"))
            }
            RefreshStrategy::Command if settings.command.is_none() => {
                return Err(needs("a command for \"command\"", "set `command = \"...\"` in [refresh]"))
            }
            _ => {}
        }
    }
    let apache = if strategies.contains(&RefreshStrategy::ApacheGraceful) {
        let pidfile = settings
            .apache_pidfile
            .clone()
            .unwrap_or_else(|| PathBuf::from(cutover_config::DEFAULT_APACHE_PIDFILE));
        check_apache(&pidfile)?;
        Some(ApacheGraceful {
            pidfile,
            command: settings
                .apache_command
                .clone()
                .unwrap_or_else(|| cutover_config::DEFAULT_APACHE_COMMAND.to_string()),
        })
    } else {
        None
    };
    Ok(Some(RefreshPlan {
        strategies,
        pool,
        fpm_pidfile: settings.fpm_pidfile.clone(),
        command: settings.command.clone(),
        apache,
        wait: settings
            .wait_seconds
            .map_or(DEFAULT_WAIT, Duration::from_secs),
        health,
        assets: crate::settings::asset_options(config),
    }))
}

/// Before switching: Apache must be running, and PHP must run inside it. A graceful restart
/// of an Apache that hands PHP to php-fpm leaves php-fpm's OPcache as it was: the old
/// release would go on being served and the health check would be the first to notice.
/// Only a memory map read as PHP-less refuses; an unreadable one (another user's Apache)
/// is not held against the user.
fn check_apache(pidfile: &std::path::Path) -> Result<()> {
    let generation = Generation::read(pidfile).map_err(|error| {
        let hint = error.hint().unwrap_or_default();
        CommandError::usage(format!("[refresh] apache-graceful: {error}"), hint)
    })?;
    if generation.runs_php() == Some(false) {
        return Err(CommandError::usage(
            format!(
                "[refresh] apache-graceful would not refresh PHP: the Apache of {} (pid {}) has no mod_php loaded",
                pidfile.display(),
                generation.pid()
            ),
            "a graceful restart only renews PHP that runs inside Apache; when Apache passes PHP to php-fpm, use strategy \"opcache-reset\" or \"fpm-reload\"",
        ));
    }
    Ok(())
}

/// A reload with process_control_timeout = 0 terminates workers mid-request (502s). Only
/// a value read as 0 refuses; an unreadable config is not held against the user.
fn drops_requests(pidfile: Option<&std::path::Path>) -> bool {
    pidfile.and_then(cutover_php::reload::process_control_timeout) == Some(0)
}

/// Runs the refresh steps for `release` (now current) and the health check.
pub fn check(
    plan: &RefreshPlan,
    deploy: &DeployPath,
    release: &ReleaseId,
) -> Result<RefreshReport> {
    let mut steps = Vec::new();
    for strategy in &plan.strategies {
        let started = Instant::now();
        match strategy {
            RefreshStrategy::OpcacheReset => {
                if let Some(pool) = &plan.pool {
                    pool.reset(plan.wait)?;
                }
            }
            RefreshStrategy::FpmReload => {
                if let Some(pidfile) = &plan.fpm_pidfile {
                    cutover_php::reload::reload(pidfile, plan.pool.as_ref(), plan.wait)?;
                }
            }
            RefreshStrategy::ApacheGraceful => {
                if let Some(apache) = &plan.apache {
                    // Children are counted before the request: until the parent has
                    // handled it, they are all still there, so the wait cannot end early.
                    let before = Generation::read(&apache.pidfile)?;
                    run_command(&apache.command, deploy, release)?;
                    before.wait_for_next(plan.wait)?;
                }
            }
            RefreshStrategy::Command => {
                if let Some(command) = &plan.command {
                    run_command(command, deploy, release)?;
                }
            }
            RefreshStrategy::None => {}
        }
        steps.push(RefreshStep {
            strategy: *strategy,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let health = match &plan.health {
        Some(check) => Some(check.check(release)?),
        None => None,
    };
    Ok(RefreshReport { steps, health })
}

/// Runs a refresh command with `sh -c` in the deploy path, naming the release in its
/// environment.
fn run_command(command: &str, deploy: &DeployPath, release: &ReleaseId) -> Result<()> {
    let release_path = deploy.release(release).display().to_string();
    let root = deploy.root().display().to_string();
    let env = [
        ("CUTOVER_RELEASE", release.as_str()),
        ("CUTOVER_RELEASE_PATH", release_path.as_str()),
        ("CUTOVER_DEPLOY_PATH", root.as_str()),
    ];
    cutover_core::command::run(
        "refresh",
        command,
        deploy.root(),
        &env,
        &cutover_core::stage::Silent,
    )?;
    Ok(())
}

/// Refreshes after `release` became current. On failure, switches back to `previous`,
/// refreshes for it, and returns the error: a release PHP cannot be made to see is not
/// deployed.
pub fn after_switch(
    plan: Option<&RefreshPlan>,
    deploy: &DeployPath,
    mode: Mode<'_>,
    release: &ReleaseId,
    previous: Option<&ReleaseId>,
) -> Result<Option<RefreshReport>> {
    let Some(plan) = plan else {
        return Ok(None);
    };
    if mode.is_dry_run() {
        return Ok(None);
    }
    let error = match check(plan, deploy, release) {
        Ok(report) => return Ok(Some(report)),
        Err(error) => error,
    };
    let mut causes = vec![error.message];
    causes.extend(error.causes);
    let (message, hint) = match previous {
        Some(previous) => {
            activate(deploy, previous, EventKind::RolledBack, mode, &plan.assets)?;
            if let Err(again) = check(plan, deploy, previous) {
                causes.push(format!(
                    "refreshing {previous} after switching back failed too: {}",
                    again.message
                ));
            }
            (
                format!("after switching to {release} the refresh or health check failed, so `current` was switched back to {previous}"),
                format!("{previous} is live again; fix what is named above and deploy again"),
            )
        }
        None => (
            format!("after switching to {release} the refresh or health check failed, and there is no earlier release to go back to"),
            "fix what is named above and deploy again".to_string(),
        ),
    };
    // The refresh's own hint first (it names the setting), then the state we left.
    let mut hints: Vec<String> = error
        .hints
        .into_iter()
        .filter(|h| !h.starts_with("nothing was switched"))
        .collect();
    hints.push(hint);
    Err(CommandError {
        kind: Kind::Failed,
        message,
        causes,
        hints,
    })
}
