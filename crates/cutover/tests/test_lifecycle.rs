//! The deploy lifecycle on a deploy path: build and hooks at the release's final path,
//! `after_switch`, `on_failure`, `after_rollback`, per-hook timeouts, and releases a
//! killed deploy left unfinished.

use std::path::Path;
use std::time::Duration;

use cutover_teststack::{make_readable_by_workers, FpmOptions, PhpFpm};

use crate::common::*;

/// A PHP app whose front controller includes through a cache file a hook wrote with
/// `__DIR__`, as `php artisan config:cache` and Symfony's `cache:warmup` do.
fn write_cached_app(sb: &Sandbox, version: &str) {
    sb.write(
        "bin/cache.php",
        "<?php\n$app = dirname(__DIR__);\n@mkdir($app . '/cache');\nfile_put_contents($app . '/cache/config.php', '<?php return ' . var_export(['lib' => $app . '/lib/lib.php'], true) . ';');\n",
    );
    sb.write(
        "lib/lib.php",
        &format!("<?php function app_version() {{ return '{version}'; }}\n"),
    );
    sb.write(
        "public/index.php",
        "<?php $config = require __DIR__ . '/../cache/config.php'; require $config['lib']; echo app_version(), ' ', trim(file_get_contents(__DIR__ . '/../RELEASE'));\n",
    );
}

/// Build commands and hooks run in `releases/<id>` itself: `pwd -P`, `__DIR__` and the
/// cache files they write name the path the release is served from, and a page on a real
/// php-fpm that includes through such a cache file works after the switch.
#[test]
fn build_and_hooks_run_at_the_final_path_so_cached_paths_stay_valid() {
    let sb = Sandbox::new();
    let config = sb.config(
        "lifecycle.toml",
        "[build]\nrun = ['pwd -P > build-pwd']\n\n[hooks]\nbefore_switch = ['php bin/cache.php', 'pwd -P > hook-pwd']\n",
    );
    write_cached_app(&sb, "one");
    let deploy = |id: &str| {
        let out = sb.run_deploy(&["--release", id, "--config", &config]);
        assert!(out.status.success(), "{}", text(&out));
    };
    deploy("v1");
    write_cached_app(&sb, "two");
    deploy("v2");

    let root = std::fs::canonicalize(sb.deploy()).unwrap();
    for id in ["v1", "v2"] {
        let release = root.join("releases").join(id);
        for file in ["build-pwd", "hook-pwd"] {
            let seen = std::fs::read_to_string(release.join(file)).unwrap();
            assert_eq!(seen.trim(), release.display().to_string(), "{id}/{file}");
        }
        let cached = std::fs::read_to_string(release.join("cache/config.php")).unwrap();
        assert!(
            cached.contains(&format!("'{}/lib/lib.php'", release.display())),
            "{id}: {cached}"
        );
    }

    make_readable_by_workers(sb.path()).unwrap();
    let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
    for (id, expected) in [("v2", "two v2"), ("v1", "one v1")] {
        // The path nginx's $realpath_root hands PHP: the release's own.
        let page = root.join("releases").join(id).join("public/index.php");
        let response = fpm.request(&page, "").unwrap();
        assert_eq!(
            response.body().trim(),
            expected,
            "{id}: {}",
            String::from_utf8_lossy(&response.stderr)
        );
    }
    assert_eq!(sb.current().as_deref(), Some("v2"));
}

/// `after_switch` runs once the new release is live everywhere; when it fails, the deploy
/// exits 1 naming the hook and the host, and the release stays live.
#[test]
fn after_switch_runs_on_the_live_release_and_its_failure_keeps_it_live() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    let log = sb.path().join("after.log");
    let config = sb.config(
        "after.toml",
        &format!(
            "[hooks]\nafter_switch = ['echo \"$CUTOVER_HOST $CUTOVER_RELEASE $CUTOVER_PREVIOUS_RELEASE $(readlink \"$CUTOVER_DEPLOY_PATH/current\") $(pwd -P)\" >> {}']\n",
            log.display()
        ),
    );
    for id in ["a1", "a2"] {
        let out = sb.run_deploy(&["--release", id, "--config", &config]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let root = std::fs::canonicalize(sb.deploy()).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            format!(
                "local a1  releases/a1 {}",
                root.join("releases/a1").display()
            ),
            format!(
                "local a2 a1 releases/a2 {}",
                root.join("releases/a2").display()
            ),
        ]
    );

    let failing = sb.config(
        "after-fails.toml",
        "[hooks]\nafter_switch = ['echo restarting; exit 7']\n",
    );
    sb.write("index.php", "<?php echo 3;");
    let out = sb.run_deploy(&["--release", "a3", "--config", &failing, "--json"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("after_switch") && err.contains("exit 7"),
        "{err}"
    );
    assert!(
        err.contains("a3 is live") && err.contains("by hand"),
        "{err}"
    );
    assert_eq!(sb.current().as_deref(), Some("a3"));
    assert!(sb.release_dir("a2").is_dir(), "the release before stays");
}

