//! The `cutover` binary: parses arguments, runs one command, maps its error to an exit code.

mod cli;
mod commands;
mod error;
mod hosts;
mod inventory;
mod notify;
mod printer;
mod progress;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::printer::Printer;

fn main() -> ExitCode {
    let cli = Cli::parse();
    trace(cli.global.verbose);
    let printer = Printer {
        json: cli.global.json,
        quiet: cli.global.quiet,
    };
    let global = &cli.global;
    let result = match &cli.command {
        Command::Init(args) => commands::init::init(args, printer),
        Command::Deploy(args) => commands::deploy::deploy(args, global, printer),
        Command::Releases(args) => commands::releases::releases(args, global, printer),
        Command::Switch(args) => commands::switch::switch(args, global, printer),
        Command::Rollback(args) => commands::rollback::rollback(args, global, printer),
        Command::Cleanup(args) => commands::cleanup::cleanup(args, global, printer),
        Command::Verify(args) => commands::verify::verify(args, global, printer),
        Command::Php(cli::PhpCommand::Status(args)) => commands::php::status(args, global, printer),
        Command::Php(cli::PhpCommand::Reset(args)) => commands::php::reset(args, global, printer),
        Command::Doctor(args) => commands::doctor::doctor(args, global, printer),
        Command::Config(command) => commands::config::config(command, global, printer),
        Command::Lint(args) => commands::lint::lint(args, global, printer),
        Command::Completions { shell } => commands::completions::completions(*shell),
        Command::Man => commands::man::man(),
        Command::Agent => commands::agent::agent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            printer.error(&error);
            error.exit_code()
        }
    }
}

/// `-v` shows cutover's steps, `-vv` their details; RUST_LOG (tracing's filter syntax)
/// overrides both. Everything goes to stderr, so `--json` output stays one document.
fn trace(verbose: u8) {
    let default = match verbose {
        0 => return init_trace(None),
        1 => "cutover=info,cutover_pipeline=info,cutover_refresh=info",
        _ => "cutover=debug,cutover_pipeline=debug,cutover_refresh=debug,cutover_core=debug",
    };
    init_trace(Some(default));
}

fn init_trace(default: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match (std::env::var("RUST_LOG"), default) {
        (Ok(text), _) if !text.is_empty() => EnvFilter::new(text),
        (_, Some(default)) => EnvFilter::new(default),
        _ => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
