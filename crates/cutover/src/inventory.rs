//! `[inventory]`: hosts from an Ansible inventory, as `ansible-inventory --list` prints it.
//!
//! The JSON is another program's output, so everything in it is held to the rules of
//! `[hosts]` in cutover.toml (names, ssh destinations, paths) before any of it is used:
//! nothing from it reaches ssh as an option or a shell as text.
//!
//! The mapping, per host:
//! - `ansible_host` (else the inventory name), `ansible_port` and `ansible_user` make the
//!   ssh destination `user@host:port` (`user@[v6]:port` for an IPv6 address);
//!   `ansible_connection=local` makes it a host on this machine (no ssh);
//! - every group the host is in, directly or through `children`, is a role (`all` and
//!   `ungrouped` are not);
//! - `cutover_path` is the deploy path, `cutover_refresh` the `[refresh]` table.
//!
//! Hosts come in inventory order: depth first from `all` (a group's hosts, then its
//! children in order), then groups `all` does not reach, by name.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv6Addr;
use std::path::PathBuf;

use cutover_config::{HostSettings, RefreshSettings};
use serde_json::{Map, Value};

/// Groups every host is in, which say nothing about a host's role.
const NOT_ROLES: [&str; 2] = ["all", "ungrouped"];

/// At most this much JSON is read from the command.
pub const MAX_OUTPUT: usize = 16 << 20;

/// One host of the resolved fleet and where its settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub settings: HostSettings,
    pub from: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Inventory,
    /// In the inventory, with some of its values replaced by `[hosts]`.
    InventoryAndHosts,
    Hosts,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Inventory => "inventory",
            Origin::InventoryAndHosts => "inventory+hosts",
            Origin::Hosts => "hosts",
        }
    }
}

/// Why the command's output gives no hosts.
#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not JSON at all: the command printed something else (a traceback, a usage text).
    NotJson(String),
    /// JSON, but not an inventory cutover can use: a value that breaks a rule.
    Invalid(String),
}

/// The hosts of an inventory's JSON, in inventory order.
pub fn parse(json: &[u8]) -> Result<Vec<(String, HostSettings)>, Problem> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| Problem::NotJson(format!("not JSON: {e}")))?;
    let invalid = |message: String| Problem::Invalid(message);
    let Value::Object(top) = value else {
        return Err(invalid(
            "not an inventory: the JSON is not an object of groups".into(),
        ));
    };
    let hostvars = match top.get("_meta").map(|meta| meta.get("hostvars")) {
        Some(Some(Value::Object(vars))) => vars,
        Some(_) => return Err(invalid("`_meta.hostvars` is not an object".into())),
        // A dynamic inventory without `_meta` expects a `--host` call per host, which
        // cutover does not make: its hosts' variables would be silently missing.
        None => {
            return Err(invalid(
                "no `_meta.hostvars` (cutover does not ask a script `--host NAME` per host)".into(),
            ))
        }
    };
    let mut groups = BTreeMap::new();
    for (name, group) in &top {
        if name != "_meta" {
            groups.insert(name.as_str(), Group::read(name, group)?);
        }
    }

    let order = group_order(&groups);
    let mut hosts: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for group in &order {
        for host in &groups[group].hosts {
            if seen.insert(*host) {
                hosts.push(host);
            }
        }
    }
    let mut roles: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for group in order.iter().filter(|g| !NOT_ROLES.contains(g)) {
        let members = members(&groups, group);
        if members.is_empty() {
            continue;
        }
        if !cutover_config::is_host_name(group) {
            return Err(invalid(format!(
                "group {group:?} cannot be a role: letters, digits, `.`, `_` and `-` only"
            )));
        }
        for host in members {
            roles.entry(host).or_default().push(group.to_string());
        }
    }

    let empty = Map::new();
    hosts
        .into_iter()
        .map(|name| {
            if !cutover_config::is_host_name(name) {
                return Err(invalid(format!(
                    "host {name:?} cannot be a host name: letters, digits, `.`, `_` and `-` only, at most 64"
                )));
            }
            let vars = match hostvars.get(name) {
                None => &empty,
                Some(Value::Object(vars)) => vars,
                Some(_) => {
                    return Err(invalid(format!(
                        "host `{name}`: its `_meta.hostvars` entry is not an object"
                    )))
                }
            };
            let mut settings = host_settings(name, vars)
                .map_err(|why| invalid(format!("host `{name}`: {why}")))?;
            settings.roles = roles.remove(name).unwrap_or_default();
            Ok((name.to_string(), settings))
        })
        .collect()
}

