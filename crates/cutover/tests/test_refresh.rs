//! `[refresh]` after every switch, on a real php-fpm (OPcache on, validate_timestamps=0)
//! behind a real nginx.
//!
//! The app is the issue's: `public/index.php` requires `lib/A.php` through `__DIR__`,
//! sleeps 20 ms, requires `lib/B.php`; v2's `a()` calls `only_in_v2()`, which only v2's
//! B.php defines. With nginx passing `$document_root`, PHP is handed
//! `<deploy>/current/public/index.php`: OPcache keeps that key mapped to the script it
//! compiled from the old release (whose `__DIR__` is the old release's real path), so
//! without a refresh every worker keeps serving the old release. The control test shows
//! exactly that, so the other tests can fail.
//!
//! Requests are sent in rounds of [`WORKERS`] at once, so every worker of the pool
//! answers some of them (each holds its worker for at least 20 ms).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Barrier;
use std::time::Duration;

use cutover_teststack::{
    http_get, make_readable_by_workers, process_running, FpmOptions, Nginx, NginxOptions, PhpFpm,
};

use crate::common::*;

/// `pm.max_children` of `FpmOptions::default()`.
const WORKERS: usize = 4;
/// Rounds of [`WORKERS`] concurrent requests checked after a switch (20 requests).
const ROUNDS: usize = 5;
/// Bound for one cutover run: a refresh that hangs fails the test instead of hanging it.
const CUTOVER_LIMIT: Duration = Duration::from_secs(120);

// ---- the test app ----

const INDEX: &str = r#"<?php
require __DIR__ . '/../lib/A.php';
usleep(20000);
require __DIR__ . '/../lib/B.php';
echo a() . ' ' . b() . "\n";
echo 'pid=' . getmypid() . "\n";
"#;
const V1_A: &str = "<?php\nfunction a() { return 'A1'; }\n";
const V1_B: &str = "<?php\nfunction b() { return 'B1'; }\n";
const V2_A: &str = "<?php\nfunction a() { return 'A2:' . only_in_v2(); }\n";
const V2_B: &str =
    "<?php\nfunction b() { return 'B2'; }\nfunction only_in_v2() { return 'v2only'; }\n";

/// The first body line each release prints.
const V1_MARKER: &str = "A1 B1";
const V2_MARKER: &str = "A2:v2only B2";

/// Writes release `version` ("v1" or "v2") of the app into `dir`.
fn write_app(dir: &Path, version: &str) {
    let (a, b) = match version {
        "v1" => (V1_A, V1_B),
        "v2" => (V2_A, V2_B),
        other => panic!("no app version {other}"),
    };
    write(&dir.join("public/index.php"), INDEX);
    write(&dir.join("lib/A.php"), a);
    write(&dir.join("lib/B.php"), b);
}

/// One answer of `/index.php`, or the error that replaced it (status 0).
#[derive(Debug)]
struct Page {
    status: u16,
    body: String,
}

impl Page {
    fn get(url: &str) -> Page {
        match http_get(url) {
            Ok(response) => Page {
                status: response.status,
                body: response.text(),
            },
            Err(err) => Page {
                status: 0,
                body: err.to_string(),
            },
        }
    }

    /// "v1" or "v2" when the body is exactly one release's output, else `None` (an
    /// error page, or a mix of both releases).
    fn release(&self) -> Option<&'static str> {
        match self.body.lines().next() {
            Some(V1_MARKER) => Some("v1"),
            Some(V2_MARKER) => Some("v2"),
            _ => None,
        }
    }

    /// The pid of the worker that answered.
    fn pid(&self) -> Option<u32> {
        self.body
            .lines()
            .find_map(|line| line.strip_prefix("pid="))
            .and_then(|pid| pid.trim().parse().ok())
    }
}

// ---- the stack ----