/// A deploy that started and failed runs `on_failure` in the release still served, told
/// the step, while it still holds the lock; what it staged is gone and the history never
/// names it. A failed health check also runs `after_rollback` in the release gone back to.
#[test]
fn on_failure_and_after_rollback_run_where_and_when_they_should() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    let log = sb.path().join("failure.log");
    let on_failure = format!(
        "on_failure = ['echo \"$CUTOVER_FAILED_STEP $CUTOVER_RELEASE $(pwd -P)\" >> {log}; flock -n \"$CUTOVER_DEPLOY_PATH/.cutover/lock\" true || echo locked >> {log}']\nafter_rollback = ['echo \"back $CUTOVER_RELEASE from $CUTOVER_PREVIOUS_RELEASE $(readlink \"$CUTOVER_DEPLOY_PATH/current\")\" >> {log}']\n",
        log = log.display()
    );
    let good = sb.config("good.toml", &format!("[hooks]\n{on_failure}"));
    let out = sb.run_deploy(&["--release", "f1", "--config", &good]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!log.exists(), "no hook of failure ran for a good deploy");

    let hook_fails = sb.config(
        "hook-fails.toml",
        &format!("[hooks]\nbefore_switch = ['exit 3']\n{on_failure}"),
    );
    let before = sb.state();
    let out = sb.run_deploy(&["--release", "f2", "--config", &hook_fails]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    before.assert_same(&sb.state(), "a failing before_switch hook");
    let f1 = std::fs::canonicalize(sb.release_dir("f1")).unwrap();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("before_switch f2 {}\nlocked\n", f1.display())
    );

    // No answer on port 9: the check fails, current goes back to f1.
    std::fs::remove_file(&log).unwrap();
    let check_fails = sb.config(
        "check-fails.toml",
        &format!(
            "[health]\nurl = \"http://127.0.0.1:9/\"\ntimeout_seconds = 1\n\n[hooks]\n{on_failure}"
        ),
    );
    let out = sb.run_deploy(&["--release", "f3", "--config", &check_fails]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("f1"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "back f1 from f3 releases/f1\ncheck f3 {}\nlocked\n",
            f1.display()
        )
    );
}

