//! Finds PHP `include`/`require` paths that can resolve through the deploy symlink at run
//! time instead of staying inside their own release.
//!
//! `__FILE__` and `__DIR__` are resolved (real) paths, so an include built from them stays in
//! the release the including file came from. A path spelled through `current` — an absolute
//! literal, `$_SERVER['DOCUMENT_ROOT']`, a root from the environment or an ini setting, or a
//! relative path looked up in include_path and the working directory (php-fpm's is the
//! script's directory as the web server named it, i.e. through the symlink) — is resolved
//! again at include time. Mid-request that can land in the other release (v1's `a.php`
//! including v2's `b.php`: fatal errors), and each worker's realpath cache can keep it
//! pointing at the old release for `realpath_cache_ttl`.
//!
//! Source is parsed with tree-sitter-php; every judgement is made on the syntax tree. Values
//! are followed through variables (per scope, in source order), `define()`/`const`
//! constants and class constants (across the whole tree), and variables set by a file that
//! is included by a `__DIR__`-based path.

mod analyze;
mod rule;
mod suppress;
mod walk;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use rule::Rule;

/// What a lint run reports besides the hazards it is sure of.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also report includes whose path comes from somewhere the linter cannot follow (a
    /// function parameter, a method's result, a variable set elsewhere) as `unknown-origin`.
    /// Never in `vendor/`, where dynamic includes are the autoloaders' business.
    pub strict: bool,
}

/// One include (or `set_include_path()`, `opcache_compile_file()` call) that can leave its
/// release at run time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub rule: Rule,
    /// What was found and why it is a hazard.
    pub message: String,
    /// The `__DIR__`-based form to use instead, or what else to do.
    pub hint: String,
}

/// A file that could not be read, or whose syntax tree has errors. A file with syntax
/// errors is still linted outside the broken parts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unparsable {
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub files_scanned: usize,
    pub unparsable: Vec<Unparsable>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Lints one source text on its own: constants and variables are followed within the file
/// only, and hints cannot point at files of a tree.
pub fn lint_source(path: &Path, text: &str) -> Vec<Finding> {
    lint_source_with(path, text, &Options::default())
}

/// [`lint_source`] with options.
pub fn lint_source_with(path: &Path, text: &str, options: &Options) -> Vec<Finding> {
    let file = walk::SourceFile::single(path);
    let mut knowledge = analyze::Knowledge::default();
    let collected = analyze::analyze(&file, text, &knowledge, options, false);
    knowledge.absorb(&file.rel, collected);
    analyze::analyze(&file, text, &knowledge, options, true).findings
}

/// Lints every `*.php`, `*.phtml`, `*.inc` and `*.module` file under `dir` (or `dir` itself
/// when it is a file). `.git`, `.hg`, `.svn` and `node_modules` are skipped; `vendor/` is
/// linted like the app, since its includes run in the same requests.
pub fn lint_dir(dir: &Path, options: &Options) -> Result<Report> {
    let tree = walk::walk(dir)?;
    let mut unparsable = tree.unreadable;
    let mut texts = Vec::with_capacity(tree.files.len());
    for file in tree.files {
        match std::fs::read(&file.display) {
            Ok(bytes) => {
                let text = match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
                };
                texts.push((file, text));
            }
            Err(error) => unparsable.push(Unparsable {
                file: file.display.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {error}"),
            }),
        }
    }

    // Constants and exported variables first: a constant defined in config.php is used in
    // index.php. Twice, so a definition built from another file's definition
    // (`define('LIB', ROOT . '/lib')`) is known too. Not from vendor/: the app does not
    // build include paths from its libraries' definitions, and parsing is most of the time
    // a run takes, so vendor/ is parsed once, for its own findings.
    let mut knowledge = analyze::Knowledge {
        paths: Some(tree.paths),
        ..Default::default()
    };
    for _ in 0..2 {
        let collected: Vec<_> = texts
            .par_iter()
            .filter(|(file, _)| !file.in_vendor())
            .map(|(file, text)| {
                (
                    file.rel.clone(),
                    analyze::analyze(file, text, &knowledge, options, false),
                )
            })
            .collect();
        let mut next = analyze::Knowledge {
            paths: knowledge.paths.take(),
            ..Default::default()
        };
        for (rel, analysis) in collected {
            next.absorb(&rel, analysis);
        }
        knowledge = next;
    }

    let analyses: Vec<_> = texts
        .par_iter()
        .map(|(file, text)| {
            (
                file,
                analyze::analyze(file, text, &knowledge, options, true),
            )
        })
        .collect();
    let mut findings = Vec::new();
    for (file, analysis) in analyses {
        findings.extend(analysis.findings);
        if let Some((line, column)) = analysis.syntax_error {
            unparsable.push(Unparsable {
                file: file.display.clone(),
                line,
                column,
                message: "syntax error; the rest of the file was linted".into(),
            });
        }
    }
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    unparsable.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(Report {
        findings,
        files_scanned: texts.len(),
        unparsable,
    })
}

fn lossy_path<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// Root-relative paths ('/'-separated) of every file and directory of the tree, for hints
/// that name the real file an absolute or relative path meant.
pub(crate) type TreePaths = HashSet<String>;

/// Origins of exported variables, by root-relative file.
pub(crate) type Exports = HashMap<String, HashMap<String, Vec<analyze::Origin>>>;
