//! One test binary for the crate's public API.

mod diagnostics;
mod loading;
mod properties;

use std::path::Path;

use cutover_config::{parse, ConfigError};

/// The error for `text`, as (line, column, message, hint).
fn diagnose(text: &str) -> (usize, usize, String, Option<String>) {
    let err: ConfigError = parse(text, Path::new("cutover.toml")).unwrap_err();
    let (line, column) = err.line_column().unwrap();
    (
        line,
        column,
        err.message().to_owned(),
        err.hint().map(str::to_owned),
    )
}
