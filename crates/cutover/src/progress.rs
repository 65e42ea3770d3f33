//! What a long step shows while it runs, on a terminal only: a spinner with files and
//! bytes staged, hook output as it comes, and one line per host of a fleet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use cutover_pipeline::{HostPlan, HostState, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::printer::{human_bytes, say, Printer};

/// Files and bytes staged so far, and the output of hooks, shown as it happens.
pub struct StageProgress {
    bar: Option<ProgressBar>,
    printer: Printer,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl StageProgress {
    pub fn new(printer: Printer, what: &'static str) -> Self {
        let bar = printer.shows_progress().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(what);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        StageProgress {
            bar,
            printer,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
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
            Some(bar) => bar.suspend(|| say(format_args!("  │ {line}"))),
            None => say(format_args!("  │ {line}")),
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

/// One line per host while a terminal watches a fleet; the steps of the whole fleet as
/// plain lines otherwise. A fleet of one shows neither: its spinner says enough.
pub struct HostLines {
    bars: Vec<(String, ProgressBar)>,
    printer: Printer,
    phases: bool,
    _multi: Option<MultiProgress>,
}

impl HostLines {
    pub fn new(printer: Printer, plans: &[HostPlan]) -> Self {
        let many = plans.len() > 1;
        let multi = (many && printer.shows_progress())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        let bars = match &multi {
            Some(multi) => plans
                .iter()
                .map(|plan| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:<12} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(plan.name.clone());
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar.set_message("connecting");
                    (plan.name.clone(), bar)
                })
                .collect(),
            None => Vec::new(),
        };
        if many && multi.is_none() {
            printer.progress_line(&format!("connecting to {} hosts", plans.len()));
        }
        HostLines {
            bars,
            printer,
            phases: many && multi.is_none(),
            _multi: multi,
        }
    }
}

impl Progress for HostLines {
    fn state(&self, host: &str, state: HostState) {
        if let Some((_, bar)) = self.bars.iter().find(|(name, _)| name == host) {
            bar.set_message(state.as_str());
        }
    }

    fn phase(&self, line: &str) {
        if self.phases {
            self.printer.progress_line(line);
        }
    }
}

impl Drop for HostLines {
    fn drop(&mut self) {
        for (_, bar) in &self.bars {
            bar.finish_and_clear();
        }
    }
}
