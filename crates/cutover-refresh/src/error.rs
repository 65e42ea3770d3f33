use cutover_php::apache::GracefulError;
use cutover_php::reload::ReloadError;

/// Whether the settings were wrong (exit 2) or doing the refresh failed (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Usage,
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// A setting is missing, malformed, or would break requests on this host.
    #[error("{message}")]
    Settings { message: String, hint: String },
    #[error(transparent)]
    Pool(#[from] cutover_php::Error),
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Apache(#[from] GracefulError),
    #[error(transparent)]
    Command(#[from] cutover_core::Error),
    /// `opcache_room = "refuse"` and the new release would not fit beside the live one.
    #[error("{what}; refused by [refresh] opcache_room = \"refuse\"")]
    NoRoom {
        what: String,
        /// A restart would make room: the wasted memory is enough.
        after_restart: bool,
    },
    #[error("pre-warm: {0}")]
    Warm(String),
    #[error("health check {target} failed after {attempts} attempts in {seconds:.1} s: {why}")]
    Health {
        target: String,
        attempts: u32,
        seconds: f64,
        why: String,
    },
}

impl RefreshError {
    pub(crate) fn settings(message: impl Into<String>, hint: impl Into<String>) -> Self {
        RefreshError::Settings {
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            RefreshError::Settings { .. } => ErrorKind::Usage,
            _ => ErrorKind::Failed,
        }
    }

    /// What the user can do about it, when we know.
    pub fn hint(&self) -> Option<String> {
        match self {
            RefreshError::Settings { hint, .. } => Some(hint.clone()),
            RefreshError::Pool(e) => e.hint(),
            RefreshError::Reload(e) => e.hint(),
            RefreshError::Apache(e) => e.hint(),
            // Its hint speaks of a failed stage ("nothing was switched"); here the switch
            // has happened, and the caller says what state it left.
            RefreshError::Command(cutover_core::Error::CommandFailed { .. }) => None,
            RefreshError::Command(e) => e.hint(),
            RefreshError::NoRoom {
                after_restart: true,
                ..
            } => Some(
                "wasted memory comes back only when OPcache restarts: `cutover php reset` at a quiet moment, or raise opcache.memory_consumption; with prewarm, opcache_room = \"restart\" (its default) restarts OPcache before the switch and re-warms".into(),
            ),
            RefreshError::NoRoom { .. } => Some(
                "two releases do not fit even in an emptied OPcache: raise opcache.memory_consumption (about two releases' worth; opcache.max_accelerated_files if the slots are short), or set [refresh] opcache_room = \"reset\" to reset OPcache after the switch".into(),
            ),
            RefreshError::Warm(_) => None,
            RefreshError::Health { .. } => Some(
                "the app must answer 2xx and print the release id (e.g. read __DIR__ . '/../RELEASE'); a stale OPcache answers with the old id: see [refresh]".into(),
            ),
        }
    }
}
