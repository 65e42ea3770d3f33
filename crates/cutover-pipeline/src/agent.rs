//! `cutover agent`: the other end of a remote host, run over ssh (or as a child process).
//! A thin dispatcher: each request is checked as the local CLI checks its input, then
//! handed to the same [`LocalHost`] a local deploy uses.
//!
//! The session holds the deploy lock from `Open` until the connection ends. When it ends
//! for any reason (done, the deploying machine killed, the network gone), a switch not yet
//! committed is undone and a release staged but never switched to is removed.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use cutover_core::deploy::Fill;
use cutover_core::manifest::{self, Manifest, Plan};
use cutover_core::stage::{Observer, Silent, StageStats};
use cutover_protocol::{
    recv, send, ContentReader, Failure, Limits, ManifestPayload, ProtocolError, Reply, Request,
    StageRequest, StageSpec, PROTOCOL,
};

use crate::host::local::{options, planned};
use crate::host::StageOrder;
use crate::{Host, HostError, LocalHost};

/// Serves one session on `input`/`output` until the peer closes it. `Err` only for a
/// broken conversation, never for a failed request (that is a `Failed` reply).
pub fn serve(input: &mut dyn Read, output: &mut dyn Write) -> Result<(), ProtocolError> {
    let mut host = LocalHost::new("agent", Arc::new(Silent));
    let outcome = serve_with(&mut host, input, output);
    host.end();
    match outcome {
        Err(e) if e.is_disconnect() && !matches!(e, ProtocolError::Truncated) => Ok(()),
        other => other,
    }
}

fn serve_with(
    host: &mut LocalHost,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), ProtocolError> {
    let mut greeted = false;
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
        let reply = match (&request, greeted) {
            (Request::Hello { protocol, version }, _) if *protocol != PROTOCOL => {
                let e = ProtocolError::Version {
                    ours: PROTOCOL,
                    theirs: *protocol,
                    version: version.clone(),
                };
                let _ = send(
                    output,
                    &Reply::Failed(
                        HostError::usage(
                            e.to_string(),
                            "deploy with the same cutover version on both ends",
                        )
                        .to_failure(),
                    ),
                );
                return Err(e);
            }
            (Request::Hello { .. }, _) => {
                greeted = true;
                Ok(hello())
            }
            (_, false) => Err(Handled::Failed(HostError::usage(
                "the first request of a session must be `hello`",
                "this is a bug in the deploying cutover",
            ))),
            _ => handle(host, request, input, output),
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(Handled::Disconnected(e)) => return Err(e),
            Err(Handled::Failed(error)) => Reply::Failed(error.to_failure()),
        };
        send(output, &reply)?;
    }
}

fn handle(
    host: &mut LocalHost,
    request: Request,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<Reply, Handled> {
    Ok(match request {
        Request::Hello { .. } => hello(),
        Request::Open(open) => {
            if !open.path.is_absolute() {
                return Err(HostError::usage(
                    format!("the deploy path {} is not absolute", open.path.display()),
                    "set an absolute `path` for the host",
                )
                .into());
            }
            Reply::Opened(host.open(&open)?)
        }
        Request::Stage(stage) => stage_received(host, *stage, input, output)?,
        Request::Switch(switch) => Reply::Switched(host.switch(&switch)?),
        Request::Refresh { release } => Reply::Refreshed {
            report: host.refresh_for(&release)?,
        },
        Request::Commit => {
            host.commit()?;
            Reply::Committed
        }
        Request::Abort { release } => {
            host.discard(&release)?;
            Reply::Aborted
        }
        Request::Cleanup { keep, dry_run } => Reply::CleanedUp(host.clean(keep, dry_run)?),
        Request::Releases => Reply::Releases(host.list()?),
        Request::PhpStatus(pool) => {
            check_script_dir(host, pool.script_dir.as_deref())?;
            Reply::PhpStatus(Host::php_status(host, &pool)?)
        }
        Request::PhpReset { pool, wait_ms } => {
            check_script_dir(host, pool.script_dir.as_deref())?;
            Reply::PhpReset(Host::php_reset(host, &pool, wait_ms)?)
        }
    })
}

fn hello() -> Reply {
    Reply::Hello {
        protocol: PROTOCOL,
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        hostname: rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    }
}

/// The pool's script is written on this host: only inside the deploy path.
fn check_script_dir(host: &LocalHost, dir: Option<&Path>) -> Result<(), HostError> {
    let (Some(dir), Some(deploy)) = (dir, host.deploy_path()) else {
        return Ok(());
    };
    if dir.is_absolute()
        && dir.starts_with(deploy.root())
        && !dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Ok(());
    }
    Err(HostError::usage(
        format!(
            "the script directory {} is outside the deploy path {}",
            dir.display(),
            deploy.root().display()
        ),
        "an agent writes only inside its deploy path; leave out --script-dir on a fleet",
    ))
}

