//! A commit as a directory: a persistent clone per repository in the user's cache, fetched
//! incrementally and moved to the commit with `git checkout` + `git clean`, so files the
//! commit did not change keep their mtimes and staging links them by the quick check.

use std::path::{Path, PathBuf};

use cutover_core::history::Source;

use crate::error::{Error, IoContext, Result};
use crate::run::{git, git_ok};

/// Where the clones live: `$XDG_CACHE_HOME/cutover/git` (or `~/.cache/cutover/git`).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// The user's cache directory, from the environment; `None` without XDG_CACHE_HOME
    /// and HOME.
    pub fn from_env() -> Option<Self> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(Cache::new(base.join("cutover").join("git")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The clone of `origin`: a readable name and a hash of the whole origin, so two
    /// repositories never share one.
    pub fn clone_dir(&self, origin: &str) -> PathBuf {
        let hash = blake3::hash(origin.as_bytes()).to_hex();
        let tail = origin
            .trim_end_matches('/')
            .trim_end_matches(".git")
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("");
        let name: String = tail
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = name.trim_start_matches('.');
        let name = if name.is_empty() { "repo" } else { name };
        self.root.join(format!("{name}-{}", &hash.as_str()[..16]))
    }
}

/// Where a commit comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `[deploy] repository`: anything `git clone` accepts. Its branches and tags are
    /// mirrored into the cache.
    Repository(String),
    /// The git repository holding this directory (SOURCE with `--ref`). Only the commits
    /// deployed are fetched from it; the release is that commit's tree below the
    /// directory's place in the repository.
    WorkTree(PathBuf),
}

/// Held while the clone is the source of a deploy: a second deploy from this machine
/// waits instead of moving the files under the first one.
#[derive(Debug)]
pub struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    fn acquire(path: &Path) -> Result<Self> {
        use rustix::fs::{flock, FlockOperation};
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .ctx("open the cache lock", path)?;
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(CacheLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io("lock", path, e.into())),
            }
        }
    }
}

/// A commit checked out, ready to stage from; the cache stays locked while this lives.
#[derive(Debug)]
pub struct Checkout {
    /// The directory whose files are the release.
    pub dir: PathBuf,
    pub source: Source,
    pub lock: CacheLock,
}

const MIRROR_REFSPECS: [&str; 3] = [
    "+refs/heads/*:refs/heads/*",
    "+refs/tags/*:refs/tags/*",
    "+HEAD:refs/cutover/remote-head",
];

/// Fetches what is needed of `origin`, resolves `reference` (default: the repository's
/// HEAD) to a commit and checks it out, submodules included, in the cache.
pub fn checkout(cache: &Cache, origin: &Origin, reference: Option<&str>) -> Result<Checkout> {
    if let Some(reference) = reference {
        crate::check_ref(reference)?;
    }
    match origin {
        // Git runs in the clone, so a relative path would mean another repository there.
        Origin::Repository(path) if crate::is_local_path(path) && Path::new(path).is_relative() => {
            let cwd =
                std::env::current_dir().ctx("find the current directory for", Path::new(path))?;
            from_repository(cache, &cwd.join(path).display().to_string(), reference)
        }
        Origin::Repository(url) => from_repository(cache, url, reference),
        Origin::WorkTree(dir) => from_work_tree(cache, dir, reference),
    }
}

