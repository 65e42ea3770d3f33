//! Running one hook phase on the fleet: `once` commands first, each on its one host and
//! one after another, then every host's own commands in parallel.

use cutover_core::hooks::{HookCommand, HookPhase};
use cutover_core::ReleaseId;
use cutover_protocol::HooksRequest;

use super::{fail, Fleet, Slot};
use crate::hooks::PhasePlan;
use crate::HostError;

/// What a failing hook does to its host.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OnError {
    /// The host fails (the step did not happen).
    Fail,
    /// A warning: the phase runs after the outcome was decided.
    Warn,
}

/// The release a phase's hooks are about on one host, and the one before it.
pub(super) type About = (ReleaseId, Option<ReleaseId>);

impl Fleet<'_> {
    /// Runs `phase` on the hosts `about` (given each host's index) names a release for;
    /// `failed_step` goes to `on_failure` hooks. A host that failed earlier takes part
    /// only in phases that run after the outcome was decided (`OnError::Warn`).
    pub(super) fn run_phase(
        &mut self,
        phase: HookPhase,
        about: impl Fn(usize, &Slot) -> Option<About>,
        failed_step: Option<&str>,
        on_error: OnError,
    ) {
        let even_failed = on_error == OnError::Warn;
        let abouts: Vec<Option<About>> = self
            .slots
            .iter()
            .enumerate()
            .map(|(at, s)| {
                let takes_part = s.host.is_some() && (even_failed || !s.failed());
                takes_part.then(|| about(at, s)).flatten()
            })
            .collect();
        let roles: Vec<Option<&[String]>> = self
            .slots
            .iter()
            .zip(&abouts)
            .map(|(s, about)| about.as_ref().map(|_| &s.roles[..]))
            .collect();
        let plan = PhasePlan::new(
            crate::hooks::entries(&self.hooks, phase),
            self.hooks.timeout(),
            &roles,
        );
        if plan.is_empty() {
            return;
        }
        let request = |about: &About, commands: Vec<HookCommand>| HooksRequest {
            phase,
            release: about.0.clone(),
            previous: about.1.clone(),
            commands,
            failed_step: failed_step.map(str::to_string),
        };
        let progress = self.progress;
        let outcome =
            |slot: &mut Slot, result: Result<Vec<String>, HostError>, what: String| match result {
                Ok(changed) => {
                    if let Some(warning) = changed_shared_warning(&what, &changed) {
                        slot.report.warnings.push(warning);
                    }
                    slot.report.hooks.push(what)
                }
                Err(e) if on_error == OnError::Fail => fail(slot, progress, e),
                Err(e) => slot
                    .report
                    .warnings
                    .push(format!("{what} failed: {}", e.one_line())),
            };
        // Before the switch a failure ends the phase (nothing more should run, the deploy
        // stops); after it the outcome stands, and every host's hooks still run.
        let stop_at_failure = phase == HookPhase::BeforeSwitch;
        for (host, command) in plan.once {
            let (Some(about), slot) = (&abouts[host], &mut self.slots[host]) else {
                continue;
            };
            let what = format!("{phase} (once): {}", command.run);
            let result = slot
                .host()
                .and_then(|h| h.hooks(&request(about, vec![command])));
            outcome(slot, result, what);
            if stop_at_failure && self.any_failed() {
                return;
            }
        }
        for run in plan.nowhere {
            if let Some(slot) = self.slots.first_mut() {
                slot.report.warnings.push(format!(
                    "the {phase} hook `{run}` (once) ran nowhere: no host here has one of its roles"
                ));
            }
        }
        let per_host: Vec<Option<HooksRequest>> = plan
            .each
            .into_iter()
            .zip(&abouts)
            .map(|(commands, about)| {
                let about = about.as_ref()?;
                (!commands.is_empty()).then(|| request(about, commands))
            })
            .collect();
        let results = self.pool.install(|| {
            use rayon::prelude::*;
            self.slots
                .par_iter_mut()
                .zip(per_host.par_iter())
                .map(|(slot, request)| {
                    let request = request.as_ref()?;
                    if slot.failed() && !even_failed && stop_at_failure {
                        return None;
                    }
                    Some(slot.host().and_then(|h| h.hooks(request)))
                })
                .collect::<Vec<_>>()
        });
        for ((slot, result), request) in self.slots.iter_mut().zip(results).zip(per_host) {
            let (Some(result), Some(request)) = (result, request) else {
                continue;
            };
            let runs: Vec<&str> = request.commands.iter().map(|c| c.run.as_str()).collect();
            outcome(slot, result, format!("{phase}: {}", runs.join("; ")));
        }
    }
}

impl Fleet<'_> {
    /// The error for a hook that failed after a switch that stands: the release is live,
    /// and running the command again would switch again.
    pub(super) fn after_hook_failed(
        self,
        phase: HookPhase,
        release: &ReleaseId,
        state: String,
    ) -> crate::FleetError {
        let mut error = self
            .failure(format!("an {phase} hook failed on a host"), state)
            .about(release);
        error.next = Some(
            "fix the hook and run it by hand on the hosts named above; running the command again would switch again",
        );
        error
    }
}

/// Hooks after the switch run in a complete release, whose unchanged files are hard links
/// shared with other releases: a file rewritten in place changed in those too (the release
/// a rollback would go back to included).
fn changed_shared_warning(what: &str, changed: &[String]) -> Option<String> {
    let first = changed.first()?;
    let more = match changed.len() {
        1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    Some(format!(
        "{what} rewrote {first}{more} in place; it is a hard link shared with other releases, which changed too: write a new file and rename it over the old one, or keep such files in [shared]"
    ))
}
