use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{CommandError, Result};

/// Completions from the one CLI definition, so they never fall behind it. Generated into
/// memory first: clap_complete panics when its writer fails (a closed pipe).
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "cutover", &mut out);
    write_out(&out, "completions")
}

/// Writes `bytes` to stdout; a closed pipe is not a crash.
pub fn write_out(bytes: &[u8], what: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CommandError::failed(format!(
            "could not print the {what}: {e}"
        ))),
    }
}
