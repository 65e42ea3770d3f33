//! The analysis of one file: a walk over its syntax tree that follows where each include
//! path starts.
//!
//! Only the start of a path decides where it resolves: `__DIR__ . $anything` stays in the
//! release, `'/srv/app/current/' . $anything` does not. So a value is tracked as the set of
//! its possible starts ([`Origin`]), each with the literal text known to follow it.
//! Variables are tracked per scope in source order: an assignment replaces the value, one
//! under a condition or in a loop adds to it, so `if ($x) $root = '/abs'; else $root =
//! __DIR__;` is a hazard.

use std::collections::HashMap;
use std::sync::Arc;

use tree_sitter::{Node, Parser};

use crate::rule::{Rule, WHY};
use crate::suppress::Allow;
use crate::walk::SourceFile;
use crate::{Exports, Finding, Options, TreePaths};

/// Syntax nested deeper than this (generated code) is not followed; values there are unknown.
const MAX_DEPTH: usize = 400;
/// Possible starts kept per value; more are dropped (the first ones found stay).
const MAX_ORIGINS: usize = 8;
/// Steps of "set from … set from …" kept for a message.
const MAX_VIA: usize = 4;

/// Where a path value starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// `__DIR__` (or `__FILE__`), `up` directories higher: a real path in this release.
    Release {
        up: usize,
    },
    /// A string literal; `Origin::text` is all of it known so far.
    Literal,
    /// `$_SERVER['DOCUMENT_ROOT']` and friends; the expression as written.
    DocumentRoot(String),
    WorkingDirectory,
    Environment(String),
    Ini(String),
    IncludePath(String),
    /// Somewhere the analysis cannot follow: a description for `--strict` messages.
    Unknown(String),
}

/// A step a value took on its way into an include: `$root` set on line 3, constant `ROOT`
/// defined in config.php:2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Via {
    what: String,
    file: Arc<str>,
    line: usize,
}

/// One possible start of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    source: Source,
    /// The literal text known to follow the source (for a literal: the literal so far).
    text: String,
    /// Whether `text` reaches the end of the value (nothing unknown follows).
    complete: bool,
    via: Vec<Via>,
}

impl Origin {
    fn of(source: Source) -> Origin {
        Origin {
            source,
            text: String::new(),
            complete: true,
            via: Vec::new(),
        }
    }

    fn literal(text: impl Into<String>) -> Origin {
        Origin {
            text: text.into(),
            ..Origin::of(Source::Literal)
        }
    }

    fn unknown(what: impl Into<String>) -> Origin {
        Origin::of(Source::Unknown(what.into()))
    }

    fn is_literal(&self) -> bool {
        self.source == Source::Literal
    }

    fn incomplete(mut self) -> Origin {
        self.complete = false;
        self
    }
}

type Value = Vec<Origin>;

/// What is known about the whole tree before a file is linted.
#[derive(Debug, Default)]
pub(crate) struct Knowledge {
    pub paths: Option<TreePaths>,
    pub constants: HashMap<String, Value>,
    pub exports: Exports,
}

impl Knowledge {
    pub fn absorb(&mut self, rel: &str, analysis: Analysis) {
        for (name, value) in analysis.constants {
            let known = self.constants.entry(name).or_default();
            union_into(known, value);
        }
        if !analysis.exports.is_empty() {
            self.exports.insert(rel.to_string(), analysis.exports);
        }
    }
}

/// What one file yields: findings when linting; constants and top-level variables (for
/// files that include this one) when collecting.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    pub findings: Vec<Finding>,
    /// Line and column of the first syntax error.
    pub syntax_error: Option<(usize, usize)>,
    constants: Vec<(String, Value)>,
    exports: HashMap<String, Value>,
}

