//! Hints: what to write instead of a hazardous path, naming the tree's real file or
//! directory as a `__DIR__` expression when one matches. Apart because finding the file
//! searches the tree's paths, which the findings themselves never need.

use super::findings::Judge;
use super::findings::PathUse;
use super::path::{relative_path, resolve};
use super::value::{Origin, Source};
use crate::rule::Rule;

impl Judge<'_> {
    /// What to write instead, from directory `dir` (the including file's, or the
    /// definition's).
    pub(super) fn hint(
        &self,
        rule: Rule,
        usage: PathUse<'_>,
        origin: &Origin,
        dir: &[String],
    ) -> String {
        let (open, close) = match usage {
            PathUse::Include(keyword) => (format!("{keyword} "), ";"),
            PathUse::Compile => ("opcache_compile_file(".to_string(), ");"),
            PathUse::Value => return self.value_hint(origin, dir),
        };
        if rule == Rule::UnknownOrigin {
            return "build the path from __DIR__, or accept it with `// cutover-lint: \
                    allow(unknown-origin)`"
                .into();
        }
        let mut hint = match self.suggestion(origin, dir) {
            Some(Suggestion::File { expr, target }) => format!(
                "use `{open}{expr}{close}` — {target} from this file's real directory, so it \
                 stays in this release"
            ),
            Some(Suggestion::Dir { expr, target }) => format!(
                "start the path from `{expr}` ({target}/ from this file's real directory), so it \
                 stays in this release"
            ),
            None if rule == Rule::RelativePath && origin.complete => {
                let path = origin.text.trim_start_matches("./");
                format!("use `{open}__DIR__ . '/{path}'{close}` if {path} is next to this file, so it stays in this release")
            }
            None => format!(
                "build the path from __DIR__, this file's real directory: \
                 `{open}__DIR__ . '/…'{close}` or `dirname(__DIR__) . '/…'`"
            ),
        };
        match rule {
            Rule::AbsolutePath if self.options.deploy_paths.is_empty() => hint.push_str(
                "; if the file is outside the deploy path, give --deploy-path (or [deploy] \
                 path) and such paths are not reported, or accept the line with \
                 `// cutover-lint: allow(absolute-path)`",
            ),
            Rule::PreloadPath => hint.push_str("; restart php-fpm on every deploy (fpm-reload)"),
            _ => {}
        }
        hint
    }

    /// The tree's file or directory a hazardous path most likely means, as a `__DIR__`
    /// expression from this file.
    /// What to define a constant or variable as instead.
    fn value_hint(&self, origin: &Origin, dir: &[String]) -> String {
        let mut hint = match self.suggestion(origin, dir) {
            Some(Suggestion::File { expr, target } | Suggestion::Dir { expr, target }) => {
                format!(
                    "set it from `{expr}` ({target} from the defining file's real directory), \
                     so every include built from it stays in this release"
                )
            }
            None => "set it from __DIR__, the defining file's real directory: `__DIR__ . '/…'` \
                     or `dirname(__DIR__) . '/…'`"
                .to_string(),
        };
        if self.options.deploy_paths.is_empty() && origin.is_literal() {
            hint.push_str(
                "; if the path is outside the deploy path, give --deploy-path (or [deploy] \
                 path) and such paths are not reported, or accept the definition with \
                 `// cutover-lint: allow(absolute-path)` on its line",
            );
        }
        hint
    }

    fn suggestion(&self, origin: &Origin, dir: &[String]) -> Option<Suggestion> {
        let paths = self.paths?;
        let text = if origin.complete {
            origin.text.as_str()
        } else {
            // Only the part up to the last '/' is a directory for sure.
            &origin.text[..origin.text.rfind('/').map_or(0, |i| i + 1)]
        };
        let parts: Vec<&str> = text
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.is_empty() {
            return None;
        }
        let exists = |candidate: &str| paths.contains(candidate);
        let mut found = None;
        match &origin.source {
            Source::Literal if text.starts_with('/') => {
                // '/srv/app/current/lib/a.php': the longest tail that names a path here.
                for start in 0..parts.len() {
                    if parts[start..].contains(&"..") {
                        continue;
                    }
                    let candidate = parts[start..].join("/");
                    if exists(&candidate) {
                        found = Some(candidate);
                        break;
                    }
                }
            }
            Source::Literal => {
                // Next to this file first (PHP's last resort), then the tree's root (the
                // usual working directory).
                let candidates = [resolve(dir, 0, text), resolve(&[], 0, text)];
                found = candidates.into_iter().flatten().find(|c| exists(c));
            }
            Source::Unknown(_)
            | Source::Release { .. }
            | Source::Constant { .. }
            | Source::Imported { .. } => {}
            _ => {
                // A root from the server or the environment: the tree's root, or a usual
                // document root inside it.
                for base in ["", "public", "web", "htdocs", "public_html"] {
                    if !base.is_empty() && !exists(base) {
                        continue;
                    }
                    let base: Vec<String> = base
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect();
                    if let Some(candidate) = resolve(&base, 0, text).filter(|c| exists(c)) {
                        found = Some(candidate);
                        break;
                    }
                }
            }
        }
        let target = found?;
        let relative = relative_path(dir, &target);
        if origin.complete {
            let expr = if relative.is_empty() {
                "__DIR__".to_string()
            } else {
                format!("__DIR__ . '/{relative}'")
            };
            Some(Suggestion::File { expr, target })
        } else {
            let expr = if relative.is_empty() {
                "__DIR__ . '/'".to_string()
            } else {
                format!("__DIR__ . '/{relative}/'")
            };
            Some(Suggestion::Dir { expr, target })
        }
    }
}

enum Suggestion {
    File { expr: String, target: String },
    Dir { expr: String, target: String },
}
