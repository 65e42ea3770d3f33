//! Deploying to every host of `[hosts]` with one coordinated switch.
//!
//! 1. Open a session with each host's agent (each takes its own deploy lock).
//! 2. Stage everywhere in parallel: manifest (or the delta against the host's last one)
//!    first, then only the bytes the host asked for.
//! 3. If any host failed, every host drops what it staged and nobody switches.
//! 4. Otherwise the switch request goes to all hosts at once, then refresh and health
//!    check run on each; if any of those fail, every host goes back to its previous
//!    release (and refreshes for it).
//!
//! A killed deploying process or a dropped connection ends the agents' sessions: each
//! drops a release it staged but never switched to, and releases its lock.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cutover_config::Config;
use cutover_core::deploy::{self, DeployOptions};
use cutover_core::manifest::{self, EntryKind, Manifest};
use cutover_core::stage::StageStats;
use cutover_core::ReleaseId;
use cutover_protocol::{
    ContentWriter, ManifestPayload, RefreshRequest, Reply, Request, StageRequest,
};
use rayon::prelude::*;
use serde::Serialize;

use crate::cli::{ChangeArgs, DeployArgs, TargetArgs};
use crate::error::{CommandError, Kind, Result};
use crate::printer::{human_bytes, Printer};
use crate::remote::{Agent, Target};

/// One host as the config describes it.
#[derive(Debug, Clone)]
pub struct Host {
    pub target: Target,
    pub php: cutover_config::PhpSettings,
    pub refresh: cutover_config::RefreshSettings,
    pub health: cutover_config::HealthSettings,
    pub assets: cutover_core::assets::AssetOptions,
}

/// The hosts of `[hosts]`, or only those named with `--host`.
pub fn hosts(config: &Config, selected: &[String]) -> Result<Vec<Host>> {
    for name in selected {
        if !config.hosts.contains_key(name) {
            let known: Vec<&str> = config.hosts.keys().map(String::as_str).collect();
            return Err(CommandError::usage(
                format!("no host `{name}` in [hosts]"),
                format!("hosts in the config: {}", known.join(", ")),
            ));
        }
    }
    let ssh_cwd = config
        .origin
        .as_ref()
        .and_then(|o| o.parent())
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut hosts = Vec::new();
    for (name, settings) in &config.hosts {
        if !selected.is_empty() && !selected.contains(name) {
            continue;
        }
        let path = settings
            .path
            .clone()
            .or_else(|| config.deploy.path.clone())
            .ok_or_else(|| {
                CommandError::usage(
                    format!("host `{name}` has no deploy path"),
                    format!("set `path = \"/var/www/app\"` in [hosts.{name}] or in [deploy]"),
                )
            })?;
        let mut ssh_options = config.ssh.options.clone();
        ssh_options.extend(settings.ssh_options.iter().cloned());
        hosts.push(Host {
            target: Target {
                name: name.clone(),
                ssh: settings.ssh.clone(),
                ssh_options,
                ssh_cwd: ssh_cwd.clone(),
                path,
            },
            php: settings.php.clone().unwrap_or_else(|| config.php.clone()),
            refresh: settings
                .refresh
                .clone()
                .unwrap_or_else(|| config.refresh.clone()),
            health: settings
                .health
                .clone()
                .unwrap_or_else(|| config.health.clone()),
            assets: crate::settings::asset_options(config),
        });
    }
    Ok(hosts)
}

/// What happened on one host, for the table and `--json`.
#[derive(Debug, Default, Serialize)]
pub struct HostReport {
    pub host: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<ReleaseId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<StageStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assets: Option<cutover_core::assets::CarryReport>,
    pub files_sent: u64,
    pub bytes_sent: u64,
    pub stage_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switched_at_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

struct Session {
    host: Host,
    agent: Option<Agent>,
    report: HostReport,
    current: Option<ReleaseId>,
    releases: Vec<ReleaseId>,
    digest: Option<String>,
    staged: bool,
    switched: bool,
    /// One line per host while a terminal watches.
    bar: Option<indicatif::ProgressBar>,
}

impl Session {
    /// The host's state, in its report and on its progress line.
    fn set_status(&mut self, status: &'static str) {
        self.report.status = status;
        if let Some(bar) = &self.bar {
            bar.set_message(status);
        }
    }

    fn fail(&mut self, error: &CommandError) {
        self.set_status("failed");
        let mut text = error.message.clone();
        for cause in &error.causes {
            text.push_str(&format!("; {cause}"));
        }
        self.report.error = Some(text);
    }

