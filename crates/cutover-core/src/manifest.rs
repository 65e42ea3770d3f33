//! What a release contains, as a list a remote host can act on: path, mode, size, mtime and
//! content hash of every file, every directory and every symlink.
//!
//! A remote deploy sends the manifest first; the host links every file its previous release
//! already has (same bytes by hash, even under another name) and asks only for the rest.
//! Each host keeps the manifest of every release it staged, so the next deploy can send only
//! what changed against it (a [`Delta`]) and the deploying machine can skip hashing files
//! whose size and mtime did not change.

use std::collections::HashMap;
use std::fs::{File, FileTimes, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::stage::StageStats;
use crate::tree::{link_on_disk, link_stays_inside, walk, Entry, Excludes};

/// One entry; paths are relative, `/`-separated, UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub mode: u32,
    #[serde(flatten)]
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
        mtime_ns: i64,
        /// blake3, hex.
        hash: String,
    },
    Symlink {
        target: String,
    },
}

/// Entries sorted by path, so a directory comes before its children and two manifests of
/// the same tree serialize to the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

/// The changes from one manifest to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Digest of the manifest this applies to.
    pub base: String,
    /// Digest of the manifest it produces.
    pub result: String,
    /// New or changed entries.
    pub upsert: Vec<ManifestEntry>,
    pub remove: Vec<String>,
}

impl Manifest {
    /// blake3 of the canonical JSON, hex: names a manifest on both ends.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// Files only, with their sizes: what a transfer would move if nothing could be linked.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    fn by_path(&self) -> HashMap<&str, &ManifestEntry> {
        self.entries.iter().map(|e| (e.path.as_str(), e)).collect()
    }

    fn sort(&mut self) {
        self.entries.sort_by(|a, b| path_order(&a.path, &b.path));
    }

    pub fn delta_from(&self, base: &Manifest) -> Delta {
        let old = base.by_path();
        let new = self.by_path();
        Delta {
            base: base.digest(),
            result: self.digest(),
            upsert: self
                .entries
                .iter()
                .filter(|e| old.get(e.path.as_str()) != Some(e))
                .cloned()
                .collect(),
            remove: base
                .entries
                .iter()
                .filter(|e| !new.contains_key(e.path.as_str()))
                .map(|e| e.path.clone())
                .collect(),
        }
    }

    /// Rebuilds the manifest a delta describes; fails unless the result is exactly the one
    /// the sender had (same digest).
    pub fn apply(&self, delta: &Delta) -> Result<Manifest> {
        if self.digest() != delta.base {
            return Err(Error::BadManifest(
                "the delta was made against another manifest".into(),
            ));
        }
        let mut entries: HashMap<String, ManifestEntry> = self
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect();
        for path in &delta.remove {
            entries.remove(path);
        }
        for entry in &delta.upsert {
            entries.insert(entry.path.clone(), entry.clone());
        }
        let mut result = Manifest {
            entries: entries.into_values().collect(),
        };
        result.sort();
        if result.digest() != delta.result {
            return Err(Error::BadManifest(
                "the delta does not produce the manifest it names".into(),
            ));
        }
        Ok(result)
    }

    /// Refuses anything that could write outside the staging directory or is not a tree:
    /// absolute paths, `..`, links leaving the release, entries whose parent is not a
    /// directory listed before them, duplicates.
    pub fn validate(&self) -> Result<()> {
        // Links are judged as the kernel will resolve them: through the release's own links.
        let links: HashMap<&str, &str> = self
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Symlink { target } => Some((e.path.as_str(), target.as_str())),
                _ => None,
            })
            .collect();
        let link_of = |p: &Path| links.get(p.to_str()?).map(PathBuf::from);
        let mut kinds: HashMap<&str, bool> = HashMap::new();
        let mut last: Option<&str> = None;
        for entry in &self.entries {
            let bad = |why: &str| Err(Error::BadManifest(format!("{:?}: {why}", entry.path)));
            let path = Path::new(&entry.path);
            if entry.path.is_empty()
                || entry.path.contains('\0')
                || entry.path.ends_with('/')
                || !path.components().all(|c| matches!(c, Component::Normal(_)))
            {
                return bad("not a plain relative path");
            }
            if let Some(prev) = last {
                if path_order(prev, &entry.path) != std::cmp::Ordering::Less {
                    return bad("out of order or listed twice");
                }
            }
            last = Some(&entry.path);
            if let Some((parent, _)) = entry.path.rsplit_once('/') {
                if kinds.get(parent) != Some(&true) {
                    return bad("its directory is not listed before it");
                }
            }
            if let EntryKind::Symlink { target } = &entry.kind {
                if !link_stays_inside(path, Path::new(target), &link_of) {
                    return bad("the link points outside the release");
                }
            }
            if let EntryKind::File { hash, .. } = &entry.kind {
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return bad("not a blake3 hash");
                }
            }
            if entry.mode & !0o7777 != 0 {
                return bad("mode has bits beyond 0o7777");
            }
            kinds.insert(&entry.path, matches!(entry.kind, EntryKind::Dir));
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Option<Manifest>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Written beside the file then renamed: a torn manifest would only cost a rehash, but
    /// a reader should never see half of one.
    pub fn store(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ctx("create", dir)?;
        }
        let temp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        std::fs::write(&temp, bytes).ctx("write", &temp)?;
        std::fs::rename(&temp, path).ctx("write", path)
    }
}

