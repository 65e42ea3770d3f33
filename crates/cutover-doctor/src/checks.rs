//! The rules: facts in, findings out. Each rule says when its hazard is present; where a
//! hazard depends on what cutover does after a switch, the `[refresh] strategy` decides.

use std::path::{Path, PathBuf};

use cutover_config::RefreshStrategy;

use crate::nginx::{At, Site};
use crate::{Facts, Finding, Severity};

/// OPcache's compiled form of PHP source is several times its size: measured 7× on
/// generated classes (PHP 8.2); used only when the pool has too few cached scripts to
/// measure its own average.
const COMPILED_PER_SOURCE_BYTE: u64 = 7;
/// Below this many cached scripts the pool's average per script is not trusted.
const MIN_SCRIPTS_TO_MEASURE: u64 = 20;

/// Every hazard present in `facts`, errors first.
pub fn check(facts: &Facts) -> Vec<Finding> {
    let mut findings = Vec::new();
    let refresh = Refresh(&facts.strategies);
    let deploy = DeployRoots::new(facts.deploy_path.as_deref());
    for error in &facts.unread {
        findings.push(Finding {
            id: "not-checked",
            severity: Severity::Error,
            what: format!("could not read {}", error.what),
            why: format!("{}; the hazards it would show are unknown", error.message),
            fix: "make it readable (run doctor as the user that runs the server, or as root), or leave out the flag that asked for it".into(),
            at: None,
        });
    }
    if let Some(nginx) = &facts.nginx {
        nginx_rules(&nginx.sites, &deploy, refresh, &mut findings);
    }
    if let Some(apache) = &facts.apache {
        apache_rules(apache, &deploy, refresh, &mut findings);
    }
    pool_rules(facts, &deploy, refresh, &mut findings);
    findings.sort_by_key(|f| f.severity);
    findings
}

#[derive(Clone, Copy)]
struct Refresh<'a>(&'a [RefreshStrategy]);

impl Refresh<'_> {
    fn has(self, strategy: RefreshStrategy) -> bool {
        self.0.contains(&strategy)
    }

    /// Empties the php-fpm pool's caches after a switch (a `command` is taken to do so).
    fn resets_pool(self) -> bool {
        self.has(RefreshStrategy::OpcacheReset)
            || self.has(RefreshStrategy::FpmReload)
            || self.has(RefreshStrategy::Command)
    }

    /// Renews PHP inside Apache (mod_php) after a switch.
    fn restarts_apache(self) -> bool {
        self.has(RefreshStrategy::ApacheGraceful) || self.has(RefreshStrategy::Command)
    }
}

/// `<deploy>/current`, as given and resolved: a root at or under one of them is served
/// through the symlink.
struct DeployRoots {
    deploy: Vec<PathBuf>,
}

impl DeployRoots {
    fn new(path: Option<&Path>) -> Self {
        let mut deploy = Vec::new();
        if let Some(path) = path {
            deploy.push(path.to_path_buf());
            if let Ok(real) = std::fs::canonicalize(path) {
                if real != path {
                    deploy.push(real);
                }
            }
        }
        DeployRoots { deploy }
    }

    fn through_current(&self, root: &str) -> bool {
        !root.contains('$')
            && self
                .deploy
                .iter()
                .any(|d| Path::new(root).starts_with(d.join("current")))
    }

    fn inside(&self, path: &str) -> bool {
        !path.is_empty() && self.deploy.iter().any(|d| Path::new(path).starts_with(d))
    }
}

fn uses_realpath_root(value: &str) -> bool {
    value.contains("$realpath_root") || value.contains("${realpath_root}")
}

fn where_(site: &Site) -> String {
    let names = if site.server_names.is_empty() {
        String::new()
    } else {
        format!(" {}", site.server_names.join(" "))
    };
    if site.context == "server" {
        format!("server{names} ({})", site.at)
    } else {
        format!("server{names}, {} ({})", site.context, site.at)
    }
}