/// `[hosts]` over the inventory: a key a `[hosts.NAME]` table sets replaces the
/// inventory's value for that host; hosts only in `[hosts]` follow the inventory's.
pub fn merge(
    inventory: Vec<(String, HostSettings)>,
    hosts: &BTreeMap<String, HostSettings>,
) -> Vec<Host> {
    let mut merged: Vec<Host> = inventory
        .into_iter()
        .map(|(name, mut settings)| {
            let from = match hosts.get(&name) {
                None => Origin::Inventory,
                Some(own) => {
                    overlay(&mut settings, own);
                    Origin::InventoryAndHosts
                }
            };
            Host {
                name,
                settings,
                from,
            }
        })
        .collect();
    let listed: HashSet<String> = merged.iter().map(|h| h.name.clone()).collect();
    for (name, settings) in hosts {
        if !listed.contains(name) {
            merged.push(Host {
                name: name.clone(),
                settings: settings.clone(),
                from: Origin::Hosts,
            });
        }
    }
    merged
}

fn overlay(settings: &mut HostSettings, own: &HostSettings) {
    let HostSettings {
        ssh,
        path,
        ssh_options,
        agent,
        agent_path,
        roles,
        php,
        refresh,
        health,
    } = own;
    if ssh.is_some() {
        settings.ssh.clone_from(ssh);
    }
    if path.is_some() {
        settings.path.clone_from(path);
    }
    if !ssh_options.is_empty() {
        settings.ssh_options.clone_from(ssh_options);
    }
    if agent.is_some() {
        settings.agent = *agent;
    }
    if agent_path.is_some() {
        settings.agent_path.clone_from(agent_path);
    }
    if !roles.is_empty() {
        settings.roles.clone_from(roles);
    }
    if php.is_some() {
        settings.php.clone_from(php);
    }
    if refresh.is_some() {
        settings.refresh.clone_from(refresh);
    }
    if health.is_some() {
        settings.health.clone_from(health);
    }
}

struct Group<'a> {
    hosts: Vec<&'a str>,
    children: Vec<&'a str>,
}

impl<'a> Group<'a> {
    /// `{"hosts": [...], "children": [...], "vars": {...}}`, or the older bare list of
    /// hosts. `vars` is not read: `ansible-inventory --list` has merged it into hostvars.
    fn read(name: &str, value: &'a Value) -> Result<Group<'a>, Problem> {
        let names = |key: &str, list: Option<&'a Value>| -> Result<Vec<&'a str>, Problem> {
            match list {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str().ok_or_else(|| {
                            Problem::Invalid(format!(
                                "group {name:?}: `{key}` holds {item}, not a name"
                            ))
                        })
                    })
                    .collect(),
                Some(other) => Err(Problem::Invalid(format!(
                    "group {name:?}: `{key}` is {other}, not a list of names"
                ))),
            }
        };
        match value {
            Value::Array(_) => Ok(Group {
                hosts: names("hosts", Some(value))?,
                children: Vec::new(),
            }),
            Value::Object(group) => Ok(Group {
                hosts: names("hosts", group.get("hosts"))?,
                children: names("children", group.get("children"))?,
            }),
            other => Err(Problem::Invalid(format!(
                "group {name:?} is {other}, not an object with `hosts` and `children`"
            ))),
        }
    }

    fn children(&self) -> &[&'a str] {
        &self.children
    }
}

/// Every group once: depth first from `all`, children in their order; then what `all`
/// does not reach, by name. A child that is no key of the JSON is an empty group
/// (`ansible-inventory` leaves empty groups such as `ungrouped` out).
fn group_order<'a>(groups: &BTreeMap<&'a str, Group<'a>>) -> Vec<&'a str> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    let roots = std::iter::once("all").chain(groups.keys().copied());
    for root in roots {
        // An explicit stack: a chain of nested groups cannot overflow ours.
        let mut stack = vec![root];
        while let Some(group) = stack.pop() {
            let Some(entry) = groups.get(group) else {
                continue;
            };
            if !seen.insert(group) {
                continue;
            }
            order.push(group);
            stack.extend(entry.children().iter().rev());
        }
    }
    order
}

