//! Building a release in its staging directory.
//!
//! A file unchanged since the previous release (same size, mode and mtime, or same bytes) is
//! hard-linked to the previous release's inode instead of copied, so a deploy that changes
//! ten files of twenty thousand writes ten files. Everything else is copied with its mode
//! and mtime, so the next deploy's quick check sees it as unchanged.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use rustix::fs::{FileType, CWD};

use crate::error::{Error, IoContext, Result};
use crate::release_tree::{
    open_below, open_dir, open_file_at, stat_mtime_ns, NewDir, NewTree, PreviousDir, PreviousTree,
};
use crate::tree::{link_on_disk, link_stays_inside, walk_in, Entry, Excludes};

/// Told about progress; must be cheap, it is called once per file from many threads.
pub trait Observer: Sync {
    fn file_staged(&self, _bytes: u64) {}
    fn hook_output(&self, _line: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StageStats {
    pub files: u64,
    pub linked: u64,
    pub copied: u64,
    pub bytes_total: u64,
    pub bytes_copied: u64,
    pub dirs: u64,
    pub symlinks: u64,
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    linked: AtomicU64,
    copied: AtomicU64,
    bytes_total: AtomicU64,
    bytes_copied: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> StageStats {
        StageStats {
            files: self.files.load(Relaxed),
            linked: self.linked.load(Relaxed),
            copied: self.copied.load(Relaxed),
            bytes_total: self.bytes_total.load(Relaxed),
            bytes_copied: self.bytes_copied.load(Relaxed),
            dirs: self.dirs.load(Relaxed),
            symlinks: self.symlinks.load(Relaxed),
        }
    }
}

/// How `populate` treats files the previous release already has.
pub struct Populate<'a> {
    pub source: &'a Path,
    pub dest: &'a Path,
    /// Hard-link unchanged files from here; `None` copies everything.
    pub previous: Option<&'a Path>,
    pub excludes: &'a Excludes,
    /// Count what would be linked and copied, write nothing.
    pub dry_run: bool,
}

/// What `populate` did: counts, and the files it wrote (the ones `flush` must make durable).
#[derive(Debug, Default)]
pub struct Staged {
    pub stats: StageStats,
    pub copied: Vec<PathBuf>,
}

/// Fills `dest` (which must exist) from `source`, one directory at a time through open
/// directories (`release_tree`).
pub fn populate(job: &Populate<'_>, observer: &dyn Observer) -> Result<Staged> {
    let counters = Counters::default();
    let copied: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let source_root = open_dir(CWD, job.source).ctx("open", job.source)?;
    let new = if job.dry_run {
        None
    } else {
        Some(NewTree::open(job.dest)?)
    };
    let previous = job.previous.and_then(PreviousTree::open);
    // Each directory: open in the source, in the new tree (given its mode) and in the
    // previous release.
    let enter = |rel: &Path| -> Result<Here<'_>> {
        let source = open_below(&source_root, rel).ctx("open", &job.source.join(rel))?;
        let new = match &new {
            Some(new) if rel.as_os_str().is_empty() => Some(new.dir(rel, None)?),
            Some(new) => {
                let st = rustix::fs::fstat(&source).ctx("stat", &job.source.join(rel))?;
                Some(new.dir(rel, Some(st.st_mode & 0o7777))?)
            }
            None => None,
        };
        let previous = previous.as_ref().map(|p| p.dir(rel));
        Ok(Here {
            source,
            new,
            previous,
        })
    };
    walk_in(
        job.source,
        job.excludes,
        &enter,
        &|here: &Here<'_>, entry: &Entry<'_>| {
            let name = entry.rel.file_name().unwrap_or_default();
            let file_type = entry.file_type;
            if file_type.is_dir() {
                counters.dirs.fetch_add(1, Relaxed);
                if let Some(new) = &here.new {
                    new.mkdir(name)?;
                }
                return Ok(true);
            }
            if file_type.is_symlink() {
                let target = rustix::fs::readlinkat(&here.source, name, Vec::new())
                    .ctx("read the link", entry.path)?;
                let target = PathBuf::from(std::ffi::OsString::from_vec(target.into_bytes()));
                if !link_stays_inside(entry.rel, &target, &link_on_disk(job.source)) {
                    return Err(Error::SymlinkOutside {
                        link: entry.path.to_path_buf(),
                        target,
                    });
                }
                counters.symlinks.fetch_add(1, Relaxed);
                if let Some(new) = &here.new {
                    new.symlink(name, &target)?;
                }
                return Ok(false);
            }
            if !file_type.is_file() {
                return Err(Error::UnsupportedFileType(entry.path.to_path_buf()));
            }
            let meta = entry.dir_entry.metadata().ctx("stat", entry.path)?;
            let size = meta.len();
            counters.files.fetch_add(1, Relaxed);
            counters.bytes_total.fetch_add(size, Relaxed);
            let unchanged = match &here.previous {
                Some(previous) => is_unchanged(&here.source, entry, &meta, previous)?,
                None => false,
            };
            let linked = match (&here.new, &here.previous) {
                (None, _) => unchanged,
                (Some(new), Some(previous)) if unchanged => {
                    previous.link_into(entry.rel, new, name)?
                }
                _ => false,
            };
            if linked {
                counters.linked.fetch_add(1, Relaxed);
            } else {
                if let Some(new) = &here.new {
                    let from = open_file_at(&here.source, name).ctx("open", entry.path)?;
                    new.copy_in(&from, &meta, entry.path, name)?;
                    if let Ok(mut copied) = copied.lock() {
                        copied.push(new.path(name));
                    }
                }
                counters.copied.fetch_add(1, Relaxed);
                counters.bytes_copied.fetch_add(size, Relaxed);
            }
            observer.file_staged(size);
            Ok(false)
        },
    )?;
    if let Some(new) = new {
        new.finish()?;
    }
    Ok(Staged {
        stats: counters.snapshot(),
        copied: copied.into_inner().unwrap_or_default(),
    })
}

