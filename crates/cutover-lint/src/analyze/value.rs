//! The value model: a value is the set of its possible starts ([`Origin`]), and the
//! operations on it (concatenation, union, `dirname()`). Apart from the walk because it knows
//! nothing of syntax: everything else builds on it.

use std::sync::Arc;

/// Possible starts kept per value; more are dropped (the first ones found stay).
pub(super) const MAX_ORIGINS: usize = 8;
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
    /// A constant this file did not define before using it, `up` directories higher
    /// (`dirname()`): replaced by the tree's definition once every file is read.
    Constant {
        name: String,
        up: usize,
    },
    /// A variable this scope did not set, which a file it included (by a `__DIR__` path) may
    /// set: replaced by that file's top-level value once every file is read.
    Imported {
        file: String,
        name: String,
        up: usize,
    },
}

/// A step a value took on its way into an include: `$root` set on line 3, constant `ROOT`
/// defined in config.php:2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Via {
    pub(super) what: String,
    pub(super) file: Arc<str>,
    pub(super) line: usize,
    pub(super) column: usize,
    /// The value's text when this was its first step (and whether it was all of it): what
    /// the definition wrote, for a finding reported there.
    pub(super) start: Option<(String, bool)>,
}

/// One possible start of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(super) source: Source,
    /// The literal text known to follow the source (for a literal: the literal so far).
    pub(super) text: String,
    /// Whether `text` reaches the end of the value (nothing unknown follows).
    pub(super) complete: bool,
    pub(super) via: Vec<Via>,
}

impl Origin {
    pub(super) fn of(source: Source) -> Origin {
        Origin {
            source,
            text: String::new(),
            complete: true,
            via: Vec::new(),
        }
    }

    pub(super) fn literal(text: impl Into<String>) -> Origin {
        Origin {
            text: text.into(),
            ..Origin::of(Source::Literal)
        }
    }

    pub(super) fn unknown(what: impl Into<String>) -> Origin {
        Origin::of(Source::Unknown(what.into()))
    }

    pub(super) fn is_literal(&self) -> bool {
        self.source == Source::Literal
    }

    pub(super) fn incomplete(mut self) -> Origin {
        self.complete = false;
        self
    }
}

pub(super) type Value = Vec<Origin>;

/// `dirname()` of a possible start, `levels` times.
pub(super) fn dirname(mut origin: Origin, levels: usize) -> Origin {
    for _ in 0..levels {
        if origin.complete && !origin.text.trim_end_matches('/').is_empty() {
            let trimmed = origin.text.trim_end_matches('/');
            match trimmed.rfind('/') {
                Some(0) if origin.is_literal() => origin.text = "/".into(),
                Some(at) if at > 0 => origin.text.truncate(at),
                None if origin.is_literal() => origin.text = ".".into(),
                _ => origin.text.clear(),
            }
        } else if let Source::Release { up }
        | Source::Constant { up, .. }
        | Source::Imported { up, .. } = &mut origin.source
        {
            *up += 1;
        } else if !origin.complete {
            // dirname('/srv/' . $x) is somewhere under /srv: the start stays.
        }
    }
    origin
}

/// The values of `a . b . c`: a start followed by literal text keeps the text (so a hint can
/// name the file); an empty literal start gives way to what follows.
pub(super) fn concat(values: &[Value]) -> Value {
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

pub(super) fn union(mut a: Value, b: Value) -> Value {
    union_into(&mut a, b);
    a
}

pub(super) fn union_into(into: &mut Value, from: Value) {
    for origin in from {
        if into.len() < MAX_ORIGINS && !into.contains(&origin) {
            into.push(origin);
        }
    }
}

fn dedup(value: Value) -> Value {
    union(Vec::new(), value)
}

pub(super) fn push_via(via: &mut Vec<Via>, step: Via) {
    if via.len() < MAX_VIA && !via.contains(&step) {
        via.insert(0, step);
    }
}

/// `value` having taken step `via` (an assignment, a definition). The first step an origin
/// takes records its text then: what the definition wrote.
pub(super) fn through(value: Value, via: &Via) -> Value {
    value
        .into_iter()
        .map(|mut origin| {
            if !matches!(origin.source, Source::Unknown(_)) {
                let mut step = via.clone();
                if origin.via.is_empty() {
                    step.start = Some((origin.text.clone(), origin.complete));
                }
                push_via(&mut origin.via, step);
            }
            origin
        })
        .collect()
}
