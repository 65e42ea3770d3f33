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
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

pub use rule::Rule;

/// What a lint run reports besides the hazards it is sure of, and what it knows of the
/// targets.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also report includes whose path comes from somewhere the linter cannot follow (a
    /// function parameter, a method's result, a variable set elsewhere) as `unknown-origin`.
    /// Never in `vendor/`, where dynamic includes are the autoloaders' business.
    pub strict: bool,
    /// The deploy paths the app is deployed to (`<path>/current -> releases/<id>`). With
    /// any, an absolute include path is a hazard only when it runs through one's `current`
    /// (or, on this machine, another symlink into its `releases/`); paths elsewhere
    /// (`/usr/share/php`) are not reported. Without, every absolute path is reported, and
    /// messages say only that it is a hazard if it runs through the deploy symlink.
    pub deploy_paths: Vec<PathBuf>,
    /// Parse every file, also those a byte search shows cannot change the report (no
    /// include, no `define()` or include_path call, no allow comment, no constant or
    /// variable another file's include path reads). Slower; the report is the same, except
    /// that syntax errors are then also reported in those files.
    pub parse_all: bool,
}

/// Uses listed in a finding; `uses_count` has them all.
pub const MAX_USES_LISTED: usize = 10;

/// A hazard, reported where it is defined: at the `define()`, `const` or assignment whose
/// value the include paths are built from (once for all its uses), or at the include,
/// `set_include_path()` or `opcache_compile_file()` itself when its path is written there.
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
    /// The includes (or calls) whose paths come from here, in file and line order: the first
    /// [`MAX_USES_LISTED`].
    pub uses: Vec<Use>,
    /// How many there are in all.
    pub uses_count: usize,
}

/// Where a finding's path is used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Use {
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
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
    let mut facts = analyze::analyze(&file, text, options);
    let mut definitions = analyze::Definitions::default();
    facts.define_into(&file.rel, &mut definitions);
    let judge = analyze::Judge {
        file: &file,
        dir: file.dir_components(),
        paths: None,
        options,
        allows: &facts.allows,
        definitions: &definitions,
    };
    let mut hits = judge.judge(&facts.sites);
    hits.append(&mut facts.hits);
    let allows: HashMap<&str, &[suppress::Allow]> =
        HashMap::from([(file.rel.as_str(), facts.allows.as_slice())]);
    group(hits, &allows, |_| path.to_path_buf())
}

/// Lints every `*.php`, `*.phtml`, `*.inc` and `*.module` file under `dir` (or `dir` itself
/// when it is a file). `.git`, `.hg`, `.svn` and `node_modules` are skipped; `vendor/` is
/// linted like the app, since its includes run in the same requests.
///
/// Each file is read and searched for the words the walk acts on, on all cores; a file with
/// any is parsed and walked once, and its syntax tree dropped right after: what the rest of
/// the run needs is a file's definitions and the include sites that may be hazards. A file
/// without is parsed only if those sites read a constant or variable it may define (see
/// [`Options::parse_all`]). Definitions are then known tree-wide, the sites' values are
/// resolved and judged (on all cores again), and the hits grouped by definition.
pub fn lint_dir(dir: &Path, options: &Options) -> Result<Report> {
    let tree = walk::walk(dir)?;
    let mut unparsable = tree.unreadable;
    let mut read: Vec<Read> = tree
        .files
        .par_iter()
        .map(|file| match std::fs::read(&file.display) {
            Ok(bytes) if options.parse_all => walk_file(file, bytes, options),
            Ok(bytes) => match analyze::need(&bytes) {
                analyze::Need::Defer { has_const } => Read::Deferred { has_const },
                analyze::Need::Parse => walk_file(file, bytes, options),
            },
            Err(error) => Read::Failed(format!("cannot read: {error}")),
        })
        .collect();

    // Deferred files the walked ones turn out to want, until none is left: each round's
    // files can define constants that want more.
    loop {
        let walked = tree
            .files
            .iter()
            .zip(&read)
            .filter_map(|(file, read)| match read {
                Read::Walked(facts) => Some((file, facts)),
                _ => None,
            });
        let wanted = analyze::Wanted::of(walked);
        let more: Vec<(usize, Read)> = read
            .par_iter()
            .enumerate()
            .filter_map(|(at, read)| match read {
                Read::Deferred { has_const } => Some((at, *has_const)),
                _ => None,
            })
            .filter_map(|(at, has_const)| {
                let file = &tree.files[at];
                if !wanted.may_want(file, has_const) {
                    return None;
                }
                let read = match std::fs::read(&file.display) {
                    Ok(bytes) if wanted.wants(file, has_const, &bytes) => {
                        walk_file(file, bytes, options)
                    }
                    Ok(_) => return None,
                    Err(error) => Read::Failed(format!("cannot read: {error}")),
                };
                Some((at, read))
            })
            .collect();
        if more.is_empty() {
            break;
        }
        for (at, walked) in more {
            read[at] = walked;
        }
    }

    // Constants and exported variables of the app, for every file's includes. Not from
    // vendor/: the app does not build include paths from its libraries' definitions.
    let mut definitions = analyze::Definitions::default();
    let mut facts = Vec::with_capacity(read.len());
    let mut files_scanned = 0;
    for (file, read) in tree.files.iter().zip(read) {
        match read {
            Read::Walked(mut file_facts) => {
                files_scanned += 1;
                if !file.in_vendor() {
                    file_facts.define_into(&file.rel, &mut definitions);
                }
                if let Some((line, column)) = file_facts.syntax_error {
                    unparsable.push(Unparsable {
                        file: file.display.clone(),
                        line,
                        column,
                        message: "syntax error; the rest of the file was linted".into(),
                    });
                }
                facts.push((file, file_facts));
            }
            Read::Deferred { .. } => files_scanned += 1,
            Read::Failed(message) => unparsable.push(Unparsable {
                file: file.display.clone(),
                line: 0,
                column: 0,
                message,
            }),
        }
    }

    let hits: Vec<analyze::Hit> = facts
        .par_iter_mut()
        .flat_map_iter(|(file, file_facts)| {
            let judge = analyze::Judge {
                file,
                dir: file.dir_components(),
                paths: Some(&tree.paths),
                options,
                allows: &file_facts.allows,
                definitions: &definitions,
            };
            let mut hits = judge.judge(&file_facts.sites);
            hits.append(&mut file_facts.hits);
            hits
        })
        .collect();
    let allows: HashMap<&str, &[suppress::Allow]> = facts
        .iter()
        .filter(|(_, f)| !f.allows.is_empty())
        .map(|(file, f)| (file.rel.as_str(), f.allows.as_slice()))
        .collect();
    let findings = group(hits, &allows, |rel| walk::display(dir, rel));
    unparsable.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(Report {
        findings,
        files_scanned,
        unparsable,
    })
}

