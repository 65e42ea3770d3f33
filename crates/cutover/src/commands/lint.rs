//! `cutover lint [DIR]`: includes whose paths can resolve through the deploy symlink into
//! the other release mid-request. The work is in the cutover-lint crate; this prints it.

use std::collections::BTreeSet;

use std::path::PathBuf;

use crate::cli::{GlobalArgs, LintArgs};
use crate::error::{CommandError, Result};
use crate::printer::Printer;
use crate::settings;

pub fn lint(args: &LintArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let options = cutover_lint::Options {
        strict: args.strict,
        deploy_paths: deploy_paths(args, global)?,
        parse_all: false,
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
        "deploy_paths": options.deploy_paths,
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
                "{}:{}:{}: {} [{}]\n",
                finding.file.display(),
                finding.line,
                finding.column,
                finding.message,
                finding.rule,
            ));
            let elsewhere = finding.uses.iter().any(|u| {
                (&u.file, u.line, u.column) != (&finding.file, finding.line, finding.column)
            });
            if elsewhere {
                let listed: Vec<String> = finding
                    .uses
                    .iter()
                    .map(|u| format!("{}:{}:{}", u.file.display(), u.line, u.column))
                    .collect();
                let more = finding.uses_count - finding.uses.len();
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                text.push_str(&format!("  used at: {}{more}\n", listed.join(", ")));
            }
            text.push_str(&format!("  hint: {}\n", finding.hint));
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

/// `--deploy-path`, else the deploy paths of cutover.toml (found as the other commands find
/// it: --config, ./cutover.toml, or the linted directory's own): `[deploy] path` and every
/// `[hosts.*] path`.
fn deploy_paths(args: &LintArgs, global: &GlobalArgs) -> Result<Vec<PathBuf>> {
    if !args.deploy_path.is_empty() {
        return Ok(args.deploy_path.clone());
    }
    let source = args.dir.is_dir().then_some(args.dir.as_path());
    let config = settings::load_config_near(global, source)?;
    let mut paths: Vec<PathBuf> = config.deploy.path.iter().cloned().collect();
    for host in config.hosts.values() {
        if let Some(path) = &host.path {
            if !paths.contains(path) {
                paths.push(path.clone());
            }
        }
    }
    Ok(paths)
}

/// "1 file", "3 files".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
