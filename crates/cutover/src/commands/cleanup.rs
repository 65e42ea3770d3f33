use crate::cli::{CleanupArgs, GlobalArgs};
use crate::error::Result;
use crate::printer::Printer;
use crate::settings;

pub fn cleanup(args: &CleanupArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    let keep = settings::keep_releases(args.keep, &config);
    if settings::on_hosts(&args.target, &config)? {
        return crate::fleet::cleanup(&config, &args.target, &args.change, keep, printer);
    }
    let deploy = settings::existing_deploy_path(&args.target, &config)?;
    let guard = settings::guard(&deploy, &args.change)?;
    let report = cutover_core::cleanup::cleanup(&deploy, keep, guard.mode())?;
    let mut json = serde_json::to_value(&report).unwrap_or_default();
    json["dry_run"] = args.change.dry_run.into();
    printer.result(&json, || {
        let verb = if args.change.dry_run {
            "Would remove"
        } else {
            "Removed"
        };
        let names = |ids: &[cutover_core::ReleaseId]| {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = if report.removed.is_empty() {
            format!("Nothing to remove; kept {} releases\n", report.kept.len())
        } else {
            format!(
                "{verb} {} releases: {}\n",
                report.removed.len(),
                names(&report.removed)
            )
        };
        if !report.debris.is_empty() {
            text.push_str(&format!(
                "{verb} leftovers of interrupted deploys: {}\n",
                report.debris.join(", ")
            ));
        }
        text
    });
    Ok(())
}