/// What became of one file of the tree.
enum Read {
    Walked(analyze::FileFacts),
    /// Read, and its bytes hold nothing the walk acts on (see `analyze::prescan`): parsed
    /// only if the walked files want its definitions.
    Deferred {
        has_const: bool,
    },
    Failed(String),
}

/// Files this large are parsed one at a time.
const LARGE_FILE: usize = 256 * 1024;

/// Held while a large file is parsed and walked: a syntax tree takes 50–130 times its
/// file's size (a 1.5 MB generated array, 200 MB), so two at once could double the peak.
static LARGE_FILE_PARSE: Mutex<()> = Mutex::new(());

fn walk_file(file: &walk::SourceFile, bytes: Vec<u8>, options: &Options) -> Read {
    let _one_at_a_time = (bytes.len() >= LARGE_FILE).then(|| {
        LARGE_FILE_PARSE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    });
    // Valid UTF-8 (nearly every file) is taken as it is, without a copy.
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    };
    Read::Walked(analyze::analyze(file, &text, options))
}

/// One finding per definition (with every include built from it as a use), one per hit
/// without one. A definition accepted by an allow comment on its line reports nothing.
fn group(
    hits: Vec<analyze::Hit>,
    allows: &HashMap<&str, &[suppress::Allow]>,
    display: impl Fn(&str) -> PathBuf,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut groups: HashMap<analyze::Definition, (Rule, Vec<Use>)> = HashMap::new();
    for hit in hits {
        let at = Use {
            file: display(&hit.file),
            line: hit.line,
            column: hit.column,
        };
        match hit.definition {
            Some(definition) => {
                let group = groups
                    .entry(definition)
                    .or_insert_with(|| (hit.rule, Vec::new()));
                group.0 = group.0.min(hit.rule);
                group.1.push(at);
            }
            None => findings.push(Finding {
                file: at.file.clone(),
                line: at.line,
                column: at.column,
                rule: hit.rule,
                message: hit.message,
                hint: hit.hint,
                uses: vec![at],
                uses_count: 1,
            }),
        }
    }
    for (definition, (rule, mut uses)) in groups {
        let accepted = allows.get(definition.file.as_str()).is_some_and(|allows| {
            allows
                .iter()
                .any(|a| a.covers(rule, definition.line, definition.line))
        });
        if accepted {
            continue;
        }
        uses.sort();
        let count = uses.len();
        let first = &uses[0];
        let used = if count == 1 {
            format!(
                "an include path is built from it ({}:{})",
                first.file.display(),
                first.line
            )
        } else {
            format!(
                "{count} include paths are built from it (first {}:{})",
                first.file.display(),
                first.line
            )
        };
        let message = format!(
            "{} is {}, and {used}: {}",
            definition.what, definition.start, definition.why
        );
        uses.truncate(MAX_USES_LISTED);
        findings.push(Finding {
            file: display(&definition.file),
            line: definition.line,
            column: definition.column,
            rule,
            message,
            hint: definition.hint,
            uses,
            uses_count: count,
        });
    }
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    findings
}

fn lossy_path<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// Root-relative paths ('/'-separated) of every file and directory of the tree, for hints
/// that name the real file an absolute or relative path meant.
pub(crate) type TreePaths = HashSet<String>;
