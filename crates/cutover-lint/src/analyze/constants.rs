//! Constants: `const` declarations (global and of classes), and looking constants up in this
//! file, then in the whole tree's [`Knowledge`](super::Knowledge). Apart because constants,
//! unlike variables, are known across files and scopes.

use tree_sitter::Node;

use super::syntax::named_children;
use super::value::{through, union_into, Origin, Source, Value};
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
        let via = self.step(format!("constant {key}"), at);
        let value = through(value, &via);
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
        // Defined later, or in another file: resolved once every file is read.
        vec![Origin::of(Source::Constant {
            name: key.to_string(),
            up: 0,
        })]
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
