//! A host reached through its agent: every step is a request over the connection, and
//! every reply is checked before anything is done with it.

use std::path::Path;

use cutover_core::cleanup::CleanupReport;
use cutover_core::listing::ReleaseList;
use cutover_core::manifest::{EntryKind, Manifest};
use cutover_core::ReleaseId;
use cutover_php::{PoolStatus, ResetReport};
use cutover_protocol::{
    ContentWriter, Finished, HooksRequest, OpenRequest, Opened, ProtocolError, Reply, Request,
    StageRequest, Staged, SwitchRequest, Switched,
};
use cutover_refresh::{PoolSpec, RefreshReport, WarmReport};

use super::ssh::{Agent, Target};
use super::{AgentUpload, Host, StageOrder};
use crate::{HostError, HostPlan, SourceTree};

pub struct RemoteHost {
    target: Target,
    agent: Option<Agent>,
    /// A dry run found no agent of this build and uploaded none: it plans as for a host
    /// with nothing to link from.
    absent: bool,
    /// The stored manifest the host's next release follows, from `open`.
    digest: Option<String>,
    /// The host's refresh keeps OPcache (a pool, no reset): only then is there anything to
    /// do before a switch, so only then is the agent asked (one round trip less per switch).
    warms: bool,
}

impl RemoteHost {
    /// Connects, uploading the agent when the host lacks this build unless `dry_run`.
    pub fn connect(plan: &HostPlan, dry_run: bool) -> Result<RemoteHost, HostError> {
        let target = Target {
            name: plan.name.clone(),
            transport: plan.transport.clone(),
            path: plan.path.clone(),
        };
        let _span = tracing::info_span!("connect", host = %plan.name).entered();
        let agent = Agent::connect(&target, !dry_run)?;
        Ok(RemoteHost {
            target,
            absent: agent.is_none(),
            agent,
            digest: None,
            warms: false,
        })
    }

    fn agent(&mut self) -> Result<&mut Agent, HostError> {
        self.agent
            .as_mut()
            .ok_or_else(|| HostError::failed("not connected"))
    }

    fn call(&mut self, request: &Request) -> Result<Reply, HostError> {
        let started = std::time::Instant::now();
        let reply = self.agent()?.call(request);
        tracing::info!(
            host = %self.target.name,
            request = request.name(),
            reply = reply.as_ref().map_or("failed", Reply::name),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
        reply
    }

    /// A reply of the wrong kind: the conversation is out of step, so it ends here.
    fn unexpected(&mut self, expected: &'static str, got: &Reply) -> HostError {
        let error = ProtocolError::Unexpected {
            expected,
            got: got.name().to_string(),
        };
        match self.agent.take() {
            Some(mut agent) => {
                let error = agent.protocol_error(error);
                agent.close();
                error
            }
            None => HostError::internal(error.to_string()),
        }
    }
}

impl Host for RemoteHost {
    fn name(&self) -> &str {
        &self.target.name
    }

    fn agent_upload(&self) -> Option<&AgentUpload> {
        self.agent.as_ref()?.upload.as_ref()
    }

    fn wants_manifest(&self) -> bool {
        true
    }

    fn open(&mut self, request: &OpenRequest) -> Result<Opened, HostError> {
        if self.absent {
            return Ok(Opened {
                warnings: vec![
                    "this build's agent is not on the host yet and a dry run uploads nothing: the plan counts every file as sent".into(),
                ],
                ..Opened::default()
            });
        }
        match self.call(&Request::Open(Box::new(request.clone())))? {
            Reply::Opened(opened) => {
                self.digest = opened.manifest_digest.clone();
                self.warms = request.refresh.keeps_opcache();
                Ok(opened)
            }
            other => Err(self.unexpected("opened", &other)),
        }
    }