    fn agent(&mut self) -> Result<&mut Agent> {
        let name = self.host.target.name.clone();
        self.agent.as_mut().ok_or_else(|| CommandError {
            kind: Kind::Failed,
            message: format!("{name}: not connected"),
            causes: Vec::new(),
            hints: Vec::new(),
        })
    }
}

pub fn deploy(args: &DeployArgs, config: &Config, printer: Printer) -> Result<()> {
    refuse_dry_run(&args.change)?;
    let opts = crate::settings::deploy_options(args, config)?;
    let source_dir = deploy::resolve_source(&opts.source)?;
    let pool = thread_pool(args.parallel)?;
    let started = Instant::now();
    let mut sessions = open_all(config, &args.target, &pool, Some(&args.change), printer)?;
    if any_failed(&sessions) {
        return finish_failed(
            sessions,
            printer,
            "could not open a session on every host; nothing was staged or switched",
        );
    }

    // 2. One release id for every host.
    let release = match &opts.release {
        Some(id) => id.clone(),
        None => fresh_id(&sessions),
    };
    let mut source = cutover_core::command::git_source(&source_dir);
    source.path = source_dir.display().to_string();
    let build_dir = build(&source_dir, &opts, &release, printer)?;
    let tree = build_dir
        .as_ref()
        .map_or(source_dir.as_path(), |d| d.path());
    let excludes = deploy::source_excludes(&opts);
    // The manifests the hosts have, each read from the cache once: the first one also
    // spares hashing files whose size and mtime did not change.
    let cache = ManifestCache::new();
    let mut bases: std::collections::HashMap<String, Manifest> = std::collections::HashMap::new();
    for digest in sessions.iter().filter_map(|s| s.digest.clone()) {
        if let std::collections::hash_map::Entry::Vacant(slot) = bases.entry(digest) {
            if let Some(base) = cache.load(slot.key()) {
                slot.insert(base);
            }
        }
    }
    let manifest = manifest::scan(tree, &excludes, bases.values().next())?;

    // 3. Stage everywhere.
    phase(
        &sessions,
        printer,
        &format!(
            "staging {release} on {} hosts ({} entries)",
            sessions.len(),
            manifest.entries.len()
        ),
    );
    // One delta per manifest the hosts have (usually one for all), not one per host.
    let deltas: std::collections::HashMap<&String, ManifestPayload> = bases
        .iter()
        .map(|(digest, base)| (digest, ManifestPayload::Delta(manifest.delta_from(base))))
        .collect();
    pool.install(|| {
        sessions.par_iter_mut().for_each(|s| {
            let delta = s.digest.as_ref().and_then(|d| deltas.get(d));
            let request = StageRequest {
                release: Some(release.clone()),
                manifest: match delta {
                    Some(delta) => delta.clone(),
                    None => ManifestPayload::Full(manifest.clone()),
                },
                shared_dirs: opts.shared_dirs.clone(),
                assets: opts.assets.clone(),
                shared_files: opts.shared_files.clone(),
                before_switch: opts.before_switch.clone(),
                release_file: opts.release_file.clone(),
                source: source.clone(),
            };
            if let Err(e) = stage_host(s, &request, &manifest, tree) {
                s.fail(&e);
            }
        })
    });
    if any_failed(&sessions) {
        abort_all(&mut sessions, &release);
        return finish_failed(
            sessions,
            printer,
            "staging failed on a host; no host was switched",
        );
    }

    // 4. Switch everywhere at once: all requests out first, then the replies.
    phase(
        &sessions,
        printer,
        &format!("switching {} hosts to {release}", sessions.len()),
    );
    // 5. Then refresh and check each host; commit only when all passed.
    if let Err(summary) = switch_everywhere(&mut sessions, &pool, &release, false, "deployed") {
        return finish_failed(sessions, printer, summary);
    }

    // 6. Clean up old releases; failures here are warnings, the deploy stands.
    let keep = opts.keep_releases;
    pool.install(|| {
        sessions.par_iter_mut().for_each(|s| {
            match s.agent().and_then(|a| a.call(&Request::Cleanup { keep })) {
                Ok(_) => {}
                Err(e) => s.report.warnings.push(format!(
                    "deployed, but old releases were not removed: {}",
                    e.message
                )),
            }
        })
    });
    cache.store(&manifest);
    let skew_us = skew(&sessions);
    let reports: Vec<HostReport> = sessions.into_iter().map(close).collect();
    for r in &reports {
        for w in &r.warnings {
            printer.warn(format!("{}: {w}", r.host));
        }
    }
    // The same release on every host: say it once.
    let changed = reports
        .iter()
        .find_map(|r| r.assets.as_ref().filter(|a| !a.changed_in_place.is_empty()));
    if let Some(warning) =
        changed.and_then(|a| crate::commands::deploy::changed_in_place_warning(&a.changed_in_place))
    {
        printer.warn(warning);
    }
    let json = serde_json::json!({
        "release": release,
        "hosts": reports,
        "switch_skew_us": skew_us,
        "total_ms": started.elapsed().as_millis() as u64,
    });
    printer.result(&json, || {
        let mut text = format!(
            "Deployed release {release} to {} hosts in {:.2} s; switch skew {:.1} ms\n",
            reports.len(),
            started.elapsed().as_secs_f64(),
            skew_us.unwrap_or(0) as f64 / 1000.0
        );
        text.push_str(&table(&reports));
        text
    });
    Ok(())
}

fn thread_pool(parallel: Option<u64>) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(parallel.unwrap_or(16) as usize)
        .build()
        .map_err(|e| CommandError::usage(format!("--parallel: {e}"), "pass a smaller number"))
}

