//! The `cutover` binary: parses arguments, runs one command, maps its error to an exit code.

mod cli;
mod commands;
mod error;
mod hosts;
mod printer;
mod progress;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::printer::Printer;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Lint(args) => commands::lint::lint(args, printer),
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
