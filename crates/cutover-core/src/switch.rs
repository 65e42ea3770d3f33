//! Making an existing release current: `switch` and `rollback`.

use crate::error::{Error, Result};
use crate::history::{self, Event, EventKind};
use crate::layout::DeployPath;
use crate::release::ReleaseId;
use crate::swap::switch_current;
use crate::Mode;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Activation {
    pub release: ReleaseId,
    pub previous: Option<ReleaseId>,
    /// Nothing was done: the release was already current, or this was a dry run.
    pub unchanged: bool,
    /// Static files of the release left behind, linked into this one first.
    #[serde(skip_serializing_if = "is_zero")]
    pub assets_carried: u64,
    /// What went wrong after the switch, which stands: `current` was changed all the same.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Wall clock, microseconds since the epoch, just before the rename (or when nothing
    /// was done).
    pub renamed_at_us: u64,
    /// With an instant to rename at: how far past it this host was when it got there (0:
    /// it waited for the instant).
    pub late_us: Option<u64>,
}

/// The release `rollback` goes to by default: the one staged before current.
pub fn rollback_target(deploy: &DeployPath) -> Result<ReleaseId> {
    let current = deploy
        .current_release()?
        .ok_or_else(|| Error::NoCurrentRelease(deploy.root().to_path_buf()))?;
    crate::cleanup::staged_before(&deploy.releases()?, &current)
        .ok_or_else(|| Error::NoEarlierRelease(current.to_string()))
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Switches to `release` and records it as `kind` (a switch or a rollback). The static
/// assets of the release being left are first linked into `release` (added, never
/// replacing a file), so its pages rendered a moment ago still get their CSS and JS.
///
/// With `at_us` (wall clock, microseconds since the epoch), the rename waits for that
/// instant once everything before it is done, so many hosts can rename together; an
/// instant already past renames at once.
pub fn activate(
    deploy: &DeployPath,
    release: &ReleaseId,
    kind: EventKind,
    mode: Mode<'_>,
    assets: &crate::assets::AssetOptions,
    at_us: Option<u64>,
) -> Result<Activation> {
    deploy.require_release(release)?;
    let previous = deploy.current_release()?;
    let unchanged = mode.is_dry_run() || previous.as_ref() == Some(release);
    let mut warnings = Vec::new();
    let mut assets_carried = 0;
    let mut renamed_at_us = crate::manifest::now_micros();
    let mut late_us = None;
    if !unchanged {
        if let Some(leaving) = &previous {
            let target = deploy.release(release);
            let leaving = std::slice::from_ref(leaving);
            assets_carried =
                crate::assets::carry_into(deploy, release, &target, leaving, assets)?.carried;
        }
        late_us = at_us.map(wait_until_micros);
        renamed_at_us = crate::manifest::now_micros();
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
        assets_carried,
        warnings,
        renamed_at_us,
        late_us,
    })
}

/// Sleeps until the wall clock reads `at` (microseconds since the epoch). Returns how far
/// past `at` the clock already was (0 when it waited).
fn wait_until_micros(at: u64) -> u64 {
    let now = crate::manifest::now_micros();
    if now >= at {
        return now - at;
    }
    sleep_until(at);
    0
}

/// One absolute sleep on the realtime clock: the kernel wakes every host's agent at the
/// instant itself (within the timer slack), where naps in a loop would wake dozens of
/// agents over and over on a few cores.
#[cfg(target_os = "linux")]
fn sleep_until(at: u64) {
    use rustix::thread::{clock_nanosleep_absolute, ClockId, Timespec};
    let when = Timespec {
        tv_sec: (at / 1_000_000) as i64,
        tv_nsec: ((at % 1_000_000) * 1_000) as _,
    };
    while let Err(rustix::io::Errno::INTR) = clock_nanosleep_absolute(ClockId::Realtime, &when) {}
}

#[cfg(not(target_os = "linux"))]
fn sleep_until(at: u64) {
    let now = crate::manifest::now_micros();
    std::thread::sleep(std::time::Duration::from_micros(at.saturating_sub(now)));
}