/// Connects to every selected host in parallel and opens its deploy path: locked when
/// `change` is given (a changing command), read-only otherwise. Hosts that failed are
/// marked so in their report; the caller decides what that means.
fn open_all(
    config: &Config,
    target: &TargetArgs,
    pool: &rayon::ThreadPool,
    change: Option<&ChangeArgs>,
    printer: Printer,
) -> Result<Vec<Session>> {
    let hosts = hosts(config, &target.hosts)?;
    let wait_lock_ms = change
        .and_then(|c| c.wait_lock)
        .map(|d| d.as_millis() as u64);
    let mut sessions: Vec<Session> = hosts
        .into_iter()
        .map(|host| Session {
            report: HostReport {
                host: host.target.name.clone(),
                status: "pending",
                ..HostReport::default()
            },
            host,
            agent: None,
            current: None,
            releases: Vec::new(),
            digest: None,
            staged: false,
            switched: false,
            bar: None,
        })
        .collect();
    if let Some(multi) = printer.multi_progress() {
        for s in &mut sessions {
            let bar = multi.add(indicatif::ProgressBar::new_spinner());
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix:<12} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_prefix(s.host.target.name.clone());
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            bar.set_message("connecting");
            s.bar = Some(bar);
        }
    } else {
        printer.progress_line(&format!("connecting to {} hosts", sessions.len()));
    }
    pool.install(|| {
        sessions.par_iter_mut().for_each(|s| {
            let opened = Agent::connect(&s.host.target).and_then(|mut agent| {
                let reply = agent.call(&Request::Open {
                    path: s.host.target.path.clone(),
                    lock: change.is_some(),
                    wait_lock_ms,
                });
                s.agent = Some(agent);
                reply
            });
            match opened {
                Ok(Reply::Opened {
                    current,
                    releases,
                    manifest_digest,
                }) => {
                    s.report.previous = current.clone();
                    s.current = current;
                    s.releases = releases;
                    s.digest = manifest_digest;
                    s.set_status("connected");
                }
                Ok(other) => s.fail(&unexpected(&s.host.target.name, "opened", &other)),
                Err(e) => s.fail(&e),
            }
        })
    });
    Ok(sessions)
}

/// `cutover switch` and `cutover rollback` on every host: all go to the same release at
/// once, then refresh and check; if any fails, all go back.
pub fn switch(
    config: &Config,
    target: &TargetArgs,
    change: &ChangeArgs,
    release: Option<&str>,
    rollback: bool,
    printer: Printer,
) -> Result<()> {
    refuse_dry_run(change)?;
    let pool = thread_pool(None)?;
    let mut sessions = open_all(config, target, &pool, Some(change), printer)?;
    if any_failed(&sessions) {
        return finish_failed(
            sessions,
            printer,
            "could not open a session on every host; nothing was switched",
        );
    }
    let release = match release {
        Some(id) => crate::settings::release_id(id)?,
        None => common_rollback_target(&sessions)?,
    };
    for s in &mut sessions {
        if let Err(error) = require_release(s, &release) {
            s.fail(&error);
        }
    }
    if any_failed(&sessions) {
        return finish_failed(
            sessions,
            printer,
            "the release is missing on a host; nothing was switched",
        );
    }
    let done = if rollback { "rolled back" } else { "switched" };
    if let Err(summary) = switch_everywhere(&mut sessions, &pool, &release, rollback, done) {
        return finish_failed(sessions, printer, summary);
    }
    let skew_us = skew(&sessions);
    let reports: Vec<HostReport> = sessions.into_iter().map(close).collect();
    let json = serde_json::json!({
        "release": release,
        "hosts": reports,
        "switch_skew_us": skew_us,
    });
    let verb = if rollback { "Rolled back" } else { "Switched" };
    printer.result(&json, || {
        let mut text = format!("{verb} {} hosts to release {release}\n", reports.len());
        for r in &reports {
            let from = r
                .previous
                .as_ref()
                .map_or(String::new(), |p| format!(" (was {p})"));
            text.push_str(&format!("  {:<12} {}{from}\n", r.host, r.status));
        }
        text
    });
    Ok(())
}

