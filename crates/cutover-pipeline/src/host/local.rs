//! The host this process runs on: every step is a direct call into cutover-core and
//! cutover-refresh. The agent on a remote machine is this same type behind a dispatcher.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_core::assets::AssetOptions;
use cutover_core::cleanup::CleanupReport;
use cutover_core::deploy::{self, DeployOptions, Fill, SourceFill, StageJob};
use cutover_core::history::{EventKind, Source};
use cutover_core::hooks::{HookEnv, HookPhase};
use cutover_core::listing::ReleaseList;
use cutover_core::stage::{Observer, StageStats};
use cutover_core::{DeployLock, DeployPath, Mode, ReleaseId};
use cutover_php::{PoolStatus, ResetReport};
use cutover_protocol::{
    Access, Finished, HooksRequest, OpenRequest, Opened, StageSpec, Staged, SwitchRequest, Switched,
};
use cutover_refresh::{PoolSpec, RefreshReport, Refresher, WarmReport};

use super::{Host, StageOrder};
use crate::{HostError, SourceTree};

pub struct LocalHost {
    name: String,
    observer: Arc<dyn Observer + Send + Sync>,
    session: Option<Session>,
    /// Results of the halves of a switch and a commit, for the orchestrator's broadcast.
    switched: Option<Result<Switched, HostError>>,
    committed: Option<Result<(), HostError>>,
}

/// An open deploy path.
struct Session {
    /// The name hooks see as `CUTOVER_HOST`.
    host: String,
    deploy: DeployPath,
    lock: Option<DeployLock>,
    refresher: Option<Refresher>,
    /// The php-fpm pool of `[php] fpm`, asked for its user when `writable_user` is unset.
    pool: Option<PoolSpec>,
    assets: AssetOptions,
    /// The directories this session created, removed again if the session ends with no
    /// release in the deploy path (a refused first deploy leaves nothing behind).
    created: Vec<PathBuf>,
    /// What killed deploys left, removed when the session took the lock (for `cleanup`'s
    /// report).
    debris: Vec<String>,
    /// Staged in this session and not current: removed when the session ends.
    pending: Vec<ReleaseId>,
    /// Started in this session and not finished yet.
    filling: Vec<Filling>,
    /// Staged in this session, with what from: its assets were carried while staging, and
    /// a commit to it is a deploy.
    fresh: Vec<(ReleaseId, Source)>,
    /// A switch not yet committed: the release to go back to if the session ends first.
    revert: Option<ReleaseId>,
    /// The release a commit makes final.
    switched_to: Option<ReleaseId>,
}

/// A release between `Stage` and `Finish`: what finishing it needs.
struct Filling {
    release: ReleaseId,
    previous: Option<ReleaseId>,
    opts: DeployOptions,
    source: Source,
    started: deploy::Started,
}

impl Session {
    /// The user this host's pool runs as, when a pool is configured and answers: who
    /// `[deploy] writable` is for by default. Asked only when a release completes.
    fn pool_user(&self) -> Option<String> {
        let pool = self.pool.as_ref()?.pool(&self.deploy).ok()?;
        pool.status().ok()?.user
    }

