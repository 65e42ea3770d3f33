use std::path::PathBuf;

/// Whether an error came from what the user asked for (exit 2) or from doing it (exit 1),
/// as `cutover_core::ErrorKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Usage,
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`git` could not be run: {0}")]
    GitMissing(#[source] std::io::Error),
    #[error("{dir} is not in a git repository, so there is nothing to resolve `{reference}` in")]
    NotARepository { dir: PathBuf, reference: String },
    #[error("`{0}` is not a ref cutover accepts")]
    BadRef(String),
    #[error("no ref `{reference}` in {repository}: {message}")]
    UnknownRef {
        repository: String,
        reference: String,
        message: String,
    },
    #[error("{path} is not in `{reference}` of {repository}")]
    NotInCommit {
        repository: String,
        reference: String,
        path: PathBuf,
    },
    #[error("could not fetch from {repository}: {message}")]
    Unreachable { repository: String, message: String },
    #[error("`git {command}` failed for {repository}: {message}")]
    Git {
        repository: String,
        command: String,
        message: String,
    },
    #[error("failed to {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotARepository { .. }
            | Error::NotInCommit { .. }
            | Error::BadRef(_)
            | Error::UnknownRef { .. } => ErrorKind::Usage,
            _ => ErrorKind::Failed,
        }
    }

    /// What the user can do about it, when we know.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::GitMissing(_) => "install git (cutover runs `git` from PATH)".into(),
            Error::NotARepository { .. } => {
                "deploy a directory inside a git work tree, or set [deploy] repository".into()
            }
            Error::BadRef(_) => "name a tag, a branch or a commit, e.g. `--ref v1.4.2`".into(),
            Error::UnknownRef { repository, .. } => {
                format!("`git ls-remote {repository}` lists its branches and tags")
            }
            Error::Unreachable { .. } => {
                "check the URL and that this machine can reach it (`git ls-remote` it); cutover never prompts for credentials".into()
            }
            _ => return None,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::io(op, path, source))
    }
}
