//! Constants: `const` declarations (global and of classes), and looking constants up in this
//! file, then in the whole tree's [`Knowledge`](super::Knowledge). Apart because constants,
//! unlike variables, are known across files and scopes.

use tree_sitter::Node;

use super::syntax::named_children;
use super::value::{push_via, union_into, Origin, Source, Value, Via};
use super::Walker;

impl<'t, 'k> Walker<'t, 'k> {
    pub(super) fn const_declaration(&mut self, node: Node<'t>) {
        let class = self.enclosing_class(node);
        for element in named_children(node)
            .into_iter()
            .filter(|c| c.kind() == "const_element")
        {
            let parts = named_children(element);
            let (Some(name), Some(value)) = (parts.first(), parts.get(1)) else {
                continue;
            };
            let name = self.text(*name).to_string();
            let key = match &class {
                Some(class) => format!("{class}::{name}"),
                None => name,
            };
            let origins = self.eval(*value);
            self.define(key, origins, element);
        }
    }

    /// The class a `const` belongs to, if it is a class constant.
    fn enclosing_class(&self, node: Node<'t>) -> Option<String> {
        let parent = node.parent()?;
        (parent.kind() == "declaration_list" || parent.kind() == "enum_declaration_list")
            .then(|| self.classes.last().cloned())
            .flatten()
    }

    pub(super) fn define(&mut self, key: String, value: Value, at: Node<'t>) {
        let via = Via {
            what: format!("constant {key}"),
            file: self.file_key.clone(),
            line: self.line(at),
        };
        let value: Value = value
            .into_iter()
            .map(|mut origin| {
                if !matches!(origin.source, Source::Unknown(_)) {
                    push_via(&mut origin.via, via.clone());
                }
                origin
            })
            .collect();
        union_into(
            self.constants.entry(key.clone()).or_default(),
            value.clone(),
        );
        self.defined.push((key, value));
    }

    pub(super) fn constant(&self, node: Node<'t>) -> Value {
        let text = self.text(node);
        let name = text.rsplit('\\').next().unwrap_or(text);
        match name {
            "__DIR__" => vec![Origin::of(Source::Release { up: 0 })],
            "__FILE__" => vec![Origin {
                text: format!("/{}", self.file.file_name()),
                ..Origin::of(Source::Release { up: 0 })
            }],
            "DIRECTORY_SEPARATOR" => vec![Origin::literal("/")],
            "PATH_SEPARATOR" => vec![Origin::literal(":")],
            _ => self.lookup_constant(name),
        }
    }

    fn lookup_constant(&self, key: &str) -> Value {
        if let Some(value) = self.constants.get(key) {
            return value.clone();
        }
        match self.knowledge.constants.get(key) {
            Some(value) => value.clone(),
            None => vec![Origin::unknown(format!(
                "constant {key}, defined nowhere in the linted files"
            ))],
        }
    }

    pub(super) fn class_constant(&self, node: Node<'t>) -> Value {
        let parts = named_children(node);
        let (Some(scope), Some(name)) = (parts.first(), parts.get(1)) else {
            return Vec::new();
        };
        let name = self.text(*name);
        let scope_text = self.text(*scope);
        let class = match scope_text.to_ascii_lowercase().as_str() {
            "self" | "static" => self.classes.last().cloned(),
            "parent" => None,
            _ => Some(
                scope_text
                    .rsplit('\\')
                    .next()
                    .unwrap_or(scope_text)
                    .to_string(),
            ),
        };
        match class {
            Some(class) if name != "class" => self.lookup_constant(&format!("{class}::{name}")),
            _ => Vec::new(),
        }
    }
}
