//! `cutover config nginx|apache|fpm`: the recommended configuration for the deploy path;
//! `cutover config hosts`: the hosts as cutover.toml and its inventory resolve them.

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
        ConfigCommand::Hosts => return hosts(global, printer),
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

/// Each host with what reaches it, where it deploys and its roles; nothing is contacted.
fn hosts(global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    if !settings::names_hosts(&config) {
        return Err(CommandError::usage(
            "cutover.toml has no [hosts] and no [inventory]",
            "commands act on the deploy path given with --to or in [deploy] path",
        ));
    }
    let hosts = settings::resolved_hosts(&config)?;
    let rows: Vec<_> = hosts
        .iter()
        .map(|host| {
            let path = host.settings.path.as_ref().or(config.deploy.path.as_ref());
            serde_json::json!({
                "name": host.name,
                "ssh": host.settings.ssh,
                "path": path,
                "roles": host.settings.roles,
                "from": host.from,
            })
        })
        .collect();
    let json = serde_json::json!({ "hosts": rows });
    printer.result(&json, || {
        let mut text = format!(
            "{:<16} {:<16} {:<28} {:<24} {}\n",
            "HOST", "FROM", "SSH", "PATH", "ROLES"
        );
        for host in &hosts {
            let path = host.settings.path.as_ref().or(config.deploy.path.as_ref());
            text.push_str(&format!(
                "{:<16} {:<16} {:<28} {:<24} {}\n",
                host.name,
                host.from.as_str(),
                host.settings.ssh.as_deref().unwrap_or("(this machine)"),
                path.map_or("(none)".to_string(), |p| p.display().to_string()),
                host.settings.roles.join(",")
            ));
        }
        text
    });
    Ok(())
}
