//! Static assets that outlive their release, so a page rendered by the old release a moment
//! before the switch still gets its CSS, JS and images from the new one.
//!
//! When a release is staged, the static files that the last `keep` releases had of their
//! own in the asset directories, and that the new release lacks, are hard-linked into it
//! (never copied when a link is possible, never replacing a file the release has). A
//! switch or rollback to another release does the same for the release being left. What
//! was carried is recorded in `.cutover/assets/<id>.json`, so a release's own files can be
//! told from carried ones: only own files are carried on, which is what makes a file stop
//! being carried `keep` releases after the last one that had it.
//!
//! Only static files are carried: never anything PHP could execute, and no dotfiles
//! (`.htaccess` and `.user.ini` configure the server and PHP). A script removed from the
//! app stops being served at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::layout::DeployPath;
use crate::release::ReleaseId;

/// The build output directories of the usual PHP frameworks: Vite and Encore
/// (`public/build`), Mix (`public/css`, `public/js`), AssetMapper (`public/assets`),
/// Symfony bundles. Not all of `public/`: a file deleted from there on purpose (a leaked
/// dump, an old download) must stop being served.
pub const DEFAULT_DIRS: [&str; 5] = [
    "public/build",
    "public/assets",
    "public/bundles",
    "public/css",
    "public/js",
];
pub const DEFAULT_KEEP: usize = 3;

/// Extensions PHP or the web server may execute.
const SCRIPTS: [&str; 12] = [
    "php", "phtml", "phar", "inc", "php3", "php4", "php5", "php7", "php8", "phps", "pht", "cgi",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetOptions {
    /// Directories relative to the release root.
    pub dirs: Vec<String>,
    /// How many earlier releases' assets a new release keeps reachable.
    pub keep: usize,
}

impl AssetOptions {
    pub fn none() -> Self {
        AssetOptions {
            dirs: Vec::new(),
            keep: 0,
        }
    }

    fn active(&self) -> bool {
        !self.dirs.is_empty() && self.keep > 0
    }
}

impl Default for AssetOptions {
    fn default() -> Self {
        AssetOptions {
            dirs: DEFAULT_DIRS.iter().map(|d| d.to_string()).collect(),
            keep: DEFAULT_KEEP,
        }
    }
}

/// What a carry did, for the deploy's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarryReport {
    /// Files linked in from earlier releases.
    pub carried: u64,
    /// Asset files whose name stayed while their content changed since the previous
    /// release: a page of the old release gets the new content under the old URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_in_place: Vec<String>,
}

/// `.cutover/assets/<id>.json`: the files of a release that were carried in, and from where.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    carried: BTreeMap<String, ReleaseId>,
}

fn record_path(deploy: &DeployPath, id: &ReleaseId) -> PathBuf {
    deploy
        .state_dir()
        .join("assets")
        .join(format!("{}.json", id.as_str()))
}

fn load_record(deploy: &DeployPath, id: &ReleaseId) -> Record {
    std::fs::read(record_path(deploy, id))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn store_record(deploy: &DeployPath, id: &ReleaseId, record: &Record) -> Result<()> {
    let path = record_path(deploy, id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx("create", dir)?;
    }
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp).ctx("create", &temp)?;
    std::io::Write::write_all(&mut file, &serde_json::to_vec(record).unwrap_or_default())
        .ctx("write", &temp)?;
    // The bytes before the name: a record lost or empty after a crash would make carried
    // files look like the release's own, carried on forever.
    file.sync_data().ctx("fsync", &temp)?;
    std::fs::rename(&temp, &path).ctx("write", &path)
}

/// Forgets what was carried into a release that is being removed.
pub fn forget(deploy: &DeployPath, id: &ReleaseId) {
    let _ = std::fs::remove_file(record_path(deploy, id));
}

