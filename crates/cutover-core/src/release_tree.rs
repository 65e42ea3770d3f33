//! A release's tree worked on through open directories: the new one being built, and the
//! previous one whose files are linked into it. The local fill (`stage::populate`) and a
//! fleet host's (`manifest::materialize`) both build through these.
//!
//! Everything is created and looked at relative to an open directory (`mkdirat`,
//! `linkat`, `symlinkat`, `statat`): a path given by name makes the kernel walk it from
//! the root for every one of 20,000 files, which was most of an incremental deploy's
//! system time.

use std::cell::OnceCell;
use std::ffi::OsStr;
use std::fs::{File, FileTimes, Permissions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// A directory to work in by name (`*at` calls); never a symlink in its last part.
pub fn open_dir<P: rustix::path::Arg>(at: impl AsFd, path: P) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `rel` below the open directory `root` (`root` itself when `rel` is empty).
pub fn open_below(root: impl AsFd, rel: &Path) -> rustix::io::Result<OwnedFd> {
    if rel.as_os_str().is_empty() {
        open_dir(root, ".")
    } else {
        open_dir(root, rel)
    }
}

/// A file to read, by name in an open directory; never through a symlink in its last part.
pub fn open_file_at<P: rustix::path::Arg>(dir: impl AsFd, name: P) -> rustix::io::Result<File> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
}

// The field types of `struct stat` differ between architectures.
#[allow(clippy::unnecessary_cast)]
pub fn stat_mtime_ns(st: &Stat) -> i64 {
    st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64
}

/// The tree being built, at `dest` (which exists).
pub struct NewTree<'a> {
    dest: &'a Path,
    root: OwnedFd,
    /// Directories whose mode lacks the owner's rwx: moded by `finish`, once everything
    /// inside them exists.
    locked: Mutex<Vec<(PathBuf, u32)>>,
}

impl<'a> NewTree<'a> {
    pub fn open(dest: &'a Path) -> Result<Self> {
        Ok(NewTree {
            dest,
            root: open_dir(CWD, dest).ctx("open", dest)?,
            locked: Mutex::new(Vec::new()),
        })
    }

    /// The directory at `rel`, created by `NewDir::mkdir` (or the root, or a directory
    /// that was there already), given `mode` now or, when it would lock its owner out,
    /// at `finish`.
    pub fn dir(&self, rel: &Path, mode: Option<u32>) -> Result<NewDir<'_>> {
        let fd = open_below(&self.root, rel).ctx("open", &self.dest.join(rel))?;
        if let Some(mode) = mode {
            if mode & 0o700 == 0o700 {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                    .ctx("set the mode of", &self.dest.join(rel))?;
            } else if let Ok(mut locked) = self.locked.lock() {
                locked.push((rel.to_path_buf(), mode));
            }
        }
        Ok(NewDir {
            tree: self,
            rel: rel.to_path_buf(),
            fd,
        })
    }

    /// Gives the directories that would have locked their owner out their modes, deepest
    /// first (a path sorts after its parent).
    pub fn finish(self) -> Result<()> {
        let mut locked = self.locked.into_inner().unwrap_or_else(|p| p.into_inner());
        locked.sort_unstable_by(|a, b| b.cmp(a));
        for (rel, mode) in locked {
            rustix::fs::chmodat(
                &self.root,
                &rel,
                Mode::from_raw_mode(mode),
                AtFlags::empty(),
            )
            .ctx("set the mode of", &self.dest.join(&rel))?;
        }
        Ok(())
    }
}

/// One open directory of the tree being built.
pub struct NewDir<'t> {
    tree: &'t NewTree<'t>,
    rel: PathBuf,
    fd: OwnedFd,
}

impl NewDir<'_> {
    /// The full path of `name` here: for errors, and for the files to flush.
    pub fn path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.tree.dest.join(&self.rel).join(name)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A subdirectory, owner-only until `NewTree::dir` gives it its mode.
    pub fn mkdir(&self, name: &OsStr) -> Result<()> {
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700))
            .ctx("create", &self.path(name))
    }

    pub fn symlink(&self, name: &OsStr, target: &Path) -> Result<()> {
        rustix::fs::symlinkat(target, &self.fd, name).ctx("create the link", &self.path(name))
    }

    /// A copy of the open file `from` (described by `meta`, named `from_path` in errors)
    /// with its mode and times; returns it open for writing.
    pub fn copy_in(
        &self,
        from: &File,
        meta: &std::fs::Metadata,
        from_path: &Path,
        name: &OsStr,
    ) -> Result<File> {
        let to = self.path(name);
        let file = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ctx("create", &to)?;
        let file = File::from(file);
        copy_contents(from, meta, from_path, &file, &to)?;
        Ok(file)
    }

    /// `name` here becomes a hard link to the file of the same name in `previous` (through
    /// a temporary name and a rename, so it never goes missing); false when the file
    /// system will not link.
    pub fn replace_with_link(&self, previous: &PreviousDir<'_>, name: &OsStr) -> Result<bool> {
        let mut temp = std::ffi::OsString::from(".");
        temp.push(name);
        temp.push(".cutover-link");
        if !previous.link_into(&self.rel.join(name), self, &temp)? {
            return Ok(false);
        }
        rustix::fs::renameat(&self.fd, &temp, &self.fd, name)
            .ctx("replace with a link", &self.path(name))?;
        Ok(true)
    }
}

