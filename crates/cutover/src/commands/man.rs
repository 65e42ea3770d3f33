use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{CommandError, Result};

/// The man page from the one CLI definition: every command and flag with its help text.
pub fn man() -> Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| CommandError::failed(format!("could not render the man page: {e}")))?;
    super::completions::write_out(&out, "man page")
}
