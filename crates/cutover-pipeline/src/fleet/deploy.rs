//! A deploy: stage everywhere, switch everywhere, refresh and check, commit, clean up.

use std::time::Instant;

use cutover_core::history::Source;
use cutover_core::ReleaseId;
use cutover_protocol::StageSpec;

use cutover_core::hooks::HookPhase;

use super::hooks::OnError;
use super::Fleet;
use crate::host::StageOrder;
use crate::{FleetError, HostReport, HostState, SourceTree};

/// Everything a deploy needs, resolved once by the caller.
pub struct DeployJob {
    pub tree: SourceTree,
    /// The id to give the release; default a timestamp no host has.
    pub release: Option<ReleaseId>,
    pub spec: StageSpec,
    pub source: Source,
    /// Releases kept on each host once the new one stands.
    pub keep: usize,
    /// Plan only: nothing is created, locked or changed on any host.
    pub dry_run: bool,
}

pub struct DeployOutcome {
    pub release: ReleaseId,
    pub dry_run: bool,
    pub hosts: Vec<HostReport>,
    /// Between the first and the last host's rename, by each host's clock.
    pub switch_skew_us: Option<u64>,
    pub total_ms: u64,
}

impl Fleet<'_> {
    pub fn deploy(self, job: &DeployJob) -> Result<DeployOutcome, FleetError> {
        let started = Instant::now();
        let mut fleet = self.require_open("nothing was staged or switched")?;
        let release = match &job.release {
            Some(id) => id.clone(),
            None => match fleet.fresh_id() {
                Some(id) => id,
                None => return Err(fleet.unchanged("no free release id for this second")),
            },
        };
        let hosts = fleet.slots.len();
        fleet.phase(&format!(
            "{} {release} on {hosts} host{}",
            if job.dry_run { "planning" } else { "staging" },
            if hosts == 1 { "" } else { "s" }
        ));
        let order = StageOrder {
            release: &release,
            spec: &job.spec,
            source: &job.source,
            dry_run: job.dry_run,
        };
        let progress = fleet.progress;
        for slot in &mut fleet.slots {
            super::set(slot, progress, HostState::Staging);
        }
        // Before the parallel step: see `SourceTree::prepare`.
        let bases: Vec<Option<String>> = fleet
            .slots
            .iter()
            .filter(|s| s.host.as_ref().is_some_and(|h| h.wants_manifest()))
            .map(|s| s.opened.manifest_digest.clone())
            .collect();
        if !bases.is_empty() {
            if let Err(e) = job.tree.prepare(&bases) {
                for slot in &mut fleet.slots {
                    super::fail(slot, progress, e.clone());
                }
            }
        }
        let staged = fleet.each(|slot| slot.host()?.stage(&order, &job.tree));
        for (slot, staged) in fleet.slots.iter_mut().zip(staged) {
            let Some(staged) = staged else { continue };
            slot.report.files = Some(staged.stats);
            slot.report.files_sent = Some(staged.files_sent);
            slot.report.bytes_sent = Some(staged.bytes_sent);
            slot.report.stage_ms = Some(staged.stage_ms);
            if job.dry_run {
                slot.report.assets = Some(staged.assets);
                super::set(slot, progress, HostState::Planned);
            } else {
                slot.staged = Some(release.clone());
            }
        }
        if fleet.any_failed() {
            return Err(fleet.given_up(
                &release,
                "stage",
                "staging failed on a host; no host was switched",
            ));
        }
        if !job.dry_run {
            // At the release's final path, once-commands first on their one host.
            let new = |_, slot: &super::Slot| Some((release.clone(), slot.opened.current.clone()));
            fleet.run_phase(HookPhase::BeforeSwitch, new, None, OnError::Fail);
            if fleet.any_failed() {
                return Err(fleet.given_up(
                    &release,
                    "before_switch",
                    "a before_switch hook failed on a host; no host was switched",
                ));
            }
            let finished = fleet.each(|slot| slot.host()?.finish(&release));
            for (slot, finished) in fleet.slots.iter_mut().zip(finished) {
                let Some(finished) = finished else { continue };
                slot.report.files = Some(finished.stats);
                slot.report.assets = Some(finished.assets);
                super::set(slot, progress, HostState::Staged);
            }
            if fleet.any_failed() {
                return Err(fleet.given_up(
                    &release,
                    "finish",
                    "completing the release failed on a host; no host was switched",
                ));
            }
        }
        if job.dry_run {
            for slot in &mut fleet.slots {
                let mut after = slot.opened.releases.clone();
                after.push(release.clone());
                let current = slot.opened.current.as_ref();
                let removed =
                    cutover_core::cleanup::removable(&after, job.keep, Some(&release), current);
                let kept = after
                    .iter()
                    .filter(|id| !removed.contains(id))
                    .cloned()
                    .collect();
                slot.report.cleanup = Some(cutover_core::cleanup::CleanupReport {
                    removed,
                    kept,
                    debris: Vec::new(),
                });
            }
            return Ok(DeployOutcome {
                release,
                dry_run: true,
                hosts: fleet.into_reports(),
                switch_skew_us: None,
                total_ms: started.elapsed().as_millis() as u64,
            });
        }

        fleet.phase(&format!(
            "switching {hosts} host{} to {release}",
            if hosts == 1 { "" } else { "s" }
        ));
        if let Err(not) = fleet.switch_everywhere(&release, false, HostState::Deployed) {
            let new = |_, slot: &super::Slot| Some((release.clone(), slot.opened.current.clone()));
            fleet.run_phase(HookPhase::OnFailure, new, Some(not.step), OnError::Warn);
            return Err(fleet.failure(not.summary, not.state).about(&release));
        }
        for slot in &mut fleet.slots {
            slot.staged = None;
        }
        // The release passed its checks and stands, whatever these hooks do.
        let live = |_, slot: &super::Slot| Some((release.clone(), slot.report.previous.clone()));
        fleet.run_phase(HookPhase::AfterSwitch, live, None, OnError::Fail);
        if fleet.any_failed() {
            let state = format!("{release} is live and stays so; nothing was cleaned up");
            return Err(fleet.after_hook_failed(HookPhase::AfterSwitch, &release, state));
        }

        // Only now, with every check passed: a deploy switched back keeps every release.
        let keep = job.keep;
        let cleaned = fleet.pool.install(|| {
            use rayon::prelude::*;
            fleet
                .slots
                .par_iter_mut()
                .map(|slot| slot.host().and_then(|h| h.cleanup(keep, false)))
                .collect::<Vec<_>>()
        });
        for (slot, cleaned) in fleet.slots.iter_mut().zip(cleaned) {
            match cleaned {
                Ok(report) => slot.report.cleanup = Some(report),
                Err(e) => slot.report.warnings.push(format!(
                    "deployed, but old releases were not removed: {}",
                    e.one_line()
                )),
            }
        }
        job.tree.remember();
        let switch_skew_us = fleet.skew();
        Ok(DeployOutcome {
            release,
            dry_run: false,
            hosts: fleet.into_reports(),
            switch_skew_us,
            total_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// A timestamp id no host has yet (Capistrano's format).
    fn fresh_id(&self) -> Option<ReleaseId> {
        let base = ReleaseId::timestamp(time::OffsetDateTime::now_utc());
        let taken = |id: &ReleaseId| self.slots.iter().any(|s| s.opened.releases.contains(id));
        let mut id = base.clone();
        for n in 2..10_000 {
            if !taken(&id) {
                return Some(id);
            }
            id = base.with_suffix(n);
        }
        None
    }

    /// A deploy that started and stops before any switch: `on_failure` hooks on every
    /// host (before its lock goes), the staged release dropped everywhere.
    fn given_up(mut self, release: &ReleaseId, step: &str, summary: &str) -> FleetError {
        let about = |_, slot: &super::Slot| Some((release.clone(), slot.opened.current.clone()));
        self.run_phase(HookPhase::OnFailure, about, Some(step), OnError::Warn);
        self.abort_all();
        self.unchanged(summary.to_string()).about(release)
    }

    /// Hosts that staged drop the release; the others never had it.
    fn abort_all(&mut self) {
        let progress = self.progress;
        for slot in &mut self.slots {
            let Some(release) = slot.staged.take() else {
                continue;
            };
            let outcome = slot.host().and_then(|h| h.abort(&release));
            if !slot.failed() {
                super::set(slot, progress, HostState::NotSwitched);
            }
            if let Err(e) = outcome {
                slot.report.warnings.push(format!(
                    "the staged release stays until the next deploy: {}",
                    e.one_line()
                ));
            }
        }
    }
}