/// A sandbox with both app versions as sources, a private php-fpm and an nginx whose root
/// is `<deploy>/current/public`. Fields drop in order: servers first, then the files.
struct Stack {
    nginx: Nginx,
    fpm: PhpFpm,
    sb: Sandbox,
    /// The deploy path, canonical (what `current` and the releases live under).
    deploy: PathBuf,
}

impl Stack {
    /// `realpath_root`: nginx passes `$realpath_root` instead of `$document_root`.
    fn start(realpath_root: bool) -> Stack {
        Stack::start_with(realpath_root, FpmOptions::default())
    }

    fn start_with(realpath_root: bool, fpm_options: FpmOptions) -> Stack {
        let sb = Sandbox::new();
        write_app(&sb.path().join("v1"), "v1");
        write_app(&sb.path().join("v2"), "v2");
        std::fs::create_dir_all(sb.deploy()).unwrap();
        make_readable_by_workers(sb.path()).unwrap();
        let deploy = std::fs::canonicalize(sb.deploy()).unwrap();

        let fpm = PhpFpm::start(fpm_options).unwrap();
        let mut options = NginxOptions::new(deploy.join("current/public"), fpm.fastcgi_target());
        options.realpath_root = realpath_root;
        let nginx = Nginx::start(options).unwrap();
        Stack {
            nginx,
            fpm,
            sb,
            deploy,
        }
    }

    /// Writes a settings file naming the pool, with `refresh` as the `[refresh]` table's
    /// body; returns its path.
    fn config(&self, name: &str, refresh: &str) -> String {
        let socket = self.fpm.unix_socket().unwrap().display().to_string();
        self.sb.config(
            name,
            &format!("[php]\nfpm = \"unix:{socket}\"\n\n[refresh]\n{refresh}\n"),
        )
    }

    /// `cutover deploy <sandbox>/<version> --release <version> --config <config> --json`,
    /// asserting success; the parsed report.
    fn deploy(&self, version: &str, config: &str) -> serde_json::Value {
        let source = self.sb.path().join(version).display().to_string();
        let to = self.deploy.display().to_string();
        json_ok(
            &self.sb,
            &[
                "deploy",
                &source,
                "--to",
                &to,
                "--release",
                version,
                "--keep",
                "100",
                "--config",
                config,
            ],
        )
    }

    /// `cutover <command…> --to <deploy> --config <config> --json`, asserting success.
    fn run_json(&self, command: &[&str], config: &str) -> serde_json::Value {
        let to = self.deploy.display().to_string();
        let mut args = command.to_vec();
        args.extend_from_slice(&["--to", &to, "--config", config]);
        json_ok(&self.sb, &args)
    }

    /// `rounds` rounds of [`WORKERS`] requests sent at once (after a barrier), one round
    /// after the other.
    fn pages(&self, rounds: usize) -> Vec<Page> {
        let url = self.nginx.url("/index.php");
        let mut pages = Vec::new();
        for _ in 0..rounds {
            let barrier = Barrier::new(WORKERS);
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..WORKERS)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            Page::get(&url)
                        })
                    })
                    .collect();
                pages.extend(handles.into_iter().map(|h| h.join().unwrap()));
            });
        }
        pages
    }

    /// Asserts every page is a 200 from `release`, and that every worker answered some.
    /// Returns the pids that answered.
    fn assert_all(&self, pages: &[Page], release: &str, what: &str) -> BTreeSet<u32> {
        let bad: Vec<&Page> = pages
            .iter()
            .filter(|p| p.status != 200 || p.release() != Some(release))
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: expected every response to be a 200 from {release}; {} of {} were not:\n\
             {bad:#?}\n{}",
            bad.len(),
            pages.len(),
            self.logs()
        );
        let pids: BTreeSet<u32> = pages.iter().filter_map(Page::pid).collect();
        assert_eq!(
            pids.len(),
            WORKERS,
            "{what}: the requests were not spread over all {WORKERS} workers: {pids:?}\n{}",
            self.logs()
        );
        pids
    }

    /// Where `current` points, as a release id.
    fn current(&self) -> String {
        self.sb.current().expect("current must exist")
    }

    /// The servers' logs, for failure messages.
    fn logs(&self) -> String {
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        format!(
            "--- php-fpm log (tail)\n{}\n--- nginx error log (tail)\n{}",
            tail(self.fpm.error_log()),
            tail(self.nginx.error_log())
        )
    }
}

