//! Replacing `current` with one rename(2).
//!
//! `ln -sfn` in older coreutils and busybox unlinks `current` and then creates it again,
//! so for a moment there is no `current` and requests get 404 or "No input file". A rename
//! over an existing name is atomic: every lookup sees either the old link or the new one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::layout::DeployPath;
use crate::release::ReleaseId;

/// Points `current` at `releases/<id>` atomically and makes that durable.
pub fn switch_current(deploy: &DeployPath, id: &ReleaseId) -> Result<()> {
    deploy.require_release(id)?;
    // Refuse before touching anything: rename over a real directory would fail half-way
    // through a deploy, and moving a directory aside is not ours to decide.
    deploy.current_link()?;
    replace_symlink(
        &deploy.current(),
        &DeployPath::current_target(id),
        &deploy.state_dir(),
    )
}

/// Creates `link -> target` via a temporary name in `scratch` (same file system) and a
/// rename over `link`, then fsyncs the link's directory so the switch survives a crash.
pub fn replace_symlink(link: &Path, target: &Path, scratch: &Path) -> Result<()> {
    let temp = temp_link_name(scratch);
    std::os::unix::fs::symlink(target, &temp).ctx("create the temporary link", &temp)?;
    if let Err(e) = std::fs::rename(&temp, link) {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::io("rename the new link over", link, e));
    }
    let parent = link.parent().unwrap_or(Path::new("."));
    fsync_dir(parent)
}

fn temp_link_name(scratch: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    scratch.join(format!("current.{}.{seq}.tmp", std::process::id()))
}

/// Temporary links a killed switch may have left behind.
pub(crate) fn is_temp_link_name(name: &str) -> bool {
    name.starts_with("current.") && name.ends_with(".tmp")
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    let file = std::fs::File::open(dir).ctx("open", dir)?;
    file.sync_all().ctx("fsync", dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_between_releases_with_a_relative_link() {
        let dir = tempfile::tempdir().unwrap();
        let deploy = DeployPath::new(dir.path()).unwrap();
        deploy.ensure_layout().unwrap();
        let a = ReleaseId::parse("1").unwrap();
        let b = ReleaseId::parse("2").unwrap();
        std::fs::create_dir(deploy.release(&a)).unwrap();
        std::fs::create_dir(deploy.release(&b)).unwrap();

        switch_current(&deploy, &a).unwrap();
        assert_eq!(
            std::fs::read_link(deploy.current()).unwrap(),
            Path::new("releases/1")
        );
        switch_current(&deploy, &b).unwrap();
        assert_eq!(
            std::fs::read_link(deploy.current()).unwrap(),
            Path::new("releases/2")
        );
        let leftovers: Vec<_> = std::fs::read_dir(deploy.state_dir()).unwrap().collect();
        assert!(
            leftovers.is_empty(),
            "temporary links left behind: {leftovers:?}"
        );
    }

    #[test]
    fn refuses_an_unknown_release_and_keeps_current() {
        let dir = tempfile::tempdir().unwrap();
        let deploy = DeployPath::new(dir.path()).unwrap();
        deploy.ensure_layout().unwrap();
        let a = ReleaseId::parse("1").unwrap();
        std::fs::create_dir(deploy.release(&a)).unwrap();
        switch_current(&deploy, &a).unwrap();
        let missing = ReleaseId::parse("9").unwrap();
        assert!(matches!(
            switch_current(&deploy, &missing),
            Err(Error::NoSuchRelease { .. })
        ));
        assert_eq!(
            std::fs::read_link(deploy.current()).unwrap(),
            Path::new("releases/1")
        );
    }
}