    fn stage(&mut self, order: &StageOrder<'_>, tree: &SourceTree) -> Result<Staged, HostError> {
        let (manifest, payload) = tree.manifest_for(self.digest.as_deref())?;
        if self.absent && order.dry_run {
            let stats = cutover_core::manifest::Plan::everything(&manifest).stats(&manifest);
            return Ok(crate::host::local::planned(
                order.release.clone(),
                None,
                stats,
            ));
        }
        let request = Request::Stage(Box::new(StageRequest {
            release: order.release.clone(),
            manifest: payload,
            spec: order.spec.clone(),
            source: order.source.clone(),
            dry_run: order.dry_run,
        }));
        let sent_before = self.agent()?.bytes_sent();
        let need = match self.call(&request)? {
            Reply::Staged(staged) if order.dry_run => return Ok(staged),
            Reply::Need { need, .. } if !order.dry_run => need,
            other => return Err(self.unexpected("need", &other)),
        };
        let files = match checked_need(&need, &manifest) {
            Ok(files) => files,
            Err(message) => {
                // The conversation is out of step; end it rather than send anything more.
                let mut agent = self
                    .agent
                    .take()
                    .ok_or_else(|| HostError::failed("not connected"))?;
                let error = agent.protocol_error(ProtocolError::BadMessage(message));
                agent.close();
                return Err(error);
            }
        };
        let agent = self.agent()?;
        send_content(agent, tree.dir(), &files).map_err(|e| HostError {
            message: format!("sending files failed: {}", e.message),
            ..e
        })?;
        let reply = agent.reply()?;
        let bytes_sent = agent.bytes_sent() - sent_before;
        match reply {
            Reply::Staged(staged) => Ok(Staged {
                files_sent: files.len() as u64,
                bytes_sent,
                ..staged
            }),
            other => Err(self.unexpected("staged", &other)),
        }
    }

    fn clock(&mut self) -> Result<u64, HostError> {
        match self.call(&Request::Clock)? {
            Reply::Clock { now_us } => Ok(now_us),
            other => Err(self.unexpected("clock", &other)),
        }
    }

    fn send_switch(&mut self, request: &SwitchRequest) -> Result<(), HostError> {
        self.agent()?.send(&Request::Switch(request.clone()))
    }

    fn switched(&mut self) -> Result<Switched, HostError> {
        match self.agent()?.reply()? {
            Reply::Switched(switched) => Ok(switched),
            other => Err(self.unexpected("switched", &other)),
        }
    }

    fn before_switch(&mut self, release: &ReleaseId) -> Result<Option<WarmReport>, HostError> {
        if !self.warms {
            return Ok(None);
        }
        let request = Request::BeforeSwitch {
            release: release.clone(),
        };
        match self.call(&request)? {
            Reply::Warmed { report } => {
                // Held to what this side's own host could have said.
                if let Some(report) = &report {
                    report.check().map_err(|why| {
                        HostError::failed(format!(
                            "the agent's before-switch report is not one: {why}"
                        ))
                    })?;
                }
                Ok(report)
            }
            other => Err(self.unexpected("warmed", &other)),
        }
    }

    fn refresh(&mut self, release: &ReleaseId) -> Result<Option<RefreshReport>, HostError> {
        let request = Request::Refresh {
            release: release.clone(),
        };
        match self.call(&request)? {
            Reply::Refreshed { report } => Ok(report),
            other => Err(self.unexpected("refreshed", &other)),
        }
    }

    fn send_commit(&mut self) -> Result<(), HostError> {
        self.agent()?.send(&Request::Commit)
    }

    fn committed(&mut self) -> Result<(), HostError> {
        match self.agent()?.reply()? {
            Reply::Committed => Ok(()),
            other => Err(self.unexpected("committed", &other)),
        }
    }

    fn hooks(&mut self, request: &HooksRequest) -> Result<Vec<String>, HostError> {
        match self.call(&Request::Hooks(Box::new(request.clone())))? {
            // Only ever shown: a few, each kept short.
            Reply::HooksRan { changed_shared } => Ok(changed_shared
                .into_iter()
                .take(20)
                .map(|path| path.chars().take(200).collect())
                .collect()),
            other => Err(self.unexpected("hooks_ran", &other)),
        }
    }

    fn finish(&mut self, release: &ReleaseId) -> Result<Finished, HostError> {
        let request = Request::Finish {
            release: release.clone(),
        };
        match self.call(&request)? {
            Reply::Finished(finished) => Ok(finished),
            other => Err(self.unexpected("finished", &other)),
        }
    }