/// One directory of a fill, open where the fill works on it.
struct Here<'t> {
    source: OwnedFd,
    /// `None` in a dry run.
    new: Option<NewDir<'t>>,
    previous: Option<PreviousDir<'t>>,
}

/// Replaces files in `tree` that are unchanged in `previous` by hard links to the previous
/// release's inodes; returns how many. Used after hooks have run on a private copy.
pub fn link_unchanged(tree: &Path, previous: &Path, excludes: &Excludes) -> Result<StageStats> {
    let counters = Counters::default();
    let new = NewTree::open(tree)?;
    let previous = PreviousTree::open(previous);
    let enter = |rel: &Path| -> Result<(NewDir<'_>, Option<PreviousDir<'_>>)> {
        Ok((new.dir(rel, None)?, previous.as_ref().map(|p| p.dir(rel))))
    };
    walk_in(
        tree,
        excludes,
        &enter,
        &|(here, previous), entry: &Entry<'_>| {
            if entry.file_type.is_dir() {
                counters.dirs.fetch_add(1, Relaxed);
                return Ok(true);
            }
            if entry.file_type.is_symlink() {
                counters.symlinks.fetch_add(1, Relaxed);
            }
            if !entry.file_type.is_file() {
                return Ok(false);
            }
            let meta = entry.dir_entry.metadata().ctx("stat", entry.path)?;
            counters.files.fetch_add(1, Relaxed);
            counters.bytes_total.fetch_add(meta.len(), Relaxed);
            let name = entry.rel.file_name().unwrap_or_default();
            let linked = match previous {
                Some(previous) => {
                    is_unchanged(here.fd(), entry, &meta, previous)?
                        && here.replace_with_link(previous, name)?
                }
                None => false,
            };
            if linked {
                counters.linked.fetch_add(1, Relaxed);
            } else {
                counters.copied.fetch_add(1, Relaxed);
                counters.bytes_copied.fetch_add(meta.len(), Relaxed);
            }
            Ok(false)
        },
    )?;
    Ok(counters.snapshot())
}

