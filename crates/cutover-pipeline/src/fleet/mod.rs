//! The orchestrator: every host through the same steps, together. A deploy path given
//! with `--to` is a fleet of one `LocalHost`.

mod deploy;
mod hooks;
mod switch;

use std::sync::Arc;

use cutover_core::stage::Observer;
use cutover_core::ReleaseId;
use cutover_protocol::{Access, OpenRequest, Opened};
use rayon::prelude::*;

pub use deploy::{DeployJob, DeployOutcome};
pub use switch::SwitchOutcome;

use crate::{FleetError, Host, HostError, HostErrorKind, HostPlan, HostReport, HostState};
use crate::{LocalHost, RemoteHost, Transport};

/// Told where each host is, as it happens (a progress line per host on a terminal).
pub trait Progress: Sync {
    fn state(&self, _host: &str, _state: HostState) {}
    /// A step of the whole fleet begins.
    fn phase(&self, _line: &str) {}
}

/// What a read-only step gave on each host: its report, and its answer when it had one.
pub struct ReadOutcome<T> {
    pub hosts: Vec<(HostReport, Option<T>)>,
}

struct Slot {
    host: Option<Box<dyn Host>>,
    /// The host's `roles`, for hooks with `once` or `roles`.
    roles: Vec<String>,
    report: HostReport,
    opened: Opened,
    /// Staged in this deploy and not switched to yet.
    staged: Option<ReleaseId>,
    /// Switched in the current step and not committed yet.
    switched: bool,
}

impl Slot {
    fn host(&mut self) -> Result<&mut dyn Host, HostError> {
        match self.host.as_mut() {
            Some(host) => Ok(host.as_mut()),
            None => Err(HostError::failed("not connected")),
        }
    }

    fn failed(&self) -> bool {
        self.report.status == HostState::Failed
    }
}

pub struct Fleet<'p> {
    slots: Vec<Slot>,
    hooks: cutover_config::HookSettings,
    /// Hosts rename at one scheduled instant (see `switch::schedule`), not on arrival.
    scheduled_switch: bool,
    pool: rayon::ThreadPool,
    progress: &'p dyn Progress,
}