fn from_repository(cache: &Cache, url: &str, reference: Option<&str>) -> Result<Checkout> {
    let (clone, lock) = open_clone(cache, url, url, |dir| fetch_mirror(dir, url))?;
    if clone.existed {
        fetch_mirror(&clone.dir, url)?;
    }
    let dir = clone.dir;
    let given = reference.unwrap_or("HEAD");
    let rev = if given == "HEAD" {
        "refs/cutover/remote-head"
    } else {
        given
    };
    let commit = match resolve(&dir, rev)? {
        Ok(commit) => commit,
        Err(message) if looks_like_commit(given) => {
            // A commit no branch or tag holds (yet): servers hand out a reachable one by id.
            let fetched = git(&dir, &["fetch", "--quiet", "--no-tags", "origin", given])?;
            match resolve(&dir, given)? {
                Ok(commit) => commit,
                Err(_) if !fetched.ok => return Err(unknown(url, given, fetched.message())),
                Err(_) => return Err(unknown(url, given, message)),
            }
        }
        Err(message) => return Err(unknown(url, given, message)),
    };
    check_out(&dir, &commit, url)?;
    let branch = is_branch(&dir, given)?.then(|| given.to_string());
    let source = Source {
        path: url.to_string(),
        git_repository: Some(url.to_string()),
        git_author: crate::author(&dir, &commit)?,
        git_commit: Some(commit),
        git_ref: Some(given.to_string()),
        git_branch: branch,
        deployer: crate::deployer(Some(&dir), |var| std::env::var(var).ok()),
        ..Source::default()
    };
    Ok(Checkout { dir, source, lock })
}

fn from_work_tree(cache: &Cache, dir: &Path, reference: Option<&str>) -> Result<Checkout> {
    let given = reference.unwrap_or("HEAD");
    let (top, prefix) = crate::repository_of(dir)?.ok_or_else(|| Error::NotARepository {
        dir: dir.to_path_buf(),
        reference: given.to_string(),
    })?;
    let shown = dir.display().to_string();
    let commit = resolve(&top, given)?.map_err(|message| unknown(&shown, given, message))?;
    let branch = if given == "HEAD" {
        git(&top, &["symbolic-ref", "--short", "-q", "HEAD"])?.text()
    } else {
        is_branch(&top, given)?.then(|| given.to_string())
    };
    let top_text = top.display().to_string();
    // Submodules with relative URLs resolve against the clone's origin: make it the
    // source's own origin, as they would there. Fetches name the source explicitly.
    let upstream = git(&top, &["config", "--get", "remote.origin.url"])?
        .text()
        .map(|url| {
            if crate::is_local_path(&url) && Path::new(&url).is_relative() {
                top.join(url).display().to_string()
            } else {
                url
            }
        })
        .unwrap_or_else(|| top_text.clone());
    let (clone, lock) = open_clone(cache, &top_text, &upstream, |_| Ok(()))?;
    let have = git(
        &clone.dir,
        &["cat-file", "-e", &format!("{commit}^{{commit}}")],
    )?;
    if !have.ok {
        // Into a ref: the next fetch negotiates from it instead of sending all history,
        // and no gc can take the checked-out commit away.
        let refspec = format!("+{commit}:refs/cutover/deployed");
        git_ok(
            &clone.dir,
            &shown,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--update-head-ok",
                "--no-recurse-submodules",
                &top_text,
                &refspec,
            ],
        )?;
    }
    check_out(&clone.dir, &commit, &shown)?;
    if !clone.dir.join(&prefix).is_dir() {
        return Err(Error::NotInCommit {
            repository: top_text,
            reference: given.to_string(),
            path: prefix,
        });
    }
    let source = Source {
        path: shown,
        git_author: crate::author(&clone.dir, &commit)?,
        git_commit: Some(commit),
        git_ref: Some(given.to_string()),
        git_branch: branch,
        deployer: crate::deployer(Some(&top), |var| std::env::var(var).ok()),
        ..Source::default()
    };
    Ok(Checkout {
        dir: clone.dir.join(prefix),
        source,
        lock,
    })
}

struct Clone {
    dir: PathBuf,
    /// The clone existed before: what is new has yet to be fetched.
    existed: bool,
}

