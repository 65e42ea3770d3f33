use std::path::PathBuf;

use crate::lock::LockHolder;
use crate::writable::{WritableMode, WritableProblem};

/// Whether an error came from what the user asked for (exit 2) or from doing it (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a missing source, an unsafe release id, an unknown release.
    Usage,
    /// The operation failed; the deploy path is as it was.
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("source {0} does not exist")]
    SourceMissing(PathBuf),
    #[error("source {0} is not a directory")]
    SourceNotDirectory(PathBuf),
    #[error("release id `{id}` is not safe: {reason}")]
    UnsafeReleaseId { id: String, reason: &'static str },
    #[error("release `{0}` already exists")]
    ReleaseExists(String),
    #[error("no release `{id}` in {deploy_path}")]
    NoSuchRelease {
        id: String,
        deploy_path: PathBuf,
        available: Vec<String>,
    },
    #[error("there is no release before `{0}` to roll back to")]
    NoEarlierRelease(String),
    #[error("{0} has no current release")]
    NoCurrentRelease(PathBuf),
    #[error("symlink {link} points outside the source ({target})")]
    SymlinkOutside { link: PathBuf, target: PathBuf },
    #[error("{0} is neither a file, a directory nor a symlink")]
    UnsupportedFileType(PathBuf),
    #[error("{0} is a real directory, not a symlink")]
    CurrentNotSymlink(PathBuf),
    #[error("shared file {0} does not exist")]
    SharedFileMissing(PathBuf),
    #[error("another cutover holds the lock on {path}: {holder}")]
    LockHeld {
        path: PathBuf,
        holder: Box<LockHolder>,
    },
    #[error("gave up waiting for the lock on {path} after {waited_secs:.1} s: {holder}")]
    LockTimeout {
        path: PathBuf,
        holder: Box<LockHolder>,
        waited_secs: f64,
    },
    #[error("{phase} command `{command}` {status}{}", tail_text(.tail))]
    CommandFailed {
        phase: &'static str,
        command: String,
        status: String,
        tail: Vec<String>,
    },
    #[error("{phase} command `{command}` did not finish within {limit}; it was killed with everything it started{}", tail_text(.tail))]
    CommandTimedOut {
        phase: &'static str,
        command: String,
        limit: String,
        tail: Vec<String>,
    },
    #[error("refused a manifest entry {0}")]
    BadManifest(String),
    #[error("{0} arrived with other bytes than its manifest hash says")]
    ContentMismatch(PathBuf),
    #[error("{0} has a name that is not UTF-8, which a manifest cannot carry")]
    NonUtf8Path(PathBuf),
    #[error("the release file `{0}` is a directory of the release")]
    ReleaseFileIsDirectory(String),
    #[error("the deploy path {deploy_path} is inside the release being staged from {source_dir}")]
    DeployPathInsideSource {
        deploy_path: PathBuf,
        source_dir: PathBuf,
    },
    #[error("cannot make {path} writable for `{user}` ({mode} mode): {problem}")]
    Writable {
        path: PathBuf,
        mode: crate::writable::WritableMode,
        user: String,
        #[source]
        problem: crate::writable::WritableProblem,
    },
    #[error("writable path `{path}`: the symlink {link} leads out of the release and shared/ (to {target})")]
    WritableLinkOutside {
        path: String,
        link: PathBuf,
        target: PathBuf,
    },
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let mut text = String::from("; last lines of its output:");
    for line in tail {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::SourceMissing(_)
            | Error::SourceNotDirectory(_)
            | Error::UnsafeReleaseId { .. }
            | Error::ReleaseExists(_)
            | Error::NoSuchRelease { .. }
            | Error::NoEarlierRelease(_)
            | Error::DeployPathInsideSource { .. }
            | Error::SymlinkOutside { .. }
            | Error::UnsupportedFileType(_)
            | Error::NonUtf8Path(_)
            | Error::ReleaseFileIsDirectory(_)
            | Error::WritableLinkOutside { .. } => ErrorKind::Usage,
            Error::Writable {
                problem: WritableProblem::UnknownUser | WritableProblem::NotInsideRelease,
                ..
            } => ErrorKind::Usage,
            _ => ErrorKind::Failed,
        }
    }

    /// What the user can do about it, when we know.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Io { source, path, op } => match source.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    let access = if op.starts_with("read") || op.starts_with("list") || op.starts_with("stat") {
                        "read"
                    } else {
                        "write"
                    };
                    format!(
                        "the user running cutover cannot {access} there; run as the owner of {} or fix its permissions",
                        path.display()
                    )
                }
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    "the disk is full; free space (e.g. `cutover cleanup --keep 2`) and deploy again".into()
                }
                _ => return None,
            },
            Error::SourceMissing(_) => "pass the directory to deploy, e.g. `cutover deploy ./build --to /var/www/app`".into(),
            Error::UnsafeReleaseId { .. } => {
                "use letters, digits, `.`, `_` and `-` only, e.g. `--release 2024-05-01.1`".into()
            }
            Error::ReleaseExists(_) => "choose another id with --release, or leave it out to use a timestamp".into(),
            Error::NoSuchRelease { available, .. } if !available.is_empty() => {
                format!("available releases: {}", available.join(", "))
            }
            Error::NoSuchRelease { .. } => "the deploy path has no releases yet; run `cutover deploy` first".into(),
            Error::SymlinkOutside { .. } => {
                "make the link relative and inside the app, or list the target in [shared] dirs/files".into()
            }
            Error::CurrentNotSymlink(_) => {
                "move that directory into releases/<id> and deploy again; cutover only replaces a symlink".into()
            }
            Error::SharedFileMissing(path) => {
                format!("create it once on the target (e.g. `touch {}`), then deploy again", path.display())
            }
            Error::LockHeld { .. } => {
                "wait for it to finish, or pass `--wait-lock 60s` to queue behind it".into()
            }
            Error::LockTimeout { .. } => {
                "the other deploy is still running; wait longer with a larger --wait-lock, or check that it is not stuck".into()
            }
            Error::NoEarlierRelease(_) => {
                "`cutover releases` lists the releases; name one with `cutover rollback <id>`, or deploy another first".into()
            }
            Error::NoCurrentRelease(_) => "deploy a release first, or `cutover switch <id>` to one".into(),
            Error::NonUtf8Path(_) => "rename it, or leave it out with [deploy] exclude".into(),
            Error::CommandFailed { phase, .. } | Error::CommandTimedOut { phase, .. }
                if matches!(*phase, "after_switch" | "after_rollback") =>
            {
                "the release is live and stays so; fix the command and run it by hand on that host".into()
            }
            Error::CommandFailed { .. } => "nothing was switched; fix the command and deploy again".into(),
            Error::CommandTimedOut { .. } => {
                "nothing was switched; find what the command waits for (a prompt, the network, a lock), or raise [hooks] timeout".into()
            }
            Error::DeployPathInsideSource { .. } => "deploy to a path outside the source directory".into(),
            Error::ReleaseFileIsDirectory(_) => {
                "name a file that is not in the app for [deploy] release_file (default RELEASE)".into()
            }
            Error::Writable { mode, user, problem, .. } => writable_hint(*mode, user, problem),
            Error::WritableLinkOutside { .. } => {
                "a writable path may lead only into the release or into shared/ (a [shared] dir); remove the link, or list its directory in [shared] dirs".into()
            }
            _ => return None,
        })
    }
}

