//! A parallel walk over a directory tree, the one loop every staging step goes through.
//!
//! Directories are visited before their children and children of different directories in
//! parallel (`each_dir`): link(2) and mkdir(2) in one directory serialize on its inode
//! lock, so spreading the work across directories is what makes two cores worth having.

use std::ffi::OsString;
use std::fs::FileType;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};

/// Paths left out of a release: a pattern without `/` matches that name at any depth
/// (like `.gitignore`), one with `/` matches that path from the root.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    names: Vec<OsString>,
    /// A set: a git work tree can add thousands (every ignored file git lists).
    paths: std::collections::HashSet<PathBuf>,
}

impl Excludes {
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Self {
        let mut excludes = Excludes::default();
        for pattern in patterns {
            excludes.add(pattern.as_ref());
        }
        excludes
    }

    pub fn add(&mut self, pattern: &str) {
        let trimmed = pattern.trim_matches('/');
        if trimmed.is_empty() {
            return;
        }
        if trimmed.contains('/') {
            self.paths.insert(PathBuf::from(trimmed));
        } else {
            self.names.push(OsString::from(trimmed));
        }
    }

    pub fn add_path(&mut self, rel: PathBuf) {
        self.paths.insert(rel);
    }

    pub fn matches(&self, rel: &Path) -> bool {
        rel.file_name()
            .is_some_and(|name| self.names.iter().any(|n| n == name))
            || self.paths.contains(rel)
    }
}

/// One entry of the walk, as the callback sees it.
pub struct Entry<'a> {
    /// Relative to the walk's root.
    pub rel: &'a Path,
    pub path: &'a Path,
    pub file_type: FileType,
    pub dir_entry: &'a std::fs::DirEntry,
}

/// Calls `visit` for every entry below `root` (not `root` itself); a directory is descended
/// into when `visit` returns `Ok(true)`. Stops at the first error and returns it.
pub fn walk<F>(root: &Path, excludes: &Excludes, visit: &F) -> Result<()>
where
    F: Fn(&Entry<'_>) -> Result<bool> + Sync,
{
    walk_in(
        root,
        excludes,
        &|_: &Path| Ok(()),
        &|_: &(), entry: &Entry<'_>| visit(entry),
    )
}

/// `walk`, with a value made once per directory (`enter`, given its path relative to
/// `root`, before its entries) that `visit` gets with each of them: the directories a
/// caller works in, opened once.
pub fn walk_in<D, E, F>(root: &Path, excludes: &Excludes, enter: &E, visit: &F) -> Result<()>
where
    E: Fn(&Path) -> Result<D> + Sync,
    F: Fn(&D, &Entry<'_>) -> Result<bool> + Sync,
{
    each_dir(
        PathBuf::new(),
        &|rel: PathBuf, spawn: &mut dyn FnMut(PathBuf)| {
            let here = enter(&rel)?;
            let dir = root.join(&rel);
            for entry in std::fs::read_dir(&dir).ctx("list", &dir)? {
                let entry = entry.ctx("list", &dir)?;
                let child_rel = rel.join(entry.file_name());
                if excludes.matches(&child_rel) {
                    continue;
                }
                let path = entry.path();
                let file_type = entry.file_type().ctx("stat", &path)?;
                let seen = Entry {
                    rel: &child_rel,
                    path: &path,
                    file_type,
                    dir_entry: &entry,
                };
                if visit(&here, &seen)? && file_type.is_dir() {
                    spawn(child_rel);
                }
            }
            Ok(())
        },
    )
}

/// Runs `work` on `first` and on everything it hands to its second argument, in
/// parallel, each as soon as it is handed over; stops starting work at the first error
/// and returns it. Work on a tree is split by directory: link(2) and mkdir(2) in one
/// directory serialize on its inode lock, across directories they do not.
pub fn each_dir<T, F>(first: T, work: &F) -> Result<()>
where
    T: Send,
    F: Fn(T, &mut dyn FnMut(T)) -> Result<()> + Sync,
{
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    rayon::scope(|scope| run_one(scope, first, work, &failure));
    match failure.into_inner() {
        Ok(Some(error)) => Err(error),
        Ok(None) => Ok(()),
        Err(poisoned) => poisoned.into_inner().map_or(Ok(()), Err),
    }
}

fn run_one<'s, T, F>(
    scope: &rayon::Scope<'s>,
    item: T,
    work: &'s F,
    failure: &'s Mutex<Option<Error>>,
) where
    T: Send + 's,
    F: Fn(T, &mut dyn FnMut(T)) -> Result<()> + Sync,
{
    if failure.lock().map_or(true, |slot| slot.is_some()) {
        return;
    }
    let mut spawn = |next: T| scope.spawn(move |scope| run_one(scope, next, work, failure));
    if let Err(error) = work(item, &mut spawn) {
        if let Ok(mut slot) = failure.lock() {
            slot.get_or_insert(error);
        }
    }
}

/// Whether the link at `rel` (relative to the tree's root) with `target` as its text
/// resolves inside the tree. Links of the tree met on the way are followed, as the kernel
/// would: `link_of(path)` gives the text of the link at `path`, or `None` when it is not
/// one. So `esc -> a/up/..` with `a/up -> ..` escapes although its text alone stays
/// inside. Absolute targets, a chain of more than 40 links and a loop count as outside.
pub fn link_stays_inside(
    rel: &Path,
    target: &Path,
    link_of: &dyn Fn(&Path) -> Option<PathBuf>,
) -> bool {
    const MAX_LINKS: usize = 40;
    let mut at: Vec<OsString> = rel
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut pending: std::collections::VecDeque<OsString> = std::collections::VecDeque::new();
    if target.is_absolute() {
        return false;
    }
    pending.extend(target.components().map(|c| c.as_os_str().to_os_string()));
    let mut followed = 0;
    while let Some(part) = pending.pop_front() {
        match Path::new(&part).components().next() {
            Some(Component::ParentDir) => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Some(Component::Normal(name)) => {
                at.push(name.to_os_string());
                let path: PathBuf = at.iter().collect();
                if let Some(next) = link_of(&path) {
                    followed += 1;
                    if followed > MAX_LINKS || next.is_absolute() {
                        return false;
                    }
                    at.pop();
                    for c in next.components().rev() {
                        pending.push_front(c.as_os_str().to_os_string());
                    }
                }
            }
            Some(Component::CurDir) | None => {}
            Some(Component::RootDir | Component::Prefix(_)) => return false,
        }
    }
    true
}

/// `link_of` for a tree on disk.
pub fn link_on_disk(root: &Path) -> impl Fn(&Path) -> Option<PathBuf> + '_ {
    move |rel| {
        let path = root.join(rel);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.file_type().is_symlink() {
            return None;
        }
        std::fs::read_link(path).ok()
    }
}

