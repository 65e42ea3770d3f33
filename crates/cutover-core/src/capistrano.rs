//! Keeping a deploy path shared with Capistrano readable by it: its `revisions.log` gets
//! the same lines Capistrano writes, so `cap deploy:rollback` and audits still work.

use std::io::Write;

use crate::history::Source;
use crate::layout::DeployPath;
use crate::release::ReleaseId;

fn append(deploy: &DeployPath, line: &str) {
    let path = deploy.root().join("revisions.log");
    if !path.is_file() {
        return;
    }
    // Best effort: this log is Capistrano's courtesy copy; ours is history.jsonl.
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

pub fn log_deploy(deploy: &DeployPath, release: &ReleaseId, source: &Source) {
    let branch = source.git_branch.as_deref().unwrap_or("unknown");
    let commit = source.git_commit.as_deref().unwrap_or("unknown");
    let user = crate::identity::user();
    append(
        deploy,
        &format!("Branch {branch} (at {commit}) deployed as release {release} by {user}"),
    );
}

pub fn log_rollback(deploy: &DeployPath, release: &ReleaseId) {
    let user = crate::identity::user();
    append(deploy, &format!("{user} rolled back to release {release}"));
}
