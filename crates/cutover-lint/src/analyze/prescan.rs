//! Which files need a syntax tree at all, decided by a byte search before any parse.
//!
//! Parsing is most of a lint run's time, and most PHP files (classes of a framework, a
//! generated array) hold nothing the walk acts on. A file's walk yields something of its own
//! only through an include, a call of one of [`CALLS`], or an allow comment; without any of
//! them (as words outside comments: one inside a string still counts, which only costs a
//! parse) it can at most define `const`s and top-level variables, and those matter only
//! when another file's include path reads one. Such a file is deferred: parsed when the
//! analysed files want a constant whose name it holds, or import its variables
//! ([`Wanted`]). The markers are the constants the walk itself matches on, so the two
//! cannot drift apart.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

use super::include::{CALLS, KEYWORDS};
use super::value::{Source, Value};
use super::FileFacts;
use crate::suppress::MARKER;
use crate::walk::SourceFile;

/// The keyword of a `const` declaration: a file holding one may define a constant.
const CONST: &str = "const";

/// What a file's bytes say it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// It may include, call one of [`CALLS`] or accept findings: walk it.
    Parse,
    /// It can only define `const`s (when it holds the keyword) and top-level variables.
    Defer { has_const: bool },
}

/// How a marker found in the text has to stand to count.
#[derive(Clone, Copy)]
enum Marker {
    /// `include`, `require_once`, …: a word of its own.
    Keyword,
    /// A function name: a call is the name, then `(` (perhaps after space or a comment).
    Call,
    /// The allow comment's marker, anywhere.
    Comment,
    Const,
}

fn markers() -> &'static (AhoCorasick, Vec<Marker>) {
    static MARKERS: OnceLock<(AhoCorasick, Vec<Marker>)> = OnceLock::new();
    MARKERS.get_or_init(|| {
        let mut patterns: Vec<&str> = Vec::new();
        let mut kinds = Vec::new();
        for keyword in KEYWORDS {
            patterns.push(keyword);
            kinds.push(Marker::Keyword);
        }
        for call in CALLS {
            patterns.push(call);
            kinds.push(Marker::Call);
        }
        patterns.push(MARKER);
        kinds.push(Marker::Comment);
        patterns.push(CONST);
        kinds.push(Marker::Const);
        // PHP keywords and function names are case-insensitive; the allow marker is matched
        // case-sensitively by the walk, so a case-insensitive search only parses more.
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&patterns)
            .unwrap_or_else(|error| unreachable!("fixed patterns build: {error}"));
        (automaton, kinds)
    })
}

/// Whether `byte` can be part of a PHP name (or a variable's `$`, which makes the word a
/// variable and not a keyword or a function).
fn in_name(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80
}

pub(crate) fn need(bytes: &[u8]) -> Need {
    let (automaton, kinds) = markers();
    let mut has_const = false;
    let mut found_at = Vec::new();
    // Overlapping: `set_include_path` holds `include`, and both must be looked at.
    for found in automaton.find_overlapping_iter(bytes) {
        let before = found.start().checked_sub(1).map(|at| bytes[at]);
        let after = &bytes[found.end()..];
        let word_start = !before.is_some_and(|b| in_name(b) || b == b'$');
        let word_end = !after.first().copied().is_some_and(in_name);
        match kinds[found.pattern().as_usize()] {
            Marker::Comment => return Need::Parse,
            Marker::Keyword if word_start && word_end => found_at.push(found.start()),
            Marker::Call if word_start && opens_call(after) => found_at.push(found.start()),
            Marker::Const if word_start && word_end => has_const = true,
            _ => {}
        }
    }
    if found_at.is_empty() {
        return Need::Defer { has_const };
    }
    // Docblocks say "include" and "require" all the time: words in comments do not count.
    let comments = comments(bytes);
    let in_comment = |at: usize| {
        let after = comments.partition_point(|range| range.end <= at);
        comments.get(after).is_some_and(|range| range.contains(&at))
    };
    if found_at.into_iter().all(in_comment) {
        Need::Defer { has_const }
    } else {
        Need::Parse
    }
}