/// The hosts in `group` and in its children, their children, ….
fn members<'a>(groups: &BTreeMap<&'a str, Group<'a>>, group: &'a str) -> Vec<&'a str> {
    let mut hosts = Vec::new();
    let mut seen_hosts = HashSet::new();
    let mut seen = HashSet::new();
    let mut stack = vec![group];
    while let Some(group) = stack.pop() {
        if !seen.insert(group) {
            continue;
        }
        let Some(entry) = groups.get(group) else {
            continue;
        };
        for host in &entry.hosts {
            if seen_hosts.insert(*host) {
                hosts.push(*host);
            }
        }
        stack.extend(entry.children().iter().rev());
    }
    hosts
}

/// One host's variables as `[hosts.NAME]` would say them (roles aside).
fn host_settings(name: &str, vars: &Map<String, Value>) -> Result<HostSettings, String> {
    let text = |key: &str| -> Result<Option<&str>, String> {
        match vars.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(format!("`{key}` is {other}, not a string")),
        }
    };
    let local = match text("ansible_connection")? {
        None | Some("ssh" | "smart" | "paramiko" | "paramiko_ssh") => false,
        Some("local") => true,
        Some(other) => {
            return Err(format!(
                "ansible_connection {other:?}: cutover reaches hosts over ssh, or `local`"
            ))
        }
    };
    let ssh = if local {
        None
    } else {
        let host = ssh_host(text("ansible_host")?.unwrap_or(name))?;
        let user = match text("ansible_user")? {
            Some(user) if cutover_core::writable::is_user_name(user) => format!("{user}@"),
            Some(user) => return Err(format!("ansible_user {user:?} is not a user name")),
            None => String::new(),
        };
        let port = port(vars.get("ansible_port"))?.map_or(String::new(), |p| format!(":{p}"));
        Some(format!("{user}{host}{port}"))
    };
    let path = match text("cutover_path")? {
        None => None,
        Some(path) if path.starts_with('/') && !path.contains('\0') => Some(PathBuf::from(path)),
        Some(path) => {
            return Err(format!(
            "cutover_path {path:?} is not absolute: a host's deploy path is, e.g. `/var/www/app`"
        ))
        }
    };
    let refresh = match vars.get("cutover_refresh") {
        None | Some(Value::Null) => None,
        Some(table @ Value::Object(_)) => Some(
            serde_json::from_value::<RefreshSettings>(table.clone())
                .map_err(|e| format!("cutover_refresh: {e}"))?,
        ),
        Some(other) => {
            return Err(format!(
                "cutover_refresh is {other}, not a table like [refresh] (`{{\"strategy\": [\"fpm-reload\"]}}`)"
            ))
        }
    };
    Ok(HostSettings {
        ssh,
        path,
        refresh,
        ..HostSettings::default()
    })
}

/// A DNS name, an IPv4 address or an IPv6 address (written in brackets, so a port can
/// follow it): nothing ssh could read as an option, a user or a second argument.
fn ssh_host(host: &str) -> Result<String, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let (address, zone) = match bare.split_once('%') {
        Some((address, zone)) => (address, Some(zone)),
        None => (bare, None),
    };
    let zone_ok = zone.is_none_or(|z| {
        !z.is_empty() && z.len() <= 15 && z.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
    });
    if address.parse::<Ipv6Addr>().is_ok() && zone_ok {
        return Ok(format!("[{bare}]"));
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if name_ok {
        Ok(host.to_string())
    } else {
        Err(format!(
            "ansible_host {host:?} is not a host name or an IP address"
        ))
    }
}

