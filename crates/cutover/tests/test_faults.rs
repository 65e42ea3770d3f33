//! Faults found by adversarial testing, each reproduced as it was reported: a symlink that
//! escapes through another link, arguments that are not UTF-8, a release a killed deploy
//! moved into `releases/` but never switched to, and hook processes that outlived cutover.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn a_link_through_an_in_tree_link_to_an_ancestor_is_refused() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.deploy_src(&[]);
    // `up` resolves to the source's root; nine more levels from there leave it.
    let deep = sb.src().join("public/a/b/c/d/e/f/g/h");
    std::fs::create_dir_all(&deep).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../..", deep.join("up")).unwrap();
    std::os::unix::fs::symlink(
        "public/a/b/c/d/e/f/g/h/up/../../../../../../../../..",
        sb.src().join("esc"),
    )
    .unwrap();
    let before = sb.state();
    let out = sb.run_deploy(&[]);
    assert_refused(&out, 2, &["esc"], "[shared]");
    before.assert_same(&sb.state(), "a refused deploy");
    // `up` alone stays inside (it is the root) and is deployed as it is.
    std::fs::remove_file(sb.src().join("esc")).unwrap();
    let id = sb.deploy_src(&[]);
    let up = sb.release_dir(&id).join("public/a/b/c/d/e/f/g/h/up");
    assert_eq!(
        std::fs::canonicalize(up).unwrap(),
        std::fs::canonicalize(sb.release_dir(&id)).unwrap()
    );
}

#[test]
fn arguments_that_are_not_utf8_are_handled_not_a_panic() {
    let sb = Sandbox::new();
    let src = sb.path().join(std::ffi::OsStr::from_bytes(b"src_\xff"));
    std::fs::create_dir_all(src.join("public")).unwrap();
    std::fs::write(src.join("public/index.php"), "<?php echo 1;").unwrap();
    let to = sb.path().join("dpu");
    let out = sb
        .cutover()
        .arg("deploy")
        .arg(&src)
        .arg("--to")
        .arg(&to)
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    assert!(to.join("current/public/index.php").is_file());

    let missing = sb.path().join(std::ffi::OsStr::from_bytes(b"dp_\xfe"));
    let out = sb
        .cutover()
        .arg("releases")
        .arg("--to")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", text(&out));
    assert!(!missing.exists());
}

/// Runs a deploy under strace that kills it at its first symlink(2): the staged release
/// is in `releases/` by then, and `current` is about to be switched.
fn deploy_killed_before_the_switch(sb: &Sandbox, id: &str) -> bool {
    let strace = Command::new("strace")
        .args([
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "inject=symlink,symlinkat:signal=SIGKILL",
        ])
        .arg(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "deploy",
            &sb.src_arg(),
            "--to",
            &sb.to(),
            "--release",
            id,
            "--keep",
            "100",
        ])
        .current_dir(sb.path())
        .output();
    match strace {
        Ok(out) => {
            assert!(
                !out.status.success(),
                "the deploy was not killed: {}",
                text(&out)
            );
            true
        }
        Err(_) => false,
    }
}

#[test]
fn a_release_a_killed_deploy_never_switched_to_is_never_chosen() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.deploy_ids(&["a", "b"]);
    sb.write("public/index.php", "<?php echo 2;");
    if !deploy_killed_before_the_switch(&sb, "c") {
        eprintln!("skipped: strace is not installed");
        return;
    }
    assert_eq!(sb.current().as_deref(), Some("b"));
    assert!(
        sb.release_dir("c").is_dir(),
        "the kill came after the rename"
    );
    // Not offered by `releases`, even before anything removed it.
    let listed = sb.json_to(&["releases"]);
    let ids: Vec<&str> = one_result(&listed)["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);

    sb.deploy_ids(&["d"]);
    assert!(!sb.release_dir("c").exists(), "the next deploy removed it");
    let back = sb.json_to(&["rollback"]);
    assert_eq!(back["release"], "b", "{back}");
    assert_eq!(sb.current().as_deref(), Some("b"));
}

#[test]
fn cleanup_reports_and_removes_a_release_never_switched_to() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.deploy_ids(&["a", "b"]);
    if !deploy_killed_before_the_switch(&sb, "c") {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let dry = sb.json_to(&["cleanup", "--dry-run"]);
    assert_eq!(
        one_host(&dry)["cleanup"]["debris"],
        serde_json::json!(["releases/c (never switched to)"]),
        "{dry}"
    );
    assert!(sb.release_dir("c").is_dir(), "a dry run removes nothing");
    let done = sb.json_to(&["cleanup"]);
    assert_eq!(
        one_host(&done)["cleanup"]["debris"],
        serde_json::json!(["releases/c (never switched to)"]),
        "{done}"
    );
    assert_eq!(sb.releases(), ["a", "b"]);
}

