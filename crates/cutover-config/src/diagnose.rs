//! Turns toml_edit and serde errors into located, plainly worded diagnostics.
//!
//! Serde reports unknown keys and wrong types only as text, in a format fixed since
//! serde 1.0 ("unknown field `x`, expected one of `a`, `b`"; "invalid type: string \"x\",
//! expected usize"); the span comes from toml_edit and the key path from the document.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::ConfigError;

/// A step from the document root to a value: a key, or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

pub(crate) fn syntax(err: &toml_edit::TomlError, text: &str, origin: &Path) -> ConfigError {
    let message = err.message().trim().replace('\n', ": ");
    let hint = if message.contains("expected `\"`, `'`") {
        "text values need quotes, e.g. path = \"/var/www/app\"".to_owned()
    } else {
        "fix the TOML at that line and column; `cutover init` writes a valid, commented example"
            .to_owned()
    };
    let hint = Some(hint);
    ConfigError::at(origin, text, err.span().unwrap_or(0..0), message, hint)
}

pub(crate) fn schema(
    err: &toml_edit::de::Error,
    document: &ImDocument<&str>,
    origin: &Path,
) -> ConfigError {
    let span = err.span().unwrap_or(0..0);
    let at = path_at(document.as_table(), &span);
    let (message, hint) = unknown_key(err.message(), at.as_deref(), document)
        .or_else(|| unknown_value(err.message(), at.as_deref()))
        .or_else(|| wrong_type(err.message(), at.as_deref()))
        .unwrap_or_else(|| (err.message().replace('\n', ": "), None));
    ConfigError::at(origin, document.raw(), span, message, hint)
}

fn unknown_key(
    message: &str,
    at: Option<&[Segment]>,
    document: &ImDocument<&str>,
) -> Option<(String, Option<String>)> {
    let (table, key) = match at {
        Some([table @ .., Segment::Key(key)]) => (table, key.as_str()),
        _ => return None,
    };
    let rest = message.strip_prefix(&format!("unknown field `{key}`, "))?;
    let shown = toml_key(key);
    let expected: Vec<&str> = match rest.strip_prefix("expected ") {
        // "`a`", "`a` or `b`", "one of `a`, `b`, `c`": the names are between backticks.
        Some(list) => list.split('`').skip(1).step_by(2).collect(),
        None => Vec::new(),
    };
    let is_table = at
        .and_then(|path| item_at(document, path))
        .is_some_and(|item| item.is_table() || item.is_array_of_tables());
    let message = match (table.is_empty(), is_table) {
        (true, true) => format!("unknown table [{shown}]"),
        (true, false) => format!("unknown top-level key `{shown}`"),
        (false, _) => format!("unknown key `{shown}` in [{}]", dotted(table)),
    };
    let hint = match nearest(key, &expected) {
        Some(near) => format!("did you mean `{near}`?"),
        None if table.is_empty() => format!("valid top-level keys: {}", expected.join(", ")),
        None => format!("valid keys in [{}]: {}", dotted(table), expected.join(", ")),
    };
    Some((message, Some(hint)))
}

/// serde's "unknown variant `x`, expected one of `a`, `b`" for a value from a fixed set
/// (a refresh strategy), with the nearest valid value suggested.
fn unknown_value(message: &str, at: Option<&[Segment]>) -> Option<(String, Option<String>)> {
    let rest = message.strip_prefix("unknown variant `")?;
    let (value, rest) = rest.split_once("`, expected ")?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let message = match at {
        Some(path) if !path.is_empty() => format!("unknown value `{value}` for `{}`", dotted(path)),
        _ => format!("unknown value `{value}`"),
    };
    let hint = match nearest(value, &expected) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!("valid values: {}", expected.join(", ")),
    };
    Some((message, Some(hint)))
}

fn nearest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let key = key.to_lowercase().replace('-', "_");
    candidates
        .iter()
        .filter(|candidate| {
            // Jaro-Winkler catches long keys with a typo or a lost suffix; it scores short
            // keys low for a single slip (`rn`), which the edit distance catches.
            strsim::jaro_winkler(&key, candidate) >= 0.8
                || strsim::damerau_levenshtein(&key, candidate) <= 1
        })
        .map(|candidate| (strsim::jaro_winkler(&key, candidate), *candidate))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