pub(crate) fn analyze(
    file: &SourceFile,
    text: &str,
    knowledge: &Knowledge,
    options: &Options,
    lint: bool,
) -> Analysis {
    let mut parser = Parser::new();
    let tree = match parser.set_language(&tree_sitter_php::LANGUAGE_PHP.into()) {
        Ok(()) => parser.parse(text, None),
        Err(_) => None,
    };
    let Some(tree) = tree else {
        return Analysis {
            syntax_error: Some((1, 1)),
            ..Analysis::default()
        };
    };
    let root = tree.root_node();
    let (allows, syntax_error) = scan(root, text);
    let mut walker = Walker {
        src: text,
        file,
        file_key: Arc::from(file.rel.as_str()),
        dir: file.dir_components(),
        knowledge,
        options,
        lint,
        allows,
        scopes: vec![Scope::default()],
        classes: Vec::new(),
        cond: 0,
        depth: 0,
        findings: Vec::new(),
        constants: HashMap::new(),
        defined: Vec::new(),
        first_compile: None,
        first_include: None,
    };
    walker.visit(root);
    walker.preload_script();
    let exports = std::mem::take(&mut walker.scopes[0].vars)
        .into_iter()
        .filter(|(_, value)| {
            value
                .iter()
                .any(|o| !matches!(o.source, Source::Unknown(_)))
        })
        .collect();
    Analysis {
        findings: walker.findings,
        syntax_error,
        constants: walker.defined,
        exports,
    }
}

