//! Switching every host to one release at once: tentative until every host has refreshed
//! and passed its check, then committed; on any failure every host goes back.

use std::time::Instant;

use cutover_core::ReleaseId;
use cutover_protocol::SwitchRequest;
use rayon::prelude::*;

use cutover_core::hooks::HookPhase;

use super::hooks::OnError;
use super::{fail, set, Fleet, Slot};
use crate::{FleetError, HostError, HostReport, HostState};

/// Beyond this round trip to a host, its clock offset is too uncertain to schedule by.
const MAX_SCHEDULE_RTT_US: u64 = 50_000;
/// Clock exchanges per host; the shortest round trip is kept.
const CLOCK_PROBES: usize = 4;
/// What sending one switch request takes on this side (measured: ~0.3 ms per ssh host).
const SEND_US_PER_HOST: u64 = 500;

fn now_micros() -> u64 {
    cutover_core::manifest::now_micros()
}

/// What `switch` and `rollback` did on every host.
pub struct SwitchOutcome {
    pub release: ReleaseId,
    pub hosts: Vec<HostReport>,
    /// Between the first and the last host's rename, by each host's clock.
    pub switch_skew_us: Option<u64>,
}

/// Why a switch did not stand, and what it left.
pub(super) struct NotSwitched {
    /// For `on_failure` hooks: `switch`, `check` (refresh or health) or `commit`.
    pub step: &'static str,
    pub summary: &'static str,
    pub state: String,
}

