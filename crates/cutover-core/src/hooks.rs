//! The hooks of a deploy: when each phase runs, and what every command sees.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
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

/// One command of a phase, as a host runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCommand {
    pub run: String,
    /// How long it may run.
    pub timeout_ms: u64,
}

/// Runs `commands` in order with `sh -c` in `dir`; the first that fails stops the rest.
pub fn run(
    phase: HookPhase,
    commands: &[HookCommand],
    dir: &Path,
    env: &HookEnv,
    observer: &dyn Observer,
) -> Result<()> {
    let pairs = env.pairs();
    for command in commands {
        let limit = Some(Duration::from_millis(command.timeout_ms));
        crate::command::run(phase.name(), &command.run, dir, &pairs, limit, observer)?;
    }
    Ok(())
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