/// The release a new one is built after, where unchanged files are linked from.
pub struct PreviousTree<'a> {
    path: &'a Path,
    root: OwnedFd,
}

impl<'a> PreviousTree<'a> {
    /// `None` when it cannot be opened: then nothing is linked from it.
    pub fn open(path: &'a Path) -> Option<Self> {
        Some(PreviousTree {
            path,
            root: open_dir(CWD, path).ok()?,
        })
    }

    /// Its directory at `rel`, opened when first needed.
    pub fn dir(&self, rel: &Path) -> PreviousDir<'_> {
        PreviousDir {
            tree: self,
            rel: rel.to_path_buf(),
            here: OnceCell::new(),
        }
    }
}

/// One directory of the previous release (which may not have it).
pub struct PreviousDir<'t> {
    tree: &'t PreviousTree<'t>,
    rel: PathBuf,
    here: OnceCell<Option<OwnedFd>>,
}

impl PreviousDir<'_> {
    /// The full path of `name` here, for errors.
    pub fn path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.tree.path.join(&self.rel).join(name)
    }

    /// The full path of `from` (relative to the release's root), for errors.
    pub fn full_path(&self, from: &Path) -> PathBuf {
        self.tree.path.join(from)
    }

    /// Not there, or not a directory (a file or a link in the previous release): `None`.
    fn here(&self) -> Option<BorrowedFd<'_>> {
        self.here
            .get_or_init(|| open_below(&self.tree.root, &self.rel).ok())
            .as_ref()
            .map(AsFd::as_fd)
    }

    /// What is at `name` here, not following a link; `None` when nothing is.
    pub fn stat(&self, name: &OsStr) -> Result<Option<Stat>> {
        let Some(here) = self.here() else {
            return Ok(None);
        };
        match rustix::fs::statat(here, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("stat", self.path(name), e.into())),
        }
    }

    /// The directory and name to reach `from` (relative to the release's root) by: this
    /// directory when it holds it, else the release's root.
    fn locate<'p>(&self, from: &'p Path) -> (BorrowedFd<'_>, &'p Path) {
        if from.parent() == Some(self.rel.as_path()) {
            if let (Some(here), Some(name)) = (self.here(), from.file_name()) {
                return (here, Path::new(name));
            }
        }
        (self.tree.root.as_fd(), from)
    }

    /// Opens the previous release's file `from` (relative to its root) for reading.
    pub fn open(&self, from: &Path) -> Result<File> {
        let (dir, name) = self.locate(from);
        open_file_at(dir, name).ctx("open", &self.full_path(from))
    }

    /// Hard-links the previous release's file `from` (relative to its root) as `name` in
    /// `to`; false when the file system will not link (too many links, no hard links at
    /// all): the caller copies instead.
    pub fn link_into(&self, from: &Path, to: &NewDir<'_>, name: &OsStr) -> Result<bool> {
        let (dir, from_name) = self.locate(from);
        match rustix::fs::linkat(dir, from_name, &to.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::MLINK | Errno::XDEV | Errno::PERM | Errno::OPNOTSUPP) => Ok(false),
            Err(e) => Err(Error::io("hard-link", to.path(name), e.into())),
        }
    }
}

/// Copies `from` to `to` (which must not exist) with its mode and times: by full paths,
/// for callers that work on a few files.
pub fn copy_file(from: &Path, meta: &std::fs::Metadata, to: &Path) -> Result<()> {
    let src = File::open(from).ctx("open", from)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .ctx("create", to)?;
    copy_contents(&src, meta, from, &dst, to)
}

/// The bytes, mode and times of `src` into the new, empty `dst`.
fn copy_contents(
    src: &File,
    meta: &std::fs::Metadata,
    from: &Path,
    dst: &File,
    to: &Path,
) -> Result<()> {
    // A file with holes (512 blocks of 512 bytes cover fewer bytes than its length) is
    // copied by its data segments, or a 1 GiB sparse file becomes 1 GiB on disk.
    if meta.blocks().saturating_mul(512) < meta.len() {
        copy_sparse(src, dst, meta.len()).ctx("copy into", to)?;
    } else {
        // std::io::copy uses copy_file_range(2), which reflinks where the file system can.
        let (mut reader, mut writer) = (src, dst);
        std::io::copy(&mut reader, &mut writer).ctx("copy into", to)?;
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
            Err(Errno::NXIO) => break,
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
