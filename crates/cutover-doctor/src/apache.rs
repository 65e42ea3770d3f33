//! Apache's configuration as Apache sees it: `-M` (loaded modules, so the MPM and
//! mod_php), `-S` (the main DocumentRoot and each virtual host with its file:line), and
//! the `DocumentRoot` inside each of those `<VirtualHost>` blocks.

use std::process::Command;

use crate::nginx::{At, Setting};
use crate::ReadError;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApacheConfig {
    /// The command run, e.g. `apache2 -f /etc/apache2/apache2.conf`.
    pub command: String,
    pub modules: Vec<String>,
    /// `prefork`, `event` or `worker`.
    pub mpm: Option<String>,
    /// PHP runs inside Apache (`php_module`, or `php7_module`…).
    pub mod_php: bool,
    /// PHP's FastCGI bridge is loaded (PHP runs in php-fpm).
    pub proxy_fcgi: bool,
    /// Apache refused to start: mod_php (not thread-safe) under a threaded MPM.
    pub threaded_mpm_refused_php: bool,
    /// The main `DocumentRoot` and each virtual host's.
    pub roots: Vec<Setting>,
}

/// Runs `BINARY [-f CONFIG] -M` and `-S`.
pub fn read(binary: &str, config: Option<&str>) -> Result<ApacheConfig, ReadError> {
    let mut base = vec![binary.to_string()];
    if let Some(config) = config {
        base.extend(["-f".to_string(), config.to_string()]);
    }
    let command = base.join(" ");
    let run = |flag: &str| -> Result<(bool, String), ReadError> {
        let output = Command::new(&base[0])
            .args(&base[1..])
            .arg(flag)
            .output()
            .map_err(|e| ReadError {
                what: format!("{command} {flag}"),
                message: e.to_string(),
            })?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok((output.status.success(), text))
    };
    let (ok, modules_text) = run("-M")?;
    if !ok {
        // Debian's PHP is not thread-safe: Apache refuses to start mod_php under event or
        // worker, so the config that has the hazard cannot even be listed.
        if modules_text.contains("threaded MPM") && modules_text.contains("PHP") {
            return Ok(ApacheConfig {
                command,
                modules: Vec::new(),
                mpm: Some("threaded".into()),
                mod_php: true,
                proxy_fcgi: false,
                threaded_mpm_refused_php: true,
                roots: Vec::new(),
            });
        }
        return Err(ReadError {
            what: format!("{command} -M"),
            message: crate::fpm::last_lines(&modules_text, 5),
        });
    }
    let modules = parse_modules(&modules_text);
    let (ok, vhosts_text) = run("-S")?;
    if !ok {
        return Err(ReadError {
            what: format!("{command} -S"),
            message: crate::fpm::last_lines(&vhosts_text, 5),
        });
    }
    let mpm = modules
        .iter()
        .find_map(|m| m.strip_prefix("mpm_")?.strip_suffix("_module"))
        .map(str::to_string);
    Ok(ApacheConfig {
        command,
        mod_php: modules
            .iter()
            .any(|m| m.starts_with("php") && m.ends_with("_module")),
        proxy_fcgi: modules.iter().any(|m| m == "proxy_fcgi_module"),
        mpm,
        modules,
        threaded_mpm_refused_php: false,
        roots: document_roots(&vhosts_text),
    })
}

/// ` name_module (shared)` lines of `-M`.
pub fn parse_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let (name, kind) = line.trim().split_once(' ')?;
            (kind == "(static)" || kind == "(shared)").then(|| name.to_string())
        })
        .collect()
}

/// The main DocumentRoot from `-S`, then each virtual host's, read from the file:line
/// `-S` names.
fn document_roots(text: &str) -> Vec<Setting> {
    let mut roots: Vec<Setting> = Vec::new();
    for line in text.lines() {
        if let Some(root) = line.trim().strip_prefix("Main DocumentRoot: ") {
            roots.push(Setting {
                value: root.trim().trim_matches('"').to_string(),
                at: At {
                    file: "(main server)".into(),
                    line: 0,
                },
            });
        }
        let Some(place) = line
            .rsplit_once('(')
            .and_then(|(_, rest)| rest.strip_suffix(')'))
        else {
            continue;
        };
        let Some((file, number)) = place.rsplit_once(':') else {
            continue;
        };
        let Ok(number) = number.parse::<usize>() else {
            continue;
        };
        let Ok(contents) = std::fs::read_to_string(file) else {
            continue;
        };
        if let Some(root) = vhost_root(&contents, number, file) {
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
    }
    roots
}

/// The `DocumentRoot` of the `<VirtualHost>` that starts on line `start` (1-based).
pub fn vhost_root(contents: &str, start: usize, file: &str) -> Option<Setting> {
    for (index, line) in contents.lines().enumerate().skip(start.saturating_sub(1)) {
        let line = line.trim();
        if line.to_ascii_lowercase().starts_with("</virtualhost") {
            return None;
        }
        let mut words = line.splitn(2, char::is_whitespace);
        if words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("DocumentRoot"))
        {
            let value = words.next()?.trim().trim_matches('"').to_string();
            return Some(Setting {
                value,
                at: At {
                    file: file.to_string(),
                    line: index + 1,
                },
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_vhost_roots() {
        let modules = parse_modules(
            "Loaded Modules:\n core_module (static)\n mpm_prefork_module (shared)\n php_module (shared)\n",
        );
        assert_eq!(modules, ["core_module", "mpm_prefork_module", "php_module"]);
        let conf = "Listen 80\n<VirtualHost *:80>\n  ServerName a\n  DocumentRoot \"/srv/a/current/public\"\n</VirtualHost>\n<VirtualHost *:81>\n</VirtualHost>\n";
        let root = vhost_root(conf, 2, "/x.conf").unwrap();
        assert_eq!(root.value, "/srv/a/current/public");
        assert_eq!(root.at.to_string(), "/x.conf:4");
        assert_eq!(vhost_root(conf, 6, "/x.conf"), None);
    }
}
