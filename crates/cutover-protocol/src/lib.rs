//! The protocol between cutover on the deploying machine and `cutover agent` on each host,
//! spoken over the agent's stdin and stdout (an ssh session, or a local pipe).
//!
//! Every request gets exactly one reply. The only other traffic is the content stream
//! after a `Need` reply: the files the host asked for, compressed, in `Data` frames closed
//! by `End`. Both sides check what they receive: frames against size limits, release ids
//! against the safe-name rules, manifests against paths leaving the release, requested
//! indexes against the manifest.

mod content;
mod error;
mod frame;

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use content::{ContentReader, ContentWriter};
pub use error::ProtocolError;
pub use frame::{read_frame, write_frame, Frame, Kind, Limits, DATA_CHUNK};

use cutover_core::assets::{AssetOptions, CarryReport};
use cutover_core::cleanup::CleanupReport;
use cutover_core::history::Source;
use cutover_core::hooks::{HookCommand, HookPhase};
use cutover_core::listing::ReleaseList;
use cutover_core::manifest::{Delta, Manifest};
use cutover_core::stage::StageStats;
use cutover_core::writable::WritableMode;
use cutover_core::ReleaseId;
use cutover_php::{PoolStatus, ResetReport};
use cutover_refresh::{PoolSpec, RefreshReport, RefreshSpec, WarmReport};

/// Bumped on any incompatible change. The agent binary is named after the deploying
/// binary's hash, so both ends normally run the same build; the check catches the rest.
pub const PROTOCOL: u32 = 6;

/// One operation of the `Host` seam each; every request gets exactly one reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello {
        protocol: u32,
        version: String,
    },
    Open(Box<OpenRequest>),
    /// Starts a release: answered by `Need`, then the content stream, then `Staged`;
    /// with `dry_run`, by `Staged` alone.
    Stage(Box<StageRequest>),
    /// Runs commands of one hook phase on the host; answered by `HooksRan`.
    Hooks(Box<HooksRequest>),
    /// Completes a release `Stage` started (and hooks ran in); answered by `Finished`.
    Finish {
        release: ReleaseId,
    },
    /// Before the switch to `release`: the pool's OPcache checked for room, releases out
    /// of service let go, the new release compiled (`prewarm`); answered by `Warmed`.
    BeforeSwitch {
        release: ReleaseId,
    },
    Switch(SwitchRequest),
    /// The host's wall clock, for scheduling a switch; answered by `Clock`.
    Clock,
    /// The host's refresh steps and health check for `release`, now current.
    Refresh {
        release: ReleaseId,
    },
    /// Makes a tentative switch final.
    Commit,
    /// Removes a release this session staged that is not current.
    Abort {
        release: ReleaseId,
    },
    Cleanup {
        keep: usize,
        dry_run: bool,
    },
    Releases,
    PhpStatus(PoolSpec),
    PhpReset {
        pool: PoolSpec,
        wait_ms: u64,
    },
}

/// How a session uses the deploy path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Only reads; the path must exist.
    Read,
    /// Reads what a change would do, creating nothing and taking no lock.
    DryRun,
    /// Takes the deploy lock for the rest of the session; with `create`, a missing
    /// deploy path is created (a first deploy), else it must exist.
    Lock { wait_ms: Option<u64>, create: bool },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRequest {
    /// The host's name in `[hosts]` (`local` for a deploy path given with `--to`): hooks
    /// see it as `CUTOVER_HOST`.
    pub host: String,
    pub path: PathBuf,
    pub access: Access,
    /// What this host does after each switch; prepared (and refused) at open, before
    /// anything is staged or switched.
    pub refresh: RefreshSpec,
    /// Static files of releases being left stay reachable in the next ones.
    pub assets: AssetOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    pub current: Option<ReleaseId>,
    /// Complete releases, oldest first.
    pub releases: Vec<ReleaseId>,
    /// Digest of the stored manifest of the release a new one would follow.
    pub manifest_digest: Option<String>,
    /// Worth saying, not worth failing for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What a release needs besides its files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    pub shared_dirs: Vec<String>,
    pub shared_files: Vec<String>,
    pub build: Vec<String>,
    /// `before_switch` hooks will run in the release between `Stage` and `Finish`.
    #[serde(default)]
    pub hooks_follow: bool,
    pub release_file: String,
    /// How long one build or hook command may run.
    pub hook_timeout_ms: u64,
    /// `[deploy] writable`: paths made writable for the pool's user after staging. Defaults
    /// so frames from a build without them still parse.
    #[serde(default)]
    pub writable: Vec<String>,
    #[serde(default)]
    pub writable_mode: WritableMode,
    /// `None`: the pool's user when the host can ask its pool, else `www-data`.
    #[serde(default)]
    pub writable_user: Option<String>,
}

