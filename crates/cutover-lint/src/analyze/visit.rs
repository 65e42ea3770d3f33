//! The walk itself: which node kinds bind variables, open a scope or a condition, define
//! constants, or include files, and the order children are visited in. Apart so the one
//! dispatch on node kinds reads as a table.

use std::collections::HashMap;

use tree_sitter::Node;

use super::syntax::named_children;
use super::{Walker, MAX_DEPTH};

impl<'t, 'k> Walker<'t, 'k> {
    pub(super) fn visit(&mut self, node: Node<'t>) {
        if node.is_error() || self.depth > MAX_DEPTH {
            return;
        }
        self.depth += 1;
        match node.kind() {
            "function_definition" | "method_declaration" => self.function(node, None),
            "anonymous_function" => {
                let mut captured = HashMap::new();
                let uses = named_children(node)
                    .into_iter()
                    .filter(|c| c.kind() == "anonymous_function_use_clause");
                for clause in uses {
                    for var in named_children(clause) {
                        let var = if var.kind() == "by_ref" {
                            var.named_child(0).unwrap_or(var)
                        } else {
                            var
                        };
                        let name = self.var_name(var);
                        captured.insert(name.clone(), self.variable(&name));
                    }
                }
                self.function(node, Some(captured));
            }
            "arrow_function" => {
                // Arrow functions see the enclosing scope's variables, by value.
                let captured = self.scopes.last().map(|s| s.vars.clone());
                self.function(node, captured);
            }
            "class_declaration"
            | "interface_declaration"
            | "trait_declaration"
            | "enum_declaration" => {
                let name = node
                    .child_by_field_name("name")
                    .map(|n| self.text(n).to_string())
                    .unwrap_or_default();
                self.classes.push(name);
                self.visit_children(node);
                self.classes.pop();
            }
            "const_declaration" => {
                self.visit_children(node);
                self.const_declaration(node);
            }
            "assignment_expression" | "reference_assignment_expression" => self.assignment(node),
            "augmented_assignment_expression" => self.augmented_assignment(node),
            "global_declaration" => {
                for var in named_children(node) {
                    let name = self.var_name(var);
                    let value = self.scopes[0].vars.get(&name).cloned();
                    match value {
                        Some(value) => {
                            self.scope().vars.insert(name, value);
                        }
                        None => {
                            self.scope().vars.remove(&name);
                        }
                    }
                }
            }
            "static_variable_declaration" => {
                if let (Some(name), Some(value)) = (
                    node.child_by_field_name("name"),
                    node.child_by_field_name("value"),
                ) {
                    self.visit(value);
                    let origins = self.eval(value);
                    self.assign(name, origins, node);
                }
            }
            "foreach_statement" => self.foreach(node),
            "if_statement"
            | "switch_statement"
            | "while_statement"
            | "do_statement"
            | "for_statement"
            | "try_statement"
            | "conditional_expression"
            | "match_expression" => self.under_condition(node),
            "binary_expression"
                if matches!(
                    self.operator(node).as_str(),
                    "&&" | "||" | "and" | "or" | "xor" | "??"
                ) =>
            {
                self.under_condition(node)
            }
            "include_expression"
            | "include_once_expression"
            | "require_expression"
            | "require_once_expression" => {
                self.visit_children(node);
                self.include(node);
            }
            "function_call_expression" => {
                self.visit_children(node);
                self.call(node);
            }
            _ => self.visit_children(node),
        }
        self.depth -= 1;
    }

    pub(super) fn visit_children(&mut self, node: Node<'t>) {
        for child in named_children(node) {
            self.visit(child);
        }
    }

    fn under_condition(&mut self, node: Node<'t>) {
        self.cond += 1;
        self.visit_children(node);
        self.cond -= 1;
    }
}
