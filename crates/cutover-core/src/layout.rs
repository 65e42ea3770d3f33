//! The on-disk layout of a deploy path, Capistrano-compatible:
//!
//! ```text
//! <root>/current -> releases/<id>   replaced only by rename(2)
//! <root>/releases/<id>/             complete releases only
//! <root>/shared/                    linked into every release
//! <root>/.cutover/                  lock, history, staging-<id>, trash
//! ```

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::release::ReleaseId;

pub const CURRENT: &str = "current";
pub const RELEASES: &str = "releases";
pub const SHARED: &str = "shared";
pub const STATE: &str = ".cutover";
/// `.cutover/unfinished-<id>`: see `DeployPath::unfinished_marker`.
pub const UNFINISHED_PREFIX: &str = "unfinished-";

/// Which tool laid out a deploy path, so `releases` can say what it adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Cutover,
    Capistrano,
    Deployer,
    Plain,
}

#[derive(Debug, Clone)]
pub struct DeployPath {
    root: PathBuf,
}

/// What `current` points at, as read from the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLink {
    pub target: PathBuf,
    /// The release it names, when the target is `releases/<id>` (relative or absolute).
    pub release: Option<ReleaseId>,
}

impl DeployPath {
    /// A deploy path as given; nothing is created until `ensure_layout`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .ctx("read the working directory for", &root)?
                .join(root)
        };
        Ok(DeployPath {
            root: normalize(&root),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn current(&self) -> PathBuf {
        self.root.join(CURRENT)
    }
    pub fn releases_dir(&self) -> PathBuf {
        self.root.join(RELEASES)
    }
    pub fn release(&self, id: &ReleaseId) -> PathBuf {
        self.releases_dir().join(id.as_str())
    }
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join(SHARED)
    }
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE)
    }
    /// Present from before `releases/<id>` is created until the release is complete: a
    /// release with this file is unfinished, and nothing takes it for a release.
    pub fn unfinished_marker(&self, id: &ReleaseId) -> PathBuf {
        self.state_dir().join(format!("{UNFINISHED_PREFIX}{id}"))
    }
    /// Whether a deploy started `id` and has not completed it (or died doing so).
    pub fn is_unfinished(&self, id: &ReleaseId) -> bool {
        std::fs::symlink_metadata(self.unfinished_marker(id)).is_ok()
    }
    pub fn trash_dir(&self) -> PathBuf {
        self.state_dir().join("trash")
    }
    /// What a remote deploy sent for this release (see `manifest`).
    pub fn manifest_file(&self, id: &ReleaseId) -> PathBuf {
        crate::manifest::stored_path(&self.state_dir(), id.as_str())
    }

    pub fn history_file(&self) -> PathBuf {
        self.state_dir().join("history.jsonl")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir().join("lock")
    }

    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// The outermost directory `ensure_layout` would create (the root or an ancestor), so a
    /// failed first deploy can remove exactly what it made; `None` when the root exists.
    pub fn outermost_missing(&self) -> Option<PathBuf> {
        let mut missing = None;
        let mut probe = Some(self.root.as_path());
        while let Some(dir) = probe {
            if std::fs::symlink_metadata(dir).is_ok() {
                break;
            }
            missing = Some(dir.to_path_buf());
            probe = dir.parent();
        }
        missing
    }

    /// Creates the directories a deploy needs and returns the ones it created (outermost
    /// first), so a refused first deploy can remove exactly those; on failure it removes
    /// them itself. A no-op on an existing deploy path.
    pub fn ensure_layout(&self) -> Result<Vec<PathBuf>> {
        let mut created: Vec<PathBuf> = self.outermost_missing().into_iter().collect();
        for dir in [self.releases_dir(), self.shared_dir(), self.state_dir()] {
            let new = std::fs::symlink_metadata(&dir).is_err();
            if let Err(e) = std::fs::create_dir_all(&dir).ctx("create", &dir) {
                for made in &created {
                    let _ = std::fs::remove_dir_all(made);
                }
                return Err(e);
            }
            if new && !created.iter().any(|c| dir.starts_with(c)) {
                created.push(dir);
            }
        }
        // `create_dir_all` accepts a file where a directory must be only by failing; a
        // `shared` or `.cutover` that is a file fails above, after the others were made.
        Ok(created)
    }

    pub fn flavor(&self) -> Flavor {
        if self.state_dir().is_dir() {
            Flavor::Cutover
        } else if self.root.join(".dep").is_dir() {
            Flavor::Deployer
        } else if self.root.join("revisions.log").is_file() || self.root.join("repo").is_dir() {
            Flavor::Capistrano
        } else {
            Flavor::Plain
        }
    }

    /// Releases, oldest first. Hidden entries and files are not releases, nor is one a
    /// deploy is still filling or a dead one left unfinished (`is_unfinished`: the next
    /// command that takes the lock removes those).
    ///
    /// Order is the order cutover staged them in (from the history), so `--release v1`
    /// followed by a timestamped release still rolls back to `v1`. Releases the history
    /// does not know (adopted from Capistrano or Deployer) come first, by name, digit runs
    /// compared as numbers: Deployer's `9` before `10`, Capistrano's timestamps by age.
    pub fn releases(&self) -> Result<Vec<ReleaseId>> {
        let events = crate::history::read(&self.history_file())?;
        self.releases_in_order(&events)
    }

    /// `releases`, with the history already read (it grows with every switch).
    pub fn releases_in_order(&self, events: &[crate::history::Event]) -> Result<Vec<ReleaseId>> {
        let mut ids = self.release_dirs()?;
        ids.retain(|id| !self.is_unfinished(id));
        let staged_at = |id: &ReleaseId| {
            events
                .iter()
                .rposition(|e| e.event == crate::history::EventKind::Staged && &e.release == id)
        };
        ids.sort_by_cached_key(|id| (staged_at(id), id.clone()));
        Ok(ids)
    }

    /// The release directories, in no particular order.
    fn release_dirs(&self) -> Result<Vec<ReleaseId>> {
        let dir = self.releases_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.ctx("list", &dir)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !entry.file_type().ctx("stat", &entry.path())?.is_dir() {
                continue;
            }
            if let Ok(id) = ReleaseId::parse(&name) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// A release is a real directory in `releases/`, finished: a symlink there (to
    /// anywhere) is not one, as `releases()` does not list it, nor is an unfinished one.
    pub fn require_release(&self, id: &ReleaseId) -> Result<()> {
        let real_dir = std::fs::symlink_metadata(self.release(id)).is_ok_and(|m| m.is_dir());
        if real_dir && !self.is_unfinished(id) {
            return Ok(());
        }
        Err(Error::NoSuchRelease {
            id: id.to_string(),
            deploy_path: self.root.clone(),
            available: self.releases()?.iter().map(ToString::to_string).collect(),
        })
    }

    /// Reads `current`; `None` when there is none yet. Accepts Capistrano's absolute links.
    pub fn current_link(&self) -> Result<Option<CurrentLink>> {
        let path = self.current();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("stat", path, e)),
        };
        if !meta.file_type().is_symlink() {
            return Err(Error::CurrentNotSymlink(path));
        }
        let target = std::fs::read_link(&path).ctx("read the link", &path)?;
        let release = self.release_of_target(&target);
        Ok(Some(CurrentLink { target, release }))
    }

    pub fn current_release(&self) -> Result<Option<ReleaseId>> {
        Ok(self.current_link()?.and_then(|link| link.release))
    }

    fn release_of_target(&self, target: &Path) -> Option<ReleaseId> {
        let resolved = normalize(&self.root.join(target));
        let rel = resolved.strip_prefix(self.releases_dir()).ok()?;
        let mut parts = rel.components();
        let id = match (parts.next(), parts.next()) {
            (Some(Component::Normal(id)), None) => id.to_str()?,
            _ => return None,
        };
        ReleaseId::parse(id).ok()
    }

    /// The link text `current` should hold for a release: relative, so the deploy path
    /// can be moved or bind-mounted elsewhere and still resolve.
    pub fn current_target(id: &ReleaseId) -> PathBuf {
        Path::new(RELEASES).join(id.as_str())
    }
}

