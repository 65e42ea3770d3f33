//! Where each host is in the pipeline, and what it did.

use cutover_core::assets::CarryReport;
use cutover_core::cleanup::CleanupReport;
use cutover_core::stage::StageStats;
use cutover_core::ReleaseId;
use cutover_refresh::RefreshReport;
use serde::{Serialize, Serializer};

use crate::HostError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    #[default]
    Pending,
    Connected,
    Staging,
    Staged,
    /// A dry run: the plan was made, nothing changed.
    Planned,
    Switched,
    Refreshed,
    Deployed,
    #[serde(rename = "rolled back")]
    RolledBack,
    #[serde(rename = "not switched")]
    NotSwitched,
    Cleaned,
    Done,
    Failed,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Pending => "pending",
            HostState::Connected => "connected",
            HostState::Staging => "staging",
            HostState::Staged => "staged",
            HostState::Planned => "planned",
            HostState::Switched => "switched",
            HostState::Refreshed => "refreshed",
            HostState::Deployed => "deployed",
            HostState::RolledBack => "rolled back",
            HostState::NotSwitched => "not switched",
            HostState::Cleaned => "cleaned",
            HostState::Done => "done",
            HostState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened on one host, for the table and `--json`; the same keys for a local
/// deploy path and for every host of a fleet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostReport {
    pub host: String,
    pub status: HostState,
    pub deploy_path: String,
    /// The release that was current when the command began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<ReleaseId>,
    /// The agent uploaded on connecting (first contact with this build).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_upload: Option<crate::AgentUpload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<StageStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assets: Option<CarryReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_ms: Option<u64>,
    /// From the switch request to the host's confirmed rename (its share of the broadcast).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_ms: Option<u64>,
    /// Wall clock of the rename on the host, microseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switched_at_us: Option<u64>,
    /// The host's clock minus this machine's, when the switch was scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_us: Option<i64>,
    /// How late its switch request reached the host for the scheduled instant (0: in time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_late_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchanged: Option<bool>,
    /// Before the switch: OPcache's room, the pre-warm, what the cache holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcache: Option<cutover_refresh::WarmReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshReport>,
    /// Releases removed after the deploy (or that a dry run would remove).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupReport>,
    /// Hook phases run here, with their commands (`once` ones marked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "error_line")]
    pub error: Option<HostError>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn error_line<S: Serializer>(error: &Option<HostError>, s: S) -> Result<S::Ok, S::Error> {
    match error {
        Some(error) => s.serialize_str(&error.one_line()),
        None => s.serialize_none(),
    }
}
