use crate::cli::{GlobalArgs, SwitchArgs};
use crate::error::Result;
use crate::printer::Printer;
use crate::{refresh, settings};
use cutover_core::activate::{activate, Activation};
use cutover_core::history::EventKind;

pub fn switch(args: &SwitchArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    if settings::on_hosts(&args.target, &config)? {
        let release = Some(args.release.as_str());
        return crate::fleet::switch(&config, &args.target, &args.change, release, false, printer);
    }
    let deploy = settings::existing_deploy_path(&args.target, &config)?;
    let release = settings::release_id(&args.release)?;
    let plan = refresh::plan(&config, &deploy)?;
    let guard = settings::guard(&deploy, &args.change)?;
    let assets = settings::asset_options(&config);
    let activation = activate(
        &deploy,
        &release,
        EventKind::Switched,
        guard.mode(),
        &assets,
    )?;
    let refreshed = refresh_after(plan.as_ref(), &deploy, guard.mode(), &activation)?;
    report(
        &activation,
        refreshed.as_ref(),
        args.change.dry_run,
        "Switched",
        printer,
    );
    Ok(())
}

/// Refreshes unless nothing was switched. Shared by `switch` and `rollback`.
pub fn refresh_after(
    plan: Option<&refresh::RefreshPlan>,
    deploy: &cutover_core::DeployPath,
    mode: cutover_core::Mode<'_>,
    activation: &Activation,
) -> Result<Option<refresh::RefreshReport>> {
    if activation.unchanged {
        return Ok(None);
    }
    refresh::after_switch(
        plan,
        deploy,
        mode,
        &activation.release,
        activation.previous.as_ref(),
    )
}

/// Shared by `switch` and `rollback`.
pub fn report(
    activation: &Activation,
    refreshed: Option<&refresh::RefreshReport>,
    dry_run: bool,
    verb: &str,
    printer: Printer,
) {
    for warning in &activation.warnings {
        printer.warn(warning);
    }
    let mut json = serde_json::to_value(activation).unwrap_or_default();
    if let Some(refreshed) = refreshed {
        json["refresh"] = serde_json::to_value(refreshed).unwrap_or_default();
    }
    json["dry_run"] = dry_run.into();
    printer.result(&json, || {
        let from = activation
            .previous
            .as_ref()
            .map_or(String::new(), |p| format!(" from {p}"));
        if dry_run {
            format!("Would switch to release {}{from}\n", activation.release)
        } else if activation.unchanged {
            format!("Release {} is already current\n", activation.release)
        } else {
            format!("{verb} to release {}{from}\n", activation.release)
        }
    });
}