/// Switches every host to `release` at once, then refreshes and checks each; returns when
/// the last rename was confirmed. If any host fails, every host that switched goes back;
/// the error is the summary for the table.
fn switch_everywhere(
    sessions: &mut [Session],
    pool: &rayon::ThreadPool,
    release: &ReleaseId,
    rollback: bool,
    done: &'static str,
) -> std::result::Result<Instant, &'static str> {
    // Tentative: an agent whose session ends before the commit goes back by itself, so
    // a deploy killed (or cut off) between switch and commit leaves every host on the
    // old release rather than some on each.
    switch_all(sessions, |_, s| {
        (s.current.as_ref() != Some(release)).then(|| Request::Switch {
            release: release.clone(),
            rollback,
            assets: s.host.assets.clone(),
            revert: s
                .current
                .as_ref()
                .map(|previous| Box::new(refresh_settings(&s.host, previous))),
        })
    });
    let renamed = Instant::now();
    if any_failed(sessions) {
        roll_back_all(sessions, pool);
        return Err("the switch failed on a host; every host that switched was switched back");
    }
    refresh_all(sessions, pool, release, done);
    if any_failed(sessions) {
        roll_back_all(sessions, pool);
        return Err("the refresh or health check failed on a host; every host was switched back to its previous release");
    }
    commit_all(sessions);
    if any_failed(sessions) {
        roll_back_all(sessions, pool);
        return Err("a host was lost before the commit and went back by itself; every host was switched back");
    }
    for s in sessions.iter_mut() {
        s.current = Some(release.clone());
        s.switched = false;
    }
    Ok(renamed)
}

/// Makes the switch final on every host that switched.
fn commit_all(sessions: &mut [Session]) {
    broadcast(
        sessions,
        |_, s| s.switched.then_some(Request::Commit),
        |s, reply| {
            if !matches!(reply, Reply::Committed) {
                s.fail(&unexpected(&s.host.target.name, "committed", &reply));
            }
        },
    );
}

/// A locked session with every selected host that stays open across several switches
/// (`cutover verify` flipping a fleet).
pub struct Fleet {
    sessions: Vec<Session>,
    pool: rayon::ThreadPool,
}

impl Fleet {
    pub fn open(config: &Config, target: &TargetArgs, printer: Printer) -> Result<Fleet> {
        let pool = thread_pool(None)?;
        let change = ChangeArgs {
            dry_run: false,
            wait_lock: None,
        };
        let sessions = open_all(config, target, &pool, Some(&change), printer)?;
        if any_failed(&sessions) {
            return Err(quiet_failure(
                sessions,
                "could not open a session on every host",
            ));
        }
        Ok(Fleet { sessions, pool })
    }

    /// Every host must have the release.
    pub fn require(&self, release: &ReleaseId) -> Result<()> {
        self.sessions
            .iter()
            .try_for_each(|s| require_release(s, release))
    }

    /// Returns when every host has renamed, refreshed and passed its check; the instant is
    /// when the last rename was confirmed.
    pub fn switch_to(&mut self, release: &ReleaseId) -> Result<Instant> {
        switch_everywhere(&mut self.sessions, &self.pool, release, false, "switched")
            .map_err(|summary| failure_of(&self.sessions, summary))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in self.sessions.drain(..) {
            close(s);
        }
    }
}

fn failure_of(sessions: &[Session], summary: &str) -> CommandError {
    CommandError {
        kind: Kind::Failed,
        message: summary.to_string(),
        causes: sessions
            .iter()
            .filter_map(|s| s.report.error.clone())
            .collect(),
        hints: Vec::new(),
    }
}

fn quiet_failure(sessions: Vec<Session>, summary: &str) -> CommandError {
    let error = failure_of(&sessions, summary);
    for s in sessions {
        close(s);
    }
    error
}

fn require_release(s: &Session, release: &ReleaseId) -> Result<()> {
    if s.releases.contains(release) {
        return Ok(());
    }
    Err(CommandError::usage(
        format!("{}: no release `{release}`", s.host.target.name),
        "`cutover releases` lists the releases of every host",
    ))
}

fn any_failed(sessions: &[Session]) -> bool {
    sessions.iter().any(|s| s.report.status == "failed")
}