fn wrong_type(message: &str, at: Option<&[Segment]>) -> Option<(String, Option<String>)> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    // The expected half is a type description and never contains the separator; the found half may.
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let expected = plain_expected(expected);
    let found = plain_found(found);
    let Some(at) = at else {
        return Some((format!("expected {expected}, found {found}"), None));
    };
    let message = format!("expected {expected} for `{}`, found {found}", dotted(at));
    let key = at.iter().rev().find_map(|segment| match segment {
        Segment::Key(key) => Some(toml_key(key)),
        Segment::Index(_) => None,
    });
    let hint = match (expected, key.as_deref()) {
        ("an array", Some(key)) if found.starts_with('"') => {
            Some(format!("write a list, even of one: {key} = [{found}]"))
        }
        ("a whole number", Some(key)) => found
            .trim_matches('"')
            .parse::<u64>()
            .ok()
            .filter(|_| found.starts_with('"'))
            .map(|number| format!("leave out the quotes: {key} = {number}"))
            .or_else(|| Some(format!("write a number, e.g. {key} = 5"))),
        ("text", Some(key)) => Some(format!("write it in quotes, e.g. {key} = \"value\"")),
        ("an array", Some(key)) => Some(format!("write a list, e.g. {key} = [\"value\"]")),
        _ => Some("`cutover init` writes every key with its type in a comment".to_owned()),
    };
    Some((message, hint))
}

fn plain_expected(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => "a whole number",
        "a sequence" => "an array",
        "path string" => "a string",
        "a boolean" => "true or false",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => other,
    }
}

/// serde's `Unexpected` reads "string \"x\"", "integer `3`", "map", ...
fn plain_found(found: &str) -> String {
    if let Some(string) = found.strip_prefix("string ") {
        return string.to_owned();
    }
    match found.split('`').nth(1) {
        Some(literal) => literal.to_owned(),
        None => match found {
            "map" => "a table".to_owned(),
            "sequence" => "an array".to_owned(),
            other => other.to_owned(),
        },
    }
}

pub(crate) fn dotted(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        // Writing to a String cannot fail.
        let _ = match segment {
            Segment::Key(key) if out.is_empty() => write!(out, "{}", toml_key(key)),
            Segment::Key(key) => write!(out, ".{}", toml_key(key)),
            Segment::Index(index) => write!(out, "[{index}]"),
        };
    }
    out
}

/// A key as TOML would write it: quoted only when it has to be.
fn toml_key(key: &str) -> String {
    toml_edit::Key::new(key).display_repr().into_owned()
}

pub(crate) fn item_at<'a>(document: &'a ImDocument<&str>, path: &[Segment]) -> Option<&'a Item> {
    path.iter()
        .try_fold(document.as_item(), |item, segment| match segment {
            Segment::Key(key) => item.get(key),
            Segment::Index(index) => item.get(*index),
        })
}

/// The path of the key or value whose source span is exactly `span`.
fn path_at(table: &dyn TableLike, span: &Range<usize>) -> Option<Vec<Segment>> {
    let mut path = Vec::new();
    in_table(table, span, &mut path).then_some(path)
}

fn in_table(table: &dyn TableLike, span: &Range<usize>, path: &mut Vec<Segment>) -> bool {
    for (key, item) in table.iter() {
        path.push(Segment::Key(key.to_owned()));
        let key_span = table.get_key_value(key).and_then(|(key, _)| key.span());
        if key_span.as_ref() == Some(span) || in_item(item, span, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn in_item(item: &Item, span: &Range<usize>, path: &mut Vec<Segment>) -> bool {
    match item {
        Item::None => false,
        Item::Value(value) => in_value(value, span, path),
        Item::Table(table) => item.span().as_ref() == Some(span) || in_table(table, span, path),
        Item::ArrayOfTables(tables) => {
            item.span().as_ref() == Some(span)
                || in_elements(tables.iter(), span, path, |table, span, path| {
                    table.span().as_ref() == Some(span) || in_table(table, span, path)
                })
        }
    }
}

fn in_value(value: &Value, span: &Range<usize>, path: &mut Vec<Segment>) -> bool {
    value.span().as_ref() == Some(span)
        || match value {
            Value::Array(array) => in_elements(array.iter(), span, path, in_value),
            Value::InlineTable(table) => in_table(table, span, path),
            _ => false,
        }
}

fn in_elements<'a, T: 'a>(
    elements: impl Iterator<Item = &'a T>,
    span: &Range<usize>,
    path: &mut Vec<Segment>,
    within: impl Fn(&T, &Range<usize>, &mut Vec<Segment>) -> bool,
) -> bool {
    for (index, element) in elements.enumerate() {
        path.push(Segment::Index(index));
        if within(element, span, path) {
            return true;
        }
        path.pop();
    }
    false
}
