//! The hooks of cutover.toml as the orchestrator uses them: which command runs on which
//! host (`once`, `roles`), resolved once from the config by the binary.

use cutover_core::hooks::{HookCommand, HookPhase};

/// One entry of a `[hooks]` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEntry {
    pub run: String,
    /// On exactly one host: the first (in `[hosts]` order) with one of `roles`, or the
    /// first host when `roles` is empty.
    pub once: bool,
    /// Only on hosts with one of these; every host when empty.
    pub roles: Vec<String>,
    pub timeout_ms: u64,
}

impl HookEntry {
    fn fits(&self, roles: &[String]) -> bool {
        self.roles.is_empty() || self.roles.iter().any(|r| roles.contains(r))
    }

    fn command(&self) -> HookCommand {
        HookCommand {
            run: self.run.clone(),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// Every phase's entries, in the order cutover.toml lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookSet {
    pub before_switch: Vec<HookEntry>,
    pub after_switch: Vec<HookEntry>,
    pub on_failure: Vec<HookEntry>,
    pub after_rollback: Vec<HookEntry>,
}

impl HookSet {
    pub fn phase(&self, phase: HookPhase) -> &[HookEntry] {
        match phase {
            HookPhase::BeforeSwitch => &self.before_switch,
            HookPhase::AfterSwitch => &self.after_switch,
            HookPhase::OnFailure => &self.on_failure,
            HookPhase::AfterRollback => &self.after_rollback,
        }
    }
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
    /// no part (failed, or not concerned).
    pub fn new(entries: &[HookEntry], hosts: &[Option<&[String]>]) -> PhasePlan {
        let mut plan = PhasePlan {
            once: Vec::new(),
            each: vec![Vec::new(); hosts.len()],
            nowhere: Vec::new(),
        };
        for entry in entries {
            if entry.once {
                let first = hosts
                    .iter()
                    .position(|roles| roles.is_some_and(|roles| entry.fits(roles)));
                match first {
                    Some(host) => plan.once.push((host, entry.command())),
                    None => plan.nowhere.push(entry.run.clone()),
                }
                continue;
            }
            for (host, roles) in hosts.iter().enumerate() {
                if roles.is_some_and(|roles| entry.fits(roles)) {
                    plan.each[host].push(entry.command());
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
            timeout_ms: 1000,
        }
    }

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
        let plan = PhasePlan::new(&entries, &hosts);
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
        let plan = PhasePlan::new(
            &[entry("migrate", true, &[]), entry("x", false, &[])],
            &hosts,
        );
        assert_eq!(plan.once.len(), 1);
        assert_eq!(plan.once[0].0, 1);
        assert!(plan.each[0].is_empty());
        assert!(!plan.is_empty());
        assert!(PhasePlan::new(&[], &hosts).is_empty());
    }
}
