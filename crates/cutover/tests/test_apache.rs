//! `[refresh] strategy = ["apache-graceful"]` on a real, private Apache 2.4 with mod_php
//! (prefork, OPcache on, `validate_timestamps=0`, `DocumentRoot <deploy>/current/public`).
//!
//! The app is the issue's: `public/index.php` requires `lib/A.php`, sleeps 20 ms, requires
//! `lib/B.php`; v2's `a()` calls `only_in_v2()`, which only v2's B.php defines. mod_php is
//! handed `<deploy>/current/public/index.php`; OPcache keeps that key mapped to the script
//! it compiled from the old release, so without a refresh Apache serves the old release
//! forever. The control tests show exactly that, so the others can fail.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cutover_teststack::{
    http_get, make_readable_by_workers, process_running, Apache, ApacheOptions, HttpConnection,
};

use crate::common::*;

/// Apache children: more than verify's 4 keep-alive connections (each holds a prefork
/// child), so the health check and new connections are never queued behind them.
const WORKERS: u32 = 6;
/// Bound for one cutover run: a refresh that hangs fails the test instead of hanging it.
const CUTOVER_LIMIT: Duration = Duration::from_secs(120);

const INDEX: &str = r#"<?php
require __DIR__ . '/../lib/A.php';
usleep(20000);
require __DIR__ . '/../lib/B.php';
echo a() . ' ' . b() . "\n";
echo 'pid=' . getmypid() . "\n";
"#;

fn write_release(dir: &Path, version: &str) {
    let (a, b) = if version == "v1" {
        (
            "function a() { return 'A-v1'; }",
            "function b() { return 'B-v1'; }",
        )
    } else {
        (
            "function a() { return 'A-v2' . only_in_v2(); }",
            "function b() { return 'B-v2'; }\nfunction only_in_v2() { return ''; }",
        )
    };
    write(&dir.join("public/index.php"), INDEX);
    write(&dir.join("lib/A.php"), &format!("<?php\n{a}\n"));
    write(&dir.join("lib/B.php"), &format!("<?php\n{b}\n"));
}

/// "v1" or "v2" when the page is one release's output, else `None` (an error, a mix).
fn release_of(body: &str) -> Option<&'static str> {
    match body.lines().next() {
        Some("A-v1 B-v1") => Some("v1"),
        Some("A-v2 B-v2") => Some("v2"),
        _ => None,
    }
}

fn pid_of(body: &str) -> Option<u32> {
    body.lines()
        .find_map(|line| line.strip_prefix("pid="))
        .and_then(|pid| pid.trim().parse().ok())
}

/// Fields drop in order: Apache first, then the files it serves.
struct Stack {
    apache: Apache,
    sb: Sandbox,
    deploy: PathBuf,
}

impl Stack {
    fn start(options: impl FnOnce(&mut ApacheOptions)) -> Stack {
        let sb = Sandbox::new();
        for version in ["v1", "v2"] {
            write_release(&sb.path().join(version), version);
        }
        // Apache refuses to start (and to restart) while its DocumentRoot is missing: v1
        // is deployed before it starts.
        let v1 = sb.path().join("v1").display().to_string();
        sb.ok(&["deploy", &v1, "--to", &sb.to(), "--release", "v1"]);
        make_readable_by_workers(sb.path()).unwrap();
        let deploy = std::fs::canonicalize(sb.deploy()).unwrap();
        let mut apache_options = ApacheOptions::new(deploy.join("current/public"));
        apache_options.workers = WORKERS;
        options(&mut apache_options);
        // A missing apache2 or mod_php fails here, as a missing php-fpm does elsewhere:
        // scripts/test installs both.
        let apache = Apache::start(apache_options).unwrap();
        Stack { apache, sb, deploy }
    }

    /// The Apache serves v1 from `<deploy>/current/public` (deployed before it started).
    /// A settings file whose `[refresh]` table is `refresh`.
    fn config(&self, name: &str, refresh: &str) -> String {
        self.sb.config(name, &format!("[refresh]\n{refresh}\n"))
    }