fn nginx_rules(sites: &[Site], deploy: &DeployRoots, refresh: Refresh, out: &mut Vec<Finding>) {
    let mut reported: Vec<(&'static str, At)> = Vec::new();
    let mut once = |id: &'static str, at: &At| {
        let key = (id, at.clone());
        let new = !reported.contains(&key);
        if new {
            reported.push(key);
        }
        new
    };
    for site in sites {
        let Some(root) = &site.root else { continue };
        if !deploy.through_current(&root.value) {
            continue;
        }
        if site.fastcgi && !refresh.resets_pool() {
            if let Some(script) = &site.script_filename {
                if !uses_realpath_root(&script.value) {
                    out.push(Finding {
                        id: "nginx-root-through-symlink",
                        severity: Severity::Error,
                        what: format!(
                            "{}: root {} is reached through `current`, PHP is given SCRIPT_FILENAME {} and no [refresh] strategy resets the pool",
                            where_(site), root.value, script.value
                        ),
                        why: "OPcache and each worker's realpath cache keep mapping current/… to the old release after a switch: the old code goes on being served".into(),
                        fix: format!(
                            "{}: fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;  (or strategy = [\"opcache-reset\"] in [refresh] of cutover.toml)",
                            script.at
                        ),
                        at: Some(script.at.to_string()),
                    });
                } else if let Some(document_root) = site
                    .document_root
                    .as_ref()
                    .filter(|d| !uses_realpath_root(&d.value))
                {
                    out.push(Finding {
                        id: "nginx-document-root-through-symlink",
                        severity: Severity::Warning,
                        what: format!(
                            "{}: SCRIPT_FILENAME is resolved but DOCUMENT_ROOT is {} (through `current`)",
                            where_(site),
                            document_root.value
                        ),
                        why: "code that includes files via $_SERVER['DOCUMENT_ROOT'] still goes through `current` and can get the old release's files from the caches".into(),
                        fix: format!(
                            "after the includes of {}: fastcgi_param DOCUMENT_ROOT $realpath_root;",
                            site.at
                        ),
                        at: Some(document_root.at.to_string()),
                    });
                }
            }
        }
        if let Some(cache) = site.open_file_cache.as_ref().filter(|c| c.value != "off") {
            if once("nginx-open-file-cache", &cache.at) {
                let valid = site
                    .open_file_cache_valid
                    .as_ref()
                    .map_or("60s", |v| v.value.as_str());
                let errors = site
                    .open_file_cache_errors
                    .as_ref()
                    .is_some_and(|e| e.value == "on");
                out.push(Finding {
                    id: "nginx-open-file-cache",
                    severity: Severity::Warning,
                    what: format!(
                        "{}: open_file_cache {} is on for root {}, which is reached through `current`",
                        where_(site), cache.value, root.value
                    ),
                    why: format!(
                        "nginx keeps open files and lookups by path for open_file_cache_valid ({valid}): after a switch it can serve the old release's static files{}",
                        if errors { ", and 404s for files new in the release (open_file_cache_errors on)" } else { "" }
                    ),
                    fix: format!(
                        "in the server at {}: open_file_cache off;  (it is turned on at {})",
                        site.server_at, cache.at
                    ),
                    at: Some(cache.at.to_string()),
                });
            }
        }
        if let Some(symlinks) = &site.disable_symlinks {
            let mut args = symlinks.value.split_whitespace();
            let mode = args.next().unwrap_or("off");
            let from = args.find_map(|a| a.strip_prefix("from="));
            let covered = from.is_some_and(|f| {
                f == "$document_root" || f == "${document_root}" || deploy.through_current(f)
            });
            if mode != "off" && !covered && once("nginx-disable-symlinks", &symlinks.at) {
                let (severity, why) = if mode == "on" {
                    (Severity::Error, "nginx refuses any path with a symlink in it: every file under `current` is denied (403)")
                } else {
                    (Severity::Warning, "nginx refuses a symlink whose owner differs from its target's: the site fails whenever `current` and the release it names have different owners")
                };
                out.push(Finding {
                    id: "nginx-disable-symlinks",
                    severity,
                    what: format!(
                        "{}: disable_symlinks {} applies to root {}, which is the `current` symlink",
                        where_(site),
                        symlinks.value,
                        root.value
                    ),
                    why: why.into(),
                    fix: format!(
                        "{}: disable_symlinks {mode} from=$document_root;  (checks only below the root; or disable_symlinks off;)",
                        symlinks.at
                    ),
                    at: Some(symlinks.at.to_string()),
                });
            }
        }
    }
}

