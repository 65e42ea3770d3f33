//! Git as the source of a release, on the deploying machine only (hosts never run git).
//!
//! Two ways: a commit ([`checkout`]) is exactly that commit's tree, submodules included,
//! checked out in a persistent clone in the user's cache; a work tree ([`work_tree`]) is
//! what git would commit from it: tracked and untracked files, not ignored ones. Git runs
//! as a subprocess (`git` on PATH) and never prompts. Nothing here prints.

mod checkout;
mod error;
mod run;
mod work_tree;

use std::path::{Path, PathBuf};

pub use checkout::{checkout, Cache, CacheLock, Checkout, Origin};
pub use error::{Error, ErrorKind, Result};
pub use work_tree::{work_tree, WorkTree, CHANGES_KEPT};

/// CI systems' variables naming who started the run, in the order they are looked at.
pub const CI_ACTORS: &[&str] = &[
    "GITHUB_ACTOR",
    "GITLAB_USER_LOGIN",
    "BUILDKITE_BUILD_CREATOR",
    "CIRCLE_USERNAME",
    "BITBUCKET_STEP_TRIGGERER_UUID",
];

/// Who deployed, besides the OS user: the CI actor when a CI system names one (`octocat
/// (GITHUB_ACTOR)`), else git's `user.name <user.email>` as seen from `repo` (its own
/// config, then the user's), when there is a repo to ask.
pub fn deployer(repo: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    for var in CI_ACTORS {
        if let Some(actor) = env(var).filter(|v| !v.trim().is_empty()) {
            return Some(format!("{} ({var})", actor.trim()));
        }
    }
    let repo = repo?;
    let config = |key: &str| run::git(repo, &["config", "--get", key]).ok()?.text();
    match (config("user.name"), config("user.email")) {
        (Some(name), Some(email)) => Some(format!("{name} <{email}>")),
        (Some(name), None) => Some(name),
        (None, Some(email)) => Some(email),
        (None, None) => None,
    }
}

/// `--ref` goes to git as an argument: refuse what git could read as an option, and what
/// no ref can hold.
pub fn check_ref(reference: &str) -> Result<()> {
    let bad = reference.is_empty()
        || reference.starts_with('-')
        || reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(Error::BadRef(reference.to_string()));
    }
    Ok(())
}

/// Whether `repository` is a path on this machine (not `scheme://…` nor scp-like
/// `host:path`), by git's own rule: a `:` before any `/` makes it ssh.
pub fn is_local_path(repository: &str) -> bool {
    if repository.contains("://") {
        return false;
    }
    match repository.find(':') {
        None => true,
        Some(colon) => repository[..colon].contains('/'),
    }
}

/// The repository holding `dir`: its top-level directory and `dir` relative to it.
pub(crate) fn repository_of(dir: &Path) -> Result<Option<(PathBuf, PathBuf)>> {
    let inside = run::git(dir, &["rev-parse", "--is-inside-work-tree"])?;
    if inside.text().as_deref() != Some("true") {
        return Ok(None);
    }
    let Some(top) = run::git(dir, &["rev-parse", "--show-toplevel"])?.text() else {
        return Ok(None);
    };
    let prefix = run::git(dir, &["rev-parse", "--show-prefix"])?
        .text()
        .unwrap_or_default();
    Ok(Some((PathBuf::from(top), PathBuf::from(prefix))))
}

/// `Name <email>` of a commit's author.
pub(crate) fn author(dir: &Path, commit: &str) -> Result<Option<String>> {
    Ok(run::git(dir, &["show", "-s", "--format=%an <%ae>", commit])?.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_local_paths_from_urls() {
        assert!(is_local_path("/srv/git/shop.git"));
        assert!(is_local_path("../shop"));
        assert!(is_local_path("./a:b"));
        assert!(!is_local_path("git@github.com:acme/shop.git"));
        assert!(!is_local_path("https://github.com/acme/shop.git"));
        assert!(!is_local_path("file:///srv/git/shop.git"));
    }

    #[test]
    fn a_ci_actor_wins_over_the_git_user() {
        let env = |var: &str| (var == "GITLAB_USER_LOGIN").then(|| "alice".to_string());
        assert_eq!(
            deployer(None, env).as_deref(),
            Some("alice (GITLAB_USER_LOGIN)")
        );
        assert_eq!(deployer(None, |_| None), None);
    }

    #[test]
    fn refuses_refs_git_would_read_as_options() {
        assert!(check_ref("v1.4.2").is_ok());
        assert!(check_ref("feature/x").is_ok());
        assert!(check_ref("--upload-pack=evil").is_err());
        assert!(check_ref("").is_err());
        assert!(check_ref("a b").is_err());
    }
}