impl StageSpec {
    /// Paths as cutover.toml's own checks take them: relative, inside the release, no
    /// `..`; and the release file not inside a shared path (it would overwrite shared
    /// data with the release id). Checked wherever a spec is used, so a spec that crossed
    /// the network is held to the same rules as the local CLI's.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        let paths = self
            .shared_dirs
            .iter()
            .map(|p| ("[shared] dirs", p))
            .chain(self.shared_files.iter().map(|p| ("[shared] files", p)))
            .chain(std::iter::once((
                "[deploy] release_file",
                &self.release_file,
            )))
            .chain(self.writable.iter().map(|p| ("[deploy] writable", p)));
        for (key, path) in paths {
            let trimmed = path.trim_end_matches('/');
            let bad = trimmed.is_empty()
                || trimmed.starts_with('/')
                || trimmed
                    .split('/')
                    .any(|part| part == ".." || part == "." || part.is_empty());
            if bad {
                return Err((
                    format!("{key} `{path}` is not a path inside the release"),
                    "name a relative path without `..`, e.g. `storage`",
                ));
            }
        }
        if let Some(user) = &self.writable_user {
            if !cutover_core::writable::is_user_name(user) {
                return Err((
                    format!("[deploy] writable_user `{user}` is not a user name"),
                    "name the user the php-fpm pool runs as, e.g. `www-data`",
                ));
            }
        }
        let release_file = self.release_file.trim_end_matches('/');
        for shared in self.shared_dirs.iter().chain(&self.shared_files) {
            let shared = shared.trim_end_matches('/');
            let inside = release_file == shared
                || release_file
                    .strip_prefix(shared)
                    .is_some_and(|rest| rest.starts_with('/'));
            if inside {
                return Err((
                    format!("[deploy] release_file `{release_file}` is inside the shared path `{shared}`"),
                    "every release would write its id into the same shared file; name a file of the release itself, e.g. `RELEASE`",
                ));
            }
        }
        Ok(())
    }
}

/// Commands of one hook phase, for one host: the orchestrator chose them (`once`,
/// `roles`); the host runs them all, in order, in the directory the phase names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HooksRequest {
    pub phase: HookPhase,
    /// The release the hooks are about: the new one, or the one gone back to.
    pub release: ReleaseId,
    /// `CUTOVER_PREVIOUS_RELEASE`.
    pub previous: Option<ReleaseId>,
    pub commands: Vec<HookCommand>,
    /// `on_failure` only: the step that failed (`CUTOVER_FAILED_STEP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
}

impl HooksRequest {
    /// Longest a hook may be given (`hooks::MAX_TIMEOUT`).
    pub const MAX_TIMEOUT_MS: u64 = cutover_core::hooks::MAX_TIMEOUT.as_millis() as u64;

