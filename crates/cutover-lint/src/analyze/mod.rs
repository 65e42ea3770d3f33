//! The analysis of one file: a walk over its syntax tree that follows where each include
//! path starts.
//!
//! Only the start of a path decides where it resolves: `__DIR__ . $anything` stays in the
//! release, `'/srv/app/current/' . $anything` does not. So a value is tracked as the set of
//! its possible starts ([`Origin`]), each with the literal text known to follow it.
//! Variables are tracked per scope in source order: an assignment replaces the value, one
//! under a condition or in a loop adds to it, so `if ($x) $root = '/abs'; else $root =
//! __DIR__;` is a hazard.
//!
//! This file holds the entry point, [`analyze`], and the walker's state. The modules below
//! hold one concern each (the value model, what files share, or a group of [`Walker`]'s
//! methods), so the walk can be read a concern at a time.

mod constants;
mod eval;
mod findings;
mod hints;
mod include;
mod knowledge;
mod path;
mod scope;
mod syntax;
mod value;
mod visit;

use std::collections::HashMap;
use std::sync::Arc;

use tree_sitter::{Node, Parser};

use crate::suppress::Allow;
use crate::walk::SourceFile;
use crate::{Finding, Options};

pub(crate) use knowledge::Knowledge;
pub(crate) use value::Origin;

use scope::Scope;
use syntax::scan;
use value::{Source, Value};

/// Expressions nested deeper than this inside one value (generated code) are not evaluated:
/// their value is unknown. Evaluation recurses, and a level can take 10 KiB of stack in a
/// debug build (`dirname(dirname(…))`), so 100 levels stay well inside the 2 MiB that rayon's
/// and the test harness's threads have. The walk itself has no such bound.
const MAX_DEPTH: usize = 100;

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
    /// How deep [`Walker::eval`] is nested.
    depth: usize,
    findings: Vec<Finding>,
    /// Constants this file defined so far (visible before the tree-wide knowledge).
    constants: HashMap<String, Value>,
    defined: Vec<(String, Value)>,
    first_compile: Option<Node<'t>>,
    first_include: Option<Node<'t>>,
}
