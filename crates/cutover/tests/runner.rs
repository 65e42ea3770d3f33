//! All integration tests in one binary (one link step instead of one per file). They run
//! the real `cutover` binary against real directories.

mod common;

mod test_agent_ship;
mod test_apache;
mod test_assets;
mod test_cli;
mod test_cli_errors;
mod test_cli_hooks;
mod test_cli_releases;
mod test_deploy;
mod test_disk_and_terminal;
mod test_doctor;
mod test_faults;
mod test_fleet;
mod test_git_source;
mod test_health;
mod test_inventory;
mod test_kill;
mod test_lifecycle;
mod test_lint;
mod test_notify;
mod test_php;
mod test_pipeline;
mod test_presets;
mod test_prewarm;
mod test_refresh;
mod test_switch_atomicity;
mod test_verify;
mod test_verify_assets;
