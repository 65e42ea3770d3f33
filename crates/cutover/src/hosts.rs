//! What every command that acts on hosts shares: opening the fleet the settings name, and
//! the per-host table.

use std::sync::Arc;

use cutover_core::stage::Observer;
use cutover_pipeline::{Fleet, FleetError, HostPlan, HostReport};
use cutover_protocol::Access;

use crate::error::Result;
use crate::printer::{human_bytes, Printer};
use crate::progress::{HostLines, StageProgress};

/// Opens every planned host, runs `step` on the fleet, and clears the progress lines
/// before anything is printed. `observer` sees a local stage (files, hook output).
pub fn on_fleet<T>(
    plans: &[HostPlan],
    access: Access,
    parallel: usize,
    observer: Arc<dyn Observer + Send + Sync>,
    printer: Printer,
    step: impl FnOnce(Fleet<'_>) -> std::result::Result<T, FleetError>,
) -> Result<T> {
    Ok(run_fleet(
        plans, access, parallel, observer, printer, step,
    )??)
}

/// As `on_fleet`, with the fleet's own error, for a command that reports it further
/// (a notification) before it becomes the command's error.
pub fn run_fleet<T>(
    plans: &[HostPlan],
    access: Access,
    parallel: usize,
    observer: Arc<dyn Observer + Send + Sync>,
    printer: Printer,
    step: impl FnOnce(Fleet<'_>) -> std::result::Result<T, FleetError>,
) -> Result<std::result::Result<T, FleetError>> {
    let lines = HostLines::new(printer, plans);
    let outcome = step(Fleet::open(plans, access, parallel, observer, &lines)?);
    drop(lines);
    Ok(outcome)
}

/// Opens every planned host for a step that outlives this call (verify's flips).
pub fn open<'p>(plans: &[HostPlan], access: Access, lines: &'p HostLines) -> Result<Fleet<'p>> {
    let parallel = crate::settings::parallel(None);
    Ok(Fleet::open(
        plans,
        access,
        parallel,
        quiet_observer(),
        lines,
    )?)
}

/// No progress for a local stage (commands that stage nothing).
pub fn quiet_observer() -> Arc<dyn Observer + Send + Sync> {
    Arc::new(cutover_core::stage::Silent)
}

/// The spinner and hook output of a stage on this machine.
pub fn stage_observer(printer: Printer) -> Arc<StageProgress> {
    Arc::new(StageProgress::new(printer, "staging"))
}

/// One row per host: its state, what it staged, and its error.
pub fn table(reports: &[HostReport]) -> String {
    let staged = reports.iter().any(|r| r.files.is_some());
    let mut text = if staged {
        format!(
            "  {:<12} {:<13} {:>7} {:>7} {:>7} {:>10} {:>9}\n",
            "HOST", "STATUS", "FILES", "LINKED", "SENT", "BYTES", "STAGE"
        )
    } else {
        format!("  {:<12} {}\n", "HOST", "STATUS")
    };
    for r in reports {
        if staged {
            let (files, linked) = r.files.map_or((0, 0), |f| (f.files, f.linked));
            text.push_str(&format!(
                "  {:<12} {:<13} {:>7} {:>7} {:>7} {:>10} {:>7.2} s\n",
                r.host,
                r.status.as_str(),
                files,
                linked,
                r.files_sent.unwrap_or(0),
                human_bytes(r.bytes_sent.unwrap_or(0)),
                r.stage_ms.unwrap_or(0) as f64 / 1000.0
            ));
        } else {
            let from = r
                .previous
                .as_ref()
                .map_or(String::new(), |p| format!(" (was {p})"));
            text.push_str(&format!("  {:<12} {}{from}\n", r.host, r.status.as_str()));
        }
        if let Some(error) = &r.error {
            text.push_str(&format!("    {}\n", error.one_line()));
        }
    }
    text
}

/// Each host's warnings, named by host when there are several.
pub fn warn_each(printer: Printer, reports: &[HostReport]) {
    for r in reports {
        for w in &r.warnings {
            if reports.len() == 1 {
                printer.warn(w);
            } else {
                printer.warn(format!("{}: {w}", r.host));
            }
        }
    }
}

/// The release every host had before, when they agree.
pub fn common_previous(reports: &[HostReport]) -> Option<&cutover_core::ReleaseId> {
    let first = reports.first()?.previous.as_ref()?;
    reports
        .iter()
        .all(|r| r.previous.as_ref() == Some(first))
        .then_some(first)
}
