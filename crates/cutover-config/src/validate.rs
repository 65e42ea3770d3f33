//! Rules the types cannot express, each naming the value that breaks it.

use std::path::{Component, Path, PathBuf};

use toml_edit::ImDocument;

use crate::diagnose::{item_at, Segment};
use crate::{Config, ConfigError};

#[derive(Debug)]
pub(crate) struct Problem {
    at: Vec<Segment>,
    message: String,
    hint: Option<String>,
}

impl Problem {
    fn new(at: &[&str], index: Option<usize>, message: String, hint: Option<String>) -> Self {
        let mut at: Vec<Segment> = at
            .iter()
            .map(|key| Segment::Key((*key).to_owned()))
            .collect();
        at.extend(index.map(Segment::Index));
        Self { at, message, hint }
    }

    pub(crate) fn into_error(self, document: &ImDocument<&str>, origin: &Path) -> ConfigError {
        let span = item_at(document, &self.at).and_then(toml_edit::Item::span);
        ConfigError::at(
            origin,
            document.raw(),
            span.unwrap_or(0..0),
            self.message,
            self.hint,
        )
    }
}

pub(crate) fn check(config: &Config) -> Result<(), Problem> {
    let deploy = &config.deploy;
    for (key, path) in [("path", &deploy.path), ("source", &deploy.source)] {
        if path
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            let message = format!("`deploy.{key}` is empty");
            return Err(Problem::new(&["deploy", key], None, message, None));
        }
    }
    git(config)?;
    if deploy.keep_releases == Some(0) {
        let message = "`deploy.keep_releases` must be at least 1".to_owned();
        let hint = format!("leave it out to keep {}", crate::DEFAULT_KEEP_RELEASES);
        return Err(Problem::new(
            &["deploy", "keep_releases"],
            None,
            message,
            Some(hint),
        ));
    }
    for (index, dir) in deploy.asset_dirs.iter().flatten().enumerate() {
        inside_release(dir).map_err(|(message, hint)| {
            Problem::new(&["deploy", "asset_dirs"], Some(index), message, hint)
        })?;
    }
    for (index, pattern) in deploy.exclude.iter().enumerate() {
        inside_release(pattern).map_err(|(message, hint)| {
            Problem::new(&["deploy", "exclude"], Some(index), message, hint)
        })?;
    }
    if let Some(file) = &deploy.release_file {
        let at = &["deploy", "release_file"];
        inside_release(file).map_err(|(message, hint)| Problem::new(at, None, message, hint))?;
        if file.ends_with('/') {
            let message = format!("`{file}` names a directory; the release file must be a file");
            return Err(Problem::new(at, None, message, None));
        }
    }
    for (index, path) in deploy.writable.iter().enumerate() {
        inside_release(path).map_err(|(message, hint)| {
            Problem::new(&["deploy", "writable"], Some(index), message, hint)
        })?;
    }
    if let Some(user) = &deploy.writable_user {
        if !crate::is_user_name(user) {
            let message = format!("`{user}` is not a user name");
            let hint = "name the user php-fpm runs the pool as (`user =` in its pool config), e.g. `www-data`";
            return Err(Problem::new(
                &["deploy", "writable_user"],
                None,
                message,
                Some(hint.to_owned()),
            ));
        }
    }
    shared(config)?;
    hosts(config)?;
    notify(config)?;
    agent(config)?;
    if let Some(text) = &config.hooks.timeout {
        check_timeout(text).map_err(|(message, hint)| {
            Problem::new(&["hooks", "timeout"], None, message, Some(hint))
        })?;
    }
    inventory(config)?;
    if let Some(index) = config.build.run.iter().position(|c| c.trim().is_empty()) {
        let message = "empty command in `build.run`".to_owned();
        return Err(Problem::new(&["build", "run"], Some(index), message, None));
    }
    hooks(config)
}

fn check_timeout(text: &str) -> Result<(), (String, String)> {
    if crate::hooks::parse_timeout(Some(text)).is_some() {
        return Ok(());
    }
    Err((
        format!("`{text}` is not a duration from 1ms to 24h"),
        "write it like `90s`, `10m` or `1h`".to_owned(),
    ))
}