    fn abort(&mut self, release: &ReleaseId) -> Result<(), HostError> {
        let request = Request::Abort {
            release: release.clone(),
        };
        match self.call(&request)? {
            Reply::Aborted => Ok(()),
            other => Err(self.unexpected("aborted", &other)),
        }
    }

    fn cleanup(&mut self, keep: usize, dry_run: bool) -> Result<CleanupReport, HostError> {
        match self.call(&Request::Cleanup { keep, dry_run })? {
            Reply::CleanedUp(report) => Ok(report),
            other => Err(self.unexpected("cleaned_up", &other)),
        }
    }

    fn releases(&mut self) -> Result<ReleaseList, HostError> {
        match self.call(&Request::Releases)? {
            Reply::Releases(list) => Ok(list),
            other => Err(self.unexpected("releases", &other)),
        }
    }

    fn php_status(&mut self, pool: &PoolSpec) -> Result<PoolStatus, HostError> {
        match self.call(&Request::PhpStatus(pool.clone()))? {
            Reply::PhpStatus(status) => {
                let releases = status.releases.as_deref().unwrap_or_default();
                cutover_refresh::check_releases(releases).map_err(|why| {
                    HostError::failed(format!("the agent's PHP status is not one: {why}"))
                })?;
                Ok(status)
            }
            other => Err(self.unexpected("php_status", &other)),
        }
    }

    fn php_reset(&mut self, pool: &PoolSpec, wait_ms: u64) -> Result<ResetReport, HostError> {
        let request = Request::PhpReset {
            pool: pool.clone(),
            wait_ms,
        };
        match self.call(&request)? {
            Reply::PhpReset(report) => Ok(report),
            other => Err(self.unexpected("php_reset", &other)),
        }
    }

    fn close(mut self: Box<Self>) {
        if let Some(agent) = self.agent.take() {
            agent.close();
        }
    }
}

/// The indexes a host asked for must name files of the manifest, each once, in order:
/// anything else is a confused or hostile agent, and no byte is sent for it.
fn checked_need<'m>(need: &[u32], manifest: &'m Manifest) -> Result<Vec<(&'m str, u64)>, String> {
    let mut files = Vec::with_capacity(need.len());
    let mut last: Option<u32> = None;
    for &index in need {
        if last.is_some_and(|l| index <= l) {
            return Err(format!("file index {index} out of order or repeated"));
        }
        last = Some(index);
        match manifest.entries.get(index as usize) {
            Some(entry) => match &entry.kind {
                EntryKind::File { size, .. } => files.push((entry.path.as_str(), *size)),
                _ => return Err(format!("index {index} ({}) is not a file", entry.path)),
            },
            None => {
                return Err(format!(
                    "file index {index} is outside the manifest of {} entries",
                    manifest.entries.len()
                ))
            }
        }
    }
    Ok(files)
}

/// Streams the files, checking each is still the size the manifest says (a file changed
/// during the deploy would otherwise be sent half old, half new; the host's hash check
/// would refuse it, but a clear error here is better).
fn send_content(agent: &mut Agent, tree: &Path, files: &[(&str, u64)]) -> Result<(), HostError> {
    let io_error =
        |path: &Path, e: std::io::Error| HostError::failed(format!("{}: {e}", path.display()));
    let mut writer = ContentWriter::new(agent.writer()).map_err(|e| io_error(tree, e))?;
    for (rel, size) in files {
        let path = tree.join(rel);
        let mut file = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
        let copied = std::io::copy(&mut std::io::Read::take(&mut file, *size + 1), &mut writer)
            .map_err(|e| io_error(&path, e))?;
        if copied != *size {
            return Err(HostError::failed(format!(
                "{} changed while it was being deployed",
                path.display()
            ))
            .with_hint(
                "deploy from a tree nothing writes to (a build directory or a clean checkout)",
            ));
        }
    }
    writer.finish().map_err(|e| io_error(tree, e))?;
    Ok(())
}
