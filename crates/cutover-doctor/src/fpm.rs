//! php-fpm's own configuration, as php-fpm parsed it: the master's config file comes from
//! its process title, its binary from `/proc/<pid>/exe`, and `php-fpm -tt -y FILE` dumps
//! every setting with defaults filled in — no hand-parsing of include files and sections.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ReadError;

/// One section of php-fpm's parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FpmSection {
    pub name: String,
    pub settings: BTreeMap<String, String>,
}

/// What `php-fpm -tt` printed for the running master.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FpmConfig {
    pub master_pid: u32,
    pub binary: String,
    pub config: String,
    pub global: BTreeMap<String, String>,
    pub pools: Vec<FpmSection>,
}

impl FpmConfig {
    /// `process_control_timeout` in seconds (php-fpm prints it with a unit: `0s`, `10s`).
    pub fn process_control_timeout(&self) -> Option<u64> {
        parse_seconds(self.global.get("process_control_timeout")?)
    }
}

/// Seconds from php-fpm's time syntax: `10`, `10s`, `2m`, `1h`, `1d`.
pub fn parse_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    Some(match unit.trim() {
        "" | "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        "d" => number * 86400,
        _ => return None,
    })
}

/// Parses `php-fpm -tt` output: `[date] NOTICE: [section]` and `[date] NOTICE: \tkey = value`.
pub fn parse_dump(text: &str) -> (BTreeMap<String, String>, Vec<FpmSection>) {
    let mut global = BTreeMap::new();
    let mut pools: Vec<FpmSection> = Vec::new();
    let mut in_global = false;
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("NOTICE: ") else {
            continue;
        };
        let rest = rest.trim();
        if let Some(name) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            in_global = name == "global";
            if !in_global {
                pools.push(FpmSection {
                    name: name.to_string(),
                    settings: BTreeMap::new(),
                });
            }
            continue;
        }
        let Some((key, value)) = rest.split_once(" = ") else {
            continue;
        };
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        if in_global {
            global.insert(key, value);
        } else if let Some(pool) = pools.last_mut() {
            pool.settings.insert(key, value);
        }
    }
    (global, pools)
}

/// Reads the configuration of the php-fpm master named by `pidfile`. `php_version` (from
/// the pool, `8.2.7`) finds the binary when `/proc/<pid>/exe` cannot be read.
pub fn read(pidfile: &Path, php_version: Option<&str>) -> Result<FpmConfig, ReadError> {
    let unreadable = |message: String| ReadError {
        what: format!("php-fpm pid file {}", pidfile.display()),
        message,
    };
    let text = std::fs::read_to_string(pidfile).map_err(|e| unreadable(e.to_string()))?;
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|_| unreadable(format!("no pid in it: {:?}", text.trim())))?;
    let title = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|e| unreadable(format!("pid {pid} is not running ({e})")))?;
    let title = String::from_utf8_lossy(&title).replace('\0', " ");
    let config = title
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map(|(config, _)| config.to_string())
        .ok_or_else(|| {
            unreadable(format!(
                "pid {pid} is not a php-fpm master naming its config: {:?}",
                title.trim()
            ))
        })?;
    let binary = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| clean_exe(&p))
        .or_else(|| {
            let version = php_version?;
            let mut parts = version.split('.');
            let short = format!("{}.{}", parts.next()?, parts.next()?);
            Some(PathBuf::from(format!("/usr/sbin/php-fpm{short}")))
        })
        .unwrap_or_else(|| PathBuf::from("php-fpm"));
    let output = Command::new(&binary)
        .arg("-tt")
        .arg("-y")
        .arg(&config)
        .output()
        .map_err(|e| ReadError {
            what: format!("{} -tt -y {config}", binary.display()),
            message: e.to_string(),
        })?;
    // php-fpm writes the dump to stderr (its log), some builds to stdout.
    let mut dump = String::from_utf8_lossy(&output.stderr).into_owned();
    dump.push_str(&String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        return Err(ReadError {
            what: format!("{} -tt -y {config}", binary.display()),
            message: format!("exited with {}: {}", output.status, last_lines(&dump, 5)),
        });
    }
    let (global, pools) = parse_dump(&dump);
    Ok(FpmConfig {
        master_pid: pid,
        binary: binary.display().to_string(),
        config,
        global,
        pools,
    })
}

/// `/proc/<pid>/exe` of a binary replaced by a package upgrade reads `… (deleted)`.
fn clean_exe(path: &Path) -> PathBuf {
    let text = path.display().to_string();
    PathBuf::from(text.trim_end_matches(" (deleted)"))
}

pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tt_dump() {
        let dump = "[23-Nov-2026 13:12:51] NOTICE: [global]
[23-Nov-2026 13:12:51] NOTICE: \tpid = /run/php.pid
[23-Nov-2026 13:12:51] NOTICE: \tprocess_control_timeout = 10s
[23-Nov-2026 13:12:51] NOTICE:  
[23-Nov-2026 13:12:51] NOTICE: [www]
[23-Nov-2026 13:12:51] NOTICE: \tpm = static
[23-Nov-2026 13:12:51] NOTICE: \tchroot = undefined
[23-Nov-2026 13:12:51] NOTICE: \tphp_admin_value[open_basedir] = /srv
[23-Nov-2026 13:12:51] NOTICE: configuration file /x.conf test is successful
";
        let (global, pools) = parse_dump(dump);
        assert_eq!(global["process_control_timeout"], "10s");
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].name, "www");
        assert_eq!(pools[0].settings["pm"], "static");
        assert_eq!(pools[0].settings["php_admin_value[open_basedir]"], "/srv");
    }

    #[test]
    fn seconds_with_units() {
        assert_eq!(parse_seconds("0s"), Some(0));
        assert_eq!(parse_seconds("10"), Some(10));
        assert_eq!(parse_seconds("2m"), Some(120));
        assert_eq!(parse_seconds("x"), None);
    }
}
