//! A git work tree deployed as it is: what git would commit from it (tracked files with
//! their uncommitted changes, untracked files), never what it ignores (`.env`, `vendor/`,
//! `node_modules/` when ignored).

use std::path::{Path, PathBuf};

use cutover_core::history::Source;

use crate::error::Result;
use crate::run::git;

/// How many uncommitted changes a `Source` names; `git_changes_count` has them all.
pub const CHANGES_KEPT: usize = 10;

#[derive(Debug, Clone)]
pub struct WorkTree {
    /// The commit checked out, the branch, the uncommitted changes, who deploys.
    pub source: Source,
    /// Relative to the directory: what git ignores there (a whole directory as one
    /// entry), to be left out of the release.
    pub ignored: Vec<PathBuf>,
}

/// `dir` as a git work tree; `None` when it is not in one (or git is not installed: then
/// it deploys as a plain directory, as it always did).
pub fn work_tree(dir: &Path) -> Result<Option<WorkTree>> {
    let (top, prefix) = match crate::repository_of(dir) {
        Ok(Some(found)) => found,
        Ok(None) | Err(crate::Error::GitMissing(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    // A directory the repository ignores (a build output, `dist/`) is not its content:
    // deploy it whole, as a plain directory.
    if !prefix.as_os_str().is_empty() {
        let check = git(
            &top,
            &[
                std::ffi::OsStr::new("check-ignore"),
                std::ffi::OsStr::new("--quiet"),
                std::ffi::OsStr::new("--"),
                prefix.as_os_str(),
            ],
        )?;
        if check.ok {
            return Ok(None);
        }
    }
    let commit = git(dir, &["rev-parse", "--verify", "--quiet", "HEAD"])?.text();
    let branch = git(dir, &["symbolic-ref", "--short", "--quiet", "HEAD"])?.text();
    // Only what is below `dir` goes into the release, so only that counts as a change.
    let status = git(
        dir,
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "-z",
            "--untracked-files=normal",
            "--",
            ".",
        ],
    )?;
    let changes = if status.ok {
        parse_status(&status.stdout)
    } else {
        Vec::new()
    };
    let ignored = ignored(dir, &top)?;
    let source = Source {
        path: dir.display().to_string(),
        git_author: match &commit {
            Some(commit) => crate::author(dir, commit)?,
            None => None,
        },
        git_commit: commit,
        git_branch: branch,
        git_dirty: !changes.is_empty(),
        git_changes_count: changes.len(),
        git_changes: changes.into_iter().take(CHANGES_KEPT).collect(),
        deployer: crate::deployer(Some(dir), |var| std::env::var(var).ok()),
        ..Source::default()
    };
    Ok(Some(WorkTree { source, ignored }))
}

/// `git status --porcelain -z` as `M app.php`, `?? new.php`, `R new.php` (a rename's
/// second, old path is skipped).
fn parse_status(out: &[u8]) -> Vec<String> {
    let mut changes = Vec::new();
    let mut entries = out.split(|b| *b == 0).filter(|e| !e.is_empty());
    while let Some(entry) = entries.next() {
        if entry.len() < 4 {
            continue;
        }
        let code = String::from_utf8_lossy(&entry[..2]).trim().to_string();
        let path = String::from_utf8_lossy(&entry[3..]).into_owned();
        if matches!(entry[0], b'R' | b'C') {
            entries.next();
        }
        changes.push(format!("{code} {path}"));
    }
    changes
}

/// What git ignores below `dir`, relative to it, in the repository and in every
/// submodule checked out below `dir` (each has its own ignore rules).
fn ignored(dir: &Path, top: &Path) -> Result<Vec<PathBuf>> {
    let mut found = list_ignored(dir)?;
    if !top.join(".gitmodules").exists() {
        return Ok(found);
    }
    let out = git(
        dir,
        &[
            "submodule",
            "foreach",
            "--quiet",
            "--recursive",
            "printf '%s\\0' \"$displaypath\"",
        ],
    )?;
    if !out.ok {
        return Ok(found);
    }
    for sub in out.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let sub = path_of(sub);
        // $displaypath is relative to `dir`; a submodule beside it is not deployed.
        if sub.starts_with("..") || sub.is_absolute() {
            continue;
        }
        found.extend(
            list_ignored(&dir.join(&sub))?
                .into_iter()
                .map(|p| sub.join(p)),
        );
    }
    Ok(found)
}

fn list_ignored(dir: &Path) -> Result<Vec<PathBuf>> {
    let out = git(
        dir,
        &[
            "ls-files",
            "-z",
            "--others",
            "--ignored",
            "--exclude-standard",
            "--directory",
        ],
    )?;
    if !out.ok {
        return Ok(Vec::new());
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| path_of(e.strip_suffix(b"/").unwrap_or(e)))
        .collect())
}

/// Git prints paths as bytes; so are file names here, UTF-8 or not.
fn path_of(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_entries_read_as_short_status() {
        let out = b" M app.php\0?? new.php\0R  to.php\0from.php\0A  added.php\0";
        assert_eq!(
            parse_status(out),
            ["M app.php", "?? new.php", "R to.php", "A added.php"]
        );
    }
}
