//! `cutover doctor`: gathers what the servers themselves report about their config, and
//! prints the hazards cutover-doctor finds in it.

use std::path::Path;

use cutover_doctor::{Facts, Finding, PoolFacts, ReadError, Severity};
use cutover_php::Pool;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::error::{CommandError, Result};
use crate::printer::Printer;
use crate::settings;

/// Entries of the current release looked at for its PHP files, at most.
const RELEASE_SCAN_LIMIT: usize = 500_000;
/// Entries of shared/ looked at for PHP written since the last switch.
const SHARED_SCAN_LIMIT: usize = 50_000;

pub fn doctor(args: &DoctorArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    let deploy_path = args.to.clone().or_else(|| config.deploy.path.clone());
    let deploy_path = deploy_path.map(|p| std::path::absolute(&p).unwrap_or(p));
    if deploy_path.is_none() {
        printer.warn("no deploy path (--to or [deploy] path): roots cannot be matched to its `current`, so the root checks find nothing");
    }
    let mut facts = Facts {
        deploy_path: deploy_path.clone(),
        strategies: config.refresh.strategy.clone(),
        ..Facts::default()
    };

    if let Some(address) = args.fpm.clone().or(config.php.fpm.clone()) {
        let deploy = deploy_path.as_ref().ok_or_else(|| {
            CommandError::usage(
                "checking the pool needs the deploy path",
                "pass `--to /var/www/app`: the pool runs a small script from its .cutover/php",
            )
        })?;
        let pool = Pool {
            address: address.parse().map_err(|e: cutover_fastcgi::Error| {
                CommandError::usage(
                    e.to_string(),
                    "write `unix:/path/to.sock`, `/path/to.sock` or `127.0.0.1:9000`",
                )
            })?,
            script_dir: deploy.join(".cutover").join("php"),
            chroot: args.fpm_chroot.clone().or(config.php.fpm_chroot.clone()),
            timeout: args.timeout,
        };
        match pool.status() {
            Ok(status) => {
                facts.pool = Some(PoolFacts {
                    address: pool.address.to_string(),
                    script_path: script_path(&pool),
                    status,
                })
            }
            Err(error) => facts.unread.push(ReadError {
                what: format!("the pool at {address}"),
                message: match error.hint() {
                    Some(hint) => format!("{error} (hint: {hint})"),
                    None => error.to_string(),
                },
            }),
        }
    }

    if let Some(pidfile) = args
        .fpm_pidfile
        .clone()
        .or(config.refresh.fpm_pidfile.clone())
    {
        let version = facts.pool.as_ref().map(|p| p.status.php_version.clone());
        match cutover_doctor::fpm::read(&pidfile, version.as_deref()) {
            Ok(fpm) => facts.fpm_config = Some(fpm),
            Err(error) => facts.unread.push(error),
        }
    }

    if args.nginx || args.nginx_config.is_some() {
        let file = args.nginx_config.as_ref().map(|p| p.display().to_string());
        match cutover_doctor::nginx::NginxConfig::read(&args.nginx_bin, file.as_deref()) {
            Ok(nginx) => facts.nginx = Some(nginx),
            Err(error) => facts.unread.push(error),
        }
    }

    if args.apache || args.apache_config.is_some() {
        let file = args.apache_config.as_ref().map(|p| p.display().to_string());
        let binary = args.apache_bin.clone().unwrap_or_else(|| {
            if file.is_some() {
                "apache2"
            } else {
                "apachectl"
            }
            .to_string()
        });
        match cutover_doctor::apache::read(&binary, file.as_deref()) {
            Ok(apache) => facts.apache = Some(apache),
            Err(error) => facts.unread.push(error),
        }
    }

    if let Some(deploy) = &deploy_path {
        facts.release = cutover_doctor::release_code(&deploy.join("current"), RELEASE_SCAN_LIMIT);
        // Only where the rule can fire: shared/ often holds millions of uploads.
        let since = std::fs::symlink_metadata(deploy.join("current")).and_then(|m| m.modified());
        if let (Some(_), Ok(since)) = (&facts.pool, since) {
            let shared = deploy.join(cutover_core::layout::SHARED);
            facts.shared = cutover_doctor::shared_php(&shared, since, SHARED_SCAN_LIMIT);
        }
    }
    let php_cli = cutover_doctor::php_cli("php");

    let findings = cutover_doctor::check(&facts);
    let checked = checked(&facts, php_cli.as_ref());
    let json = serde_json::json!({ "findings": findings, "checked": checked });
    printer.result(&json, || describe(&findings, &facts));

    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if errors > 0 {
        return Err(
            CommandError::failed(format!("{errors} hazard(s) of severity error"))
                .with_hint("apply the fix lines above, then run `cutover doctor` again"),
        );
    }
    Ok(())
}

/// The path of cutover's script as the pool is given it: what `opcache.restrict_api` and
/// `open_basedir` are compared with (inside a chroot, relative to it).
fn script_path(pool: &Pool) -> String {
    let file = pool.script_dir.join("cutover-status.php");
    let seen = match &pool.chroot {
        Some(chroot) => match file.strip_prefix(chroot) {
            Ok(inside) => Path::new("/").join(inside),
            Err(_) => file,
        },
        None => file,
    };
    seen.display().to_string()
}

/// What was read, for `--json`'s `checked`.
fn checked(
    facts: &Facts,
    php_cli: Option<&std::collections::BTreeMap<String, String>>,
) -> serde_json::Value {
    serde_json::json!({
        "deploy_path": facts.deploy_path.as_ref().map(|p| p.display().to_string()),
        "refresh": facts.strategies,
        "fpm": facts.pool.as_ref().map(|p| serde_json::json!({
            "address": p.address,
            "pid": p.status.pid,
            "php_version": p.status.php_version,
            "ini": p.status.ini,
            "opcache": p.status.opcache,
        })),
        "fpm_config": facts.fpm_config,
        "php_cli": php_cli,
        "nginx": facts.nginx.as_ref().map(|n| serde_json::json!({
            "files": n.files,
            "sites": n.sites,
        })),
        "apache": facts.apache,
        "release": facts.release,
        "unread": facts.unread,
    })
}

fn describe(findings: &[Finding], facts: &Facts) -> String {
    let mut text = String::new();
    for finding in findings {
        text.push_str(&format!(
            "{}[{}]: {}\n  why: {}\n  fix: {}\n\n",
            finding.severity, finding.id, finding.what, finding.why, finding.fix
        ));
    }
    let mut read = Vec::new();
    if let Some(pool) = &facts.pool {
        read.push(format!("the pool at {}", pool.address));
    }
    if let Some(fpm) = &facts.fpm_config {
        read.push(format!("php-fpm's config {}", fpm.config));
    }
    if let Some(nginx) = &facts.nginx {
        read.push(format!("nginx ({} files)", nginx.files.len()));
    }
    if let Some(apache) = &facts.apache {
        read.push(format!("Apache ({})", apache.command));
    }
    if read.is_empty() {
        read.push("nothing (pass --fpm, --nginx or --apache)".into());
    }
    let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
    let summary = if findings.is_empty() {
        "no hazard found".to_string()
    } else {
        format!(
            "{} error(s), {} warning(s)",
            count(Severity::Error),
            count(Severity::Warning)
        )
    };
    text.push_str(&format!("{summary}; checked {}\n", read.join(", ")));
    text
}