/// Orders paths so that a directory comes right before its own children: compare
/// component by component (plain string order would put `a.txt` between `a` and `a/b`).
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Walks `dir` into a manifest. Files whose size, mtime and mode match `known` (the last
/// manifest sent from here) keep its hash instead of being read again.
pub fn scan(dir: &Path, excludes: &Excludes, known: Option<&Manifest>) -> Result<Manifest> {
    let known = known.map(Manifest::by_path).unwrap_or_default();
    let entries = Mutex::new(Vec::new());
    walk(dir, excludes, &|entry: &Entry<'_>| {
        let path = entry
            .rel
            .to_str()
            .ok_or_else(|| Error::NonUtf8Path(entry.path.to_path_buf()))?
            .to_string();
        let meta = std::fs::symlink_metadata(entry.path).ctx("stat", entry.path)?;
        let mode = meta.mode() & 0o7777;
        let kind = if entry.file_type.is_dir() {
            EntryKind::Dir
        } else if entry.file_type.is_symlink() {
            let target = std::fs::read_link(entry.path).ctx("read the link", entry.path)?;
            if !link_stays_inside(entry.rel, &target, &link_on_disk(dir)) {
                return Err(Error::SymlinkOutside {
                    link: entry.path.to_path_buf(),
                    target,
                });
            }
            let target = target
                .to_str()
                .ok_or_else(|| Error::NonUtf8Path(entry.path.to_path_buf()))?
                .to_string();
            EntryKind::Symlink { target }
        } else if entry.file_type.is_file() {
            let size = meta.len();
            let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
            let reused = known.get(path.as_str()).and_then(|e| match &e.kind {
                EntryKind::File {
                    size: s,
                    mtime_ns: m,
                    hash,
                } if *s == size && *m == mtime_ns && e.mode == mode => Some(hash.clone()),
                _ => None,
            });
            let hash = match reused {
                Some(hash) => hash,
                None => hash_file(entry.path)?,
            };
            EntryKind::File {
                size,
                mtime_ns,
                hash,
            }
        } else {
            return Err(Error::UnsupportedFileType(entry.path.to_path_buf()));
        };
        if let Ok(mut entries) = entries.lock() {
            entries.push(ManifestEntry { path, mode, kind });
        }
        Ok(entry.file_type.is_dir())
    })?;
    let mut manifest = Manifest {
        entries: entries.into_inner().unwrap_or_default(),
    };
    manifest.sort();
    Ok(manifest)
}

pub fn hash_file(path: &Path) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path).ctx("open", path)?;
    hasher.update_reader(file).ctx("read", path)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// How each file of a new manifest will be filled on this host.
#[derive(Debug, Default)]
pub struct Plan {
    /// Manifest index -> a file of the previous release with the same bytes and mode.
    pub reuse: HashMap<usize, PathBuf>,
    /// Manifest indexes whose bytes must be sent, in manifest order.
    pub need: Vec<usize>,
}

