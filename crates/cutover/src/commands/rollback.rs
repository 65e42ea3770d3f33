use crate::cli::{GlobalArgs, RollbackArgs};
use crate::error::Result;
use crate::printer::Printer;
use crate::settings;
use cutover_core::activate::{activate, rollback_target};
use cutover_core::history::EventKind;

pub fn rollback(args: &RollbackArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    if settings::on_hosts(&args.target, &config)? {
        let release = args.release.as_deref();
        return crate::fleet::switch(&config, &args.target, &args.change, release, true, printer);
    }
    let deploy = settings::existing_deploy_path(&args.target, &config)?;
    let plan = crate::refresh::plan(&config, &deploy)?;
    let guard = settings::guard(&deploy, &args.change)?;
    // Chosen under the lock, so a deploy finishing meanwhile cannot change what "previous" is.
    let release = match &args.release {
        Some(id) => settings::release_id(id)?,
        None => rollback_target(&deploy)?,
    };
    let assets = settings::asset_options(&config);
    let activation = activate(
        &deploy,
        &release,
        EventKind::RolledBack,
        guard.mode(),
        &assets,
    )?;
    let refreshed =
        super::switch::refresh_after(plan.as_ref(), &deploy, guard.mode(), &activation)?;
    super::switch::report(
        &activation,
        refreshed.as_ref(),
        args.change.dry_run,
        "Rolled back",
        printer,
    );
    Ok(())
}
