//! `cutover agent`: the other end of a fleet deploy, run on each host over ssh (or as a
//! local process). It speaks `cutover-protocol` on stdin/stdout and does every step with
//! the same code a local deploy uses: the lock, staging, the one-rename switch, refresh and
//! health check, cleanup.
//!
//! The session holds the deploy lock from `Open` until the connection ends. When it ends
//! for any reason (done, the deploying machine killed, the network gone), a release staged
//! in this session that never became current is removed, so a failed fleet deploy leaves
//! no half-deployed state and the next deploy starts clean.

use std::io::{BufReader, BufWriter, Read, Write};
use std::time::{Duration, Instant};

use cutover_config::Config;
use cutover_core::assets::AssetOptions;
use cutover_core::deploy::{self, DeployOptions, Fill, StageJob};
use cutover_core::history::EventKind;
use cutover_core::manifest::{self, Manifest, Plan};
use cutover_core::stage::{Observer, Silent, StageStats};
use cutover_core::{DeployLock, DeployPath, Mode, ReleaseId};
use cutover_protocol::{
    recv, send, ContentReader, Failure, Limits, ManifestPayload, ProtocolError, RefreshRequest,
    Reply, Request, StageRequest, PROTOCOL,
};

use crate::error::{CommandError, Kind, Result};

