//! All output goes through here: status on stderr (silenced by --quiet), results on stdout
//! (JSON with --json), progress only on a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// stdout carries one JSON document: a command that printed its result and then fails
/// (verify's verdict) does not print a second one for the error.
static RESULT_PRINTED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub json: bool,
    pub quiet: bool,
}

impl Printer {
    /// A status line for people (stderr); not shown with --quiet or --json.
    pub fn progress_line(&self, line: &str) {
        if !self.quiet && !self.json {
            say(format_args!("{line}"));
        }
    }

    /// Shown unless --quiet, also beside --json (on stderr, so stdout stays one document).
    pub fn warn(&self, line: impl AsRef<str>) {
        if !self.quiet {
            say(format_args!("warning: {}", line.as_ref()));
        }
    }

    /// The result: JSON on stdout with --json, else the human text on stdout.
    pub fn result(&self, json: &serde_json::Value, human: impl FnOnce() -> String) {
        let mut out = std::io::stdout().lock();
        RESULT_PRINTED.store(true, Relaxed);
        let _ = if self.json {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(json).unwrap_or_default()
            )
        } else if self.quiet {
            Ok(())
        } else {
            write!(out, "{}", human())
        };
    }

    pub fn error(&self, error: &crate::error::CommandError) {
        if self.json && !RESULT_PRINTED.load(Relaxed) {
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&error.to_json()).unwrap_or_default()
            );
        }
        for warning in &error.warnings {
            say(format_args!("warning: {warning}"));
        }
        say(format_args!("error: {}", error.message));
        for cause in &error.causes {
            say(format_args!("  caused by: {cause}"));
        }
        for hint in &error.hints {
            say(format_args!("hint: {hint}"));
        }
    }

    /// Whether progress can be drawn: a terminal watches and nothing silences it.
    pub fn shows_progress(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }
}

/// A line on stderr. println!/eprintln! panic when the write fails (a closed pipe, a full
/// disk behind a redirect); what cutover says must never turn a finished deploy into a
/// crash.
pub fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub use cutover_core::bytes::human as human_bytes;
