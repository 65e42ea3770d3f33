//! `[hooks]`: each phase is a list of entries, a command or a table
//! `{ run, once, roles, timeout }`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    /// In the new release at its final path, before any host switches.
    pub before_switch: Vec<HookEntry>,
    /// In the new release once every host switched and passed its checks.
    pub after_switch: Vec<HookEntry>,
    /// Where a started deploy failed (the release still served), before the lock goes.
    pub on_failure: Vec<HookEntry>,
    /// In the release gone back to, after `rollback` or an automatic switch-back.
    pub after_rollback: Vec<HookEntry>,
    /// Default for every build command and hook (`90s`, `10m`); 30m when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl HookSettings {
    /// `timeout`, or the default of 30 minutes.
    pub fn timeout(&self) -> std::time::Duration {
        parse_timeout(self.timeout.as_deref()).unwrap_or(crate::DEFAULT_HOOK_TIMEOUT)
    }

    /// Every phase by its key, in the order of the lifecycle.
    pub fn phases(&self) -> [(&'static str, &[HookEntry]); 4] {
        [
            ("before_switch", &self.before_switch),
            ("after_switch", &self.after_switch),
            ("on_failure", &self.on_failure),
            ("after_rollback", &self.after_rollback),
        ]
    }
}

/// One hook: written as a string when it is only a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookEntry {
    pub run: String,
    /// On exactly one host: the first in host order (`[inventory]`, then `[hosts]`) with
    /// one of `roles` (any host when `roles` is empty).
    pub once: bool,
    /// Only on hosts that have one of these roles.
    pub roles: Vec<String>,
    /// This hook's own limit instead of `[hooks] timeout`.
    pub timeout: Option<String>,
}

impl Serialize for HookEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if !self.once && self.roles.is_empty() && self.timeout.is_none() {
            return serializer.serialize_str(&self.run);
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("run", &self.run)?;
        if self.once {
            map.serialize_entry("once", &true)?;
        }
        if !self.roles.is_empty() {
            map.serialize_entry("roles", &self.roles)?;
        }
        if let Some(timeout) = &self.timeout {
            map.serialize_entry("timeout", timeout)?;
        }
        map.end()
    }
}

impl HookEntry {
    pub fn command(run: impl Into<String>) -> Self {
        HookEntry {
            run: run.into(),
            ..HookEntry::default()
        }
    }

    /// This entry's limit: its own `timeout`, else `default`.
    pub fn timeout_or(&self, default: std::time::Duration) -> std::time::Duration {
        parse_timeout(self.timeout.as_deref()).unwrap_or(default)
    }
}

/// A duration from a millisecond to a day as the settings write it; `None` when unset or
/// not one (the config's checks refuse the latter before anything uses it).
pub(crate) fn parse_timeout(text: Option<&str>) -> Option<std::time::Duration> {
    use cutover_core::hooks::{MAX_TIMEOUT, MIN_TIMEOUT};
    humantime::parse_duration(text?)
        .ok()
        .filter(|limit| (MIN_TIMEOUT..=MAX_TIMEOUT).contains(limit))
}

/// The table form, with its own unknown-field and missing-`run` errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookTable {
    run: String,
    #[serde(default)]
    once: bool,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    timeout: Option<String>,
}

impl<'de> Deserialize<'de> for HookEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;

        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = HookEntry;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a command, or a table like { run = \"...\", once = true }")
            }

            fn visit_str<E: serde::de::Error>(self, run: &str) -> Result<HookEntry, E> {
                Ok(HookEntry::command(run))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<HookEntry, A::Error> {
                let table =
                    HookTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(HookEntry {
                    run: table.run,
                    once: table.once,
                    roles: table.roles,
                    timeout: table.timeout,
                })
            }
        }

        deserializer.deserialize_any(Entry)
    }
}
