//! Refusals: bad settings, bad arguments, a source or deploy path we must not use, and a
//! lock held by someone else. Each gets an exit code, one `error:` line and a `hint:`, and
//! leaves the deploy path exactly as it was.

use std::io::Write;
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

use crate::common::*;

/// A sandbox with one release deployed, so "nothing changed" has something to compare.
fn deployed() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.write("lib/a.php", "<?php // a");
    sb.deploy_src(&[]);
    sb
}

/// Runs `deploy` with `extra`, asserts it is refused, and that nothing changed.
fn refused_deploy(sb: &Sandbox, extra: &[&str], code: i32, needles: &[&str], hint: &str) {
    let before = sb.state();
    let releases = sb.releases();
    let out = sb.run_deploy(extra);
    assert_refused(&out, code, needles, hint);
    before.assert_same(&sb.state(), &format!("deploy {extra:?}"));
    assert_eq!(sb.releases(), releases);
    assert_eq!(unfinished_left(&sb.deploy()), Vec::<String>::new());
}

#[test]
fn malformed_config_names_file_line_and_column() {
    let sb = deployed();
    let config = sb.config(
        "bad.toml",
        "[deploy]\nkeep_releases = 3\npath = /var/www/app\n",
    );
    refused_deploy(
        &sb,
        &["--config", &config],
        2,
        &[&format!("{config}:3:8")],
        "quotes",
    );
}

#[test]
fn unknown_key_suggests_the_nearest_valid_one() {
    let sb = deployed();
    let config = sb.config("typo.toml", "[deploy]\nkep_releases = 3\n");
    refused_deploy(
        &sb,
        &["--config", &config],
        2,
        &[&format!("{config}:2:1"), "kep_releases"],
        "did you mean `keep_releases`?",
    );
    let config = sb.config("table.toml", "[hook]\nbefore_switch = []\n");
    refused_deploy(
        &sb,
        &["--config", &config],
        2,
        &[&format!("{config}:1:"), "hook"],
        "`hooks`",
    );
}

#[test]
fn wrong_type_names_the_key_and_the_fix() {
    let sb = deployed();
    let config = sb.config("type.toml", "[deploy]\nkeep_releases = \"3\"\n");
    refused_deploy(
        &sb,
        &["--config", &config],
        2,
        &[&format!("{config}:2:17"), "deploy.keep_releases"],
        "keep_releases = 3",
    );
    let config = sb.config("list.toml", "[deploy]\nexclude = \"vendor\"\n");
    refused_deploy(
        &sb,
        &["--config", &config],
        2,
        &[&format!("{config}:2:11"), "deploy.exclude"],
        "exclude = [\"vendor\"]",
    );
}

#[test]
fn every_config_error_has_a_hint() {
    let sb = deployed();
    for (name, text) in [
        ("header.toml", "[deploy\nkeep_releases = 3\n"),
        ("five.toml", "[deploy]\nkeep_releases = \"five\"\n"),
        ("bool.toml", "[deploy]\nkeep_releases = true\n"),
    ] {
        let config = sb.config(name, text);
        refused_deploy(&sb, &["--config", &config], 2, &[&config], "");
    }
}

#[test]
fn missing_config_file_given_with_config_is_refused() {
    let sb = deployed();
    let missing = sb.path().join("nope.toml").display().to_string();
    refused_deploy(&sb, &["--config", &missing], 2, &[&missing], "cutover init");
}

#[test]
fn unsafe_release_ids_are_refused() {
    let sb = deployed();
    for id in ["../x", "a/b", "..", ".hidden", "a b"] {
        refused_deploy(&sb, &["--release", id], 2, &[id], "letters, digits");
    }
    assert!(!sb.path().join("x").exists());
}

#[test]
fn existing_release_id_is_refused() {
    let sb = Sandbox::new();
    sb.write("index.php", "1");
    sb.deploy_ids(&["r1"]);
    refused_deploy(&sb, &["--release", "r1"], 2, &["r1"], "another id");
}

