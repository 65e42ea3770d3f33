//! Building a release in its staging directory.
//!
//! A file unchanged since the previous release (same size, mode and mtime, or same bytes) is
//! hard-linked to the previous release's inode instead of copied, so a deploy that changes
//! ten files of twenty thousand writes ten files. Everything else is copied with its mode
//! and mtime, so the next deploy's quick check sees it as unchanged.

use std::fs::{File, FileTimes, Permissions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::tree::{link_on_disk, link_stays_inside, walk, Entry, Excludes};

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

/// Fills `dest` (which must exist) from `source`.
pub fn populate(job: &Populate<'_>, observer: &dyn Observer) -> Result<Staged> {
    let counters = Counters::default();
    let dir_modes: Mutex<Vec<(PathBuf, u32)>> = Mutex::new(Vec::new());
    let copied: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    walk(job.source, job.excludes, &|entry: &Entry<'_>| {
        let dest = job.dest.join(entry.rel);
        let file_type = entry.file_type;
        if file_type.is_dir() {
            counters.dirs.fetch_add(1, Relaxed);
            if !job.dry_run {
                let mode = entry.dir_entry.metadata().ctx("stat", entry.path)?.mode();
                std::fs::create_dir(&dest).ctx("create", &dest)?;
                if let Ok(mut modes) = dir_modes.lock() {
                    modes.push((dest, mode & 0o7777));
                }
            }
            return Ok(true);
        }
        if file_type.is_symlink() {
            let target = std::fs::read_link(entry.path).ctx("read the link", entry.path)?;
            if !link_stays_inside(entry.rel, &target, &link_on_disk(job.source)) {
                return Err(Error::SymlinkOutside {
                    link: entry.path.to_path_buf(),
                    target,
                });
            }
            counters.symlinks.fetch_add(1, Relaxed);
            if !job.dry_run {
                std::os::unix::fs::symlink(&target, &dest).ctx("create the link", &dest)?;
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
        let previous = job.previous.map(|p| p.join(entry.rel));
        let unchanged = match &previous {
            Some(prev) => is_unchanged(entry.path, &meta, prev)?,
            None => false,
        };
        let linked = match (&previous, unchanged, job.dry_run) {
            (Some(_), true, true) => true,
            (Some(prev), true, false) => try_hard_link(prev, &dest)?,
            _ => false,
        };
        if linked {
            counters.linked.fetch_add(1, Relaxed);
        } else {
            if !job.dry_run {
                copy_file(entry.path, &meta, &dest)?;
                if let Ok(mut copied) = copied.lock() {
                    copied.push(dest);
                }
            }
            counters.copied.fetch_add(1, Relaxed);
            counters.bytes_copied.fetch_add(size, Relaxed);
        }
        observer.file_staged(size);
        Ok(false)
    })?;
    // Modes last: a read-only directory must still take its children first.
    for (dir, mode) in dir_modes.into_inner().unwrap_or_default() {
        std::fs::set_permissions(&dir, Permissions::from_mode(mode))
            .ctx("set the mode of", &dir)?;
    }
    Ok(Staged {
        stats: counters.snapshot(),
        copied: copied.into_inner().unwrap_or_default(),
    })
}

/// Replaces files in `tree` that are unchanged in `previous` by hard links to the previous
/// release's inodes; returns how many. Used after hooks have run on a private copy.
pub fn link_unchanged(tree: &Path, previous: &Path, excludes: &Excludes) -> Result<StageStats> {
    let counters = Counters::default();
    walk(tree, excludes, &|entry: &Entry<'_>| {
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
        let prev = previous.join(entry.rel);
        if is_unchanged(entry.path, &meta, &prev)? && replace_with_link(&prev, entry.path)? {
            counters.linked.fetch_add(1, Relaxed);
        } else {
            counters.copied.fetch_add(1, Relaxed);
            counters.bytes_copied.fetch_add(meta.len(), Relaxed);
        }
        Ok(false)
    })?;
    Ok(counters.snapshot())
}

/// rsync's quick check (size and mtime), plus mode so a `chmod +x` is deployed, falling
/// back to comparing bytes when only the mtime differs: builds and fresh clones rewrite
/// files with new mtimes and the same content.
fn is_unchanged(path: &Path, meta: &std::fs::Metadata, prev: &Path) -> Result<bool> {
    let prev_meta = match std::fs::symlink_metadata(prev) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("stat", prev, e)),
    };
    if !prev_meta.is_file()
        || prev_meta.len() != meta.len()
        || prev_meta.mode() & 0o7777 != meta.mode() & 0o7777
    {
        return Ok(false);
    }
    if prev_meta.ino() == meta.ino() && prev_meta.dev() == meta.dev() {
        return Ok(true);
    }
    if prev_meta.mtime() == meta.mtime() && prev_meta.mtime_nsec() == meta.mtime_nsec() {
        return Ok(true);
    }
    same_bytes(path, prev)
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = File::open(a).ctx("open", a)?;
    let mut fb = File::open(b).ctx("open", b)?;
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