/// Runs cutover with `args` and `--json` (bounded by [`CUTOVER_LIMIT`]), asserts success
/// and parses stdout.
fn json_ok(sb: &Sandbox, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = run_bounded(sb, &args);
    assert!(
        out.status.success(),
        "cutover {args:?} failed:\n{}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout of {args:?} is not JSON ({e}):\n{}", text(&out)))
}

fn run_bounded(sb: &Sandbox, args: &[&str]) -> Output {
    output_within(sb.cutover().args(args), CUTOVER_LIMIT)
}

/// The report says what the refresh did (an object) — or nothing, under `none`.
fn assert_refresh_reported(report: &serde_json::Value, expected: bool) {
    let refresh = one_host(report).get("refresh");
    if expected {
        assert!(
            refresh.is_some_and(|r| r.is_object()),
            "the report must have a \"refresh\" object: {report:#}"
        );
    } else {
        assert!(
            refresh.is_none(),
            "with strategy none the report must have no \"refresh\" key: {report:#}"
        );
    }
}

// ---- the tests ----

/// The control: `$document_root` and no refresh keeps serving v1 after the switch to v2.
/// If this ever passes with v2, the stack no longer reproduces the stale-OPcache case and
/// the tests below prove nothing.
#[test]
fn document_root_without_refresh_keeps_serving_the_old_release() {
    let stack = Stack::start(false);
    let config = stack.config("none.toml", "strategy = [\"none\"]");
    assert_refresh_reported(&stack.deploy("v1", &config), false);
    stack.assert_all(&stack.pages(2), "v1", "warming up on v1");

    assert_refresh_reported(&stack.deploy("v2", &config), false);
    assert_eq!(stack.current(), "v2");
    stack.assert_all(
        &stack.pages(ROUNDS),
        "v1",
        "after switching to v2 with $document_root and no refresh (stale OPcache expected)",
    );
}

#[test]
fn opcache_reset_makes_document_root_serve_the_new_release_at_once() {
    let stack = Stack::start(false);
    let config = stack.config(
        "reset.toml",
        "strategy = [\"opcache-reset\"]\nwait_seconds = 30",
    );
    assert_refresh_reported(&stack.deploy("v1", &config), true);
    stack.assert_all(&stack.pages(2), "v1", "warming up on v1");

    let report = stack.deploy("v2", &config);
    assert_refresh_reported(&report, true);
    assert_eq!(stack.current(), "v2");
    stack.assert_all(
        &stack.pages(ROUNDS),
        "v2",
        "right after `deploy` (opcache-reset) returned",
    );
}