    /// What a host accepts: commands a shell can take, limits that end.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        for command in &self.commands {
            if command.run.trim().is_empty() || command.run.contains('\0') {
                return Err((
                    format!("a {} hook is empty or holds a NUL byte", self.phase),
                    "write the command as a shell would take it",
                ));
            }
            if command.timeout_ms == 0 || command.timeout_ms > Self::MAX_TIMEOUT_MS {
                return Err((
                    format!(
                        "the {} hook `{}` has a timeout of {} ms",
                        self.phase, command.run, command.timeout_ms
                    ),
                    "give a timeout between 1 ms and 24 h",
                ));
            }
        }
        let step_ok = match (&self.failed_step, self.phase) {
            (None, _) => true,
            (Some(step), HookPhase::OnFailure) => {
                step.len() <= 64 && step.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            }
            (Some(_), _) => false,
        };
        if !step_ok {
            return Err((
                "a failed step is given that is not one".to_string(),
                "only on_failure hooks are told the failed step, as a short name",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRequest {
    pub release: ReleaseId,
    pub manifest: ManifestPayload,
    pub spec: StageSpec,
    pub source: Source,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestPayload {
    Full(Manifest),
    /// Against the manifest of the host's current release (named by digest in `Opened`).
    Delta(Delta),
}

/// A release completed by `Finish`: the final counts (unchanged files linked again
/// after the hooks) and the static files carried in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub stats: StageStats,
    pub assets: CarryReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Staged {
    pub release: ReleaseId,
    pub previous: Option<ReleaseId>,
    pub stats: StageStats,
    pub assets: CarryReport,
    pub stage_ms: u64,
    /// Files whose bytes crossed the connection (0 on the deploying machine itself).
    pub files_sent: u64,
    pub bytes_sent: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchRequest {
    pub release: ReleaseId,
    /// Recorded as a rollback rather than a switch.
    pub rollback: bool,
    /// Until `Commit`: if the session ends first, the host switches back to the release
    /// it had and refreshes for it.
    pub tentative: bool,
    /// Rename at this instant of the host's wall clock (microseconds since the epoch), so
    /// every host renames together; `None`: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_us: Option<u64>,
}

impl SwitchRequest {
    /// The furthest ahead a host accepts a switch instant.
    pub const MAX_AHEAD_US: u64 = 5_000_000;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switched {
    pub release: ReleaseId,
    pub previous: Option<ReleaseId>,
    /// Wall clock of the rename on the host, microseconds since the epoch.
    pub at_us: u64,
    /// With a scheduled switch: how late the request arrived for its instant (0: in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_us: Option<u64>,
    /// Nothing was done: the release was already current, or this was a dry run.
    pub unchanged: bool,
    pub assets_carried: u64,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        protocol: u32,
        version: String,
        pid: u32,
        hostname: String,
    },
    Opened(Opened),
    Need {
        release: ReleaseId,
        previous: Option<ReleaseId>,
        /// Manifest indexes whose bytes the host wants, ascending.
        need: Vec<u32>,
    },
    Staged(Staged),
    HooksRan {
        /// Files shared (hard-linked) with other releases the hooks changed in place.
        #[serde(default)]
        changed_shared: Vec<String>,
    },
    Finished(Finished),
    /// `None` when OPcache is emptied after the switch anyway (or no pool is configured).
    Warmed {
        report: Option<WarmReport>,
    },
    Switched(Switched),
    Clock {
        now_us: u64,
    },
    /// `None` when the host has nothing to do after a switch.
    Refreshed {
        report: Option<RefreshReport>,
    },
    Committed,
    Aborted,
    CleanedUp(CleanupReport),
    Releases(ReleaseList),
    PhpStatus(PoolStatus),
    PhpReset(ResetReport),
    Failed(Failure),
}

/// An error on the host, as the binary's own errors are shown.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Failure {
    pub message: String,
    pub causes: Vec<String>,
    pub hints: Vec<String>,
    /// Bad input (exit 2) rather than a failed operation (exit 1).
    pub usage: bool,
}

impl Request {
    /// The variant's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Open(_) => "open",
            Request::Stage(_) => "stage",
            Request::Hooks(_) => "hooks",
            Request::Finish { .. } => "finish",
            Request::BeforeSwitch { .. } => "before_switch",
            Request::Switch(_) => "switch",
            Request::Clock => "clock",
            Request::Refresh { .. } => "refresh",
            Request::Commit => "commit",
            Request::Abort { .. } => "abort",
            Request::Cleanup { .. } => "cleanup",
            Request::Releases => "releases",
            Request::PhpStatus(_) => "php_status",
            Request::PhpReset { .. } => "php_reset",
        }
    }
}

impl Reply {
    /// The variant's name, for "expected X, received Y".
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Hello { .. } => "hello",
            Reply::Opened(_) => "opened",
            Reply::Need { .. } => "need",
            Reply::Staged(_) => "staged",
            Reply::HooksRan { .. } => "hooks_ran",
            Reply::Finished(_) => "finished",
            Reply::Warmed { .. } => "warmed",
            Reply::Switched(_) => "switched",
            Reply::Clock { .. } => "clock",
            Reply::Refreshed { .. } => "refreshed",
            Reply::Committed => "committed",
            Reply::Aborted => "aborted",
            Reply::CleanedUp(_) => "cleaned_up",
            Reply::Releases(_) => "releases",
            Reply::PhpStatus(_) => "php_status",
            Reply::PhpReset(_) => "php_reset",
            Reply::Failed(_) => "failed",
        }
    }
}

/// Writes one message frame and flushes.
pub fn send<T: Serialize>(w: &mut dyn Write, message: &T) -> Result<(), ProtocolError> {
    let bytes =
        serde_json::to_vec(message).map_err(|e| ProtocolError::BadMessage(e.to_string()))?;
    write_frame(w, Kind::Message, &bytes)?;
    w.flush()?;
    Ok(())
}

