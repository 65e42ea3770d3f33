use cutover_php::{Pool, PoolStatus};

use crate::cli::{GlobalArgs, PhpArgs, PhpResetArgs};
use crate::error::{CommandError, Result};
use crate::printer::{human_bytes, Printer};
use crate::settings;

pub fn status(args: &PhpArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    if settings::on_hosts(&args.target, &config)? {
        let timeout = humantime::format_duration(args.timeout).to_string();
        let command = ["php", "status", "--timeout", timeout.as_str()];
        let extra = |host: &crate::fleet::Host| pool_flags(args, host);
        return crate::fleet::run_on_hosts(&config, &args.target, &command, extra, printer);
    }
    let pool = pool(args, global)?;
    let status = pool.status()?;
    for warning in warnings(&status) {
        printer.warn(warning);
    }
    let json = serde_json::json!({ "fpm": pool.address.to_string(), "status": status });
    printer.result(&json, || describe(&status));
    Ok(())
}

pub fn reset(args: &PhpResetArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    if settings::on_hosts(&args.pool.target, &config)? {
        let wait = humantime::format_duration(args.wait).to_string();
        let command = ["php", "reset", "--wait", wait.as_str()];
        let extra = |host: &crate::fleet::Host| pool_flags(&args.pool, host);
        return crate::fleet::run_on_hosts(&config, &args.pool.target, &command, extra, printer);
    }
    let pool = pool(&args.pool, global)?;
    let report = pool.reset(args.wait)?;
    let json = serde_json::json!({ "fpm": pool.address.to_string(), "reset": report });
    printer.result(&json, || {
        format!(
            "OPcache reset by worker {} and restarted after {:.2} s\n{}",
            report.pid,
            report.settled_after,
            describe(&report.status)
        )
    });
    Ok(())
}

/// The pool of one host: flags given here win over the host's [php] settings.
fn pool_flags(args: &PhpArgs, host: &crate::fleet::Host) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(fpm) = args.fpm.clone().or(host.php.fpm.clone()) {
        flags.extend(["--fpm".to_string(), fpm]);
    }
    if let Some(chroot) = args.fpm_chroot.clone().or(host.php.fpm_chroot.clone()) {
        flags.extend(["--fpm-chroot".to_string(), chroot.display().to_string()]);
    }
    if let Some(dir) = &args.script_dir {
        flags.extend(["--script-dir".to_string(), dir.display().to_string()]);
    }
    flags
}

fn pool(args: &PhpArgs, global: &GlobalArgs) -> Result<Pool> {
    let config = settings::load_config(global)?;
    let text = args.fpm.clone().or(config.php.fpm.clone()).ok_or_else(|| {
        CommandError::usage(
            "no php-fpm address given",
            "pass `--fpm unix:/run/php/php8.2-fpm.sock` (or 127.0.0.1:9000), or set `fpm` in the [php] table",
        )
    })?;
    let address = text.parse().map_err(|e: cutover_fastcgi::Error| {
        CommandError::usage(
            e.to_string(),
            "write `unix:/path/to.sock`, `/path/to.sock` or `127.0.0.1:9000`",
        )
    })?;
    let script_dir = match &args.script_dir {
        Some(dir) => dir.clone(),
        None => settings::deploy_path(&args.target, &config)
            .map_err(|_| {
                CommandError::usage(
                    "no directory for the script the pool must run",
                    "pass `--to /var/www/app` (the script goes into its .cutover/php) or `--script-dir DIR` readable by the pool's user",
                )
            })?
            .state_dir()
            .join("php"),
    };
    Ok(Pool {
        address,
        script_dir,
        chroot: args.fpm_chroot.clone().or(config.php.fpm_chroot),
        timeout: args.timeout,
    })
}

/// Conditions worth a line even when nothing failed.
fn warnings(status: &PoolStatus) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(opcache) = &status.opcache {
        if opcache.enabled && opcache.free_memory < opcache.used_memory {
            warnings.push(format!(
                "OPcache has {} free for {} of cached code: the next release may not fit, and OPcache restarts itself under load when full; raise opcache.memory_consumption or reset after each deploy",
                human_bytes(opcache.free_memory),
                human_bytes(opcache.used_memory)
            ));
        }
    }
    warnings
}

fn describe(status: &PoolStatus) -> String {
    let ini = |key: &str| status.ini_value(key).unwrap_or("?").to_string();
    let mut text = format!(
        "php-fpm worker {} (PHP {}, {})\n",
        status.pid, status.php_version, status.sapi
    );
    match (&status.opcache, &status.opcache_error) {
        (Some(o), _) => text.push_str(&format!(
            "OPcache: {}, {} scripts, {} used, {} free, {} wasted; restart pending: {}\n",
            if o.enabled { "enabled" } else { "disabled" },
            o.cached_scripts,
            human_bytes(o.used_memory),
            human_bytes(o.free_memory),
            human_bytes(o.wasted_memory),
            if o.restart_pending { "yes" } else { "no" },
        )),
        (None, Some(error)) => text.push_str(&format!("OPcache: unavailable: {error}\n")),
        (None, None) => text.push_str("OPcache: unavailable\n"),
    }
    text.push_str(&format!(
        "  validate_timestamps={} revalidate_freq={} revalidate_path={} preload={:?} file_cache={:?} restrict_api={:?}\n",
        ini("opcache.validate_timestamps"),
        ini("opcache.revalidate_freq"),
        ini("opcache.revalidate_path"),
        ini("opcache.preload"),
        ini("opcache.file_cache"),
        ini("opcache.restrict_api"),
    ));
    text.push_str(&format!(
        "realpath cache: {} used (size {}, ttl {} s); open_basedir: {:?}\n",
        human_bytes(status.realpath_cache_used),
        ini("realpath_cache_size"),
        ini("realpath_cache_ttl"),
        ini("open_basedir"),
    ));
    text
}
