//! The walk itself: which node kinds bind variables, open a scope or a condition, define
//! constants, or include files, and the order children are visited in. Apart so the one
//! dispatch on node kinds reads as a table.
//!
//! The walk keeps its own agenda of steps instead of recursing: nesting is the input's to
//! choose (generated code nests `if`s, parentheses and concatenations thousands deep), and
//! a recursion that deep overflows the stack. Nothing is skipped below any depth.

use std::collections::HashMap;

use tree_sitter::Node;

use super::syntax::named_children;
use super::Walker;

/// One thing left to do, in the order a recursive walk would do it.
#[derive(Debug, Clone, Copy)]
enum Step<'t> {
    Visit(Node<'t>),
    EnterCondition,
    LeaveCondition,
    LeaveClass,
    LeaveScope,
    /// An assignment's right side has been walked: bind its value.
    Assign(Node<'t>),
    StaticVariable {
        name: Node<'t>,
        value: Node<'t>,
        at: Node<'t>,
    },
    BindForeach {
        node: Node<'t>,
        iterated: Node<'t>,
        target: Node<'t>,
    },
    ConstDeclaration(Node<'t>),
    Include(Node<'t>),
    Call(Node<'t>),
}

/// The steps left, the next one last.
struct Agenda<'t>(Vec<Step<'t>>);

impl<'t> Agenda<'t> {
    /// Schedules `steps`, in the order given, before everything scheduled earlier.
    fn then(&mut self, steps: impl IntoIterator<Item = Step<'t>>) {
        let start = self.0.len();
        self.0.extend(steps);
        self.0[start..].reverse();
    }
}

fn children(node: Node<'_>) -> impl Iterator<Item = Step<'_>> {
    named_children(node).into_iter().map(Step::Visit)
}

impl<'t, 'k> Walker<'t, 'k> {
    /// Walks `root` and everything under it, in source order.
    pub(super) fn visit(&mut self, root: Node<'t>) {
        let mut agenda = Agenda(vec![Step::Visit(root)]);
        while let Some(step) = agenda.0.pop() {
            match step {
                Step::Visit(node) => self.enter(node, &mut agenda),
                Step::EnterCondition => self.cond += 1,
                Step::LeaveCondition => self.cond -= 1,
                Step::LeaveClass => {
                    self.classes.pop();
                }
                Step::LeaveScope => {
                    self.scopes.pop();
                }
                Step::Assign(node) => self.assignment(node),
                Step::StaticVariable { name, value, at } => {
                    let origins = self.eval(value);
                    self.assign(name, origins, at);
                }
                Step::BindForeach {
                    node,
                    iterated,
                    target,
                } => self.bind_foreach(node, iterated, target),
                Step::ConstDeclaration(node) => self.const_declaration(node),
                Step::Include(node) => self.include(node),
                Step::Call(node) => self.call(node),
            }
        }
    }

    /// What a node does on entry, and the steps it schedules for its children and after them.
    fn enter(&mut self, node: Node<'t>, agenda: &mut Agenda<'t>) {
        if node.is_error() {
            return;
        }
        match node.kind() {
            "function_definition" | "method_declaration" => {
                let body = self.open_function(node, None);
                agenda.then(body.map(Step::Visit).into_iter().chain([Step::LeaveScope]));
            }
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
                let body = self.open_function(node, Some(captured));
                agenda.then(body.map(Step::Visit).into_iter().chain([Step::LeaveScope]));
            }
            "arrow_function" => {
                // Arrow functions see the enclosing scope's variables, by value.
                let captured = self.scopes.last().map(|s| s.vars.clone());
                let body = self.open_function(node, captured);
                agenda.then(body.map(Step::Visit).into_iter().chain([Step::LeaveScope]));
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
                agenda.then(children(node).chain([Step::LeaveClass]));
            }
            "const_declaration" => {
                agenda.then(children(node).chain([Step::ConstDeclaration(node)]));
            }
            "assignment_expression"
            | "reference_assignment_expression"
            | "augmented_assignment_expression" => {
                let left = node.child_by_field_name("left");
                match (left, node.child_by_field_name("right")) {
                    (Some(_), Some(right)) => {
                        agenda.then([Step::Visit(right), Step::Assign(node)]);
                    }
                    _ => agenda.then(children(node)),
                }
            }
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
                    agenda.then([
                        Step::Visit(value),
                        Step::StaticVariable {
                            name,
                            value,
                            at: node,
                        },
                    ]);
                }
            }
            "foreach_statement" => {
                let body = node.child_by_field_name("body");
                let mut parts = named_children(node)
                    .into_iter()
                    .filter(|c| Some(*c) != body);
                let iterated = parts.next();
                let target = parts.next();
                // The iterated expression runs once; the binding and the body only on some
                // paths.
                let bind = match (iterated, target) {
                    (Some(iterated), Some(target)) => Some(Step::BindForeach {
                        node,
                        iterated,
                        target,
                    }),
                    _ => None,
                };
                agenda.then(
                    iterated
                        .map(Step::Visit)
                        .into_iter()
                        .chain([Step::EnterCondition])
                        .chain(bind)
                        .chain(body.map(Step::Visit))
                        .chain([Step::LeaveCondition]),
                );
            }
            "if_statement"
            | "switch_statement"
            | "while_statement"
            | "do_statement"
            | "for_statement"
            | "try_statement"
            | "conditional_expression"
            | "match_expression" => self.under_condition(node, agenda),
            "binary_expression"
                if matches!(
                    self.operator(node).as_str(),
                    "&&" | "||" | "and" | "or" | "xor" | "??"
                ) =>
            {
                self.under_condition(node, agenda)
            }
            "include_expression"
            | "include_once_expression"
            | "require_expression"
            | "require_once_expression" => {
                agenda.then(children(node).chain([Step::Include(node)]));
            }
            "function_call_expression" => {
                agenda.then(children(node).chain([Step::Call(node)]));
            }
            _ => agenda.then(children(node)),
        }
    }

    fn under_condition(&mut self, node: Node<'t>, agenda: &mut Agenda<'t>) {
        self.cond += 1;
        agenda.then(children(node).chain([Step::LeaveCondition]));
    }
}
