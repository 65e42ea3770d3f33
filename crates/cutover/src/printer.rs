//! All output goes through here: status on stderr (silenced by --quiet), results on stdout
//! (JSON with --json), progress only on a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// stdout carries one JSON document: a command that printed its result and then fails
/// (verify's verdict) does not print a second one for the error.
static RESULT_PRINTED: AtomicBool = AtomicBool::new(false);
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub json: bool,
    pub quiet: bool,
}

impl Printer {
    /// A status line for people (stderr); not shown with --quiet or --json.
    pub fn progress_line(&self, line: &str) {
        if !self.quiet && !self.json {
            eprintln!("{line}");
        }
    }

    /// Shown unless --quiet, also beside --json (on stderr, so stdout stays one document).
    pub fn warn(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("warning: {}", line.as_ref());
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
            println!(
                "{}",
                serde_json::to_string_pretty(&error.to_json()).unwrap_or_default()
            );
        }
        eprintln!("error: {}", error.message);
        for cause in &error.causes {
            eprintln!("  caused by: {cause}");
        }
        for hint in &error.hints {
            eprintln!("hint: {hint}");
        }
    }

    /// Several progress lines at once (one per host), only on a terminal.
    pub fn multi_progress(&self) -> Option<indicatif::MultiProgress> {
        let show = !self.quiet && !self.json && std::io::stderr().is_terminal();
        show.then(|| {
            indicatif::MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))
        })
    }

    pub fn progress(&self, what: &'static str) -> StageProgress {
        let show = !self.quiet && !self.json && std::io::stderr().is_terminal();
        let bar = if show {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(what);
            bar.enable_steady_tick(Duration::from_millis(100));
            Some(bar)
        } else {
            None
        };
        StageProgress {
            bar,
            printer: *self,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

/// Files and bytes staged so far, and the output of hooks, shown as it happens.
pub struct StageProgress {
    bar: Option<ProgressBar>,
    printer: Printer,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl cutover_core::stage::Observer for StageProgress {
    fn file_staged(&self, bytes: u64) {
        let files = self.files.fetch_add(1, Relaxed) + 1;
        let total = self.bytes.fetch_add(bytes, Relaxed) + bytes;
        if let Some(bar) = &self.bar {
            if files.is_multiple_of(256) {
                bar.set_message(format!("{files} files, {}", human_bytes(total)));
            }
        }
    }

    fn hook_output(&self, line: &str) {
        if self.printer.quiet || self.printer.json {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("  │ {line}")),
            None => eprintln!("  │ {line}"),
        }
    }
}

impl Drop for StageProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
