//! Removing old releases and what killed deploys left behind.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::history::{self, Event, EventKind};
use crate::layout::DeployPath;
use crate::release::ReleaseId;
use crate::Mode;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CleanupReport {
    pub removed: Vec<ReleaseId>,
    pub kept: Vec<ReleaseId>,
    /// Staging directories and temporary links of deploys that were killed.
    pub debris: Vec<String>,
}

/// Keeps the `keep` newest releases, and always the current one and the one it replaced,
/// whatever their age (after a rollback the current release may be old).
pub fn cleanup(deploy: &DeployPath, keep: usize, mode: Mode<'_>) -> Result<CleanupReport> {
    let dry_run = mode.is_dry_run();
    let mut report = CleanupReport {
        debris: remove_debris(deploy, mode)?,
        ..Default::default()
    };
    let releases = deploy.releases()?;
    let current = deploy.current_release()?;
    let replaced = match &current {
        Some(current) => {
            let events = history::read(&deploy.history_file())?;
            history::replaced_by(&events, current).or_else(|| staged_before(&releases, current))
        }
        None => None,
    };
    let removed = removable(&releases, keep, current.as_ref(), replaced.as_ref());
    for id in releases {
        if !removed.contains(&id) {
            report.kept.push(id);
            continue;
        }
        if !dry_run {
            remove_release(deploy, &id)?;
        }
        report.removed.push(id);
    }
    Ok(report)
}

/// Removes a release that is not current: its tree (through the trash, so a reader never
/// sees half of it), its manifest and asset record, and says so in the history.
pub(crate) fn remove_release(deploy: &DeployPath, id: &ReleaseId) -> Result<()> {
    drop_release_files(deploy, id)?;
    history::append(
        &deploy.history_file(),
        &Event::now(EventKind::Removed, id.clone()),
    )
}

/// What a release leaves besides its history: its tree (through the trash; none is fine),
/// its manifest and its asset record.
pub(crate) fn drop_release_files(deploy: &DeployPath, id: &ReleaseId) -> Result<()> {
    let dir = deploy.release(id);
    if std::fs::symlink_metadata(&dir).is_ok() {
        crate::trash::discard(deploy, &dir)?;
    }
    let _ = std::fs::remove_file(deploy.manifest_file(id));
    // Agents up to protocol 4 stored it as JSON.
    let _ = std::fs::remove_file(deploy.manifest_file(id).with_extension("json"));
    crate::assets::forget(deploy, id);
    Ok(())
}

/// The releases a cleanup removes from `releases` (oldest first): all but the `keep`
/// newest, the current one and the one it replaced.
pub fn removable(
    releases: &[ReleaseId],
    keep: usize,
    current: Option<&ReleaseId>,
    replaced: Option<&ReleaseId>,
) -> Vec<ReleaseId> {
    let newest: BTreeSet<&ReleaseId> = releases.iter().rev().take(keep).collect();
    releases
        .iter()
        .filter(|id| !newest.contains(id) && Some(*id) != current && Some(*id) != replaced)
        .cloned()
        .collect()
}

/// The release staged just before `release`, in `releases` order.
pub fn staged_before(releases: &[ReleaseId], release: &ReleaseId) -> Option<ReleaseId> {
    let at = releases.iter().position(|id| id == release)?;
    Some(releases.get(at.checked_sub(1)?)?.clone())
}

/// Unfinished releases, staging directories (of versions that staged elsewhere), temporary
/// links and releases never switched to can only belong to
/// a deploy that died: a live one would hold the lock we hold. Such a release is complete,
/// but no one ever served it; left in place, `rollback` could pick it over the release that
/// was live.
pub fn remove_debris(deploy: &DeployPath, mode: Mode<'_>) -> Result<Vec<String>> {
    let dry_run = mode.is_dry_run();
    let mut debris = Vec::new();
    let Ok(entries) = std::fs::read_dir(deploy.state_dir()) else {
        return Ok(debris);
    };
    let current = deploy.current_release()?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("staging-") {
            if !dry_run {
                crate::trash::discard(deploy, &path)?;
            }
            debris.push(name);
        } else if let Some(id) = name
            .strip_prefix(crate::layout::UNFINISHED_PREFIX)
            .and_then(|id| ReleaseId::parse(id).ok())
        {
            // Only a finished release is ever switched to (the marker goes, durably, before
            // the switch): a current one with a marker was made by hand. It stays, and
            // stays marked, until a deploy replaces it.
            if current.as_ref() == Some(&id) {
                debris.push(format!(
                    "{}/{id} (current, but never finished: deploy again)",
                    crate::layout::RELEASES
                ));
                continue;
            }
            if !dry_run {
                crate::deploy::discard_unfinished(deploy, &id)?;
            }
            debris.push(format!("{}/{id} (unfinished)", crate::layout::RELEASES));
        } else if crate::swap::is_temp_link_name(&name) {
            if !dry_run {
                let _ = std::fs::remove_file(&path);
            }
            debris.push(name);
        }
    }
    let events = history::read(&deploy.history_file())?;
    for id in deploy.releases_in_order(&events)? {
        if current.as_ref() == Some(&id) || !history::never_served(&events, &id) {
            continue;
        }
        if !dry_run {
            remove_release(deploy, &id)?;
        }
        debris.push(format!(
            "{}/{id} (never switched to)",
            crate::layout::RELEASES
        ));
    }
    if !dry_run {
        crate::trash::empty(deploy);
    }
    debris.sort();
    Ok(debris)
}