    /// apache-graceful on this instance: `apache2 -f <its conf> -k graceful`, which tests
    /// the config and signals the parent its pid file names, as `apachectl` does.
    fn graceful_config(&self) -> String {
        self.config(
            "graceful.toml",
            &format!(
                "strategy = [\"apache-graceful\"]\napache_pidfile = \"{}\"\n\
                 apache_command = \"{} -f {} -k graceful\"\nwait_seconds = 30",
                self.apache.pidfile().display(),
                self.apache.binary(),
                self.apache.conf().display()
            ),
        )
    }

    fn run(&self, command: &[&str], config: &str) -> Output {
        let to = self.deploy.display().to_string();
        let mut args = command.to_vec();
        args.extend_from_slice(&["--to", &to, "--config", config]);
        output_within(self.sb.cutover().args(&args), CUTOVER_LIMIT)
    }

    /// `cutover deploy <sandbox>/<version> --release <version>`, asserting success.
    fn deploy(&self, version: &str, config: &str) {
        let source = self.sb.path().join(version).display().to_string();
        let out = self.run(
            &["deploy", &source, "--release", version, "--keep", "100"],
            config,
        );
        assert!(
            out.status.success(),
            "deploy {version} failed:\n{}\n{}",
            text(&out),
            self.logs()
        );
    }

    /// `n` requests on fresh connections: (status, release, pid) of each.
    fn pages(&self, n: usize) -> Vec<(u16, Option<&'static str>, Option<u32>)> {
        let url = self.apache.url("/index.php");
        (0..n)
            .map(|_| match http_get(&url) {
                Ok(r) => (r.status, release_of(&r.text()), pid_of(&r.text())),
                Err(_) => (0, None, None),
            })
            .collect()
    }

    fn assert_all(&self, n: usize, release: &str, what: &str) -> Vec<u32> {
        let pages = self.pages(n);
        assert!(
            pages
                .iter()
                .all(|(status, r, _)| *status == 200 && *r == Some(release)),
            "{what}: expected {n} 200s from {release}, got {pages:?}\n{}",
            self.logs()
        );
        pages.iter().filter_map(|(_, _, pid)| *pid).collect()
    }