/// Lexical normalization: removes `.` and folds `..` without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_relative_and_absolute_current_links() {
        let dir = tempfile::tempdir().unwrap();
        let deploy = DeployPath::new(dir.path()).unwrap();
        deploy.ensure_layout().unwrap();
        std::fs::create_dir(deploy.releases_dir().join("20240101000000")).unwrap();
        let id = ReleaseId::parse("20240101000000").unwrap();

        std::os::unix::fs::symlink("releases/20240101000000", deploy.current()).unwrap();
        assert_eq!(deploy.current_release().unwrap(), Some(id.clone()));

        std::fs::remove_file(deploy.current()).unwrap();
        std::os::unix::fs::symlink(deploy.release(&id), deploy.current()).unwrap();
        assert_eq!(deploy.current_release().unwrap(), Some(id));

        std::fs::remove_file(deploy.current()).unwrap();
        std::os::unix::fs::symlink("/elsewhere", deploy.current()).unwrap();
        assert_eq!(deploy.current_release().unwrap(), None);
    }

    #[test]
    fn a_current_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let deploy = DeployPath::new(dir.path()).unwrap();
        std::fs::create_dir(deploy.current()).unwrap();
        assert!(matches!(
            deploy.current_link(),
            Err(Error::CurrentNotSymlink(_))
        ));
    }

    #[test]
    fn lists_only_release_directories_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let deploy = DeployPath::new(dir.path()).unwrap();
        deploy.ensure_layout().unwrap();
        for name in ["10", "9", ".staging", "bad name"] {
            std::fs::create_dir(deploy.releases_dir().join(name)).unwrap();
        }
        std::fs::write(deploy.releases_dir().join("11"), "").unwrap();
        let ids: Vec<_> = deploy
            .releases()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["9", "10"]);
    }
}