impl<'p> Fleet<'p> {
    /// Connects to every host in parallel (at most `parallel` at once) and opens its
    /// deploy path. Hosts that failed are marked so in their report: each operation
    /// refuses to go on while any host is failed, and says so.
    pub fn open(
        plans: &[HostPlan],
        access: Access,
        parallel: usize,
        observer: Arc<dyn Observer + Send + Sync>,
        progress: &'p dyn Progress,
    ) -> Result<Fleet<'p>, HostError> {
        // A large --parallel on a small fleet starts no more threads than 16 (the pool also
        // runs the parallel staging work of hosts on this machine) or one per host.
        let parallel = parallel.clamp(1, plans.len().max(16));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(parallel)
            .build()
            .map_err(|e| HostError::failed(format!("cannot start {parallel} threads: {e}")))?;
        let mut slots: Vec<Slot> = plans
            .iter()
            .map(|plan| Slot {
                host: None,
                roles: plan.roles.clone(),
                report: HostReport {
                    host: plan.name.clone(),
                    deploy_path: plan.path.display().to_string(),
                    ..HostReport::default()
                },
                opened: Opened::default(),
                staged: None,
                switched: false,
            })
            .collect();
        let fleet_progress = progress;
        pool.install(|| {
            slots.par_iter_mut().zip(plans).for_each(|(slot, plan)| {
                let connected: Result<Box<dyn Host>, HostError> = match &plan.transport {
                    Transport::InProcess => Ok(Box::new(LocalHost::new(
                        plan.name.clone(),
                        Arc::clone(&observer),
                    ))),
                    Transport::Process | Transport::Ssh(_) => {
                        RemoteHost::connect(plan, access == Access::DryRun)
                            .map(|h| Box::new(h) as Box<dyn Host>)
                    }
                };
                let opened = connected.and_then(|mut host| {
                    slot.report.agent_upload = host.agent_upload().cloned();
                    let request = OpenRequest {
                        host: plan.name.clone(),
                        path: plan.path.clone(),
                        access,
                        refresh: plan.refresh.clone(),
                        assets: plan.assets.clone(),
                    };
                    let opened = host.open(&request);
                    slot.host = Some(host);
                    opened
                });
                match opened {
                    Ok(opened) => {
                        slot.report.previous = opened.current.clone();
                        slot.report.warnings.extend(opened.warnings.iter().cloned());
                        slot.opened = opened;
                        set(slot, fleet_progress, HostState::Connected);
                    }
                    Err(e) => fail(slot, fleet_progress, e),
                }
            })
        });
        Ok(Fleet {
            slots,
            hooks: cutover_config::HookSettings::default(),
            scheduled_switch: true,
            pool,
            progress,
        })
    }

    /// The hooks deploys, switches and rollbacks run.
    pub fn with_hooks(mut self, hooks: cutover_config::HookSettings) -> Self {
        self.hooks = hooks;
        self
    }

    /// Every host renames when its switch request arrives instead (what cutover did before
    /// switches were scheduled; for comparing the two).
    pub fn switching_on_arrival(mut self) -> Self {
        self.scheduled_switch = false;
        self
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A step of the whole fleet begins: shown, and traced.
    fn phase(&self, line: &str) {
        tracing::info!("{line}");
        self.progress.phase(line);
    }

    fn any_failed(&self) -> bool {
        self.slots.iter().any(Slot::failed)
    }

    /// Every host must have opened; `what` says what did not happen otherwise.
    pub fn require_open(self, what: &str) -> Result<Self, FleetError> {
        if self.any_failed() {
            return Err(self.unchanged(format!(
                "could not open the deploy path on every host; {what}"
            )));
        }
        Ok(self)
    }

    /// Every host must have each of `releases` (complete ones).
    pub fn require_releases(mut self, releases: &[&ReleaseId]) -> Result<Self, FleetError> {
        let progress = self.progress;
        for slot in &mut self.slots {
            let Some(missing) = releases.iter().find(|r| !slot.opened.releases.contains(r)) else {
                continue;
            };
            let error = HostError::usage(
                format!("no release `{missing}`"),
                format!("available releases: {}", names(&slot.opened.releases)),
            );
            fail(slot, progress, error);
        }
        if self.any_failed() {
            return Err(self.unchanged("the release is missing on a host; nothing was switched"));
        }
        Ok(self)
    }

    /// Runs `step` on every host that has not failed, in parallel; a failed step marks
    /// its host failed.
    fn each<T: Send>(
        &mut self,
        step: impl Fn(&mut Slot) -> Result<T, HostError> + Sync,
    ) -> Vec<Option<T>> {
        let progress = self.progress;
        self.pool.install(|| {
            self.slots
                .par_iter_mut()
                .map(|slot| {
                    if slot.failed() {
                        return None;
                    }
                    match step(slot) {
                        Ok(value) => Some(value),
                        Err(e) => {
                            fail(slot, progress, e);
                            None
                        }
                    }
                })
                .collect()
        })
    }

    /// A read-only step on every host; hosts that could not be opened keep their error.
    pub fn read<T: Send>(
        mut self,
        step: impl Fn(&mut dyn Host) -> Result<T, HostError> + Sync,
    ) -> Result<ReadOutcome<T>, FleetError> {
        let results = self.each(|slot| step(slot.host()?));
        let progress = self.progress;
        for slot in self.slots.iter_mut().filter(|s| !s.failed()) {
            set(slot, progress, HostState::Done);
        }
        if self.any_failed() {
            return Err(self.unchanged("failed on a host"));
        }
        let reports = self.into_reports();
        Ok(ReadOutcome {
            hosts: reports.into_iter().zip(results).collect(),
        })
    }

    /// `cutover cleanup` on every host: old releases and what killed deploys left.
    pub fn cleanup(mut self, keep: usize, dry_run: bool) -> Result<Vec<HostReport>, FleetError> {
        let results = self.each(|slot| slot.host()?.cleanup(keep, dry_run));
        let progress = self.progress;
        for (slot, report) in self.slots.iter_mut().zip(results) {
            if let Some(report) = report {
                slot.report.cleanup = Some(report);
                set(
                    slot,
                    progress,
                    if dry_run {
                        HostState::Planned
                    } else {
                        HostState::Cleaned
                    },
                );
            }
        }
        if self.any_failed() {
            return Err(self.failure(
                "cleanup failed on a host",
                "every release that was live is still there",
            ));
        }
        Ok(self.into_reports())
    }

    /// Ends every session and returns what happened on each host.
    pub fn into_reports(mut self) -> Vec<HostReport> {
        self.slots.drain(..).map(close).collect()
    }

    /// The error for a step that failed somewhere; every session is ended first (undoing
    /// what was not committed).
    /// The error for a step that failed before anything was switched.
    fn unchanged(self, summary: impl Into<String>) -> FleetError {
        let state = match self.slots.len() {
            1 => "the deploy path is as it was",
            _ => "every host is as it was",
        };
        self.failure(summary, state)
    }

    fn failure(mut self, summary: impl Into<String>, state: impl Into<String>) -> FleetError {
        let state = state.into();
        let hosts: Vec<HostReport> = self.slots.drain(..).map(close).collect();
        let errors: Vec<&HostError> = hosts.iter().filter_map(|h| h.error.as_ref()).collect();
        let kind = if !errors.is_empty() && errors.iter().all(|e| e.kind == HostErrorKind::Usage) {
            HostErrorKind::Usage
        } else if errors.iter().any(|e| e.kind == HostErrorKind::Internal) {
            HostErrorKind::Internal
        } else {
            HostErrorKind::Failed
        };
        FleetError {
            kind,
            summary: summary.into(),
            state,
            next: None,
            release: None,
            hosts,
        }
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for slot in self.slots.drain(..) {
            close(slot);
        }
    }
}

fn close(mut slot: Slot) -> HostReport {
    if let Some(host) = slot.host.take() {
        host.close();
    }
    slot.report
}

fn set(slot: &mut Slot, progress: &dyn Progress, state: HostState) {
    slot.report.status = state;
    progress.state(&slot.report.host, state);
}

fn fail(slot: &mut Slot, progress: &dyn Progress, error: HostError) {
    tracing::info!(host = %slot.report.host, error = %error.one_line(), "host failed");
    slot.report.error = Some(error);
    set(slot, progress, HostState::Failed);
}

fn names(ids: &[ReleaseId]) -> String {
    if ids.is_empty() {
        return "none; run `cutover deploy` first".into();
    }
    ids.iter()
        .map(ReleaseId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
