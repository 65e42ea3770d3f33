//! Removing a directory without ever leaving half of it at its old name: rename it into
//! `.cutover/trash` first (atomic), then delete. A crash mid-delete leaves debris in the
//! trash, which the next run empties, never a half-release under `releases/`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};
use crate::layout::DeployPath;

pub fn discard(deploy: &DeployPath, dir: &Path) -> Result<()> {
    let trash = deploy.trash_dir();
    std::fs::create_dir_all(&trash).ctx("create", &trash)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let parked = trash.join(format!("{name}.{nanos}"));
    std::fs::rename(dir, &parked).ctx("move to the trash", dir)?;
    // Debris is harmless and retried next time; a failure here must not fail a deploy
    // that has already switched.
    let _ = remove_tree(&parked);
    Ok(())
}

/// Empties the trash; what cannot be removed now stays for the next run.
pub fn empty(deploy: &DeployPath) {
    if let Ok(entries) = std::fs::read_dir(deploy.trash_dir()) {
        for entry in entries.flatten() {
            let _ = remove_tree(&entry.path());
        }
    }
}

fn remove_tree(path: &Path) -> std::io::Result<()> {
    // A release may contain read-only directories; make them writable so removal works.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.is_dir() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
            for entry in std::fs::read_dir(path)?.flatten() {
                remove_tree(&entry.path())?;
            }
            return std::fs::remove_dir(path);
        }
    }
    std::fs::remove_file(path)
}