#[test]
fn missing_source_is_refused() {
    let sb = deployed();
    let before = sb.state();
    let missing = sb.path().join("no-such-app").display().to_string();
    let out = sb.run(&["deploy", &missing, "--to", &sb.to()]);
    assert_refused(&out, 2, &[&missing], "cutover deploy");
    before.assert_same(&sb.state(), "deploy of a missing source");
}

#[test]
fn refused_first_deploy_does_not_create_the_deploy_path() {
    let sb = Sandbox::new();
    let missing = sb.path().join("no-such-app").display().to_string();
    let out = sb.run(&["deploy", &missing, "--to", &sb.to()]);
    assert_refused(&out, 2, &["does not exist"], "");
    assert!(
        !sb.deploy().exists(),
        "a refused first deploy created the deploy path"
    );

    sb.write("index.php", "1");
    std::os::unix::fs::symlink("/etc/passwd", sb.src().join("passwd")).unwrap();
    let out = sb.run_deploy(&[]);
    assert_refused(&out, 2, &["passwd"], "");
    assert!(
        !sb.deploy().exists(),
        "a refused first deploy created the deploy path"
    );
}

#[test]
fn deploy_without_source_or_settings_is_refused() {
    let sb = deployed();
    let before = sb.state();
    let out = sb.run(&["deploy", "--to", &sb.to()]);
    assert_refused(&out, 2, &["SOURCE"], "cutover deploy ./app");
    before.assert_same(&sb.state(), "deploy without SOURCE");
}

#[test]
fn source_symlink_pointing_outside_is_refused() {
    let sb = deployed();
    std::os::unix::fs::symlink("../../etc/passwd", sb.src().join("public/x")).unwrap();
    refused_deploy(&sb, &[], 2, &["public/x", "../../etc/passwd"], "[shared]");
}

#[test]
fn source_absolute_symlink_is_refused() {
    let sb = deployed();
    std::os::unix::fs::symlink("/etc/passwd", sb.src().join("lib/passwd")).unwrap();
    refused_deploy(&sb, &[], 2, &["lib/passwd", "/etc/passwd"], "relative");
}

#[test]
fn source_symlink_inside_the_source_is_kept() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.write("lib/a.php", "<?php // a");
    std::os::unix::fs::symlink("../lib/a.php", sb.src().join("public/a.php")).unwrap();
    let id = sb.deploy_src(&[]);
    let link = std::fs::read_link(sb.release_dir(&id).join("public/a.php")).unwrap();
    assert_eq!(link, std::path::Path::new("../lib/a.php"));
}

#[test]
fn deploy_path_without_permission_is_refused_and_unchanged() {
    let sb = deployed();
    let before = sb.state();
    let (src, to) = (sb.src_arg(), sb.to());
    let Some(out) = sb.run_as_nobody(&["deploy", &src, "--to", &to]) else {
        return;
    };
    assert_refused(&out, 1, &["Permission denied"], "cannot write there");
    before.assert_same(&sb.state(), "a deploy without permission");

    let out = sb.run_as_nobody(&["rollback", "--to", &to]).unwrap();
    assert_refused(&out, 1, &["Permission denied"], "cannot write there");
    before.assert_same(&sb.state(), "a rollback without permission");

    // A deploy path that does not exist yet, under a directory we cannot write to.
    let fresh = sb.path().join("fresh").display().to_string();
    let out = sb.run_as_nobody(&["deploy", &src, "--to", &fresh]).unwrap();
    assert_refused(&out, 1, &["Permission denied"], "cannot write there");
    assert!(!sb.path().join("fresh").exists());
}

#[test]
fn deploy_path_readable_by_other_users_can_be_listed_by_them() {
    let sb = deployed();
    let to = sb.to();
    let Some(out) = sb.run_as_nobody(&["releases", "--to", &to, "--json"]) else {
        return;
    };
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
}