/// Processes whose command line mentions `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

/// A hook that starts a grandchild (a shell of its own, detached into the background):
/// killing cutover -9 leaves no process of it, and no file it would have written.
#[test]
fn killing_cutover_kills_the_whole_hook_and_its_grandchildren() {
    for signal in [rustix::process::Signal::KILL, rustix::process::Signal::TERM] {
        let sb = Sandbox::new();
        sb.write("public/index.php", "<?php echo 1;");
        let marker = format!("grandchild-{}", std::process::id());
        let started = sb.path().join("grandchild-started");
        let written = sb.path().join("written-by-grandchild");
        let hook = format!(
            "sh -c 'touch {}; sleep 30 # {marker}\ntouch {}' & wait",
            started.display(),
            written.display()
        );
        let config = sb.config(
            "hook.toml",
            &format!("[hooks]\nbefore_switch = [{hook:?}]\n"),
        );
        let mut child = sb
            .cutover()
            .args([
                "deploy",
                &sb.src_arg(),
                "--to",
                &sb.to(),
                "--config",
                &config,
                "-q",
            ])
            .spawn()
            .unwrap();
        wait_until("the grandchild to start", Duration::from_secs(20), || {
            started.exists()
        });
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        child.wait().unwrap();
        wait_until(
            "every process of the hook to be gone",
            Duration::from_secs(10),
            || processes_with(&marker).is_empty(),
        );
        assert!(
            !written.exists(),
            "{signal:?}: the hook went on after cutover died"
        );
        assert_eq!(sb.current(), None, "{signal:?}");
    }
}

/// When the hook itself ends, what it left running in the background ends too.
#[test]
fn a_hook_leaves_no_background_process_behind() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    let marker = format!("background-{}", std::process::id());
    let hook = format!("sh -c 'sleep 30 # {marker}' > /dev/null 2>&1 &");
    let config = sb.config(
        "hook.toml",
        &format!("[hooks]\nbefore_switch = [{hook:?}]\n"),
    );
    let out = sb.run_deploy(&["--config", &config, "-q"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    wait_until(
        "the background process to be gone",
        Duration::from_secs(10),
        || processes_with(&marker).is_empty(),
    );
    assert!(Path::new(&sb.deploy()).join("current").exists());
}

/// verify asks the URL once before it switches anything: an unreachable one is refused and
/// the live `current` never moves.
#[test]
fn verify_against_an_unreachable_url_switches_nothing() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.deploy_ids(&["a", "b"]);
    let before = sb.history().len();
    let out = sb.run_to(&[
        "verify",
        "--url",
        "http://127.0.0.1:9/index.php",
        "--between",
        "a,b",
        "--duration",
        "1s",
    ]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("cannot be reached"), "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("b"));
    assert_eq!(sb.history().len(), before, "no switch was recorded");
}

/// The smaller wrong promises of the adversarial pass, each refused with exit 2 and the
/// deploy path as it was.
#[test]
fn bad_settings_are_refused_before_anything_is_written() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.deploy_ids(&["a"]);
    let cases = [
        (
            "[shared]\ndirs = [\"storage\"]\n[deploy]\nrelease_file = \"storage/data.db\"\n",
            "inside the shared path",
        ),
        ("[deploy]\nrelease_file = \"public\"\n", "is a directory"),
    ];
    for (text_of, needle) in cases {
        let config = sb.config("bad.toml", text_of);
        let before = sb.state();
        let out = sb.run_deploy(&["--config", &config]);
        assert_eq!(exit_code(&out), 2, "{text_of}: {}", text(&out));
        assert!(stderr(&out).contains(needle), "{text_of}: {}", text(&out));
        before.assert_same(&sb.state(), text_of);
    }
}

#[test]
fn deploying_a_source_into_itself_creates_nothing_in_it() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    let before = Listing::of(&sb.src(), true);
    let out = sb.run(&["deploy", &sb.src_arg(), "--to", &sb.src_arg()]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    before.assert_same(
        &Listing::of(&sb.src(), true),
        "a refused deploy into its source",
    );
}