/// Reads one message frame.
pub fn recv<T: DeserializeOwned>(r: &mut dyn Read, limits: &Limits) -> Result<T, ProtocolError> {
    let frame = read_frame(r, limits)?;
    if frame.kind != Kind::Message {
        return Err(ProtocolError::Unexpected {
            expected: "a message",
            got: format!("a {:?} frame", frame.kind).to_lowercase(),
        });
    }
    serde_json::from_slice(&frame.payload).map_err(|e| ProtocolError::BadMessage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_naming_a_release_outside_releases_is_refused() {
        let mut wire = Vec::new();
        let hostile =
            br#"{"reply":"opened","current":"../../etc","releases":[],"manifest_digest":null}"#;
        write_frame(&mut wire, Kind::Message, hostile).unwrap();
        let mut r: &[u8] = &wire;
        let err = recv::<Reply>(&mut r, &Limits::DEFAULT).unwrap_err();
        assert!(matches!(err, ProtocolError::BadMessage(_)), "{err}");
    }

    proptest::proptest! {
        /// What the deploying side reads from an agent: valid replies with bytes flipped
        /// or cut never panic.
        #[test]
        fn mutated_replies_never_panic(
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..6),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let replies = [
                br#"{"reply":"opened","current":"v1","releases":["v1","v2"],"manifest_digest":null}"#.to_vec(),
                br#"{"reply":"need","release":"v2","previous":"v1","need":[0,3,7]}"#.to_vec(),
                br#"{"reply":"switched","release":"v2","previous":"v1","at_us":1,"unchanged":false,"assets_carried":0,"warnings":[]}"#.to_vec(),
            ];
            for payload in replies {
                let mut wire = Vec::new();
                write_frame(&mut wire, Kind::Message, &payload).unwrap();
                for (at, byte) in &flips {
                    let len = wire.len();
                    wire[at % len] ^= byte;
                }
                wire.truncate(cut % (wire.len() + 1));
                let mut r: &[u8] = &wire;
                // Release ids are checked as they are parsed (`ReleaseId`'s TryFrom), so
                // a reply that parses holds only safe ones; the property is: no panic.
                let _ = recv::<Reply>(&mut r, &Limits::DEFAULT);
            }
        }
    }

    #[test]
    fn a_hooks_request_is_checked_like_user_input() {
        let request = |run: &str, timeout_ms, phase, step: Option<&str>| HooksRequest {
            phase,
            release: ReleaseId::parse("v2").unwrap(),
            previous: None,
            commands: vec![HookCommand {
                run: run.into(),
                timeout_ms,
            }],
            failed_step: step.map(String::from),
        };
        let ok = request("php artisan up", 1000, HookPhase::OnFailure, Some("check"));
        assert!(ok.validate().is_ok());
        for bad in [
            request(" ", 1000, HookPhase::AfterSwitch, None),
            request("a\0b", 1000, HookPhase::AfterSwitch, None),
            request("true", 0, HookPhase::AfterSwitch, None),
            request(
                "true",
                HooksRequest::MAX_TIMEOUT_MS + 1,
                HookPhase::AfterSwitch,
                None,
            ),
            request("true", 1000, HookPhase::AfterSwitch, Some("check")),
            request("true", 1000, HookPhase::OnFailure, Some("a\nb")),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stage_spec_without_writable_settings_parses_and_writable_paths_are_checked() {
        let old = r#"{"shared_dirs":["storage"],"shared_files":[],"build":[],"release_file":"RELEASE","hook_timeout_ms":1000}"#;
        let spec: StageSpec = serde_json::from_str(old).unwrap();
        assert!(spec.writable.is_empty() && spec.writable_user.is_none());
        assert_eq!(spec.writable_mode, WritableMode::Acl);
        assert!(spec.validate().is_ok());

        let with = r#"{"shared_dirs":[],"shared_files":[],"build":[],"release_file":"RELEASE","hook_timeout_ms":1000,"writable":["storage","bootstrap/cache"],"writable_mode":"chown","writable_user":"www-data"}"#;
        let spec: StageSpec = serde_json::from_str(with).unwrap();
        assert_eq!(spec.writable_mode, WritableMode::Chown);
        assert!(spec.validate().is_ok());
        let bad_mode = with.replace("\"chown\"", "\"sudo\"");
        assert!(serde_json::from_str::<StageSpec>(&bad_mode).is_err());

        for bad in ["../../etc", "/etc", "storage/../..", "", "./storage"] {
            let spec = StageSpec {
                release_file: "RELEASE".into(),
                writable: vec![bad.into()],
                ..StageSpec::default()
            };
            let (message, _) = spec.validate().unwrap_err();
            assert!(message.contains("[deploy] writable"), "{bad}: {message}");
        }
        for bad in ["-R", "u:root:rwx", "a b", ""] {
            let spec = StageSpec {
                release_file: "RELEASE".into(),
                writable_user: Some(bad.into()),
                ..StageSpec::default()
            };
            let (message, _) = spec.validate().unwrap_err();
            assert!(message.contains("writable_user"), "{bad}: {message}");
        }
    }

    #[test]
    fn messages_round_trip() {
        let mut wire = Vec::new();
        let request = Request::Switch(SwitchRequest {
            release: ReleaseId::parse("v2").unwrap(),
            rollback: false,
            tentative: true,
            at_us: Some(42),
        });
        send(&mut wire, &request).unwrap();
        let mut r: &[u8] = &wire;
        let back: Request = recv(&mut r, &Limits::DEFAULT).unwrap();
        assert!(matches!(
            back,
            Request::Switch(SwitchRequest {
                rollback: false,
                tentative: true,
                ..
            })
        ));
    }
}
