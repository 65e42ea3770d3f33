//! Expression evaluation: the possible starts of an expression's value, from strings,
//! concatenations, variables, superglobals and the functions whose result is known. Apart
//! because it only reads: nothing here binds a name or reports a finding.

use tree_sitter::Node;

use super::syntax::named_children;
use super::value::{concat, dirname, union, union_into, Origin, Source, Value, MAX_ORIGINS};
use super::{Walker, MAX_DEPTH};

impl<'t, 'k> Walker<'t, 'k> {
    pub(super) fn eval(&mut self, node: Node<'t>) -> Value {
        // Wrappers are unwrapped in a loop, not by recursion: `((((…))))` nests as deep as
        // the input likes.
        let mut node = node;
        while let Some(inner) = passed_through(node) {
            node = inner;
        }
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
                    let (leaves, left_out) = self.concat_leaves(node);
                    let mut values: Vec<Value> = leaves.into_iter().map(|l| self.eval(l)).collect();
                    if left_out {
                        values.push(self.left_out(node));
                    }
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
            "conditional_expression" => {
                let first = node
                    .child_by_field_name("body")
                    .or_else(|| node.child_by_field_name("condition"));
                let first = first.map(|n| self.eval(n)).unwrap_or_default();
                let alternative = node.child_by_field_name("alternative");
                let alternative = alternative.map(|n| self.eval(n)).unwrap_or_default();
                union(first, alternative)
            }
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
                // A full value takes no more origins: the rest of a generated array (20,000
                // elements) cannot change it, and evaluation has no other effect.
                for element in named_children(node) {
                    if value.len() == MAX_ORIGINS {
                        break;
                    }
                    if let Some(last) = named_children(element).last() {
                        let element = self.eval(*last);
                        union_into(&mut value, element);
                    }
                }
                value
            }
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

    /// What stands for the operands of a concatenation that [`Walker::concat_leaves`] left
    /// out: text nobody knows.
    pub(super) fn left_out(&self, node: Node<'t>) -> Value {
        let what = format!("{}, a concatenation too long to follow", self.shown(node));
        vec![Origin::unknown(what).incomplete()]
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
    pub(super) fn key(&mut self, node: Node<'t>) -> Option<String> {
        match node.kind() {
            "name" | "integer" => Some(self.text(node).to_string()),
            _ => match self.eval(node).as_slice() {
                [origin] if origin.is_literal() && origin.complete => Some(origin.text.clone()),
                _ => None,
            },
        }
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
                    if value.len() == MAX_ORIGINS {
                        break;
                    }
                    let element = self.eval(*arg);
                    union_into(&mut value, element);
                }
                value
            }
            _ => vec![Origin::unknown(format!("the result of {name}()"))],
        }
    }
}

/// The operand whose value a wrapper passes on unchanged: parentheses, `@`, a cast,
/// `...`/`&`. A wrapper without one is unknown.
///
/// Not an assignment used as a value: the walk evaluates every assignment of a chain
/// `$a = $b = …` itself, so unwrapping those without counting them would cost the square
/// of the chain's length; as a recursion they count against MAX_DEPTH.
fn passed_through(node: Node<'_>) -> Option<Node<'_>> {
    match node.kind() {
        "parenthesized_expression"
        | "error_suppression_expression"
        | "variadic_unpacking"
        | "by_ref" => node.named_child(0),
        "cast_expression" => node.child_by_field_name("value"),
        _ => None,
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
