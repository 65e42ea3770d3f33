//! Variables: scopes, and binding values to names by assignment, `foreach`, and function
//! parameters. Apart because source order and conditions decide here whether a value
//! replaces or adds to what a variable held.

use std::collections::HashMap;

use tree_sitter::Node;

use super::syntax::{collect_variables, named_children};
use super::value::{concat, push_via, union, union_into, Origin, Source, Value, Via};
use super::Walker;

#[derive(Debug, Default)]
pub(super) struct Scope {
    pub(super) vars: HashMap<String, Value>,
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

    /// A function, method or closure body: its own scope; parameters are unknown (and
    /// closures start with what they capture).
    pub(super) fn function(&mut self, node: Node<'t>, captured: Option<HashMap<String, Value>>) {
        let mut scope = Scope {
            vars: captured.unwrap_or_default(),
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
        if let Some(body) = node.child_by_field_name("body") {
            self.visit(body);
        }
        self.scopes.pop();
    }

    pub(super) fn assignment(&mut self, node: Node<'t>) {
        let (Some(left), Some(right)) = (
            node.child_by_field_name("left"),
            node.child_by_field_name("right"),
        ) else {
            return self.visit_children(node);
        };
        self.visit(right);
        let value = self.eval(right);
        self.assign(left, value, node);
    }

    pub(super) fn augmented_assignment(&mut self, node: Node<'t>) {
        let (Some(left), Some(right)) = (
            node.child_by_field_name("left"),
            node.child_by_field_name("right"),
        ) else {
            return self.visit_children(node);
        };
        self.visit(right);
        let current = self.eval(left);
        let value = match self.operator(node).as_str() {
            ".=" => concat(&[current, self.eval(right)]),
            "??=" => union(current, self.eval(right)),
            _ => vec![Origin::unknown(self.shown(node))],
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
                let mut vars = Vec::new();
                collect_variables(left, &mut vars);
                for var in vars {
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
        let via = Via {
            what: format!("${name}"),
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
        let add = add || self.conditional();
        let vars = &mut self.scope().vars;
        match vars.get_mut(name) {
            Some(known) if add => union_into(known, value),
            _ => {
                vars.insert(name.to_string(), value);
            }
        }
    }

    pub(super) fn foreach(&mut self, node: Node<'t>) {
        let children = named_children(node);
        let body = node.child_by_field_name("body");
        let mut parts = children.into_iter().filter(|c| Some(*c) != body);
        let iterated = parts.next();
        let target = parts.next();
        if let Some(iterated) = iterated {
            self.visit(iterated);
        }
        self.cond += 1;
        if let (Some(iterated), Some(target)) = (iterated, target) {
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
        if let Some(body) = body {
            self.visit(body);
        }
        self.cond -= 1;
    }

    pub(super) fn variable(&self, name: &str) -> Value {
        if name == "this" {
            return vec![Origin::unknown("$this")];
        }
        match self.scopes.last().and_then(|scope| scope.vars.get(name)) {
            Some(value) => value.clone(),
            None => vec![Origin::unknown(format!("${name}, not set in this scope"))],
        }
    }
}
