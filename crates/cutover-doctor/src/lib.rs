//! Whether a server setup is safe for atomic symlink deploys, and what a safe one looks
//! like.
//!
//! `cutover doctor` gathers [`Facts`] from the real configuration — nginx as `nginx -T`
//! shows it, Apache as `-M`/`-S` show it, php-fpm as `php-fpm -tt` shows it and the pool's
//! ini values as PHP reports them over FastCGI — and [`check`] turns them into
//! [`Finding`]s, each with a severity, one line of why, and the config line that fixes it.
//! [`snippets`] prints the recommended configuration, the same knowledge turned around:
//! the tests start servers from the snippets and require `check` to find nothing.
//!
//! This is its own crate, apart from `cutover-php` (which *acts* on a running PHP: status,
//! reset, reload, graceful restart): here nothing is changed, everything is read and
//! judged, and most of it — the nginx parser, the rules — is pure and tested directly.

pub mod apache;
mod checks;
pub mod fpm;
pub mod nginx;
pub mod snippets;

use std::path::{Path, PathBuf};

pub use checks::check;
use cutover_config::RefreshStrategy;
use cutover_php::PoolStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Deploys are not atomic or not seen: stale code served, requests failed.
    Error,
    /// Works, with a cost or a window worth knowing about.
    Warning,
    Info,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// One hazard found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Stable, kebab-case: scripts and the README refer to it.
    pub id: &'static str,
    pub severity: Severity,
    /// What was found, in one line.
    pub what: String,
    /// Why it matters for a deploy, in one line.
    pub why: String,
    /// The config line to write, and where.
    pub fix: String,
    /// `file:line` of the directive at fault, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// A source doctor was asked to read and could not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{what}: {message}")]
pub struct ReadError {
    /// What was being read (a command, a file).
    pub what: String,
    pub message: String,
}

/// The pool as PHP reports it over FastCGI.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolFacts {
    pub address: String,
    pub status: PoolStatus,
    /// The path of cutover's script as the pool is given it (what `restrict_api` and
    /// `open_basedir` are compared with).
    pub script_path: String,
}

/// The PHP files of the current release, or of the shared directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseCode {
    pub php_files: u64,
    pub php_bytes: u64,
}

/// Everything doctor read; `None` for what it was not asked to (or could not) read.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub deploy_path: Option<PathBuf>,
    /// `[refresh] strategy` of the loaded cutover.toml.
    pub strategies: Vec<RefreshStrategy>,
    pub pool: Option<PoolFacts>,
    pub fpm_config: Option<fpm::FpmConfig>,
    pub nginx: Option<nginx::NginxConfig>,
    pub apache: Option<apache::ApacheConfig>,
    pub release: Option<ReleaseCode>,
    /// PHP files written in the deploy path's shared directory since the last switch.
    pub shared: Option<SharedPhp>,
    pub unread: Vec<ReadError>,
}

/// Counts the `*.php` files under `dir` (following the `current` link itself, not links
/// inside: shared directories are links and not code of the release). At most `limit`
/// entries are looked at.
pub fn release_code(dir: &Path, limit: usize) -> Option<ReleaseCode> {
    let mut code = ReleaseCode {
        php_files: 0,
        php_bytes: 0,
    };
    each_php_file(dir, limit, |_, metadata| {
        code.php_files += 1;
        code.php_bytes += metadata.len();
    })?;
    Some(code)
}

/// `*.php` files under the shared directory written after `since` (the last switch):
/// written at run time, not configuration put there once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SharedPhp {
    pub written: u64,
    /// False when the scan stopped at its limit: `written` is then a lower bound.
    pub complete: bool,
}

pub fn shared_php(dir: &Path, since: std::time::SystemTime, limit: usize) -> Option<SharedPhp> {
    let mut written = 0;
    let complete = each_php_file(dir, limit, |_, metadata| {
        if metadata.modified().is_ok_and(|m| m > since) {
            written += 1;
        }
    })?;
    Some(SharedPhp { written, complete })
}

/// Calls `found` for each `*.php` file under `dir` (resolved once; links inside are not
/// followed), looking at `limit` entries at most. Whether it saw them all; `None` when
/// `dir` cannot be resolved.
fn each_php_file(
    dir: &Path,
    limit: usize,
    mut found: impl FnMut(&Path, &std::fs::Metadata),
) -> Option<bool> {
    let mut stack = vec![std::fs::canonicalize(dir).ok()?];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > limit {
                return Some(false);
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && entry.path().extension().is_some_and(|e| e == "php") {
                if let Ok(metadata) = entry.metadata() {
                    found(&entry.path(), &metadata);
                }
            }
        }
    }
    Some(true)
}

/// A few ini values of the PHP command line (`php -i`), when `php` is installed.
pub fn php_cli(binary: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let output = std::process::Command::new(binary).arg("-i").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let wanted = [
        "PHP Version",
        "Loaded Configuration File",
        "opcache.enable_cli",
        "opcache.file_cache",
        "opcache.preload",
        "open_basedir",
    ];
    let mut values = std::collections::BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split(" => ");
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        if wanted.contains(&key) && !values.contains_key(key) {
            values.insert(key.to_string(), value.to_string());
        }
    }
    Some(values)
}
