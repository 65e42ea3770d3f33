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
//! A file is parsed once and its tree dropped before the next step: the walk keeps only
//! what the rest of the run needs ([`FileFacts`]: the constants and top-level variables it
//! defines, and the include sites whose paths may be hazards, with values that still name
//! other files' definitions symbolically). [`resolve`] fills those in once every file has
//! been read, and [`findings`] judges the sites. Most files are not parsed at all:
//! [`prescan`] finds the ones whose walk could yield nothing by a search of their bytes.
//!
//! This file holds the entry point, [`analyze`], and the walker's state. The modules below
//! hold one concern each (the value model, what files share, or a group of [`Walker`]'s
//! methods), so the walk can be read a concern at a time.

mod constants;
mod eval;
mod findings;
mod hints;
mod include;
mod path;
mod prescan;
mod resolve;
mod scope;
mod syntax;
mod value;
mod visit;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use tree_sitter::{Node, Parser};

use crate::suppress::Allow;
use crate::walk::SourceFile;
use crate::Options;

pub(crate) use findings::{Definition, Hit, Judge};
pub(crate) use prescan::{need, Need, Wanted};
pub(crate) use resolve::Definitions;

use scope::Scope;
use syntax::{position, scan};
use value::{Source, Value, Via};

/// Expressions nested deeper than this inside one value (generated code) are not evaluated:
/// their value is unknown. Evaluation recurses, and a level can take 10 KiB of stack in a
/// debug build (`dirname(dirname(…))`), so 100 levels stay well inside the 2 MiB that rayon's
/// and the test harness's threads have. The walk itself has no such bound.
const MAX_DEPTH: usize = 100;

/// What one file yields for the rest of the run; its syntax tree is gone.
#[derive(Debug, Default)]
pub(crate) struct FileFacts {
    /// Line and column of the first syntax error.
    pub syntax_error: Option<(usize, usize)>,
    /// Findings that need no other file (an `opcache.preload`-looking script).
    pub hits: Vec<Hit>,
    /// Include sites whose path may be a hazard.
    pub sites: Vec<Site>,
    /// The comments that accept findings: also read for findings reported at a definition.
    pub allows: Vec<Allow>,
    constants: Vec<(String, Value)>,
    exports: HashMap<String, Value>,
}

impl FileFacts {
    /// Adds this file's constants and top-level variables to what the tree defines.
    pub fn define_into(&mut self, rel: &str, definitions: &mut Definitions) {
        for (name, value) in std::mem::take(&mut self.constants) {
            let known = definitions.constants.entry(name).or_default();
            value::union_into(known, value);
        }
        let exports = std::mem::take(&mut self.exports);
        if !exports.is_empty() {
            definitions.exports.insert(rel.to_string(), exports);
        }
    }
}

/// Where a file uses a path: an include, `opcache_compile_file()`, or a new include_path.
/// Only sites whose value may be a hazard are kept, with their values still symbolic where
/// they use other files' definitions.
#[derive(Debug)]
pub(crate) struct Site {
    pub line: usize,
    pub column: usize,
    pub first_line: usize,
    pub last_line: usize,
    pub kind: SiteKind,
}

impl Site {
    /// The values judged at this site.
    fn values(&self) -> impl Iterator<Item = &Value> {
        let (one, entries) = match &self.kind {
            SiteKind::Include { value, .. } | SiteKind::Compile { value } => (Some(value), &[][..]),
            SiteKind::SetIncludePath { entries, .. } => (None, entries.as_slice()),
        };
        one.into_iter().chain(entries)
    }
}

#[derive(Debug)]
pub(crate) enum SiteKind {
    Include {
        keyword: &'static str,
        value: Value,
    },
    Compile {
        value: Value,
    },
    SetIncludePath {
        function: String,
        entries: Vec<Value>,
    },
}

thread_local! {
    /// One parser per thread, reused for every file it parses.
    static PARSER: RefCell<Option<Parser>> = const { RefCell::new(None) };
}

