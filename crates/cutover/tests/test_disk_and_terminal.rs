//! A really full disk (a small tmpfs, not a mock) and progress on a real pseudo-terminal.

use std::process::Command;

use crate::common::*;

/// Mounts a tmpfs of `size` at `dir`; `None` when this process may not mount (not root,
/// or no CAP_SYS_ADMIN in a container). Unmounted on drop.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "cutover-test",
                dir.to_str()?,
            ])
            .status()
            .ok()?;
        status.success().then(|| SmallDisk {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_fails_the_deploy_and_leaves_current_alone() {
    let sb = Sandbox::new();
    let Some(_disk) = SmallDisk::mount(&sb.deploy(), "2m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    sb.write("public/index.php", "<?php echo 1;");
    let first = sb.deploy_src(&[]);

    // 3 MiB of new content cannot fit on a 2 MiB disk.
    let chunk = "x".repeat(64 * 1024);
    for i in 0..48 {
        sb.write(&format!("assets/blob{i}.bin"), &chunk);
    }
    let out = sb.run(&[
        "deploy",
        sb.src().to_str().unwrap(),
        "--to",
        sb.deploy().to_str().unwrap(),
    ]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("hint: the disk is full"), "{err}");
    assert_eq!(sb.current().as_deref(), Some(first.as_str()));
    assert_eq!(sb.releases(), vec![first.clone()]);
    let left = unfinished_left(&sb.deploy());
    assert!(left.is_empty(), "unfinished release left behind: {left:?}");

    // Once the content fits again, deploying works.
    for i in 0..48 {
        std::fs::remove_file(sb.src().join(format!("assets/blob{i}.bin"))).unwrap();
    }
    let second = sb.deploy_src(&[]);
    assert_eq!(sb.current().as_deref(), Some(second.as_str()));
}

#[test]
fn staging_shows_progress_on_a_terminal_only() {
    let sb = Sandbox::new();
    for i in 0..3000 {
        sb.write(
            &format!("vendor/pkg{}/src/File{i}.php", i % 30),
            "<?php // file",
        );
    }
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    let command = format!(
        "{} deploy {} --to {}",
        env!("CARGO_BIN_EXE_cutover"),
        sb.src().display(),
        sb.deploy().display()
    );
    // `script` gives the command a pseudo-terminal and copies what it printed to stdout.
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(sb.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("staging"),
        "no progress on a terminal:\n{shown}"
    );
    assert!(shown.contains("Deployed release"), "{shown}");

    // The same deploy without a terminal prints the summary only.
    sb.write("vendor/pkg0/src/File0.php", "<?php // changed");
    let out = sb.ok(&[
        "deploy",
        sb.src().to_str().unwrap(),
        "--to",
        sb.deploy().to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(
        !err.contains("staging") && !err.contains('\u{1b}'),
        "progress without a terminal: {err:?}"
    );
}

/// Sets or clears the immutable attribute; false when the file system or we cannot.
fn immutable(path: &std::path::Path, on: bool) -> bool {
    let flag = if on { "+i" } else { "-i" };
    Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_failure_after_the_switch_is_a_warning_not_a_failed_deploy() {
    let sb = Sandbox::new();
    sb.write("index.php", "1");
    let oldest = sb.deploy_src(&[]);
    sb.write("index.php", "2");
    sb.deploy_src(&[]);
    let pinned = sb.deploy().join("releases").join(&oldest);
    // rename(2) of an immutable directory fails: cleanup cannot move it to the trash.
    if !immutable(&pinned, true) {
        eprintln!("skipped: chattr +i is not available here");
        return;
    }
    sb.write("index.php", "3");
    let out = sb.run(&[
        "deploy",
        sb.src().to_str().unwrap(),
        "--to",
        sb.deploy().to_str().unwrap(),
        "--keep",
        "1",
        "--json",
    ]);
    immutable(&pinned, false);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let release = report["release"].as_str().unwrap();
    assert_eq!(sb.current().as_deref(), Some(release), "the switch stands");
    let warnings = one_host(&report)["warnings"]
        .as_array()
        .expect("warnings in the JSON");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("old releases were not removed"),
        "{report}"
    );
    assert!(stderr(&out).contains("warning: deployed, but old releases were not removed"));
    assert!(sb.releases().contains(&oldest));
}

/// A hook must not outlive a killed deploy: it would go on writing into a staging
/// directory the next deploy removes.
#[test]
fn a_hook_dies_with_the_deploy() {
    let sb = Sandbox::new();
    sb.write("index.php", "1");
    let marker = sb.path().join("hook-finished");
    let config = sb.path().join("hook.toml");
    write(
        &config,
        &format!(
            "[hooks]\nbefore_switch = [\"sleep 2; touch {}\"]\n",
            marker.display()
        ),
    );
    let mut child = sb
        .cutover()
        .args([
            "deploy",
            sb.src().to_str().unwrap(),
            "--to",
            sb.deploy().to_str().unwrap(),
        ])
        .args(["--config", config.to_str().unwrap(), "--quiet"])
        .spawn()
        .unwrap();
    // Kill once the hook is running (its release was started), within a bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let staging = || !unfinished_left(&sb.deploy()).is_empty();
    while !staging() {
        assert!(
            std::time::Instant::now() < deadline,
            "the deploy never started staging"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(
        !marker.exists(),
        "the hook went on running after cutover was killed"
    );
    assert_eq!(sb.current(), None);
}
