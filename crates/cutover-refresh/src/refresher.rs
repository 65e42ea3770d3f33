//! Running the refresh steps on the host where PHP runs.

use std::path::Path;
use std::time::{Duration, Instant};

use cutover_config::RefreshStrategy;
use cutover_core::{DeployPath, ReleaseId};
use cutover_php::apache::Generation;
use serde::Serialize;

use crate::health::{HealthCheck, HealthReport};
use crate::warm::{self, ByRelease, WarmPlan, WarmReport};
use crate::{RefreshError, RefreshSpec};

/// A spec made ready on its host: the pool built, and the host-side refusals passed.
pub struct Refresher {
    spec: RefreshSpec,
    pool: Option<cutover_php::Pool>,
    health: Option<HealthCheck>,
    /// The release whose switch is followed by an OPcache reset, because it did not fit
    /// (`opcache_room = "reset"`).
    reset_after: Option<ReleaseId>,
    /// What OPcache held after the last check before a switch: the next check uses it
    /// while OPcache's counters say nothing changed.
    known: Option<ByRelease>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RefreshReport {
    pub steps: Vec<RefreshStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RefreshStep {
    pub strategy: RefreshStrategy,
    pub seconds: f64,
}

impl Refresher {
    /// Checks what only this host can tell (is Apache running PHP, would a reload kill
    /// requests) before anything is switched; `None` when there is nothing to do.
    pub fn prepare(
        spec: &RefreshSpec,
        deploy: &DeployPath,
    ) -> Result<Option<Refresher>, RefreshError> {
        spec.validate()?;
        if spec.is_empty() {
            return Ok(None);
        }
        for strategy in &spec.strategies {
            match strategy {
                RefreshStrategy::FpmReload if drops_requests(spec.fpm_pidfile.as_deref()) => {
                    return Err(RefreshError::settings(
                        "[refresh] fpm-reload would kill in-flight requests: php-fpm's process_control_timeout is 0",
                        "set `process_control_timeout = 10s` in the [global] section of php-fpm.conf (workers then finish their request before the reload), or use strategy \"opcache-reset\"",
                    ))
                }
                RefreshStrategy::ApacheGraceful => check_apache(&spec.apache_pidfile)?,
                _ => {}
            }
        }
        let pool = spec.pool.as_ref().map(|p| p.pool(deploy)).transpose()?;
        let health = match &spec.health {
            Some(health) => Some(HealthCheck::new(health, pool.as_ref(), deploy)?),
            None => None,
        };
        Ok(Some(Refresher {
            spec: spec.clone(),
            pool,
            health,
            reset_after: None,
            known: None,
        }))
    }

    /// Before the switch to `release`, when OPcache keeps what it holds across it: checks
    /// its room for the new release, lets go of releases out of service, and with
    /// `prewarm` compiles the new release. `None` when OPcache is emptied after the switch
    /// anyway.
    pub fn before_switch(
        &mut self,
        deploy: &DeployPath,
        release: &ReleaseId,
    ) -> Result<Option<WarmReport>, RefreshError> {
        self.reset_after = None;
        let Some(pool) = self.pool.as_ref().filter(|_| self.spec.keeps_opcache()) else {
            return Ok(None);
        };
        let _span = tracing::info_span!("before switch", %release).entered();
        let plan = WarmPlan {
            prewarm: self.spec.prewarms(),
            room: self.spec.opcache_room,
            prewarm_time: Duration::from_millis(self.spec.prewarm_ms),
            reset_wait: self.spec.wait(),
        };
        let report = warm::before_switch(&plan, pool, deploy, release, &mut self.known)?;
        if report.reset_after_switch {
            self.reset_after = Some(release.clone());
        }
        Ok(Some(report))
    }

    /// Runs the refresh steps for `release` (now current), then the health check.
    pub fn run(
        &self,
        deploy: &DeployPath,
        release: &ReleaseId,
    ) -> Result<RefreshReport, RefreshError> {
        let mut steps = Vec::new();
        let wait = self.spec.wait();
        for strategy in &self.spec.strategies {
            let started = Instant::now();
            let _span = tracing::info_span!("refresh", ?strategy, %release).entered();
            match strategy {
                RefreshStrategy::OpcacheReset => {
                    if let Some(pool) = &self.pool {
                        pool.reset_leaving_only(wait, &deploy.releases_dir(), release.as_str())?;
                    }
                }
                RefreshStrategy::FpmReload => {
                    if let Some(pidfile) = &self.spec.fpm_pidfile {
                        cutover_php::reload::reload(pidfile, self.pool.as_ref(), wait)?;
                    }
                }
                RefreshStrategy::ApacheGraceful => {
                    // Children are counted before the request: until the parent has
                    // handled it, they are all still there, so the wait cannot end early.
                    let before = Generation::read(&self.spec.apache_pidfile)?;
                    run_command(&self.spec.apache_command, deploy, release, wait)?;
                    before.wait_for_next(wait)?;
                }
                RefreshStrategy::Command => {
                    if let Some(command) = &self.spec.command {
                        run_command(command, deploy, release, wait)?;
                    }
                }
                // Done before the switch (`before_switch`).
                RefreshStrategy::None | RefreshStrategy::Prewarm => continue,
            }
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(seconds, "refresh step done");
            steps.push(RefreshStep {
                strategy: *strategy,
                seconds,
            });
        }
        if let (Some(pool), Some(_)) = (
            &self.pool,
            self.reset_after.as_ref().filter(|r| *r == release),
        ) {
            let started = Instant::now();
            pool.reset_leaving_only(wait, &deploy.releases_dir(), release.as_str())?;
            steps.push(RefreshStep {
                strategy: RefreshStrategy::OpcacheReset,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        let health = match &self.health {
            Some(check) => Some(check.check(release)?),
            None => None,
        };
        Ok(RefreshReport { steps, health })
    }
}

/// Before switching: Apache must be running, and PHP must run inside it. A graceful restart
/// of an Apache that hands PHP to php-fpm leaves php-fpm's OPcache as it was: the old
/// release would go on being served and the health check would be the first to notice.
/// Only a memory map read as PHP-less refuses; an unreadable one (another user's Apache)
/// is not held against the user.
fn check_apache(pidfile: &Path) -> Result<(), RefreshError> {
    let generation = Generation::read(pidfile).map_err(|error| {
        let hint = error.hint().unwrap_or_default();
        RefreshError::settings(format!("[refresh] apache-graceful: {error}"), hint)
    })?;
    if generation.runs_php() == Some(false) {
        return Err(RefreshError::settings(
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
fn drops_requests(pidfile: Option<&Path>) -> bool {
    pidfile.and_then(cutover_php::reload::process_control_timeout) == Some(0)
}

/// Runs a refresh command with `sh -c` in the deploy path, naming the release in its
/// environment.
fn run_command(
    command: &str,
    deploy: &DeployPath,
    release: &ReleaseId,
    wait: std::time::Duration,
) -> Result<(), RefreshError> {
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
        Some(wait),
        &cutover_core::stage::Silent,
    )?;
    Ok(())
}