fn apache_rules(
    apache: &crate::apache::ApacheConfig,
    deploy: &DeployRoots,
    refresh: Refresh,
    out: &mut Vec<Finding>,
) {
    let threaded = matches!(apache.mpm.as_deref(), Some("event" | "worker" | "threaded"));
    if apache.mod_php && (apache.threaded_mpm_refused_php || threaded) {
        out.push(Finding {
            id: "apache-threaded-mpm-mod-php",
            severity: Severity::Error,
            what: format!(
                "{}: mod_php is loaded under a threaded MPM ({})",
                apache.command,
                if apache.threaded_mpm_refused_php {
                    "Apache refuses to start: PHP is not thread-safe".to_string()
                } else {
                    format!("mpm_{}", apache.mpm.as_deref().unwrap_or("?"))
                }
            ),
            why: "PHP as mod_php needs the prefork MPM; under event/worker Apache does not start (non-thread-safe PHP) or runs PHP code in threads it was not built for".into(),
            fix: "a2dismod mpm_event && a2enmod mpm_prefork  (LoadModule mpm_prefork_module …), or run PHP in php-fpm via proxy_fcgi".into(),
            at: None,
        });
    }
    for root in &apache.roots {
        if !deploy.through_current(&root.value) {
            continue;
        }
        let hazard = if apache.mod_php && !refresh.restarts_apache() {
            Some("mod_php keeps its OPcache across a switch and no [refresh] strategy restarts Apache")
        } else if !apache.mod_php && apache.proxy_fcgi && !refresh.resets_pool() {
            Some("Apache hands php-fpm paths through `current` and no [refresh] strategy resets the pool")
        } else {
            None
        };
        if let Some(hazard) = hazard {
            let fix = if apache.mod_php {
                "strategy = [\"apache-graceful\"] in [refresh] of cutover.toml"
            } else {
                "strategy = [\"opcache-reset\"] in [refresh] of cutover.toml (Apache cannot pass resolved paths like nginx's $realpath_root)"
            };
            out.push(Finding {
                id: "apache-root-through-symlink",
                severity: Severity::Error,
                what: format!(
                    "DocumentRoot {} ({}) is reached through `current`: {hazard}",
                    root.value, root.at
                ),
                why: "OPcache keys scripts by the path as given: current/… keeps mapping to the old release after a switch".into(),
                fix: fix.into(),
                at: (root.at.line > 0).then(|| root.at.to_string()),
            });
        }
    }
}

