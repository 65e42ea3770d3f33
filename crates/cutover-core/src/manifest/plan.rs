//! The host's side, before any byte is asked for: which files of a new manifest the
//! previous release already has.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, CWD};

use super::{parent_and_name, ContentHash, EntryKind, Manifest};
use crate::error::Result;
use crate::release_tree::{open_dir, stat_mtime_ns};
use crate::stage::StageStats;

/// How each file of a new manifest will be filled on this host.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The release reused files are linked from.
    pub previous: Option<PathBuf>,
    /// Per manifest index: a file of `previous` (relative path) with the same bytes and mode.
    pub reuse: Vec<Option<&'a str>>,
    /// Manifest indexes whose bytes must be sent, in manifest order.
    pub need: Vec<usize>,
}

impl Plan<'_> {
    /// Every file sent: a host with nothing to link from.
    pub fn everything(manifest: &Manifest) -> Plan<'static> {
        let need = manifest
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, EntryKind::File { .. }))
            .map(|(i, _)| i)
            .collect();
        Plan {
            previous: None,
            reuse: vec![None; manifest.entries.len()],
            need,
        }
    }

    /// What staging by this plan would count: files not sent are linked.
    pub fn stats(&self, manifest: &Manifest) -> StageStats {
        let mut stats = StageStats::default();
        for (index, entry) in manifest.entries.iter().enumerate() {
            match &entry.kind {
                EntryKind::File { size, .. } => {
                    stats.files += 1;
                    stats.bytes_total += size;
                    if self.reuse.get(index).is_some_and(Option::is_some) {
                        stats.linked += 1;
                    } else {
                        stats.copied += 1;
                        stats.bytes_copied += size;
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
pub fn plan<'a>(
    manifest: &'a Manifest,
    previous: Option<&Path>,
    previous_manifest: Option<&'a Manifest>,
) -> Result<Plan<'a>> {
    let mut plan = Plan {
        previous: previous.map(Path::to_path_buf),
        reuse: vec![None; manifest.entries.len()],
        need: Vec::new(),
    };
    let mut have: HashMap<(ContentHash, u32), &'a str> = HashMap::new();
    if let (Some(dir), Some(old)) = (previous, previous_manifest) {
        for index in unchanged_files(dir, old) {
            let entry = &old.entries[index];
            if let EntryKind::File { hash, .. } = &entry.kind {
                have.entry((*hash, entry.mode)).or_insert(&entry.path);
            }
        }
    }
    for (index, entry) in manifest.entries.iter().enumerate() {
        let EntryKind::File { size, hash, .. } = &entry.kind else {
            continue;
        };
        if let Some(path) = have.get(&(*hash, entry.mode)) {
            plan.reuse[index] = Some(path);
            continue;
        }
        // No record for it: the same path in the previous release may still hold it.
        if let Some(dir) = previous {
            let candidate = dir.join(&entry.path);
            if let Ok(meta) = std::fs::symlink_metadata(&candidate) {
                if meta.is_file()
                    && meta.len() == *size
                    && meta.mode() & 0o7777 == entry.mode
                    && ContentHash::of_file(&candidate)? == *hash
                {
                    plan.reuse[index] = Some(&entry.path);
                    continue;
                }
            }
        }
        plan.need.push(index);
    }
    Ok(plan)
}

/// Indexes of `old`'s files that are still in `dir` as it recorded them, in order. Each
/// directory is opened once and its files looked at by name, directories in parallel.
fn unchanged_files(dir: &Path, old: &Manifest) -> Vec<usize> {
    let mut by_dir: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, entry) in old.entries.iter().enumerate() {
        if matches!(entry.kind, EntryKind::File { .. }) {
            by_dir
                .entry(parent_and_name(&entry.path).0)
                .or_default()
                .push(index);
        }
    }
    let Ok(root) = open_dir(CWD, dir) else {
        return Vec::new();
    };
    let mut still: Vec<usize> = by_dir
        .into_par_iter()
        .flat_map_iter(|(parent, files)| {
            let fd = if parent.is_empty() {
                rustix::io::dup(&root).ok()
            } else {
                open_dir(&root, parent).ok()
            };
            files.into_iter().filter(move |&index| {
                let entry = &old.entries[index];
                let EntryKind::File { size, mtime_ns, .. } = &entry.kind else {
                    return false;
                };
                let Some(fd) = &fd else { return false };
                let name = parent_and_name(&entry.path).1;
                rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                        && st.st_size as u64 == *size
                        && stat_mtime_ns(&st) == *mtime_ns
                        && st.st_mode & 0o7777 == entry.mode
                })
            })
        })
        .collect();
    still.sort_unstable();
    still
}
