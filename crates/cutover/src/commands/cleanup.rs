use crate::cli::{CleanupArgs, GlobalArgs};
use crate::error::Result;
use crate::printer::Printer;
use crate::{hosts, settings};

pub fn cleanup(args: &CleanupArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    let keep = settings::keep_releases(args.keep, &config);
    let plans = settings::host_plans(&args.target, &config)?;
    let access = settings::access(&args.change, false);
    let parallel = settings::parallel(None);
    let observer = hosts::quiet_observer();
    let reports = hosts::on_fleet(&plans, access, parallel, observer, printer, |fleet| {
        fleet
            .require_open("nothing was removed")?
            .cleanup(keep, args.change.dry_run)
    })?;
    let json = serde_json::json!({ "dry_run": args.change.dry_run, "hosts": reports });
    printer.result(&json, || {
        let verb = if args.change.dry_run {
            "Would remove"
        } else {
            "Removed"
        };
        let mut text = String::new();
        for report in &reports {
            let indent = if reports.len() > 1 {
                text.push_str(&format!("{}:\n", report.host));
                "  "
            } else {
                ""
            };
            let Some(cleanup) = &report.cleanup else {
                continue;
            };
            let names = |ids: &[cutover_core::ReleaseId]| {
                ids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if cleanup.removed.is_empty() {
                text.push_str(&format!(
                    "{indent}Nothing to remove; kept {} releases\n",
                    cleanup.kept.len()
                ));
            } else {
                text.push_str(&format!(
                    "{indent}{verb} {} releases: {}\n",
                    cleanup.removed.len(),
                    names(&cleanup.removed)
                ));
            }
            if !cleanup.debris.is_empty() {
                text.push_str(&format!(
                    "{indent}{verb} leftovers of interrupted deploys: {}\n",
                    cleanup.debris.join(", ")
                ));
            }
        }
        text
    });
    Ok(())
}
