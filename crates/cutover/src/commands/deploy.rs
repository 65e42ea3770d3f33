use std::time::Instant;

use cutover_config::NotifyEvent;
use cutover_core::history::Source;
use cutover_core::listing::ReleaseList;
use cutover_notify::{Notice, Run};
use cutover_pipeline::{DeployOutcome, HostPlan, HostReport};
use cutover_protocol::Access;

use crate::cli::{DeployArgs, GlobalArgs};
use crate::error::{CommandError, Result};
use crate::printer::{human_bytes, Printer};
use crate::{hosts, notify, settings};

pub fn deploy(args: &DeployArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let started = Instant::now();
    let config = settings::load_config_near(global, args.source.as_deref())?;
    // None for a dry run: it only plans.
    let webhook = settings::webhook(&config, &args.change)?;
    let plans = settings::host_plans(&args.target, &config)?;
    // Held until the deploy is over: the git cache's checkout is what gets staged.
    let (job, _git_cache_lock) = settings::deploy_job(args, &config, &plans)?;
    let parallel = settings::parallel(args.parallel);
    if args.if_changed {
        if let Some(current) = already_current(&plans, &job.source, parallel, printer) {
            report_unchanged(&current, &job.source, printer);
            return Ok(());
        }
    }
    let access = settings::access(&args.change, true);
    let observer = hosts::stage_observer(printer);
    let hooks = config.hooks.clone();
    let outcome = hosts::run_fleet(&plans, access, parallel, observer, printer, |fleet| {
        let fleet = fleet.with_hooks(hooks);
        // For benchmarks: the switch as it was before it was scheduled.
        let fleet = match std::env::var_os("CUTOVER_SWITCH_ON_ARRIVAL") {
            Some(_) => fleet.switching_on_arrival(),
            None => fleet,
        };
        fleet.deploy(&job)
    })?;
    let run = || Run {
        source: Some(&job.source),
        deployer: None,
        duration: started.elapsed(),
    };
    match outcome {
        Ok(outcome) => {
            let warning = notify::send(webhook.as_ref(), NotifyEvent::Deployed, || {
                Notice::deployed(&outcome, &run())
            });
            report(&outcome, &job.source, warning, printer);
            Ok(())
        }
        Err(error) => {
            let warning = notify::send(webhook.as_ref(), NotifyEvent::DeployFailed, || {
                Notice::deploy_failed(&error, &run())
            });
            let mut error = CommandError::from(error);
            error.warnings.extend(warning);
            Err(error)
        }
    }
}

/// `--if-changed`: every host's reports and releases, when every host's current release
/// was staged from this very commit (clean, not a work tree with changes). Anything else —
/// no git commit, a host without a current release or that cannot be read — deploys; a
/// host that cannot be reached then fails the deploy with its own error.
fn already_current(
    plans: &[HostPlan],
    source: &Source,
    parallel: usize,
    printer: Printer,
) -> Option<Vec<(HostReport, ReleaseList)>> {
    let commit = source.git_commit.as_deref().filter(|_| !source.git_dirty)?;
    let observer = hosts::quiet_observer();
    let outcome = hosts::on_fleet(plans, Access::Read, parallel, observer, printer, |fleet| {
        fleet.read(|host| host.releases())
    })
    .ok()?;
    let mut current = Vec::new();
    for (report, list) in outcome.hosts {
        let list = list?;
        let row = list.releases.iter().find(|r| r.current)?;
        if row.git_commit.as_deref() != Some(commit) || row.git_dirty {
            return None;
        }
        current.push((report, list));
    }
    (!current.is_empty()).then_some(current)
}

fn report_unchanged(current: &[(HostReport, ReleaseList)], source: &Source, printer: Printer) {
    let ids: Vec<&str> = current
        .iter()
        .filter_map(|(_, list)| list.current.as_ref().map(|id| id.as_str()))
        .collect();
    let release = ids
        .first()
        .filter(|first| ids.iter().all(|id| id == *first));
    let reports: Vec<&HostReport> = current.iter().map(|(report, _)| report).collect();
    let json = serde_json::json!({
        "skipped": true,
        "reason": "unchanged",
        "release": release,
        "source": source,
        "hosts": reports,
    });
    printer.result(&json, || {
        let commit = source.git_commit.as_deref().map_or("", short);
        let given = source
            .git_ref
            .as_deref()
            .map_or(String::new(), |r| format!(" ({r})"));
        let place = match current {
            [(report, _)] => report.deploy_path.clone(),
            _ => format!("all {} hosts", current.len()),
        };
        let serving = release.map_or(String::new(), |id| format!(" release {id}"));
        format!(
            "Nothing to deploy: {place} already serves git {commit}{given} as current{serving}\n"
        )
    });
}

/// `notified` is the warning of a notification that failed.
fn report(outcome: &DeployOutcome, source: &Source, notified: Option<String>, printer: Printer) {
    let reports = &outcome.hosts;
    hosts::warn_each(printer, reports);
    if let Some(warning) = &notified {
        printer.warn(warning);
    }
    // The same release on every host: say it once.
    let changed = reports
        .iter()
        .find_map(|r| r.assets.as_ref().filter(|a| !a.changed_in_place.is_empty()));
    if let Some(warning) = changed.and_then(|a| changed_in_place_warning(&a.changed_in_place)) {
        printer.warn(warning);
    }
    let mut json = serde_json::json!({
        "release": outcome.release,
        "previous": hosts::common_previous(reports),
        "dry_run": outcome.dry_run,
        "source": source,
        "switch_skew_us": outcome.switch_skew_us,
        "total_ms": outcome.total_ms,
        "hosts": reports,
    });
    if let Some(warning) = notified {
        json["warnings"] = serde_json::json!([warning]);
    }
    printer.result(&json, || {
        let release = &outcome.release;
        let mut text = match reports.as_slice() {
            [one] => one_host(outcome, one),
            _ if outcome.dry_run => format!(
                "Would deploy release {release} to {} hosts\n",
                reports.len()
            ),
            _ => format!(
                "Deployed release {release} to {} hosts in {:.2} s; switch skew {:.1} ms\n",
                reports.len(),
                outcome.total_ms as f64 / 1000.0,
                outcome.switch_skew_us.unwrap_or(0) as f64 / 1000.0
            ),
        };
        text.push_str(&source_lines(source));
        if reports.len() > 1 {
            text.push_str(&hosts::table(reports));
        }
        text
    });
}

