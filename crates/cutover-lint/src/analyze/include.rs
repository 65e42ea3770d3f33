//! The statements that load files or change where they are found: include/require,
//! `define()`, `set_include_path()`/`ini_set('include_path')` and `opcache_compile_file()`,
//! and the variables an included file of the tree brings in. Apart because here a value is
//! not only computed but acted on: judged as a path, defined as a constant, or imported.

use tree_sitter::Node;

use super::path::resolve;
use super::value::{concat, Origin, Source, Value};
use super::{SiteKind, Walker};

/// Files whose variables one scope may import; more are not followed.
const MAX_IMPORTS: usize = 4;

/// The include keywords, as [`Walker::include`] names them.
pub(super) const KEYWORDS: [&str; 4] = ["include", "include_once", "require", "require_once"];

const DEFINE: &str = "define";
const SET_INCLUDE_PATH: &str = "set_include_path";
const INI_SET: &str = "ini_set";
const OPCACHE_COMPILE_FILE: &str = "opcache_compile_file";
/// The functions whose calls [`Walker::call`] acts on. A file calling none of them and
/// including nothing is not parsed unless another file needs its definitions (see
/// `prescan`): a call added here is added there.
pub(super) const CALLS: [&str; 4] = [DEFINE, SET_INCLUDE_PATH, INI_SET, OPCACHE_COMPILE_FILE];

impl<'t, 'k> Walker<'t, 'k> {
    pub(super) fn include(&mut self, node: Node<'t>) {
        let [include, include_once, require, require_once] = KEYWORDS;
        let keyword = match node.kind() {
            "include_expression" => include,
            "include_once_expression" => include_once,
            "require_expression" => require,
            _ => require_once,
        };
        let Some(arg) = node.named_child(0) else {
            return;
        };
        let value = self.eval(arg);
        self.import_exports(&value);
        self.first_include.get_or_insert(node);
        if self.may_be_hazard(&value) {
            self.site(node, SiteKind::Include { keyword, value });
        }
    }

    /// An include of a file of the tree by a `__DIR__`-based path may bring that file's
    /// top-level variables into this scope (a config.php that sets `$root`): which ones is
    /// known once every file is read.
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
        let imports = &mut self.scope().imports;
        if imports.len() < MAX_IMPORTS && !imports.contains(&target) {
            imports.push(target);
        }
    }

    pub(super) fn call(&mut self, node: Node<'t>) {
        let Some(name) = self.function_name(node) else {
            return;
        };
        let args = self.arguments(node);
        match name.as_str() {
            DEFINE => {
                let (Some(key), Some(value)) = (args.first(), args.get(1)) else {
                    return;
                };
                let Some(key) = self.key(*key) else { return };
                let key = key.rsplit('\\').next().unwrap_or(&key).to_string();
                let value = self.eval(*value);
                self.define(key, value, node);
            }
            SET_INCLUDE_PATH => {
                if let Some(arg) = args.first() {
                    self.set_include_path(node, *arg);
                }
            }
            INI_SET => {
                let key = args.first().and_then(|k| self.key(*k));
                if let (Some("include_path"), Some(arg)) = (key.as_deref(), args.get(1)) {
                    self.set_include_path(node, *arg);
                }
            }
            OPCACHE_COMPILE_FILE => {
                self.first_compile.get_or_insert(node);
                if let Some(arg) = args.first() {
                    let value = self.eval(*arg);
                    if self.may_be_hazard(&value) {
                        self.site(node, SiteKind::Compile { value });
                    }
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
        let entries: Vec<Value> = entries.iter().map(|entry| concat(entry)).collect();
        if entries.iter().any(|entry| self.may_be_hazard(entry)) {
            let function = self.function_name(node).unwrap_or_default();
            self.site(node, SiteKind::SetIncludePath { function, entries });
        }
    }
}