impl Plan {
    /// Every file sent: a host with nothing to link from.
    pub fn everything(manifest: &Manifest) -> Plan {
        let need = manifest
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, EntryKind::File { .. }))
            .map(|(i, _)| i)
            .collect();
        Plan {
            reuse: HashMap::new(),
            need,
        }
    }

    /// What staging by this plan would count: files not sent are linked.
    pub fn stats(&self, manifest: &Manifest) -> crate::stage::StageStats {
        let mut stats = crate::stage::StageStats::default();
        let needed: std::collections::HashSet<usize> = self.need.iter().copied().collect();
        for (index, entry) in manifest.entries.iter().enumerate() {
            match &entry.kind {
                EntryKind::File { size, .. } => {
                    stats.files += 1;
                    stats.bytes_total += size;
                    if needed.contains(&index) {
                        stats.copied += 1;
                        stats.bytes_copied += size;
                    } else {
                        stats.linked += 1;
                    }
                }
                EntryKind::Dir => stats.dirs += 1,
                EntryKind::Symlink { .. } => stats.symlinks += 1,
            }
        }
        stats
    }
}

/// Decides what the previous release already has. Hashes from `previous_manifest` are
/// trusted only for files whose size, mtime and mode are still what it recorded; other
/// candidates are hashed again.
pub fn plan(
    manifest: &Manifest,
    previous: Option<&Path>,
    previous_manifest: Option<&Manifest>,
) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut have: HashMap<(&str, u32), PathBuf> = HashMap::new();
    if let (Some(dir), Some(old)) = (previous, previous_manifest) {
        for entry in &old.entries {
            let EntryKind::File {
                size,
                mtime_ns,
                hash,
            } = &entry.kind
            else {
                continue;
            };
            let path = dir.join(&entry.path);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let still = meta.is_file()
                && meta.len() == *size
                && meta.mtime() * 1_000_000_000 + meta.mtime_nsec() == *mtime_ns
                && meta.mode() & 0o7777 == entry.mode;
            if still {
                have.insert((hash.as_str(), entry.mode), path);
            }
        }
    }
    for (index, entry) in manifest.entries.iter().enumerate() {
        let EntryKind::File { size, hash, .. } = &entry.kind else {
            continue;
        };
        if let Some(path) = have.get(&(hash.as_str(), entry.mode)) {
            plan.reuse.insert(index, path.clone());
            continue;
        }
        // No record for it: the same path in the previous release may still hold it.
        if let Some(dir) = previous {
            let candidate = dir.join(&entry.path);
            if let Ok(meta) = std::fs::symlink_metadata(&candidate) {
                if meta.is_file()
                    && meta.len() == *size
                    && meta.mode() & 0o7777 == entry.mode
                    && hash_file(&candidate)? == *hash
                {
                    plan.reuse.insert(index, candidate);
                    continue;
                }
            }
        }
        plan.need.push(index);
    }
    Ok(plan)
}

