//! Writable directories: `[deploy] writable` paths of a staged release made writable for the
//! php-fpm pool's user (`storage`, `bootstrap/cache`, `var`).
//!
//! Two things make this more than `setfacl -R`:
//! - A release shares the inodes of unchanged files with the previous, live release (staging
//!   hard-links them). Changing the mode, ACL or owner of such an inode changes it in the live
//!   release too, so a regular file with more than one link is first replaced by a private
//!   copy (same bytes, mode, mtime), renamed over it.
//! - A path may lead elsewhere through a symlink: a `[shared]` dir is a link into `shared/`
//!   and is changed there (it is shared by design); any other link out of the release and
//!   `shared/` is refused rather than followed. The tree below a path is walked here, not by
//!   `setfacl -R` or `chmod -R`, so no symlink inside it is ever followed.
//!
//! Entries that already allow what is asked are left alone (and not split off), so applying
//! to `shared/` again on every deploy changes nothing the pool wrote there.

use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::layout::{normalize, DeployPath};
use crate::tree::{walk, Excludes};

/// The user the pool is assumed to run as when nothing better is known (Debian's php-fpm).
pub const DEFAULT_USER: &str = "www-data";

/// The command of `WritableMode::Acl`, looked up in `PATH`.
pub const SETFACL: &str = "setfacl";

/// How a path is made writable for the pool's user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WritableMode {
    /// POSIX ACLs: `u:<user>:rwX` and the same for the deploying user, plus default ACLs on
    /// directories so what the pool creates later stays writable for both (Deployer's `acl`).
    #[default]
    Acl,
    /// Group and others get `rwX`: anyone on the machine can write there. For file systems
    /// without ACLs.
    Chmod,
    /// The user owns everything below the path; needs root.
    Chown,
}

impl WritableMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WritableMode::Acl => "acl",
            WritableMode::Chmod => "chmod",
            WritableMode::Chown => "chown",
        }
    }
}