    fn logs(&self) -> String {
        let log = self.apache.error_log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- apache error log (tail)\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

/// The control: mod_php keeps serving v1 after `current` moved to v2. If this ever passes
/// with v2, the stack no longer reproduces the stale-OPcache case and the other tests
/// prove nothing.
#[test]
fn mod_php_without_refresh_keeps_serving_the_old_release() {
    let stack = Stack::start(|_| {});
    let none = stack.config("none.toml", "strategy = [\"none\"]");
    stack.assert_all(12, "v1", "warming up on v1");
    stack.deploy("v2", &none);
    assert_eq!(stack.sb.current().as_deref(), Some("v2"));
    stack.assert_all(
        12,
        "v1",
        "after switching to v2 with no refresh (stale OPcache expected)",
    );
}

/// The graceful restart renews OPcache (the parent re-runs PHP's start-up: a new shared
/// cache, with a new start time), and `deploy` returns only once every child from before
/// it is gone, so the very next requests all show v2.
#[test]
fn apache_graceful_serves_the_new_release_as_soon_as_deploy_returns() {
    let stack = Stack::start(|_| {});
    let graceful = stack.graceful_config();
    stack.assert_all(12, "v1", "warming up on v1");
    let parent = stack.apache.pid();
    let before = stack.apache.child_pids();
    let cache_before = stack.apache.probe().unwrap();
    assert_eq!(cache_before.validate_timestamps, "0");
    // OPcache's start time has a resolution of one second.
    std::thread::sleep(Duration::from_millis(1100));

    stack.deploy("v2", &graceful);
    let after = stack.apache.child_pids();
    assert!(
        !after.is_empty() && after.iter().all(|pid| !before.contains(pid)),
        "deploy returned while children from before the graceful restart were left: \
         before {before:?}, after {after:?}"
    );
    let answered = stack.assert_all(12, "v2", "right after `deploy` (apache-graceful)");
    assert!(
        answered.iter().all(|pid| !before.contains(pid)),
        "old children {before:?} answered: {answered:?}"
    );
    assert_eq!(
        stack.apache.pid(),
        parent,
        "a graceful restart keeps the parent"
    );
    assert!(process_running(parent));
    let cache_after = stack.apache.probe().unwrap();
    assert!(
        cache_after.opcache_start_time > cache_before.opcache_start_time,
        "the new children should share a new OPcache: before {cache_before:?}, after {cache_after:?}"
    );

    // Rollback goes through the same refresh.
    let out = stack.run(&["rollback"], &graceful);
    assert!(out.status.success(), "{}", text(&out));
    stack.assert_all(12, "v1", "right after `rollback` (apache-graceful)");
}

/// Why cutover waits for the old children to be gone, not just for the signal: an old
/// child idle on a keep-alive connection answers one more request on it, from the old
/// OPcache, up to KeepAliveTimeout after the graceful restart. A refresh command that
/// only signals returns while that child is still there (the failure); apache-graceful
/// returns after it left, and the same connection then gets v2.
#[test]
fn apache_graceful_waits_for_old_children_on_idle_keep_alive_connections() {
    let stack = Stack::start(|options| options.keepalive_timeout = 3);
    stack.deploy("v2", &stack.config("none.toml", "strategy = [\"none\"]"));
    stack.run(
        &["switch", "v1"],
        &stack.config("none.toml", "strategy = [\"none\"]"),
    );
    let signal_only = stack.config(
        "signal.toml",
        &format!(
            "strategy = [\"command\"]\ncommand = \"kill -USR1 $(cat {})\"",
            stack.apache.pidfile().display()
        ),
    );
    let graceful = stack.graceful_config();
    let url = stack.apache.url("/");

    for (version, config, waits) in [("v2", &signal_only, false), ("v1", &graceful, true)] {
        let mut kept = HttpConnection::connect(&url, Duration::from_secs(10)).unwrap();
        let old = kept.get("/index.php").unwrap().text();
        let old_child = pid_of(&old).unwrap();
        assert_ne!(release_of(&old), Some(version), "{old}");
        let started = Instant::now();
        let out = stack.run(&["switch", version], config);
        let took = started.elapsed();
        assert!(out.status.success(), "{}", text(&out));
        let next = kept.get("/index.php").unwrap().text();
        if waits {
            assert!(
                !process_running(old_child),
                "apache-graceful returned after {took:?} while old child {old_child} ran"
            );
            assert_eq!(release_of(&next), Some(version), "{next}\n{}", stack.logs());
        } else {
            // Whether or not the old child got the parent's signal yet, it is idle in a
            // keep-alive read and answers this request from its old cache.
            assert_eq!(
                release_of(&next),
                release_of(&old),
                "a signal-only refresh returned after {took:?}, and the kept connection \
                 should still reach the old child's stale cache: {next}"
            );
            assert_eq!(pid_of(&next), Some(old_child), "{next}");
        }
    }
}

/// An Apache that hands PHP to php-fpm (here: no mod_php at all) is not refreshed by a
/// graceful restart; cutover refuses the setup before switching.
#[test]
fn apache_graceful_is_refused_when_php_does_not_run_inside_apache() {
    let stack = Stack::start(|options| options.php = false);
    stack.deploy("v2", &stack.config("none.toml", "strategy = [\"none\"]"));
    stack.run(
        &["switch", "v1"],
        &stack.config("none.toml", "strategy = [\"none\"]"),
    );
    let out = stack.run(&["switch", "v2"], &stack.graceful_config());
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("no mod_php loaded"), "{err}");
    assert!(err.contains("opcache-reset"), "{err}");
    assert_eq!(stack.sb.current().as_deref(), Some("v1"));

    // And a pid file naming no running Apache is refused the same way.
    let gone = stack.config(
        "gone.toml",
        "strategy = [\"apache-graceful\"]\napache_pidfile = \"/nonexistent/apache.pid\"",
    );
    let out = stack.run(&["switch", "v2"], &gone);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("apache_pidfile"), "{}", text(&out));
    assert_eq!(stack.sb.current().as_deref(), Some("v1"));
}

