use crate::cli::{DeployArgs, GlobalArgs};
use crate::error::Result;
use crate::printer::{human_bytes, Printer};
use crate::{refresh, settings};

pub fn deploy(args: &DeployArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config_near(global, args.source.as_deref())?;
    if settings::on_hosts(&args.target, &config)? {
        return crate::fleet::deploy(args, &config, printer);
    }
    let deploy = settings::deploy_path(&args.target, &config)?;
    let opts = settings::deploy_options(args, &config)?;
    let refresh_plan = refresh::plan(&config, &deploy)?;
    // A first deploy that fails must leave no deploy path behind, as if never run.
    let created = deploy.outermost_missing().filter(|_| !args.change.dry_run);
    let outcome = settings::guard(&deploy, &args.change).and_then(|guard| {
        let progress = printer.progress("staging");
        let report = cutover_core::deploy::deploy(&deploy, &opts, guard.mode(), &progress)?;
        drop(progress);
        let refreshed = refresh::after_switch(
            refresh_plan.as_ref(),
            &deploy,
            guard.mode(),
            &report.release,
            report.previous.as_ref(),
        )?;
        Ok((report, refreshed))
    });
    let (report, refreshed) = match outcome {
        Ok(report) => report,
        Err(error) => {
            if let Some(dir) = created {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(error);
        }
    };

    for warning in &report.warnings {
        printer.warn(warning);
    }
    if let Some(warning) = changed_in_place_warning(&report.assets.changed_in_place) {
        printer.warn(warning);
    }
    let mut json = serde_json::to_value(&report).unwrap_or_default();
    if let Some(refreshed) = &refreshed {
        json["refresh"] = serde_json::to_value(refreshed).unwrap_or_default();
    }
    printer.result(&json, || {
        let files = &report.files;
        let was = report
            .previous
            .as_ref()
            .map_or(String::new(), |p| format!(" (was {p})"));
        let mut text = if report.dry_run {
            format!(
                "Would deploy {} as release {} to {}{was}\n  {} files: {} unchanged would be linked, {} copied ({})\n",
                report.source.path,
                report.release,
                report.deploy_path.display(),
                files.files,
                files.linked,
                files.copied,
                human_bytes(files.bytes_copied),
            )
        } else {
            format!(
                "Deployed release {} to {}{was}\n  {} files: {} linked, {} copied ({}) in {:.2} s; switch {} ms\n",
                report.release,
                report.deploy_path.display(),
                files.files,
                files.linked,
                files.copied,
                human_bytes(files.bytes_copied),
                report.stage_ms as f64 / 1000.0,
                report.switch_ms,
            )
        };
        if let Some(commit) = &report.source.git_commit {
            let dirty = if report.source.git_dirty { " (with uncommitted changes)" } else { "" };
            text.push_str(&format!("  source: git {commit}{dirty}\n"));
        }
        if report.assets.carried > 0 {
            text.push_str(&format!(
                "  kept {} static files of earlier releases reachable\n",
                report.assets.carried
            ));
        }
        if !report.removed.is_empty() {
            let removed: Vec<_> = report.removed.iter().map(ToString::to_string).collect();
            text.push_str(&format!("  removed old releases: {}\n", removed.join(", ")));
        }
        text
    });
    Ok(())
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
