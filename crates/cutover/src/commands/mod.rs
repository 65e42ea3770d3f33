//! One module per command; each returns `Result<()>` and prints through the `Printer`.

pub mod agent;
pub mod cleanup;
pub mod completions;
pub mod config;
pub mod deploy;
pub mod doctor;
pub mod init;
pub mod lint;
pub mod man;
pub mod php;
pub mod releases;
pub mod rollback;
pub mod switch;
pub mod verify;
