//! What a release contains, as a list a remote host can act on: path, mode, size, mtime and
//! content hash of every file, every directory and every symlink.
//!
//! A remote deploy sends the manifest first; the host links every file its previous release
//! already has (same bytes by hash, even under another name) and asks only for the rest.
//! Each host keeps the manifest of every release it staged, so the next deploy can send only
//! what changed against it (a [`Delta`]) and the deploying machine can skip hashing files
//! whose size and mtime did not change.

mod hash;
mod materialize;
mod plan;
mod scan;
mod stored;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use hash::ContentHash;
pub use materialize::materialize;
pub use plan::{plan, Plan};
pub use scan::scan;

use crate::error::{Error, IoContext, Result};
use crate::tree::link_stays_inside;

/// One entry; paths are relative, `/`-separated, UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub mode: u32,
    #[serde(flatten)]
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
        mtime_ns: i64,
        hash: ContentHash,
    },
    Symlink {
        target: String,
    },
}

/// Entries sorted by path, so a directory comes before its children and two manifests of
/// the same tree encode to the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

/// The changes from one manifest to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Digest of the manifest this applies to.
    pub base: String,
    /// Digest of the manifest it produces.
    pub result: String,
    /// New or changed entries.
    pub upsert: Vec<ManifestEntry>,
    pub remove: Vec<String>,
}

impl Manifest {
    /// blake3 of the stored encoding, hex: names a manifest on both ends.
    pub fn digest(&self) -> String {
        ContentHash::of_bytes(&stored::encode(self)).to_hex()
    }

    /// Files only, with their sizes: what a transfer would move if nothing could be linked.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    fn sort(&mut self) {
        self.entries
            .sort_unstable_by(|a, b| path_order(&a.path, &b.path));
    }

    /// Both manifests are sorted: one merge, no lookups.
    pub fn delta_from(&self, base: &Manifest) -> Delta {
        let mut upsert = Vec::new();
        let mut remove = Vec::new();
        let (mut old, mut new) = (
            base.entries.iter().peekable(),
            self.entries.iter().peekable(),
        );
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(o), Some(n)) if o.path == n.path => {
                    if o != n {
                        upsert.push((*n).clone());
                    }
                    old.next();
                    new.next();
                }
                (Some(o), Some(n)) if path_order(&o.path, &n.path).is_lt() => {
                    remove.push(o.path.clone());
                    old.next();
                }
                (Some(o), None) => {
                    remove.push(o.path.clone());
                    old.next();
                }
                (_, Some(n)) => {
                    upsert.push((*n).clone());
                    new.next();
                }
            }
        }
        Delta {
            base: base.digest(),
            result: self.digest(),
            upsert,
            remove,
        }
    }

    /// Rebuilds the manifest a delta describes; fails unless the result is exactly the one
    /// the sender had (same digest).
    pub fn apply(&self, delta: &Delta) -> Result<Manifest> {
        if self.digest() != delta.base {
            return Err(Error::BadManifest(
                "the delta was made against another manifest".into(),
            ));
        }
        let gone: HashSet<&str> = delta
            .remove
            .iter()
            .map(String::as_str)
            .chain(delta.upsert.iter().map(|e| e.path.as_str()))
            .collect();
        let mut result = Manifest {
            entries: self
                .entries
                .iter()
                .filter(|e| !gone.contains(e.path.as_str()))
                .chain(&delta.upsert)
                .cloned()
                .collect(),
        };
        result.sort();
        if result.digest() != delta.result {
            return Err(Error::BadManifest(
                "the delta does not produce the manifest it names".into(),
            ));
        }
        Ok(result)
    }

    /// Refuses anything that could write outside the staging directory or is not a tree:
    /// absolute paths, `..`, links leaving the release, entries whose parent is not a
    /// directory listed before them, duplicates.
    pub fn validate(&self) -> Result<()> {
        // Links are judged as the kernel will resolve them: through the release's own links.
        let links: std::collections::HashMap<&str, &str> = self
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Symlink { target } => Some((e.path.as_str(), target.as_str())),
                _ => None,
            })
            .collect();
        let link_of = |p: &Path| links.get(p.to_str()?).map(PathBuf::from);
        // In depth-first order the directories above an entry are a stack.
        let mut open: Vec<&str> = Vec::new();
        let mut last: Option<&str> = None;
        for entry in &self.entries {
            let bad = |why: &str| Err(Error::BadManifest(format!("{:?}: {why}", entry.path)));
            let plain = entry.path.split('/').all(|part| {
                !part.is_empty() && part != "." && part != ".." && !part.contains('\0')
            });
            if !plain {
                return bad("not a plain relative path");
            }
            if let Some(prev) = last {
                if path_order(prev, &entry.path) != std::cmp::Ordering::Less {
                    return bad("out of order or listed twice");
                }
            }
            last = Some(&entry.path);
            let (parent, _) = parent_and_name(&entry.path);
            while open.last().is_some_and(|dir| {
                !entry
                    .path
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
            }) {
                open.pop();
            }
            if open.last().copied().unwrap_or("") != parent {
                return bad("its directory is not listed before it");
            }
            if let EntryKind::Symlink { target } = &entry.kind {
                if !link_stays_inside(Path::new(&entry.path), Path::new(target), &link_of) {
                    return bad("the link points outside the release");
                }
            }
            if entry.mode & !0o7777 != 0 {
                return bad("mode has bits beyond 0o7777");
            }
            if matches!(entry.kind, EntryKind::Dir) {
                open.push(&entry.path);
            }
        }
        Ok(())
    }

    /// A manifest stored by [`Manifest::store`], with the digest of its bytes; `None` when
    /// there is none or it is not one (another format, damaged).
    pub fn load(path: &Path) -> Result<Option<(Manifest, String)>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        Ok(stored::decode(&bytes).map(|m| (m, ContentHash::of_bytes(&bytes).to_hex())))
    }

    /// Written beside the file then renamed: a torn manifest would only cost a rehash, but
    /// a reader should never see half of one.
    pub fn store(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ctx("create", dir)?;
        }
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, stored::encode(self)).ctx("write", &temp)?;
        std::fs::rename(&temp, path).ctx("write", path)
    }
}