#[test]
fn current_as_a_real_directory_is_refused_and_nothing_is_created() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 2;");
    write(&sb.deploy().join("current/index.php"), "<?php echo 1;");
    let before = sb.exact();
    let out = sb.run_deploy(&[]);
    assert_refused(&out, 1, &["current", "not a symlink"], "releases/<id>");
    before.assert_same(&sb.exact(), "deploy onto a real `current` directory");
}

#[test]
fn current_as_a_real_directory_in_a_cutover_path_is_refused() {
    let sb = deployed();
    let current = sb.deploy().join("current");
    std::fs::remove_file(&current).unwrap();
    write(&current.join("index.php"), "<?php echo 0;");
    refused_deploy(&sb, &[], 1, &["not a symlink"], "releases/<id>");
    assert!(current.join("index.php").is_file());
    let out = sb.run_to(&["switch", &sb.releases()[0]]);
    assert_refused(&out, 1, &["not a symlink"], "releases/<id>");
    assert!(current.join("index.php").is_file());
}

#[test]
fn missing_shared_file_is_refused() {
    let sb = deployed();
    let config = sb.config(
        "shared.toml",
        "[shared]\nfiles = [\".env\"]\ndirs = [\"storage\"]\n",
    );
    refused_deploy(&sb, &["--config", &config], 1, &["shared/.env"], "touch");
    assert!(!sb.deploy().join("shared/storage").exists());

    write(&sb.deploy().join("shared/.env"), "APP_KEY=x\n");
    let id = sb.deploy_src(&["--config", &config]);
    let env = sb.release_dir(&id).join(".env");
    assert!(std::fs::symlink_metadata(&env)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "APP_KEY=x\n");
    assert!(sb.release_dir(&id).join("storage").is_dir());
}