/// Whether a file may be carried: not executable by PHP or the server, not a dotfile.
pub fn is_static(rel: &Path) -> bool {
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if rel
        .components()
        .any(|c| matches!(c, Component::Normal(p) if p.to_string_lossy().starts_with('.')))
    {
        return false;
    }
    // Any script extension anywhere in the name: Apache's AddHandler also runs `x.php.png`.
    !name
        .split('.')
        .skip(1)
        .any(|ext| SCRIPTS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// Whether a file name carries a content hash (`app.3f9a1c.css`, `app-BQ7dX2kP.js`): a
/// segment of 6 or more letters and digits with at least one digit, after the first.
pub fn looks_hashed(rel: &Path) -> bool {
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.split(['.', '-', '_']).skip(1).any(|part| {
        part.len() >= 6
            && part.chars().all(|c| c.is_ascii_alphanumeric())
            && part.chars().any(|c| c.is_ascii_digit())
    })
}

/// The static files under the asset dirs of `root`, relative to it.
fn static_files(root: &Path, dirs: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in dirs {
        let rel = PathBuf::from(dir.trim_matches('/'));
        let start = root.join(&rel);
        // A dir that is a link (to shared/, say) holds no release's own files.
        match std::fs::symlink_metadata(&start) {
            Ok(meta) if meta.is_dir() => {}
            _ => continue,
        }
        let mut stack = vec![rel];
        while let Some(dir_rel) = stack.pop() {
            let path = root.join(&dir_rel);
            for entry in std::fs::read_dir(&path).ctx("list", &path)? {
                let entry = entry.ctx("list", &path)?;
                let child = dir_rel.join(entry.file_name());
                let kind = entry.file_type().ctx("stat", &entry.path())?;
                if kind.is_dir() {
                    stack.push(child);
                } else if kind.is_file() && is_static(&child) {
                    files.push(child);
                }
            }
        }
    }
    Ok(files)
}

/// The static asset files a release has of its own (not carried into it).
fn own_files(deploy: &DeployPath, id: &ReleaseId, dirs: &[String]) -> Result<Vec<PathBuf>> {
    let record = load_record(deploy, id);
    Ok(static_files(&deploy.release(id), dirs)?
        .into_iter()
        .filter(|rel| {
            !record
                .carried
                .contains_key(&rel.to_string_lossy().into_owned())
        })
        .collect())
}

/// Links into `target_dir` (the tree of release `target`: its staging directory, or the
/// release itself before a switch to it) the own static files of `sources` (newest first)
/// that it lacks. Adds files only; never replaces or changes one.
pub fn carry_into(
    deploy: &DeployPath,
    target: &ReleaseId,
    target_dir: &Path,
    sources: &[ReleaseId],
    opts: &AssetOptions,
) -> Result<CarryReport> {
    let mut report = CarryReport::default();
    if !opts.active() {
        return Ok(report);
    }
    let mut record = load_record(deploy, target);
    // What the target has under the asset dirs, listed once: most candidates are there
    // already and then cost no system call.
    let mut present = entries_under(target_dir, &opts.dirs)?;
    let mut parents: HashMap<PathBuf, bool> = HashMap::new();
    for source in sources.iter().filter(|s| *s != target) {
        let source_dir = deploy.release(source);
        if !source_dir.is_dir() {
            continue;
        }
        for rel in own_files(deploy, source, &opts.dirs)? {
            if present.contains(&rel) {
                continue;
            }
            let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            let usable = match parents.get(&parent) {
                Some(usable) => *usable,
                None => {
                    let usable = parents_are_dirs(target_dir, &rel)?;
                    if usable {
                        let dir = target_dir.join(&parent);
                        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
                    }
                    parents.insert(parent.clone(), usable);
                    usable
                }
            };
            if !usable {
                continue;
            }
            let (from, dest) = (source_dir.join(&rel), target_dir.join(&rel));
            if std::fs::hard_link(&from, &dest).is_err() {
                let meta = std::fs::metadata(&from).ctx("stat", &from)?;
                crate::release_tree::copy_file(&from, &meta, &dest)?;
            }
            record
                .carried
                .insert(rel.to_string_lossy().into_owned(), source.clone());
            present.insert(rel);
            report.carried += 1;
        }
    }
    if report.carried > 0 {
        // The new links need no fsync of their own: like the rest of a staged tree they
        // are journaled before the later rename of `current` (see stage::flush).
        store_record(deploy, target, &record)?;
    }
    Ok(report)
}

/// Every entry (of any kind) under the asset dirs of `root`, relative to it; links to
/// directories are not followed.
fn entries_under(root: &Path, dirs: &[String]) -> Result<HashSet<PathBuf>> {
    let mut seen = HashSet::new();
    for dir in dirs {
        let mut stack = vec![PathBuf::from(dir.trim_matches('/'))];
        while let Some(dir_rel) = stack.pop() {
            let path = root.join(&dir_rel);
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // The asset dir is a file in this release.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                    continue
                }
                Err(e) => return Err(crate::Error::io("list", path, e)),
            };
            for entry in entries {
                let entry = entry.ctx("list", &path)?;
                let child = dir_rel.join(entry.file_name());
                if entry.file_type().ctx("stat", &entry.path())?.is_dir() {
                    stack.push(child.clone());
                }
                seen.insert(child);
            }
        }
    }
    Ok(seen)
}

