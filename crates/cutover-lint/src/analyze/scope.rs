//! Variables: scopes, and binding values to names by assignment, `foreach`, and function
//! parameters. Apart because source order and conditions decide here whether a value
//! replaces or adds to what a variable held.

use std::collections::HashMap;

use tree_sitter::Node;

use super::syntax::{collect_variables, named_children};
use super::value::{concat, through, union, union_into, Origin, Source, Value};
use super::Walker;

#[derive(Debug, Default)]
pub(super) struct Scope {
    pub(super) vars: HashMap<String, Value>,
    /// Files of the tree this scope included by `__DIR__`-based paths: their top-level
    /// variables may be the ones this scope reads but did not set.
    pub(super) imports: Vec<String>,
    /// `Walker::cond` when the scope began: deeper means "only on some paths".
    pub(super) cond_base: usize,
}

impl<'t, 'k> Walker<'t, 'k> {
    pub(super) fn scope(&mut self) -> &mut Scope {
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    pub(super) fn conditional(&self) -> bool {
        self.scopes
            .last()
            .is_some_and(|scope| self.cond > scope.cond_base)
    }

    /// Opens the scope of a function, method or closure: parameters are unknown (and
    /// closures start with what they capture). Returns the body, to be walked before the
    /// scope is closed.
    pub(super) fn open_function(
        &mut self,
        node: Node<'t>,
        captured: Option<HashMap<String, Value>>,
    ) -> Option<Node<'t>> {
        let mut scope = Scope {
            vars: captured.unwrap_or_default(),
            imports: Vec::new(),
            cond_base: self.cond,
        };
        let name = node
            .child_by_field_name("name")
            .map(|n| format!("{}()", self.text(n)))
            .unwrap_or_else(|| "a closure".into());
        if let Some(params) = node.child_by_field_name("parameters") {
            for param in named_children(params) {
                if let Some(var) = param.child_by_field_name("name") {
                    let var = self.var_name(var);
                    let what = format!("${var}, a parameter of {name}");
                    scope.vars.insert(var, vec![Origin::unknown(what)]);
                }
            }
        }
        self.scopes.push(scope);
        node.child_by_field_name("body")
    }

    /// Binds the value of an assignment (`=`, `=&`, `.=`, `??=`, …) whose right side has
    /// been walked.
    pub(super) fn assignment(&mut self, node: Node<'t>) {
        let (Some(left), Some(right)) = (
            node.child_by_field_name("left"),
            node.child_by_field_name("right"),
        ) else {
            return;
        };
        let value = if node.kind() == "augmented_assignment_expression" {
            let current = self.eval(left);
            match self.operator(node).as_str() {
                ".=" => concat(&[current, self.eval(right)]),
                "??=" => union(current, self.eval(right)),
                _ => vec![Origin::unknown(self.shown(node))],
            }
        } else {
            self.eval(right)
        };
        self.assign(left, value, node);
    }

    /// Binds what `left` names. An array element adds to the array's possible values.
    pub(super) fn assign(&mut self, left: Node<'t>, value: Value, at: Node<'t>) {
        match left.kind() {
            "variable_name" => {
                let name = self.var_name(left);
                self.bind(&name, value, at, false);
            }
            "subscript_expression" => {
                let base = left.named_child(0);
                if let Some(base) = base.filter(|b| b.kind() == "variable_name") {
                    let name = self.var_name(base);
                    self.bind(&name, value, at, true);
                }
            }
            "list_literal" | "array_creation_expression" => {
                for var in collect_variables(left) {
                    let name = self.var_name(var);
                    let what = format!("${name}, unpacked from a list");
                    self.bind(&name, vec![Origin::unknown(what)], at, false);
                }
            }
            "by_ref" => {
                if let Some(inner) = left.named_child(0) {
                    self.assign(inner, value, at);
                }
            }
            _ => {}
        }
    }

    fn bind(&mut self, name: &str, value: Value, at: Node<'t>, add: bool) {
        if name == "this" || name.is_empty() {
            return;
        }
        let via = self.step(format!("${name}"), at);
        let value = through(value, &via);
        let add = add || self.conditional();
        let vars = &mut self.scope().vars;
        match vars.get_mut(name) {
            Some(known) if add => union_into(known, value),
            _ => {
                vars.insert(name.to_string(), value);
            }
        }
    }

    /// Binds a `foreach` target to the elements of what it iterates, under the loop's
    /// condition.
    pub(super) fn bind_foreach(&mut self, node: Node<'t>, iterated: Node<'t>, target: Node<'t>) {
        // The elements of an array (or of glob()) start where the array's values do.
        let elements = self.eval(iterated);
        let (key, value) = match target.kind() {
            "pair" => (target.named_child(0), target.named_child(1)),
            _ => (None, Some(target)),
        };
        if let Some(key) = key {
            self.assign(key, vec![Origin::unknown("an array key")], node);
        }
        if let Some(value) = value {
            self.assign(value, elements, node);
        }
    }

    pub(super) fn variable(&self, name: &str) -> Value {
        if name == "this" {
            return vec![Origin::unknown("$this")];
        }
        let Some(scope) = self.scopes.last() else {
            return Vec::new();
        };
        if let Some(value) = scope.vars.get(name) {
            return value.clone();
        }
        if scope.imports.is_empty() {
            return vec![Origin::unknown(format!("${name}, not set in this scope"))];
        }
        // Perhaps set by a file this scope included: known once every file is read.
        scope
            .imports
            .iter()
            .map(|file| {
                Origin::of(Source::Imported {
                    file: file.clone(),
                    name: name.to_string(),
                    up: 0,
                })
            })
            .collect()
    }
}