    fn mode(&self) -> Mode<'_> {
        self.lock.as_ref().map_or(Mode::DryRun, Mode::Apply)
    }

    fn changing(&self) -> Result<(&DeployPath, Mode<'_>), HostError> {
        match &self.lock {
            Some(lock) => Ok((&self.deploy, Mode::Apply(lock))),
            None => Err(HostError::internal(
                "the deploy path was opened without the lock; this is a bug in cutover",
            )),
        }
    }

    /// Undoes an uncommitted switch, removes what this session staged and never switched
    /// to, lets the lock go, and removes a deploy path this session created for nothing.
    fn end(mut self) {
        if let (Some(lock), Some(previous)) = (&self.lock, self.revert.take()) {
            let mode = Mode::Apply(lock);
            let back = cutover_core::switch::activate(
                &self.deploy,
                &previous,
                EventKind::RolledBack,
                mode,
                &self.assets,
                None,
            );
            if back.is_ok() {
                if let Some(refresher) = &self.refresher {
                    let _ = refresher.run(&self.deploy, &previous);
                }
            }
        }
        if let Some(lock) = &self.lock {
            for release in self.pending.drain(..) {
                let _ = deploy::discard_release(&self.deploy, &release, Mode::Apply(lock));
            }
        }
        // Only a session that created directories has anything to take back.
        let empty = self.lock.is_some()
            && !self.created.is_empty()
            && self.deploy.current_release().ok().flatten().is_none()
            && self
                .deploy
                .releases()
                .map(|r| r.is_empty())
                .unwrap_or(false);
        drop(self.lock.take());
        if empty {
            for dir in &self.created {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

impl LocalHost {
    pub fn new(name: impl Into<String>, observer: Arc<dyn Observer + Send + Sync>) -> Self {
        LocalHost {
            name: name.into(),
            observer,
            session: None,
            switched: None,
            committed: None,
        }
    }

    fn session(&self) -> Result<&Session, HostError> {
        self.session.as_ref().ok_or_else(not_open)
    }

    fn session_mut(&mut self) -> Result<&mut Session, HostError> {
        self.session.as_mut().ok_or_else(not_open)
    }

    pub fn deploy_path(&self) -> Option<&DeployPath> {
        self.session.as_ref().map(|s| &s.deploy)
    }

    pub fn open(&mut self, request: &OpenRequest) -> Result<Opened, HostError> {
        if let Some(session) = self.session.take() {
            session.end();
        }
        let deploy = DeployPath::new(&request.path)?;
        // Refuse a `current` that is a real directory before creating anything beside it.
        deploy.current_link()?;
        // Checked on this host before anything is created, staged or switched.
        let refresher = match request.access {
            Access::Read => None,
            _ => Refresher::prepare(&request.refresh, &deploy)?,
        };
        let mut created = Vec::new();
        let mut debris = Vec::new();
        let lock = match request.access {
            Access::Lock { wait_ms, create } => {
                if !create && !deploy.exists() {
                    return Err(missing(&deploy));
                }
                created = deploy.ensure_layout()?;
                let wait = wait_ms.map(Duration::from_millis);
                let lock = match cutover_core::DeployLock::acquire(&deploy.lock_file(), wait) {
                    Ok(lock) => lock,
                    Err(e) => {
                        for dir in &created {
                            let _ = std::fs::remove_dir_all(dir);
                        }
                        return Err(e.into());
                    }
                };
                // What a dead deploy left is gone before anything is chosen (rollback's
                // target, a fresh release id).
                debris = cutover_core::cleanup::remove_debris(&deploy, Mode::Apply(&lock))?;
                Some(lock)
            }
            Access::Read => {
                if !deploy.exists() {
                    return Err(missing(&deploy));
                }
                None
            }
            Access::DryRun => None,
        };
        let current = deploy.current_release()?;
        let releases = if deploy.exists() {
            deploy.releases()?
        } else {
            Vec::new()
        };
        let base = current.clone().or_else(|| releases.last().cloned());
        let manifest_digest =
            base.and_then(|id| cutover_core::manifest::stored_digest(&deploy.manifest_file(&id)));
        self.session = Some(Session {
            host: request.host.clone(),
            deploy,
            lock,
            refresher,
            pool: request.refresh.pool.clone(),
            assets: request.assets.clone(),
            created,
            debris,
            pending: Vec::new(),
            filling: Vec::new(),
            fresh: Vec::new(),
            revert: None,
            switched_to: None,
        });
        Ok(Opened {
            current,
            releases,
            manifest_digest,
            warnings: Vec::new(),
        })
    }

    /// Stages from a directory on this machine, linked against the previous release by
    /// the quick check (size, mode, mtime).
    pub fn stage_tree(
        &mut self,
        order: &StageOrder<'_>,
        tree: &SourceTree,
    ) -> Result<Staged, HostError> {
        check_spec(order.spec)?;
        let observer = Arc::clone(&self.observer);
        let session = self.session()?;
        let deploy = &session.deploy;
        let excludes = deploy::excludes_for(deploy, tree.dir(), tree.excludes())?;
        let opts = self.stage_options(order.spec, tree.dir())?;
        if order.dry_run {
            let (release, previous) = deploy::begin(deploy, Some(order.release.clone()))?;
            let previous_dir = previous.as_ref().map(|id| deploy.release(id));
            let populate = cutover_core::stage::Populate {
                source: tree.dir(),
                dest: deploy.root(),
                previous: previous_dir.as_deref(),
                excludes: &excludes,
                dry_run: true,
            };
            let stats = cutover_core::stage::populate(&populate, observer.as_ref())?.stats;
            return Ok(planned(release, previous, stats));
        }
        let mut fill = SourceFill {
            source: tree.dir(),
            excludes: &excludes,
        };
        self.stage_with(order, &opts, &mut fill, observer.as_ref())
    }

    /// The common part of staging, whatever fills the release: the steps of cutover-core
    /// in order, and the bookkeeping that lets the session undo them.
    pub fn stage_with(
        &mut self,
        order: &StageOrder<'_>,
        opts: &DeployOptions,
        fill: &mut dyn Fill,
        observer: &dyn Observer,
    ) -> Result<Staged, HostError> {
        let started = Instant::now();
        let (release, previous) = self.begin(order.release, opts)?;
        let staged =
            self.stage_prepared(order, opts, &release, previous.as_ref(), fill, observer)?;
        Ok(Staged {
            stage_ms: started.elapsed().as_millis() as u64,
            ..staged
        })
    }

    /// Starts `release` after `previous`, as `begin` named them: filled and built at its
    /// final path, unfinished until `finish`.
    pub fn stage_prepared(
        &mut self,
        order: &StageOrder<'_>,
        opts: &DeployOptions,
        release: &ReleaseId,
        previous: Option<&ReleaseId>,
        fill: &mut dyn Fill,
        observer: &dyn Observer,
    ) -> Result<Staged, HostError> {
        let session = self.session_mut()?;
        let deploy = &session.deploy;
        let job = StageJob {
            release,
            previous,
            opts,
            source: order.source,
        };
        let previous_dir = previous.map(|id| deploy.release(id));
        let started = deploy::start_release(deploy, &job, previous_dir.as_deref(), fill, observer)?;
        let stats = started.stats();
        session.pending.push(release.clone());
        session.filling.push(Filling {
            release: release.clone(),
            previous: previous.cloned(),
            opts: opts.clone(),
            source: order.source.clone(),
            started,
        });
        Ok(Staged {
            release: release.clone(),
            previous: previous.cloned(),
            stats,
            assets: Default::default(),
            stage_ms: 0,
            files_sent: 0,
            bytes_sent: 0,
        })
    }

    /// Completes a release this session started; from now on a switch may take it.
    pub fn finish(&mut self, release: &ReleaseId) -> Result<Finished, HostError> {
        let session = self.session_mut()?;
        let at = session
            .filling
            .iter()
            .position(|f| f.release == *release)
            .ok_or_else(|| not_started(release))?;
        let mut filling = session.filling.remove(at);
        if !filling.opts.writable.is_empty() && filling.opts.writable_user.is_none() {
            filling.opts.writable_user = session.pool_user();
        }
        let job = StageJob {
            release,
            previous: filling.previous.as_ref(),
            opts: &filling.opts,
            source: &filling.source,
        };
        let previous_dir = filling
            .previous
            .as_ref()
            .map(|id| session.deploy.release(id));
        let (stats, assets) = deploy::finish_release(
            &session.deploy,
            &job,
            previous_dir.as_deref(),
            filling.started,
        )?;
        session.fresh.push((release.clone(), filling.source));
        Ok(Finished { stats, assets })
    }

    /// Runs one phase's commands in the directory the phase names (`HookPhase`); returns
    /// the files shared with other releases they changed in place.
    pub fn run_hooks(&mut self, request: &HooksRequest) -> Result<Vec<String>, HostError> {
        request
            .validate()
            .map_err(|(message, hint)| HostError::usage(message, hint))?;
        let observer = Arc::clone(&self.observer);
        let session = self.session()?;
        let (deploy, _) = session.changing()?;
        let release_dir = deploy.release(&request.release);
        let dir = match request.phase {
            HookPhase::BeforeSwitch => {
                if !session.filling.iter().any(|f| f.release == request.release) {
                    return Err(not_started(&request.release));
                }
                release_dir
            }
            // Only ever the live release: the one just switched to, or gone back to.
            HookPhase::AfterSwitch | HookPhase::AfterRollback => {
                deploy.require_release(&request.release)?;
                if deploy.current_release()?.as_ref() != Some(&request.release) {
                    return Err(HostError::usage(
                        format!(
                            "{} hooks for `{}`, which is not the current release",
                            request.phase, request.release
                        ),
                        "this is a bug in the deploying cutover",
                    ));
                }
                release_dir
            }
            // The release still served, where `php artisan up` and the like belong.
            HookPhase::OnFailure => match deploy.current_release()? {
                Some(current) => deploy.release(&current),
                None => deploy.root().to_path_buf(),
            },
        };
        // A complete release shares its unchanged files with others.
        let watch_shared = request.phase != HookPhase::BeforeSwitch && dir != deploy.root();
        let mut env = HookEnv::new(
            deploy,
            &request.release,
            request.previous.as_ref(),
            &session.host,
        );
        if let Some(step) = &request.failed_step {
            env = env.with("CUTOVER_FAILED_STEP", step.clone());
        }
        let changed = cutover_core::hooks::run(
            request.phase,
            &request.commands,
            &dir,
            &env,
            watch_shared,
            observer.as_ref(),
        )?;
        Ok(changed.iter().map(|p| p.display().to_string()).collect())
    }

    /// Before any file of a stage: the shared files exist (their directories are made),
    /// and the new release and the one it follows are named. Whatever fills the release
    /// (this machine's tree, or a manifest received by the agent) starts here.
    pub fn begin(
        &mut self,
        release: &ReleaseId,
        opts: &DeployOptions,
    ) -> Result<(ReleaseId, Option<ReleaseId>), HostError> {
        let (deploy, _) = self.session()?.changing()?;
        deploy::check_shared(deploy, opts)?;
        Ok(deploy::begin(deploy, Some(release.clone()))?)
    }

    /// `begin` for a dry run: the names only, nothing checked that would be created.
    pub fn begin_dry_run(
        &self,
        release: &ReleaseId,
    ) -> Result<(ReleaseId, Option<ReleaseId>), HostError> {
        Ok(deploy::begin(
            &self.session()?.deploy,
            Some(release.clone()),
        )?)
    }

    /// The options cutover-core's staging takes, from what the pipeline sends and what
    /// this session was opened with.
    pub fn stage_options(
        &self,
        spec: &StageSpec,
        source: &std::path::Path,
    ) -> Result<DeployOptions, HostError> {
        let session = self.session()?;
        Ok(DeployOptions {
            shared_dirs: spec.shared_dirs.clone(),
            shared_files: spec.shared_files.clone(),
            build: spec.build.clone(),
            hooks_follow: spec.hooks_follow,
            release_file: spec.release_file.clone(),
            assets: session.assets.clone(),
            hook_timeout: Some(Duration::from_millis(spec.hook_timeout_ms)),
            host: session.host.clone(),
            writable: spec.writable.clone(),
            writable_mode: spec.writable_mode,
            // Asked of the pool only when the release is completed (never in a dry run).
            writable_user: spec.writable_user.clone(),
            ..DeployOptions::new(source)
        })
    }

    pub fn switch(&mut self, request: &SwitchRequest) -> Result<Switched, HostError> {
        let session = self.session_mut()?;
        let kind = if request.rollback {
            EventKind::RolledBack
        } else {
            EventKind::Switched
        };
        // A release staged in this session carried its assets while staging.
        let fresh = session.fresh.iter().any(|(id, _)| *id == request.release);
        let assets = if fresh {
            AssetOptions::none()
        } else {
            session.assets.clone()
        };
        if let Some(at) = request.at_us {
            let now = cutover_core::manifest::now_micros();
            if at > now + SwitchRequest::MAX_AHEAD_US {
                return Err(HostError::usage(
                    format!(
                        "the switch instant is {} ms ahead of this host's clock",
                        (at - now) / 1000
                    ),
                    "compare the clocks of the deploying machine and the host (NTP)",
                ));
            }
        }
        let activation = cutover_core::switch::activate(
            &session.deploy,
            &request.release,
            kind,
            session.mode(),
            &assets,
            request.at_us,
        )?;
        tracing::info!(host = %self.name, release = %request.release, "switched");
        let session = self.session_mut()?;
        if !activation.unchanged {
            session.pending.retain(|id| *id != request.release);
            // A later explicit switch (going back) supersedes a tentative one.
            session.revert = if request.tentative {
                activation.previous.clone()
            } else {
                None
            };
            session.switched_to = Some(request.release.clone());
        }
        Ok(Switched {
            release: request.release.clone(),
            previous: activation.previous,
            at_us: activation.renamed_at_us,
            late_us: activation.late_us,
            unchanged: activation.unchanged,
            assets_carried: activation.assets_carried,
            warnings: activation.warnings,
        })
    }

    pub fn before_switch_for(
        &mut self,
        release: &ReleaseId,
    ) -> Result<Option<WarmReport>, HostError> {
        let session = self.session_mut()?;
        session.deploy.require_release(release)?;
        match &mut session.refresher {
            Some(refresher) => Ok(refresher.before_switch(&session.deploy, release)?),
            None => Ok(None),
        }
    }

    pub fn refresh_for(&mut self, release: &ReleaseId) -> Result<Option<RefreshReport>, HostError> {
        let session = self.session()?;
        match &session.refresher {
            // A refresher may be there only for the check before the switch.
            Some(refresher) => Ok(Some(refresher.run(&session.deploy, release)?)
                .filter(|r| !r.steps.is_empty() || r.health.is_some())),
            None => Ok(None),
        }
    }

    pub fn commit(&mut self) -> Result<(), HostError> {
        let session = self.session_mut()?;
        session.revert = None;
        if let Some(release) = session.switched_to.take() {
            if let Some((_, source)) = session.fresh.iter().find(|(id, _)| *id == release) {
                cutover_core::capistrano::log_deploy(&session.deploy, &release, source);
            }
        }
        Ok(())
    }

    /// Drops a release this session staged; any other is refused (the release `current`
    /// replaced must survive whatever the other end asks).
    pub fn discard(&mut self, release: &ReleaseId) -> Result<(), HostError> {
        let session = self.session_mut()?;
        if !session.pending.contains(release) {
            return Err(not_started(release));
        }
        session.filling.retain(|f| f.release != *release);
        let (deploy, mode) = session.changing()?;
        deploy::discard_release(deploy, release, mode)?;
        session.pending.retain(|id| id != release);
        Ok(())
    }

    pub fn clean(&mut self, keep: usize, dry_run: bool) -> Result<CleanupReport, HostError> {
        let session = self.session_mut()?;
        let mut report = {
            let mode = if dry_run {
                Mode::DryRun
            } else {
                session.changing()?.1
            };
            cutover_core::cleanup::cleanup(&session.deploy, keep, mode)?
        };
        // What the session already removed when it took the lock counts as this cleanup's.
        let mut debris = std::mem::take(&mut session.debris);
        debris.append(&mut report.debris);
        debris.sort();
        debris.dedup();
        report.debris = debris;
        Ok(report)
    }

    pub fn list(&self) -> Result<ReleaseList, HostError> {
        Ok(cutover_core::listing::list(&self.session()?.deploy)?)
    }

    fn pool(&self, spec: &PoolSpec) -> Result<cutover_php::Pool, HostError> {
        Ok(spec.pool(&self.session()?.deploy)?)
    }

    /// Ends the session as `Host::close` describes.
    pub fn end(&mut self) {
        if let Some(session) = self.session.take() {
            session.end();
        }
    }
}

impl Drop for LocalHost {
    fn drop(&mut self) {
        self.end();
    }
}

impl Host for LocalHost {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants_manifest(&self) -> bool {
        false
    }

    fn open(&mut self, request: &OpenRequest) -> Result<Opened, HostError> {
        LocalHost::open(self, request)
    }

    fn stage(&mut self, order: &StageOrder<'_>, tree: &SourceTree) -> Result<Staged, HostError> {
        self.stage_tree(order, tree)
    }

    fn hooks(&mut self, request: &HooksRequest) -> Result<Vec<String>, HostError> {
        self.run_hooks(request)
    }

    fn finish(&mut self, release: &ReleaseId) -> Result<Finished, HostError> {
        LocalHost::finish(self, release)
    }

    fn before_switch(&mut self, release: &ReleaseId) -> Result<Option<WarmReport>, HostError> {
        self.before_switch_for(release)
    }

    fn send_switch(&mut self, request: &SwitchRequest) -> Result<(), HostError> {
        self.switched = Some(self.switch(request));
        Ok(())
    }

    fn clock(&mut self) -> Result<u64, HostError> {
        Ok(cutover_core::manifest::now_micros())
    }

    fn switched(&mut self) -> Result<Switched, HostError> {
        self.switched
            .take()
            .unwrap_or_else(|| Err(HostError::internal("no switch was sent")))
    }

    fn refresh(&mut self, release: &ReleaseId) -> Result<Option<RefreshReport>, HostError> {
        self.refresh_for(release)
    }

    fn send_commit(&mut self) -> Result<(), HostError> {
        self.committed = Some(self.commit());
        Ok(())
    }

    fn committed(&mut self) -> Result<(), HostError> {
        self.committed
            .take()
            .unwrap_or_else(|| Err(HostError::internal("no commit was sent")))
    }

    fn abort(&mut self, release: &ReleaseId) -> Result<(), HostError> {
        self.discard(release)
    }

    fn cleanup(&mut self, keep: usize, dry_run: bool) -> Result<CleanupReport, HostError> {
        self.clean(keep, dry_run)
    }

    fn releases(&mut self) -> Result<ReleaseList, HostError> {
        self.list()
    }

    fn php_status(&mut self, pool: &PoolSpec) -> Result<PoolStatus, HostError> {
        let pool = self.pool(pool)?;
        let mut status = pool.status()?;
        if status.opcache.is_some() {
            // A diagnosis: the status stands without the breakdown.
            let deploy = &self.session()?.deploy;
            match cutover_refresh::cached_releases(&pool, deploy) {
                Ok(releases) => status.releases = Some(releases),
                Err(error) => tracing::warn!(%error, "cannot list OPcache per release"),
            }
        }
        Ok(status)
    }

    fn php_reset(&mut self, pool: &PoolSpec, wait_ms: u64) -> Result<ResetReport, HostError> {
        Ok(self.pool(pool)?.reset(Duration::from_millis(wait_ms))?)
    }

    fn close(mut self: Box<Self>) {
        self.end();
    }
}

/// A stage spec by the rules of `StageSpec::validate`, as a host's error.
pub fn check_spec(spec: &StageSpec) -> Result<(), HostError> {
    spec.validate()
        .map_err(|(message, hint)| HostError::usage(message, hint))
}

/// What a dry run reports for a release it did not stage.
pub fn planned(release: ReleaseId, previous: Option<ReleaseId>, stats: StageStats) -> Staged {
    Staged {
        release,
        previous,
        stats,
        assets: Default::default(),
        stage_ms: 0,
        files_sent: 0,
        bytes_sent: 0,
    }
}

fn missing(deploy: &DeployPath) -> HostError {
    HostError::usage(
        format!("{} does not exist", deploy.root().display()),
        "check the deploy path; `cutover deploy` creates it on its first run",
    )
}

fn not_started(release: &ReleaseId) -> HostError {
    HostError::usage(
        format!("release `{release}` was not started in this session"),
        "this is a bug in the deploying cutover",
    )
}

fn not_open() -> HostError {
    HostError::internal("no deploy path is open in this session").with_hint("send `open` first")
}