/// The release before current, which must be the same on every host.
fn common_rollback_target(sessions: &[Session]) -> Result<ReleaseId> {
    let mut targets = Vec::new();
    for s in sessions {
        let current = s.current.as_ref().ok_or_else(|| {
            CommandError::usage(
                format!("{} has no current release", s.host.target.name),
                "name the release: `cutover rollback <id>`",
            )
        })?;
        let target =
            cutover_core::cleanup::staged_before(&s.releases, current).ok_or_else(|| {
                CommandError::usage(
                    format!(
                        "{}: there is no release before `{current}`",
                        s.host.target.name
                    ),
                    "name the release: `cutover rollback <id>`",
                )
            })?;
        targets.push((s.host.target.name.as_str(), target));
    }
    let first = targets
        .first()
        .map(|(_, t)| t.clone())
        .ok_or_else(|| CommandError::usage("no hosts selected", "check --host and [hosts]"))?;
    if targets.iter().any(|(_, t)| *t != first) {
        let list: Vec<String> = targets.iter().map(|(h, t)| format!("{h}: {t}")).collect();
        return Err(CommandError::usage(
            format!(
                "the hosts would roll back to different releases ({})",
                list.join(", ")
            ),
            "name the release to go to on every host: `cutover rollback <id>`",
        ));
    }
    Ok(first)
}

/// `cutover cleanup` on every host.
pub fn cleanup(
    config: &Config,
    target: &TargetArgs,
    change: &ChangeArgs,
    keep: usize,
    printer: Printer,
) -> Result<()> {
    refuse_dry_run(change)?;
    let pool = thread_pool(None)?;
    let mut sessions = open_all(config, target, &pool, Some(change), printer)?;
    let mut removed: Vec<(String, Vec<ReleaseId>)> = Vec::new();
    pool.install(|| {
        sessions.par_iter_mut().for_each(|s| {
            if s.report.status == "failed" {
                return;
            }
            match s.agent().and_then(|a| a.call(&Request::Cleanup { keep })) {
                Ok(Reply::CleanedUp { removed }) => {
                    s.set_status("cleaned");
                    s.report.refresh = Some(serde_json::json!({ "removed": removed }));
                }
                Ok(other) => s.fail(&unexpected(&s.host.target.name, "cleaned_up", &other)),
                Err(e) => s.fail(&e),
            }
        })
    });
    for s in &sessions {
        let ids = s
            .report
            .refresh
            .as_ref()
            .and_then(|v| serde_json::from_value(v["removed"].clone()).ok())
            .unwrap_or_default();
        removed.push((s.host.target.name.clone(), ids));
    }
    if any_failed(&sessions) {
        return finish_failed(sessions, printer, "cleanup failed on a host");
    }
    sessions.into_iter().for_each(|s| {
        close(s);
    });
    let json = serde_json::json!({
        "hosts": removed.iter().map(|(h, ids)| serde_json::json!({"host": h, "removed": ids})).collect::<Vec<_>>(),
    });
    printer.result(&json, || {
        removed
            .iter()
            .map(|(h, ids)| {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                if ids.is_empty() {
                    format!("  {h:<12} nothing to remove\n")
                } else {
                    format!("  {h:<12} removed {}\n", ids.join(", "))
                }
            })
            .collect()
    });
    Ok(())
}

/// A read-only command (`releases`, `php status|reset`) run by each host's agent, its
/// output shown per host. `args` is the command without `--to`, which each host's path
/// fills in; `extra` adds host-specific flags.
pub fn run_on_hosts(
    config: &Config,
    target: &TargetArgs,
    args: &[&str],
    extra: impl Fn(&Host) -> Vec<String> + Sync,
    printer: Printer,
) -> Result<()> {
    let pool = thread_pool(None)?;
    let mut sessions = open_all(config, target, &pool, None, printer)?;
    let outputs: Vec<Option<(i32, String, String)>> = pool.install(|| {
        sessions
            .par_iter_mut()
            .map(|s| {
                if s.report.status == "failed" {
                    return None;
                }
                let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                full.push("--to".into());
                full.push(s.host.target.path.display().to_string());
                full.extend(extra(&s.host));
                if printer.json {
                    full.push("--json".into());
                }
                match s.agent().and_then(|a| a.call(&Request::Run { args: full })) {
                    Ok(Reply::Ran {
                        exit_code,
                        stdout,
                        stderr,
                    }) => Some((exit_code, stdout, stderr)),
                    Ok(other) => {
                        s.fail(&unexpected(&s.host.target.name, "ran", &other));
                        None
                    }
                    Err(e) => {
                        s.fail(&e);
                        None
                    }
                }
            })
            .collect()
    });
    let mut failed = Vec::new();
    let mut docs = Vec::new();
    let mut text = String::new();
    for (s, output) in sessions.iter().zip(&outputs) {
        let name = &s.host.target.name;
        match output {
            Some((code, stdout, stderr)) => {
                let result: serde_json::Value =
                    serde_json::from_str(stdout).unwrap_or(serde_json::Value::Null);
                docs.push(serde_json::json!({"host": name, "exit_code": code, "result": result}));
                text.push_str(&format!("{name}:\n"));
                for line in stdout.lines() {
                    text.push_str(&format!("  {line}\n"));
                }
                if *code != 0 {
                    let last = stderr
                        .lines()
                        .find(|l| l.starts_with("error:"))
                        .unwrap_or("failed");
                    failed.push(format!("{name}: {last}"));
                    for line in stderr.lines() {
                        text.push_str(&format!("  {line}\n"));
                    }
                }
            }
            None => {
                let error = s.report.error.clone().unwrap_or_default();
                docs.push(serde_json::json!({"host": name, "error": error}));
                text.push_str(&format!("{name}:\n  {error}\n"));
                failed.push(error);
            }
        }
    }
    sessions.into_iter().for_each(|s| {
        close(s);
    });
    printer.result(&serde_json::json!({ "hosts": docs }), || text);
    if failed.is_empty() {
        return Ok(());
    }
    Err(CommandError {
        kind: Kind::Failed,
        message: format!("failed on {} of the hosts", failed.len()),
        causes: failed,
        hints: Vec::new(),
    })
}

