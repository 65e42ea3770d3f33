use cutover_pipeline::DeployOutcome;

use crate::cli::{DeployArgs, GlobalArgs};
use crate::error::Result;
use crate::printer::{human_bytes, Printer};
use crate::{hosts, settings};

pub fn deploy(args: &DeployArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config_near(global, args.source.as_deref())?;
    let plans = settings::host_plans(&args.target, &config)?;
    let job = settings::deploy_job(args, &config, &plans)?;
    let access = settings::access(&args.change, true);
    let parallel = settings::parallel(args.parallel);
    let observer = hosts::stage_observer(printer);
    let hooks = settings::hook_set(&config);
    let outcome = hosts::on_fleet(&plans, access, parallel, observer, printer, |fleet| {
        fleet.with_hooks(hooks).deploy(&job)
    })?;
    report(&outcome, &job.source, printer);
    Ok(())
}

fn report(outcome: &DeployOutcome, source: &cutover_core::history::Source, printer: Printer) {
    let reports = &outcome.hosts;
    hosts::warn_each(printer, reports);
    // The same release on every host: say it once.
    let changed = reports
        .iter()
        .find_map(|r| r.assets.as_ref().filter(|a| !a.changed_in_place.is_empty()));
    if let Some(warning) = changed.and_then(|a| changed_in_place_warning(&a.changed_in_place)) {
        printer.warn(warning);
    }
    let json = serde_json::json!({
        "release": outcome.release,
        "previous": hosts::common_previous(reports),
        "dry_run": outcome.dry_run,
        "source": source,
        "switch_skew_us": outcome.switch_skew_us,
        "total_ms": outcome.total_ms,
        "hosts": reports,
    });
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
        if let Some(commit) = &source.git_commit {
            let dirty = if source.git_dirty {
                " (with uncommitted changes)"
            } else {
                ""
            };
            text.push_str(&format!("  source: git {commit}{dirty}\n"));
        }
        if reports.len() > 1 {
            text.push_str(&hosts::table(reports));
        }
        text
    });
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
