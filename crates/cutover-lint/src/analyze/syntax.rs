//! Reading the tree-sitter tree: node text and positions, children, operators, names of
//! calls and their arguments, and the comments and syntax errors found before the walk.
//! Apart so the analysis files speak of PHP, not of tree-sitter.

use tree_sitter::Node;

use super::Walker;
use crate::suppress::Allow;

/// Operands of one concatenation that are evaluated; the value of a longer one (generated
/// code) is known only as far as its first operands.
const MAX_CONCAT_LEAVES: usize = 512;

/// The comments that accept findings, and where the first syntax error is. Each needs a walk
/// only when it can find something: the marker is in the text, the tree has an error (and
/// then only into the subtrees that hold one).
pub(super) fn scan(root: Node, src: &str) -> (Vec<Allow>, Option<(usize, usize)>) {
    let mut allows = Vec::new();
    if src.contains(crate::suppress::MARKER) {
        let mut cursor = root.walk();
        'tree: loop {
            let node = cursor.node();
            if node.kind() == "comment" {
                let text = node.utf8_text(src.as_bytes()).unwrap_or("");
                let first = node.start_position().row + 1;
                let last = node.end_position().row + 1;
                allows.extend(Allow::parse(text, first, last));
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
    }
    (allows, first_error(root, src))
}

/// The first node that is an error or missing, in source order.
fn first_error(root: Node, src: &str) -> Option<(usize, usize)> {
    if !root.has_error() {
        return None;
    }
    let mut cursor = root.walk();
    loop {
        let node = cursor.node();
        if node.is_error() || node.is_missing() {
            return Some(position(node, src));
        }
        // Into the first child that holds an error; a node has one if it has_error().
        if !cursor.goto_first_child() {
            return Some(position(node, src));
        }
        while !cursor.node().has_error() {
            if !cursor.goto_next_sibling() {
                return Some(position(node, src));
            }
        }
    }
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

    /// The operands of a chain of `.`, left to right: at most [`MAX_CONCAT_LEAVES`] of them,
    /// and whether more were left out.
    pub(super) fn concat_leaves(&self, node: Node<'t>) -> (Vec<Node<'t>>, bool) {
        // A stack, not recursion: `'a' . 'b' . …` nests one level per operand, so generated
        // code would overflow the call stack.
        let mut leaves = Vec::new();
        let mut pending = vec![node];
        while let Some(next) = pending.pop() {
            let inner = unparenthesized(next);
            if inner.kind() == "binary_expression" && self.operator(inner) == "." {
                // The right operand waits under the left one.
                pending.extend(inner.child_by_field_name("right"));
                pending.extend(inner.child_by_field_name("left"));
            } else if leaves.len() == MAX_CONCAT_LEAVES {
                return (leaves, true);
            } else {
                leaves.push(inner);
            }
        }
        (leaves, false)
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
    // Most nodes are leaves: no cursor (an allocation) for them.
    if node.named_child_count() == 0 {
        return Vec::new();
    }
    let mut cursor = node.walk();
    node.named_children(&mut cursor).collect()
}

/// The innermost expression of `((…(x)…))`.
fn unparenthesized(node: Node<'_>) -> Node<'_> {
    let mut inner = node;
    while inner.kind() == "parenthesized_expression" {
        match inner.named_child(0) {
            Some(child) => inner = child,
            None => break,
        }
    }
    inner
}

/// The variables named anywhere under `node` (a `list()` or `[…]` target), in source order.
pub(super) fn collect_variables(node: Node<'_>) -> Vec<Node<'_>> {
    // A stack, not recursion: list targets nest as deep as the input likes.
    let mut found = Vec::new();
    let mut pending: Vec<Node> = named_children(node).into_iter().rev().collect();
    while let Some(child) = pending.pop() {
        if child.kind() == "variable_name" {
            found.push(child);
        } else {
            pending.extend(named_children(child).into_iter().rev());
        }
    }
    found
}
