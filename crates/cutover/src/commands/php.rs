use std::time::Duration;

use cutover_php::{Pool, PoolStatus, ResetReport};
use cutover_pipeline::{Host, HostError, HostPlan, HostReport};
use cutover_protocol::Access;
use cutover_refresh::PoolSpec;
use serde::Serialize;

use crate::cli::{GlobalArgs, PhpArgs, PhpResetArgs};
use crate::error::{CommandError, Result};
use crate::printer::{human_bytes, Printer};
use crate::{hosts, settings};

pub fn status(args: &PhpArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let answers = on_each_pool(args, global, printer, |host, pool| {
        Ok(Answer {
            fpm: pool.fpm.clone(),
            status: Some(host.status(pool)?),
            reset: None,
        })
    })?;
    for (_, answer) in &answers {
        if let Some(status) = answer.as_ref().and_then(|a| a.status.as_ref()) {
            for warning in warnings(status) {
                printer.warn(warning);
            }
        }
    }
    print(&answers, printer, |answer| {
        answer.status.as_ref().map(describe).unwrap_or_default()
    });
    Ok(())
}

pub fn reset(args: &PhpResetArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let wait_ms = args.wait.as_millis() as u64;
    let answers = on_each_pool(&args.pool, global, printer, |host, pool| {
        Ok(Answer {
            fpm: pool.fpm.clone(),
            status: None,
            reset: Some(host.reset(pool, wait_ms)?),
        })
    })?;
    print(&answers, printer, |answer| match &answer.reset {
        Some(report) => format!(
            "OPcache reset by worker {} and restarted after {:.2} s\n{}",
            report.pid,
            report.settled_after,
            describe(&report.status)
        ),
        None => String::new(),
    });
    Ok(())
}

/// What one host's pool answered.
#[derive(Serialize)]
struct Answer {
    fpm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<PoolStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reset: Option<ResetReport>,
}

/// Runs `ask` against each host's pool: through each host of the fleet, or straight at
/// the pool when only a script directory is given (no deploy path involved).
fn on_each_pool(
    args: &PhpArgs,
    global: &GlobalArgs,
    printer: Printer,
    ask: impl Fn(&mut dyn PoolHost, &PoolSpec) -> std::result::Result<Answer, HostError> + Sync,
) -> Result<Vec<(HostReport, Option<Answer>)>> {
    let config = settings::load_config(global)?;
    let no_path =
        args.target.to.is_none() && config.deploy.path.is_none() && !settings::names_hosts(&config);
    if no_path {
        let pool = pool_spec(
            args,
            config.php.fpm.as_deref(),
            config.php.fpm_chroot.as_ref(),
        )?;
        let dir = args.script_dir.clone().ok_or_else(|| {
            CommandError::usage(
                "no directory for the script the pool must run",
                "pass `--to /var/www/app` (the script goes into its .cutover/php) or `--script-dir DIR` readable by the pool's user",
            )
        })?;
        let mut host = Direct(Pool {
            address: pool.address()?,
            script_dir: dir,
            chroot: pool.chroot.clone(),
            timeout: args.timeout,
        });
        let answer = ask(&mut host, &pool)?;
        let report = HostReport {
            host: settings::LOCAL_HOST.into(),
            ..HostReport::default()
        };
        return Ok(vec![(report, Some(answer))]);
    }
    let plans = settings::host_plans(&args.target, &config)?;
    let pools: Vec<(String, PoolSpec)> = plans
        .iter()
        .map(|plan| Ok((plan.name.clone(), host_pool(args, plan)?)))
        .collect::<Result<_>>()?;
    let parallel = settings::parallel(None);
    let observer = hosts::quiet_observer();
    let outcome = hosts::on_fleet(&plans, Access::Read, parallel, observer, printer, |fleet| {
        fleet.read(|host| {
            let pool = pools
                .iter()
                .find(|(name, _)| name == host.name())
                .map(|(_, pool)| pool)
                .ok_or_else(|| HostError::internal("a host without a pool"))?;
            ask(&mut ViaHost(host), pool)
        })
    })?;
    Ok(outcome.hosts)
}

