//! Judging include paths once their values are resolved: which rule a possible start
//! breaks, the message that says why (claiming the deploy symlink only when the path is
//! known to run through it), and the [`Hit`]s that lib.rs groups into findings by the
//! definition they come from. Apart from the walk so the wording of every finding is in one
//! place.

use std::path::PathBuf;

use super::path::{literal_kind, LiteralKind};
use super::resolve::Definitions;
use super::value::{Origin, Source, Value, Via};
use super::{Site, SiteKind};
use crate::rule::Rule;
use crate::suppress::Allow;
use crate::walk::SourceFile;
use crate::{Options, TreePaths};

/// Why a path that runs through the deploy symlink is a hazard.
const RESOLVED_AGAIN: &str = "resolved again at include time (and cached per worker for \
     realpath_cache_ttl), so it can load the other release's file mid-request; __DIR__ is \
     this release's real path";

/// One include (or call) judged a hazard, before findings are grouped by their definition.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub rule: Rule,
    /// The include itself (root-relative file, line, column).
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Message and hint for a finding at the include.
    pub message: String,
    pub hint: String,
    /// Where the hazardous start was defined (a constant, a variable), when it was: the
    /// finding is then reported there, once for all of its uses.
    pub definition: Option<Definition>,
}

/// The definition a hazardous start came from, and what to say about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Definition {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// "constant ABSPATH", "$root".
    pub what: String,
    /// "the absolute path '/usr/share/wordpress/'".
    pub start: String,
    /// Why that start is a hazard (or may be).
    pub why: String,
    pub hint: String,
}

/// Where an absolute path leads, as far as the linter knows.
enum Reach {
    /// Through `<deploy>/current` (or another symlink into `<deploy>/releases`).
    Deploy(PathBuf),
    /// An unfinished path that may continue into `<deploy>/current`.
    Perhaps,
    /// Outside every deploy path given: not an atomicity hazard.
    Elsewhere,
    /// No deploy path given: it may or may not.
    Unknown,
}

/// What judging a file needs to know.
pub(crate) struct Judge<'a> {
    pub file: &'a SourceFile,
    pub dir: Vec<String>,
    pub paths: Option<&'a TreePaths>,
    pub options: &'a Options,
    pub allows: &'a [Allow],
    pub definitions: &'a Definitions,
}

