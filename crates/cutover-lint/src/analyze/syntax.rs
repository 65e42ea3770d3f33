//! Reading the tree-sitter tree: node text and positions, children, operators, names of
//! calls and their arguments, and the comments and syntax errors found before the walk.
//! Apart so the analysis files speak of PHP, not of tree-sitter.

use tree_sitter::Node;

use super::Walker;
use crate::suppress::Allow;

/// The comments that accept findings, and where the first syntax error is.
pub(super) fn scan(root: Node, src: &str) -> (Vec<Allow>, Option<(usize, usize)>) {
    let mut allows = Vec::new();
    let mut error = None;
    let mut cursor = root.walk();
    'tree: loop {
        let node = cursor.node();
        if node.kind() == "comment" {
            let text = node.utf8_text(src.as_bytes()).unwrap_or("");
            let first = node.start_position().row + 1;
            let last = node.end_position().row + 1;
            allows.extend(Allow::parse(text, first, last));
        }
        if error.is_none() && (node.is_error() || node.is_missing()) {
            error = Some(position(node, src));
        }
        if cursor.goto_first_child() {
            continue;
        }
        while !cursor.goto_next_sibling() {
            if !cursor.goto_parent() {
                break 'tree;
            }
        }
    }
    (allows, error)
}

/// 1-based line and column (in characters) of a node's start.
pub(super) fn position(node: Node, src: &str) -> (usize, usize) {
    let point = node.start_position();
    let start = node.start_byte();
    let line_start = start.saturating_sub(point.column);
    let column = src
        .get(line_start..start)
        .map_or(point.column, |s| s.chars().count());
    (point.row + 1, column + 1)
}

impl<'t, 'k> Walker<'t, 'k> {
    pub(super) fn text(&self, node: Node<'t>) -> &'t str {
        node.utf8_text(self.src.as_bytes()).unwrap_or("")
    }

    /// The expression as written, on one line and short, for messages.
    pub(super) fn shown(&self, node: Node<'t>) -> String {
        // Only the start is read: nodes can be whole closures or generated arrays.
        let mut shown = String::new();
        let mut words = self.text(node).split_whitespace();
        let mut count = 0;
        for word in words.by_ref() {
            if !shown.is_empty() {
                shown.push(' ');
                count += 1;
            }
            for c in word.chars() {
                if count == 60 {
                    shown.push('…');
                    return shown;
                }
                shown.push(c);
                count += 1;
            }
        }
        shown
    }

    pub(super) fn line(&self, node: Node<'t>) -> usize {
        node.start_position().row + 1
    }

    /// The operands of a chain of `.`, left to right.
    pub(super) fn concat_leaves(&self, node: Node<'t>, leaves: &mut Vec<Node<'t>>) {
        let mut inner = node;
        while inner.kind() == "parenthesized_expression" {
            match inner.named_child(0) {
                Some(child) => inner = child,
                None => break,
            }
        }
        if inner.kind() == "binary_expression" && self.operator(inner) == "." && leaves.len() < 512
        {
            if let Some(left) = inner.child_by_field_name("left") {
                self.concat_leaves(left, leaves);
            }
            if let Some(right) = inner.child_by_field_name("right") {
                self.concat_leaves(right, leaves);
            }
        } else {
            leaves.push(inner);
        }
    }

    pub(super) fn operator(&self, node: Node<'t>) -> String {
        node.child_by_field_name("operator")
            .map(|op| self.text(op).to_ascii_lowercase())
            .unwrap_or_default()
    }

    pub(super) fn var_name(&self, node: Node<'t>) -> String {
        self.text(node).trim_start_matches('$').to_string()
    }

    pub(super) fn function_name(&self, node: Node<'t>) -> Option<String> {
        let function = node.child_by_field_name("function")?;
        matches!(function.kind(), "name" | "qualified_name" | "relative_name").then(|| {
            let text = self.text(function);
            text.rsplit('\\')
                .next()
                .unwrap_or(text)
                .to_ascii_lowercase()
        })
    }

    pub(super) fn arguments(&self, node: Node<'t>) -> Vec<Node<'t>> {
        let Some(arguments) = node.child_by_field_name("arguments") else {
            return Vec::new();
        };
        named_children(arguments)
            .into_iter()
            .filter(|a| a.kind() == "argument")
            .filter_map(|a| named_children(a).last().copied())
            .collect()
    }
}

pub(super) fn named_children(node: Node<'_>) -> Vec<Node<'_>> {
    let mut cursor = node.walk();
    node.named_children(&mut cursor).collect()
}

pub(super) fn collect_variables<'t>(node: Node<'t>, into: &mut Vec<Node<'t>>) {
    for child in named_children(node) {
        if child.kind() == "variable_name" {
            into.push(child);
        } else {
            collect_variables(child, into);
        }
    }
}
