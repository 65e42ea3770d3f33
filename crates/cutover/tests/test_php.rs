//! `cutover php status|reset` through the binary against a real, private php-fpm.

use cutover_teststack::{make_readable_by_workers, FpmOptions, PhpFpm};

use crate::common::*;

fn fpm_and_sandbox() -> (PhpFpm, Sandbox, String) {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.deploy()).unwrap();
    make_readable_by_workers(sb.path()).unwrap();
    let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
    let socket = format!("unix:{}", fpm.unix_socket().unwrap().display());
    (fpm, sb, socket)
}

#[test]
fn status_and_reset_report_the_pool_as_json() {
    let (fpm, sb, socket) = fpm_and_sandbox();
    let deploy = sb.deploy().display().to_string();
    let status = sb.json(&["php", "status", "--fpm", &socket, "--to", &deploy]);
    assert_eq!(
        one_result(&status)["status"]["opcache"]["enabled"],
        true,
        "{status}"
    );
    assert_eq!(
        one_result(&status)["status"]["ini"]["opcache.validate_timestamps"],
        "0"
    );
    let pid = one_result(&status)["status"]["pid"].as_u64().unwrap() as u32;
    assert!(fpm.worker_pids().contains(&pid));

    let before = one_result(&status)["status"]["opcache"]["manual_restarts"]
        .as_u64()
        .unwrap();
    let reset = sb.json(&["php", "reset", "--fpm", &socket, "--to", &deploy]);
    assert_eq!(
        one_result(&reset)["reset"]["status"]["opcache"]["restart_pending"],
        false,
        "{reset}"
    );
    assert_eq!(
        one_result(&reset)["reset"]["status"]["opcache"]["manual_restarts"]
            .as_u64()
            .unwrap(),
        before + 1
    );

    // The human form names the worker and the settings that decide staleness.
    let out = sb.ok(&["php", "status", "--fpm", &socket, "--to", &deploy]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains("OPcache: enabled"), "{human}");
    assert!(human.contains("validate_timestamps=0"), "{human}");
    // Nothing is left in the deploy path but the (empty) script directory.
    let left: Vec<_> = std::fs::read_dir(sb.deploy().join(".cutover/php"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn php_commands_say_what_is_missing() {
    let sb = Sandbox::new();
    let out = sb.run(&["php", "status", "--to", "/tmp"]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(
        stderr(&out).contains("hint: pass `--fpm unix:"),
        "{}",
        text(&out)
    );

    let out = sb.run(&[
        "php",
        "status",
        "--fpm",
        "unix:/nonexistent/php.sock",
        "--to",
        "/tmp",
    ]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(
        stderr(&out).contains("/nonexistent/php.sock"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("hint:"), "{}", text(&out));

    let out = sb.run(&["php", "status", "--fpm", "unix:/run/x.sock"]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("--script-dir"), "{}", text(&out));
}