impl Judge<'_> {
    pub fn judge(&self, sites: &[Site]) -> Vec<Hit> {
        let mut hits = Vec::new();
        for site in sites {
            match &site.kind {
                SiteKind::Include { keyword, value } => {
                    let value = self.definitions.resolve(value);
                    hits.extend(self.check_path(site, PathUse::Include(keyword), &value));
                }
                SiteKind::Compile { value } => {
                    let value = self.definitions.resolve(value);
                    hits.extend(self.check_path(site, PathUse::Compile, &value));
                }
                SiteKind::SetIncludePath { function, entries } => {
                    hits.extend(self.set_include_path(site, function, entries));
                }
            }
        }
        hits
    }

    /// The rule a possible start breaks, if any.
    fn hazard(&self, origin: &Origin) -> Option<Rule> {
        match &origin.source {
            Source::Release { .. } => None,
            Source::Literal => match literal_kind(&origin.text) {
                LiteralKind::Absolute => match self.reach(origin) {
                    Reach::Elsewhere => None,
                    _ => Some(Rule::AbsolutePath),
                },
                LiteralKind::Relative => Some(Rule::RelativePath),
                LiteralKind::Wrapper => None,
            },
            Source::DocumentRoot(_) => Some(Rule::DocumentRoot),
            Source::WorkingDirectory => Some(Rule::WorkingDirectory),
            Source::Environment(_) => Some(Rule::Environment),
            Source::Ini(_) => Some(Rule::IniSetting),
            Source::IncludePath(_) => Some(Rule::IncludePath),
            // Resolution leaves none of these; an unresolved one is unknown.
            Source::Unknown(_) | Source::Constant { .. } | Source::Imported { .. } => {
                (self.options.strict && !self.file.in_vendor()).then_some(Rule::UnknownOrigin)
            }
        }
    }

    fn reach(&self, origin: &Origin) -> Reach {
        if self.options.deploy_paths.is_empty() {
            return Reach::Unknown;
        }
        match super::path::deploy_reach(&self.options.deploy_paths, &origin.text, origin.complete) {
            Some((current, true)) => Reach::Deploy(current),
            Some((_, false)) => Reach::Perhaps,
            None => Reach::Elsewhere,
        }
    }

    fn check_path(&self, site: &Site, usage: PathUse<'_>, value: &Value) -> Option<Hit> {
        let mut worst: Option<(Rule, &Origin)> = None;
        for origin in value {
            if let Some(rule) = self.hazard(origin) {
                if worst.is_none_or(|(w, _)| rule < w) {
                    worst = Some((rule, origin));
                }
            }
        }
        let (rule, origin) = worst?;
        let what = self.describe(origin);
        let why = self.why(rule, origin);
        let (rule, message) = match usage {
            PathUse::Compile | PathUse::Value => (
                Rule::PreloadPath,
                format!(
                    "opcache_compile_file() of a path built from {what}: preloading resolves it \
                     once, at php-fpm start, and preloaded code is never revalidated nor \
                     dropped by opcache_reset(); {why}"
                ),
            ),
            PathUse::Include(keyword) if rule != Rule::UnknownOrigin && is_autoloader(origin) => (
                Rule::ComposerAutoload,
                format!(
                    "{keyword} of the Composer autoloader through {what}: it can come from the \
                     other release than this file, and every class it loads then comes from \
                     that release; {why}"
                ),
            ),
            PathUse::Include(keyword) => (rule, self.message(rule, keyword, origin, &what, &why)),
        };
        let hint = self.hint(rule, usage, origin, &self.dir);
        self.hit(site, rule, message, hint, Some(origin))
    }

    /// The clause that says why a start is a hazard: for certain when the path is known to
    /// run through a deploy path's `current`, conditionally otherwise.
    fn why(&self, rule: Rule, origin: &Origin) -> String {
        match (rule, self.reach(origin)) {
            (
                Rule::AbsolutePath | Rule::ComposerAutoload | Rule::PreloadPath,
                Reach::Deploy(current),
            ) if origin.is_literal() => {
                format!(
                    "it runs through the deploy symlink {}, {RESOLVED_AGAIN}",
                    current.display()
                )
            }
            _ => format!("if it runs through the deploy symlink, it is {RESOLVED_AGAIN}"),
        }
    }

    fn message(&self, rule: Rule, keyword: &str, origin: &Origin, what: &str, why: &str) -> String {
        match rule {
            Rule::RelativePath => {
                let looked_up = if origin.text.starts_with("./") || origin.text.starts_with("../") {
                    "resolved against the working directory"
                } else {
                    "looked up in include_path and the working directory"
                };
                format!(
                    "{keyword} of {what}, {looked_up} (php-fpm's is the script's directory as \
                     the web server named it): {why}"
                )
            }
            Rule::DocumentRoot => format!(
                "{keyword} of a path built from {what}, which the web server passes as it names \
                 it (a symlink stays one unless nginx uses $realpath_root): {why}"
            ),
            Rule::WorkingDirectory => format!(
                "{keyword} of a path built from {what}: php-fpm's working directory is the \
                 script's directory as the web server named it; {why}"
            ),
            Rule::Environment | Rule::IniSetting => {
                format!("{keyword} of a path built from {what}, a configured root: {why}")
            }
            Rule::IncludePath => format!(
                "{keyword} of a path built from {what}, whose entries are configured \
                 elsewhere: {why}"
            ),
            Rule::UnknownOrigin => format!(
                "{keyword} of {what}, whose origin cutover-lint cannot follow (reported with \
                 --strict): if it names the deploy symlink, it is resolved again at include \
                 time and can load the other release's file mid-request"
            ),
            _ => format!("{keyword} of {what}: {why}"),
        }
    }

    /// "the absolute path '/srv/app/current/lib/a.php' (via $root on line 3)".
    fn describe(&self, origin: &Origin) -> String {
        let what = self.start(origin, &origin.text, origin.complete);
        if origin.via.is_empty() {
            return what;
        }
        let steps: Vec<String> = origin
            .via
            .iter()
            .map(|via| {
                if *via.file == *self.file.rel {
                    format!("{} on line {}", via.what, via.line)
                } else {
                    format!("{} in {}:{}", via.what, via.file, via.line)
                }
            })
            .collect();
        format!("{what} (via {})", steps.join(", "))
    }

    /// The start of a value, without the steps it took.
    fn start(&self, origin: &Origin, text: &str, complete: bool) -> String {
        let shown_text = if complete {
            text.to_string()
        } else {
            format!("{text}…")
        };
        match &origin.source {
            Source::Literal => match literal_kind(text) {
                LiteralKind::Absolute => format!("the absolute path '{shown_text}'"),
                _ => format!("the relative path '{shown_text}'"),
            },
            Source::Release { .. } => "__DIR__".to_string(),
            Source::DocumentRoot(expr)
            | Source::Environment(expr)
            | Source::Ini(expr)
            | Source::IncludePath(expr) => expr.clone(),
            Source::WorkingDirectory => "getcwd()".to_string(),
            Source::Unknown(what) => what.clone(),
            Source::Constant { name, .. } => format!("constant {name}"),
            Source::Imported { name, .. } => format!("${name}"),
        }
    }

    fn set_include_path(&self, site: &Site, function: &str, entries: &[Value]) -> Option<Hit> {
        let mut worst: Option<(Rule, Origin)> = None;
        for entry in entries {
            for origin in self.definitions.resolve(entry) {
                if origin.is_literal() && origin.text.is_empty() {
                    continue;
                }
                if matches!(origin.source, Source::IncludePath(_)) {
                    continue;
                }
                if let Some(rule) = self.hazard(&origin) {
                    if worst.as_ref().is_none_or(|(w, _)| rule < *w) {
                        worst = Some((rule, origin));
                    }
                }
            }
        }
        let (rule, origin) = worst?;
        if rule == Rule::UnknownOrigin {
            return None;
        }
        let what = self.describe(&origin);
        let known = matches!(self.reach(&origin), Reach::Deploy(_)) && origin.is_literal();
        let through = if known {
            "it runs through the deploy symlink, so later relative includes"
        } else {
            "later relative includes are looked up there at include time; if it runs through \
             the deploy symlink, they"
        };
        let message = format!(
            "{function}() with an entry built from {what}: {through} can load the other \
             release's files mid-request; __DIR__ is this release's real path"
        );
        let hint = "build include_path entries from __DIR__ \
             (`set_include_path(__DIR__ . '/lib' . PATH_SEPARATOR . get_include_path())`), or \
             better, include files by __DIR__-based paths"
            .to_string();
        // The call is where include_path is defined: a finding of its own.
        self.hit(site, Rule::SetIncludePath, message, hint, None)
    }

    fn hit(
        &self,
        site: &Site,
        rule: Rule,
        message: String,
        hint: String,
        origin: Option<&Origin>,
    ) -> Option<Hit> {
        if self
            .allows
            .iter()
            .any(|a| a.covers(rule, site.first_line, site.last_line))
        {
            return None;
        }
        let definition = origin.and_then(|origin| self.definition(rule, origin));
        Some(Hit {
            rule,
            file: self.file.rel.clone(),
            line: site.line,
            column: site.column,
            message,
            hint,
            definition,
        })
    }

    /// The definition a start came in by: the first step it took (a `define()`, a `const`,
    /// an assignment), where the hazardous text was written.
    fn definition(&self, rule: Rule, origin: &Origin) -> Option<Definition> {
        if rule == Rule::UnknownOrigin {
            return None;
        }
        let root: &Via = origin.via.last()?;
        let (text, complete) = root.start.clone()?;
        let start = self.start(origin, &text, complete);
        let why = match rule {
            Rule::ComposerAutoload | Rule::PreloadPath => self.why(Rule::AbsolutePath, origin),
            _ => self.why(rule, origin),
        };
        let dir = SourceFile::dir_of(&root.file);
        let at_root = Origin {
            text: text.clone(),
            complete,
            via: Vec::new(),
            ..origin.clone()
        };
        let hint = self.hint(rule, PathUse::Value, &at_root, &dir);
        Some(Definition {
            file: root.file.to_string(),
            line: root.line,
            column: root.column,
            what: root.what.clone(),
            start,
            why,
            hint,
        })
    }
}

/// How a path is used, for messages and hints.
#[derive(Debug, Clone, Copy)]
pub(super) enum PathUse<'k> {
    /// `require` and friends: the keyword.
    Include(&'k str),
    /// `opcache_compile_file()`.
    Compile,
    /// A definition's value, used by includes.
    Value,
}

/// Composer's `vendor/autoload.php`, by the literal text at the end of the path.
fn is_autoloader(origin: &Origin) -> bool {
    origin.complete && origin.text.ends_with("vendor/autoload.php")
}