/// Locks and opens the clone of `key`, creating it (remote `origin` = `upstream`, first
/// filled by `fill`) when it does not exist. A clone is created beside its final name and
/// renamed into place, so a killed first fetch never leaves a half clone to be used.
fn open_clone(
    cache: &Cache,
    key: &str,
    upstream: &str,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<(Clone, CacheLock)> {
    std::fs::create_dir_all(&cache.root).ctx("create the git cache", &cache.root)?;
    let dir = cache.clone_dir(key);
    let lock = CacheLock::acquire(&beside(&dir, ".lock"))?;
    if dir.join(".git").is_dir() {
        // The source's origin may have moved since.
        git_ok(&dir, key, &["config", "remote.origin.url", upstream])?;
        return Ok((Clone { dir, existed: true }, lock));
    }
    let fresh = beside(&dir, ".new");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).ctx("remove the unfinished clone", &fresh)?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).ctx("remove the broken clone", &dir)?;
    }
    std::fs::create_dir_all(&fresh).ctx("create", &fresh)?;
    git_ok(&fresh, key, &["init", "--quiet"])?;
    git_ok(&fresh, key, &["config", "remote.origin.url", upstream])?;
    for refspec in MIRROR_REFSPECS {
        git_ok(
            &fresh,
            key,
            &["config", "--add", "remote.origin.fetch", refspec],
        )?;
    }
    git_ok(&fresh, key, &["config", "advice.detachedHead", "false"])?;
    if let Err(e) = fill(&fresh) {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(e);
    }
    std::fs::rename(&fresh, &dir).ctx("move the new clone to", &dir)?;
    Ok((
        Clone {
            dir,
            existed: false,
        },
        lock,
    ))
}

/// `dir` with `suffix` added to its name (`with_extension` would cut a dotted name).
fn beside(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Every branch and tag of the repository, and its HEAD; what is gone there goes here.
fn fetch_mirror(dir: &Path, url: &str) -> Result<()> {
    let out = git(
        dir,
        &[
            "fetch",
            "--quiet",
            "--prune",
            "--force",
            "--update-head-ok",
            "--no-recurse-submodules",
            "origin",
        ],
    )?;
    if !out.ok {
        return Err(Error::Unreachable {
            repository: url.to_string(),
            message: out.message(),
        });
    }
    Ok(())
}

/// The commit `rev` names in `dir`, or git's message why there is none.
fn resolve(dir: &Path, rev: &str) -> Result<Result<String, String>> {
    let out = git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ],
    )?;
    Ok(out.text().ok_or_else(|| out.message()))
}

fn is_branch(dir: &Path, name: &str) -> Result<bool> {
    let full = format!("refs/heads/{name}");
    Ok(git(dir, &["show-ref", "--verify", "--quiet", &full])?.ok)
}

fn looks_like_commit(reference: &str) -> bool {
    (7..=64).contains(&reference.len()) && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

fn unknown(repository: &str, reference: &str, message: String) -> Error {
    Error::UnknownRef {
        repository: repository.to_string(),
        reference: reference.to_string(),
        message,
    }
}

/// Moves the clone's files to `commit`: only what differs is rewritten, so unchanged files
/// keep their mtimes. Whatever else is there (a build's leftovers, a submodule the commit
/// dropped) is removed.
fn check_out(dir: &Path, commit: &str, repository: &str) -> Result<()> {
    git_ok(
        dir,
        repository,
        &["checkout", "--quiet", "--force", "--detach", commit],
    )?;
    git_ok(dir, repository, &["clean", "-ffdxq"])?;
    if !dir.join(".gitmodules").exists() {
        return Ok(());
    }
    git_ok(
        dir,
        repository,
        &["submodule", "sync", "--quiet", "--recursive"],
    )?;
    let update = git(
        dir,
        &[
            "submodule",
            "update",
            "--quiet",
            "--init",
            "--recursive",
            "--force",
            "--checkout",
        ],
    )?;
    if !update.ok {
        return Err(Error::Unreachable {
            repository: format!("a submodule of {repository}"),
            message: update.message(),
        });
    }
    git_ok(
        dir,
        repository,
        &[
            "submodule",
            "foreach",
            "--quiet",
            "--recursive",
            "git clean -ffdxq",
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_dirs_are_readable_and_distinct() {
        let cache = Cache::new("/c");
        let a = cache.clone_dir("git@github.com:acme/shop.git");
        let b = cache.clone_dir("https://github.com/acme/shop.git");
        assert!(a
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("shop-"));
        assert_ne!(a, b);
        let odd = cache.clone_dir("/");
        assert!(odd
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("repo-"));
        let dots = cache.clone_dir("../..");
        assert!(!dots.file_name().unwrap().to_str().unwrap().starts_with('.'));
    }
}