fn inventory(config: &Config) -> Result<(), Problem> {
    let inventory = &config.inventory;
    if inventory
        .command
        .as_ref()
        .is_some_and(|c| c.trim().is_empty())
    {
        let message = "`inventory.command` is empty".to_owned();
        let hint = "e.g. `ansible-inventory -i hosts.ini --list`";
        return Err(Problem::new(
            &["inventory", "command"],
            None,
            message,
            Some(hint.to_owned()),
        ));
    }
    if let Some(text) = &inventory.timeout {
        check_timeout(text).map_err(|(message, hint)| {
            Problem::new(&["inventory", "timeout"], None, message, Some(hint))
        })?;
    }
    Ok(())
}

/// Every hook entry: a command, a timeout that is one, roles some host has (with an
/// `[inventory]`, hosts and their roles are known only once it ran: the binary checks
/// roles then).
fn hooks(config: &Config) -> Result<(), Problem> {
    let host_roles: Vec<&String> = config.hosts.values().flat_map(|h| &h.roles).collect();
    for (phase, entries) in config.hooks.phases() {
        for (index, entry) in entries.iter().enumerate() {
            let at = &["hooks", phase];
            let problem = |message: String, hint: Option<String>| {
                Problem::new(at, Some(index), message, hint)
            };
            if entry.run.trim().is_empty() {
                return Err(problem(format!("empty command in `hooks.{phase}`"), None));
            }
            if let Some(text) = &entry.timeout {
                check_timeout(text).map_err(|(m, h)| problem(m, Some(h)))?;
            }
            for role in &entry.roles {
                if config.hosts.is_empty()
                    || config.inventory.command.is_some()
                    || host_roles.contains(&role)
                {
                    continue;
                }
                let mut known: Vec<&str> = host_roles.iter().map(|r| r.as_str()).collect();
                known.sort_unstable();
                known.dedup();
                let hint = match known.as_slice() {
                    [] => "give hosts roles: `roles = [\"web\"]` in [hosts.NAME]".to_owned(),
                    known => format!("roles of [hosts]: {}", known.join(", ")),
                };
                return Err(problem(
                    format!("no host has the role `{role}` of this hook"),
                    Some(hint),
                ));
            }
        }
    }
    Ok(())
}

/// The webhook must be a URL ureq can POST to, and one attempt must stay short.
fn notify(config: &Config) -> Result<(), Problem> {
    let notify = &config.notify;
    if let Some(webhook) = &notify.webhook {
        crate::webhook_url(webhook).map_err(|why| {
            let message = format!("`notify.webhook`: {why}");
            let hint = "e.g. `https://hooks.slack.com/services/…`";
            Problem::new(&["notify", "webhook"], None, message, Some(hint.into()))
        })?;
    }
    if let Some(seconds) = notify.timeout_seconds {
        if !(1..=crate::MAX_NOTIFY_TIMEOUT_SECONDS).contains(&seconds) {
            let message = format!(
                "`notify.timeout_seconds` must be from 1 to {}",
                crate::MAX_NOTIFY_TIMEOUT_SECONDS
            );
            let hint = format!("leave it out for {}", crate::DEFAULT_NOTIFY_TIMEOUT_SECONDS);
            return Err(Problem::new(
                &["notify", "timeout_seconds"],
                None,
                message,
                Some(hint),
            ));
        }
    }
    Ok(())
}

/// `repository` and `branch` go to git as arguments: nothing git could read as an option.
fn git(config: &Config) -> Result<(), Problem> {
    let deploy = &config.deploy;
    if let Some(repository) = &deploy.repository {
        let at = &["deploy", "repository"];
        if repository.trim().is_empty() {
            let message = "`deploy.repository` is empty".to_owned();
            return Err(Problem::new(at, None, message, None));
        }
        if repository.starts_with('-') || repository.chars().any(char::is_control) {
            let message = format!("`{repository}` is not a git repository URL or path");
            let hint = "e.g. `git@github.com:acme/shop.git`, `https://…` or `/srv/git/shop.git`";
            return Err(Problem::new(at, None, message, Some(hint.into())));
        }
    }
    if let Some(branch) = &deploy.branch {
        let bad = branch.is_empty()
            || branch.starts_with('-')
            || branch.contains("..")
            || branch.ends_with('/')
            || branch.ends_with(".lock")
            || branch
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
        if bad {
            let message = format!("`{branch}` is not a git ref name");
            let hint = "a branch, tag or commit, e.g. `main` or `v1.4.2`";
            return Err(Problem::new(
                &["deploy", "branch"],
                None,
                message,
                Some(hint.into()),
            ));
        }
    }
    Ok(())
}

