//! The host's side, building the release: directories, links and files of a manifest.
//!
//! Built through open directories (`release_tree`, as the local fill is), one directory
//! per task (`tree::each_dir`).

use std::ffi::OsStr;
use std::fs::{File, FileTimes, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::plan::Plan;
use super::{parent_and_name, ContentHash, EntryKind, Manifest};
use crate::error::{Error, IoContext, Result};
use crate::release_tree::{NewTree, PreviousTree};
use crate::stage::StageStats;
use crate::tree::each_dir;

/// Builds the tree of `manifest` in `dest` (which must exist): directories and links,
/// reused files as hard links (or copies when `link` is false: commands will run on the
/// tree), then the needed files read in order from `content`, each checked against its
/// hash. Returns the counts and the files written (for `stage::flush`).
pub fn materialize(
    manifest: &Manifest,
    plan: &Plan<'_>,
    dest: &Path,
    link: bool,
    content: &mut dyn Read,
) -> Result<(StageStats, Vec<PathBuf>)> {
    manifest.validate()?;
    let build = Build {
        manifest,
        plan,
        children: children(manifest),
        new: NewTree::open(dest)?,
        previous: plan.previous.as_deref().and_then(PreviousTree::open),
        link,
    };
    let done: Mutex<Done> = Mutex::new(Done::default());
    each_dir(None, &|dir, spawn: &mut dyn FnMut(Option<usize>)| {
        let mut part = build.fill_dir(dir, spawn)?;
        if let Ok(mut all) = done.lock() {
            add(&mut all.stats, &part.stats);
            all.written.append(&mut part.written);
        }
        Ok(())
    })?;
    let Done {
        mut stats,
        mut written,
    } = done.into_inner().unwrap_or_else(|p| p.into_inner());

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
    build.new.finish()?;
    Ok((stats, written))
}

/// The direct children of each directory, by manifest index: slot 0 is the release's
/// root, slot `i + 1` the entry `i`. A validated manifest is in depth-first order, so the
/// directories above an entry are a stack.
fn children(manifest: &Manifest) -> Vec<Vec<usize>> {
    let mut children = vec![Vec::new(); manifest.entries.len() + 1];
    let mut open: Vec<(usize, &str)> = Vec::new();
    for (index, entry) in manifest.entries.iter().enumerate() {
        while let Some(&(_, dir)) = open.last() {
            let inside = entry
                .path
                .strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'));
            if inside {
                break;
            }
            open.pop();
        }
        let parent = open.last().map_or(0, |&(slot, _)| slot);
        children[parent].push(index);
        if matches!(entry.kind, EntryKind::Dir) {
            open.push((index + 1, &entry.path));
        }
    }
    children
}

#[derive(Default)]
struct Done {
    stats: StageStats,
    written: Vec<PathBuf>,
}

/// One manifest being built in its release directory.
struct Build<'a> {
    manifest: &'a Manifest,
    plan: &'a Plan<'a>,
    children: Vec<Vec<usize>>,
    new: NewTree<'a>,
    previous: Option<PreviousTree<'a>>,
    link: bool,
}

impl Build<'_> {
    /// Creates the children of one directory (`None`: the root) and hands its
    /// subdirectories to `spawn`.
    fn fill_dir(&self, dir: Option<usize>, spawn: &mut dyn FnMut(Option<usize>)) -> Result<Done> {
        let Build {
            manifest,
            plan,
            children,
            new,
            previous,
            link,
        } = self;
        let mut done = Done::default();
        let rel = Path::new(dir.map_or("", |i| manifest.entries[i].path.as_str()));
        let here = new.dir(rel, dir.map(|i| manifest.entries[i].mode))?;
        // This directory in the previous release: where most files are linked from.
        let previous_here = previous.as_ref().map(|p| p.dir(rel));
        for &index in &children[dir.map_or(0, |i| i + 1)] {
            let entry = &manifest.entries[index];
            let name = OsStr::new(parent_and_name(&entry.path).1);
            match &entry.kind {
                EntryKind::Dir => {
                    here.mkdir(name)?;
                    done.stats.dirs += 1;
                    spawn(Some(index));
                }
                EntryKind::Symlink { target } => {
                    here.symlink(name, Path::new(target))?;
                    done.stats.symlinks += 1;
                }
                EntryKind::File { size, mtime_ns, .. } => {
                    done.stats.files += 1;
                    done.stats.bytes_total += size;
                    let Some(from) = plan.reuse.get(index).copied().flatten() else {
                        continue;
                    };
                    let from = Path::new(from);
                    let Some(previous_here) = &previous_here else {
                        return Err(Error::BadManifest(format!(
                            "{from:?} is to be reused but there is no previous release"
                        )));
                    };
                    if *link && previous_here.link_into(from, &here, name)? {
                        done.stats.linked += 1;
                        continue;
                    }
                    let source = previous_here.open(from)?;
                    let shown = previous_here.full_path(from);
                    let meta = source.metadata().ctx("stat", &shown)?;
                    let file = here.copy_in(&source, &meta, &shown, name)?;
                    let to = here.path(name);
                    file.set_times(FileTimes::new().set_modified(time_of(*mtime_ns)))
                        .ctx("set the times of", &to)?;
                    done.stats.copied += 1;
                    done.stats.bytes_copied += size;
                    done.written.push(to);
                }
            }
        }
        Ok(done)
    }
}

fn add(total: &mut StageStats, part: &StageStats) {
    total.files += part.files;
    total.linked += part.linked;
    total.copied += part.copied;
    total.bytes_total += part.bytes_total;
    total.bytes_copied += part.bytes_copied;
    total.dirs += part.dirs;
    total.symlinks += part.symlinks;
}

fn receive_file(
    content: &mut dyn Read,
    path: &Path,
    size: u64,
    hash: &ContentHash,
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
    if ContentHash::from(hasher) != *hash {
        return Err(Error::ContentMismatch(path.to_path_buf()));
    }
    file.set_permissions(Permissions::from_mode(mode))
        .ctx("set the mode of", path)
}

fn time_of(mtime_ns: i64) -> SystemTime {
    if mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(mtime_ns.unsigned_abs())
    }
}

fn set_mtime(path: &Path, mtime_ns: i64) -> Result<()> {
    let when = time_of(mtime_ns);
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