fn refuse_dry_run(change: &ChangeArgs) -> Result<()> {
    if change.dry_run {
        return Err(CommandError::usage(
            "--dry-run is not supported with [hosts] yet",
            "run the command with --to PATH against one deploy path to preview it",
        ));
    }
    Ok(())
}

/// Refreshes and checks every host; `done` is the status of a host that passed.
fn refresh_all(
    sessions: &mut [Session],
    pool: &rayon::ThreadPool,
    release: &ReleaseId,
    done: &'static str,
) {
    pool.install(|| {
        sessions.par_iter_mut().for_each(|s| {
            let request = refresh_request(&s.host, release);
            match s.agent().and_then(|a| a.call(&request)) {
                Ok(Reply::Refreshed { report }) => {
                    s.report.refresh = (!report.is_null()).then_some(report);
                    s.set_status(done);
                }
                Ok(other) => s.fail(&unexpected(&s.host.target.name, "refreshed", &other)),
                Err(e) => s.fail(&e),
            }
        })
    });
}

/// A phase line on stderr, unless per-host progress lines show it already.
fn phase(sessions: &[Session], printer: Printer, line: &str) {
    if sessions.iter().all(|s| s.bar.is_none()) {
        printer.progress_line(line);
    }
}

fn stage_host(
    s: &mut Session,
    request: &StageRequest,
    manifest: &Manifest,
    tree: &Path,
) -> Result<()> {
    s.set_status("staging");
    let name = s.host.target.name.clone();
    let agent = s.agent()?;
    let sent_before = agent.bytes_sent();
    let need = match agent.call(&Request::Stage(Box::new(request.clone())))? {
        Reply::Need { need, .. } => need,
        other => return Err(unexpected(&name, "need", &other)),
    };
    let files = match checked_need(&need, manifest) {
        Ok(files) => files,
        Err(message) => {
            let error = agent.protocol_error(cutover_protocol::ProtocolError::BadMessage(message));
            // The conversation is out of step; end it rather than send anything more.
            if let Some(agent) = s.agent.take() {
                agent.close();
            }
            return Err(error);
        }
    };
    let agent = s.agent()?;
    send_content(agent, tree, &files).map_err(|e| CommandError {
        kind: Kind::Failed,
        message: format!("{name}: sending files failed: {}", e.message),
        causes: e.causes,
        hints: e.hints,
    })?;
    let reply = agent.reply()?;
    let bytes_sent = agent.bytes_sent() - sent_before;
    match reply {
        Reply::Staged {
            stats,
            stage_ms,
            assets,
            ..
        } => {
            s.report.files = Some(stats);
            s.report.assets = Some(assets);
            s.report.files_sent = files.len() as u64;
            s.report.bytes_sent = bytes_sent;
            s.report.stage_ms = stage_ms;
            s.set_status("staged");
            s.staged = true;
            Ok(())
        }
        other => Err(unexpected(&name, "staged", &other)),
    }
}