impl fmt::Display for WritableMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a path could not be made writable.
#[derive(Debug, thiserror::Error)]
pub enum WritableProblem {
    #[error("`{SETFACL}` is not installed")]
    NoSetfacl,
    #[error("there is no such user on this host")]
    UnknownUser,
    #[error("it is not a relative path inside the release")]
    NotInsideRelease,
    #[error("not permitted to change {at}: {detail}")]
    NotPermitted { at: PathBuf, detail: String },
    #[error("setfacl failed: {0}")]
    SetfaclFailed(String),
    #[error("failed to {op} {at}: {source}")]
    System {
        op: &'static str,
        at: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritableReport {
    /// Where each path ended up (the `shared/` directory for a shared one), in order.
    pub resolved: Vec<PathBuf>,
    /// Paths that did not exist and were created as directories.
    pub created: Vec<PathBuf>,
    /// Files and directories whose mode, ACL or owner changed.
    pub changed: u64,
    /// Hard-linked files replaced by a private copy before changing them.
    pub split: u64,
}

/// Makes each of `paths` (relative to `release_dir`) writable for `user` by `mode`.
///
/// Called on a staged release at its final path `releases/<id>`, after its commands ran and
/// unchanged files were linked to the previous release. A missing path is created as a
/// directory; a path that is a `[shared]` link is applied to its directory in `shared/`.
pub fn apply(
    release_dir: &Path,
    deploy: &DeployPath,
    paths: &[String],
    mode: WritableMode,
    user: &str,
) -> Result<WritableReport> {
    apply_with(release_dir, deploy, paths, mode, user, Path::new(SETFACL))
}

fn apply_with(
    release_dir: &Path,
    deploy: &DeployPath,
    paths: &[String],
    mode: WritableMode,
    user: &str,
    setfacl: &Path,
) -> Result<WritableReport> {
    let mut report = WritableReport::default();
    if paths.is_empty() {
        return Ok(report);
    }
    let fail = |path: &Path, problem| Error::Writable {
        path: path.to_path_buf(),
        mode,
        user: user.to_string(),
        problem,
    };
    let Some(owner) = lookup_user(user) else {
        return Err(fail(release_dir, WritableProblem::UnknownUser));
    };
    let release_root = std::fs::canonicalize(release_dir).ctx("resolve", release_dir)?;
    let shared = deploy.shared_dir();
    let shared_root = std::fs::canonicalize(&shared).unwrap_or_else(|_| normalize(&shared));
    let roots = [release_root.clone(), shared_root];
    let target = Target {
        mode,
        uid: owner.uid,
        // Root needs no ACL entry: it can remove what the pool wrote anyway.
        deployer: Some(rustix::process::geteuid().as_raw()).filter(|&uid| uid != 0),
        root: rustix::process::geteuid().is_root(),
    };

    for rel in paths {
        let Some(rel_path) = relative_inside(rel) else {
            return Err(fail(Path::new(rel), WritableProblem::NotInsideRelease));
        };
        let path = resolve(&release_root, &rel_path, &roots, rel)?;
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&path).ctx("create the writable directory", &path)?;
                report.created.push(path.clone());
                std::fs::symlink_metadata(&path).ctx("stat", &path)?
            }
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        if !meta.is_dir() && !meta.is_file() {
            return Err(Error::UnsupportedFileType(path));
        }
        let found = Found::default();
        found.consider(&path, &meta, &target);
        if meta.is_dir() {
            walk(&path, &Excludes::default(), &|entry| {
                if entry.file_type.is_symlink() {
                    check_link(entry.path, &roots, rel)?;
                    return Ok(false);
                }
                let meta = match entry.dir_entry.metadata() {
                    Ok(meta) => meta,
                    // The pool may remove what it wrote to shared/ at any time.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(Error::io("stat", entry.path, e)),
                };
                found.consider(entry.path, &meta, &target);
                Ok(meta.is_dir())
            })?;
        }
        let found = found.into_inner();
        // Split only after the walk: a copy renamed into a directory being listed could be
        // listed again.
        for (file, meta) in &found.linked {
            split_hard_link(file, meta, target.root).map_err(|problem| fail(&path, problem))?;
        }
        report.split += found.linked.len() as u64;
        report.changed += (found.files.len() + found.dirs.len()) as u64;
        target
            .change(&found, setfacl)
            .map_err(|problem| fail(&path, problem))?;
        report.resolved.push(path);
    }
    Ok(report)
}

/// What is asked of each entry, resolved once.
struct Target {
    mode: WritableMode,
    uid: u32,
    /// The user running cutover, when not root: the next deploy's cleanup must be able to
    /// remove what the pool writes.
    deployer: Option<u32>,
    root: bool,
}

/// Entries below one path that need a change.
#[derive(Default)]
struct Found {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// Files among `files` with other links, to be split off first.
    linked: Vec<(PathBuf, Metadata)>,
}

impl Found {
    fn consider(&self, path: &Path, meta: &Metadata, target: &Target) {
        if !(meta.is_dir() || meta.is_file()) || target.allows(path, meta) {
            return;
        }
        let mut entries = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if meta.is_dir() {
            entries.dirs.push(path.to_path_buf());
        } else {
            if meta.nlink() > 1 {
                entries.linked.push((path.to_path_buf(), meta.clone()));
            }
            entries.files.push(path.to_path_buf());
        }
    }