/// False when the file system will not link (too many links, or no hard links at all):
/// the caller copies instead.
fn try_hard_link(from: &Path, to: &Path) -> Result<bool> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(true),
        Err(e) if cannot_link(&e) => Ok(false),
        Err(e) => Err(Error::io("hard-link", to, e)),
    }
}

fn cannot_link(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    matches!(
        errno,
        Some(Errno::MLINK | Errno::XDEV | Errno::PERM | Errno::OPNOTSUPP)
    )
}

fn replace_with_link(from: &Path, path: &Path) -> Result<bool> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.cutover-link"));
    if !try_hard_link(from, &temp)? {
        return Ok(false);
    }
    std::fs::rename(&temp, path).ctx("replace with a link", path)?;
    Ok(true)
}

pub fn copy_file(from: &Path, meta: &std::fs::Metadata, to: &Path) -> Result<()> {
    let mut src = File::open(from).ctx("open", from)?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .ctx("create", to)?;
    // A file with holes (512 blocks of 512 bytes cover fewer bytes than its length) is
    // copied by its data segments, or a 1 GiB sparse file becomes 1 GiB on disk.
    if meta.blocks().saturating_mul(512) < meta.len() {
        copy_sparse(&src, &dst, meta.len()).ctx("copy into", to)?;
    } else {
        // std::io::copy uses copy_file_range(2), which reflinks where the file system can.
        std::io::copy(&mut src, &mut dst).ctx("copy into", to)?;
    }
    dst.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))
        .ctx("set the mode of", to)?;
    let times = FileTimes::new()
        .set_modified(meta.modified().ctx("read the mtime of", from)?)
        .set_accessed(meta.accessed().ctx("read the atime of", from)?);
    dst.set_times(times).ctx("set the times of", to)
}

/// Copies only the data segments (SEEK_DATA/SEEK_HOLE), at the same offsets, and sets the
/// length: the holes stay holes.
fn copy_sparse(src: &File, dst: &File, len: u64) -> std::io::Result<()> {
    use rustix::fs::{copy_file_range, seek, SeekFrom};
    let mut at = 0u64;
    while at < len {
        let data = match seek(src, SeekFrom::Data(at)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = seek(src, SeekFrom::Hole(data))?.min(len);
        let (mut from, mut to) = (data, data);
        while from < hole {
            let want = (hole - from) as usize;
            let n = copy_file_range(src, Some(&mut from), dst, Some(&mut to), want)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was copied",
                ));
            }
        }
        at = hole;
    }
    dst.set_len(len)
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
    use std::os::unix::fs::symlink;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn links_unchanged_files_and_copies_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (src, prev, next) = (
            dir.path().join("src"),
            dir.path().join("prev"),
            dir.path().join("next"),
        );
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
        let (src, prev, next) = (
            dir.path().join("src"),
            dir.path().join("prev"),
            dir.path().join("next"),
        );
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