/// The indexes a host asked for must name files of the manifest, each once, in order:
/// anything else is a confused or hostile agent, and no byte is sent for it.
fn checked_need<'m>(
    need: &[u32],
    manifest: &'m Manifest,
) -> std::result::Result<Vec<(&'m str, u64)>, String> {
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
fn send_content(agent: &mut Agent, tree: &Path, files: &[(&str, u64)]) -> Result<()> {
    let io_error = |path: &Path, e: std::io::Error| CommandError {
        kind: Kind::Failed,
        message: format!("{}: {e}", path.display()),
        causes: Vec::new(),
        hints: Vec::new(),
    };
    let mut writer = ContentWriter::new(agent.writer()).map_err(|e| io_error(tree, e))?;
    for (rel, size) in files {
        let path = tree.join(rel);
        let mut file = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
        let copied = std::io::copy(&mut std::io::Read::take(&mut file, *size + 1), &mut writer)
            .map_err(|e| io_error(&path, e))?;
        if copied != *size {
            return Err(CommandError {
                kind: Kind::Failed,
                message: format!("{} changed while it was being deployed", path.display()),
                causes: Vec::new(),
                hints: vec![
                    "deploy from a tree nothing writes to (a build directory or a clean checkout)"
                        .into(),
                ],
            });
        }
    }
    writer.finish().map_err(|e| io_error(tree, e))?;
    Ok(())
}

fn refresh_settings(host: &Host, release: &ReleaseId) -> RefreshRequest {
    RefreshRequest {
        release: release.clone(),
        refresh: host.refresh.clone(),
        php: host.php.clone(),
        health: host.health.clone(),
    }
}

fn refresh_request(host: &Host, release: &ReleaseId) -> Request {
    Request::Refresh(Box::new(refresh_settings(host, release)))
}

/// Switches the hosts `make` returns a request for.
fn switch_all(sessions: &mut [Session], make: impl Fn(usize, &Session) -> Option<Request>) {
    broadcast(sessions, make, |s, reply| match reply {
        Reply::Switched {
            at_us, warnings, ..
        } => {
            s.switched = true;
            s.report.switched_at_us = Some(at_us);
            s.report.warnings.extend(warnings);
            if s.report.status != "failed" {
                s.set_status("switched");
            }
        }
        other => s.fail(&unexpected(&s.host.target.name, "switched", &other)),
    });
}

/// Sends one request to every host `make` returns one for, then reads the replies in the
/// same order: the hosts act as close to the same moment as the connections allow.
fn broadcast(
    sessions: &mut [Session],
    make: impl Fn(usize, &Session) -> Option<Request>,
    mut handle: impl FnMut(&mut Session, Reply),
) {
    let mut sent = vec![false; sessions.len()];
    for (i, s) in sessions.iter_mut().enumerate() {
        let Some(request) = make(i, s) else { continue };
        match s.agent().and_then(|a| a.send(&request)) {
            Ok(()) => sent[i] = true,
            Err(e) => s.fail(&e),
        }
    }
    for (i, s) in sessions.iter_mut().enumerate() {
        if !sent[i] {
            continue;
        }
        match s.agent().and_then(Agent::reply) {
            Ok(reply) => handle(s, reply),
            Err(e) => s.fail(&e),
        }
    }
}

/// Every host that switched goes back to the release it had, and refreshes for it.
fn roll_back_all(sessions: &mut [Session], pool: &rayon::ThreadPool) {
    let targets: Vec<Option<ReleaseId>> = sessions
        .iter()
        .map(|s| s.switched.then(|| s.current.clone()).flatten())
        .collect();
    switch_all(sessions, |i, s| {
        targets[i].clone().map(|release| Request::Switch {
            release,
            rollback: true,
            revert: None,
            assets: s.host.assets.clone(),
        })
    });
    pool.install(|| {
        sessions
            .par_iter_mut()
            .zip(targets.par_iter())
            .for_each(|(s, target)| {
                let Some(previous) = target else { return };
                let request = refresh_request(&s.host, previous);
                let outcome = s.agent().and_then(|a| a.call(&request));
                if s.report.status != "failed" {
                    s.set_status("rolled back");
                }
                if let Err(e) = outcome {
                    s.report.warnings.push(format!(
                        "switched back to {previous}, but its refresh failed: {}",
                        e.message
                    ));
                }
            })
    });
}

/// Hosts that staged drop the release; the others never had it.
fn abort_all(sessions: &mut [Session], release: &ReleaseId) {
    for s in sessions.iter_mut().filter(|s| s.staged) {
        let outcome = s.agent().and_then(|a| {
            a.call(&Request::Abort {
                release: release.clone(),
            })
        });
        if s.report.status != "failed" {
            s.set_status("not switched");
        }
        if let Err(e) = outcome {
            s.report.warnings.push(format!(
                "the staged release stays until the next deploy: {}",
                e.message
            ));
        }
    }
}

fn finish_failed(sessions: Vec<Session>, printer: Printer, summary: &str) -> Result<()> {
    let reports: Vec<HostReport> = sessions.into_iter().map(close).collect();
    let failed: Vec<&HostReport> = reports.iter().filter(|r| r.status == "failed").collect();
    let json = serde_json::json!({
        "error": { "message": summary, "exit_code": 1 },
        "hosts": reports,
    });
    printer.result(&json, || table(&reports));
    let mut causes: Vec<String> = failed.iter().filter_map(|r| r.error.clone()).collect();
    if causes.is_empty() {
        causes.push("see the table above".into());
    }
    Err(CommandError {
        kind: Kind::Failed,
        message: summary.to_string(),
        causes,
        hints: vec![
            "fix what is named above and run the command again; every host is on a complete release"
                .into(),
        ],
    })
}

fn close(mut s: Session) -> HostReport {
    if let Some(bar) = s.bar.take() {
        bar.finish_and_clear();
    }
    if let Some(agent) = s.agent.take() {
        agent.close();
    }
    s.report
}

fn skew(sessions: &[Session]) -> Option<u64> {
    let times: Vec<u64> = sessions
        .iter()
        .filter_map(|s| s.report.switched_at_us)
        .collect();
    Some(times.iter().max()? - times.iter().min()?)
}

fn table(reports: &[HostReport]) -> String {
    let staged = reports.iter().any(|r| r.files.is_some());
    let mut text = if staged {
        format!(
            "  {:<12} {:<13} {:>7} {:>7} {:>7} {:>10} {:>9}\n",
            "HOST", "STATUS", "FILES", "LINKED", "SENT", "BYTES", "STAGE"
        )
    } else {
        format!("  {:<12} {}\n", "HOST", "STATUS")
    };
    for r in reports {
        if staged {
            let (files, linked) = r.files.map_or((0, 0), |f| (f.files, f.linked));
            text.push_str(&format!(
                "  {:<12} {:<13} {:>7} {:>7} {:>7} {:>10} {:>7.2} s\n",
                r.host,
                r.status,
                files,
                linked,
                r.files_sent,
                human_bytes(r.bytes_sent),
                r.stage_ms as f64 / 1000.0
            ));
        } else {
            text.push_str(&format!("  {:<12} {}\n", r.host, r.status));
        }
        if let Some(error) = &r.error {
            text.push_str(&format!("    {error}\n"));
        }
    }
    text
}

fn unexpected(host: &str, expected: &str, got: &Reply) -> CommandError {
    CommandError {
        kind: Kind::Failed,
        message: format!(
            "{host}: expected a `{expected}` reply, received `{}`",
            got.name()
        ),
        causes: Vec::new(),
        hints: Vec::new(),
    }
}

/// A timestamp id no host has yet (Capistrano's format, like a local deploy).
fn fresh_id(sessions: &[Session]) -> ReleaseId {
    let base = ReleaseId::timestamp(time::OffsetDateTime::now_utc());
    let taken = |id: &ReleaseId| sessions.iter().any(|s| s.releases.contains(id));
    let mut id = base.clone();
    let mut n = 1;
    while taken(&id) {
        n += 1;
        id = base.with_suffix(n);
    }
    id
}

/// `[build] run` happens once, here, on a private copy of the source; the hosts receive
/// the result.
fn build(
    source: &Path,
    opts: &DeployOptions,
    release: &ReleaseId,
    printer: Printer,
) -> Result<Option<tempfile::TempDir>> {
    if opts.build.is_empty() {
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("cutover-build-")
        .tempdir()
        .map_err(|e| CommandError {
            kind: Kind::Failed,
            message: format!("cannot create a build directory: {e}"),
            causes: Vec::new(),
            hints: Vec::new(),
        })?;
    let excludes = deploy::source_excludes(opts);
    let populate = cutover_core::stage::Populate {
        source,
        dest: dir.path(),
        previous: None,
        excludes: &excludes,
        dry_run: false,
    };
    let progress = printer.progress("building");
    cutover_core::stage::populate(&populate, &progress)?;
    let build_path = dir.path().display().to_string();
    let env = [
        ("CUTOVER_RELEASE", release.as_str()),
        ("CUTOVER_BUILD_PATH", build_path.as_str()),
    ];
    for script in &opts.build {
        cutover_core::command::run("build", script, dir.path(), &env, &progress)?;
    }
    Ok(Some(dir))
}

/// The last manifests sent from this machine, by digest, so the next deploy can send a
/// delta and skip hashing unchanged files. `$XDG_CACHE_HOME/cutover/manifests`.
struct ManifestCache {
    dir: Option<PathBuf>,
}

impl ManifestCache {
    const KEEP: usize = 8;

    fn new() -> Self {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        ManifestCache {
            dir: base.map(|b| b.join("cutover").join("manifests")),
        }
    }

    fn load(&self, digest: &str) -> Option<Manifest> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.dir.as_ref()?.join(format!("{digest}.json"));
        let manifest = Manifest::load(&path).ok().flatten()?;
        (manifest.digest() == digest).then_some(manifest)
    }

    /// Best effort: without a cache the next deploy sends a full manifest.
    fn store(&self, manifest: &Manifest) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(format!("{}.json", manifest.digest()));
        if manifest.store(&path).is_err() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        let excess = files.len().saturating_sub(Self::KEEP);
        for (_, path) in files.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}