pub fn agent() -> Result<()> {
    let mut input = BufReader::with_capacity(256 * 1024, std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    let mut session = Session::default();
    let outcome = session.serve(&mut input, &mut output);
    session.close();
    match outcome {
        Ok(()) => Ok(()),
        Err(e) if e.is_disconnect() => Ok(()),
        Err(e) => Err(CommandError {
            kind: Kind::Failed,
            message: format!("agent: {e}"),
            causes: Vec::new(),
            hints: Vec::new(),
        }),
    }
}

#[derive(Default)]
struct Session {
    deploy: Option<DeployPath>,
    lock: Option<DeployLock>,
    /// Staged here and not current yet: removed when the session ends.
    pending: Vec<ReleaseId>,
    /// A switch not yet committed: where to go back to if the session ends first.
    revert: Option<(RefreshRequest, AssetOptions)>,
}

impl Session {
    fn serve(&mut self, input: &mut dyn Read, output: &mut dyn Write) -> Result<(), ProtocolError> {
        loop {
            let request: Request = match recv(input, &Limits::DEFAULT) {
                Ok(request) => request,
                Err(ProtocolError::Closed) => return Ok(()),
                Err(e) if e.is_disconnect() => return Err(e),
                Err(e) => {
                    // Tell the peer why before hanging up; it may be a newer or broken client.
                    let failure = Failure {
                        message: format!("the agent could not read a request: {e}"),
                        ..Failure::default()
                    };
                    let _ = send(output, &Reply::Failed(failure));
                    return Err(e);
                }
            };
            let reply = match self.handle(request, input, output) {
                Ok(reply) => reply,
                Err(Handled::Disconnected(e)) => return Err(e),
                Err(Handled::Failed(error)) => Reply::Failed(failure(error)),
            };
            send(output, &reply)?;
        }
    }

    fn handle(
        &mut self,
        request: Request,
        input: &mut dyn Read,
        output: &mut dyn Write,
    ) -> Result<Reply, Handled> {
        match request {
            Request::Hello { .. } => Ok(Reply::Hello {
                protocol: PROTOCOL,
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                hostname: rustix::system::uname()
                    .nodename()
                    .to_string_lossy()
                    .into_owned(),
            }),
            Request::Open {
                path,
                lock,
                wait_lock_ms,
            } => {
                let deploy = DeployPath::new(path)?;
                deploy.current_link()?;
                if lock {
                    deploy.ensure_layout()?;
                    let wait = wait_lock_ms.map(Duration::from_millis);
                    self.lock = Some(DeployLock::acquire(&deploy.lock_file(), wait)?);
                } else if !deploy.exists() {
                    return Err(Handled::Failed(CommandError::usage(
                        format!("{} does not exist", deploy.root().display()),
                        "deploy to this host first",
                    )));
                }
                let current = deploy.current_release()?;
                let releases = deploy.releases()?;
                let base = current.clone().or_else(|| releases.last().cloned());
                let manifest_digest =
                    base.and_then(|id| manifest::stored_digest(&deploy.manifest_file(&id)));
                self.deploy = Some(deploy);
                Ok(Reply::Opened {
                    current,
                    releases,
                    manifest_digest,
                })
            }
            Request::Run { args } => {
                const ALLOWED: [&str; 2] = ["releases", "php"];
                if !args.first().is_some_and(|a| ALLOWED.contains(&a.as_str())) {
                    return Err(Handled::Failed(CommandError::usage(
                        format!("the agent runs only {ALLOWED:?}, not {args:?}"),
                        "this is a bug in the deploying cutover",
                    )));
                }
                let exe = std::env::current_exe().map_err(|e| {
                    CommandError::from(cutover_core::Error::io("find", "this executable", e))
                })?;
                // Only what the deploying machine sent counts, never a cutover.toml that
                // happens to sit in the remote user's home.
                let output = std::process::Command::new(exe)
                    .args(["--config", "/dev/null"])
                    .args(&args)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| {
                        CommandError::from(cutover_core::Error::io("run", "cutover", e))
                    })?;
                Ok(Reply::Ran {
                    exit_code: output.status.code().unwrap_or(1),
                    stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                })
            }
            Request::Stage(stage) => self.stage(*stage, input, output),
            Request::Switch {
                release,
                rollback,
                revert,
                assets,
            } => {
                let (deploy, mode) = self.changing()?;
                let kind = if rollback {
                    EventKind::RolledBack
                } else {
                    EventKind::Switched
                };
                let at_us = manifest::now_micros();
                let activation =
                    cutover_core::activate::activate(deploy, &release, kind, mode, &assets)?;
                self.pending.retain(|id| *id != release);
                // A later explicit switch (going back) supersedes a tentative one.
                self.revert = revert
                    .filter(|_| !activation.unchanged)
                    .map(|r| (*r, assets));
                Ok(Reply::Switched {
                    release,
                    previous: activation.previous,
                    at_us,
                    unchanged: activation.unchanged,
                    warnings: activation.warnings,
                })
            }
            Request::Refresh(refresh) => Ok(Reply::Refreshed {
                report: refresh_for(self.deploy()?, *refresh)?,
            }),
            Request::Commit => {
                self.revert = None;
                Ok(Reply::Committed)
            }
            Request::Abort { release } => {
                let (deploy, mode) = self.changing()?;
                deploy::discard_release(deploy, &release, mode)?;
                self.pending.retain(|id| *id != release);
                Ok(Reply::Aborted)
            }
            Request::Cleanup { keep } => {
                let (deploy, mode) = self.changing()?;
                let report = cutover_core::cleanup::cleanup(deploy, keep, mode)?;
                Ok(Reply::CleanedUp {
                    removed: report.removed,
                })
            }
        }
    }

    fn stage(
        &mut self,
        request: StageRequest,
        input: &mut dyn Read,
        output: &mut dyn Write,
    ) -> Result<Reply, Handled> {
        let started = Instant::now();
        let (deploy, mode) = self.changing()?;
        let (release, previous) = deploy::begin(deploy, request.release.clone(), mode)?;
        let previous_manifest = previous
            .as_ref()
            .and_then(|id| Manifest::load(&deploy.manifest_file(id)).ok().flatten());
        let manifest = match request.manifest {
            ManifestPayload::Full(manifest) => manifest,
            ManifestPayload::Delta(delta) => {
                let base = previous_manifest.as_ref().ok_or_else(|| {
                    CommandError::from(cutover_core::Error::BadManifest(
                        "a delta arrived but this host has no manifest to apply it to".into(),
                    ))
                })?;
                base.apply(&delta)?
            }
        };
        manifest.validate()?;
        let opts = DeployOptions {
            shared_dirs: request.shared_dirs,
            shared_files: request.shared_files,
            before_switch: request.before_switch,
            release_file: request.release_file,
            assets: request.assets,
            ..DeployOptions::new("")
        };
        deploy::check_shared(deploy, &opts)?;
        let previous_dir = previous.as_ref().map(|id| deploy.release(id));
        let plan = manifest::plan(
            &manifest,
            previous_dir.as_deref(),
            previous_manifest.as_ref(),
        )?;
        let need = plan.need.iter().map(|&i| i as u32).collect();
        send(
            output,
            &Reply::Need {
                release: release.clone(),
                previous: previous.clone(),
                need,
            },
        )
        .map_err(Handled::Disconnected)?;

        let job = StageJob {
            release: &release,
            previous: previous.as_ref(),
            opts: &opts,
            source: &request.source,
        };
        let mut fill = ManifestFill {
            manifest: &manifest,
            plan: &plan,
            input,
            consumed: false,
            disconnected: None,
        };
        let staged =
            deploy::stage_and_commit(deploy, &job, previous_dir.as_deref(), &mut fill, &Silent);
        if let Some(e) = fill.disconnected.take() {
            return Err(Handled::Disconnected(e));
        }
        if !fill.consumed {
            // Keep the stream in step: the content is on its way whatever happened here.
            drain(fill.input).map_err(Handled::Disconnected)?;
        }
        let (stats, assets) = staged?;
        // A lost manifest only costs the next deploy a full manifest and some hashing.
        let _ = manifest.store(&deploy.manifest_file(&release));
        self.pending.push(release.clone());
        Ok(Reply::Staged {
            release,
            stats,
            assets,
            stage_ms: started.elapsed().as_millis() as u64,
        })
    }

    fn deploy(&self) -> Result<&DeployPath, Handled> {
        self.deploy.as_ref().ok_or_else(not_open)
    }

    fn changing(&self) -> Result<(&DeployPath, Mode<'_>), Handled> {
        match (&self.deploy, &self.lock) {
            (Some(deploy), Some(lock)) => Ok((deploy, Mode::Apply(lock))),
            _ => Err(not_open()),
        }
    }

    /// Undoes an uncommitted switch, removes what this session staged and never switched
    /// to; the lock goes with us.
    fn close(&mut self) {
        if let (Some(deploy), Some(lock), Some((revert, assets))) =
            (&self.deploy, &self.lock, self.revert.take())
        {
            let mode = Mode::Apply(lock);
            if cutover_core::activate::activate(
                deploy,
                &revert.release,
                EventKind::RolledBack,
                mode,
                &assets,
            )
            .is_ok()
            {
                let _ = refresh_for(deploy, revert);
            }
        }
        if let (Some(deploy), Some(lock)) = (&self.deploy, &self.lock) {
            for release in self.pending.drain(..) {
                let _ = deploy::discard_release(deploy, &release, Mode::Apply(lock));
            }
        }
    }
}