fn pool_rules(facts: &Facts, deploy: &DeployRoots, refresh: Refresh, out: &mut Vec<Finding>) {
    if refresh.has(RefreshStrategy::FpmReload) {
        if let Some(config) = &facts.fpm_config {
            if config.process_control_timeout() == Some(0) {
                out.push(Finding {
                    id: "fpm-reload-kills-requests",
                    severity: Severity::Error,
                    what: format!(
                        "[refresh] uses fpm-reload, and php-fpm's process_control_timeout is 0 ({})",
                        config.config
                    ),
                    why: "on SIGUSR2 php-fpm then terminates its workers at once: requests in flight get 502 (cutover refuses such a reload)".into(),
                    fix: format!("{}, [global]: process_control_timeout = 10s", config.config),
                    at: None,
                });
            }
        }
    }
    let Some(pool) = &facts.pool else { return };
    let status = &pool.status;
    let ini = |key: &str| status.ini_value(key).unwrap_or("").trim().to_string();
    let flag = |key: &str| {
        matches!(
            ini(key).to_ascii_lowercase().as_str(),
            "1" | "on" | "yes" | "true"
        )
    };
    let number = |key: &str| -> Option<u64> {
        let text = ini(key);
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let opcache_on = status
        .opcache
        .as_ref()
        .map_or(flag("opcache.enable"), |o| o.enabled);
    let at_pool = format!("the pool at {}", pool.address);
    if opcache_on {
        let freq = number("opcache.revalidate_freq").unwrap_or(2);
        if flag("opcache.validate_timestamps") && freq > 0 && !refresh.resets_pool() {
            out.push(Finding {
                id: "opcache-revalidate-window",
                severity: Severity::Warning,
                what: format!("{at_pool}: opcache.validate_timestamps=1 with revalidate_freq={freq}, and no [refresh] strategy resets the pool"),
                why: format!("for up to {freq} s (plus realpath_cache_ttl for paths through `current`) after a switch a worker may run the old release's code, and files of two releases can mix in one request"),
                fix: "php.ini or the pool: opcache.validate_timestamps=0, with strategy = [\"opcache-reset\"] in [refresh] of cutover.toml".into(),
                at: None,
            });
        }
        let all_resolved = facts.nginx.as_ref().is_some_and(|nginx| {
            let php: Vec<&Site> = nginx
                .sites
                .iter()
                .filter(|s| {
                    s.fastcgi
                        && s.root
                            .as_ref()
                            .is_some_and(|r| deploy.through_current(&r.value))
                })
                .collect();
            !php.is_empty()
                && php.iter().all(|s| {
                    s.script_filename
                        .as_ref()
                        .is_some_and(|v| uses_realpath_root(&v.value))
                })
        });
        if refresh.has(RefreshStrategy::OpcacheReset) || refresh.has(RefreshStrategy::FpmReload) {
            let through_current = facts.nginx.as_ref().is_some_and(|nginx| {
                nginx.sites.iter().any(|s| {
                    s.fastcgi
                        && s.root
                            .as_ref()
                            .is_some_and(|r| deploy.through_current(&r.value))
                        && s.script_filename
                            .as_ref()
                            .is_some_and(|v| !uses_realpath_root(&v.value))
                })
            });
            if through_current {
                out.push(Finding {
                    id: "cold-switch",
                    severity: Severity::Info,
                    what: format!("{at_pool}: nginx passes $document_root, so [refresh] empties OPcache after every switch"),
                    why: "every worker then compiles the new release cold: measured on a 5,500-file app (issue 15), p99 in the second after a switch ×4.5 with opcache-reset (the reset itself ~0.6 s) and ×3.8 with fpm-reload; switching every 200 ms, throughput fell to 30% and 13%".into(),
                    fix: "where latency matters: nginx fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name (and DOCUMENT_ROOT $realpath_root), then cutover.toml [refresh] strategy = [\"prewarm\", \"none\"] (see BENCHMARKS.md)".into(),
                    at: None,
                });
            }
        }
        // With prewarm cutover checks OPcache's room before every switch.
        let checked = all_resolved && refresh.has(RefreshStrategy::Prewarm);
        if !flag("opcache.validate_timestamps") && !refresh.resets_pool() && !checked {
            let (severity, why) = if all_resolved {
                (Severity::Warning, "nginx passes resolved paths, so each release is compiled anew — but without cutover's check before the switch nothing removes the old ones: OPcache keeps every release it has seen and, once full, does not restart by itself (old releases' scripts are not \"wasted\"); every request then compiles its scripts anew, silently (measured: p50 ×3.6, throughput halved). Includes spelled through `current` stay old for good")
            } else {
                (Severity::Error, "OPcache never looks at the files again: after a switch the old release is served until php-fpm restarts")
            };
            out.push(Finding {
                id: "opcache-no-reset",
                severity,
                what: format!("{at_pool}: opcache.validate_timestamps=0 and no [refresh] strategy resets OPcache"),
                why: why.into(),
                fix: if all_resolved {
                    "cutover.toml: [php] fpm = the pool's address and [refresh] strategy = [\"prewarm\", \"none\"]: cutover checks OPcache's room before each switch, lets go of old releases and compiles the new one before it goes live".into()
                } else {
                    "cutover.toml: [refresh] strategy = [\"opcache-reset\"]  (with [php] fpm = the pool's address); where latency matters, pass $realpath_root to PHP and use [\"prewarm\", \"none\"] instead: a reset makes every worker compile the new release cold (measured: p99 ×4.5 in the second after the switch)".into()
                },
                at: None,
            });
        }
    }
    let preload = ini("opcache.preload");
    let preload_inside = deploy.inside(&preload)
        || std::fs::canonicalize(&preload).is_ok_and(|p| deploy.inside(&p.display().to_string()));
    if preload_inside && !refresh.has(RefreshStrategy::FpmReload) {
        let severity = if refresh.has(RefreshStrategy::Command) {
            Severity::Warning
        } else {
            Severity::Error
        };
        out.push(Finding {
            id: "opcache-preload-under-deploy-path",
            severity,
            what: format!("{at_pool}: opcache.preload={preload} is in the deploy path, and [refresh] does not restart php-fpm{}", if severity == Severity::Warning { " (unless its command does)" } else { "" }),
            why: "preloaded code is loaded once at start-up, never revalidated and survives opcache_reset(): it stays the old release's until a full restart".into(),
            fix: "cutover.toml: [refresh] strategy = [\"fpm-reload\"] (with process_control_timeout = 10s), or preload from outside the releases".into(),
            at: None,
        });
    }
    let shared = facts.shared.filter(|s| s.written > 0);
    if let Some(shared) = shared.filter(|_| opcache_on && !flag("opcache.validate_timestamps")) {
        out.push(Finding {
            id: "php-in-shared",
            severity: Severity::Warning,
            what: format!(
                "{}{} PHP files in the deploy path's shared directory were written since the last switch, and {at_pool} has opcache.validate_timestamps=0",
                if shared.complete { "" } else { "at least " },
                shared.written
            ),
            why: "every release includes the same files, and OPcache compiles each once and never reads it again: PHP the app rewrites there (generated caches, compiled templates) stays stale, and a cache that names one release's paths is found expired and rebuilt on every request of the next (measured on MediaWiki's localisation cache: 38 -> 23 req/s, no error)".into(),
            fix: "keep generated PHP inside the release, built during staging, where prewarm compiles it too (MediaWiki: $wgLocalisationCacheConf['storeDirectory'] = dirname(__DIR__) . '/l10n', and a before_switch hook running maintenance/rebuildLocalisationCache.php); configuration written once and never changed is safe".into(),
            at: None,
        });
    }
    let file_cache = ini("opcache.file_cache");
    if !file_cache.is_empty() {
        out.push(Finding {
            id: "opcache-file-cache",
            severity: Severity::Warning,
            what: format!("{at_pool}: opcache.file_cache={file_cache}"),
            why: "the file cache survives opcache_reset() and restarts: compiled scripts of an old release can come back from disk".into(),
            fix: "php.ini: opcache.file_cache=  (empty; the shared memory cache is enough for php-fpm)".into(),
            at: None,
        });
    }
    let basedir = ini("open_basedir");
    if !basedir.is_empty() {
        out.push(Finding {
            id: "open-basedir",
            severity: Severity::Warning,
            what: format!("{at_pool}: open_basedir={basedir}"),
            why: "open_basedir turns the realpath cache off (every include re-resolves every path: slower), and tools that reset OPcache with a script outside it (CacheTool, /tmp) fail".into(),
            fix: "the pool: remove php_admin_value[open_basedir] (or keep it and the deploy path's .cutover/php inside it)".into(),
            at: None,
        });
    }
    let restrict = ini("opcache.restrict_api");
    if !restrict.is_empty() && !pool.script_path.starts_with(&restrict) {
        let severity = if refresh.has(RefreshStrategy::OpcacheReset) {
            Severity::Error
        } else {
            Severity::Warning
        };
        out.push(Finding {
            id: "opcache-restrict-api",
            severity,
            what: format!("{at_pool}: opcache.restrict_api={restrict} does not admit {}", pool.script_path),
            why: "only scripts under restrict_api may call opcache_reset(): cutover's reset (and `cutover php reset`) fails".into(),
            fix: format!(
                "php.ini or the pool: opcache.restrict_api={}  (a prefix of the deploy path's .cutover/php, or empty)",
                Path::new(&pool.script_path).parent().map_or(String::new(), |p| p.display().to_string())
            ),
            at: None,
        });
    }
    if opcache_on {
        memory_rule(facts, status, &at_pool, out);
    }
}

/// Two releases must fit: after a switch the old release's scripts stay cached while the
/// new one compiles (until a reset; for good with `$realpath_root` and no reset).
fn memory_rule(
    facts: &Facts,
    status: &cutover_php::PoolStatus,
    at_pool: &str,
    out: &mut Vec<Finding>,
) {
    let Some(code) = facts.release.filter(|c| c.php_files > 0) else {
        return;
    };
    let mb = |key: &str, default: u64| -> u64 {
        let text = status.ini_value(key).unwrap_or("");
        let digits: String = text
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap_or(default)
    };
    let memory = mb("opcache.memory_consumption", 128) << 20;
    let interned = mb("opcache.interned_strings_buffer", 8) << 20;
    // OPcache's memory holds the interned strings buffer too; the rest is for scripts.
    let for_scripts = memory.saturating_sub(interned);
    let measured = status
        .opcache
        .as_ref()
        .filter(|o| o.cached_scripts >= MIN_SCRIPTS_TO_MEASURE && o.used_memory > interned);
    let (per_release, how) = match measured {
        Some(o) => {
            let per_script = (o.used_memory - interned) / o.cached_scripts;
            (
                per_script * code.php_files,
                format!(
                    "{} per cached script (used memory less the interned strings buffer, over {} cached scripts) × {} PHP files in the current release",
                    cutover_core::bytes::human(per_script),
                    o.cached_scripts,
                    code.php_files
                ),
            )
        }
        None => (
            code.php_bytes * COMPILED_PER_SOURCE_BYTE,
            format!(
                "{} of PHP source in the current release × {COMPILED_PER_SOURCE_BYTE} (compiled code is several times its source; too few scripts cached to measure)",
                cutover_core::bytes::human(code.php_bytes)
            ),
        ),
    };
    if per_release * 2 > for_scripts {
        out.push(Finding {
            id: "opcache-memory-too-small",
            severity: Severity::Warning,
            what: format!(
                "{at_pool}: OPcache has {} for scripts (memory_consumption less interned strings), two releases need about {}",
                cutover_core::bytes::human(for_scripts),
                cutover_core::bytes::human(per_release * 2)
            ),
            why: format!("one release ≈ {}, estimated as {how}; during a switch both are cached, and a full OPcache does not restart by itself: every request compiles its scripts anew, silently (measured: p50 ×3.6, throughput halved, oom_restarts 0)", cutover_core::bytes::human(per_release)),
            fix: format!(
                "php.ini: opcache.memory_consumption={}",
                ((per_release * 2 + interned) >> 20).next_power_of_two().max(128)
            ),
            at: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::nginx::NginxConfig;
    use crate::{PoolFacts, ReleaseCode};

    fn nginx(server: &str) -> NginxConfig {
        NginxConfig::from_dump(&format!(
            "# configuration file /etc/nginx/nginx.conf:\nhttp {{ server {{ server_name app; root /srv/app/current/public;\n{server}\n}} }}\n"
        ))
        .unwrap()
    }

    const RESOLVED: &str = "location ~ \\.php$ { fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name; fastcgi_param DOCUMENT_ROOT $realpath_root; fastcgi_pass x; }";
    const THROUGH: &str = "location ~ \\.php$ { fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; fastcgi_pass x; }";

    fn facts(nginx_server: &str, strategies: &[RefreshStrategy]) -> Facts {
        Facts {
            deploy_path: Some("/srv/app".into()),
            strategies: strategies.to_vec(),
            nginx: Some(nginx(nginx_server)),
            ..Facts::default()
        }
    }

    fn ids(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.id).collect()
    }

    #[test]
    fn document_root_through_current_needs_a_pool_refresh() {
        let found = check(&facts(THROUGH, &[]));
        assert_eq!(ids(&found), ["nginx-root-through-symlink"]);
        assert_eq!(found[0].severity, Severity::Error);
        assert_eq!(found[0].at.as_deref(), Some("/etc/nginx/nginx.conf:2"));
        assert!(check(&facts(THROUGH, &[RefreshStrategy::OpcacheReset])).is_empty());
        assert!(!check(&facts(THROUGH, &[RefreshStrategy::ApacheGraceful])).is_empty());
        assert!(check(&facts(RESOLVED, &[])).is_empty());
        // A root elsewhere is none of doctor's business.
        let mut other = facts(THROUGH, &[]);
        other.deploy_path = Some("/srv/other".into());
        assert!(check(&other).is_empty());
    }

    #[test]
    fn document_root_param_alone() {
        let server = "location ~ \\.php$ { fastcgi_param DOCUMENT_ROOT $document_root; fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name; fastcgi_pass x; }";
        assert_eq!(
            ids(&check(&facts(server, &[]))),
            ["nginx-document-root-through-symlink"]
        );
    }

    #[test]
    fn open_file_cache_and_disable_symlinks() {
        let found = check(&facts(
            &format!("open_file_cache max=10; open_file_cache_errors on; {RESOLVED}"),
            &[],
        ));
        assert_eq!(
            ids(&found),
            ["nginx-open-file-cache"],
            "reported once for the directive"
        );
        assert!(found[0].why.contains("404"));
        assert!(check(&facts(&format!("open_file_cache off; {RESOLVED}"), &[])).is_empty());

        let found = check(&facts(&format!("disable_symlinks on; {RESOLVED}"), &[]));
        assert_eq!(ids(&found), ["nginx-disable-symlinks"]);
        assert_eq!(found[0].severity, Severity::Error);
        let found = check(&facts(
            &format!("disable_symlinks if_not_owner; {RESOLVED}"),
            &[],
        ));
        assert_eq!(found[0].severity, Severity::Warning);
        assert!(check(&facts(
            &format!("disable_symlinks on from=$document_root; {RESOLVED}"),
            &[]
        ))
        .is_empty());
        assert!(check(&facts(
            &format!("disable_symlinks on from=/srv/app/current/public; {RESOLVED}"),
            &[]
        ))
        .is_empty());
        assert!(!check(&facts(
            &format!("disable_symlinks on from=/srv/app; {RESOLVED}"),
            &[]
        ))
        .is_empty());
    }

    fn pool(ini: &[(&str, &str)], strategies: &[RefreshStrategy]) -> Facts {
        let ini: BTreeMap<String, Option<String>> = ini
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect();
        Facts {
            deploy_path: Some("/srv/app".into()),
            strategies: strategies.to_vec(),
            pool: Some(PoolFacts {
                address: "unix:/x.sock".into(),
                status: cutover_php::PoolStatus {
                    pid: 1,
                    php_version: "8.2.0".into(),
                    sapi: "fpm-fcgi".into(),
                    ini,
                    opcache: None,
                    opcache_error: None,
                    realpath_cache_used: 0,
                    user: None,
                    releases: None,
                },
                script_path: "/srv/app/.cutover/php/cutover-status-x.php".into(),
            }),
            ..Facts::default()
        }
    }

    const GOOD: [(&str, &str); 2] = [
        ("opcache.enable", "1"),
        ("opcache.validate_timestamps", "0"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut all = GOOD.to_vec();
        all.extend_from_slice(extra);
        all
    }

    #[test]
    fn pool_rules() {
        let reset = [RefreshStrategy::OpcacheReset];
        assert!(check(&pool(&GOOD, &reset)).is_empty());
        assert_eq!(ids(&check(&pool(&GOOD, &[]))), ["opcache-no-reset"]);
        let window = with(&[
            ("opcache.validate_timestamps", "1"),
            ("opcache.revalidate_freq", "2"),
        ]);
        assert_eq!(
            ids(&check(&pool(&window, &[]))),
            ["opcache-revalidate-window"]
        );
        assert!(check(&pool(&window, &reset)).is_empty());
        let zero = with(&[
            ("opcache.validate_timestamps", "1"),
            ("opcache.revalidate_freq", "0"),
        ]);
        assert!(check(&pool(&zero, &[])).is_empty());
        assert_eq!(
            ids(&check(&pool(
                &with(&[("opcache.file_cache", "/var/tmp")]),
                &reset
            ))),
            ["opcache-file-cache"]
        );
        assert_eq!(
            ids(&check(&pool(&with(&[("open_basedir", "/srv")]), &reset))),
            ["open-basedir"]
        );
        let preload = with(&[("opcache.preload", "/srv/app/current/preload.php")]);
        assert_eq!(
            ids(&check(&pool(&preload, &reset))),
            ["opcache-preload-under-deploy-path"]
        );
        assert!(check(&pool(&preload, &[RefreshStrategy::FpmReload])).is_empty());
        let restricted = with(&[("opcache.restrict_api", "/var/www/tools")]);
        let found = check(&pool(&restricted, &reset));
        assert_eq!(ids(&found), ["opcache-restrict-api"]);
        assert_eq!(found[0].severity, Severity::Error);
        assert!(check(&pool(
            &with(&[("opcache.restrict_api", "/srv/app")]),
            &reset
        ))
        .is_empty());
    }

    /// A pool behind the nginx of `server`.
    fn pool_behind(server: &str, strategies: &[RefreshStrategy]) -> Facts {
        Facts {
            nginx: Some(nginx(server)),
            ..pool(&GOOD, strategies)
        }
    }

    #[test]
    fn a_cold_switch_is_named_and_prewarm_counts_as_handling_the_cache() {
        let reset = [RefreshStrategy::OpcacheReset];
        let found = check(&pool_behind(THROUGH, &reset));
        assert_eq!(ids(&found), ["cold-switch"]);
        assert_eq!(found[0].severity, Severity::Info);
        assert!(found[0].fix.contains("prewarm"), "{}", found[0].fix);
        assert!(check(&pool_behind(RESOLVED, &reset)).is_empty());
        // $realpath_root and no reset: the cache only fills, which prewarm's check handles.
        let found = check(&pool_behind(RESOLVED, &[]));
        assert_eq!(ids(&found), ["opcache-no-reset"]);
        assert_eq!(found[0].severity, Severity::Warning);
        assert!(
            !found[0].why.contains("restarts itself"),
            "{}",
            found[0].why
        );
        let prewarm = [RefreshStrategy::Prewarm, RefreshStrategy::None];
        assert!(check(&pool_behind(RESOLVED, &prewarm)).is_empty());
    }

    #[test]
    fn memory_for_two_releases() {
        let mut facts = pool(
            &with(&[
                ("opcache.memory_consumption", "16"),
                ("opcache.interned_strings_buffer", "4"),
            ]),
            &[RefreshStrategy::OpcacheReset],
        );
        // 12 MiB for scripts; 1 MiB of source × 7 × 2 does not fit.
        facts.release = Some(ReleaseCode {
            php_files: 100,
            php_bytes: 1 << 20,
        });
        let found = check(&facts);
        assert_eq!(ids(&found), ["opcache-memory-too-small"]);
        assert!(found[0].why.contains("source"), "{}", found[0].why);
        facts.release = Some(ReleaseCode {
            php_files: 100,
            php_bytes: 512 << 10,
        });
        assert!(check(&facts).is_empty());
    }

    #[test]
    fn memory_measured_from_the_pool_when_enough_scripts_are_cached() {
        let mut facts = pool(
            &with(&[
                ("opcache.memory_consumption", "64"),
                ("opcache.interned_strings_buffer", "8"),
            ]),
            &[RefreshStrategy::OpcacheReset],
        );
        let status = &mut facts.pool.as_mut().unwrap().status;
        status.opcache = Some(cutover_php::OpcacheStatus {
            enabled: true,
            cache_full: false,
            restart_pending: false,
            restart_in_progress: false,
            // 8 MiB of interned strings + 100 scripts of 100 KiB.
            used_memory: (8 << 20) + 100 * (100 << 10),
            free_memory: 0,
            wasted_memory: 0,
            cached_scripts: 100,
            hits: 0,
            misses: 0,
            oom_restarts: 0,
            manual_restarts: 0,
            last_restart_time: 0,
        });
        // 300 files × 100 KiB × 2 = 58.6 MiB > 56 MiB; the tiny source size is not used.
        facts.release = Some(ReleaseCode {
            php_files: 300,
            php_bytes: 1,
        });
        let found = check(&facts);
        assert_eq!(ids(&found), ["opcache-memory-too-small"]);
        assert!(
            found[0].why.contains("100.0 KiB per cached script"),
            "{}",
            found[0].why
        );
        facts.release = Some(ReleaseCode {
            php_files: 200,
            php_bytes: 1,
        });
        assert!(check(&facts).is_empty());
    }
}