/// A bare SIGUSR1 with a broken config makes the parent exit (apachectl tests the config
/// first; a `kill` does not). cutover sees the parent go, switches back and exits 1.
#[test]
fn apache_graceful_switches_back_when_the_parent_exits() {
    let stack = Stack::start(|_| {});
    stack.deploy("v2", &stack.config("none.toml", "strategy = [\"none\"]"));
    stack.run(
        &["switch", "v1"],
        &stack.config("none.toml", "strategy = [\"none\"]"),
    );
    let config = stack.config(
        "kill.toml",
        &format!(
            "strategy = [\"apache-graceful\"]\napache_pidfile = \"{0}\"\n\
             apache_command = \"kill -USR1 $(cat {0})\"\nwait_seconds = 10",
            stack.apache.pidfile().display()
        ),
    );
    let conf = std::fs::read_to_string(stack.apache.conf()).unwrap();
    write(stack.apache.conf(), &format!("{conf}\nNotADirective on\n"));
    let out = stack.run(&["switch", "v2"], &config);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("exited"), "{err}");
    assert!(err.contains("switched back"), "{err}");
    assert_eq!(stack.sb.current().as_deref(), Some("v1"));
    assert!(!stack.apache.running(), "{}", stack.logs());
}

// ---- under load, with the verifier ----

impl Stack {
    /// Both releases deployed (v2 current), then a short `cutover verify` flipping v1↔v2
    /// every 200 ms for 3 s with 4 keep-alive connections (bounded: ~5 s of load).
    fn verify(&self, config: &str) -> (i32, serde_json::Value, String) {
        self.deploy("v2", &self.config("none.toml", "strategy = [\"none\"]"));
        let url = self.apache.url("/index.php");
        let out = self.run(
            &[
                "verify",
                "--url",
                &url,
                "--between",
                "v1,v2",
                "--duration",
                "3s",
                "--flip-every",
                "200ms",
                "--concurrency",
                "4",
                "--baseline",
                "500ms",
                "--settle",
                "1500ms",
                "--json",
            ],
            config,
        );
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out), self.logs()));
        (exit_code(&out), json, text(&out))
    }
}

#[test]
fn apache_graceful_passes_verify_under_load() {
    let stack = Stack::start(|_| {});
    let (code, v, out) = stack.verify(&stack.graceful_config());
    assert_eq!(code, 0, "{out}\n{}", stack.logs());
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["mixed"], 0, "{v}");
    assert!(v["switches"].as_u64().unwrap() >= 5, "{v}");
    assert!(
        v["served"]["a"].as_u64().unwrap() > 0 && v["served"]["b"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["visibility_ms"].as_f64().unwrap() < 1000.0, "{v}");
    assert_eq!(v["passed"], true);
    assert_eq!(
        stack.sb.current().as_deref(),
        Some("v2"),
        "verify ends on B"
    );
}

/// The same setup under the same load without a refresh: B is never seen by every request.
#[test]
fn mod_php_without_refresh_fails_verify() {
    let stack = Stack::start(|_| {});
    let (code, v, out) = stack.verify(&stack.config("none.toml", "strategy = [\"none\"]"));
    assert_eq!(code, 1, "{out}");
    assert_eq!(v["passed"], false, "{v}");
    assert!(v["visibility_ms"].is_null(), "{v}");
    assert_eq!(v["failed"], 0, "{v}");
}