/// rsync's quick check (size and mtime), plus mode so a `chmod +x` is deployed, falling
/// back to comparing bytes when only the mtime differs: builds and fresh clones rewrite
/// files with new mtimes and the same content. `dir` is the open directory of `entry`.
fn is_unchanged(
    dir: impl AsFd,
    entry: &Entry<'_>,
    meta: &std::fs::Metadata,
    previous: &PreviousDir<'_>,
) -> Result<bool> {
    let name = entry.rel.file_name().unwrap_or_default();
    let Some(prev) = previous.stat(name)? else {
        return Ok(false);
    };
    if FileType::from_raw_mode(prev.st_mode) != FileType::RegularFile
        || prev.st_size as u64 != meta.len()
        || prev.st_mode & 0o7777 != meta.mode() & 0o7777
    {
        return Ok(false);
    }
    #[allow(clippy::unnecessary_cast)] // the field types of `struct stat` vary
    if prev.st_ino as u64 == meta.ino() && prev.st_dev as u64 == meta.dev() {
        return Ok(true);
    }
    if stat_mtime_ns(&prev) == meta.mtime() * 1_000_000_000 + meta.mtime_nsec() {
        return Ok(true);
    }
    let mine = open_file_at(dir, name).ctx("open", entry.path)?;
    let theirs = previous.open(entry.rel)?;
    same_bytes(mine, entry.path, theirs, &previous.path(name))
}

fn same_bytes(mut fa: File, a: &Path, mut fb: File, b: &Path) -> Result<bool> {
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).ctx("read", a)?;
        let nb = read_full(&mut fb, &mut bb).ctx("read", b)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Above this many written files one syncfs(2) is cheaper than an fsync each.
const FSYNC_EACH_LIMIT: usize = 256;