/// The comments of a PHP file, in order, as far as a plain lexer is sure of them: where it
/// meets what it does not follow (a heredoc, an interpolated `{$…}`, a short open tag) it
/// stops, and the rest of the file counts as code. Mistaking code for a comment would hide
/// an include, so only strings have to be right: a comment opener inside a string is text.
fn comments(bytes: &[u8]) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut at = 0;
    let at_word = |at: usize, word: &[u8]| {
        bytes
            .get(at..at + word.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(word))
    };
    // Outside `<?php … ?>` (inline HTML).
    'html: loop {
        let Some(open) = find(&bytes[at..], b"<?") else {
            return found;
        };
        at += open + 2;
        if at_word(at, b"=") {
            at += 1;
        } else if at_word(at, b"php") && bytes.get(at + 3).is_none_or(u8::is_ascii_whitespace) {
            at += 3;
        } else {
            return found;
        }
        // PHP code.
        while let Some(&byte) = bytes.get(at) {
            let next = bytes.get(at + 1).copied();
            match (byte, next) {
                (b'\'', _) => match quoted(bytes, at, b'\'', false) {
                    Some(end) => at = end,
                    None => return found,
                },
                (b'"' | b'`', _) => match quoted(bytes, at, byte, true) {
                    Some(end) => at = end,
                    None => return found,
                },
                // tree-sitter-php reads `#[` as an attribute and `#?` as a lone `#`.
                (b'/', Some(b'/')) | (b'#', _)
                    if byte == b'/' || !matches!(next, Some(b'[' | b'?')) =>
                {
                    // To the end of the line. Where `?>` ends it is the parser's to say
                    // (`??>` does not): the lexer stops there.
                    let rest = &bytes[at..];
                    let line = rest.iter().position(|&b| b == b'\n' || b == b'\r');
                    let line = &rest[..line.unwrap_or(rest.len())];
                    if find(line, b"?>").is_some() {
                        return found;
                    }
                    found.push(at..at + line.len());
                    at += line.len();
                }
                (b'/', Some(b'*')) => {
                    // Unclosed, it is no comment to the parser, which recovers after it.
                    let Some(end) = find(&bytes[at + 2..], b"*/") else {
                        return found;
                    };
                    let end = at + 2 + end + 2;
                    found.push(at..end);
                    at = end;
                }
                (b'<', Some(b'<')) if bytes.get(at + 2) == Some(&b'<') => return found,
                (b'?', Some(b'>')) => {
                    at += 2;
                    continue 'html;
                }
                _ => at += 1,
            }
        }
        return found;
    }
}

