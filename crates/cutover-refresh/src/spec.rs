//! What a host must do after a switch, resolved from cutover.toml once and sent as it is
//! to every host; `validate` runs again wherever it arrives.

use std::path::PathBuf;
use std::time::Duration;

use cutover_config::{HealthSettings, OpcacheRoom, PhpSettings, RefreshSettings, RefreshStrategy};
use cutover_core::DeployPath;
use serde::{Deserialize, Serialize};

use crate::RefreshError;

const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_PREWARM: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_TIMEOUT: Duration = Duration::from_secs(10);
const ADDRESS_HINT: &str = "write `unix:/path/to.sock`, `/path/to.sock` or `127.0.0.1:9000`";

/// A php-fpm pool as cutover reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// `unix:/run/php/php8.2-fpm.sock`, a socket path, or `127.0.0.1:9000`.
    pub fpm: String,
    pub chroot: Option<PathBuf>,
    /// Where the scripts the pool runs are written; default `<deploy path>/.cutover/php`.
    pub script_dir: Option<PathBuf>,
    pub timeout_ms: u64,
}

impl PoolSpec {
    /// `[php]` as the config gives it; `None` without `fpm`.
    pub fn from_settings(php: &PhpSettings) -> Result<Option<PoolSpec>, RefreshError> {
        let Some(fpm) = &php.fpm else {
            return Ok(None);
        };
        let spec = PoolSpec {
            fpm: fpm.clone(),
            chroot: php.fpm_chroot.clone(),
            script_dir: None,
            timeout_ms: POOL_TIMEOUT.as_millis() as u64,
        };
        spec.address()?;
        Ok(Some(spec))
    }

    pub fn address(&self) -> Result<cutover_fastcgi::Address, RefreshError> {
        self.fpm.parse().map_err(|e: cutover_fastcgi::Error| {
            RefreshError::settings(format!("[php] fpm: {e}"), ADDRESS_HINT)
        })
    }

