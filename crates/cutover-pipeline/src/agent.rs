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
    StageRequest, PROTOCOL,
};

use crate::host::local::planned;
use crate::host::StageOrder;
use crate::{Host, HostError, LocalHost};

/// The file name of the agent-only executable built beside `cutover` (see `own_agent` in
/// the ssh transport): what is uploaded to hosts of this machine's platform.
pub const AGENT_EXE: &str = "cutover-agent";

/// What `cutover-agent --version` prints: the deploying cutover uploads the one beside it
/// only when this line is its own, so a stale file left from another build is never sent.
pub fn version_line() -> String {
    format!(
        "{AGENT_EXE} {} protocol {PROTOCOL}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Serves one session on stdin/stdout: `cutover agent` and `cutover-agent agent`.
pub fn serve_stdio() -> Result<(), ProtocolError> {
    let mut input = std::io::BufReader::with_capacity(256 * 1024, std::io::stdin().lock());
    let mut output = std::io::BufWriter::new(std::io::stdout().lock());
    serve(&mut input, &mut output)
}

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
            if !cutover_config::is_host_name(&open.host) {
                return Err(HostError::usage(
                    format!("the host name {:?} is not a [hosts] name", open.host),
                    "this is a bug in the deploying cutover",
                )
                .into());
            }
            if !open.path.is_absolute() {
                return Err(HostError::usage(
                    format!("the deploy path {} is not absolute", open.path.display()),
                    "set an absolute `path` for the host",
                )
                .into());
            }
            // The pool's scripts are written where this says: only inside the deploy path.
            if let Some(pool) = &open.refresh.pool {
                check_script_dir(&open.path, pool.script_dir.as_deref())?;
            }
            Reply::Opened(host.open(&open)?)
        }
        Request::Stage(stage) => stage_received(host, *stage, input, output)?,
        Request::Hooks(hooks) => Reply::HooksRan {
            changed_shared: host.run_hooks(&hooks)?,
        },
        Request::Finish { release } => Reply::Finished(host.finish(&release)?),
        Request::BeforeSwitch { release } => Reply::Warmed {
            report: host.before_switch_for(&release)?,
        },
        Request::Switch(switch) => Reply::Switched(host.switch(&switch)?),
        Request::Clock => Reply::Clock {
            now_us: cutover_core::manifest::now_micros(),
        },
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
            check_script_dir(open_path(host)?, pool.script_dir.as_deref())?;
            Reply::PhpStatus(Host::php_status(host, &pool)?)
        }
        Request::PhpReset { pool, wait_ms } => {
            check_script_dir(open_path(host)?, pool.script_dir.as_deref())?;
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

/// The deploy path of the open session.
fn open_path(host: &LocalHost) -> Result<&Path, HostError> {
    host.deploy_path()
        .map(|deploy| deploy.root())
        .ok_or_else(|| HostError::internal("no deploy path is open in this session"))
}

/// The pool's script is written on this host: only inside the deploy path.
fn check_script_dir(deploy: &Path, dir: Option<&Path>) -> Result<(), HostError> {
    let Some(dir) = dir else {
        return Ok(());
    };
    if dir.is_absolute()
        && dir.starts_with(deploy)
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
            deploy.display()
        ),
        "an agent writes only inside its deploy path; leave out --script-dir on a fleet",
    ))
}

