use cutover_core::ReleaseId;

use crate::cli::{ChangeArgs, GlobalArgs, SwitchArgs, TargetArgs};
use crate::error::Result;
use crate::printer::Printer;
use crate::{hosts, settings};

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
    let config = settings::load_config(global)?;
    let plans = settings::host_plans(target, &config)?;
    let access = settings::access(change, false);
    let parallel = settings::parallel(None);
    let observer = hosts::quiet_observer();
    let hooks = settings::hook_set(&config);
    let outcome = hosts::on_fleet(&plans, access, parallel, observer, printer, |fleet| {
        fleet
            .with_hooks(hooks)
            .activate(release, rollback, change.dry_run)
    })?;
    let reports = &outcome.hosts;
    hosts::warn_each(printer, reports);
    let json = serde_json::json!({
        "release": outcome.release,
        "previous": hosts::common_previous(reports),
        "dry_run": change.dry_run,
        "switch_skew_us": outcome.switch_skew_us,
        "hosts": reports,
    });
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
                    format!("{verb} to release {release}{from}\n")
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
