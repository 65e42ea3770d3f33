//! Resolving what one file's walk could not know: constants defined in other files (or later
//! in the same one) and variables set by an included file. A file's walk leaves them as
//! symbolic starts ([`Source::Constant`], [`Source::Imported`]); once every file has been
//! read, they are replaced by what the tree defines. Apart because it is the only step that
//! needs every file, and it needs no syntax tree: files are parsed once, in parallel, and
//! their trees dropped before this runs.

use std::collections::HashMap;

use super::value::{concat, dirname, union_into, Origin, Source, Value};

/// Constants defined by constants defined by …: deeper chains are unknown (and a cycle stops
/// here too).
const MAX_CHAIN: usize = 16;

/// What the files of the tree define for each other.
#[derive(Debug, Default)]
pub(crate) struct Definitions {
    pub constants: HashMap<String, Value>,
    /// Top-level variables by root-relative file.
    pub exports: HashMap<String, HashMap<String, Value>>,
}

impl Definitions {
    /// `value` with every symbolic start replaced by the values it stands for.
    pub fn resolve(&self, value: &Value) -> Value {
        let resolved = self.resolve_at(value, 0);
        if resolved.is_empty() && !value.is_empty() {
            return vec![Origin::unknown("a value set nowhere in the linted files")];
        }
        resolved
    }

    fn resolve_at(&self, value: &Value, depth: usize) -> Value {
        let mut out = Vec::new();
        for origin in value {
            let replacement = match &origin.source {
                Source::Constant { name, up } => {
                    let found = match self.constants.get(name) {
                        Some(_) if depth >= MAX_CHAIN => vec![Origin::unknown(format!(
                            "constant {name}, defined through too many other constants"
                        ))],
                        Some(defined) => self
                            .resolve_at(defined, depth + 1)
                            .into_iter()
                            .map(|o| dirname(o, *up))
                            .collect(),
                        None => vec![Origin::unknown(format!(
                            "constant {name}, defined nowhere in the linted files"
                        ))],
                    };
                    Some(found)
                }
                Source::Imported { file, name, up } => {
                    let found = self.exports.get(file).and_then(|vars| vars.get(name));
                    Some(match found {
                        Some(_) if depth >= MAX_CHAIN => {
                            vec![Origin::unknown(format!("${name}, set in {file}"))]
                        }
                        Some(defined) => self
                            .resolve_at(defined, depth + 1)
                            .into_iter()
                            .map(|o| dirname(o, *up))
                            .collect(),
                        // The included file does not set it (another import may; equal
                        // unknowns are kept once).
                        None => vec![Origin::unknown(format!("${name}, not set in this scope"))],
                    })
                }
                _ => None,
            };
            match replacement {
                None => union_into(&mut out, vec![origin.clone()]),
                Some(heads) => {
                    let tail = Origin {
                        complete: origin.complete,
                        via: origin.via.clone(),
                        ..Origin::literal(origin.text.clone())
                    };
                    union_into(&mut out, concat(&[heads, vec![tail]]));
                }
            }
        }
        out
    }
}
