//! The hooks of a deploy: when each phase runs, and what every command sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::layout::DeployPath;
use crate::release::ReleaseId;
use crate::stage::Observer;

/// When a hook runs. Hooks run in the release's directory at its final path; `on_failure`
/// in the current release (the one still served), or the deploy path when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPhase {
    /// In the new release, after the build, before any host switches.
    BeforeSwitch,
    /// In the new release, once every host switched, refreshed, passed its check and
    /// committed.
    AfterSwitch,
    /// Where a deploy that had started failed, before its lock is released.
    OnFailure,
    /// In the release gone back to, after `rollback` or an automatic switch-back.
    AfterRollback,
}

impl HookPhase {
    pub fn name(self) -> &'static str {
        match self {
            HookPhase::BeforeSwitch => "before_switch",
            HookPhase::AfterSwitch => "after_switch",
            HookPhase::OnFailure => "on_failure",
            HookPhase::AfterRollback => "after_rollback",
        }
    }
}

impl std::fmt::Display for HookPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The longest any build command or hook may be given: a day. The config refuses more,
/// and a host refuses a request asking for more.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The shortest: a millisecond (what the protocol counts in).
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// One command of a phase, as a host runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCommand {
    pub run: String,
    /// How long it may run.
    pub timeout_ms: u64,
}

/// Runs `commands` in order with `sh -c` in `dir`; the first that fails stops the rest.
///
/// With `watch_shared` (a complete release: its unchanged files are hard links shared with
/// other releases), returns the shared files the commands changed in place, which changed
/// in those releases too. Hooks before the switch run on private copies and need no watch.
pub fn run(
    phase: HookPhase,
    commands: &[HookCommand],
    dir: &Path,
    env: &HookEnv,
    watch_shared: bool,
    observer: &dyn Observer,
) -> Result<Vec<PathBuf>> {
    let before = if watch_shared {
        shared_files(dir)?
    } else {
        BTreeMap::new()
    };
    let pairs = env.pairs();
    for command in commands {
        let limit = Some(Duration::from_millis(command.timeout_ms));
        crate::command::run(phase.name(), &command.run, dir, &pairs, limit, observer)?;
    }
    if before.is_empty() {
        return Ok(Vec::new());
    }
    let after = shared_files(dir)?;
    Ok(before
        .into_iter()
        .filter(|(rel, stamp)| after.get(rel).is_some_and(|now| now != stamp))
        .map(|(rel, _)| rel)
        .collect())
}

/// Every regular file below `dir` with more than one link, by path: its inode and change
/// time (which any write or metadata change moves).
fn shared_files(dir: &Path) -> Result<BTreeMap<PathBuf, (u64, i64, i64)>> {
    use std::os::unix::fs::MetadataExt;
    let found = std::sync::Mutex::new(BTreeMap::new());
    crate::tree::walk(dir, &crate::tree::Excludes::default(), &|entry| {
        if entry.file_type.is_dir() {
            return Ok(true);
        }
        if entry.file_type.is_file() {
            let meta = entry.dir_entry.metadata().ctx("stat", entry.path)?;
            if meta.nlink() > 1 {
                if let Ok(mut found) = found.lock() {
                    found.insert(
                        entry.rel.to_path_buf(),
                        (meta.ino(), meta.ctime(), meta.ctime_nsec()),
                    );
                }
            }
        }
        Ok(false)
    })?;
    Ok(found.into_inner().unwrap_or_default())
}

/// What every build command and hook sees in its environment.
#[derive(Debug, Clone)]
pub struct HookEnv {
    vars: Vec<(&'static str, String)>,
}

impl HookEnv {
    pub fn new(
        deploy: &DeployPath,
        release: &ReleaseId,
        previous: Option<&ReleaseId>,
        host: &str,
    ) -> HookEnv {
        let release_path = deploy.release(release).display().to_string();
        HookEnv {
            vars: vec![
                ("CUTOVER_RELEASE", release.to_string()),
                ("CUTOVER_RELEASE_PATH", release_path.clone()),
                // For hooks written when releases were staged elsewhere: the same path now.
                ("CUTOVER_STAGING_PATH", release_path),
                ("CUTOVER_DEPLOY_PATH", deploy.root().display().to_string()),
                (
                    "CUTOVER_PREVIOUS_RELEASE",
                    previous.map(ToString::to_string).unwrap_or_default(),
                ),
                ("CUTOVER_HOST", host.to_string()),
            ],
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> HookEnv {
        self.vars.push((key, value.into()));
        self
    }

    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}