/// Orders paths so that a directory comes right before its own children: component by
/// component (plain string order would put `a.txt` between `a` and `a/b`). That is byte
/// order with `/` below every other byte (paths hold no NUL), without splitting.
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let key = |c: u8| if c == b'/' { 0 } else { c };
    match (a.get(same), b.get(same)) {
        (Some(&x), Some(&y)) => key(x).cmp(&key(y)),
        (x, y) => x.is_some().cmp(&y.is_some()),
    }
}

/// `("a/b", "c.php")` for `a/b/c.php`, `("", "c.php")` for `c.php`.
fn parent_and_name(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The digest of a stored manifest without decoding it: the file holds exactly the
/// encoding the digest is taken over.
pub fn stored_digest(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(ContentHash::of_bytes(&bytes).to_hex())
}

/// Where a host keeps the manifest of each release it staged.
pub fn stored_path(state_dir: &Path, release: &str) -> PathBuf {
    state_dir
        .join("manifests")
        .join(format!("{release}.manifest"))
}

/// Seconds since the epoch in microseconds, for switch times reported across hosts.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::tree::Excludes;

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn a_delta_rebuilds_the_manifest_and_only_that_one() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        tree(
            &src,
            &[("a.php", "a"), ("lib/b.php", "b"), ("lib/c.php", "c")],
        );
        let old = scan(&src, &Excludes::default(), None).unwrap();
        std::fs::write(src.join("lib/b.php"), "b2").unwrap();
        std::fs::remove_file(src.join("lib/c.php")).unwrap();
        tree(&src, &[("a.txt", "new")]);
        let new = scan(&src, &Excludes::default(), Some(&old)).unwrap();
        let delta = new.delta_from(&old);
        assert_eq!(delta.remove, vec!["lib/c.php".to_string()]);
        let paths: Vec<_> = delta.upsert.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"a.txt") && paths.contains(&"lib/b.php"));
        assert!(!paths.contains(&"a.php"), "{paths:?}");
        assert_eq!(old.apply(&delta).unwrap(), new);
        assert!(new.apply(&delta).is_err());
        new.validate().unwrap();
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let file = |path: &str| ManifestEntry {
            path: path.into(),
            mode: 0o644,
            kind: EntryKind::File {
                size: 1,
                mtime_ns: 0,
                hash: ContentHash::of_bytes(b"0"),
            },
        };
        let dir = |path: &str| ManifestEntry {
            path: path.into(),
            mode: 0o755,
            kind: EntryKind::Dir,
        };
        let link = |path: &str, target: &str| ManifestEntry {
            path: path.into(),
            mode: 0o777,
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        };
        let cases = [
            vec![file("../escape")],
            vec![file("/etc/passwd")],
            vec![dir("a"), file("a/../../x")],
            vec![file("a/b")],
            vec![link("l", "../../etc")],
            vec![link("l", "/etc")],
            vec![file("x"), file("x")],
            vec![file("b"), file("a")],
            vec![file("a"), file("a/b")],
        ];
        for entries in cases {
            let manifest = Manifest {
                entries: entries.clone(),
            };
            assert!(manifest.validate().is_err(), "{entries:?}");
        }
        let fine = Manifest {
            entries: vec![dir("a"), file("a/b"), link("a/l", "b"), file("a.txt")],
        };
        fine.validate().unwrap();
    }

    #[test]
    fn materialize_links_what_the_previous_release_has_and_checks_what_it_receives() {
        let dir = tempfile::tempdir().unwrap();
        let (src, prev, next) = (
            dir.path().join("src"),
            dir.path().join("prev"),
            dir.path().join("next"),
        );
        tree(&src, &[("a.php", "a"), ("lib/b.php", "b")]);
        let first = scan(&src, &Excludes::default(), None).unwrap();
        std::fs::create_dir(&prev).unwrap();
        let all = plan(&first, None, None).unwrap();
        assert_eq!(all.need.len(), 2);
        let mut bytes: &[u8] = b"ab";
        materialize(&first, &all, &prev, true, &mut bytes).unwrap();

        // Renamed content is found by hash; new content is asked for.
        std::fs::rename(src.join("a.php"), src.join("moved.php")).unwrap();
        tree(&src, &[("lib/new.php", "new")]);
        let second = scan(&src, &Excludes::default(), None).unwrap();
        let plan2 = plan(&second, Some(&prev), Some(&first)).unwrap();
        assert_eq!(plan2.need.len(), 1);
        std::fs::create_dir(&next).unwrap();
        let mut bytes: &[u8] = b"new";
        let (stats, written) = materialize(&second, &plan2, &next, true, &mut bytes).unwrap();
        assert_eq!((stats.linked, stats.copied), (2, 1));
        assert_eq!(written, vec![next.join("lib/new.php")]);
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&prev.join("a.php")), ino(&next.join("moved.php")));

        // Bytes that do not match the hash are refused.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let mut wrong: &[u8] = b"NEW";
        let err = materialize(&second, &plan2, &other, true, &mut wrong).unwrap_err();
        assert!(matches!(err, Error::ContentMismatch(_)), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn path_order_is_the_order_of_components(a in "[ !a./0-]{0,7}", b in "[ !a./0-]{0,7}") {
            proptest::prop_assert_eq!(path_order(&a, &b), a.split('/').cmp(b.split('/')));
        }
    }

    #[test]
    fn directories_get_their_modes_even_those_that_lock_their_owner_out() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (src, out) = (dir.path().join("src"), dir.path().join("out"));
        tree(
            &src,
            &[
                ("ro/sub/f.php", "f"),
                ("ro/g.php", "g"),
                ("open/h.php", "h"),
            ],
        );
        let manifest = scan(&src, &Excludes::default(), None).unwrap();
        let mut manifest = manifest;
        for entry in &mut manifest.entries {
            entry.mode = match entry.path.as_str() {
                "ro" => 0o555,
                "ro/sub" => 0o500,
                "open" => 0o750,
                _ => entry.mode,
            };
        }
        std::fs::create_dir(&out).unwrap();
        let all = plan(&manifest, None, None).unwrap();
        let mut bytes: &[u8] = b"hgf";
        let (stats, _) = materialize(&manifest, &all, &out, true, &mut bytes).unwrap();
        assert_eq!((stats.dirs, stats.files, stats.copied), (3, 3, 3));
        let mode = |p: &str| std::fs::metadata(out.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            (mode("ro"), mode("ro/sub"), mode("open")),
            (0o555, 0o500, 0o750)
        );
        assert_eq!(
            std::fs::read_to_string(out.join("ro/sub/f.php")).unwrap(),
            "f"
        );
        // Let the temporary directory be removed.
        for p in ["ro/sub", "ro"] {
            std::fs::set_permissions(out.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}