/// Builds the tree of `manifest` in `dest` (which must exist): directories and links first,
/// reused files as hard links (or copies when `link` is false: commands will run on the
/// tree), then the needed files read in order from `content`, each checked against its
/// hash. Returns the counts and the files written (for `stage::flush`).
pub fn materialize(
    manifest: &Manifest,
    plan: &Plan,
    dest: &Path,
    link: bool,
    content: &mut dyn Read,
) -> Result<(StageStats, Vec<PathBuf>)> {
    use rayon::prelude::*;
    manifest.validate()?;
    let mut stats = StageStats::default();
    let mut dir_modes = Vec::new();
    // Directories first, in order (a parent before its children), then everything else
    // in parallel: link(2) in one directory serializes on its inode, spread across many
    // it does not.
    for entry in &manifest.entries {
        if matches!(entry.kind, EntryKind::Dir) {
            let path = dest.join(&entry.path);
            std::fs::create_dir(&path).ctx("create", &path)?;
            dir_modes.push((path, entry.mode));
            stats.dirs += 1;
        }
    }
    let placed: Vec<Placed> = manifest
        .entries
        .par_iter()
        .enumerate()
        .map(|(index, entry)| {
            let path = dest.join(&entry.path);
            match &entry.kind {
                EntryKind::Dir => Ok(Placed::Nothing),
                EntryKind::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &path).ctx("create the link", &path)?;
                    Ok(Placed::Symlink)
                }
                EntryKind::File { size, mtime_ns, .. } => {
                    let Some(from) = plan.reuse.get(&index) else {
                        return Ok(Placed::Later(*size));
                    };
                    if link && std::fs::hard_link(from, &path).is_ok() {
                        return Ok(Placed::Linked(*size));
                    }
                    let meta = std::fs::metadata(from).ctx("stat", from)?;
                    crate::stage::copy_file(from, &meta, &path)?;
                    set_mtime(&path, *mtime_ns)?;
                    Ok(Placed::Copied(*size, path))
                }
            }
        })
        .collect::<Result<_>>()?;
    let mut written = Vec::new();
    for outcome in placed {
        match outcome {
            Placed::Nothing => {}
            Placed::Symlink => stats.symlinks += 1,
            Placed::Later(size) => {
                stats.files += 1;
                stats.bytes_total += size;
            }
            Placed::Linked(size) => {
                stats.files += 1;
                stats.bytes_total += size;
                stats.linked += 1;
            }
            Placed::Copied(size, path) => {
                stats.files += 1;
                stats.bytes_total += size;
                stats.copied += 1;
                stats.bytes_copied += size;
                written.push(path);
            }
        }
    }
    for &index in &plan.need {
        let entry = &manifest.entries[index];
        let EntryKind::File {
            size,
            mtime_ns,
            hash,
        } = &entry.kind
        else {
            return Err(Error::BadManifest(format!(
                "{:?} is not a file but was asked for",
                entry.path
            )));
        };
        let path = dest.join(&entry.path);
        receive_file(content, &path, *size, hash, entry.mode)?;
        set_mtime(&path, *mtime_ns)?;
        stats.copied += 1;
        stats.bytes_copied += size;
        written.push(path);
    }
    for (dir, mode) in dir_modes.into_iter().rev() {
        std::fs::set_permissions(&dir, Permissions::from_mode(mode))
            .ctx("set the mode of", &dir)?;
    }
    Ok((stats, written))
}

/// What happened to one manifest entry before the content stream is read.
enum Placed {
    Nothing,
    Symlink,
    /// A file whose bytes come from the stream.
    Later(u64),
    Linked(u64),
    Copied(u64, PathBuf),
}

fn receive_file(
    content: &mut dyn Read,
    path: &Path,
    size: u64,
    hash: &str,
    mode: u32,
) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .ctx("create", path)?;
    let mut hasher = blake3::Hasher::new();
    let mut left = size;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = content.read(&mut buf[..want]).ctx("receive", path)?;
        if n == 0 {
            return Err(Error::io(
                "receive",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the content stream ended {left} bytes short"),
                ),
            ));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).ctx("write", path)?;
        left -= n as u64;
    }
    if hasher.finalize().to_hex().as_str() != hash {
        return Err(Error::ContentMismatch(path.to_path_buf()));
    }
    file.set_permissions(Permissions::from_mode(mode))
        .ctx("set the mode of", path)
}

fn set_mtime(path: &Path, mtime_ns: i64) -> Result<()> {
    let when = if mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(mtime_ns.unsigned_abs())
    };
    let file = File::options().write(true).open(path);
    // A read-only file (mode 0444) cannot be opened for writing by a non-root owner;
    // its mtime then stays the receive time, which only costs a rehash next time.
    match file {
        Ok(file) => file
            .set_times(FileTimes::new().set_modified(when))
            .ctx("set the times of", path),
        Err(_) => Ok(()),
    }
}

/// The digest of a stored manifest without parsing it: the file holds exactly the
/// canonical JSON the digest is taken over.
pub fn stored_digest(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(blake3::hash(&bytes).to_hex().to_string())
}

/// Where a host keeps the manifest of each release it staged.
pub fn stored_path(state_dir: &Path, release: &str) -> PathBuf {
    state_dir.join("manifests").join(format!("{release}.json"))
}

