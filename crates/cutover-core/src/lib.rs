//! Atomic releases on a deploy path: staging, the one-rename switch, the lock, the history,
//! rollback and cleanup. No printing and no exits here; the binary decides how to tell.

pub mod assets;
pub mod bytes;
pub mod capistrano;
pub mod cleanup;
pub mod command;
pub mod deploy;
pub mod error;
pub mod history;
pub mod hooks;
pub mod identity;
pub mod layout;
pub mod listing;
pub mod lock;
pub mod manifest;
pub mod release;
pub mod release_tree;
pub mod stage;
pub mod swap;
pub mod switch;
mod trash;
pub mod tree;
pub mod writable;

pub use error::{Error, ErrorKind, Result};

/// Whether a command changes the deploy path. Changing it takes the lock, so the type
/// makes "changed something without holding the lock" impossible to write.
#[derive(Clone, Copy)]
pub enum Mode<'a> {
    DryRun,
    Apply(&'a DeployLock),
}

impl Mode<'_> {
    pub fn is_dry_run(&self) -> bool {
        matches!(self, Mode::DryRun)
    }
}
pub use layout::DeployPath;
pub use lock::DeployLock;
pub use release::ReleaseId;