#[test]
fn deploy_path_inside_the_source_is_not_copied_into_itself() {
    let sb = Sandbox::new();
    sb.write("index.php", "1");
    let inner = sb.src().join("deploy").display().to_string();
    let out = sb.run(&["deploy", &sb.src_arg(), "--to", &inner, "--json"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    let id = json_documents(&out)[0]["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!sb
        .src()
        .join("deploy/releases")
        .join(&id)
        .join("deploy")
        .exists());
    let out = sb.run(&["deploy", &sb.src_arg(), "--to", &sb.src_arg()]);
    assert_refused(&out, 2, &["inside"], "outside the source");
}

// ---- the lock ----

const HOLDER: &str = r#"{"user":"alice","host":"web1","pid":4242,"command":"cutover deploy","since":"2026-01-01T00:00:00Z"}"#;

/// Holds the deploy lock the way another cutover would, until dropped.
fn hold_lock(sb: &Sandbox) -> std::fs::File {
    let path = sb.deploy().join(".cutover/lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    flock(&file, FlockOperation::NonBlockingLockExclusive).unwrap();
    file.set_len(0).unwrap();
    file.write_all(HOLDER.as_bytes()).unwrap();
    file
}

fn assert_names_holder(out: &std::process::Output) {
    let err = stderr(out);
    for needle in [
        "alice",
        "web1",
        "4242",
        "cutover deploy",
        "2026-01-01T00:00:00Z",
    ] {
        assert!(
            err.lines().next().unwrap_or("").contains(needle),
            "holder {needle} missing:\n{}",
            text(out)
        );
    }
}

#[test]
fn deploy_fails_at_once_naming_the_lock_holder() {
    let sb = deployed();
    let _lock = hold_lock(&sb);
    let before = sb.state();
    let started = Instant::now();
    let out = sb.run_deploy(&[]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not fail at once"
    );
    assert_refused(&out, 1, &["lock"], "--wait-lock");
    assert_names_holder(&out);
    before.assert_same(&sb.state(), "a deploy refused by the lock");
    assert_eq!(
        std::fs::read_to_string(sb.deploy().join(".cutover/lock")).unwrap(),
        HOLDER,
        "the loser must not overwrite who holds the lock"
    );
}

#[test]
fn switch_rollback_and_cleanup_also_respect_the_lock() {
    let sb = Sandbox::new();
    sb.write("index.php", "1");
    sb.deploy_ids(&["r1", "r2", "r3"]);
    let _lock = hold_lock(&sb);
    let before = sb.state();
    for command in [
        &["switch", "r1"][..],
        &["rollback"],
        &["cleanup", "--keep", "1"],
    ] {
        let out = sb.run_to(command);
        assert_eq!(exit_code(&out), 1, "{command:?}: {}", text(&out));
        assert_names_holder(&out);
        before.assert_same(&sb.state(), &format!("{command:?} refused by the lock"));
    }
}

#[test]
fn wait_lock_gives_up_after_the_timeout() {
    let sb = deployed();
    let _lock = hold_lock(&sb);
    let before = sb.state();
    let started = Instant::now();
    let out = sb.run_deploy(&["--wait-lock", "300ms"]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", text(&out));
    assert_names_holder(&out);
    before.assert_same(&sb.state(), "a deploy that gave up waiting");
}

#[test]
fn wait_lock_timeout_has_a_hint() {
    let sb = deployed();
    let _lock = hold_lock(&sb);
    let out = sb.run_deploy(&["--wait-lock", "300ms"]);
    assert_refused(&out, 1, &["alice"], "");
    assert!(!stderr(&out).contains("after 0 s"), "{}", text(&out));
}

#[test]
fn releasing_the_lock_lets_a_waiting_deploy_finish() {
    let sb = deployed();
    sb.write("public/index.php", "<?php echo 2;");
    let releases = sb.releases();
    let lock = hold_lock(&sb);
    let started = Instant::now();
    let mut child = sb
        .cutover()
        .args([
            "deploy",
            &sb.src_arg(),
            "--to",
            &sb.to(),
            "--wait-lock",
            "10s",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the deploy did not wait"
    );
    assert_eq!(
        sb.releases(),
        releases,
        "staged while another held the lock"
    );
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    assert!(started.elapsed() >= Duration::from_millis(600));
    let id = json_documents(&out)[0]["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sb.current(), Some(id));
    assert_eq!(
        std::fs::read_to_string(sb.deploy().join("current/public/index.php")).unwrap(),
        "<?php echo 2;"
    );
}

/// `--role` picks hosts of [hosts]; a role no host has, a selection that leaves no host,
/// or `--role` without [hosts] is refused before any host is contacted.
#[test]
fn role_selections_that_pick_no_host_are_refused() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    let hosts = sb.path().join("hosts");
    let config = sb.config(
        "roles.toml",
        &format!(
            "[hosts.a]\npath = {:?}\nroles = [\"db\"]\n\n[hosts.b]\npath = {:?}\nroles = [\"web\"]\n",
            hosts.join("a").display().to_string(),
            hosts.join("b").display().to_string()
        ),
    );
    let src = sb.src_arg();
    let run = |args: &[&str]| {
        let mut all = vec!["deploy", src.as_str(), "--config", config.as_str()];
        all.extend_from_slice(args);
        sb.run(&all)
    };
    assert_refused(
        &run(&["--role", "web", "--host", "a"]),
        2,
        &["--host", "--role"],
        "roles",
    );
    assert_refused(
        &run(&["--role", "search"]),
        2,
        &["role `search`"],
        "db, web",
    );
    assert!(!hosts.exists(), "no host was touched");
    let plain = sb.config("plain.toml", "");
    let out = sb.run(&[
        "deploy",
        &src,
        "--to",
        &sb.to(),
        "--config",
        &plain,
        "--role",
        "web",
    ]);
    assert_refused(&out, 2, &["--role"], "roles");
}
