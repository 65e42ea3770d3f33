//! Findings: which rule a possible start breaks, the message that says why, and reporting
//! (unless a comment accepts it). Apart from the walk so the wording of every finding is in
//! one place.

use tree_sitter::Node;

use super::path::{literal_kind, LiteralKind};
use super::syntax::position;
use super::value::{Origin, Source, Value};
use super::Walker;
use crate::rule::{Rule, WHY};
use crate::Finding;

/// How a path is used, for messages and hints.
#[derive(Debug, Clone, Copy)]
pub(super) enum PathUse<'k> {
    /// `require` and friends: the keyword.
    Include(&'k str),
    /// `opcache_compile_file()`.
    Compile,
}

impl<'t, 'k> Walker<'t, 'k> {
    /// The rule a possible start breaks, if any.
    pub(super) fn hazard(&self, origin: &Origin) -> Option<Rule> {
        match &origin.source {
            Source::Release { .. } => None,
            Source::Literal => match literal_kind(&origin.text) {
                LiteralKind::Absolute => Some(Rule::AbsolutePath),
                LiteralKind::Relative => Some(Rule::RelativePath),
                LiteralKind::Wrapper => None,
            },
            Source::DocumentRoot(_) => Some(Rule::DocumentRoot),
            Source::WorkingDirectory => Some(Rule::WorkingDirectory),
            Source::Environment(_) => Some(Rule::Environment),
            Source::Ini(_) => Some(Rule::IniSetting),
            Source::IncludePath(_) => Some(Rule::IncludePath),
            Source::Unknown(_) => {
                (self.options.strict && !self.file.in_vendor()).then_some(Rule::UnknownOrigin)
            }
        }
    }

    pub(super) fn check_path(&mut self, node: Node<'t>, usage: PathUse<'_>, value: &Value) {
        let mut worst: Option<(Rule, &Origin)> = None;
        for origin in value {
            if let Some(rule) = self.hazard(origin) {
                if worst.is_none_or(|(w, _)| rule < w) {
                    worst = Some((rule, origin));
                }
            }
        }
        let Some((rule, origin)) = worst else { return };
        let origin = origin.clone();
        let what = self.describe(&origin);
        let (rule, message) = match usage {
            PathUse::Compile => (
                Rule::PreloadPath,
                format!(
                    "opcache_compile_file() of a path built from {what}: preloading resolves it \
                     once, at php-fpm start, through the deploy symlink into whichever release \
                     it names then, and preloaded code is never revalidated nor dropped by \
                     opcache_reset(); __DIR__ is this release's real path"
                ),
            ),
            PathUse::Include(keyword) if rule != Rule::UnknownOrigin && is_autoloader(&origin) => (
                Rule::ComposerAutoload,
                format!(
                    "{keyword} of the Composer autoloader through {what}: it can come from the \
                     other release than this file, and every class it loads then comes from \
                     that release; {WHY}"
                ),
            ),
            PathUse::Include(keyword) => (rule, self.message(rule, keyword, &origin, &what)),
        };
        let hint = self.hint(rule, usage, &origin);
        self.report(node, rule, message, hint);
    }

    fn message(&self, rule: Rule, keyword: &str, origin: &Origin, what: &str) -> String {
        match rule {
            Rule::RelativePath => {
                let looked_up = if origin.text.starts_with("./") || origin.text.starts_with("../") {
                    "resolved against the working directory"
                } else {
                    "looked up in include_path and the working directory"
                };
                format!(
                    "{keyword} of {what}, {looked_up} (php-fpm's is the script's directory, \
                     named through the symlink): {WHY}"
                )
            }
            Rule::DocumentRoot => format!(
                "{keyword} of a path built from {what}, which the web server passes through the \
                 symlink (unless nginx uses $realpath_root): {WHY}"
            ),
            Rule::WorkingDirectory => format!(
                "{keyword} of a path built from {what}: php-fpm's working directory is the \
                 script's directory, named through the symlink; {WHY}"
            ),
            Rule::Environment | Rule::IniSetting => format!(
                "{keyword} of a path built from {what}: a configured root usually names the \
                 deploy symlink; {WHY}"
            ),
            Rule::IncludePath => format!(
                "{keyword} of a path built from {what}: include_path entries usually name the \
                 deploy symlink or the working directory; {WHY}"
            ),
            Rule::UnknownOrigin => format!(
                "{keyword} of {what}, whose origin cutover-lint cannot follow (reported with \
                 --strict): if it names the deploy symlink, it is resolved again at include \
                 time and can load the other release's file mid-request"
            ),
            _ => format!("{keyword} of {what}: {WHY}"),
        }
    }

    /// "the absolute path '/srv/app/current/lib/a.php' (via $root on line 3)".
    pub(super) fn describe(&self, origin: &Origin) -> String {
        let shown_text = if origin.complete {
            origin.text.clone()
        } else {
            format!("{}…", origin.text)
        };
        let what = match &origin.source {
            Source::Literal => match literal_kind(&origin.text) {
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
        };
        if origin.via.is_empty() {
            return what;
        }
        let steps: Vec<String> = origin
            .via
            .iter()
            .map(|via| {
                if via.file == self.file_key {
                    format!("{} on line {}", via.what, via.line)
                } else {
                    format!("{} in {}:{}", via.what, via.file, via.line)
                }
            })
            .collect();
        format!("{what} (via {})", steps.join(", "))
    }

    pub(super) fn report(&mut self, node: Node<'t>, rule: Rule, message: String, hint: String) {
        let first = node.start_position().row + 1;
        let last = node.end_position().row + 1;
        if self.allows.iter().any(|a| a.covers(rule, first, last)) {
            return;
        }
        let (line, column) = position(node, self.src);
        self.findings.push(Finding {
            file: self.file.display.clone(),
            line,
            column,
            rule,
            message,
            hint,
        });
    }

    /// A script that calls opcache_compile_file(), or is named like Symfony's
    /// `config/preload.php`, is most likely an `opcache.preload` script.
    pub(super) fn preload_script(&mut self) {
        if !self.lint {
            return;
        }
        let name = self.file.file_name();
        let named = name == "preload.php" || name.ends_with(".preload.php");
        let at = self
            .first_compile
            .or(if named { self.first_include } else { None });
        let Some(at) = at else { return };
        self.report(
            at,
            Rule::OpcachePreload,
            "this looks like an opcache.preload script: preloaded code is never revalidated \
             and survives opcache_reset(), so a deploy takes effect only after a full php-fpm \
             restart"
                .into(),
            "if opcache.preload names this file, set [refresh] strategy = [\"fpm-reload\"] so \
             each deploy restarts php-fpm; if it does not, accept the line with \
             `// cutover-lint: allow(opcache-preload)`"
                .into(),
        );
    }
}

/// Composer's `vendor/autoload.php`, by the literal text at the end of the path.
fn is_autoloader(origin: &Origin) -> bool {
    origin.complete && origin.text.ends_with("vendor/autoload.php")
}