#[test]
fn fpm_reload_replaces_the_workers_and_serves_the_new_release_at_once() {
    // Workers may finish their request before the reload (cutover refuses a reload that
    // would kill them: see fpm_reload_that_would_kill_requests_is_refused).
    let stack = Stack::start_with(false, reload_safe_fpm());
    let pidfile = stack.fpm.pidfile().display().to_string();
    let config = stack.config(
        "reload.toml",
        &format!("strategy = [\"fpm-reload\"]\nfpm_pidfile = \"{pidfile}\"\nwait_seconds = 30"),
    );
    // The first deploy reloads too; compare the workers of the second one.
    assert_refresh_reported(&stack.deploy("v1", &config), true);
    stack.assert_all(&stack.pages(2), "v1", "warming up on v1");
    let master = stack.fpm.master_pid();
    let pidfile_before = std::fs::read_to_string(stack.fpm.pidfile()).unwrap();
    let workers_before = stack.fpm.worker_pids();
    assert_eq!(workers_before.len(), WORKERS);

    let report = stack.deploy("v2", &config);
    assert_refresh_reported(&report, true);
    assert_eq!(stack.current(), "v2");

    assert!(
        process_running(master),
        "the php-fpm master {master} is gone"
    );
    assert_eq!(stack.fpm.master_pid(), master);
    assert_eq!(
        std::fs::read_to_string(stack.fpm.pidfile()).unwrap(),
        pidfile_before,
        "a reload keeps the master (and its pid file)"
    );
    let workers_after = stack.fpm.worker_pids();
    assert!(
        workers_after
            .iter()
            .all(|pid| !workers_before.contains(pid)),
        "the workers were not replaced: before {workers_before:?}, after {workers_after:?}"
    );

    let answered = stack.assert_all(
        &stack.pages(ROUNDS),
        "v2",
        "right after `deploy` (fpm-reload) returned",
    );
    assert!(
        answered.iter().all(|pid| !workers_before.contains(pid)),
        "old workers {workers_before:?} still answered: {answered:?}"
    );
    let workers_now = stack.fpm.worker_pids();
    assert!(
        answered.iter().all(|pid| workers_now.contains(pid)),
        "answered by {answered:?}, but the pool's workers are {workers_now:?}"
    );
}

#[test]
fn realpath_root_needs_no_refresh() {
    let stack = Stack::start(true);
    let config = stack.config("none.toml", "strategy = [\"none\"]");
    assert_refresh_reported(&stack.deploy("v1", &config), false);
    stack.assert_all(&stack.pages(2), "v1", "warming up on v1");

    assert_refresh_reported(&stack.deploy("v2", &config), false);
    stack.assert_all(
        &stack.pages(ROUNDS),
        "v2",
        "right after `deploy` with $realpath_root and strategy none",
    );
}

#[test]
fn rollback_and_switch_refresh_too() {
    let stack = Stack::start(false);
    let config = stack.config(
        "reset.toml",
        "strategy = [\"opcache-reset\"]\nwait_seconds = 30",
    );
    stack.deploy("v1", &config);
    stack.deploy("v2", &config);
    stack.assert_all(&stack.pages(2), "v2", "warming up on v2");

    let report = stack.run_json(&["rollback"], &config);
    assert_refresh_reported(&report, true);
    assert_eq!(stack.current(), "v1");
    stack.assert_all(
        &stack.pages(ROUNDS),
        "v1",
        "right after `rollback` (opcache-reset) returned",
    );

    let report = stack.run_json(&["switch", "v2"], &config);
    assert_refresh_reported(&report, true);
    assert_eq!(stack.current(), "v2");
    stack.assert_all(
        &stack.pages(ROUNDS),
        "v2",
        "right after `switch v2` (opcache-reset) returned",
    );
}

// The command strategy needs no PHP: these run on a bare sandbox.