/// Runs the host's refresh steps and health check for `request.release` (now current);
/// `null` when the host has nothing configured.
fn refresh_for(deploy: &DeployPath, request: RefreshRequest) -> Result<serde_json::Value> {
    let config = Config {
        php: request.php,
        refresh: request.refresh,
        health: request.health,
        ..Config::default()
    };
    Ok(match crate::refresh::plan(&config, deploy)? {
        Some(plan) => {
            let report = crate::refresh::check(&plan, deploy, &request.release)?;
            serde_json::to_value(report).unwrap_or_default()
        }
        None => serde_json::Value::Null,
    })
}

fn not_open() -> Handled {
    Handled::Failed(CommandError {
        kind: Kind::Usage,
        message: "no deploy path is open in this session".into(),
        causes: Vec::new(),
        hints: vec!["send `open` first".into()],
    })
}

/// How a request ended when it did not produce a reply of its own.
enum Handled {
    Failed(CommandError),
    Disconnected(ProtocolError),
}

impl<E: Into<CommandError>> From<E> for Handled {
    fn from(error: E) -> Self {
        Handled::Failed(error.into())
    }
}

fn failure(error: CommandError) -> Failure {
    Failure {
        message: error.message,
        causes: error.causes,
        hints: error.hints,
        usage: error.kind == Kind::Usage,
    }
}

/// Fills a staging directory from the manifest: links from the previous release, the
/// rest from the content stream.
struct ManifestFill<'a> {
    manifest: &'a Manifest,
    plan: &'a Plan,
    input: &'a mut dyn Read,
    consumed: bool,
    disconnected: Option<ProtocolError>,
}

impl Fill for ManifestFill<'_> {
    fn fill(
        &mut self,
        staging: &std::path::Path,
        _previous: Option<&std::path::Path>,
        link: bool,
        _observer: &dyn Observer,
    ) -> cutover_core::Result<(StageStats, Vec<std::path::PathBuf>)> {
        let io_error =
            |e: std::io::Error| cutover_core::Error::io("receive files into", staging, e);
        let mut content = ContentReader::new(self.input, Limits::DEFAULT).map_err(io_error)?;
        let result = manifest::materialize(self.manifest, self.plan, staging, link, &mut content);
        // Read to the end of the stream either way, so the next message is in step.
        let mut sink = Vec::new();
        let end = match &result {
            Ok(_) => content.finish(),
            Err(_) => content.read_to_end(&mut sink).map(|_| ()),
        };
        self.consumed = true;
        if let Err(e) = end {
            let disconnect = ProtocolError::Io(std::io::Error::new(e.kind(), e.to_string()));
            if disconnect.is_disconnect() {
                self.disconnected = Some(disconnect);
            }
            return Err(io_error(e));
        }
        result
    }
}

/// Reads and drops a content stream up to its `End` frame.
fn drain(input: &mut dyn Read) -> Result<(), ProtocolError> {
    let mut content = ContentReader::new(input, Limits::DEFAULT)?;
    std::io::copy(&mut content, &mut std::io::sink())?;
    Ok(())
}
