//! Which files a lint run reads.

use std::path::{Path, PathBuf};

use crate::{Error, Result, TreePaths, Unparsable};

/// Extensions PHP code lives in (`.module`: Drupal).
const EXTENSIONS: [&str; 4] = ["php", "phtml", "inc", "module"];

/// Directories that hold no code PHP runs.
const SKIPPED_DIRS: [&str; 4] = [".git", ".hg", ".svn", "node_modules"];

#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    /// As shown in findings: the directory given, joined with the path inside it.
    pub display: PathBuf,
    /// Inside the linted tree, '/'-separated.
    pub rel: String,
}

impl SourceFile {
    pub fn single(path: &Path) -> Self {
        SourceFile {
            display: path.to_path_buf(),
            rel: slash_path(path.strip_prefix(".").unwrap_or(path)),
        }
    }

    /// The directory the file is in, as components inside the tree.
    pub fn dir_components(&self) -> Vec<String> {
        let mut parts: Vec<String> = self.rel.split('/').map(str::to_string).collect();
        parts.pop();
        parts.retain(|p| !p.is_empty() && p != ".");
        parts
    }

    /// The directory of a root-relative file, as components.
    pub fn dir_of(rel: &str) -> Vec<String> {
        SourceFile {
            display: PathBuf::new(),
            rel: rel.to_string(),
        }
        .dir_components()
    }

    pub fn file_name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or(&self.rel)
    }

    pub fn in_vendor(&self) -> bool {
        self.rel.split('/').any(|part| part == "vendor")
    }
}

pub(crate) struct Tree {
    pub files: Vec<SourceFile>,
    pub paths: TreePaths,
    pub unreadable: Vec<Unparsable>,
}

/// Every PHP file under `root`, sorted; symlinks are not followed (a release's `shared/`
/// links would lead out of the tree, or in circles).
pub(crate) fn walk(root: &Path) -> Result<Tree> {
    let meta = std::fs::metadata(root).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: root.to_path_buf(),
            }
        } else {
            Error::Io {
                path: root.to_path_buf(),
                source,
            }
        }
    })?;
    let mut tree = Tree {
        files: Vec::new(),
        paths: TreePaths::new(),
        unreadable: Vec::new(),
    };
    if !meta.is_dir() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tree.paths.insert(name.clone());
        tree.files.push(SourceFile {
            display: root.to_path_buf(),
            rel: name,
        });
        return Ok(tree);
    }
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) => {
                tree.unreadable.push(Unparsable {
                    file: display(root, &rel),
                    line: 0,
                    column: 0,
                    message: format!("cannot read directory: {error}"),
                });
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if SKIPPED_DIRS.contains(&name.as_str()) {
                    continue;
                }
                tree.paths.insert(child.clone());
                pending.push(child);
            } else if kind.is_file() {
                tree.paths.insert(child.clone());
                let ext = Path::new(&name).extension().and_then(|e| e.to_str());
                if ext.is_some_and(|e| EXTENSIONS.contains(&e)) {
                    tree.files.push(SourceFile {
                        display: display(root, &child),
                        rel: child,
                    });
                }
            } else if kind.is_symlink() {
                // Counted as a path for hints (vendor/bin links), never read.
                tree.paths.insert(child);
            }
        }
    }
    tree.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(tree)
}

/// `cutover lint` shows `public/index.php`, `cutover lint app` shows `app/public/index.php`.
pub(crate) fn display(root: &Path, rel: &str) -> PathBuf {
    if root == Path::new(".") {
        PathBuf::from(rel)
    } else {
        root.join(rel)
    }
}

fn slash_path(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|c| c != "/")
        .collect::<Vec<_>>()
        .join("/")
}