/// A command that records `$CUTOVER_RELEASE` of each call in `calls.log`, then fails.
fn failing_refresh(sb: &Sandbox) -> (String, PathBuf) {
    let log = sb.path().join("calls.log");
    let config = sb.config(
        "failing.toml",
        &format!(
            "[refresh]\nstrategy = [\"command\"]\n\
             command = 'echo \"$CUTOVER_RELEASE\" >> {}; exit 3'\n",
            log.display()
        ),
    );
    (config, log)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts exit 1 with stderr saying the refresh failed and that cutover rolled back.
fn assert_refresh_failure_reported(out: &Output) {
    assert_eq!(exit_code(out), 1, "{}", text(out));
    let err = stderr(out).to_lowercase();
    assert!(
        err.contains("refresh"),
        "stderr must say the refresh failed:\n{}",
        text(out)
    );
    assert!(
        ["rolled back", "rolling back", "switched back"]
            .iter()
            .any(|needle| err.contains(needle)),
        "stderr must say cutover rolled back:\n{}",
        text(out)
    );
}

#[test]
fn a_failing_refresh_switches_back_and_refreshes_again() {
    let sb = Sandbox::new();
    write_app(&sb.path().join("v1"), "v1");
    write_app(&sb.path().join("v2"), "v2");
    let to = sb.to();
    let v1 = sb.path().join("v1").display().to_string();
    let v2 = sb.path().join("v2").display().to_string();
    let plain = sb.config("plain.toml", "");
    json_ok(
        &sb,
        &[
            "deploy",
            &v1,
            "--to",
            &to,
            "--release",
            "v1",
            "--config",
            &plain,
        ],
    );
    let (failing, log) = failing_refresh(&sb);

    let out = run_bounded(
        &sb,
        &[
            "deploy",
            &v2,
            "--to",
            &to,
            "--release",
            "v2",
            "--config",
            &failing,
        ],
    );
    assert_refresh_failure_reported(&out);
    assert_eq!(sb.current().as_deref(), Some("v1"), "{}", text(&out));
    assert_eq!(
        lines(&log),
        ["v2", "v1"],
        "the refresh runs after the switch to v2, then again after the switch back to v1"
    );

    // `switch` fails the same way and leaves v1 current.
    std::fs::remove_file(&log).unwrap();
    let out = run_bounded(&sb, &["switch", "v2", "--to", &to, "--config", &failing]);
    assert_refresh_failure_reported(&out);
    assert_eq!(sb.current().as_deref(), Some("v1"), "{}", text(&out));
    assert_eq!(lines(&log), ["v2", "v1"]);
}

#[test]
fn the_refresh_command_runs_after_the_switch_with_the_release_in_its_environment() {
    let sb = Sandbox::new();
    write_app(&sb.path().join("v1"), "v1");
    write_app(&sb.path().join("v2"), "v2");
    std::fs::create_dir_all(sb.deploy()).unwrap();
    let deploy = std::fs::canonicalize(sb.deploy()).unwrap();
    let to = deploy.display().to_string();
    let log = sb.path().join("env.log");
    // One line per call: the three variables and where `current` points at that moment.
    let config = sb.config(
        "command.toml",
        &format!(
            "[refresh]\nstrategy = [\"command\"]\n\
             command = 'printf \"%s|%s|%s|%s\\n\" \"$CUTOVER_RELEASE\" \"$CUTOVER_RELEASE_PATH\" \
             \"$CUTOVER_DEPLOY_PATH\" \"$(readlink \"$CUTOVER_DEPLOY_PATH/current\")\" >> {}'\n",
            log.display()
        ),
    );
    for version in ["v1", "v2"] {
        let source = sb.path().join(version).display().to_string();
        let report = json_ok(
            &sb,
            &[
                "deploy",
                &source,
                "--to",
                &to,
                "--release",
                version,
                "--config",
                &config,
            ],
        );
        assert_refresh_reported(&report, true);
    }
    let report = json_ok(&sb, &["rollback", "--to", &to, "--config", &config]);
    assert_refresh_reported(&report, true);

    let canonical = |path: &str| {
        std::fs::canonicalize(path)
            .unwrap_or_else(|e| panic!("{path:?} from the command's environment: {e}"))
    };
    let calls = lines(&log);
    assert_eq!(calls.len(), 3, "one call per switch: {calls:#?}");
    for (call, release) in calls.iter().zip(["v1", "v2", "v1"]) {
        let fields: Vec<&str> = call.split('|').collect();
        assert_eq!(fields.len(), 4, "{call:?}");
        assert_eq!(fields[0], release, "CUTOVER_RELEASE in {call:?}");
        assert_eq!(
            canonical(fields[1]),
            deploy.join("releases").join(release),
            "CUTOVER_RELEASE_PATH in {call:?}"
        );
        assert_eq!(
            canonical(fields[2]),
            deploy,
            "CUTOVER_DEPLOY_PATH in {call:?}"
        );
        assert_eq!(
            Path::new(fields[3]).file_name().and_then(|n| n.to_str()),
            Some(release),
            "`current` must already point at the release when the command runs: {call:?}"
        );
    }
}

/// A pool whose reload lets workers finish the request they are serving.
fn reload_safe_fpm() -> FpmOptions {
    FpmOptions {
        process_control_timeout: Some(10),
        ..FpmOptions::default()
    }
}

/// Sends SIGUSR2 to the master while [`WORKERS`] requests to a 400 ms page are in flight;
/// returns how many of them failed. Bounded: one round of requests, each with the HTTP
/// client's own timeout.
fn failures_during_reload(stack: &Stack) -> usize {
    let url = stack.nginx.url("/slow.php");
    let master = rustix::process::Pid::from_raw(stack.fpm.master_pid() as i32).unwrap();
    let barrier = Barrier::new(WORKERS + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    Page::get(&url)
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(Duration::from_millis(150));
        rustix::process::kill_process(master, rustix::process::Signal::USR2).unwrap();
        let failed = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|page| page.status != 200 || !page.body.contains("slow done"))
            .count();
        wait_until_back(&stack.fpm);
        failed
    })
}