fn writable_hint(mode: WritableMode, user: &str, problem: &WritableProblem) -> String {
    match problem {
        WritableProblem::NoSetfacl => {
            "install the `acl` package (Debian/Ubuntu: `apt-get install acl`), or set [deploy] writable_mode = \"chmod\"".into()
        }
        WritableProblem::UnknownUser => format!(
            "create the user `{user}`, or set [deploy] writable_user to the user the php-fpm pool runs as (`user =` in its pool config)"
        ),
        WritableProblem::NotInsideRelease => "name a relative path without `..`, e.g. `storage`".into(),
        WritableProblem::NotPermitted { .. } if mode == WritableMode::Chown => {
            "chown needs root: run cutover as root, or use writable_mode = \"acl\"".into()
        }
        WritableProblem::NotPermitted { .. } => {
            "only a file's owner or root may change its permissions: deploy as the user owning the deploy path, or as root".into()
        }
        WritableProblem::SetfaclFailed(detail) if detail.contains("Operation not supported") => {
            "the file system does not support ACLs (mount it with `acl`), or set [deploy] writable_mode = \"chmod\"".into()
        }
        WritableProblem::SetfaclFailed(_) | WritableProblem::System { .. } => {
            format!("nothing was switched; fix the cause, or change [deploy] writable_mode (now `{mode}`)")
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the path and the operation to io errors, as `fs-err` would, without wrapping every call.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::io(op, path, source))
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|errno| Error::io(op, path, errno.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_permission_error_says_whether_reading_or_writing_failed() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let read = Error::io("read", "/x", denied()).hint().unwrap();
        assert!(read.contains("cannot read there"), "{read}");
        let listed = Error::io("list", "/x", denied()).hint().unwrap();
        assert!(listed.contains("cannot read there"), "{listed}");
        let write = Error::io("create", "/x", denied()).hint().unwrap();
        assert!(write.contains("cannot write there"), "{write}");
    }
}
