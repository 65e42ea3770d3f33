//! `.cutover/history.jsonl`: one JSON object per line, appended, never rewritten, so a
//! crash can at worst leave a torn last line, which readers skip and the next append
//! starts after (on a line of its own, so the torn line cannot swallow it).

use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::release::ReleaseId;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Staged,
    Switched,
    RolledBack,
    Removed,
}

/// Where a release came from, and who asked for it. Every field but `path` is optional,
/// so lines written by older versions (and by newer ones, with fields unknown here) parse.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    /// The source directory, or the repository a commit was fetched from.
    pub path: String,
    /// The repository URL (or path) the commit was fetched from, for `[deploy] repository`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The ref as given (`--ref` or `[deploy] branch`), when a commit was deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    /// The commit's author, `Name <email>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_author: Option<String>,
    /// The work tree had uncommitted changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub git_dirty: bool,
    /// The first uncommitted changes, as `git status --short` shows them (`M app.php`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub git_changes: Vec<String>,
    /// How many uncommitted changes there were in all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub git_changes_count: usize,
    /// Who deployed besides the OS user: the CI actor, or the git user of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployer: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub time: String,
    pub event: EventKind,
    pub release: ReleaseId,
    /// For switches and rollbacks: the release that was current before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ReleaseId>,
    pub user: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

impl Event {
    pub fn now(event: EventKind, release: ReleaseId) -> Self {
        Event {
            time: crate::identity::now_rfc3339(),
            event,
            release,
            previous: None,
            user: crate::identity::user(),
            host: crate::identity::host(),
            source: None,
        }
    }
}

pub fn append(path: &Path, event: &Event) -> Result<()> {
    let mut line = serde_json::to_vec(event)
        .map_err(std::io::Error::other)
        .ctx("encode an event for", path)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .ctx("open", path)?;
    if !ends_with_newline(&file).ctx("read", path)? {
        line.insert(0, b'\n');
    }
    // One write of the whole line: O_APPEND keeps concurrent lines from interleaving.
    file.write_all(&line).ctx("append to", path)?;
    file.sync_data().ctx("fsync", path)
}

/// True for an empty file too: there is no torn line to step over.
fn ends_with_newline(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

pub fn read(path: &Path) -> Result<Vec<Event>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::error::Error::io("read", path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// The release that `release` replaced when it last became current.
pub fn replaced_by(events: &[Event], release: &ReleaseId) -> Option<ReleaseId> {
    events
        .iter()
        .rev()
        .find(|e| {
            matches!(e.event, EventKind::Switched | EventKind::RolledBack) && &e.release == release
        })
        .and_then(|e| e.previous.clone())
}

/// Whether `release` was staged by cutover and never became current since: what a deploy
/// killed between moving its release into `releases/` and the switch leaves. Releases with
/// no `staged` event (adopted from Capistrano or Deployer) were served by their tool. A
/// release some later switch replaced was live too, even if the event of its own switch
/// was lost (a deploy killed right after its rename).
pub fn never_served(events: &[Event], release: &ReleaseId) -> bool {
    let Some(staged) = events
        .iter()
        .rposition(|e| e.event == EventKind::Staged && &e.release == release)
    else {
        return false;
    };
    !events[staged..].iter().any(|e| {
        matches!(e.event, EventKind::Switched | EventKind::RolledBack)
            && (&e.release == release || e.previous.as_ref() == Some(release))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_of_older_versions() {
        let old = r#"{"time":"2026-11-23T10:43:36Z","event":"staged","release":"r1","user":"deploy","host":"web1","source":{"path":"/app","git_commit":"4f1c","git_branch":"main","git_dirty":true}}"#;
        let event: Event = serde_json::from_str(old).unwrap();
        let source = event.source.unwrap();
        assert_eq!(source.git_commit.as_deref(), Some("4f1c"));
        assert!(source.git_dirty);
        assert_eq!(source.git_ref, None);
        assert_eq!(source.deployer, None);
        let plain = r#"{"time":"t","event":"switched","release":"r1","user":"u","host":"h"}"#;
        assert!(serde_json::from_str::<Event>(plain)
            .unwrap()
            .source
            .is_none());
    }

    #[test]
    fn appends_and_skips_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let a = ReleaseId::parse("1").unwrap();
        let b = ReleaseId::parse("2").unwrap();
        append(&path, &Event::now(EventKind::Staged, b.clone())).unwrap();
        let mut switched = Event::now(EventKind::Switched, b.clone());
        switched.previous = Some(a.clone());
        append(&path, &switched).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"time\":\"20")
            .unwrap();
        let events = read(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(replaced_by(&events, &b), Some(a.clone()));

        assert!(!never_served(&events, &b), "switched to");
        assert!(!never_served(&events, &a), "adopted: no staged event");

        // The event after a torn line is not lost with it.
        let c = ReleaseId::parse("3").unwrap();
        append(&path, &Event::now(EventKind::Staged, c.clone())).unwrap();
        let events = read(&path).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].release, c);
        assert!(never_served(&events, &c));
    }
}