/// Seconds since the epoch in microseconds, for switch times reported across hosts.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn a_delta_rebuilds_the_manifest_and_only_that_one() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        tree(
            &src,
            &[("a.php", "a"), ("lib/b.php", "b"), ("lib/c.php", "c")],
        );
        let old = scan(&src, &Excludes::default(), None).unwrap();
        std::fs::write(src.join("lib/b.php"), "b2").unwrap();
        std::fs::remove_file(src.join("lib/c.php")).unwrap();
        tree(&src, &[("a.txt", "new")]);
        let new = scan(&src, &Excludes::default(), Some(&old)).unwrap();
        let delta = new.delta_from(&old);
        assert_eq!(delta.remove, vec!["lib/c.php".to_string()]);
        let paths: Vec<_> = delta.upsert.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"a.txt") && paths.contains(&"lib/b.php"));
        assert!(!paths.contains(&"a.php"), "{paths:?}");
        assert_eq!(old.apply(&delta).unwrap(), new);
        assert!(new.apply(&delta).is_err());
        new.validate().unwrap();
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let file = |path: &str| ManifestEntry {
            path: path.into(),
            mode: 0o644,
            kind: EntryKind::File {
                size: 1,
                mtime_ns: 0,
                hash: "0".repeat(64),
            },
        };
        let dir = |path: &str| ManifestEntry {
            path: path.into(),
            mode: 0o755,
            kind: EntryKind::Dir,
        };
        let link = |path: &str, target: &str| ManifestEntry {
            path: path.into(),
            mode: 0o777,
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        };
        let cases = [
            vec![file("../escape")],
            vec![file("/etc/passwd")],
            vec![dir("a"), file("a/../../x")],
            vec![file("a/b")],
            vec![link("l", "../../etc")],
            vec![link("l", "/etc")],
            vec![file("x"), file("x")],
            vec![file("b"), file("a")],
            vec![file("a"), file("a/b")],
        ];
        for entries in cases {
            let manifest = Manifest {
                entries: entries.clone(),
            };
            assert!(manifest.validate().is_err(), "{entries:?}");
        }
        let fine = Manifest {
            entries: vec![dir("a"), file("a/b"), link("a/l", "b"), file("a.txt")],
        };
        fine.validate().unwrap();
    }

    #[test]
    fn materialize_links_what_the_previous_release_has_and_checks_what_it_receives() {
        let dir = tempfile::tempdir().unwrap();
        let (src, prev, next) = (
            dir.path().join("src"),
            dir.path().join("prev"),
            dir.path().join("next"),
        );
        tree(&src, &[("a.php", "a"), ("lib/b.php", "b")]);
        let first = scan(&src, &Excludes::default(), None).unwrap();
        std::fs::create_dir(&prev).unwrap();
        let all = plan(&first, None, None).unwrap();
        assert_eq!(all.need.len(), 2);
        let mut bytes: &[u8] = b"ab";
        materialize(&first, &all, &prev, true, &mut bytes).unwrap();

        // Renamed content is found by hash; new content is asked for.
        std::fs::rename(src.join("a.php"), src.join("moved.php")).unwrap();
        tree(&src, &[("lib/new.php", "new")]);
        let second = scan(&src, &Excludes::default(), None).unwrap();
        let plan2 = plan(&second, Some(&prev), Some(&first)).unwrap();
        assert_eq!(plan2.need.len(), 1);
        std::fs::create_dir(&next).unwrap();
        let mut bytes: &[u8] = b"new";
        let (stats, written) = materialize(&second, &plan2, &next, true, &mut bytes).unwrap();
        assert_eq!((stats.linked, stats.copied), (2, 1));
        assert_eq!(written, vec![next.join("lib/new.php")]);
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&prev.join("a.php")), ino(&next.join("moved.php")));

        // Bytes that do not match the hash are refused.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let mut wrong: &[u8] = b"NEW";
        let err = materialize(&second, &plan2, &other, true, &mut wrong).unwrap_err();
        assert!(matches!(err, Error::ContentMismatch(_)), "{err}");
    }
}
