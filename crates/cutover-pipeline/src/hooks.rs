//! The hooks of cutover.toml as the orchestrator uses them: which command runs on which
//! host (`once`, `roles`), with which limit.

use std::time::Duration;

use cutover_config::{HookEntry, HookSettings};
use cutover_core::hooks::{HookCommand, HookPhase};

/// `[hooks]`'s entries for `phase`, in the order cutover.toml lists them.
pub fn entries(hooks: &HookSettings, phase: HookPhase) -> &[HookEntry] {
    match phase {
        HookPhase::BeforeSwitch => &hooks.before_switch,
        HookPhase::AfterSwitch => &hooks.after_switch,
        HookPhase::OnFailure => &hooks.on_failure,
        HookPhase::AfterRollback => &hooks.after_rollback,
    }
}

/// Whether `entry` runs on a host with `roles`: every host when it names none.
fn fits(entry: &HookEntry, roles: &[String]) -> bool {
    entry.roles.is_empty() || entry.roles.iter().any(|r| roles.contains(r))
}

/// What each host runs of one phase: first the `once` commands, each on its one host,
/// then every host's own.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PhasePlan {
    /// (host index, command), in the order the entries are listed.
    pub once: Vec<(usize, HookCommand)>,
    /// Per host, in the order the entries are listed.
    pub each: Vec<Vec<HookCommand>>,
    /// `once` commands no host taking part has a role for.
    pub nowhere: Vec<String>,
}

impl PhasePlan {
    /// `hosts` holds each host's roles, in `[hosts]` order; `None` for a host that takes
    /// no part (failed, or not concerned). An entry without its own timeout gets `timeout`.
    pub fn new(entries: &[HookEntry], timeout: Duration, hosts: &[Option<&[String]>]) -> PhasePlan {
        let command = |entry: &HookEntry| HookCommand {
            run: entry.run.clone(),
            timeout_ms: entry.timeout_or(timeout).as_millis() as u64,
        };
        let mut plan = PhasePlan {
            once: Vec::new(),
            each: vec![Vec::new(); hosts.len()],
            nowhere: Vec::new(),
        };
        for entry in entries {
            if entry.once {
                let first = hosts
                    .iter()
                    .position(|roles| roles.is_some_and(|roles| fits(entry, roles)));
                match first {
                    Some(host) => plan.once.push((host, command(entry))),
                    None => plan.nowhere.push(entry.run.clone()),
                }
                continue;
            }
            for (host, roles) in hosts.iter().enumerate() {
                if roles.is_some_and(|roles| fits(entry, roles)) {
                    plan.each[host].push(command(entry));
                }
            }
        }
        plan
    }

    pub fn is_empty(&self) -> bool {
        self.once.is_empty() && self.nowhere.is_empty() && self.each.iter().all(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(run: &str, once: bool, roles: &[&str]) -> HookEntry {
        HookEntry {
            run: run.into(),
            once,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            timeout: None,
        }
    }

    const LIMIT: Duration = Duration::from_secs(1);

    fn runs(commands: &[HookCommand]) -> Vec<&str> {
        commands.iter().map(|c| c.run.as_str()).collect()
    }

    #[test]
    fn once_goes_to_the_first_host_with_a_role_and_roles_select_hosts() {
        let web = ["web".to_string()];
        let db = ["db".to_string(), "web".to_string()];
        let none: Vec<String> = Vec::new();
        let hosts = [Some(&web[..]), Some(&db[..]), Some(&none[..])];
        let entries = [
            entry("cache", false, &[]),
            entry("migrate", true, &["db"]),
            entry("warm", false, &["web"]),
            entry("notify", true, &[]),
            entry("reindex", true, &["search"]),
        ];
        let plan = PhasePlan::new(&entries, LIMIT, &hosts);
        assert!(plan.each[0].iter().all(|c| c.timeout_ms == 1000));
        let once: Vec<(usize, &str)> = plan
            .once
            .iter()
            .map(|(h, c)| (*h, c.run.as_str()))
            .collect();
        assert_eq!(once, vec![(1, "migrate"), (0, "notify")]);
        assert_eq!(runs(&plan.each[0]), ["cache", "warm"]);
        assert_eq!(runs(&plan.each[1]), ["cache", "warm"]);
        assert_eq!(runs(&plan.each[2]), ["cache"]);
        assert_eq!(plan.nowhere, ["reindex"]);
    }

    #[test]
    fn hosts_taking_no_part_get_nothing_and_once_moves_on() {
        let web = ["web".to_string()];
        let hosts = [None, Some(&web[..])];
        let mut own = entry("x", false, &[]);
        own.timeout = Some("5m".into());
        let plan = PhasePlan::new(&[entry("migrate", true, &[]), own], LIMIT, &hosts);
        assert_eq!(plan.each[1][0].timeout_ms, 300_000, "its own timeout");
        assert_eq!(plan.once.len(), 1);
        assert_eq!(plan.once[0].0, 1);
        assert!(plan.each[0].is_empty());
        assert!(!plan.is_empty());
        assert!(PhasePlan::new(&[], LIMIT, &hosts).is_empty());
    }
}