impl Fleet<'_> {
    /// `cutover switch` (`release` given) and `cutover rollback` (`release` or the one
    /// before current, which must be the same on every host).
    pub fn activate(
        self,
        release: Option<ReleaseId>,
        rollback: bool,
        dry_run: bool,
    ) -> Result<SwitchOutcome, FleetError> {
        let mut fleet = self.require_open("nothing was switched")?;
        let release = match release {
            Some(release) => release,
            None => match fleet.rollback_target() {
                Ok(release) => release,
                Err(summary) => return Err(fleet.unchanged(summary)),
            },
        };
        let mut fleet = fleet
            .require_releases(&[&release])
            .map_err(|e| e.about(&release))?;
        for slot in &mut fleet.slots {
            slot.report.unchanged = Some(dry_run || slot.opened.current.as_ref() == Some(&release));
        }
        if dry_run {
            let progress = fleet.progress;
            fleet
                .slots
                .iter_mut()
                .for_each(|s| set(s, progress, HostState::Planned));
        } else {
            let done = if rollback {
                HostState::RolledBack
            } else {
                HostState::Switched
            };
            if let Err(not) = fleet.switch_everywhere(&release, rollback, done) {
                return Err(fleet.failure(not.summary, not.state).about(&release));
            }
            if rollback {
                let back = |_: usize, slot: &Slot| {
                    let moved = slot.report.unchanged == Some(false);
                    moved.then(|| (release.clone(), slot.report.previous.clone()))
                };
                fleet.run_phase(HookPhase::AfterRollback, back, None, OnError::Fail);
                if fleet.any_failed() {
                    let state = format!("{release} is live and stays so");
                    return Err(fleet.after_hook_failed(HookPhase::AfterRollback, &release, state));
                }
            }
        }
        let switch_skew_us = fleet.skew();
        Ok(SwitchOutcome {
            release,
            hosts: fleet.into_reports(),
            switch_skew_us,
        })
    }

    /// One flip of `cutover verify`: every host to `release`, refreshed and checked.
    /// Returns when the last rename was confirmed; the sessions stay open.
    pub fn switch_to(&mut self, release: &ReleaseId) -> Result<Instant, FleetError> {
        self.switch_everywhere(release, false, HostState::Switched)
            .map_err(|not| FleetError {
                kind: crate::HostErrorKind::Failed,
                summary: not.summary.to_string(),
                state: not.state,
                next: None,
                release: Some(release.clone()),
                hosts: self.slots.iter().map(|s| s.report.clone()).collect(),
            })
    }

    /// The release before current, which must be the same on every host.
    fn rollback_target(&mut self) -> Result<ReleaseId, String> {
        let progress = self.progress;
        let mut targets = Vec::new();
        for slot in &mut self.slots {
            let target = match &slot.opened.current {
                None => Err(HostError::usage(
                    "there is no current release",
                    "name the release: `cutover rollback <id>`",
                )),
                Some(current) => cutover_core::cleanup::staged_before(&slot.opened.releases, current)
                    .ok_or_else(|| {
                        HostError::usage(
                            format!("there is no release before `{current}` to roll back to"),
                            "`cutover releases` lists the releases; name one with `cutover rollback <id>`, or deploy another first",
                        )
                    }),
            };
            match target {
                Ok(target) => targets.push((slot.report.host.clone(), target)),
                Err(error) => fail(slot, progress, error),
            }
        }
        if self.any_failed() {
            return Err(
                "there is no release to roll back to on a host; nothing was switched".into(),
            );
        }
        let first = targets
            .first()
            .map(|(_, t)| t.clone())
            .ok_or("no hosts selected")?;
        if targets.iter().any(|(_, t)| *t != first) {
            let list: Vec<String> = targets.iter().map(|(h, t)| format!("{h}: {t}")).collect();
            return Err(format!(
                "the hosts would roll back to different releases ({}); name the release to go to on every host: `cutover rollback <id>`",
                list.join(", ")
            ));
        }
        Ok(first)
    }

    /// Switches every host to `release` at once, then refreshes and checks each; returns
    /// when the last rename was confirmed. If any host fails, every host that switched
    /// goes back.
    pub(super) fn switch_everywhere(
        &mut self,
        release: &ReleaseId,
        rollback: bool,
        done: HostState,
    ) -> Result<Instant, NotSwitched> {
        self.before_switch(release)?;
        // Tentative: an agent whose session ends before the commit goes back by itself, so
        // a deploy killed (or cut off) between switch and commit leaves every host on the
        // old release rather than some on each.
        let at = self.schedule(release);
        self.switch_all(|slot| {
            (slot.opened.current.as_ref() != Some(release)).then(|| SwitchRequest {
                release: release.clone(),
                rollback,
                tentative: true,
                at_us: at
                    .zip(slot.report.clock_offset_us)
                    .map(|(at, offset)| at.saturating_add_signed(offset)),
            })
        });
        let renamed = Instant::now();
        tracing::info!(%release, skew_us = ?self.skew(), "switched every host (tentative)");
        if self.any_failed() {
            self.roll_back_all(release);
            return Err(self.not_switched(
                "switch",
                "the switch failed on a host; every host that switched was switched back",
            ));
        }
        let progress = self.progress;
        let refreshed = self.each(|slot| match slot.switched {
            true => slot.host()?.refresh(release),
            false => Ok(None),
        });
        for (slot, report) in self.slots.iter_mut().zip(refreshed) {
            if let Some(report) = report {
                slot.report.refresh = report;
                set(slot, progress, done);
            }
        }
        if self.any_failed() {
            self.roll_back_all(release);
            return Err(self.not_switched("check", "the refresh or health check failed on a host; every host was switched back to its previous release"));
        }
        self.broadcast(
            |slot| slot.switched.then_some(()),
            |host, ()| host.send_commit(),
            |slot| slot.host()?.committed(),
        );
        if self.any_failed() {
            self.roll_back_all(release);
            return Err(self.not_switched("commit", "a host was lost before the commit and went back by itself; every host was switched back"));
        }
        for slot in &mut self.slots {
            slot.opened.current = Some(release.clone());
            slot.switched = false;
        }
        Ok(renamed)
    }

    /// On every host that moves, before any renames: OPcache's room for `release` checked
    /// and, with `prewarm`, `release` compiled into the pool, so that no host goes live
    /// cold or full (a fleet pre-warms during staging, before the coordinated switch).
    fn before_switch(&mut self, release: &ReleaseId) -> Result<(), NotSwitched> {
        let warmed = self.each(|slot| {
            if slot.opened.current.as_ref() == Some(release) {
                return Ok(None);
            }
            slot.host()?.before_switch(release)
        });
        for (slot, report) in self.slots.iter_mut().zip(warmed) {
            if let Some(Some(report)) = report {
                slot.report.warnings.extend(report.warnings.iter().cloned());
                slot.report.opcache = Some(report);
            }
        }
        if self.any_failed() {
            return Err(NotSwitched {
                step: "prewarm",
                summary:
                    "the check or pre-warm before the switch failed on a host; no host was switched",
                state: "every host is on the release it had before".into(),
            });
        }
        Ok(())
    }

    /// When every host should rename, by this machine's clock, with each host's clock
    /// offset recorded in its report: far enough ahead for every switch request to arrive
    /// (the requests go out one host after another), so the renames do not spread with the
    /// size of the fleet. `None` (rename on arrival) for one host, or when a host's round
    /// trip is too long for its clock offset to be known well.
    fn schedule(&mut self, release: &ReleaseId) -> Option<u64> {
        let moving = |slot: &Slot| slot.opened.current.as_ref() != Some(release);
        if !self.scheduled_switch || self.slots.iter().filter(|s| moving(s)).count() < 2 {
            return None;
        }
        // NTP's way: of a few exchanges, the one with the shortest round trip says most
        // about the offset (its error is at most half that round trip).
        let probes = self.each(|slot| {
            if !moving(slot) {
                return Ok(None);
            }
            let mut best: Option<(u64, i64)> = None;
            for _ in 0..CLOCK_PROBES {
                let sent = now_micros();
                let host_now = slot.host()?.clock()?;
                let rtt = now_micros().saturating_sub(sent);
                let offset = host_now as i64 - (sent + rtt / 2) as i64;
                if best.is_none_or(|(shortest, _)| rtt < shortest) {
                    best = Some((rtt, offset));
                }
            }
            Ok(best)
        });
        let mut max_rtt = 0;
        for (slot, probe) in self.slots.iter_mut().zip(&probes) {
            if let Some(Some((rtt, offset))) = probe {
                max_rtt = max_rtt.max(*rtt);
                slot.report.clock_offset_us = Some(*offset);
            }
        }
        if max_rtt > MAX_SCHEDULE_RTT_US || self.any_failed() {
            tracing::info!(
                max_rtt,
                "switching on arrival: round trips too long to schedule"
            );
            for slot in &mut self.slots {
                slot.report.clock_offset_us = None;
            }
            return None;
        }
        let hosts = probes.iter().flatten().flatten().count() as u64;
        let lead = (3 * max_rtt).max(2_000) + SEND_US_PER_HOST * hosts;
        tracing::info!(max_rtt, lead, "switch scheduled");
        Some(now_micros() + lead)
    }

    fn not_switched(&self, step: &'static str, summary: &'static str) -> NotSwitched {
        let back: Vec<String> = self
            .slots
            .iter()
            .filter_map(|s| s.report.previous.as_ref().map(|p| format!("{p}")))
            .collect();
        let state = match back.first() {
            Some(first) if back.iter().all(|b| b == first) && self.slots.len() == 1 => {
                format!("`current` was switched back to {first}, which is live again")
            }
            Some(first) if back.iter().all(|b| b == first) => {
                format!("{first} is live again on every host")
            }
            Some(_) => "every host is on the release it had before".into(),
            None => "there was no earlier release to go back to".into(),
        };
        NotSwitched {
            step,
            summary,
            state,
        }
    }

    /// Switches the hosts `request` returns a request for.
    fn switch_all(&mut self, request: impl Fn(&Slot) -> Option<SwitchRequest>) {
        let started = Instant::now();
        let replies = self.broadcast(
            request,
            |host, r| host.send_switch(&r),
            |slot| Ok((slot.host()?.switched()?, started.elapsed())),
        );
        for (slot, switched) in self.slots.iter_mut().zip(replies) {
            let Some((switched, confirmed)) = switched else {
                continue;
            };
            slot.report.switch_ms = Some(confirmed.as_millis() as u64);
            slot.switched = !switched.unchanged;
            slot.report.switched_at_us = Some(switched.at_us);
            slot.report.switch_late_us = switched.late_us;
            slot.report.warnings.extend(switched.warnings);
            if !slot.failed() {
                set(slot, self.progress, HostState::Switched);
            }
        }
    }

    /// Sends one request to every host `make` returns one for, then reads the replies in
    /// the same order: the hosts act as close to the same moment as the connections allow.
    fn broadcast<R, T>(
        &mut self,
        make: impl Fn(&Slot) -> Option<R>,
        send: impl Fn(&mut dyn crate::Host, R) -> Result<(), HostError>,
        reply: impl Fn(&mut Slot) -> Result<T, HostError>,
    ) -> Vec<Option<T>> {
        let progress = self.progress;
        let mut sent = vec![false; self.slots.len()];
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(request) = make(slot) else { continue };
            match slot.host().and_then(|host| send(host, request)) {
                Ok(()) => sent[i] = true,
                Err(e) => fail(slot, progress, e),
            }
        }
        self.slots
            .iter_mut()
            .zip(sent)
            .map(|(slot, sent)| {
                if !sent {
                    return None;
                }
                match reply(slot) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        fail(slot, progress, e);
                        None
                    }
                }
            })
            .collect()
    }

    /// Every host that switched away from `from` goes back to the release it had, and
    /// refreshes for it; then its `after_rollback` hooks run.
    fn roll_back_all(&mut self, from: &ReleaseId) {
        let targets: Vec<Option<ReleaseId>> = self
            .slots
            .iter()
            .map(|s| s.switched.then(|| s.opened.current.clone()).flatten())
            .collect();
        self.switch_all_to(&targets);
        let progress = self.progress;
        self.pool.install(|| {
            self.slots
                .par_iter_mut()
                .zip(targets.par_iter())
                .for_each(|(slot, target)| {
                    let Some(previous) = target else { return };
                    let outcome = slot.host().and_then(|h| h.refresh(previous));
                    if !slot.failed() {
                        set(slot, progress, HostState::RolledBack);
                    }
                    if let Err(e) = outcome {
                        slot.report.warnings.push(format!(
                            "switched back to {previous}, but its refresh failed: {}",
                            e.one_line()
                        ));
                    }
                })
        });
        let went_back = |at: usize, _: &Slot| Some((targets[at].clone()?, Some(from.clone())));
        self.run_phase(HookPhase::AfterRollback, went_back, None, OnError::Warn);
    }

    /// Going back: not tentative, and a host that failed is still sent back.
    fn switch_all_to(&mut self, targets: &[Option<ReleaseId>]) {
        let mut sent = vec![false; self.slots.len()];
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(release) = &targets[i] else { continue };
            let request = SwitchRequest {
                release: release.clone(),
                rollback: true,
                tentative: false,
                at_us: None,
            };
            sent[i] = slot.host().and_then(|h| h.send_switch(&request)).is_ok();
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !sent[i] {
                continue;
            }
            match slot.host().and_then(|h| h.switched()) {
                Ok(_) => slot.switched = false,
                Err(e) => slot
                    .report
                    .warnings
                    .push(format!("could not switch back: {}", e.one_line())),
            }
        }
    }

    pub(super) fn skew(&self) -> Option<u64> {
        let times: Vec<u64> = self
            .slots
            .iter()
            .filter_map(|s| s.report.switched_at_us)
            .collect();
        Some(times.iter().max()? - times.iter().min()?)
    }
}
