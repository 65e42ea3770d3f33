//! `[build] run` and `[hooks] before_switch`: where they run, what they see, what a failing
//! one leaves behind, and that no command can reach a file of an earlier release.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

fn small_app(sb: &Sandbox) {
    sb.write(
        "public/index.php",
        "<?php require __DIR__.'/../lib/config.php';\n",
    );
    sb.write("lib/config.php", "<?php return ['debug' => false];\n");
    sb.write("lib/other.php", "<?php // untouched by hooks\n");
}

/// Runs a deploy that must fail, and checks that the deploy path is exactly as before.
fn assert_failed_deploy_changed_nothing(sb: &Sandbox, config: &str) -> String {
    let before = sb.state();
    let current = sb.current();
    let out = sb.run_deploy(&["--config", config]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert_eq!(sb.current(), current, "current must be untouched");
    assert_eq!(
        unfinished_left(&sb.deploy()),
        Vec::<String>::new(),
        "staging left behind"
    );
    before.assert_same(&sb.state(), "a failed deploy");
    stderr(&out)
}

#[test]
fn failing_build_command_stops_the_deploy_and_reports_status_and_output() {
    let sb = Sandbox::new();
    small_app(&sb);
    sb.deploy_src(&[]);
    let config = sb.config(
        "build.toml",
        "[build]\nrun = [\"echo building; echo 'to stderr' >&2; exit 7\"]\n",
    );
    let err = assert_failed_deploy_changed_nothing(&sb, &config);
    assert!(err.contains("error: build command"), "{err}");
    assert!(err.contains("exited with status 7"), "{err}");
    let tail = err.split("last lines of its output").nth(1).unwrap_or("");
    assert!(
        tail.contains("building") && tail.contains("to stderr"),
        "the tail of the output (stdout and stderr) belongs in the error:\n{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("hint: ")),
        "no hint:\n{err}"
    );
}

#[test]
fn failing_first_deploy_leaves_no_release_and_no_current() {
    let sb = Sandbox::new();
    small_app(&sb);
    let config = sb.config("build.toml", "[build]\nrun = [\"exit 1\"]\n");
    let out = sb.run_deploy(&["--config", &config]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert_eq!(sb.current(), None);
    assert!(!sb.deploy().join("current").exists());
    assert_eq!(sb.releases(), Vec::<String>::new());
    assert_eq!(unfinished_left(&sb.deploy()), Vec::<String>::new());
}

#[test]
fn failing_before_switch_hook_stops_the_deploy() {
    let sb = Sandbox::new();
    small_app(&sb);
    sb.deploy_src(&[]);
    let config = sb.config(
        "hook.toml",
        "[hooks]\nbefore_switch = [\"true\", \"for i in 1 2 3; do echo hook line $i; done; exit 3\"]\n",
    );
    let err = assert_failed_deploy_changed_nothing(&sb, &config);
    assert!(err.contains("error: before_switch command"), "{err}");
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(err.contains("hook line 3"), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("hint: ")),
        "no hint:\n{err}"
    );
}

#[test]
fn build_runs_on_a_copy_never_in_the_source_tree() {
    let sb = Sandbox::new();
    small_app(&sb);
    let config = sb.config(
        "build.toml",
        "[build]\nrun = [\"echo built > built.txt\", \"printf ' // built' >> lib/other.php\", \"pwd > build-dir.txt\"]\n",
    );
    let id = sb.deploy_src(&["--config", &config]);
    assert!(
        !sb.src().join("built.txt").exists(),
        "a build command wrote into the user's source tree"
    );
    assert!(!sb.src().join("build-dir.txt").exists());
    assert_eq!(
        std::fs::read_to_string(sb.src().join("lib/other.php")).unwrap(),
        "<?php // untouched by hooks\n",
        "a build command modified the user's source tree"
    );
    let release = sb.release_dir(&id);
    assert_eq!(
        std::fs::read_to_string(release.join("built.txt")).unwrap(),
        "built\n"
    );
    assert_eq!(
        std::fs::read_to_string(release.join("lib/other.php")).unwrap(),
        "<?php // untouched by hooks\n // built"
    );
    let build_dir = std::fs::read_to_string(release.join("build-dir.txt")).unwrap();
    let src_real = std::fs::canonicalize(sb.src()).unwrap();
    assert!(
        !build_dir.trim().starts_with(src_real.to_str().unwrap()),
        "build ran in the source: {build_dir}"
    );
}

#[test]
fn before_switch_sees_the_release_environment_and_release_file() {
    let sb = Sandbox::new();
    small_app(&sb);
    let config = sb.config(
        "hook.toml",
        r#"[hooks]
before_switch = [
  'printf "%s\n%s\n%s\n" "$CUTOVER_RELEASE" "$CUTOVER_RELEASE_PATH" "$CUTOVER_DEPLOY_PATH" > hook-env.txt',
  'cat RELEASE > hook-saw-release.txt',
  'test -e ../../current || echo none > hook-saw-no-current.txt',
]
"#,
    );
    let id = sb.deploy_src(&["--release", "h1", "--config", &config]);
    let release = sb.release_dir(&id);
    let env = std::fs::read_to_string(release.join("hook-env.txt")).unwrap();
    let expected = format!("h1\n{}\n{}\n", release.display(), sb.deploy().display());
    assert_eq!(
        env, expected,
        "CUTOVER_RELEASE, _RELEASE_PATH, _DEPLOY_PATH"
    );
    assert_eq!(
        std::fs::read_to_string(release.join("hook-saw-release.txt")).unwrap(),
        "h1\n",
        "the release file is written before before_switch runs"
    );
    assert!(
        release.join("hook-saw-no-current.txt").exists(),
        "before_switch runs before the first `current` exists"
    );
    assert_eq!(sb.current().as_deref(), Some("h1"));
}

#[test]
fn hooks_see_the_host_and_the_previous_release() {
    let sb = Sandbox::new();
    small_app(&sb);
    let config = sb.config(
        "hook.toml",
        "[hooks]\nbefore_switch = ['echo \"$CUTOVER_HOST/$CUTOVER_PREVIOUS_RELEASE\" > seen.txt']\n",
    );
    let first = sb.deploy_src(&["--release", "h1", "--config", &config]);
    let second = sb.deploy_src(&["--release", "h2", "--config", &config]);
    let seen = |id: &str| std::fs::read_to_string(sb.release_dir(id).join("seen.txt")).unwrap();
    assert_eq!(
        seen(&first),
        "local/\n",
        "no previous release on a first deploy"
    );
    assert_eq!(seen(&second), "local/h1\n");
}

/// A command rewriting a file in place that is unchanged since the previous release (a
/// hard-link candidate) must change only the new release.
fn in_place_rewrite_keeps_previous_release_intact(table: &str, key: &str) {
    let sb = Sandbox::new();
    small_app(&sb);
    sb.write("lib/mode.php", "<?php // mode\n");
    let perms = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(sb.src().join("lib/mode.php"), perms).unwrap();
    let r1 = sb.deploy_src(&["--release", "r1"]);
    let config = sb.config(
        "cmd.toml",
        &format!(
            "[{table}]\n{key} = [\"printf changed >> lib/config.php\", \"chmod 0600 lib/mode.php\"]\n"
        ),
    );
    let r2 = sb.deploy_src(&["--release", "r2", "--config", &config]);
    let (old, new) = (sb.release_dir(&r1), sb.release_dir(&r2));
    assert_eq!(
        std::fs::read_to_string(old.join("lib/config.php")).unwrap(),
        "<?php return ['debug' => false];\n",
        "{table}.{key} rewrote a file of the previous release"
    );
    assert_eq!(
        std::fs::read_to_string(new.join("lib/config.php")).unwrap(),
        "<?php return ['debug' => false];\nchanged"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&old.join("lib/mode.php")),
        0o644,
        "{table}.{key} changed the mode of a previous release's file"
    );
    assert_eq!(mode(&new.join("lib/mode.php")), 0o600);
    assert_ne!(
        ino(&old.join("lib/config.php")),
        ino(&new.join("lib/config.php"))
    );
    for untouched in ["lib/other.php", "public/index.php"] {
        assert_eq!(
            ino(&old.join(untouched)),
            ino(&new.join(untouched)),
            "{untouched}, not touched by {table}.{key}, must still be a hard link to r1"
        );
    }
    assert_eq!(
        std::fs::read_to_string(sb.src().join("lib/config.php")).unwrap(),
        "<?php return ['debug' => false];\n"
    );
}

#[test]
fn before_switch_rewriting_a_file_in_place_leaves_the_previous_release_intact() {
    in_place_rewrite_keeps_previous_release_intact("hooks", "before_switch");
}

#[test]
fn build_rewriting_a_file_in_place_leaves_the_previous_release_intact() {
    in_place_rewrite_keeps_previous_release_intact("build", "run");
}