/// Host names appear in `--host`, output and file names; destinations go to ssh as an
/// argument, where a leading `-` would be read as an option.
fn hosts(config: &Config) -> Result<(), Problem> {
    for (name, host) in &config.hosts {
        if let Some(index) = host.roles.iter().position(|r| !crate::is_host_name(r)) {
            let message = format!(
                "role `{}` may hold only letters, digits, `.`, `_` and `-`",
                host.roles[index]
            );
            return Err(Problem::new(
                &["hosts", name, "roles"],
                Some(index),
                message,
                None,
            ));
        }
        if !crate::is_host_name(name) {
            let message =
                format!("host name `{name}` may hold only letters, digits, `.`, `_` and `-`");
            return Err(Problem::new(&["hosts", name], None, message, None));
        }
        if let Some(ssh) = &host.ssh {
            if ssh.trim().is_empty() || ssh.starts_with('-') || ssh.contains(char::is_whitespace) {
                let message = format!("`{ssh}` is not an ssh destination");
                let hint = "write `user@host`, `user@host:22` or a Host alias of your ssh_config";
                return Err(Problem::new(
                    &["hosts", name, "ssh"],
                    None,
                    message,
                    Some(hint.into()),
                ));
            }
        }
        if let Some(path) = &host.path {
            if !path.is_absolute() {
                let message = format!("`{}` is not absolute", path.display());
                let hint = "a host's deploy path is absolute, e.g. `/var/www/app`";
                return Err(Problem::new(
                    &["hosts", name, "path"],
                    None,
                    message,
                    Some(hint.into()),
                ));
            }
        }
    }
    Ok(())
}

/// `agent_path` goes to the host's shell (quoted) and is only read with `installed`;
/// `agent_binaries` keys are what `uname -sm` prints there.
fn agent(config: &Config) -> Result<(), Problem> {
    use crate::AgentMode;
    let ssh = &config.ssh;
    let levels = std::iter::once((
        vec!["ssh".to_owned()],
        "[ssh]".to_owned(),
        ssh.agent,
        &ssh.agent_path,
    ))
    .chain(config.hosts.iter().map(|(name, host)| {
        (
            vec!["hosts".to_owned(), name.clone()],
            format!("[hosts.{name}]"),
            host.agent.or(ssh.agent),
            &host.agent_path,
        )
    }));
    for (at, table, mode, path) in levels {
        let Some(path) = path else { continue };
        let mut at: Vec<&str> = at.iter().map(String::as_str).collect();
        at.push("agent_path");
        if !path.starts_with('/') || path.chars().any(char::is_control) {
            let message = format!("`{path}` is not an absolute path");
            let hint = "the agent's path on the host, e.g. `/usr/local/bin/cutover`";
            return Err(Problem::new(&at, None, message, Some(hint.into())));
        }
        if mode.unwrap_or_default() != AgentMode::Installed {
            let message = "`agent_path` is only used with `agent = \"installed\"`".to_owned();
            let hint = format!("set `agent = \"installed\"` in {table}, or leave out `agent_path`");
            return Err(Problem::new(&at, None, message, Some(hint)));
        }
    }
    if ssh.agent_binaries.len() > crate::MAX_AGENT_BINARIES {
        let message = format!(
            "{} agent binaries; at most {} platforms are supported",
            ssh.agent_binaries.len(),
            crate::MAX_AGENT_BINARIES
        );
        return Err(Problem::new(
            &["ssh", "agent_binaries"],
            None,
            message,
            None,
        ));
    }
    for (platform, file) in &ssh.agent_binaries {
        let at = &["ssh", "agent_binaries", platform.as_str()];
        if !is_platform(platform) {
            let message = format!("`{platform}` is not a platform as `uname -sm` prints it");
            let hint =
                "write the host's `uname -sm`, e.g. `\"Linux x86_64\"` or `\"Linux aarch64\"`";
            return Err(Problem::new(at, None, message, Some(hint.into())));
        }
        if file.as_os_str().is_empty() {
            let message = format!("the agent for `{platform}` is an empty path");
            return Err(Problem::new(at, None, message, None));
        }
    }
    Ok(())
}

