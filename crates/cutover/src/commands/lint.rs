//! `cutover lint [DIR]`: includes whose paths can resolve through the deploy symlink into
//! the other release mid-request. The work is in the cutover-lint crate; this prints it.

use std::collections::BTreeSet;

use crate::cli::LintArgs;
use crate::error::{CommandError, Result};
use crate::printer::Printer;

pub fn lint(args: &LintArgs, printer: Printer) -> Result<()> {
    let options = cutover_lint::Options {
        strict: args.strict,
    };
    let report = cutover_lint::lint_dir(&args.dir, &options).map_err(|error| match error {
        cutover_lint::Error::NotFound { .. } => CommandError::usage(
            error.to_string(),
            "give the app's source directory: `cutover lint path/to/app`",
        ),
        cutover_lint::Error::Io { .. } => CommandError::failed(error.to_string()),
    })?;
    for file in &report.unparsable {
        if file.line == 0 {
            printer.warn(format!("{}: {}", file.file.display(), file.message));
        } else {
            printer.warn(format!(
                "{}:{}:{}: {}",
                file.file.display(),
                file.line,
                file.column,
                file.message
            ));
        }
    }
    let json = serde_json::json!({
        "findings": report.findings,
        "files_scanned": report.files_scanned,
        "unparsable": report.unparsable,
    });
    let files: BTreeSet<_> = report.findings.iter().map(|f| &f.file).collect();
    let scanned = count(report.files_scanned, "file");
    let summary = match report.findings.len() {
        0 => format!("no findings ({scanned} scanned)"),
        n => format!(
            "{} in {} ({scanned} scanned)",
            count(n, "finding"),
            count(files.len(), "file")
        ),
    };
    printer.result(&json, || {
        let mut text = String::new();
        for finding in &report.findings {
            text.push_str(&format!(
                "{}:{}:{}: {} [{}]\n  hint: {}\n",
                finding.file.display(),
                finding.line,
                finding.column,
                finding.message,
                finding.rule,
                finding.hint
            ));
        }
        text.push_str(&summary);
        text.push('\n');
        text
    });
    if report.findings.is_empty() {
        return Ok(());
    }
    Err(CommandError::failed(format!("lint found {summary}")).with_hint(
        "build include paths from __DIR__; accept a deliberate one with `// cutover-lint: allow` (or `allow(RULE)`) on its line or the line above",
    ))
}

/// "1 file", "3 files".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