#[test]
fn a_file_where_the_layout_needs_a_directory_leaves_nothing_behind() {
    for blocker in ["shared", ".cutover"] {
        let sb = Sandbox::new();
        sb.write("public/index.php", "<?php echo 1;");
        std::fs::create_dir_all(sb.deploy()).unwrap();
        write(&sb.deploy().join(blocker), "a file");
        let before = Listing::of(&sb.deploy(), true);
        let out = sb.run_deploy(&[]);
        assert_eq!(exit_code(&out), 1, "{blocker}: {}", text(&out));
        before.assert_same(&Listing::of(&sb.deploy(), true), blocker);
    }
}

#[test]
fn a_release_that_is_a_symlink_out_of_releases_is_not_switched_to() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.deploy_ids(&["a"]);
    let outside = sb.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, sb.deploy().join("releases/evil")).unwrap();
    let out = sb.run_to(&["switch", "evil"]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("a"));
}

#[test]
fn a_sparse_file_stays_sparse() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    let sparse = std::fs::File::create(sb.src().join("data.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    {
        use std::os::unix::fs::FileExt;
        sparse.write_at(b"head", 0).unwrap();
        sparse.write_at(b"tail", (64 << 20) - 4).unwrap();
    }
    let id = sb.deploy_src(&[]);
    let copy = sb.release_dir(&id).join("data.img");
    let meta = std::fs::metadata(&copy).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.len(), 64 << 20);
    assert!(
        meta.blocks() * 512 < 8 << 20,
        "{} bytes on disk for a file of 4 bytes of data",
        meta.blocks() * 512
    );
    let bytes = std::fs::read(&copy).unwrap();
    assert_eq!(&bytes[..4], b"head");
    assert_eq!(&bytes[bytes.len() - 4..], b"tail");
    assert!(bytes[4..bytes.len() - 4].iter().all(|b| *b == 0));
}

/// A deploy that cannot create its release in `releases/` fails before anything names it:
/// no history event, no unfinished marker left, nothing listed.
#[test]
fn a_release_that_could_not_be_created_in_releases_leaves_nothing_behind() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.deploy_ids(&["a"]);
    // The deploy user (nobody) owns the deploy path, all but releases/.
    let chown = |path: &Path, uid: u32, recursive: bool| {
        let mut cmd = Command::new("chown");
        if recursive {
            cmd.arg("-R");
        }
        assert!(cmd
            .arg(format!("{uid}:{uid}"))
            .arg(path)
            .status()
            .unwrap()
            .success());
    };
    chown(&sb.deploy(), 65534, true);
    chown(&sb.deploy().join("releases"), 0, false);
    let to = sb.to();
    let Some(out) = sb.run_as_nobody(&["deploy", &sb.src_arg(), "--to", &to, "--release", "b"])
    else {
        return;
    };
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("Permission denied"), "{}", text(&out));
    let events: Vec<(String, String)> = sb
        .history()
        .iter()
        .filter(|e| e["release"] == "b")
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["release"].to_string(),
            )
        })
        .collect();
    // It never started: the history never names it, and nothing marks it unfinished.
    assert!(events.is_empty(), "{events:?}");
    assert!(unfinished_left(&sb.deploy()).is_empty());
    assert_eq!(sb.current().as_deref(), Some("a"));
    assert_eq!(sb.releases(), ["a"]);
}

/// A hook that hangs holds the deploy lock only until `[hooks] timeout`: then it is killed
/// with everything it started, and the deploy fails naming the hook and the limit.
#[test]
fn a_hook_past_its_timeout_is_killed_and_the_deploy_changes_nothing() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.deploy_ids(&["a"]);
    let marker = format!("hung-{}", std::process::id());
    let hook = format!("sh -c 'sleep 60 # {marker}' & wait");
    let config = sb.config(
        "hook.toml",
        &format!("[hooks]\ntimeout = \"1s\"\nbefore_switch = [{hook:?}]\n"),
    );
    let before = sb.state();
    let started = Instant::now();
    let out = sb.run_deploy(&["--config", &config]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let err = stderr(&out);
    assert!(err.contains("did not finish within 1s"), "{err}");
    assert!(err.contains(&marker), "the hook is named: {err}");
    assert!(err.contains("[hooks] timeout"), "{err}");
    assert!(
        processes_with(&marker).is_empty(),
        "the hook's group was killed"
    );
    before.assert_same(&sb.state(), "a deploy whose hook timed out");

    let bad = sb.config("bad.toml", "[hooks]\ntimeout = \"soon\"\n");
    let out = sb.run_deploy(&["--config", &bad]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("bad.toml:2"), "{}", text(&out));
}