/// `cutover rollback` runs `after_rollback` in the release gone back to; a failing one
/// exits 1 and the rollback stands.
#[test]
fn after_rollback_runs_after_a_rollback() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.deploy_ids(&["r1", "r2"]);
    let config = sb.config(
        "rollback.toml",
        "[hooks]\nafter_rollback = ['echo \"$CUTOVER_RELEASE $CUTOVER_PREVIOUS_RELEASE $(pwd -P)\" > rolled-back']\n",
    );
    let out = sb.run_to(&["rollback", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    let r1 = std::fs::canonicalize(sb.release_dir("r1")).unwrap();
    assert_eq!(
        std::fs::read_to_string(r1.join("rolled-back")).unwrap(),
        format!("r1 r2 {}\n", r1.display())
    );

    let failing = sb.config(
        "rollback-fails.toml",
        "[hooks]\nafter_rollback = ['false']\n",
    );
    let out = sb.run_to(&["switch", "r2"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = sb.run_to(&["rollback", "--config", &failing]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("after_rollback"), "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("r1"));
}

/// A hook's own `timeout` replaces `[hooks] timeout`.
#[test]
fn a_hook_entry_timeout_overrides_the_default() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    let config = sb.config(
        "timeout.toml",
        "[hooks]\ntimeout = \"10m\"\nbefore_switch = [{ run = \"sleep 20\", timeout = \"1s\" }]\n",
    );
    let started = std::time::Instant::now();
    let out = sb.run_deploy(&["--config", &config]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(15));
    let err = stderr(&out);
    assert!(err.contains("sleep 20") && err.contains("1s"), "{err}");
    assert_eq!(sb.current(), None);
}

/// A deploy killed while its release is being built leaves it marked unfinished: no
/// command offers or takes it, and the next one that takes the lock removes it.
#[test]
fn a_release_a_killed_deploy_left_unfinished_is_never_taken() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.deploy_ids(&["u1"]);
    let config = sb.config(
        "slow.toml",
        "[hooks]\nbefore_switch = ['touch hook-started; sleep 30']\n",
    );
    // Starts a deploy of `id`; returns it once its hook runs.
    let deploying = |id: &str| {
        let child = sb
            .cutover()
            .args(["deploy", &sb.src_arg(), "--to", &sb.to(), "--release", id])
            .args(["--config", &config, "-q"])
            .spawn()
            .unwrap();
        let started = sb.release_dir(id).join("hook-started");
        wait_until("the hook to start", Duration::from_secs(20), || {
            started.exists()
        });
        child
    };
    let mut child = deploying("u2");
    let listed = |sb: &Sandbox| {
        let json = sb.json_to(&["releases"]);
        let ids: Vec<String> = one_result(&json)["releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        ids
    };
    assert_eq!(listed(&sb), ["u1"], "while the deploy runs");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(sb.release_dir("u2").is_dir());
    assert_eq!(listed(&sb), ["u1"], "after the kill");

    let out = sb.run_to(&["switch", "u2"]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("no release `u2`"), "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("u1"));
    assert!(
        !sb.release_dir("u2").exists(),
        "the locked switch cleared it"
    );
    assert!(unfinished_left(&sb.deploy()).is_empty());

    // Once more, found by `cleanup` this time.
    let mut child = deploying("u3");
    child.kill().unwrap();
    child.wait().unwrap();
    let report = sb.json_to(&["cleanup"]);
    assert_eq!(
        one_host(&report)["cleanup"]["debris"],
        serde_json::json!(["releases/u3 (unfinished)"]),
        "{report}"
    );
    assert!(!Path::new(&sb.release_dir("u3")).exists());
    assert!(sb.history().iter().all(|e| e["release"] != "u3"));
}

/// `[deploy] writable` on a real php-fpm whose workers run as another user: without it
/// the app cannot write its cache and storage, with it (the user asked of the pool) it
/// can, in the release and in the shared directory.
#[test]
fn writable_dirs_let_the_pools_user_write() {
    let sb = Sandbox::new();
    sb.write(
        "public/write.php",
        "<?php $app = dirname(__DIR__); $ok = @file_put_contents($app . '/storage/log.txt', 'x') !== false && @file_put_contents($app . '/bootstrap/cache/c.php', 'y') !== false; echo $ok ? 'written' : 'refused';\n",
    );
    sb.write("bootstrap/cache/.gitignore", "*\n");
    std::fs::create_dir_all(sb.deploy().join("shared/storage")).unwrap();
    make_readable_by_workers(sb.path()).unwrap();
    let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
    let socket = fpm.unix_socket().unwrap().display().to_string();
    let base = format!("[php]\nfpm = \"unix:{socket}\"\n\n[shared]\ndirs = [\"storage\"]\n");
    let plain = sb.config("plain.toml", &base);
    let writable = sb.config(
        "writable.toml",
        &format!("{base}\n[deploy]\nwritable = [\"storage\", \"bootstrap/cache\"]\n"),
    );
    let root = std::fs::canonicalize(sb.deploy()).unwrap();
    let write_in = |id: &str| {
        make_readable_by_workers(sb.path()).unwrap();
        let page = root.join("releases").join(id).join("public/write.php");
        fpm.request(&page, "").unwrap().body().trim().to_string()
    };
    for (id, config, expected) in [("w1", &plain, "refused"), ("w2", &writable, "written")] {
        let out = sb.run_deploy(&["--release", id, "--config", config]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(write_in(id), expected, "{id}");
    }
    assert!(root.join("shared/storage/log.txt").is_file());
    assert!(root.join("releases/w2/bootstrap/cache/c.php").is_file());
    // The file w2 shares with w1 by a hard link was split off before its ACL changed.
    let gitignore = |id: &str| {
        root.join("releases")
            .join(id)
            .join("bootstrap/cache/.gitignore")
    };
    assert_ne!(ino(&gitignore("w1")), ino(&gitignore("w2")));
}

/// A hook after the switch runs in a complete release, whose unchanged files are shared
/// with the release before: rewriting one in place is named in a warning, as it changed
/// the release a rollback would go back to.
#[test]
fn a_hook_that_rewrites_a_shared_file_in_place_is_named() {
    let sb = Sandbox::new();
    sb.write("config.php", "<?php return 'one';");
    sb.write("index.php", "<?php echo 1;");
    let config = sb.config(
        "in-place.toml",
        "[hooks]\nafter_switch = ['if [ \"$CUTOVER_RELEASE\" = s2 ]; then echo changed > config.php; fi']\n",
    );
    let out = sb.run_deploy(&["--release", "s1", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    sb.write("index.php", "<?php echo 2;");
    let out = sb.run_deploy(&["--release", "s2", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning:") && err.contains("rewrote config.php in place"),
        "{err}"
    );
    // Why it is worth a warning: the release before changed with it.
    assert_eq!(
        std::fs::read_to_string(sb.release_dir("s1").join("config.php")).unwrap(),
        "changed\n"
    );
}