    /// The pool for a deploy path: the scripts go into its `.cutover/php` unless given.
    pub fn pool(&self, deploy: &DeployPath) -> Result<cutover_php::Pool, RefreshError> {
        Ok(cutover_php::Pool {
            address: self.address()?,
            script_dir: self
                .script_dir
                .clone()
                .unwrap_or_else(|| deploy.state_dir().join("php")),
            chroot: self.chroot.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshSpec {
    /// In order; never `none`.
    pub strategies: Vec<RefreshStrategy>,
    pub pool: Option<PoolSpec>,
    pub fpm_pidfile: Option<PathBuf>,
    pub command: Option<String>,
    pub apache_pidfile: PathBuf,
    pub apache_command: String,
    pub wait_ms: u64,
    pub health: Option<HealthSpec>,
    /// How long `prewarm` may compile.
    #[serde(default)]
    pub prewarm_ms: u64,
    /// What a switch that keeps OPcache does when the new release does not fit.
    #[serde(default)]
    pub opcache_room: OpcacheRoom,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// A plain `http://` URL.
    pub url: Option<String>,
    /// A script run straight in the pool, relative to `current/`.
    pub fastcgi_script: Option<String>,
    pub expect_release: bool,
    pub timeout_ms: u64,
}

impl RefreshSpec {
    /// `[refresh]`, `[health]` and `[php]` of one host, checked.
    pub fn from_settings(
        php: &PhpSettings,
        refresh: &RefreshSettings,
        health: &HealthSettings,
    ) -> Result<RefreshSpec, RefreshError> {
        let health =
            (health.url.is_some() || health.fastcgi_script.is_some()).then(|| HealthSpec {
                url: health.url.clone(),
                fastcgi_script: health.fastcgi_script.clone(),
                expect_release: health.expect_release.unwrap_or(true),
                timeout_ms: health
                    .timeout_seconds
                    .map_or(DEFAULT_HEALTH_TIMEOUT, Duration::from_secs)
                    .as_millis() as u64,
            });
        let spec = RefreshSpec {
            strategies: refresh
                .strategy
                .iter()
                .copied()
                .filter(|s| *s != RefreshStrategy::None)
                .collect(),
            pool: PoolSpec::from_settings(php)?,
            fpm_pidfile: refresh.fpm_pidfile.clone(),
            command: refresh.command.clone(),
            apache_pidfile: refresh
                .apache_pidfile
                .clone()
                .unwrap_or_else(|| PathBuf::from(cutover_config::DEFAULT_APACHE_PIDFILE)),
            apache_command: refresh
                .apache_command
                .clone()
                .unwrap_or_else(|| cutover_config::DEFAULT_APACHE_COMMAND.to_string()),
            wait_ms: refresh
                .wait_seconds
                .map_or(DEFAULT_WAIT, Duration::from_secs)
                .as_millis() as u64,
            health,
            prewarm_ms: refresh
                .prewarm_seconds
                .map_or(DEFAULT_PREWARM, Duration::from_secs)
                .as_millis() as u64,
            // A restart chosen before the switch beats OPcache's own after it (issue 15,
            // measured on MediaWiki over ten deploys), but it needs pre-warming to be warm.
            opcache_room: refresh.opcache_room.unwrap_or(
                if refresh.strategy.contains(&RefreshStrategy::Prewarm) {
                    OpcacheRoom::Restart
                } else {
                    OpcacheRoom::Warn
                },
            ),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Nothing to do after a switch.
    pub fn is_empty(&self) -> bool {
        self.strategies.is_empty() && self.health.is_none() && !self.keeps_opcache()
    }

    /// Every setting a strategy or probe needs is there and well-formed. Run where the
    /// spec is made and again where it arrives.
    pub fn validate(&self) -> Result<(), RefreshError> {
        if let Some(pool) = &self.pool {
            pool.address()?;
        }
        let needs = |what: &str, hint: &str| {
            RefreshError::settings(format!("[refresh] strategy needs {what}"), hint)
        };
        for strategy in &self.strategies {
            match strategy {
                RefreshStrategy::OpcacheReset if self.pool.is_none() => {
                    return Err(needs(
                        "the pool's address for opcache-reset",
                        "set `fpm = \"unix:/run/php/php8.2-fpm.sock\"` in the [php] table",
                    ))
                }
                RefreshStrategy::FpmReload if self.fpm_pidfile.is_none() => {
                    return Err(needs("fpm_pidfile for fpm-reload", "set `fpm_pidfile = \"/run/php/php8.2-fpm.pid\"` in [refresh], or use strategy \"command\" with `systemctl reload php8.2-fpm`"))
                }
                RefreshStrategy::Command if self.command.is_none() => {
                    return Err(needs(
                        "a command for \"command\"",
                        "set `command = \"...\"` in [refresh]",
                    ))
                }
                RefreshStrategy::Prewarm if self.pool.is_none() => {
                    return Err(needs(
                        "the pool's address for prewarm",
                        "set `fpm = \"unix:/run/php/php8.2-fpm.sock\"` in the [php] table",
                    ))
                }
                RefreshStrategy::Prewarm => {
                    if let Some(emptying) = self.strategies.iter().find(|s| empties_opcache(**s)) {
                        return Err(RefreshError::settings(
                            format!(
                                "[refresh] strategy: \"prewarm\" is undone by \"{}\", which empties OPcache after the switch",
                                strategy_name(*emptying)
                            ),
                            "prewarm is for $realpath_root setups: write strategy = [\"prewarm\", \"none\"] (nginx: fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name)",
                        ));
                    }
                    if self.prewarm_ms == 0 || self.prewarm_ms > MAX_PREWARM.as_millis() as u64 {
                        return Err(RefreshError::settings(
                            format!(
                                "[refresh] prewarm_seconds {} is out of range",
                                self.prewarm_ms / 1000
                            ),
                            "give 1 to 3600 seconds",
                        ));
                    }
                }
                RefreshStrategy::None => {
                    return Err(RefreshError::settings(
                        "[refresh] strategy \"none\" arrived as a step",
                        "this is a bug in the deploying cutover",
                    ))
                }
                _ => {}
            }
        }
        if self.opcache_room == OpcacheRoom::Restart && !self.prewarms() {
            return Err(RefreshError::settings(
                "[refresh] opcache_room = \"restart\" needs strategy \"prewarm\": a restart empties OPcache, and only pre-warming fills it again before the switch",
                "write strategy = [\"prewarm\", \"none\"], or opcache_room = \"reset\" (reset after the switch) or \"warn\"",
            ));
        }
        if let Some(health) = &self.health {
            if let Some(url) = &health.url {
                health_url(url)?;
            }
            if health.fastcgi_script.is_some() && self.pool.is_none() {
                return Err(RefreshError::settings(
                    "[health] fastcgi_script needs the pool's address",
                    "set `fpm = \"unix:/run/php/php8.2-fpm.sock\"` in the [php] table",
                ));
            }
            if let Some(script) = &health.fastcgi_script {
                if script.split('/').any(|part| part == "..") {
                    return Err(RefreshError::settings(
                        format!("[health] fastcgi_script `{script}` leaves the release"),
                        "name a script inside the release, e.g. `public/health.php`",
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.wait_ms)
    }

    /// Whether the pool's OPcache keeps what it holds across the switch (so its room is
    /// checked, and `prewarm` is worth it): no step empties it or may (a command, unless
    /// `prewarm` is asked for too: then the command is taken to leave OPcache alone, as
    /// the README says, rather than to silently turn pre-warming off).
    pub fn keeps_opcache(&self) -> bool {
        let may_empty = |s: RefreshStrategy| {
            empties_opcache(s) || (s == RefreshStrategy::Command && !self.prewarms())
        };
        self.pool.is_some() && !self.strategies.iter().any(|s| may_empty(*s))
    }

    pub fn prewarms(&self) -> bool {
        self.strategies.contains(&RefreshStrategy::Prewarm)
    }
}

const MAX_PREWARM: Duration = Duration::from_secs(3600);

/// Strategies after which OPcache is empty.
fn empties_opcache(strategy: RefreshStrategy) -> bool {
    matches!(
        strategy,
        RefreshStrategy::OpcacheReset
            | RefreshStrategy::FpmReload
            | RefreshStrategy::ApacheGraceful
    )
}

fn strategy_name(strategy: RefreshStrategy) -> &'static str {
    match strategy {
        RefreshStrategy::OpcacheReset => "opcache-reset",
        RefreshStrategy::FpmReload => "fpm-reload",
        RefreshStrategy::ApacheGraceful => "apache-graceful",
        RefreshStrategy::Command => "command",
        RefreshStrategy::None => "none",
        RefreshStrategy::Prewarm => "prewarm",
    }
}

/// A health URL: the same rule as `verify --url` (plain `http://`, with a host).
pub(crate) fn health_url(text: &str) -> Result<url::Url, RefreshError> {
    cutover_verify::PageUrl::parse(text)
        .map(|page| page.url().clone())
        .map_err(|e| {
            RefreshError::settings(
                format!("[health] url {e}"),
                "write a plain-HTTP URL such as `http://127.0.0.1/health.php` (check the app where it runs, not through TLS)",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_urls_follow_the_rule_of_verify() {
        assert!(health_url("http://127.0.0.1:8080/health.php").is_ok());
        assert!(health_url("HTTP://localhost/").is_ok());
        assert!(health_url("http://[::1]:80/x").is_ok());
        for bad in [
            "https://example.org/",
            "http://[::1",
            "http:///x",
            "ftp://h/",
            "/x",
        ] {
            let err = health_url(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("[health] url `"),
                "{bad}: {err}"
            );
        }
    }

    /// A command may reset OPcache, so alone it turns the room check off; beside prewarm it
    /// is taken to leave OPcache alone (it used to turn pre-warming off without a word).
    #[test]
    fn a_command_turns_the_room_check_off_unless_prewarm_is_asked_for() {
        let php = PhpSettings {
            fpm: Some("unix:/run/php/php8.2-fpm.sock".into()),
            fpm_chroot: None,
        };
        let spec = |strategy: Vec<RefreshStrategy>| {
            let refresh = RefreshSettings {
                strategy,
                command: Some("php artisan cache:clear".into()),
                ..RefreshSettings::default()
            };
            RefreshSpec::from_settings(&php, &refresh, &HealthSettings::default()).unwrap()
        };
        use RefreshStrategy::{Command, None as Keep, Prewarm};
        assert!(spec(vec![Keep]).keeps_opcache());
        assert!(!spec(vec![Command]).keeps_opcache());
        assert!(spec(vec![Prewarm, Command]).keeps_opcache());
    }

    #[test]
    fn a_strategy_without_what_it_needs_is_refused() {
        let refresh = RefreshSettings {
            strategy: vec![RefreshStrategy::OpcacheReset],
            ..RefreshSettings::default()
        };
        let err = RefreshSpec::from_settings(
            &PhpSettings::default(),
            &refresh,
            &HealthSettings::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("opcache-reset"), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
    }

    #[test]
    fn a_spec_that_arrives_with_a_bad_value_is_refused() {
        let spec = RefreshSpec {
            health: Some(HealthSpec {
                url: Some("http://[::1".into()),
                fastcgi_script: None,
                expect_release: true,
                timeout_ms: 10,
            }),
            ..RefreshSpec::default()
        };
        assert!(spec.validate().is_err());
        let spec = RefreshSpec {
            pool: Some(PoolSpec {
                fpm: "tcp:nowhere".into(),
                chroot: None,
                script_dir: None,
                timeout_ms: 10,
            }),
            ..RefreshSpec::default()
        };
        assert!(spec.validate().is_err());
    }
}