    fn into_inner(self) -> Entries {
        self.inner
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Target {
    /// Whether the entry already allows what is asked (then it is neither split nor changed).
    fn allows(&self, path: &Path, meta: &Metadata) -> bool {
        let dir = meta.is_dir();
        match self.mode {
            WritableMode::Chown => meta.uid() == self.uid,
            WritableMode::Chmod => {
                let want = if dir { 0o077 } else { 0o066 };
                meta.mode() & want == want
            }
            WritableMode::Acl => {
                let want = if dir { 7 } else { 6 };
                let uids: Vec<u32> = std::iter::once(self.uid).chain(self.deployer).collect();
                let grants = |name: &str| {
                    acl_entries(path, name).is_some_and(|acl| {
                        uids.iter()
                            .all(|&uid| acl.user_perm(uid).is_some_and(|perm| perm & want == want))
                    })
                };
                grants(ACL_ACCESS) && (!dir || grants(ACL_DEFAULT))
            }
        }
    }

    fn change(&self, found: &Entries, setfacl: &Path) -> Result<(), WritableProblem> {
        match self.mode {
            WritableMode::Acl => {
                let spec = std::iter::once(self.uid)
                    .chain(self.deployer)
                    .map(|uid| format!("u:{uid}:rwX"))
                    .collect::<Vec<_>>()
                    .join(",");
                let every: Vec<&PathBuf> = found.dirs.iter().chain(&found.files).collect();
                run_setfacl(setfacl, &["-m", &spec], &every)?;
                let dirs: Vec<&PathBuf> = found.dirs.iter().collect();
                run_setfacl(setfacl, &["-d", "-m", &spec], &dirs)
            }
            WritableMode::Chmod => {
                for path in found.dirs.iter().chain(&found.files) {
                    let Some((fd, stat)) = open_no_follow(path)? else {
                        continue;
                    };
                    let mode = stat.st_mode & 0o7777;
                    let is_dir = stat.st_mode & 0o170000 == 0o040000;
                    // rwX for group and others: execute only for directories and for files
                    // someone may already execute.
                    let add = if is_dir || mode & 0o111 != 0 {
                        0o077
                    } else {
                        0o066
                    };
                    // fchmod refuses an O_PATH descriptor; its /proc link reaches the very
                    // inode that was opened (what glibc does for fchmodat without following).
                    let proc = proc_path(&fd);
                    std::fs::set_permissions(&proc, std::fs::Permissions::from_mode(mode | add))
                        .map_err(|e| system("chmod", path, e))?;
                }
                Ok(())
            }
            WritableMode::Chown => {
                let uid = rustix::process::Uid::from_raw(self.uid);
                for path in found.dirs.iter().chain(&found.files) {
                    let Some((fd, _)) = open_no_follow(path)? else {
                        continue;
                    };
                    rustix::fs::chownat(&fd, "", Some(uid), None, rustix::fs::AtFlags::EMPTY_PATH)
                        .map_err(|e| system("chown", path, e.into()))?;
                }
                Ok(())
            }
        }
    }
}

/// Opens the entry itself, never what a symlink put there since the walk leads to; `None`
/// when it is gone or no longer a file or directory.
fn open_no_follow(
    path: &Path,
) -> Result<Option<(rustix::fd::OwnedFd, rustix::fs::Stat)>, WritableProblem> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(system("open", path, e.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| system("stat", path, e.into()))?;
    let kind = stat.st_mode & 0o170000;
    Ok((kind == 0o040000 || kind == 0o100000).then_some((fd, stat)))
}

fn proc_path(fd: &rustix::fd::OwnedFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/fd/{}",
        rustix::fd::AsRawFd::as_raw_fd(fd)
    ))
}

fn system(op: &'static str, at: &Path, source: std::io::Error) -> WritableProblem {
    if source.kind() == std::io::ErrorKind::PermissionDenied {
        return WritableProblem::NotPermitted {
            at: at.to_path_buf(),
            detail: source.to_string(),
        };
    }
    WritableProblem::System {
        op,
        at: at.to_path_buf(),
        source,
    }
}

/// `setfacl -P` (never through a symlink, even one that appeared since the walk) in batches
/// that stay well below the argument size limit.
fn run_setfacl(setfacl: &Path, args: &[&str], paths: &[&PathBuf]) -> Result<(), WritableProblem> {
    for batch in paths.chunks(256) {
        let output = Command::new(setfacl)
            .arg("-P")
            .args(args)
            .args(batch)
            .env("LC_ALL", "C")
            .output();
        let output = match output {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WritableProblem::NoSetfacl)
            }
            Err(e) => return Err(system("run", setfacl, e)),
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            let detail = if stderr.is_empty() {
                format!("exit status {}", output.status)
            } else {
                stderr
            };
            if detail.contains("Operation not permitted") {
                let at = batch.first().map(|p| p.to_path_buf()).unwrap_or_default();
                return Err(WritableProblem::NotPermitted { at, detail });
            }
            return Err(WritableProblem::SetfaclFailed(detail));
        }
    }
    Ok(())
}

