//! What the files of the tree teach each other: constants and exported variables, gathered
//! from one pass over the tree and read by the next. Apart because it outlives a single
//! file's walk.

use std::collections::HashMap;

use super::value::{union_into, Value};
use super::Analysis;
use crate::{Exports, TreePaths};

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