/// `path` with every existing part resolved (symlinks followed, canonical); what does not
/// exist yet appended as written.
pub fn real_path(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut probe = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(probe) {
            return missing.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (probe.parent(), probe.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                probe = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_judged_by_their_text() {
        let inside = [
            ("a/link", "b"),
            ("a/link", "../b"),
            ("a/b/link", "../../c/./d"),
            ("link", "x/../y"),
        ];
        let no_links = |_: &Path| None;
        for (rel, target) in inside {
            assert!(
                link_stays_inside(Path::new(rel), Path::new(target), &no_links),
                "{rel} -> {target}"
            );
        }
        let outside = [
            ("link", "../x"),
            ("a/link", "../../x"),
            ("a/link", "/etc/passwd"),
            ("link", "x/../../y"),
        ];
        for (rel, target) in outside {
            assert!(
                !link_stays_inside(Path::new(rel), Path::new(target), &no_links),
                "{rel} -> {target}"
            );
        }
    }

    #[test]
    fn links_through_links_of_the_tree_are_followed() {
        let links = |p: &Path| match p.to_str()? {
            "a/b/up" => Some(PathBuf::from("../..")),
            "a/self" => Some(PathBuf::from("self")),
            "a/down" => Some(PathBuf::from("b")),
            _ => None,
        };
        // The reproduction: `up` is the root, so anything above it leaves.
        assert!(!link_stays_inside(
            Path::new("esc"),
            Path::new("a/b/up/../x"),
            &links
        ));
        assert!(link_stays_inside(
            Path::new("ok"),
            Path::new("a/b/up/x"),
            &links
        ));
        assert!(link_stays_inside(
            Path::new("a/l"),
            Path::new("down/../../y"),
            &links
        ));
        assert!(!link_stays_inside(
            Path::new("a/l"),
            Path::new("down/../../../y"),
            &links
        ));
        // A loop never resolves: outside.
        assert!(!link_stays_inside(
            Path::new("l"),
            Path::new("a/self"),
            &links
        ));
    }

    #[test]
    fn excludes_match_names_anywhere_and_paths_from_the_root() {
        let ex = Excludes::new([".git", "tests/fixtures/"]);
        assert!(ex.matches(Path::new(".git")));
        assert!(ex.matches(Path::new("vendor/pkg/.git")));
        assert!(ex.matches(Path::new("tests/fixtures")));
        assert!(!ex.matches(Path::new("src/tests/fixtures")));
        assert!(!ex.matches(Path::new("git")));
    }
}
