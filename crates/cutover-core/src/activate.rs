//! Making an existing release current: `switch` and `rollback`.

use crate::error::{Error, Result};
use crate::history::{self, Event, EventKind};
use crate::layout::DeployPath;
use crate::release::ReleaseId;
use crate::switch::switch_current;
use crate::Mode;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Activation {
    pub release: ReleaseId,
    pub previous: Option<ReleaseId>,
    /// Nothing was done: the release was already current, or this was a dry run.
    pub unchanged: bool,
    /// What went wrong after the switch, which stands: `current` was changed all the same.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The release `rollback` goes to by default: the one staged before current.
pub fn rollback_target(deploy: &DeployPath) -> Result<ReleaseId> {
    let current = deploy
        .current_release()?
        .ok_or_else(|| Error::NoCurrentRelease(deploy.root().to_path_buf()))?;
    crate::cleanup::staged_before(&deploy.releases()?, &current)
        .ok_or_else(|| Error::NoEarlierRelease(current.to_string()))
}

/// Switches to `release` and records it as `kind` (a switch or a rollback).
pub fn activate(
    deploy: &DeployPath,
    release: &ReleaseId,
    kind: EventKind,
    mode: Mode<'_>,
) -> Result<Activation> {
    deploy.require_release(release)?;
    let previous = deploy.current_release()?;
    let unchanged = mode.is_dry_run() || previous.as_ref() == Some(release);
    let mut warnings = Vec::new();
    if !unchanged {
        switch_current(deploy, release)?;
        // The switch is the commit point: a failure after it must not report "nothing
        // changed", so it is a warning.
        let mut event = Event::now(kind.clone(), release.clone());
        event.previous = previous.clone();
        if let Err(e) = history::append(&deploy.history_file(), &event) {
            warnings.push(format!("switched, but the history was not updated: {e}"));
        }
        if kind == EventKind::RolledBack {
            crate::capistrano::log_rollback(deploy, release);
        }
    }
    Ok(Activation {
        release: release.clone(),
        previous,
        unchanged,
        warnings,
    })
}