/// The pool of one host: flags given here win over the host's [php] settings.
fn host_pool(args: &PhpArgs, plan: &HostPlan) -> Result<PoolSpec> {
    let from_plan = plan.refresh.pool.as_ref();
    let spec = pool_spec(
        args,
        from_plan.map(|p| p.fpm.as_str()),
        from_plan.and_then(|p| p.chroot.as_ref()),
    )?;
    Ok(spec)
}

fn pool_spec(
    args: &PhpArgs,
    fpm: Option<&str>,
    chroot: Option<&std::path::PathBuf>,
) -> Result<PoolSpec> {
    let fpm = args.fpm.as_deref().or(fpm).ok_or_else(|| {
        CommandError::usage(
            "no php-fpm address given",
            "pass `--fpm unix:/run/php/php8.2-fpm.sock` (or 127.0.0.1:9000), or set `fpm` in the [php] table",
        )
    })?;
    let spec = PoolSpec {
        fpm: fpm.to_string(),
        chroot: args.fpm_chroot.clone().or_else(|| chroot.cloned()),
        script_dir: args.script_dir.clone(),
        timeout_ms: args.timeout.as_millis() as u64,
    };
    spec.address()?;
    Ok(spec)
}

/// Where a pool is asked from: through a host of the fleet, or straight.
trait PoolHost {
    fn status(&mut self, pool: &PoolSpec) -> std::result::Result<PoolStatus, HostError>;
    fn reset(
        &mut self,
        pool: &PoolSpec,
        wait_ms: u64,
    ) -> std::result::Result<ResetReport, HostError>;
}

struct ViaHost<'h>(&'h mut dyn Host);

impl PoolHost for ViaHost<'_> {
    fn status(&mut self, pool: &PoolSpec) -> std::result::Result<PoolStatus, HostError> {
        self.0.php_status(pool)
    }
    fn reset(
        &mut self,
        pool: &PoolSpec,
        wait_ms: u64,
    ) -> std::result::Result<ResetReport, HostError> {
        self.0.php_reset(pool, wait_ms)
    }
}

/// A pool asked straight, with the script written where `--script-dir` says.
struct Direct(Pool);

impl PoolHost for Direct {
    fn status(&mut self, _: &PoolSpec) -> std::result::Result<PoolStatus, HostError> {
        Ok(self.0.status()?)
    }
    fn reset(&mut self, _: &PoolSpec, wait_ms: u64) -> std::result::Result<ResetReport, HostError> {
        Ok(self.0.reset(Duration::from_millis(wait_ms))?)
    }
}

fn print(
    answers: &[(HostReport, Option<Answer>)],
    printer: Printer,
    human: impl Fn(&Answer) -> String,
) {
    let docs: Vec<serde_json::Value> = answers
        .iter()
        .map(|(report, answer)| {
            let mut doc = serde_json::to_value(report).unwrap_or_default();
            doc["result"] = serde_json::to_value(answer).unwrap_or_default();
            doc
        })
        .collect();
    printer.result(&serde_json::json!({ "hosts": docs }), || {
        let many = answers.len() > 1;
        let mut text = String::new();
        for (report, answer) in answers {
            let Some(answer) = answer else { continue };
            if many {
                text.push_str(&format!("{}:\n", report.host));
            }
            for line in human(answer).lines() {
                text.push_str(if many { "  " } else { "" });
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    });
}

/// Conditions worth a line even when nothing failed.
fn warnings(status: &PoolStatus) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(opcache) = &status.opcache {
        if opcache.enabled && opcache.free_memory < opcache.used_memory {
            warnings.push(format!(
                "OPcache has {} free for {} of cached code: the next release may not fit, and a full OPcache does not restart by itself (old releases' scripts are not \"wasted\"): every request then compiles its scripts anew; raise opcache.memory_consumption, or let cutover check before each switch ([refresh] opcache_room, with strategy \"prewarm\" or \"none\")",
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
        "php-fpm worker {} (PHP {}, {}, user {})\n",
        status.pid,
        status.php_version,
        status.sapi,
        status.user.as_deref().unwrap_or("unknown"),
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
    for release in status.releases.iter().flatten() {
        text.push_str(&format!(
            "  release {}: {} scripts, {}\n",
            release.release,
            release.scripts,
            human_bytes(release.memory)
        ));
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