/// The master re-executes itself on SIGUSR2 and rewrites its pid file: wait (bounded)
/// until it answers again before the next step reads that file.
fn wait_until_back(fpm: &PhpFpm) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(fpm.pidfile().exists() && fpm.ping().is_ok()) {
        assert!(
            std::time::Instant::now() < deadline,
            "php-fpm did not come back after the reload"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The issue's case: fpm-reload with php-fpm's default process_control_timeout = 0 drops
/// in-flight requests. The test first shows the 502s on the real pool, then that cutover
/// refuses that setup before switching, and that the same reload with a timeout loses none.
#[test]
fn fpm_reload_that_would_kill_requests_is_refused() {
    const SLOW: &str = "<?php usleep(400000); echo \"slow done\\n\";\n";
    for (fpm_options, kills) in [(FpmOptions::default(), true), (reload_safe_fpm(), false)] {
        let stack = Stack::start_with(false, fpm_options);
        for version in ["v1", "v2"] {
            write(&stack.sb.path().join(version).join("public/slow.php"), SLOW);
        }
        make_readable_by_workers(stack.sb.path()).unwrap();
        let plain = stack.config("plain.toml", "");
        stack.deploy("v1", &plain);

        // The failure itself, measured on the pool (up to 3 rounds to catch it).
        let failed: usize = (0..if kills { 3 } else { 1 })
            .map(|_| failures_during_reload(&stack))
            .find(|&n| n > 0)
            .unwrap_or(0);
        if kills {
            assert!(
                failed > 0,
                "a reload with process_control_timeout = 0 lost no request"
            );
        } else {
            assert_eq!(
                failed, 0,
                "a reload with process_control_timeout = 10 lost requests"
            );
        }

        let pidfile = stack.fpm.pidfile().display().to_string();
        let reload = stack.config(
            "reload.toml",
            &format!("strategy = [\"fpm-reload\"]\nfpm_pidfile = \"{pidfile}\""),
        );
        let source = stack.sb.path().join("v2").display().to_string();
        let to = stack.deploy.display().to_string();
        let out = stack.sb.run(&[
            "deploy",
            &source,
            "--to",
            &to,
            "--release",
            "v2",
            "--config",
            &reload,
        ]);
        if kills {
            assert_eq!(exit_code(&out), 2, "{}", text(&out));
            assert!(
                stderr(&out).contains("process_control_timeout"),
                "{}",
                text(&out)
            );
            assert_eq!(stack.current(), "v1", "a refused deploy must not switch");
        } else {
            assert!(out.status.success(), "{}", text(&out));
            assert_eq!(stack.current(), "v2");
        }
    }
}
