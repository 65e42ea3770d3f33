//! `cutover config nginx|apache|fpm`: the recommended configuration for the deploy path.

use cutover_doctor::snippets;

use crate::cli::{ConfigArgs, ConfigCommand, GlobalArgs};
use crate::error::{CommandError, Result};
use crate::printer::Printer;
use crate::settings;

pub fn config(command: &ConfigCommand, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let (kind, args) = match command {
        ConfigCommand::Nginx(args) => ("nginx", args),
        ConfigCommand::Apache(args) => ("apache", args),
        ConfigCommand::Fpm(args) => ("fpm", args),
    };
    let settings = settings::load_config(global)?;
    let deploy = deploy_path(args, &settings)?;
    let fpm = args
        .fpm
        .clone()
        .or(settings.php.fpm.clone())
        .unwrap_or_else(|| snippets::DEFAULT_FPM.to_string());
    let text = match kind {
        "nginx" => snippets::nginx(&deploy, &args.web_dir, &fpm),
        "apache" => snippets::apache(&deploy, &args.web_dir, &fpm),
        _ => snippets::fpm(&deploy, &fpm),
    };
    let json = serde_json::json!({ "server": kind, "deploy_path": deploy, "text": text });
    printer.result(&json, || text.clone());
    Ok(())
}

/// Absolute: a server resolves a relative root against its own prefix, not our cwd.
fn deploy_path(args: &ConfigArgs, settings: &cutover_config::Config) -> Result<std::path::PathBuf> {
    let path = args
        .to
        .clone()
        .or_else(|| settings.deploy.path.clone())
        .ok_or_else(|| {
            CommandError::usage(
                "no deploy path given",
                "pass `--to /var/www/app`, or set `path` in the [deploy] table of cutover.toml",
            )
        })?;
    Ok(std::path::absolute(&path).unwrap_or(path))
}
