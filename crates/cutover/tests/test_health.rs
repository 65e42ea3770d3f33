//! `[health]` after the switch and refresh, on a real php-fpm behind a real nginx: a check
//! that sees the old release (stale OPcache) or no answer switches `current` back.

use std::path::Path;
use std::time::Duration;

use cutover_teststack::{make_readable_by_workers, Nginx, PhpFpm};

use crate::common::*;

/// The health page prints the release id of the tree it was compiled from.
const HEALTH: &str =
    "<?php echo 'release=' . trim(file_get_contents(__DIR__ . '/../RELEASE')), \"\\n\";\n";

struct Stack {
    nginx: Nginx,
    fpm: PhpFpm,
    sb: Sandbox,
}

impl Stack {
    fn start(realpath_root: bool) -> Stack {
        let sb = Sandbox::new();
        sb.write("public/health.php", HEALTH);
        let (fpm, nginx) = php_stack(&sb, realpath_root);
        Stack { nginx, fpm, sb }
    }

    fn config(&self, body: &str) -> String {
        let socket = self.fpm.unix_socket().unwrap().display().to_string();
        let path = self.sb.path().join("cutover-test.toml");
        write(&path, &format!("[php]\nfpm = \"unix:{socket}\"\n{body}"));
        path.display().to_string()
    }

    /// Deploys the source as release `id` with `config`; returns the process output.
    fn deploy(&self, id: &str, config: &str) -> std::process::Output {
        // A new file each time so each release differs; the page itself stays the same.
        self.sb.write("version.txt", id);
        make_readable_by_workers(self.sb.path()).unwrap();
        let (src, to) = (self.sb.src(), self.sb.deploy());
        self.sb.run(&[
            "deploy",
            src.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
            "--release",
            id,
            "--config",
            config,
            "--json",
        ])
    }

    fn health_url(&self) -> String {
        self.nginx.url("/health.php")
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[test]
fn a_passing_check_is_reported() {
    let stack = Stack::start(true);
    let config = stack.config(&format!("[health]\nurl = \"{}\"\n", stack.health_url()));
    assert!(stack.deploy("v1", &config).status.success());
    let out = stack.deploy("v2", &config);
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    assert_eq!(
        one_host(&report)["refresh"]["health"]["status"],
        200,
        "{report}"
    );
    assert_eq!(stack.sb.current().as_deref(), Some("v2"));
}

#[test]
fn a_check_that_sees_the_old_release_switches_back() {
    // $document_root and no refresh: OPcache keeps answering from v1's compiled page.
    let stack = Stack::start(false);
    let config = stack.config(&format!(
        "[health]\nurl = \"{}\"\ntimeout_seconds = 1\n",
        stack.health_url()
    ));
    assert!(stack.deploy("v1", &config).status.success());
    let out = stack.deploy("v2", &config);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("without the release id v2"), "{err}");
    assert!(
        err.contains("release=v1"),
        "the check should say what it saw: {err}"
    );
    assert!(err.contains("switched back to v1"), "{err}");
    assert_eq!(stack.sb.current().as_deref(), Some("v1"));

    // The same deploy with opcache-reset passes: the check is what tells them apart.
    let config = stack.config(&format!(
        "[refresh]\nstrategy = [\"opcache-reset\"]\n[health]\nurl = \"{}\"\ntimeout_seconds = 5\n",
        stack.health_url()
    ));
    let out = stack.deploy("v3", &config);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stack.sb.current().as_deref(), Some("v3"));
}

#[test]
fn a_fastcgi_check_goes_straight_to_the_pool_through_current() {
    let stack = Stack::start(false);
    let config = stack.config(
        "[refresh]\nstrategy = [\"opcache-reset\"]\n[health]\nfastcgi_script = \"public/health.php\"\ntimeout_seconds = 5\n",
    );
    assert!(stack.deploy("v1", &config).status.success());
    let out = stack.deploy("v2", &config);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(one_host(&json(&out))["refresh"]["health"]["status"], 200);
}

#[test]
fn no_answer_switches_back_and_a_bad_url_changes_nothing() {
    let sb = Sandbox::new();
    sb.write("index.php", "1");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = sb.path().join("c.toml");
    write(
        &config,
        &format!("[health]\nurl = \"http://127.0.0.1:{port}/health\"\ntimeout_seconds = 1\n"),
    );
    let (src, to, config) = (sb.src(), sb.deploy(), config.display().to_string());
    sb.ok(&[
        "deploy",
        src.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--release",
        "r1",
    ]);
    sb.write("index.php", "2");
    let started = std::time::Instant::now();
    let out = sb.run(&[
        "deploy",
        src.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--release",
        "r2",
        "--config",
        &config,
    ]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("r1"));
    // Bounded: about timeout_seconds for r2, and again for r1 after switching back.
    assert!(started.elapsed() < Duration::from_secs(20));

    let bad = Path::new(sb.path()).join("bad.toml");
    write(&bad, "[health]\nurl = \"https://example.invalid/\"\n");
    let out = sb.run(&[
        "deploy",
        src.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--release",
        "r3",
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("http://"), "{}", text(&out));
    assert!(!sb.deploy().join("releases/r3").exists());
}
