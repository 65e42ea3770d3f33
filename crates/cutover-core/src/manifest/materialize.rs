//! The host's side, building the release: directories, links and files of a manifest.
//!
//! Everything is created relative to an open directory (`mkdirat`, `linkat`,
//! `symlinkat`): a path given by name makes the kernel walk it from the root for every one
//! of 20,000 files, which was most of an incremental deploy's system time. Directories are
//! filled in parallel; link(2) in one directory serializes on its inode, across many it
//! does not.

use std::fs::{File, FileTimes, Permissions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, CWD};

use super::plan::{open_dir, Plan};
use super::{parent_and_name, ContentHash, EntryKind, Manifest};
use crate::error::{Error, IoContext, Result};
use crate::stage::StageStats;

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
    let builder = Builder {
        manifest,
        plan,
        dest,
        link,
        children: children(manifest),
        root: open_dir(CWD, dest).map_err(|e| Error::io("open", dest, e.into()))?,
        previous: plan.previous.as_deref().and_then(|p| open_dir(CWD, p).ok()),
        done: Mutex::new(Done::default()),
        failure: Mutex::new(None),
    };
    rayon::scope(|scope| builder.fill_dir(scope, None));
    let Builder { done, failure, .. } = builder;
    if let Some(error) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(error);
    }
    let Done {
        mut stats,
        mut written,
        locked_dirs,
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
    // Directories that would lock their owner out get their mode last, deepest first.
    let mut locked_dirs = locked_dirs;
    locked_dirs.sort_unstable_by(|a, b| b.cmp(a));
    for index in locked_dirs {
        let entry = &manifest.entries[index];
        let path = dest.join(&entry.path);
        std::fs::set_permissions(&path, Permissions::from_mode(entry.mode))
            .ctx("set the mode of", &path)?;
    }
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

struct Builder<'a> {
    manifest: &'a Manifest,
    plan: &'a Plan<'a>,
    dest: &'a Path,
    link: bool,
    children: Vec<Vec<usize>>,
    root: OwnedFd,
    previous: Option<OwnedFd>,
    done: Mutex<Done>,
    failure: Mutex<Option<Error>>,
}

#[derive(Default)]
struct Done {
    stats: StageStats,
    written: Vec<PathBuf>,
    /// Directories whose mode lacks the owner's rwx: set after everything inside exists.
    locked_dirs: Vec<usize>,
}

impl<'a> Builder<'a> {
    /// Creates the children of one directory (`None`: the root), then spawns its
    /// subdirectories.
    fn fill_dir<'s>(&'s self, scope: &rayon::Scope<'s>, dir: Option<usize>)
    where
        'a: 's,
    {
        if self.failure.lock().map_or(true, |f| f.is_some()) {
            return;
        }
        let mut done = Done::default();
        let result = self.fill_one(dir, &mut done);
        let subdirs: Vec<usize> = match result {
            Ok(subdirs) => subdirs,
            Err(error) => {
                if let Ok(mut slot) = self.failure.lock() {
                    slot.get_or_insert(error);
                }
                return;
            }
        };
        if let Ok(mut all) = self.done.lock() {
            add(&mut all.stats, &done.stats);
            all.written.append(&mut done.written);
            all.locked_dirs.append(&mut done.locked_dirs);
        }
        for index in subdirs {
            scope.spawn(move |scope| self.fill_dir(scope, Some(index)));
        }
    }

    fn fill_one(&self, dir: Option<usize>, done: &mut Done) -> Result<Vec<usize>> {
        let manifest = self.manifest;
        let rel = dir.map_or("", |i| manifest.entries[i].path.as_str());
        let fd = match dir {
            None => rustix::io::dup(&self.root).map_err(|e| self.error("open", rel, e))?,
            Some(_) => open_dir(&self.root, rel).map_err(|e| self.error("open", rel, e))?,
        };
        if let Some(index) = dir {
            let mode = manifest.entries[index].mode;
            if mode & 0o700 == 0o700 {
                // Created with the owner's rwx whatever the umask did; now its own mode.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                    .map_err(|e| self.error("set the mode of", rel, e))?;
            } else {
                done.locked_dirs.push(index);
            }
        }
        // This directory in the previous release: where most files are linked from.
        let mut previous_here: Option<Option<OwnedFd>> = None;
        let mut subdirs = Vec::new();
        for &index in &self.children[dir.map_or(0, |i| i + 1)] {
            let entry = &manifest.entries[index];
            let name = parent_and_name(&entry.path).1;
            match &entry.kind {
                EntryKind::Dir => {
                    rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(entry.mode | 0o700))
                        .map_err(|e| self.error("create", &entry.path, e))?;
                    done.stats.dirs += 1;
                    subdirs.push(index);
                }
                EntryKind::Symlink { target } => {
                    rustix::fs::symlinkat(target.as_str(), &fd, name)
                        .map_err(|e| self.error("create the link", &entry.path, e))?;
                    done.stats.symlinks += 1;
                }
                EntryKind::File { size, mtime_ns, .. } => {
                    done.stats.files += 1;
                    done.stats.bytes_total += size;
                    let Some(from) = self.plan.reuse.get(index).copied().flatten() else {
                        continue;
                    };
                    if self.link {
                        let (from_dir, from_name) = parent_and_name(from);
                        let linked = match &self.previous {
                            Some(previous) if from_dir == rel => {
                                let here = previous_here.get_or_insert_with(|| {
                                    if rel.is_empty() {
                                        rustix::io::dup(previous).ok()
                                    } else {
                                        open_dir(previous, rel).ok()
                                    }
                                });
                                match here {
                                    Some(here) => link_at(here, from_name, &fd, name),
                                    None => link_at(previous, from, &fd, name),
                                }
                            }
                            Some(previous) => link_at(previous, from, &fd, name),
                            None => false,
                        };
                        if linked {
                            done.stats.linked += 1;
                            continue;
                        }
                    }
                    let from = self.previous_path(from)?;
                    let to = self.dest.join(&entry.path);
                    let meta = std::fs::metadata(&from).ctx("stat", &from)?;
                    crate::stage::copy_file(&from, &meta, &to)?;
                    set_mtime(&to, *mtime_ns)?;
                    done.stats.copied += 1;
                    done.stats.bytes_copied += size;
                    done.written.push(to);
                }
            }
        }
        Ok(subdirs)
    }

    fn previous_path(&self, rel: &str) -> Result<PathBuf> {
        let previous = self.plan.previous.as_deref().ok_or_else(|| {
            Error::BadManifest(format!(
                "{rel:?} is to be reused but there is no previous release"
            ))
        })?;
        Ok(previous.join(rel))
    }

    fn error(&self, op: &'static str, rel: &str, errno: rustix::io::Errno) -> Error {
        Error::io(op, self.dest.join(rel), errno.into())
    }
}

fn link_at(from_dir: impl AsFd, from: &str, to_dir: impl AsFd, to: &str) -> bool {
    rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty()).is_ok()
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
