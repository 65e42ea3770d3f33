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

use cutover_config::{HealthSettings, PhpSettings, RefreshSettings};
use cutover_core::assets::{AssetOptions, CarryReport};
use cutover_core::history::Source;
use cutover_core::manifest::{Delta, Manifest};
use cutover_core::stage::StageStats;
use cutover_core::ReleaseId;

/// Bumped on any incompatible change. The agent binary is named after the deploying
/// binary's hash, so both ends normally run the same build; the check catches the rest.
pub const PROTOCOL: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello {
        protocol: u32,
        version: String,
    },
    /// With `lock`, takes the deploy lock for the rest of the session (creating the
    /// layout); without, the deploy path must exist and is only read.
    Open {
        path: PathBuf,
        lock: bool,
        wait_lock_ms: Option<u64>,
    },
    /// Runs a read-only cutover command on the host (`releases`, `php status|reset`) and
    /// returns what it printed: the host's answer is exactly the local command's.
    Run {
        args: Vec<String>,
    },
    /// Answered by `Need`, then the content stream, then `Staged`.
    Stage(Box<StageRequest>),
    /// With `revert`, the switch is tentative: if the session ends before `Commit`, the
    /// agent switches back to `revert.release` and refreshes for it.
    Switch {
        release: ReleaseId,
        rollback: bool,
        revert: Option<Box<RefreshRequest>>,
        /// The release being left keeps its assets reachable in this one.
        assets: AssetOptions,
    },
    Commit,
    Refresh(Box<RefreshRequest>),
    /// Removes a release this session staged that is not current.
    Abort {
        release: ReleaseId,
    },
    Cleanup {
        keep: usize,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRequest {
    pub release: Option<ReleaseId>,
    pub manifest: ManifestPayload,
    pub shared_dirs: Vec<String>,
    pub shared_files: Vec<String>,
    pub before_switch: Vec<String>,
    pub release_file: String,
    pub assets: AssetOptions,
    pub source: Source,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestPayload {
    Full(Manifest),
    /// Against the manifest of the host's current release (named by digest in `Opened`).
    Delta(Delta),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRequest {
    pub release: ReleaseId,
    pub refresh: RefreshSettings,
    pub php: PhpSettings,
    pub health: HealthSettings,
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
    Opened {
        current: Option<ReleaseId>,
        releases: Vec<ReleaseId>,
        /// Digest of the stored manifest of the release a new one would follow.
        manifest_digest: Option<String>,
    },
    Need {
        release: ReleaseId,
        previous: Option<ReleaseId>,
        /// Manifest indexes whose bytes the host wants, ascending.
        need: Vec<u32>,
    },
    Staged {
        release: ReleaseId,
        stats: StageStats,
        assets: CarryReport,
        stage_ms: u64,
    },
    Switched {
        release: ReleaseId,
        previous: Option<ReleaseId>,
        /// Wall clock of the rename on the host, microseconds since the epoch.
        at_us: u64,
        unchanged: bool,
        warnings: Vec<String>,
    },
    Refreshed {
        report: serde_json::Value,
    },
    Aborted,
    Committed,
    Ran {
        exit_code: i32,
        stdout: String,
        stderr: String,
    },
    CleanedUp {
        removed: Vec<ReleaseId>,
    },
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

impl Reply {
    /// The variant's name, for "expected X, received Y".
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Hello { .. } => "hello",
            Reply::Opened { .. } => "opened",
            Reply::Need { .. } => "need",
            Reply::Staged { .. } => "staged",
            Reply::Switched { .. } => "switched",
            Reply::Refreshed { .. } => "refreshed",
            Reply::Aborted => "aborted",
            Reply::Committed => "committed",
            Reply::Ran { .. } => "ran",
            Reply::CleanedUp { .. } => "cleaned_up",
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

    #[test]
    fn messages_round_trip() {
        let mut wire = Vec::new();
        let request = Request::Switch {
            release: ReleaseId::parse("v2").unwrap(),
            rollback: false,
            revert: None,
            assets: AssetOptions::none(),
        };
        send(&mut wire, &request).unwrap();
        let mut r: &[u8] = &wire;
        let back: Request = recv(&mut r, &Limits::DEFAULT).unwrap();
        assert!(matches!(
            back,
            Request::Switch {
                rollback: false,
                ..
            }
        ));
    }
}