/// Makes a staged tree durable before it can become current, at a cost that follows the
/// size of the change: the files written are fsynced (in parallel), then the tree's root.
/// Hard links and new directories carry no data of their own; on a journaling file system
/// (ext4, xfs) the journal commits them in order, before the later rename of `current`.
/// When many files were written, or `written` is unknown (hooks ran), one syncfs(2)
/// flushes the file system instead; it also flushes unrelated dirty data, which is why
/// it is not the default for a small change.
pub fn flush(dir: &Path, written: Option<&[PathBuf]>) -> Result<()> {
    use rayon::prelude::*;
    match written {
        Some(files) if files.len() <= FSYNC_EACH_LIMIT => {
            files.par_iter().try_for_each(|path| {
                File::open(path)
                    .and_then(|f| f.sync_data())
                    .ctx("fsync", path)
            })?;
            crate::swap::fsync_dir(dir)
        }
        _ => {
            let file = File::open(dir).ctx("open", dir)?;
            rustix::fs::syncfs(&file).map_err(|e| Error::io("flush to disk", dir, e.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A source, a previous release and the next one, under `dir`.
    fn src_prev_next(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        (dir.join("src"), dir.join("prev"), dir.join("next"))
    }

    #[test]
    fn links_unchanged_files_and_copies_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (src, prev, next) = src_prev_next(dir.path());
        write(&src.join("a.php"), "a");
        write(&src.join("lib/b.php"), "b");
        std::fs::set_permissions(src.join("a.php"), Permissions::from_mode(0o750)).unwrap();
        symlink("lib/b.php", src.join("link.php")).unwrap();
        let excludes = Excludes::new([".git"]);
        write(&src.join(".git/HEAD"), "ref");
        std::fs::create_dir(&prev).unwrap();
        let first = populate(
            &Populate {
                source: &src,
                dest: &prev,
                previous: None,
                excludes: &excludes,
                dry_run: false,
            },
            &Silent,
        )
        .unwrap()
        .stats;
        assert_eq!((first.files, first.copied, first.symlinks), (2, 2, 1));
        assert!(!prev.join(".git").exists());
        assert_eq!(
            std::fs::metadata(prev.join("a.php")).unwrap().mode() & 0o777,
            0o750
        );

        write(&src.join("lib/b.php"), "b2");
        std::fs::create_dir(&next).unwrap();
        let job = Populate {
            source: &src,
            dest: &next,
            previous: Some(&prev),
            excludes: &excludes,
            dry_run: false,
        };
        let second = populate(&job, &Silent).unwrap().stats;
        assert_eq!(
            (second.linked, second.copied, second.bytes_copied),
            (1, 1, 2)
        );
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&prev.join("a.php")), ino(&next.join("a.php")));
        assert_ne!(ino(&prev.join("lib/b.php")), ino(&next.join("lib/b.php")));
        assert_eq!(
            std::fs::read_to_string(prev.join("lib/b.php")).unwrap(),
            "b"
        );
        assert_eq!(
            std::fs::read_link(next.join("link.php")).unwrap(),
            Path::new("lib/b.php")
        );
    }

    #[test]
    fn same_bytes_with_a_new_mtime_is_linked_and_a_new_mode_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (src, prev, next) = src_prev_next(dir.path());
        write(&src.join("same.php"), "same");
        write(&src.join("exec.sh"), "run");
        std::fs::create_dir(&prev).unwrap();
        let excludes = Excludes::default();
        populate(
            &Populate {
                source: &src,
                dest: &prev,
                previous: None,
                excludes: &excludes,
                dry_run: false,
            },
            &Silent,
        )
        .unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        File::options()
            .write(true)
            .open(src.join("same.php"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::fs::set_permissions(src.join("exec.sh"), Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(&next).unwrap();
        let stats = populate(
            &Populate {
                source: &src,
                dest: &next,
                previous: Some(&prev),
                excludes: &excludes,
                dry_run: false,
            },
            &Silent,
        )
        .unwrap()
        .stats;
        assert_eq!((stats.linked, stats.copied), (1, 1));
        assert_eq!(
            std::fs::metadata(next.join("exec.sh")).unwrap().mode() & 0o777,
            0o755
        );
    }

    /// What building through open directories must keep: depth, a directory its owner
    /// cannot write (moded after its files exist), a link to a directory, and a file that
    /// became a directory since the previous release.
    #[test]
    fn deep_locked_and_linked_directories_are_built_and_linked_again() {
        let dir = tempfile::tempdir().unwrap();
        let (src, prev, next) = src_prev_next(dir.path());
        let deep: PathBuf = (0..40).map(|i| format!("d{i}")).collect();
        write(&src.join(&deep).join("leaf.php"), "leaf");
        write(&src.join("locked/inner/f.php"), "f");
        write(&src.join("was-file"), "file");
        symlink("locked/inner", src.join("to-dir")).unwrap();
        let lock = |p: &Path| std::fs::set_permissions(p, Permissions::from_mode(0o555)).unwrap();
        lock(&src.join("locked"));
        let fill = |dest: &Path, previous: Option<&Path>| {
            std::fs::create_dir(dest).unwrap();
            populate(
                &Populate {
                    source: &src,
                    dest,
                    previous,
                    excludes: &Excludes::default(),
                    dry_run: false,
                },
                &Silent,
            )
            .unwrap()
        };
        let first = fill(&prev, None).stats;
        assert_eq!((first.files, first.dirs, first.symlinks), (3, 42, 1));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&prev.join("locked")), 0o555);
        assert_eq!(
            std::fs::read_to_string(prev.join("to-dir/f.php")).unwrap(),
            "f"
        );

        std::fs::remove_file(src.join("was-file")).unwrap();
        write(&src.join("was-file/now.php"), "now");
        let staged = fill(&next, Some(&prev));
        assert_eq!((staged.stats.linked, staged.stats.copied), (2, 1));
        assert_eq!(staged.copied, vec![next.join("was-file/now.php")]);
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let leaf = deep.join("leaf.php");
        assert_eq!(ino(&prev.join(&leaf)), ino(&next.join(&leaf)));
        assert_eq!(
            ino(&prev.join("locked/inner/f.php")),
            ino(&next.join("locked/inner/f.php"))
        );
        assert_eq!(mode(&next.join("locked")), 0o555);
        assert_eq!(
            std::fs::read_link(next.join("to-dir")).unwrap(),
            Path::new("locked/inner")
        );
        for tree in [&src, &prev, &next] {
            std::fs::set_permissions(tree.join("locked"), Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn links_leaving_the_tree_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
        std::fs::create_dir_all(src.join("public")).unwrap();
        std::fs::create_dir(&dest).unwrap();
        symlink("../../etc", src.join("public/escape")).unwrap();
        let err = populate(
            &Populate {
                source: &src,
                dest: &dest,
                previous: None,
                excludes: &Excludes::default(),
                dry_run: false,
            },
            &Silent,
        )
        .unwrap_err();
        assert!(matches!(err, Error::SymlinkOutside { .. }), "{err}");
    }

    #[test]
    fn dry_run_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
        write(&src.join("a/b/c.php"), "c");
        std::fs::create_dir(&dest).unwrap();
        let stats = populate(
            &Populate {
                source: &src,
                dest: &dest,
                previous: None,
                excludes: &Excludes::default(),
                dry_run: true,
            },
            &Silent,
        )
        .unwrap()
        .stats;
        assert_eq!((stats.files, stats.dirs), (1, 2));
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    }
}