/// The end of the string starting at `start` with `quote`; `None` where it has no end, or
/// (`interpolated`) holds a `{$…}` or `${…}`, whose expressions may hold quotes.
fn quoted(bytes: &[u8], start: usize, quote: u8, interpolated: bool) -> Option<usize> {
    let mut at = start + 1;
    while let Some(&byte) = bytes.get(at) {
        let next = bytes.get(at + 1).copied();
        match (byte, next) {
            (b'\\', _) => at += 2,
            (b'{', Some(b'$')) | (b'$', Some(b'{')) if interpolated => return None,
            _ if byte == quote => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// Whether the text after a function's name can be its argument list: `(`, after white
/// space or the start of a comment (which is assumed to end before one).
fn opens_call(after: &[u8]) -> bool {
    let next = after.iter().find(|b| !b.is_ascii_whitespace());
    matches!(next, None | Some(b'(' | b'/' | b'#'))
}

/// What the analysed files want from the deferred ones: the constants their include paths
/// are built from (through other constants and imported variables, transitively), and the
/// files whose top-level variables they import.
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    /// Constant names as a definition spells them: `ROOT`, the `ROOT` of `Config::ROOT`.
    pub names: HashSet<String>,
    /// Root-relative files.
    pub files: HashSet<String>,
}

impl Wanted {
    /// Follows every value that can reach a judged include site: the sites' own, then the
    /// definitions (of non-vendor files: only theirs are used) those name.
    pub fn of<'a>(facts: impl Iterator<Item = (&'a SourceFile, &'a FileFacts)>) -> Wanted {
        let mut constants: HashMap<&str, Vec<&Value>> = HashMap::new();
        let mut exports: HashMap<&str, &HashMap<String, Value>> = HashMap::new();
        let mut pending: Vec<&Value> = Vec::new();
        for (file, file_facts) in facts {
            pending.extend(file_facts.sites.iter().flat_map(|site| site.values()));
            if file.in_vendor() {
                continue;
            }
            for (key, value) in &file_facts.constants {
                constants.entry(key).or_default().push(value);
            }
            exports.insert(&file.rel, &file_facts.exports);
        }
        let mut wanted = Wanted::default();
        let mut constants_seen: HashSet<&str> = HashSet::new();
        let mut imports_seen: HashSet<(&str, &str)> = HashSet::new();
        while let Some(value) = pending.pop() {
            for origin in value {
                match &origin.source {
                    Source::Constant { name, .. } => {
                        if !constants_seen.insert(name) {
                            continue;
                        }
                        let short = name.rsplit("::").next().unwrap_or(name);
                        wanted.names.insert(short.to_string());
                        pending.extend(constants.get(name.as_str()).into_iter().flatten());
                    }
                    Source::Imported { file, name, .. } => {
                        if !imports_seen.insert((file, name)) {
                            continue;
                        }
                        wanted.files.insert(file.clone());
                        let exported = exports.get(file.as_str()).and_then(|vars| vars.get(name));
                        pending.extend(exported);
                    }
                    _ => {}
                }
            }
        }
        wanted
    }

    /// Whether a deferred file may be wanted, before its bytes are read again.
    pub fn may_want(&self, file: &SourceFile, has_const: bool) -> bool {
        self.files.contains(&file.rel) || (has_const && !file.in_vendor() && !self.names.is_empty())
    }

    /// Whether a deferred file must be parsed after all: imported, or (holding `const`)
    /// naming a wanted constant as a word.
    pub fn wants(&self, file: &SourceFile, has_const: bool, bytes: &[u8]) -> bool {
        if self.files.contains(&file.rel) {
            return true;
        }
        if !has_const || file.in_vendor() || self.names.is_empty() {
            return false;
        }
        // Names are few (the constants of include paths): one pass per name is cheap.
        self.names
            .iter()
            .any(|name| mentions(bytes, name.as_bytes()))
    }
}

/// Whether `name` occurs in `bytes` as a whole word (constant names are case-sensitive).
fn mentions(bytes: &[u8], name: &[u8]) -> bool {
    if name.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(at) = find(&bytes[from..], name) {
        let start = from + at;
        let end = start + name.len();
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if !before.is_some_and(in_name) && !bytes.get(end).copied().is_some_and(in_name) {
            return true;
        }
        from = start + 1;
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_calls_and_allow_comments_need_a_parse() {
        for text in [
            "<?php include 'a.php';",
            "<?php REQUIRE_ONCE(__DIR__ . '/a.php');",
            "<?php\n$x = 1;\nrequire$x;",
            "<?php \\define ('A', 1);",
            "<?php Define/* why */('A', 1);",
            "<?php set_include_path(get_include_path());",
            "<?php ini_set(\n'include_path', '/x');",
            "<?php opcache_compile_file($f);",
            "<?php $a = 1; // cutover-lint: allow",
            "<?php echo 'include';",
        ] {
            assert_eq!(need(text.as_bytes()), Need::Parse, "{text}");
        }
    }

    #[test]
    fn words_that_only_contain_a_marker_do_not() {
        for text in [
            "<?php return ['define-atheism.com' => 1, 'included' => 2];",
            "<?php if (defined('A')) { $include = 1; $x->define; }",
            "<?php $required = undefine(1); class Construction {}",
            "<?php $define = 1; preinclude(); my_set_include_path(1);",
        ] {
            assert_eq!(
                need(text.as_bytes()),
                Need::Defer { has_const: false },
                "{text}"
            );
        }
        assert_eq!(
            need(b"<?php class A { CONST ROOT = '/srv'; }"),
            Need::Defer { has_const: true }
        );
    }

    #[test]
    fn names_are_mentioned_only_as_whole_words() {
        assert!(mentions(b"const ROOT = 1;", b"ROOT"));
        assert!(mentions(b"const ROOT_DIR = 1, ROOT= 2;", b"ROOT"));
        assert!(!mentions(b"const ROOT_DIR = 1; const MYROOT = 2;", b"ROOT"));
        assert!(!mentions(b"const root = 1;", b"ROOT"));
    }
}