/// The comments that accept findings, and where the first syntax error is.
fn scan(root: Node, src: &str) -> (Vec<Allow>, Option<(usize, usize)>) {
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
fn position(node: Node, src: &str) -> (usize, usize) {
    let point = node.start_position();
    let start = node.start_byte();
    let line_start = start.saturating_sub(point.column);
    let column = src
        .get(line_start..start)
        .map_or(point.column, |s| s.chars().count());
    (point.row + 1, column + 1)
}

#[derive(Debug, Default)]
struct Scope {
    vars: HashMap<String, Value>,
    /// `Walker::cond` when the scope began: deeper means "only on some paths".
    cond_base: usize,
}

/// How a path is used, for messages and hints.
#[derive(Debug, Clone, Copy)]
enum PathUse<'k> {
    /// `require` and friends: the keyword.
    Include(&'k str),
    /// `opcache_compile_file()`.
    Compile,
}

struct Walker<'t, 'k> {
    src: &'t str,
    file: &'k SourceFile,
    file_key: Arc<str>,
    dir: Vec<String>,
    knowledge: &'k Knowledge,
    options: &'k Options,
    lint: bool,
    allows: Vec<Allow>,
    scopes: Vec<Scope>,
    classes: Vec<String>,
    /// How many conditions or loops the walk is inside.
    cond: usize,
    depth: usize,
    findings: Vec<Finding>,
    /// Constants this file defined so far (visible before the tree-wide knowledge).
    constants: HashMap<String, Value>,
    defined: Vec<(String, Value)>,
    first_compile: Option<Node<'t>>,
    first_include: Option<Node<'t>>,
}

impl<'t, 'k> Walker<'t, 'k> {
    fn text(&self, node: Node<'t>) -> &'t str {
        node.utf8_text(self.src.as_bytes()).unwrap_or("")
    }

    /// The expression as written, on one line and short, for messages.
    fn shown(&self, node: Node<'t>) -> String {
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

    fn line(&self, node: Node<'t>) -> usize {
        node.start_position().row + 1
    }

    fn scope(&mut self) -> &mut Scope {
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    fn conditional(&self) -> bool {
        self.scopes
            .last()
            .is_some_and(|scope| self.cond > scope.cond_base)
    }

    // ---- The walk ---------------------------------------------------------------------

    fn visit(&mut self, node: Node<'t>) {
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

    fn visit_children(&mut self, node: Node<'t>) {
        for child in named_children(node) {
            self.visit(child);
        }
    }

    fn under_condition(&mut self, node: Node<'t>) {
        self.cond += 1;
        self.visit_children(node);
        self.cond -= 1;
    }

    /// A function, method or closure body: its own scope; parameters are unknown (and
    /// closures start with what they capture).
    fn function(&mut self, node: Node<'t>, captured: Option<HashMap<String, Value>>) {
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

    fn assignment(&mut self, node: Node<'t>) {
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

    fn augmented_assignment(&mut self, node: Node<'t>) {
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
    fn assign(&mut self, left: Node<'t>, value: Value, at: Node<'t>) {
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

    fn foreach(&mut self, node: Node<'t>) {
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

    fn const_declaration(&mut self, node: Node<'t>) {
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

    fn define(&mut self, key: String, value: Value, at: Node<'t>) {
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

    // ---- Values -----------------------------------------------------------------------

    fn eval(&mut self, node: Node<'t>) -> Value {
        if self.depth > MAX_DEPTH {
            return vec![Origin::unknown("a deeply nested expression")];
        }
        self.depth += 1;
        let value = self.eval_inner(node);
        self.depth -= 1;
        if value.is_empty() {
            return vec![Origin::unknown(self.shown(node))];
        }
        value
    }

    fn eval_inner(&mut self, node: Node<'t>) -> Value {
        match node.kind() {
            "string" => vec![Origin::literal(self.literal_text(node))],
            "encapsed_string" => self.parts(node),
            "heredoc" => match node.child_by_field_name("value") {
                Some(body) => self.parts(body),
                None => vec![Origin::literal("")],
            },
            "nowdoc" => {
                let body = node.child_by_field_name("value");
                vec![Origin::literal(body.map_or("", |b| self.text(b)))]
            }
            "binary_expression" => match self.operator(node).as_str() {
                "." => {
                    let mut leaves = Vec::new();
                    self.concat_leaves(node, &mut leaves);
                    let values: Vec<Value> = leaves.into_iter().map(|l| self.eval(l)).collect();
                    concat(&values)
                }
                "??" | "?:" => {
                    let left = node.child_by_field_name("left");
                    let right = node.child_by_field_name("right");
                    let left = left.map(|n| self.eval(n)).unwrap_or_default();
                    let right = right.map(|n| self.eval(n)).unwrap_or_default();
                    union(left, right)
                }
                _ => vec![Origin::unknown(self.shown(node))],
            },
            "parenthesized_expression" | "error_suppression_expression" => {
                match node.named_child(0) {
                    Some(inner) => self.eval(inner),
                    None => Vec::new(),
                }
            }
            "conditional_expression" => {
                let first = node
                    .child_by_field_name("body")
                    .or_else(|| node.child_by_field_name("condition"));
                let first = first.map(|n| self.eval(n)).unwrap_or_default();
                let alternative = node.child_by_field_name("alternative");
                let alternative = alternative.map(|n| self.eval(n)).unwrap_or_default();
                union(first, alternative)
            }
            "cast_expression" => match node.child_by_field_name("value") {
                Some(value) => self.eval(value),
                None => Vec::new(),
            },
            "assignment_expression"
            | "augmented_assignment_expression"
            | "reference_assignment_expression" => match node.child_by_field_name("right") {
                Some(right) => self.eval(right),
                None => Vec::new(),
            },
            "name" | "qualified_name" | "relative_name" => self.constant(node),
            "class_constant_access_expression" => self.class_constant(node),
            "variable_name" => {
                let name = self.var_name(node);
                self.variable(&name)
            }
            "subscript_expression" => self.subscript(node),
            "function_call_expression" => self.call_value(node),
            "array_creation_expression" => {
                let mut value = Vec::new();
                for element in named_children(node) {
                    if let Some(last) = named_children(element).last() {
                        let element = self.eval(*last);
                        union_into(&mut value, element);
                    }
                }
                value
            }
            "variadic_unpacking" | "by_ref" => match node.named_child(0) {
                Some(inner) => self.eval(inner),
                None => Vec::new(),
            },
            "member_access_expression" | "nullsafe_member_access_expression" => {
                vec![Origin::unknown(format!("{}, a property", self.shown(node)))]
            }
            "member_call_expression"
            | "nullsafe_member_call_expression"
            | "scoped_call_expression" => vec![Origin::unknown(format!(
                "the result of {}",
                self.shown(node)
            ))],
            _ => vec![Origin::unknown(self.shown(node))],
        }
    }

    /// The text of a single-quoted string (its escapes decoded).
    fn literal_text(&self, node: Node<'t>) -> String {
        let mut text = String::new();
        for part in named_children(node) {
            match part.kind() {
                "escape_sequence" => text.push_str(&unescape(self.text(part))),
                _ => text.push_str(self.text(part)),
            }
        }
        text
    }

    /// An interpolated string or heredoc body: literal parts and expressions, in order.
    fn parts(&mut self, node: Node<'t>) -> Value {
        let mut values = Vec::new();
        for part in named_children(node) {
            values.push(match part.kind() {
                "string_content" => vec![Origin::literal(self.text(part))],
                "escape_sequence" => vec![Origin::literal(unescape(self.text(part)))],
                _ => self.eval(part),
            });
        }
        concat(&values)
    }

    /// The operands of a chain of `.`, left to right.
    fn concat_leaves(&self, node: Node<'t>, leaves: &mut Vec<Node<'t>>) {
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

    fn operator(&self, node: Node<'t>) -> String {
        node.child_by_field_name("operator")
            .map(|op| self.text(op).to_ascii_lowercase())
            .unwrap_or_default()
    }

    fn var_name(&self, node: Node<'t>) -> String {
        self.text(node).trim_start_matches('$').to_string()
    }

    fn variable(&self, name: &str) -> Value {
        if name == "this" {
            return vec![Origin::unknown("$this")];
        }
        match self.scopes.last().and_then(|scope| scope.vars.get(name)) {
            Some(value) => value.clone(),
            None => vec![Origin::unknown(format!("${name}, not set in this scope"))],
        }
    }

    fn constant(&self, node: Node<'t>) -> Value {
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

    fn class_constant(&self, node: Node<'t>) -> Value {
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

    fn subscript(&mut self, node: Node<'t>) -> Value {
        let parts = named_children(node);
        let Some(base) = parts.first().copied() else {
            return Vec::new();
        };
        let key = parts.get(1).and_then(|k| self.key(*k));
        let shown = self.shown(node);
        if base.kind() != "variable_name" {
            return self.eval(base);
        }
        match self.var_name(base).as_str() {
            "_SERVER" => match key.as_deref() {
                Some(
                    "DOCUMENT_ROOT"
                    | "CONTEXT_DOCUMENT_ROOT"
                    | "SCRIPT_FILENAME"
                    | "ORIG_SCRIPT_FILENAME"
                    | "PATH_TRANSLATED",
                ) => vec![Origin::of(Source::DocumentRoot(shown))],
                Some("PWD") => vec![Origin::of(Source::WorkingDirectory)],
                // URLs, not file paths.
                Some("PHP_SELF" | "SCRIPT_NAME" | "REQUEST_URI" | "PATH_INFO" | "QUERY_STRING") => {
                    vec![Origin::unknown(format!("{shown}, a URL path"))]
                }
                Some(_) => vec![Origin::of(Source::Environment(shown))],
                None => vec![Origin::unknown(shown)],
            },
            "_ENV" => vec![Origin::of(Source::Environment(shown))],
            "GLOBALS" => match key {
                Some(name) => self.scopes[0].vars.get(&name).cloned().unwrap_or_else(|| {
                    vec![Origin::unknown(format!("{shown}, not set in this file"))]
                }),
                None => vec![Origin::unknown(shown)],
            },
            "_GET" | "_POST" | "_REQUEST" | "_COOKIE" | "_FILES" => {
                vec![Origin::unknown(format!("{shown}, request input"))]
            }
            name => {
                let name = name.to_string();
                self.variable(&name)
            }
        }
    }

    /// An array key written as a literal.
    fn key(&mut self, node: Node<'t>) -> Option<String> {
        match node.kind() {
            "name" | "integer" => Some(self.text(node).to_string()),
            _ => match self.eval(node).as_slice() {
                [origin] if origin.is_literal() && origin.complete => Some(origin.text.clone()),
                _ => None,
            },
        }
    }

    fn function_name(&self, node: Node<'t>) -> Option<String> {
        let function = node.child_by_field_name("function")?;
        matches!(function.kind(), "name" | "qualified_name" | "relative_name").then(|| {
            let text = self.text(function);
            text.rsplit('\\')
                .next()
                .unwrap_or(text)
                .to_ascii_lowercase()
        })
    }

    fn arguments(&self, node: Node<'t>) -> Vec<Node<'t>> {
        let Some(arguments) = node.child_by_field_name("arguments") else {
            return Vec::new();
        };
        named_children(arguments)
            .into_iter()
            .filter(|a| a.kind() == "argument")
            .filter_map(|a| named_children(a).last().copied())
            .collect()
    }

    fn call_value(&mut self, node: Node<'t>) -> Value {
        let Some(name) = self.function_name(node) else {
            return vec![Origin::unknown(format!(
                "the result of {}",
                self.shown(node)
            ))];
        };
        let args = self.arguments(node);
        let shown = self.shown(node);
        let first = |walker: &mut Self| match args.first() {
            Some(arg) => walker.eval(*arg),
            None => Vec::new(),
        };
        match name.as_str() {
            "dirname" => {
                let levels = args
                    .get(1)
                    .and_then(|n| self.text(*n).parse::<usize>().ok())
                    .unwrap_or(1);
                first(self)
                    .into_iter()
                    .map(|origin| dirname(origin, levels))
                    .collect()
            }
            "realpath" | "rtrim" | "trim" | "strval" => first(self),
            "glob" => first(self).into_iter().map(Origin::incomplete).collect(),
            "getenv" | "env" | "apache_getenv" => vec![Origin::of(Source::Environment(shown))],
            "ini_get" | "get_cfg_var" => vec![Origin::of(Source::Ini(shown))],
            "get_include_path" | "stream_resolve_include_path" => {
                vec![Origin::of(Source::IncludePath(shown))]
            }
            "getcwd" => vec![Origin::of(Source::WorkingDirectory)],
            "sprintf" => {
                let format = first(self);
                let [format] = format.as_slice() else {
                    return vec![Origin::unknown(shown)];
                };
                if !format.is_literal() || !format.complete {
                    return vec![Origin::unknown(shown)];
                }
                let spec = format.text.find('%');
                match spec {
                    Some(0) if format.text.starts_with("%s") || format.text.starts_with("%1$s") => {
                        let rest = format.text.trim_start_matches("%1$s");
                        let rest = rest.strip_prefix("%s").unwrap_or(rest);
                        let rest = &rest[..rest.find('%').unwrap_or(rest.len())];
                        let arg = match args.get(1) {
                            Some(arg) => self.eval(*arg),
                            None => Vec::new(),
                        };
                        concat(&[arg, vec![Origin::literal(rest).incomplete()]])
                    }
                    Some(at) => vec![Origin::literal(&format.text[..at]).incomplete()],
                    None => vec![format.clone()],
                }
            }
            "array_merge" => {
                let mut value = Vec::new();
                for arg in args.iter() {
                    let element = self.eval(*arg);
                    union_into(&mut value, element);
                }
                value
            }
            _ => vec![Origin::unknown(format!("the result of {name}()"))],
        }
    }

    // ---- Findings ---------------------------------------------------------------------

    fn include(&mut self, node: Node<'t>) {
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

    fn call(&mut self, node: Node<'t>) {
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
        let mut leaves = Vec::new();
        self.concat_leaves(arg, &mut leaves);
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

    /// The rule a possible start breaks, if any.
    fn hazard(&self, origin: &Origin) -> Option<Rule> {
        match &origin.source {
            Source::Release { .. } => None,
            Source::Literal => match literal_kind(&origin.text) {
                LiteralKind::Absolute => Some(Rule::AbsolutePath),
                LiteralKind::Relative => Some(Rule::RelativePath),
                LiteralKind::Wrapper => None,
            },
            Source::DocumentRoot(_) => Some(Rule::DocumentRoot),
            Source::WorkingDirectory => Some(Rule::WorkingDirectory),
            Source::Environment(_) => Some(Rule::Environment),
            Source::Ini(_) => Some(Rule::IniSetting),
            Source::IncludePath(_) => Some(Rule::IncludePath),
            Source::Unknown(_) => {
                (self.options.strict && !self.file.in_vendor()).then_some(Rule::UnknownOrigin)
            }
        }
    }

    fn check_path(&mut self, node: Node<'t>, usage: PathUse<'_>, value: &Value) {
        let mut worst: Option<(Rule, &Origin)> = None;
        for origin in value {
            if let Some(rule) = self.hazard(origin) {
                if worst.is_none_or(|(w, _)| rule < w) {
                    worst = Some((rule, origin));
                }
            }
        }
        let Some((rule, origin)) = worst else { return };
        let origin = origin.clone();
        let what = self.describe(&origin);
        let (rule, message) = match usage {
            PathUse::Compile => (
                Rule::PreloadPath,
                format!(
                    "opcache_compile_file() of a path built from {what}: preloading resolves it \
                     once, at php-fpm start, through the deploy symlink into whichever release \
                     it names then, and preloaded code is never revalidated nor dropped by \
                     opcache_reset(); __DIR__ is this release's real path"
                ),
            ),
            PathUse::Include(keyword) if rule != Rule::UnknownOrigin && is_autoloader(&origin) => (
                Rule::ComposerAutoload,
                format!(
                    "{keyword} of the Composer autoloader through {what}: it can come from the \
                     other release than this file, and every class it loads then comes from \
                     that release; {WHY}"
                ),
            ),
            PathUse::Include(keyword) => (rule, self.message(rule, keyword, &origin, &what)),
        };
        let hint = self.hint(rule, usage, &origin);
        self.report(node, rule, message, hint);
    }

    fn message(&self, rule: Rule, keyword: &str, origin: &Origin, what: &str) -> String {
        match rule {
            Rule::RelativePath => {
                let looked_up = if origin.text.starts_with("./") || origin.text.starts_with("../") {
                    "resolved against the working directory"
                } else {
                    "looked up in include_path and the working directory"
                };
                format!(
                    "{keyword} of {what}, {looked_up} (php-fpm's is the script's directory, \
                     named through the symlink): {WHY}"
                )
            }
            Rule::DocumentRoot => format!(
                "{keyword} of a path built from {what}, which the web server passes through the \
                 symlink (unless nginx uses $realpath_root): {WHY}"
            ),
            Rule::WorkingDirectory => format!(
                "{keyword} of a path built from {what}: php-fpm's working directory is the \
                 script's directory, named through the symlink; {WHY}"
            ),
            Rule::Environment | Rule::IniSetting => format!(
                "{keyword} of a path built from {what}: a configured root usually names the \
                 deploy symlink; {WHY}"
            ),
            Rule::IncludePath => format!(
                "{keyword} of a path built from {what}: include_path entries usually name the \
                 deploy symlink or the working directory; {WHY}"
            ),
            Rule::UnknownOrigin => format!(
                "{keyword} of {what}, whose origin cutover-lint cannot follow (reported with \
                 --strict): if it names the deploy symlink, it is resolved again at include \
                 time and can load the other release's file mid-request"
            ),
            _ => format!("{keyword} of {what}: {WHY}"),
        }
    }

    /// "the absolute path '/srv/app/current/lib/a.php' (via $root on line 3)".
    fn describe(&self, origin: &Origin) -> String {
        let shown_text = if origin.complete {
            origin.text.clone()
        } else {
            format!("{}…", origin.text)
        };
        let what = match &origin.source {
            Source::Literal => match literal_kind(&origin.text) {
                LiteralKind::Absolute => format!("the absolute path '{shown_text}'"),
                _ => format!("the relative path '{shown_text}'"),
            },
            Source::Release { .. } => "__DIR__".to_string(),
            Source::DocumentRoot(expr)
            | Source::Environment(expr)
            | Source::Ini(expr)
            | Source::IncludePath(expr) => expr.clone(),
            Source::WorkingDirectory => "getcwd()".to_string(),
            Source::Unknown(what) => what.clone(),
        };
        if origin.via.is_empty() {
            return what;
        }
        let steps: Vec<String> = origin
            .via
            .iter()
            .map(|via| {
                if via.file == self.file_key {
                    format!("{} on line {}", via.what, via.line)
                } else {
                    format!("{} in {}:{}", via.what, via.file, via.line)
                }
            })
            .collect();
        format!("{what} (via {})", steps.join(", "))
    }

    fn hint(&self, rule: Rule, usage: PathUse<'_>, origin: &Origin) -> String {
        let (open, close) = match usage {
            PathUse::Include(keyword) => (format!("{keyword} "), ";"),
            PathUse::Compile => ("opcache_compile_file(".to_string(), ");"),
        };
        if rule == Rule::UnknownOrigin {
            return "build the path from __DIR__, or accept it with `// cutover-lint: \
                    allow(unknown-origin)`"
                .into();
        }
        let mut hint = match self.suggestion(origin) {
            Some(Suggestion::File { expr, target }) => format!(
                "use `{open}{expr}{close}` — {target} from this file's real directory, so it \
                 stays in this release"
            ),
            Some(Suggestion::Dir { expr, target }) => format!(
                "start the path from `{expr}` ({target}/ from this file's real directory), so it \
                 stays in this release"
            ),
            None if rule == Rule::RelativePath && origin.complete => {
                let path = origin.text.trim_start_matches("./");
                format!("use `{open}__DIR__ . '/{path}'{close}` if {path} is next to this file, so it stays in this release")
            }
            None => format!(
                "build the path from __DIR__, this file's real directory: \
                 `{open}__DIR__ . '/…'{close}` or `dirname(__DIR__) . '/…'`"
            ),
        };
        match rule {
            Rule::AbsolutePath => hint.push_str(
                "; if the file is outside the deploy path, accept the line with \
                 `// cutover-lint: allow(absolute-path)`",
            ),
            Rule::PreloadPath => hint.push_str("; restart php-fpm on every deploy (fpm-reload)"),
            _ => {}
        }
        hint
    }

    /// The tree's file or directory a hazardous path most likely means, as a `__DIR__`
    /// expression from this file.
    fn suggestion(&self, origin: &Origin) -> Option<Suggestion> {
        let paths = self.knowledge.paths.as_ref()?;
        let text = if origin.complete {
            origin.text.as_str()
        } else {
            // Only the part up to the last '/' is a directory for sure.
            &origin.text[..origin.text.rfind('/').map_or(0, |i| i + 1)]
        };
        let parts: Vec<&str> = text
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.is_empty() {
            return None;
        }
        let exists = |candidate: &str| paths.contains(candidate);
        let mut found = None;
        match &origin.source {
            Source::Literal if text.starts_with('/') => {
                // '/srv/app/current/lib/a.php': the longest tail that names a path here.
                for start in 0..parts.len() {
                    if parts[start..].contains(&"..") {
                        continue;
                    }
                    let candidate = parts[start..].join("/");
                    if exists(&candidate) {
                        found = Some(candidate);
                        break;
                    }
                }
            }
            Source::Literal => {
                // Next to this file first (PHP's last resort), then the tree's root (the
                // usual working directory).
                let candidates = [resolve(&self.dir, 0, text), resolve(&[], 0, text)];
                found = candidates.into_iter().flatten().find(|c| exists(c));
            }
            Source::Unknown(_) | Source::Release { .. } => {}
            _ => {
                // A root from the server or the environment: the tree's root, or a usual
                // document root inside it.
                for base in ["", "public", "web", "htdocs", "public_html"] {
                    if !base.is_empty() && !exists(base) {
                        continue;
                    }
                    let base: Vec<String> = base
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect();
                    if let Some(candidate) = resolve(&base, 0, text).filter(|c| exists(c)) {
                        found = Some(candidate);
                        break;
                    }
                }
            }
        }
        let target = found?;
        let relative = relative_path(&self.dir, &target);
        if origin.complete {
            let expr = if relative.is_empty() {
                "__DIR__".to_string()
            } else {
                format!("__DIR__ . '/{relative}'")
            };
            Some(Suggestion::File { expr, target })
        } else {
            let expr = if relative.is_empty() {
                "__DIR__ . '/'".to_string()
            } else {
                format!("__DIR__ . '/{relative}/'")
            };
            Some(Suggestion::Dir { expr, target })
        }
    }

    fn report(&mut self, node: Node<'t>, rule: Rule, message: String, hint: String) {
        let first = node.start_position().row + 1;
        let last = node.end_position().row + 1;
        if self.allows.iter().any(|a| a.covers(rule, first, last)) {
            return;
        }
        let (line, column) = position(node, self.src);
        self.findings.push(Finding {
            file: self.file.display.clone(),
            line,
            column,
            rule,
            message,
            hint,
        });
    }

    /// A script that calls opcache_compile_file(), or is named like Symfony's
    /// `config/preload.php`, is most likely an `opcache.preload` script.
    fn preload_script(&mut self) {
        if !self.lint {
            return;
        }
        let name = self.file.file_name();
        let named = name == "preload.php" || name.ends_with(".preload.php");
        let at = self
            .first_compile
            .or(if named { self.first_include } else { None });
        let Some(at) = at else { return };
        self.report(
            at,
            Rule::OpcachePreload,
            "this looks like an opcache.preload script: preloaded code is never revalidated \
             and survives opcache_reset(), so a deploy takes effect only after a full php-fpm \
             restart"
                .into(),
            "if opcache.preload names this file, set [refresh] strategy = [\"fpm-reload\"] so \
             each deploy restarts php-fpm; if it does not, accept the line with \
             `// cutover-lint: allow(opcache-preload)`"
                .into(),
        );
    }
}

enum Suggestion {
    File { expr: String, target: String },
    Dir { expr: String, target: String },
}

enum LiteralKind {
    Absolute,
    Relative,
    /// `phar://…`, `file://…` and other stream wrappers: not a plain path.
    Wrapper,
}

fn literal_kind(text: &str) -> LiteralKind {
    if text.starts_with('/') || text.starts_with('\\') {
        return LiteralKind::Absolute;
    }
    let bytes = text.as_bytes();
    if bytes.len() >= 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && matches!(bytes[2], b'/' | b'\\')
    {
        return LiteralKind::Absolute;
    }
    if let Some(at) = text.find("://") {
        if text[..at]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '+' || c == '-')
        {
            return LiteralKind::Wrapper;
        }
    }
    LiteralKind::Relative
}

/// Composer's `vendor/autoload.php`, by the literal text at the end of the path.
fn is_autoloader(origin: &Origin) -> bool {
    origin.complete && origin.text.ends_with("vendor/autoload.php")
}

/// `dirname()` of a possible start, `levels` times.
fn dirname(mut origin: Origin, levels: usize) -> Origin {
    for _ in 0..levels {
        if origin.complete && !origin.text.trim_end_matches('/').is_empty() {
            let trimmed = origin.text.trim_end_matches('/');
            match trimmed.rfind('/') {
                Some(0) if origin.is_literal() => origin.text = "/".into(),
                Some(at) if at > 0 => origin.text.truncate(at),
                None if origin.is_literal() => origin.text = ".".into(),
                _ => origin.text.clear(),
            }
        } else if let Source::Release { up } = &mut origin.source {
            *up += 1;
        } else if !origin.complete {
            // dirname('/srv/' . $x) is somewhere under /srv: the start stays.
        }
    }
    origin
}

/// The path inside the tree that `text` names from directory `dir` (`up` levels higher),
/// normalised; `None` when it leaves the tree.
fn resolve(dir: &[String], up: usize, text: &str) -> Option<String> {
    let mut parts: Vec<String> = dir.to_vec();
    for _ in 0..up {
        parts.pop()?;
    }
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part.to_string()),
        }
    }
    Some(parts.join("/"))
}

/// `target` as seen from directory `dir`, both inside the tree: `../lib/a.php`.
fn relative_path(dir: &[String], target: &str) -> String {
    let target: Vec<&str> = target.split('/').filter(|p| !p.is_empty()).collect();
    let common = dir
        .iter()
        .zip(&target)
        .take_while(|(a, b)| a.as_str() == **b)
        .count();
    let mut parts: Vec<&str> = vec![".."; dir.len() - common];
    parts.extend(&target[common..]);
    parts.join("/")
}

/// The values of `a . b . c`: a start followed by literal text keeps the text (so a hint can
/// name the file); an empty literal start gives way to what follows.
fn concat(values: &[Value]) -> Value {
    let mut acc = vec![Origin::literal("")];
    for value in values.iter().rev() {
        let mut next = Vec::new();
        for head in value {
            if !head.complete {
                next.push(head.clone());
                continue;
            }
            for tail in &acc {
                let joined = if tail.is_literal() {
                    let mut joined = Origin {
                        text: format!("{}{}", head.text, tail.text),
                        complete: tail.complete,
                        ..head.clone()
                    };
                    for via in &tail.via {
                        push_via(&mut joined.via, via.clone());
                    }
                    joined
                } else if head.is_literal() && head.text.is_empty() {
                    let mut joined = tail.clone();
                    for via in &head.via {
                        push_via(&mut joined.via, via.clone());
                    }
                    joined
                } else {
                    head.clone().incomplete()
                };
                next.push(joined);
            }
        }
        acc = dedup(next);
    }
    acc
}

fn union(mut a: Value, b: Value) -> Value {
    union_into(&mut a, b);
    a
}

fn union_into(into: &mut Value, from: Value) {
    for origin in from {
        if into.len() < MAX_ORIGINS && !into.contains(&origin) {
            into.push(origin);
        }
    }
}

fn dedup(value: Value) -> Value {
    union(Vec::new(), value)
}

fn push_via(via: &mut Vec<Via>, step: Via) {
    if via.len() < MAX_VIA && !via.contains(&step) {
        via.insert(0, step);
    }
}

fn named_children(node: Node<'_>) -> Vec<Node<'_>> {
    let mut cursor = node.walk();
    node.named_children(&mut cursor).collect()
}

fn collect_variables<'t>(node: Node<'t>, into: &mut Vec<Node<'t>>) {
    for child in named_children(node) {
        if child.kind() == "variable_name" {
            into.push(child);
        } else {
            collect_variables(child, into);
        }
    }
}

fn unescape(escape: &str) -> String {
    match escape {
        "\\\\" => "\\".into(),
        "\\'" => "'".into(),
        "\\\"" => "\"".into(),
        "\\$" => "$".into(),
        "\\n" => "\n".into(),
        "\\t" => "\t".into(),
        other => other.into(),
    }
}