fn stage_received(
    host: &mut LocalHost,
    request: StageRequest,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<Reply, Handled> {
    let started = std::time::Instant::now();
    crate::host::local::check_spec(&request.spec)?;
    let opts = host.stage_options(&request.spec, Path::new(""))?;
    // Shared files are checked before any byte is asked for, as on the deploying machine.
    let (release, previous) = if request.dry_run {
        host.begin_dry_run(&request.release)?
    } else {
        host.begin(&request.release, &opts)?
    };
    let deploy = host
        .deploy_path()
        .cloned()
        .ok_or_else(|| HostError::internal("no deploy path is open in this session"))?;
    // Stored here by an earlier session, yet checked like anything received: a damaged
    // one only costs a full manifest.
    let previous_manifest = previous
        .as_ref()
        .and_then(|id| Manifest::load(&deploy.manifest_file(id)).ok().flatten())
        .map(|(manifest, _digest)| manifest)
        .filter(|manifest| manifest.validate().is_ok());
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
    plan: &'a Plan<'a>,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use cutover_core::history::Source;
    use cutover_core::manifest::Manifest;
    use cutover_core::ReleaseId;
    use cutover_protocol::{
        recv, send, Access, Limits, ManifestPayload, OpenRequest, Reply, Request, StageRequest,
        StageSpec, PROTOCOL,
    };

    /// Feeds `requests` to a session and returns its replies.
    fn session(requests: &[Request]) -> Vec<Reply> {
        let mut input = Vec::new();
        for request in requests {
            send(&mut input, request).unwrap();
        }
        let mut output = Vec::new();
        let _ = super::serve(&mut input.as_slice(), &mut output);
        let mut replies = Vec::new();
        let mut rest = output.as_slice();
        while let Ok(reply) = recv::<Reply>(&mut rest, &Limits::DEFAULT) {
            replies.push(reply);
        }
        replies
    }

    fn hello() -> Request {
        Request::Hello {
            protocol: PROTOCOL,
            version: "test".into(),
        }
    }

    fn open(path: &Path) -> Request {
        Request::Open(Box::new(OpenRequest {
            host: "web1".into(),
            path: path.to_path_buf(),
            access: Access::Lock {
                wait_ms: None,
                create: true,
            },
            refresh: Default::default(),
            assets: cutover_core::assets::AssetOptions::none(),
        }))
    }

    fn stage(spec: StageSpec) -> Request {
        Request::Stage(Box::new(StageRequest {
            release: ReleaseId::parse("r1").unwrap(),
            manifest: ManifestPayload::Full(Manifest::default()),
            spec,
            source: Source::default(),
            dry_run: false,
        }))
    }

    /// Everything under `dir`, as relative paths.
    fn tree(dir: &Path) -> Vec<String> {
        let mut paths = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                paths.push(path.strip_prefix(dir).unwrap().display().to_string());
                if entry.file_type().unwrap().is_dir() {
                    dirs.push(path);
                }
            }
        }
        paths.sort();
        paths
    }

    #[test]
    fn paths_from_the_deploying_side_that_leave_the_deploy_path_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let deploy = root.path().join("dp_evil");
        let outside = root.path().join("x");
        let specs = [
            StageSpec {
                release_file: outside.join("PWNED.txt").display().to_string(),
                ..StageSpec::default()
            },
            StageSpec {
                release_file: "RELEASE".into(),
                shared_dirs: vec!["../../OUTSIDE_DIR".into()],
                ..StageSpec::default()
            },
            StageSpec {
                release_file: "RELEASE".into(),
                shared_files: vec!["/etc/passwd".into()],
                ..StageSpec::default()
            },
        ];
        for spec in specs {
            let replies = session(&[hello(), open(&deploy), stage(spec.clone())]);
            match replies.last() {
                Some(Reply::Failed(failure)) => {
                    assert!(failure.usage, "{spec:?}: {failure:?}");
                    assert!(
                        failure.message.contains("inside the release"),
                        "{failure:?}"
                    );
                }
                other => panic!("{spec:?}: expected a refusal, got {other:?}"),
            }
            let everything = tree(root.path());
            assert!(
                everything.iter().all(|p| p.starts_with("dp_evil")),
                "{spec:?}: written outside the deploy path: {everything:?}"
            );
            assert!(!deploy.join("releases/r1").exists());
        }
    }

    #[test]
    fn a_session_must_begin_with_hello_of_this_protocol() {
        let root = tempfile::tempdir().unwrap();
        let replies = session(&[open(root.path())]);
        assert!(
            matches!(&replies[..], [Reply::Failed(f)] if f.message.contains("hello")),
            "{replies:?}"
        );
        let old = Request::Hello {
            protocol: PROTOCOL - 1,
            version: "0.0.1".into(),
        };
        let replies = session(&[old, open(root.path())]);
        assert!(
            matches!(&replies[..], [Reply::Failed(f)] if f.message.contains("protocol")),
            "{replies:?}"
        );
        assert!(tree(root.path()).is_empty(), "nothing was opened");
    }

    /// A valid stage request's frame, for mutation.
    fn stage_frame() -> Vec<u8> {
        let mut bytes = Vec::new();
        let spec = StageSpec {
            release_file: "RELEASE".into(),
            shared_dirs: vec!["storage".into()],
            ..StageSpec::default()
        };
        send(&mut bytes, &stage(spec)).unwrap();
        bytes
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Random bytes after a valid start, and a valid stage request with bytes flipped
        /// or cut: never a panic, never a file outside the deploy path.
        #[test]
        fn random_and_mutated_frames_never_panic_nor_write_outside(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..8),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let root = tempfile::tempdir().unwrap();
            let deploy = root.path().join("dp");
            let mut input = Vec::new();
            send(&mut input, &hello()).unwrap();
            send(&mut input, &open(&deploy)).unwrap();
            input.extend_from_slice(&noise);
            let _ = super::serve(&mut input.as_slice(), &mut Vec::new());

            // The deploy path is the deploying side's to name: the session starts valid,
            // and what follows it is mutated.
            let mut mutated = stage_frame();
            for (at, byte) in &flips {
                let len = mutated.len();
                mutated[at % len] ^= byte;
            }
            mutated.truncate(cut % (mutated.len() + 1));
            let mut session = Vec::new();
            send(&mut session, &hello()).unwrap();
            send(&mut session, &open(&deploy)).unwrap();
            session.extend_from_slice(&mutated);
            let _ = super::serve(&mut session.as_slice(), &mut Vec::new());
            let everything = tree(root.path());
            proptest::prop_assert!(
                everything.iter().all(|p| p.starts_with("dp")),
                "written outside the deploy path: {:?}", everything
            );
        }
    }

    #[test]
    fn a_truncated_frame_is_an_error_not_a_clean_end() {
        let mut input = Vec::new();
        send(&mut input, &hello()).unwrap();
        let mut partial = Vec::new();
        send(&mut partial, &hello()).unwrap();
        input.extend_from_slice(&partial[..partial.len() - 3]);
        let mut output = Vec::new();
        let outcome = super::serve(&mut input.as_slice(), &mut output);
        assert!(
            outcome.is_err(),
            "a frame cut short must not pass as the end"
        );
    }

    /// Feeds raw bytes (requests and content streams) to a session; its replies by name,
    /// a failure with its message.
    fn raw_session(bytes: &[u8]) -> Vec<String> {
        let mut output = Vec::new();
        let _ = super::serve(&mut &bytes[..], &mut output);
        let mut replies = Vec::new();
        let mut rest = output.as_slice();
        while let Ok(reply) = recv::<Reply>(&mut rest, &Limits::DEFAULT) {
            replies.push(match reply {
                Reply::Failed(f) => format!("failed: {}", f.message),
                other => other.name().to_string(),
            });
        }
        replies
    }

    /// A stage of `id` with an empty manifest, then its (empty) content stream.
    fn push_stage(bytes: &mut Vec<u8>, id: &str, hooks_follow: bool) {
        let spec = StageSpec {
            release_file: "RELEASE".into(),
            hooks_follow,
            ..StageSpec::default()
        };
        send(
            bytes,
            &Request::Stage(Box::new(StageRequest {
                release: ReleaseId::parse(id).unwrap(),
                manifest: ManifestPayload::Full(Manifest::default()),
                spec,
                source: Source::default(),
                dry_run: false,
            })),
        )
        .unwrap();
        cutover_protocol::ContentWriter::new(bytes)
            .unwrap()
            .finish()
            .unwrap();
    }

    fn id(text: &str) -> ReleaseId {
        ReleaseId::parse(text).unwrap()
    }

    fn switch_to(release: &str) -> Request {
        Request::Switch(cutover_protocol::SwitchRequest {
            release: id(release),
            rollback: false,
            tentative: false,
            at_us: None,
        })
    }

    fn after_switch(release: &str, run: &str) -> Request {
        Request::Hooks(Box::new(cutover_protocol::HooksRequest {
            phase: cutover_core::hooks::HookPhase::AfterSwitch,
            release: id(release),
            previous: None,
            commands: vec![cutover_core::hooks::HookCommand {
                run: run.into(),
                timeout_ms: 5000,
            }],
            failed_step: None,
        }))
    }

    /// What the other end asks is checked against what the session did: no switch to or
    /// hooks in an unfinished release, no second finish, no abort of a release this
    /// session did not stage.
    #[test]
    fn the_agent_refuses_steps_out_of_order() {
        let root = tempfile::tempdir().unwrap();
        let deploy = root.path().join("dp");
        let mut bytes = Vec::new();
        send(&mut bytes, &hello()).unwrap();
        send(&mut bytes, &open(&deploy)).unwrap();
        push_stage(&mut bytes, "r1", true);
        for request in [
            switch_to("r1"),
            after_switch("r1", "touch ran"),
            Request::Finish { release: id("r1") },
            Request::Finish { release: id("r1") },
            after_switch("r1", "touch ran"),
            switch_to("r1"),
            after_switch("r1", "touch ran"),
        ] {
            send(&mut bytes, &request).unwrap();
        }
        let replies = raw_session(&bytes);
        assert_eq!(
            replies[..4],
            ["hello", "opened", "need", "staged"],
            "{replies:?}"
        );
        let rest = &replies[4..];
        assert!(rest[0].starts_with("failed: no release `r1`"), "{rest:?}");
        assert!(rest[1].starts_with("failed: no release `r1`"), "{rest:?}");
        assert_eq!(rest[2], "finished");
        assert!(rest[3].contains("not started in this session"), "{rest:?}");
        assert!(rest[4].contains("not the current release"), "{rest:?}");
        assert_eq!(rest[5..], ["switched", "hooks_ran"], "{rest:?}");
        assert!(deploy.join("releases/r1/ran").exists());

        // A second session may not drop a release it did not stage.
        let replies = session(&[hello(), open(&deploy), Request::Abort { release: id("r1") }]);
        assert!(
            matches!(replies.last(), Some(Reply::Failed(f)) if f.message.contains("not started in this session")),
            "{replies:?}"
        );
        assert!(deploy.join("releases/r1").is_dir());
    }

    /// The pool's scripts are written where `Open` says: never outside the deploy path.
    #[test]
    fn an_open_naming_a_script_dir_outside_the_deploy_path_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let deploy = root.path().join("dp");
        let outside = root.path().join("outside");
        let refresh = cutover_refresh::RefreshSpec {
            pool: Some(cutover_refresh::PoolSpec {
                fpm: "127.0.0.1:9".into(),
                chroot: None,
                script_dir: Some(outside.clone()),
                timeout_ms: 200,
            }),
            ..Default::default()
        };
        let open = Request::Open(Box::new(OpenRequest {
            host: "web1".into(),
            path: deploy.clone(),
            access: Access::Read,
            refresh,
            assets: cutover_core::assets::AssetOptions::none(),
        }));
        let replies = session(&[hello(), open]);
        assert!(
            matches!(replies.last(), Some(Reply::Failed(f)) if f.message.contains("outside the deploy path")),
            "{replies:?}"
        );
        assert!(!outside.exists() && !deploy.exists());
    }

    /// A switch instant is waited for only so long: one far ahead is refused, one that
    /// has passed renames at once.
    #[test]
    fn a_switch_instant_far_ahead_is_refused_and_a_past_one_is_now() {
        let root = tempfile::tempdir().unwrap();
        let deploy = root.path().join("dp");
        let at = |ahead_us: i64| {
            Request::Switch(cutover_protocol::SwitchRequest {
                release: id("r1"),
                rollback: false,
                tentative: false,
                at_us: Some(cutover_core::manifest::now_micros().saturating_add_signed(ahead_us)),
            })
        };
        let mut bytes = Vec::new();
        send(&mut bytes, &hello()).unwrap();
        send(&mut bytes, &open(&deploy)).unwrap();
        push_stage(&mut bytes, "r1", false);
        send(&mut bytes, &Request::Finish { release: id("r1") }).unwrap();
        send(&mut bytes, &at(60_000_000)).unwrap();
        send(&mut bytes, &at(-60_000_000)).unwrap();
        let replies = raw_session(&bytes);
        assert!(
            replies[5].contains("ahead of this host's clock"),
            "{replies:?}"
        );
        assert_eq!(replies[6], "switched", "{replies:?}");
    }
}
