//! The statements that load files or change where they are found: include/require,
//! `define()`, `set_include_path()`/`ini_set('include_path')` and `opcache_compile_file()`,
//! and the variables an included file of the tree brings in. Apart because here a value is
//! not only computed but acted on: judged as a path, defined as a constant, or imported.

use tree_sitter::Node;

use super::findings::PathUse;
use super::path::resolve;
use super::value::{concat, union_into, Origin, Source, Value};
use super::Walker;
use crate::rule::Rule;

impl<'t, 'k> Walker<'t, 'k> {
    pub(super) fn include(&mut self, node: Node<'t>) {
        let keyword = match node.kind() {
            "include_expression" => "include",
            "include_once_expression" => "include_once",
            "require_expression" => "require",
            _ => "require_once",
        };
        let Some(arg) = node.named_child(0) else {
            return;
        };
        let value = self.eval(arg);
        self.import_exports(&value);
        if self.lint {
            self.first_include.get_or_insert(node);
            self.check_path(node, PathUse::Include(keyword), &value);
        }
    }

    /// An include of a file of the tree by a `__DIR__`-based path brings that file's
    /// top-level variables into this scope (a config.php that sets `$root`).
    fn import_exports(&mut self, value: &Value) {
        let [origin] = value.as_slice() else { return };
        let Source::Release { up } = origin.source else {
            return;
        };
        if !origin.complete {
            return;
        }
        let Some(target) = resolve(&self.dir, up, &origin.text) else {
            return;
        };
        if target == self.file.rel {
            return;
        }
        let knowledge = self.knowledge;
        let Some(exports) = knowledge.exports.get(&target) else {
            return;
        };
        let mut names: Vec<_> = exports.keys().cloned().collect();
        names.sort();
        let add = self.conditional();
        for name in names {
            let value = exports[&name].clone();
            let vars = &mut self.scope().vars;
            match vars.get_mut(&name) {
                Some(known) if add => union_into(known, value),
                _ => {
                    vars.insert(name, value);
                }
            }
        }
    }

    pub(super) fn call(&mut self, node: Node<'t>) {
        let Some(name) = self.function_name(node) else {
            return;
        };
        let args = self.arguments(node);
        match name.as_str() {
            "define" => {
                let (Some(key), Some(value)) = (args.first(), args.get(1)) else {
                    return;
                };
                let Some(key) = self.key(*key) else { return };
                let key = key.rsplit('\\').next().unwrap_or(&key).to_string();
                let value = self.eval(*value);
                self.define(key, value, node);
            }
            "set_include_path" if self.lint => {
                if let Some(arg) = args.first() {
                    self.set_include_path(node, *arg);
                }
            }
            "ini_set" if self.lint => {
                let key = args.first().and_then(|k| self.key(*k));
                if let (Some("include_path"), Some(arg)) = (key.as_deref(), args.get(1)) {
                    self.set_include_path(node, *arg);
                }
            }
            "opcache_compile_file" if self.lint => {
                self.first_compile.get_or_insert(node);
                if let Some(arg) = args.first() {
                    let value = self.eval(*arg);
                    self.check_path(node, PathUse::Compile, &value);
                }
            }
            _ => {}
        }
    }

    /// The entries of a new include_path, each judged like an include path; keeping the
    /// old value (`get_include_path()`) is not this call's doing.
    fn set_include_path(&mut self, node: Node<'t>, arg: Node<'t>) {
        let (leaves, left_out) = self.concat_leaves(arg);
        let mut entries: Vec<Vec<Value>> = vec![Vec::new()];
        for leaf in leaves {
            let is_implode = matches!(
                self.function_name(leaf).as_deref(),
                Some("implode" | "join")
            ) && leaf.kind() == "function_call_expression";
            if is_implode {
                // implode(PATH_SEPARATOR, [...]): every element is an entry.
                if let Some(array) = self.arguments(leaf).get(1).copied() {
                    for origin in self.eval(array) {
                        entries.push(vec![vec![origin]]);
                    }
                    entries.push(Vec::new());
                }
                continue;
            }
            let value = self.eval(leaf);
            match value.as_slice() {
                [origin] if origin.is_literal() && origin.complete => {
                    let mut pieces = origin.text.split(':');
                    if let Some(first) = pieces.next() {
                        if let Some(entry) = entries.last_mut() {
                            entry.push(vec![Origin::literal(first)]);
                        }
                    }
                    for piece in pieces {
                        entries.push(vec![vec![Origin::literal(piece)]]);
                    }
                }
                _ => {
                    if let Some(entry) = entries.last_mut() {
                        entry.push(value);
                    }
                }
            }
        }
        if left_out {
            let rest = self.left_out(arg);
            if let Some(entry) = entries.last_mut() {
                entry.push(rest);
            }
        }
        let mut worst: Option<(Rule, Origin)> = None;
        for entry in entries {
            for origin in concat(&entry) {
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
        let Some((rule, origin)) = worst else { return };
        if rule == Rule::UnknownOrigin {
            return;
        }
        let what = self.describe(&origin);
        let function = self.function_name(node).unwrap_or_default();
        let message = format!(
            "{function}() with an entry built from {what}: later relative includes are looked up \
             there at include time, so through the deploy symlink they can load the other \
             release's files mid-request; __DIR__ is this release's real path"
        );
        let hint = "build include_path entries from __DIR__ \
             (`set_include_path(__DIR__ . '/lib' . PATH_SEPARATOR . get_include_path())`), or \
             better, include files by __DIR__-based paths"
            .to_string();
        self.report(node, Rule::SetIncludePath, message, hint);
    }
}