/// Replaces a hard-linked file by a copy with the same bytes, mode, owner and mtime, renamed
/// over it: the other links (another release's file) keep the old inode untouched.
fn split_hard_link(path: &Path, meta: &Metadata, root: bool) -> Result<(), WritableProblem> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.cutover-split.{}", std::process::id()));
    let result = (|| {
        std::fs::copy(path, &temp).map_err(|e| system("copy", path, e))?;
        if root {
            std::os::unix::fs::lchown(&temp, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| system("chown", &temp, e))?;
        }
        // After chown, which clears set-id bits.
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| system("chmod", &temp, e))?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&temp)
            .map_err(|e| system("open", &temp, e))?;
        let times = std::fs::FileTimes::new()
            .set_modified(meta.modified().map_err(|e| system("stat", path, e))?)
            .set_accessed(meta.accessed().map_err(|e| system("stat", path, e))?);
        file.set_times(times)
            .map_err(|e| system("set the times of", &temp, e))?;
        std::fs::rename(&temp, path).map_err(|e| system("rename a private copy over", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// `rel` in normal form, or `None` when it is absolute, empty or leaves with `..`.
fn relative_inside(rel: &str) -> Option<PathBuf> {
    let mut normal = PathBuf::new();
    for part in Path::new(rel).components() {
        match part {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!normal.as_os_str().is_empty()).then_some(normal)
}

/// Where `rel` below the release really is, following symlinks only where they stay in one
/// of `roots` (the release, `shared/`). The missing end of the path is kept as written.
fn resolve(release_root: &Path, rel: &Path, roots: &[PathBuf], name: &str) -> Result<PathBuf> {
    let mut at = release_root.to_path_buf();
    let mut parts = rel.components();
    while let Some(part) = parts.next() {
        let next = at.join(part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                at = check_link(&next, roots, name)?;
            }
            Ok(_) => at = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(parts.fold(next, |acc, part| acc.join(part)));
            }
            Err(e) => return Err(Error::io("stat", next, e)),
        }
    }
    Ok(at)
}

/// Where the symlink `link` leads, fully resolved, if that is inside one of `roots`.
fn check_link(link: &Path, roots: &[PathBuf], name: &str) -> Result<PathBuf> {
    let text = std::fs::read_link(link).ctx("read the link", link)?;
    let parent = link.parent().unwrap_or(Path::new("/"));
    let lexical = normalize(&parent.join(&text));
    let real = crate::tree::real_path(&lexical);
    if roots.iter().any(|root| real.starts_with(root)) {
        return Ok(real);
    }
    Err(Error::WritableLinkOutside {
        path: name.to_string(),
        link: link.to_path_buf(),
        target: real,
    })
}

struct User {
    uid: u32,
}

/// The user's id, from /etc/passwd or, for users from LDAP and the like, `getent`.
fn lookup_user(name: &str) -> Option<User> {
    if !is_user_name(name) {
        return None;
    }
    let from_line = |line: &str| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        let uid = fields.nth(1)?.trim().parse().ok()?;
        Some(User { uid })
    };
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        if let Some(user) = passwd.lines().find_map(from_line) {
            return Some(user);
        }
    }
    let output = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(from_line)
}

/// A user name as `useradd` accepts it (and never an option or an ACL spec).
pub fn is_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
}

const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";

/// The Linux xattr form of a POSIX ACL: a version, then (tag, perm, id) entries.
pub struct Acl {
    entries: Vec<(u16, u16, u32)>,
}

const ACL_USER: u16 = 0x02;
const ACL_MASK: u16 = 0x10;

impl Acl {
    pub fn parse(bytes: &[u8]) -> Option<Acl> {
        let (version, rest) = bytes.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*version) != 2 || rest.len() % 8 != 0 {
            return None;
        }
        let entries = rest
            .chunks_exact(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect();
        Some(Acl { entries })
    }

