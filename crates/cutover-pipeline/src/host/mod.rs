//! The seam between the orchestrator and a host: every step of the pipeline is one call,
//! typed both ways. The switch and the commit come in two halves (`send_*`, then the
//! reply) so that a fleet can have every host act at nearly the same moment.

mod agent_file;
pub mod local;
pub mod remote;
mod ssh;

use cutover_core::cleanup::CleanupReport;
use cutover_core::listing::ReleaseList;
use cutover_core::ReleaseId;
use cutover_php::{PoolStatus, ResetReport};
use cutover_protocol::{
    Finished, HooksRequest, OpenRequest, Opened, StageSpec, Staged, SwitchRequest, Switched,
};
use cutover_refresh::{PoolSpec, RefreshReport, WarmReport};

use crate::{HostError, SourceTree};

/// What `stage` is given besides the files.
pub struct StageOrder<'a> {
    pub release: &'a ReleaseId,
    pub spec: &'a StageSpec,
    pub source: &'a cutover_core::history::Source,
    pub dry_run: bool,
}

/// The agent a connection uploaded before its first request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentUpload {
    /// The host's `uname -sm`.
    pub platform: String,
    /// The file on this machine that was sent.
    pub file: String,
    /// Its size.
    pub size: u64,
    /// What went over ssh for it (gzip-compressed).
    pub bytes_sent: u64,
}

pub trait Host: Send {
    fn name(&self) -> &str;
    /// What connecting uploaded, if anything.
    fn agent_upload(&self) -> Option<&AgentUpload> {
        None
    }
    /// Whether `stage` sends the tree's manifest (prepared once for all hosts first).
    fn wants_manifest(&self) -> bool;
    fn open(&mut self, request: &OpenRequest) -> Result<Opened, HostError>;
    /// Starts `tree` as `order.release` at its final path, unfinished (with `dry_run`:
    /// only counts).
    fn stage(&mut self, order: &StageOrder<'_>, tree: &SourceTree) -> Result<Staged, HostError>;
    /// Runs one hook phase's commands for this host; returns the files shared with other
    /// releases (hard links) they changed in place.
    fn hooks(&mut self, request: &HooksRequest) -> Result<Vec<String>, HostError>;
    /// Completes a started release: from now on it can be switched to.
    fn finish(&mut self, release: &ReleaseId) -> Result<Finished, HostError>;
    /// Before a switch to `release`: OPcache's room checked, the new release compiled
    /// (`prewarm`); `None` when OPcache is emptied after the switch anyway.
    fn before_switch(&mut self, release: &ReleaseId) -> Result<Option<WarmReport>, HostError>;
    fn send_switch(&mut self, request: &SwitchRequest) -> Result<(), HostError>;
    /// The host's wall clock, microseconds since the epoch (to schedule a switch).
    fn clock(&mut self) -> Result<u64, HostError>;
    fn switched(&mut self) -> Result<Switched, HostError>;
    /// `None` when the host has nothing to do after a switch.
    fn refresh(&mut self, release: &ReleaseId) -> Result<Option<RefreshReport>, HostError>;
    fn send_commit(&mut self) -> Result<(), HostError>;
    fn committed(&mut self) -> Result<(), HostError>;
    fn abort(&mut self, release: &ReleaseId) -> Result<(), HostError>;
    fn cleanup(&mut self, keep: usize, dry_run: bool) -> Result<CleanupReport, HostError>;
    fn releases(&mut self) -> Result<ReleaseList, HostError>;
    fn php_status(&mut self, pool: &PoolSpec) -> Result<PoolStatus, HostError>;
    fn php_reset(&mut self, pool: &PoolSpec, wait_ms: u64) -> Result<ResetReport, HostError>;
    /// Ends the session: an uncommitted switch is undone, releases staged and never
    /// switched to are removed, the lock is released.
    fn close(self: Box<Self>);
}
