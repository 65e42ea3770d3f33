//! `cutover-agent`: the host side of cutover alone (what `cutover agent` runs), without the
//! CLI, lint, git or notifications. This is what a deploy uploads to hosts of its own
//! platform on first contact: a quarter of cutover's size, so less to send, decompress and
//! keep per host.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.as_slice() {
        [command] if command == "agent" => match cutover_pipeline::agent::serve_stdio() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: {e}", cutover_pipeline::agent::AGENT_EXE);
                ExitCode::FAILURE
            }
        },
        [flag] if flag == "--version" || flag == "-V" => {
            println!("{}", cutover_pipeline::agent::version_line());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: {} agent\n\ncutover runs this over ssh on each host of a deploy; it serves one session on stdin and stdout.\nRun `cutover --help` for the commands.",
                cutover_pipeline::agent::AGENT_EXE
            );
            ExitCode::from(2)
        }
    }
}