/// False when a component of `rel`'s parent inside `root` is a link or a file: a carried
/// file must not land in `shared/` through a link, nor replace a file with a directory.
fn parents_are_dirs(root: &Path, rel: &Path) -> Result<bool> {
    let mut path = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(true);
    };
    for part in parent.components() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(crate::Error::io("stat", path, e)),
        }
    }
    Ok(true)
}

/// Asset files of `tree` that `previous` (its own files) has under the same name with
/// other content, and whose name carries no content hash.
pub fn changed_in_place(
    deploy: &DeployPath,
    tree: &Path,
    previous: &ReleaseId,
    opts: &AssetOptions,
) -> Result<Vec<String>> {
    if !opts.active() {
        return Ok(Vec::new());
    }
    let old_dir = deploy.release(previous);
    let mut changed = Vec::new();
    for rel in own_files(deploy, previous, &opts.dirs)? {
        if looks_hashed(&rel) {
            continue;
        }
        let (old, new) = (old_dir.join(&rel), tree.join(&rel));
        let Ok(new_meta) = std::fs::symlink_metadata(&new) else {
            continue;
        };
        let old_meta = std::fs::metadata(&old).ctx("stat", &old)?;
        if !new_meta.is_file() || same_file(&old, &old_meta, &new, &new_meta)? {
            continue;
        }
        changed.push(rel.to_string_lossy().into_owned());
    }
    changed.sort();
    Ok(changed)
}

fn same_file(
    a: &Path,
    a_meta: &std::fs::Metadata,
    b: &Path,
    b_meta: &std::fs::Metadata,
) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    if a_meta.ino() == b_meta.ino() && a_meta.dev() == b_meta.dev() {
        return Ok(true);
    }
    if a_meta.len() != b_meta.len() {
        return Ok(false);
    }
    Ok(std::fs::read(a).ctx("read", a)? == std::fs::read(b).ctx("read", b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_dotfiles_are_never_static() {
        for path in [
            "public/build/app.php",
            "public/x.PHP",
            "public/a.phtml",
            "public/lib.inc",
            "public/evil.php.png",
            "public/.htaccess",
            "public/.user.ini",
            "public/.well-known/x.txt",
            "public/tool.phar",
        ] {
            assert!(!is_static(Path::new(path)), "{path}");
        }
        for path in [
            "public/build/app.3f9a1c2b.css",
            "public/img/logo.png",
            "public/js/app.js",
        ] {
            assert!(is_static(Path::new(path)), "{path}");
        }
    }

    #[test]
    fn hashed_names_are_recognised() {
        for path in [
            "app.3f9a1c2b.css",
            "app-BQ7dX2kP.js",
            "chunk.0a1b2c3d4e.js",
            "app.3f9a1c.js",
        ] {
            assert!(looks_hashed(Path::new(path)), "{path}");
        }
        for path in [
            "app.css",
            "vendor.bundle.js",
            "styles-main.css",
            "jquery.min.js",
        ] {
            assert!(!looks_hashed(Path::new(path)), "{path}");
        }
    }
}