    /// The effective permission (rwx as 4/2/1) of the named user entry for `uid`, after the
    /// mask; `None` without such an entry.
    pub fn user_perm(&self, uid: u32) -> Option<u16> {
        let perm = self
            .entries
            .iter()
            .find(|(tag, _, id)| *tag == ACL_USER && *id == uid)?
            .1;
        let mask = self
            .entries
            .iter()
            .find(|(tag, _, _)| *tag == ACL_MASK)
            .map_or(7, |e| e.1);
        Some(perm & mask)
    }
}

/// The ACL stored in the xattr `name` of `path` (never through a symlink).
pub fn acl_entries(path: &Path, name: &str) -> Option<Acl> {
    let mut buf = [0u8; 1024];
    let len = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    Acl::parse(&buf[..len])
}

/// The ACL xattr names, for callers that check what `apply` did.
pub const ACL_XATTRS: [&str; 2] = [ACL_ACCESS, ACL_DEFAULT];

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A deploy path with one release `2` whose files are hard links into release `1`, as
    /// staging leaves unchanged files.
    struct Fixture {
        _dir: tempfile::TempDir,
        deploy: DeployPath,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let deploy = DeployPath::new(dir.path().join("app")).unwrap();
            deploy.ensure_layout().unwrap();
            for id in ["1", "2"] {
                std::fs::create_dir(deploy.releases_dir().join(id)).unwrap();
            }
            Fixture { _dir: dir, deploy }
        }
        fn release(&self, id: &str) -> PathBuf {
            self.deploy.releases_dir().join(id)
        }
        fn apply(&self, paths: &[&str], mode: WritableMode, user: &str) -> Result<WritableReport> {
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            apply(&self.release("2"), &self.deploy, &paths, mode, user)
        }
        /// `rel` in both releases, one inode.
        fn linked_file(&self, rel: &str, text: &str, mode: u32) {
            let old = self.release("1").join(rel);
            let new = self.release("2").join(rel);
            std::fs::create_dir_all(old.parent().unwrap()).unwrap();
            std::fs::create_dir_all(new.parent().unwrap()).unwrap();
            std::fs::write(&old, text).unwrap();
            std::fs::set_permissions(&old, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::hard_link(&old, &new).unwrap();
        }
    }

    fn uid_of(name: &str) -> u32 {
        lookup_user(name).unwrap().uid
    }

    fn pool_user() -> &'static str {
        if lookup_user("www-data").is_some() {
            "www-data"
        } else {
            "nobody"
        }
    }

    fn getfacl(path: &Path) -> String {
        let out = Command::new("getfacl")
            .arg("-p")
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    fn have_setfacl() -> bool {
        let found = Command::new(SETFACL).arg("--version").output().is_ok();
        if !found {
            eprintln!("skipped: setfacl is not installed (Debian package `acl`)");
        }
        found
    }

    #[test]
    fn acl_mode_grants_the_user_rwx_and_a_default_acl() {
        if !have_setfacl() {
            return;
        }
        let fx = Fixture::new();
        let user = pool_user();
        let storage = fx.release("2").join("storage");
        std::fs::create_dir_all(storage.join("logs")).unwrap();
        std::fs::write(storage.join("logs/app.log"), "x").unwrap();
        let report = fx.apply(&["storage"], WritableMode::Acl, user).unwrap();
        assert_eq!(report.changed, 3, "{report:?}");
        let uid = uid_of(user);
        for dir in [storage.clone(), storage.join("logs")] {
            assert_eq!(
                acl_entries(&dir, ACL_ACCESS).unwrap().user_perm(uid),
                Some(7)
            );
            assert_eq!(
                acl_entries(&dir, ACL_DEFAULT).unwrap().user_perm(uid),
                Some(7)
            );
            let text = getfacl(&dir);
            assert!(text.contains(&format!("\nuser:{user}:rwx")), "{text}");
            assert!(text.contains(&format!("default:user:{user}:rwx")), "{text}");
        }
        let file = storage.join("logs/app.log");
        assert_eq!(
            acl_entries(&file, ACL_ACCESS).unwrap().user_perm(uid),
            Some(6)
        );
        // A file created later inherits the default ACL.
        std::fs::write(storage.join("logs/new.log"), "y").unwrap();
        let inherited = acl_entries(&storage.join("logs/new.log"), ACL_ACCESS).unwrap();
        assert!(inherited.user_perm(uid).unwrap() & 6 == 6);
        // Applying again finds nothing to do.
        let again = fx.apply(&["storage"], WritableMode::Acl, user).unwrap();
        assert_eq!((again.changed, again.split), (0, 0), "{again:?}");
    }

    #[test]
    fn a_file_linked_to_another_release_is_split_off_before_its_acl_changes() {
        if !have_setfacl() {
            return;
        }
        let fx = Fixture::new();
        fx.linked_file("storage/keep.txt", "live bytes", 0o640);
        fx.linked_file("public/index.php", "<?php", 0o644);
        let old = fx.release("1").join("storage/keep.txt");
        let new = fx.release("2").join("storage/keep.txt");
        let before = std::fs::metadata(&old).unwrap();
        let report = fx
            .apply(&["storage"], WritableMode::Acl, pool_user())
            .unwrap();
        assert_eq!(report.split, 1, "{report:?}");

        let old_after = std::fs::metadata(&old).unwrap();
        let new_after = std::fs::metadata(&new).unwrap();
        assert_eq!(
            old_after.ino(),
            before.ino(),
            "the live release keeps its inode"
        );
        assert_eq!(old_after.mode(), before.mode());
        assert_eq!(old_after.nlink(), 1);
        assert!(acl_entries(&old, ACL_ACCESS).is_none(), "{}", getfacl(&old));
        assert_ne!(new_after.ino(), before.ino());
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "live bytes");
        assert_eq!(new_after.mtime(), before.mtime());
        assert_eq!(new_after.mtime_nsec(), before.mtime_nsec());
        assert_eq!(new_after.uid(), before.uid());
        let uid = uid_of(pool_user());
        assert_eq!(
            acl_entries(&new, ACL_ACCESS).unwrap().user_perm(uid),
            Some(6)
        );
        // Outside the writable path, links stay links.
        let index = std::fs::metadata(fx.release("2").join("public/index.php")).unwrap();
        assert_eq!(index.nlink(), 2);
    }

    #[test]
    fn chmod_mode_gives_group_and_others_write() {
        let fx = Fixture::new();
        let cache = fx.release("2").join("bootstrap/cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(cache.join("a.php"), "").unwrap();
        std::fs::set_permissions(cache.join("a.php"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        fx.linked_file("bootstrap/cache/run.sh", "#!/bin/sh", 0o700);
        let report = fx
            .apply(&["bootstrap/cache"], WritableMode::Chmod, pool_user())
            .unwrap();
        assert_eq!(report.split, 1);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&cache), 0o777);
        assert_eq!(mode(&cache.join("a.php")), 0o666);
        assert_eq!(mode(&cache.join("run.sh")), 0o777);
        assert_eq!(mode(&fx.release("1").join("bootstrap/cache/run.sh")), 0o700);
    }

    #[test]
    fn chown_mode_gives_the_user_everything_below_the_path() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: chown mode needs root and these tests do not run as root");
            return;
        }
        let fx = Fixture::new();
        let var = fx.release("2").join("var");
        std::fs::create_dir_all(var.join("cache")).unwrap();
        fx.linked_file("var/cache/x", "x", 0o644);
        let user = pool_user();
        fx.apply(&["var"], WritableMode::Chown, user).unwrap();
        let uid = uid_of(user);
        for path in [var.clone(), var.join("cache"), var.join("cache/x")] {
            assert_eq!(std::fs::metadata(&path).unwrap().uid(), uid, "{path:?}");
        }
        let old = std::fs::metadata(fx.release("1").join("var/cache/x")).unwrap();
        assert_eq!(old.uid(), 0, "the other release's file keeps its owner");
    }

    #[test]
    fn a_symlink_out_of_the_release_is_refused_and_not_followed() {
        let fx = Fixture::new();
        let outside = tempfile::tempdir().unwrap();
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let storage = fx.release("2").join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        symlink(outside.path(), storage.join("escape")).unwrap();
        let err = fx
            .apply(&["storage"], WritableMode::Chmod, pool_user())
            .unwrap_err();
        assert!(
            matches!(&err, Error::WritableLinkOutside { link, .. } if link.ends_with("storage/escape")),
            "{err}"
        );
        assert!(err.to_string().contains("storage/escape"), "{err}");
        assert!(err.hint().is_some());
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
        let mode = std::fs::metadata(outside.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);

        // The path itself a link: to another release (inside the deploy path) is refused too.
        symlink("../1", fx.release("2").join("cache")).unwrap();
        let err = fx
            .apply(&["cache"], WritableMode::Chmod, pool_user())
            .unwrap_err();
        assert!(matches!(err, Error::WritableLinkOutside { .. }), "{err}");
    }

    #[test]
    fn a_shared_dir_is_made_writable_in_shared() {
        let fx = Fixture::new();
        let shared = fx.deploy.shared_dir().join("storage");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../../shared/storage", fx.release("2").join("storage")).unwrap();
        let report = fx
            .apply(
                &["storage", "storage/logs"],
                WritableMode::Chmod,
                pool_user(),
            )
            .unwrap();
        let real_shared = std::fs::canonicalize(&shared).unwrap();
        assert_eq!(
            report.resolved,
            [real_shared.clone(), real_shared.join("logs")]
        );
        assert_eq!(report.created, [real_shared.join("logs")]);
        assert_eq!(std::fs::metadata(&shared).unwrap().mode() & 0o777, 0o777);
        assert!(std::fs::symlink_metadata(fx.release("2").join("storage"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_missing_path_is_created_as_a_directory() {
        let fx = Fixture::new();
        let report = fx
            .apply(&["bootstrap/cache"], WritableMode::Chmod, pool_user())
            .unwrap();
        let cache = fx.release("2").join("bootstrap/cache");
        assert!(cache.is_dir());
        assert_eq!(report.created.len(), 1);
        assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o777, 0o777);
    }

    #[test]
    fn a_missing_setfacl_is_named_with_the_package_to_install() {
        let fx = Fixture::new();
        std::fs::create_dir(fx.release("2").join("storage")).unwrap();
        let err = apply_with(
            &fx.release("2"),
            &fx.deploy,
            &["storage".to_string()],
            WritableMode::Acl,
            pool_user(),
            Path::new("/nonexistent/setfacl"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("storage") && text.contains("acl mode"),
            "{text}"
        );
        assert!(text.contains(pool_user()), "{text}");
        assert!(
            err.hint().unwrap().contains("`acl` package"),
            "{:?}",
            err.hint()
        );
    }

    #[test]
    fn an_unknown_user_or_a_path_leaving_the_release_is_refused() {
        let fx = Fixture::new();
        let err = fx
            .apply(&["storage"], WritableMode::Acl, "no-such-user-here")
            .unwrap_err();
        assert!(err.to_string().contains("no-such-user-here"), "{err}");
        assert!(err.hint().unwrap().contains("writable_user"));
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
        for bad in ["../shared", "/etc", "."] {
            let err = fx
                .apply(&[bad], WritableMode::Chmod, pool_user())
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{bad}: {err}");
        }
        assert!(!fx.release("2").join("storage").exists());
    }

    #[test]
    fn acl_xattrs_parse() {
        // version 2; user_obj rw; user 33 rwx; mask r-x; other r.
        let mut bytes = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 7, 33),
            (0x10, 5, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            bytes.extend(tag.to_le_bytes());
            bytes.extend(perm.to_le_bytes());
            bytes.extend(id.to_le_bytes());
        }
        let acl = Acl::parse(&bytes).unwrap();
        assert_eq!(acl.user_perm(33), Some(5));
        assert_eq!(acl.user_perm(34), None);
        assert!(Acl::parse(&bytes[..7]).is_none());
    }
}