/// A number or the digits of one (YAML and INI inventories give either), 1 to 65535.
fn port(value: Option<&Value>) -> Result<Option<u16>, String> {
    let port = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok()
        }
        Some(_) => None,
    };
    match port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) {
        Some(port) => Ok(Some(port)),
        None => Err(format!(
            "ansible_port {} is not a TCP port (1 to 65535)",
            value.map_or(String::new(), Value::to_string)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_config::RefreshStrategy;

    fn hosts(json: &str) -> Vec<(String, HostSettings)> {
        parse(json.as_bytes()).unwrap()
    }

    fn invalid(json: &str) -> String {
        match parse(json.as_bytes()) {
            Err(Problem::Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// What `ansible-inventory --list` printed for an INI file with [web], [db],
    /// [prod:children] web db, [prod:vars] and a host with ansible_connection=local.
    const LISTED: &str = r#"{
        "_meta": {"hostvars": {
            "db1": {"ansible_host": "::1", "cutover_refresh": {"strategy": ["fpm-reload"],
                    "fpm_pidfile": "/run/php/php8.2-fpm.pid"}},
            "local1": {"ansible_connection": "local", "cutover_path": "/srv/here"},
            "web1": {"ansible_host": "10.0.0.5", "ansible_port": 2222, "ansible_user": "deploy",
                     "cutover_path": "/srv/a"},
            "web2": {"ansible_port": "22"}
        }},
        "all": {"children": ["ungrouped", "prod", "other"]},
        "db": {"hosts": ["db1"]},
        "other": {"hosts": ["local1"]},
        "prod": {"children": ["web", "db"]},
        "web": {"hosts": ["web1", "web2"]}
    }"#;

    #[test]
    fn maps_ansible_variables_to_hosts() {
        let hosts = hosts(LISTED);
        let names: Vec<&str> = hosts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web1", "web2", "db1", "local1"], "inventory order");
        let get = |name: &str| &hosts.iter().find(|(n, _)| n == name).unwrap().1;

        assert_eq!(get("web1").ssh.as_deref(), Some("deploy@10.0.0.5:2222"));
        assert_eq!(
            get("web1").path.as_deref(),
            Some(std::path::Path::new("/srv/a"))
        );
        assert_eq!(get("web1").roles, ["prod", "web"]);
        assert_eq!(
            get("web2").ssh.as_deref(),
            Some("web2:22"),
            "the name as host"
        );
        assert_eq!(get("web2").path, None);
        assert_eq!(get("db1").ssh.as_deref(), Some("[::1]"));
        assert_eq!(get("db1").roles, ["prod", "db"]);
        let refresh = get("db1").refresh.as_ref().unwrap();
        assert_eq!(refresh.strategy, [RefreshStrategy::FpmReload]);
        assert_eq!(
            refresh.fpm_pidfile.as_deref(),
            Some(std::path::Path::new("/run/php/php8.2-fpm.pid"))
        );
        assert_eq!(
            get("local1").ssh,
            None,
            "ansible_connection=local: this machine"
        );
        assert_eq!(get("local1").roles, ["other"]);
    }

    #[test]
    fn ipv6_destinations_keep_user_and_port_apart() {
        let json = r#"{"_meta": {"hostvars": {"h": {"ansible_host": "[2001:db8::7]",
            "ansible_user": "deploy", "ansible_port": 2200}}}, "all": {"hosts": ["h"]}}"#;
        assert_eq!(
            hosts(json)[0].1.ssh.as_deref(),
            Some("deploy@[2001:db8::7]:2200")
        );
    }

    #[test]
    fn order_is_depth_first_from_all_and_groups_nest() {
        let json = r#"{"_meta": {"hostvars": {}},
            "all": {"hosts": ["z0"], "children": ["b", "a"]},
            "a": {"hosts": ["a1", "shared"]},
            "b": {"hosts": ["b1"], "children": ["c"]},
            "c": {"hosts": ["shared"], "children": ["b"]},
            "loose": ["l1"]}"#;
        let hosts = hosts(json);
        let names: Vec<&str> = hosts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["z0", "b1", "shared", "a1", "l1"]);
        let shared = &hosts[2].1;
        assert_eq!(
            shared.roles,
            ["b", "c", "a"],
            "every group it is in, through children"
        );
        assert!(hosts[0].1.roles.is_empty(), "`all` is no role");
    }

    #[test]
    fn hostile_values_are_refused_naming_the_host() {
        let with = |vars: &str| {
            format!(r#"{{"_meta": {{"hostvars": {{"h1": {vars}}}}}, "all": {{"hosts": ["h1"]}}}}"#)
        };
        for (vars, expected) in [
            (
                r#"{"ansible_user": "-oProxyCommand=touch /tmp/x"}"#,
                "ansible_user",
            ),
            (r#"{"ansible_user": "a b"}"#, "ansible_user"),
            (r#"{"ansible_host": "-oProxyCommand=x"}"#, "ansible_host"),
            (r#"{"ansible_host": "evil host"}"#, "ansible_host"),
            (r#"{"ansible_host": "a@b"}"#, "ansible_host"),
            (r#"{"ansible_host": "[::1]:22"}"#, "ansible_host"),
            (r#"{"ansible_host": 7}"#, "ansible_host"),
            (r#"{"ansible_port": 99999999999999999999}"#, "ansible_port"),
            (r#"{"ansible_port": 65536}"#, "ansible_port"),
            (r#"{"ansible_port": 0}"#, "ansible_port"),
            (r#"{"ansible_port": -22}"#, "ansible_port"),
            (r#"{"ansible_port": "22 -oX"}"#, "ansible_port"),
            (r#"{"ansible_connection": "docker"}"#, "ansible_connection"),
            (r#"{"cutover_path": "relative/path"}"#, "cutover_path"),
            (r#"{"cutover_path": ["/a"]}"#, "cutover_path"),
            (
                r#"{"cutover_refresh": {"strategy": ["reboot"]}}"#,
                "cutover_refresh",
            ),
            (r#"{"cutover_refresh": {"stratgy": []}}"#, "cutover_refresh"),
            (r#"{"cutover_refresh": "fpm-reload"}"#, "cutover_refresh"),
            (r#""vars""#, "not an object"),
        ] {
            let message = invalid(&with(vars));
            assert!(message.starts_with("host `h1`: "), "{vars}: {message}");
            assert!(message.contains(expected), "{vars}: {message}");
        }
    }

    #[test]
    fn names_that_are_no_host_names_are_refused() {
        for name in [
            "web 1",
            "-oProxyCommand=x",
            "a/b",
            "",
            "x\u{7}",
            &"h".repeat(65),
        ] {
            let json = serde_json::json!({"_meta": {"hostvars": {}}, "all": {"hosts": [name]}});
            let message = invalid(&json.to_string());
            assert!(message.contains(&format!("{name:?}")), "{message}");
        }
        let json = r#"{"_meta": {"hostvars": {}}, "all": {"children": ["bad group"]},
            "bad group": {"hosts": ["h"]}}"#;
        assert!(invalid(json).contains("\"bad group\" cannot be a role"));
    }

    #[test]
    fn shapes_that_are_no_inventory_are_refused() {
        assert!(matches!(
            parse(b"Traceback (most recent call last)"),
            Err(Problem::NotJson(_))
        ));
        assert!(matches!(parse(b""), Err(Problem::NotJson(_))));
        assert!(invalid("[1, 2]").contains("not an object"));
        assert!(invalid(r#"{"all": {"hosts": ["a"]}}"#).contains("no `_meta.hostvars`"));
        assert!(invalid(r#"{"_meta": {}, "all": {}}"#).contains("`_meta.hostvars` is not"));
        assert!(invalid(r#"{"_meta": {"hostvars": {}}, "web": 5}"#).contains("group \"web\""));
        let json = r#"{"_meta": {"hostvars": {}}, "web": {"hosts": [1]}}"#;
        assert!(invalid(json).contains("`hosts` holds 1"));
        let json = r#"{"_meta": {"hostvars": {}}, "web": {"children": "db"}}"#;
        assert!(invalid(json).contains("`children` is"));
        // No hosts at all is a valid inventory; the settings say what that means.
        assert!(hosts(r#"{"_meta": {"hostvars": {}}, "all": {}}"#).is_empty());
    }

    #[test]
    fn hosts_tables_replace_what_they_set_and_add_hosts() {
        let inventory = hosts(LISTED);
        let mut own = BTreeMap::new();
        own.insert(
            "web1".to_string(),
            HostSettings {
                path: Some("/srv/override".into()),
                roles: vec!["canary".into()],
                ..HostSettings::default()
            },
        );
        own.insert(
            "extra".to_string(),
            HostSettings {
                ssh: Some("extra.example".into()),
                ..HostSettings::default()
            },
        );
        let merged = merge(inventory, &own);
        let names: Vec<&str> = merged.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["web1", "web2", "db1", "local1", "extra"]);
        let web1 = &merged[0];
        assert_eq!(web1.from, Origin::InventoryAndHosts);
        assert_eq!(
            web1.settings.path.as_deref(),
            Some(std::path::Path::new("/srv/override"))
        );
        assert_eq!(web1.settings.roles, ["canary"]);
        assert_eq!(
            web1.settings.ssh.as_deref(),
            Some("deploy@10.0.0.5:2222"),
            "what [hosts] leaves out stays the inventory's"
        );
        assert_eq!(merged[1].from, Origin::Inventory);
        assert_eq!(merged[4].from, Origin::Hosts);
    }
}
