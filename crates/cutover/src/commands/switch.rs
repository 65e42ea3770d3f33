use std::time::Instant;

use cutover_config::NotifyEvent;
use cutover_core::ReleaseId;
use cutover_notify::{Notice, Run};

use crate::cli::{ChangeArgs, GlobalArgs, SwitchArgs, TargetArgs};
use crate::error::{CommandError, Result};
use crate::printer::Printer;
use crate::{hosts, notify, settings};

pub fn switch(args: &SwitchArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let release = settings::release_id(&args.release)?;
    activate(
        &args.target,
        &args.change,
        Some(release),
        false,
        global,
        printer,
    )
}

/// `switch` and `rollback`: every host to one release at once, refreshed and checked,
/// or every host back. Without a release, the one before current (rollback).
pub fn activate(
    target: &TargetArgs,
    change: &ChangeArgs,
    release: Option<ReleaseId>,
    rollback: bool,
    global: &GlobalArgs,
    printer: Printer,
) -> Result<()> {
    let started = Instant::now();
    let config = settings::load_config(global)?;
    let webhook = settings::webhook(&config, change)?;
    let plans = settings::host_plans(target, &config)?;
    let access = settings::access(change, false);
    let parallel = settings::parallel(None);
    let observer = hosts::quiet_observer();
    let hooks = config.hooks.clone();
    let outcome = hosts::run_fleet(&plans, access, parallel, observer, printer, |fleet| {
        fleet
            .with_hooks(hooks)
            .activate(release, rollback, change.dry_run)
    })?;
    let run = || Run {
        source: None,
        deployer: settings::deployer(),
        duration: started.elapsed(),
    };
    let (done, failed) = match rollback {
        true => (NotifyEvent::RolledBack, NotifyEvent::RollbackFailed),
        false => (NotifyEvent::Switched, NotifyEvent::SwitchFailed),
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            let warning = notify::send(webhook.as_ref(), failed, || {
                Notice::switch_failed(&error, rollback, &run())
            });
            let mut error = CommandError::from(error);
            error.warnings.extend(warning);
            return Err(error);
        }
    };
    let notified = notify::send(webhook.as_ref(), done, || {
        Notice::switched(&outcome, rollback, &run())
    });
    let reports = &outcome.hosts;
    hosts::warn_each(printer, reports);
    let mut json = serde_json::json!({
        "release": outcome.release,
        "previous": hosts::common_previous(reports),
        "dry_run": change.dry_run,
        "switch_skew_us": outcome.switch_skew_us,
        "hosts": reports,
    });
    if let Some(warning) = notified {
        printer.warn(&warning);
        json["warnings"] = serde_json::json!([warning]);
    }
    let verb = if rollback { "Rolled back" } else { "Switched" };
    printer.result(&json, || {
        let release = &outcome.release;
        match reports.as_slice() {
            [one] => {
                let from = one
                    .previous
                    .as_ref()
                    .map_or(String::new(), |p| format!(" from {p}"));
                if change.dry_run {
                    format!("Would switch to release {release}{from}\n")
                } else if one.unchanged == Some(true) {
                    format!("Release {release} is already current\n")
                } else {
                    let warm = one.opcache.as_ref().map(super::deploy::opcache_line);
                    format!(
                        "{verb} to release {release}{from}\n{}",
                        warm.unwrap_or_default()
                    )
                }
            }
            _ => {
                let head = if change.dry_run {
                    format!(
                        "Would switch {} hosts to release {release}\n",
                        reports.len()
                    )
                } else {
                    format!("{verb} {} hosts to release {release}\n", reports.len())
                };
                head + &hosts::table(reports)
            }
        }
    });
    Ok(())
}
