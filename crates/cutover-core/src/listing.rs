//! What `cutover releases` shows of one deploy path: its releases in order, which one is
//! current, and who staged each from what.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::history::{self, EventKind};
use crate::layout::{DeployPath, Flavor};
use crate::release::ReleaseId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseList {
    pub deploy_path: std::path::PathBuf,
    pub flavor: Flavor,
    pub current: Option<ReleaseId>,
    /// The link's text when `current` exists, whatever it points at.
    pub current_target: Option<String>,
    pub releases: Vec<ReleaseRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRow {
    pub id: ReleaseId,
    pub current: bool,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub staged_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub git_commit: Option<String>,
    /// The ref the commit was deployed as (`--ref`, `[deploy] branch`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub git_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub git_author: Option<String>,
    /// Staged from a work tree with uncommitted changes: not exactly `git_commit`.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub git_dirty: bool,
    /// Who deployed besides `user`: the CI actor, or the git user of the source.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deployer: Option<String>,
}

/// The releases of `deploy`, oldest first.
pub fn list(deploy: &DeployPath) -> Result<ReleaseList> {
    let link = deploy.current_link()?;
    let current = link.as_ref().and_then(|l| l.release.clone());
    let events = history::read(&deploy.history_file())?;
    // A release a dead deploy never switched to is not one to offer (the next locked
    // command removes it); `releases()` already leaves out unfinished ones.
    let releases = deploy
        .releases()?
        .into_iter()
        .filter(|id| current.as_ref() == Some(id) || !history::never_served(&events, id))
        .map(|id| {
            let staged = events
                .iter()
                .rev()
                .find(|e| e.event == EventKind::Staged && e.release == id);
            let source = staged.and_then(|e| e.source.as_ref());
            ReleaseRow {
                current: current.as_ref() == Some(&id),
                path: deploy.release(&id).display().to_string(),
                staged_at: staged.map(|e| e.time.clone()),
                user: staged.map(|e| e.user.clone()),
                git_commit: source.and_then(|s| s.git_commit.clone()),
                git_ref: source.and_then(|s| s.git_ref.clone()),
                git_author: source.and_then(|s| s.git_author.clone()),
                git_dirty: source.is_some_and(|s| s.git_dirty),
                deployer: source.and_then(|s| s.deployer.clone()),
                id,
            }
        })
        .collect();
    Ok(ReleaseList {
        deploy_path: deploy.root().to_path_buf(),
        flavor: deploy.flavor(),
        current,
        current_target: link.map(|l| l.target.display().to_string()),
        releases,
    })
}