fn parse(text: &str) -> Option<tree_sitter::Tree> {
    PARSER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            let mut parser = Parser::new();
            parser
                .set_language(&tree_sitter_php::LANGUAGE_PHP.into())
                .ok()?;
            *cell = Some(parser);
        }
        let parser = cell.as_mut()?;
        let tree = parser.parse(text, None);
        parser.reset();
        tree
    })
}

pub(crate) fn analyze(file: &SourceFile, text: &str, options: &Options) -> FileFacts {
    let Some(tree) = parse(text) else {
        return FileFacts {
            syntax_error: Some((1, 1)),
            ..FileFacts::default()
        };
    };
    let root = tree.root_node();
    let (allows, syntax_error) = scan(root, text);
    let mut walker = Walker {
        src: text,
        file,
        file_key: Arc::from(file.rel.as_str()),
        dir: file.dir_components(),
        options,
        allows,
        scopes: vec![Scope::default()],
        classes: Vec::new(),
        cond: 0,
        depth: 0,
        hits: Vec::new(),
        sites: Vec::new(),
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
    FileFacts {
        syntax_error,
        hits: walker.hits,
        sites: walker.sites,
        allows: walker.allows,
        constants: walker.defined,
        exports,
    }
}

struct Walker<'t, 'k> {
    src: &'t str,
    file: &'k SourceFile,
    file_key: Arc<str>,
    dir: Vec<String>,
    options: &'k Options,
    allows: Vec<Allow>,
    scopes: Vec<Scope>,
    classes: Vec<String>,
    /// How many conditions or loops the walk is inside.
    cond: usize,
    /// How deep [`Walker::eval`] is nested.
    depth: usize,
    hits: Vec<Hit>,
    sites: Vec<Site>,
    /// Constants this file defined so far (visible before the tree-wide definitions).
    constants: HashMap<String, Value>,
    defined: Vec<(String, Value)>,
    first_compile: Option<Node<'t>>,
    first_include: Option<Node<'t>>,
}

impl<'t> Walker<'t, '_> {
    /// A step a value takes at `at`: "$root on line 3".
    fn step(&self, what: String, at: Node<'t>) -> Via {
        let (line, column) = position(at, self.src);
        Via {
            what,
            file: self.file_key.clone(),
            line,
            column,
            start: None,
        }
    }

    /// Whether a value may be judged a hazard once resolved: anything but `__DIR__`-based
    /// starts (and, unless --strict asks for them, unknown ones).
    fn may_be_hazard(&self, value: &Value) -> bool {
        let strict = self.options.strict && !self.file.in_vendor();
        value.iter().any(|origin| match origin.source {
            Source::Release { .. } => false,
            Source::Unknown(_) => strict,
            _ => true,
        })
    }

    fn site(&mut self, node: Node<'t>, kind: SiteKind) {
        let (line, column) = position(node, self.src);
        self.sites.push(Site {
            line,
            column,
            first_line: node.start_position().row + 1,
            last_line: node.end_position().row + 1,
            kind,
        });
    }

    /// A script that calls opcache_compile_file(), or is named like Symfony's
    /// `config/preload.php`, is most likely an `opcache.preload` script.
    fn preload_script(&mut self) {
        let name = self.file.file_name();
        let named = name == "preload.php" || name.ends_with(".preload.php");
        let at = self
            .first_compile
            .or(if named { self.first_include } else { None });
        let Some(at) = at else { return };
        let rule = crate::Rule::OpcachePreload;
        let (first, last) = (at.start_position().row + 1, at.end_position().row + 1);
        if self.allows.iter().any(|a| a.covers(rule, first, last)) {
            return;
        }
        let (line, column) = position(at, self.src);
        self.hits.push(Hit {
            rule,
            file: self.file.rel.clone(),
            line,
            column,
            message: "this looks like an opcache.preload script: preloaded code is never \
                      revalidated and survives opcache_reset(), so a deploy takes effect only \
                      after a full php-fpm restart"
                .into(),
            hint: "if opcache.preload names this file, set [refresh] strategy = [\"fpm-reload\"] \
                   so each deploy restarts php-fpm; if it does not, accept the line with \
                   `// cutover-lint: allow(opcache-preload)`"
                .into(),
            definition: None,
        });
    }
}
