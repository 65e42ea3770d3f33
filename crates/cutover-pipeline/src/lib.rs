//! One deploy pipeline, whatever the number of hosts: a local deploy is a fleet of one.
//!
//! Every step acts on a [`Host`]: [`LocalHost`] does the work with direct calls on this
//! machine; [`RemoteHost`] asks the same code on another machine, run there as
//! `cutover agent` (a thin dispatcher over `LocalHost`, see [`agent`]). The [`Fleet`]
//! moves all hosts through the steps together: stage everywhere, switch everywhere at
//! once (tentative), refresh and check everywhere, then commit and clean up — or send
//! every host back.

pub mod agent;
mod error;
mod fleet;
mod hooks;
mod host;
mod plan;
mod source;
mod state;

pub use error::{cause_chain, FleetError, HostError, HostErrorKind};
pub use fleet::{DeployJob, DeployOutcome, Fleet, Progress, ReadOutcome, SwitchOutcome};
pub use host::local::LocalHost;
pub use host::remote::RemoteHost;
pub use host::AgentUpload;
pub use host::Host;
pub use plan::{AgentBinary, AgentSource, HostPlan, SshTarget, Transport, LOCAL_HOST};
pub use source::{ManifestCache, SourceTree};
pub use state::{HostReport, HostState};