/// `Linux x86_64`: a kernel name and a machine, one space apart.
fn is_platform(text: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 32
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    matches!(text.split_once(' '), Some((os, machine)) if word(os) && word(machine))
}

/// Every shared entry becomes one symlink in the release, so two entries may not claim
/// the same path, nor may one sit inside another that is already linked whole.
fn shared(config: &Config) -> Result<(), Problem> {
    let entries = [
        ("dirs", &config.shared.dirs),
        ("files", &config.shared.files),
    ]
    .into_iter()
    .flat_map(|(key, list)| {
        list.iter()
            .enumerate()
            .map(move |(index, entry)| (key, index, entry))
    });
    let mut seen: Vec<(&str, &String, PathBuf)> = Vec::new();
    for (key, index, entry) in entries {
        let problem = |message, hint| Problem::new(&["shared", key], Some(index), message, hint);
        let normal = inside_release(entry).map_err(|(message, hint)| problem(message, hint))?;
        for (earlier_key, earlier, earlier_normal) in &seen {
            let earlier_at = format!("shared.{earlier_key}");
            if normal == *earlier_normal {
                let message = format!("`{entry}` is listed twice");
                let hint = format!("it is already in `{earlier_at}` as `{earlier}`");
                return Err(problem(message, Some(hint)));
            }
            let (inner, outer) = if normal.starts_with(earlier_normal) {
                (entry.as_str(), earlier.as_str())
            } else if earlier_normal.starts_with(&normal) {
                (earlier.as_str(), entry.as_str())
            } else {
                continue;
            };
            let message = format!("`{inner}` is inside `{outer}`, which is shared whole");
            let hint = format!("keep only `{outer}`; everything in it persists already");
            return Err(problem(message, Some(hint)));
        }
        seen.push((key, entry, normal));
    }
    Ok(())
}

/// A path that stays inside the release directory, in normal form (`./a//b/` is `a/b`).
fn inside_release(entry: &str) -> Result<PathBuf, (String, Option<String>)> {
    let path = Path::new(entry);
    if entry.starts_with(['/', '\\']) || path.is_absolute() {
        let relative = entry.trim_start_matches(['/', '\\']);
        let hint = (!relative.is_empty())
            .then(|| format!("write it relative to the release root: `{relative}`"));
        return Err((format!("`{entry}` is absolute"), hint));
    }
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                let message = format!("`{entry}` leaves the release with `..`");
                let hint = "paths here are relative to the release root and stay inside it";
                return Err((message, Some(hint.to_owned())));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err((format!("`{entry}` is absolute"), None));
            }
        }
    }
    if normal.as_os_str().is_empty() {
        let message = format!("`{entry}` names no path inside the release");
        return Err((
            message,
            Some("name a file or directory, e.g. `storage`".to_owned()),
        ));
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::dotted;

    #[test]
    fn normalizes_paths_inside_the_release() {
        assert_eq!(inside_release("./var//log/").unwrap(), Path::new("var/log"));
        assert_eq!(inside_release(".env").unwrap(), Path::new(".env"));
        assert!(inside_release("a/../b").is_err());
        assert!(inside_release("/a").is_err());
        assert!(inside_release("./").is_err());
        assert!(inside_release("").is_err());
    }

    #[test]
    fn dotted_paths_read_like_toml() {
        let at = Problem::new(&["shared", "dirs"], Some(2), String::new(), None).at;
        assert_eq!(dotted(&at), "shared.dirs[2]");
    }
}
