//! The deploying machine's side: a tree on disk into a manifest.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use super::{ContentHash, EntryKind, Manifest, ManifestEntry};
use crate::error::{Error, IoContext, Result};
use crate::tree::{link_on_disk, link_stays_inside, walk, Entry, Excludes};

/// Walks `dir` into a manifest. Files whose size, mtime and mode match `known` (the last
/// manifest sent from here) keep its hash instead of being read again.
pub fn scan(dir: &Path, excludes: &Excludes, known: Option<&Manifest>) -> Result<Manifest> {
    let known: HashMap<&str, &ManifestEntry> = known
        .map(|m| m.entries.iter().map(|e| (e.path.as_str(), e)).collect())
        .unwrap_or_default();
    let entries = Mutex::new(Vec::new());
    walk(dir, excludes, &|entry: &Entry<'_>| {
        let path = entry
            .rel
            .to_str()
            .ok_or_else(|| Error::NonUtf8Path(entry.path.to_path_buf()))?
            .to_string();
        // Relative to the directory being listed: no walk down the whole path per file.
        let meta = entry.dir_entry.metadata().ctx("stat", entry.path)?;
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
                } if *s == size && *m == mtime_ns && e.mode == mode => Some(*hash),
                _ => None,
            });
            let hash = match reused {
                Some(hash) => hash,
                None => ContentHash::of_file(entry.path)?,
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