/// Paths of a stage spec, as cutover.toml's own checks would take them: relative, inside
/// the release, no `..`.
fn check_spec(spec: &StageSpec) -> Result<(), HostError> {
    let paths = spec
        .shared_dirs
        .iter()
        .map(|p| ("[shared] dirs", p))
        .chain(spec.shared_files.iter().map(|p| ("[shared] files", p)))
        .chain(std::iter::once((
            "[deploy] release_file",
            &spec.release_file,
        )));
    for (key, path) in paths {
        let trimmed = path.trim_end_matches('/');
        let bad = trimmed.is_empty()
            || Path::new(trimmed).is_absolute()
            || trimmed
                .split('/')
                .any(|part| part == ".." || part == "." || part.is_empty());
        if bad {
            return Err(HostError::usage(
                format!("{key} `{path}` is not a path inside the release"),
                "name a relative path without `..`, e.g. `storage`",
            ));
        }
    }
    Ok(())
}

fn stage_received(
    host: &mut LocalHost,
    request: StageRequest,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<Reply, Handled> {
    let started = std::time::Instant::now();
    check_spec(&request.spec)?;
    let (release, previous) = host.begin(&request.release, request.dry_run)?;
    let deploy = host
        .deploy_path()
        .cloned()
        .ok_or_else(|| HostError::internal("no deploy path is open in this session"))?;
    let previous_manifest = previous
        .as_ref()
        .and_then(|id| Manifest::load(&deploy.manifest_file(id)).ok().flatten());
    let manifest = match request.manifest {
        ManifestPayload::Full(manifest) => manifest,
        ManifestPayload::Delta(delta) => {
            let base = previous_manifest.as_ref().ok_or_else(|| {
                HostError::from(cutover_core::Error::BadManifest(
                    "a delta arrived but this host has no manifest to apply it to".into(),
                ))
            })?;
            base.apply(&delta).map_err(HostError::from)?
        }
    };
    manifest.validate().map_err(HostError::from)?;
    let previous_dir = previous.as_ref().map(|id| deploy.release(id));
    let plan = manifest::plan(
        &manifest,
        previous_dir.as_deref(),
        previous_manifest.as_ref(),
    )
    .map_err(HostError::from)?;
    if request.dry_run {
        return Ok(Reply::Staged(planned(
            release,
            previous,
            plan.stats(&manifest),
        )));
    }
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

    let opts = options(&request.spec, host.assets()?, Path::new(""));
    let order = StageOrder {
        release: &release,
        spec: &request.spec,
        source: &request.source,
        dry_run: false,
    };
    let mut fill = ManifestFill {
        manifest: &manifest,
        plan: &plan,
        input,
        consumed: false,
        disconnected: None,
    };
    let staged = host.stage_prepared(
        &order,
        &opts,
        &release,
        previous.as_ref(),
        &mut fill,
        &Silent,
    );
    if let Some(e) = fill.disconnected.take() {
        return Err(Handled::Disconnected(e));
    }
    if !fill.consumed {
        // Keep the stream in step: the content is on its way whatever happened here.
        drain(fill.input).map_err(Handled::Disconnected)?;
    }
    let staged = staged?;
    // A lost manifest only costs the next deploy a full manifest and some hashing.
    let _ = manifest.store(&deploy.manifest_file(&release));
    host.staged_elsewhere(&release, &request.source)?;
    Ok(Reply::Staged(cutover_protocol::Staged {
        stage_ms: started.elapsed().as_millis() as u64,
        ..staged
    }))
}

/// How a request ended when it did not produce a reply of its own.
enum Handled {
    Failed(HostError),
    Disconnected(ProtocolError),
}

impl From<HostError> for Handled {
    fn from(error: HostError) -> Self {
        Handled::Failed(error)
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
        staging: &Path,
        _previous: Option<&Path>,
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