/// What was deployed, for people: the commit and where it came from, the uncommitted
/// changes of a work tree (the first few), and who deployed when known.
fn source_lines(source: &Source) -> String {
    let mut text = String::new();
    if let Some(commit) = source.git_commit.as_deref() {
        let mut line = format!("  source: git {}", short(commit));
        match (&source.git_ref, &source.git_branch) {
            (Some(given), _) => line.push_str(&format!(" ({given})")),
            (None, Some(branch)) => line.push_str(&format!(" on {branch}")),
            (None, None) => {}
        }
        if let Some(repository) = &source.git_repository {
            line.push_str(&format!(" from {repository}"));
        }
        if let Some(author) = &source.git_author {
            line.push_str(&format!(", author {author}"));
        }
        if source.git_changes_count > 0 {
            const SHOWN: usize = 3;
            let count = source.git_changes_count;
            let plural = if count == 1 { "" } else { "s" };
            let mut first: Vec<&str> = source
                .git_changes
                .iter()
                .take(SHOWN)
                .map(String::as_str)
                .collect();
            if count > first.len() {
                first.push("…");
            }
            line.push_str(&format!(
                ", {count} uncommitted change{plural}: {}",
                first.join(", ")
            ));
        }
        text.push_str(&line);
        text.push('\n');
    }
    if let Some(deployer) = &source.deployer {
        text.push_str(&format!("  deployed by: {deployer}\n"));
    }
    text
}

/// A commit id as people read it.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn one_host(outcome: &DeployOutcome, host: &cutover_pipeline::HostReport) -> String {
    let files = host.files.unwrap_or_default();
    let was = host
        .previous
        .as_ref()
        .map_or(String::new(), |p| format!(" (was {p})"));
    let removed = host.cleanup.as_ref().map_or(&[][..], |c| &c.removed[..]);
    let removed: Vec<_> = removed.iter().map(ToString::to_string).collect();
    let mut text = if outcome.dry_run {
        let mut text = format!(
            "Would deploy release {} to {}{was}\n  {} files: {} unchanged would be linked, {} copied ({})\n",
            outcome.release,
            host.deploy_path,
            files.files,
            files.linked,
            files.copied,
            human_bytes(files.bytes_copied),
        );
        if !removed.is_empty() {
            text.push_str(&format!(
                "  would remove old releases: {}\n",
                removed.join(", ")
            ));
        }
        return text;
    } else {
        format!(
            "Deployed release {} to {}{was}\n  {} files: {} linked, {} copied ({}) in {:.2} s; switch {} ms\n",
            outcome.release,
            host.deploy_path,
            files.files,
            files.linked,
            files.copied,
            human_bytes(files.bytes_copied),
            host.stage_ms.unwrap_or(0) as f64 / 1000.0,
            host.switch_ms.unwrap_or(0),
        )
    };
    if let Some(opcache) = &host.opcache {
        text.push_str(&opcache_line(opcache));
    }
    if let Some(carried) = host.assets.as_ref().map(|a| a.carried).filter(|n| *n > 0) {
        text.push_str(&format!(
            "  kept {carried} static files of earlier releases reachable\n"
        ));
    }
    if !removed.is_empty() {
        text.push_str(&format!("  removed old releases: {}\n", removed.join(", ")));
    }
    text
}

/// What the pre-warm did and what OPcache holds, in one line.
pub fn opcache_line(report: &cutover_refresh::WarmReport) -> String {
    let mut parts = Vec::new();
    if let Some(warm) = &report.prewarm {
        parts.push(format!(
            "pre-warmed {} scripts ({} already cached) in {:.2} s",
            warm.compiled, warm.already_cached, report.seconds
        ));
    }
    if report.invalidated > 0 {
        parts.push(format!(
            "{} scripts of old releases invalidated",
            report.invalidated
        ));
    }
    let cache = &report.cache;
    let held: Vec<String> = cache
        .releases
        .iter()
        .map(|r| format!("{} {} scripts", r.release, r.scripts))
        .collect();
    parts.push(format!(
        "OPcache holds {}; {} used, {} free, {} wasted",
        if held.is_empty() {
            "no release".to_string()
        } else {
            held.join(", ")
        },
        human_bytes(cache.used_memory),
        human_bytes(cache.free_memory),
        human_bytes(cache.wasted_memory),
    ));
    format!("  {}\n", parts.join("; "))
}

/// One warning for every asset whose name stayed while its content changed: a page of
/// the old release asking for that URL gets the new content.
pub fn changed_in_place_warning(paths: &[String]) -> Option<String> {
    let first = paths.first()?;
    let more = match paths.len() {
        1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    Some(format!(
        "{first}{more} changed content under the same name: pages rendered by the previous release get the new file at that URL; give asset files content-hashed names (Vite, Encore and Mix versioning do) so old and new can both be served"
    ))
}
