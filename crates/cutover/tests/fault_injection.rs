//! Fault injection, the way storage engines test their I/O paths: for deploy, switch,
//! rollback and cleanup, the N-th call of each mutating syscall fails with ENOSPC, then
//! with EIO, then the process is killed at it, for every N until the command runs through
//! without meeting it (strace's `-e inject=SYSCALL:…:when=N`, counted per syscall and per
//! thread). After every run: `current` names a complete release (its `RELEASE` matches
//! its name and its files are exactly that version's), the deploy path is as before or as
//! after, `releases` lists only complete releases, the next deploy works, and `cleanup`
//! leaves no debris.
//!
//! A test binary of its own: cargo runs test binaries one after another, so these
//! strace-heavy runs do not share the cores with the runner's timing-bound tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::*;

/// The mutating syscalls cutover makes (glibc on x86_64 and aarch64 reaches the `*at`
/// forms; the plain ones are listed for other libcs).
const SYSCALLS: [&str; 13] = [
    "openat",
    "mkdirat",
    "linkat",
    "symlinkat",
    "renameat",
    "renameat2",
    "unlinkat",
    "write",
    "pwrite64",
    "fsync",
    "fdatasync",
    "syncfs",
    "copy_file_range",
];

/// Injections per syscall and mode, at most; far above what the fixture needs.
const MAX_N: u32 = 1500;
/// The whole suite for one command stops here, whatever is left.
const TIME_CAP: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug)]
enum Fault {
    Enospc,
    Eio,
    Kill,
}

impl Fault {
    fn inject(self, syscall: &str, n: u32) -> String {
        match self {
            Fault::Enospc => format!("inject={syscall}:error=ENOSPC:when={n}"),
            Fault::Eio => format!("inject={syscall}:error=EIO:when={n}"),
            Fault::Kill => format!("inject={syscall}:signal=SIGKILL:when={n}"),
        }
    }
}

/// Three versions of a small app, each `file → content`; `RELEASE` is cutover's.
fn version(v: u32) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for dir in 0..5 {
        for file in 0..8 {
            // Each version changes a few files and adds one.
            let changed = v > 1 && file == (v as usize % 8);
            let body = if changed {
                format!("<?php // v{v} {dir}/{file}\n")
            } else {
                format!("<?php // {dir}/{file}\n")
            };
            files.insert(format!("lib/d{dir}/f{file}.php"), body);
        }
    }
    files.insert(format!("public/v{v}.css"), format!("/* v{v} */\n"));
    files.insert("public/index.php".into(), format!("<?php echo 'v{v}';\n"));
    files
}

fn write_source(dir: &Path, files: &BTreeMap<String, String>) {
    let _ = std::fs::remove_dir_all(dir);
    for (rel, body) in files {
        write(&dir.join(rel), body);
    }
}

/// The files of a release, `RELEASE` left out.
fn release_files(dir: &Path) -> Option<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).ok()? {
            let path = entry.ok()?.path();
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if meta.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(dir).ok()?.display().to_string();
                if rel != "RELEASE" {
                    files.insert(rel, std::fs::read_to_string(&path).ok()?);
                }
            }
        }
    }
    Some(files)
}

struct Suite {
    sb: Sandbox,
    /// Release id → the version it holds.
    versions: BTreeMap<&'static str, BTreeMap<String, String>>,
    template: PathBuf,
    started: Instant,
}

impl Suite {
    /// A deploy path holding releases `ids` (versions 1, 2, …), the last current.
    fn new(ids: &[&'static str]) -> Suite {
        let sb = Sandbox::new();
        let mut versions = BTreeMap::new();
        let template = sb.path().join("template");
        for (i, id) in ids.iter().chain(["next", "z"].iter()).enumerate() {
            versions.insert(*id, version(i as u32 + 1));
        }
        for id in ids {
            write_source(&sb.src(), &versions[id]);
            let out = sb.run(&[
                "deploy",
                &sb.src_arg(),
                "--to",
                template.to_str().unwrap(),
                "--release",
                id,
                "--keep",
                "100",
            ]);
            assert_eq!(exit_code(&out), 0, "{}", text(&out));
        }
        Suite {
            sb,
            versions,
            template,
            started: Instant::now(),
        }
    }

    fn fresh_copy(&self) -> PathBuf {
        let dir = self.sb.path().join("run");
        let _ = std::fs::remove_dir_all(&dir);
        let ok = Command::new("cp")
            .args(["-a", self.template.to_str().unwrap(), dir.to_str().unwrap()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "cp -a of the template");
        dir
    }

    fn cutover(&self, args: &[&str], to: &Path) -> Output {
        self.sb
            .cutover()
            .args(args)
            .arg("--to")
            .arg(to)
            .output()
            .unwrap()
    }

    /// The release `id` in `path` is exactly its version.
    fn complete(&self, path: &Path, id: &str) -> bool {
        let dir = path.join("releases").join(id);
        let release = std::fs::read_to_string(dir.join("RELEASE")).unwrap_or_default();
        release.trim() == id
            && self
                .versions
                .get(id)
                .is_some_and(|v| release_files(&dir).as_ref() == Some(v))
    }

    fn current(path: &Path) -> Option<String> {
        let link = std::fs::read_link(path.join("current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// Every invariant, after a command that met a fault; `allowed` are the releases
    /// `current` may name (before or after).
    fn check(&self, path: &Path, allowed: &[&str], what: &str) {
        let current = Suite::current(path);
        let current = current.as_deref().unwrap_or("(none)");
        assert!(
            allowed.contains(&current),
            "{what}: current is {current}, not one of {allowed:?}"
        );
        assert!(
            self.complete(path, current),
            "{what}: current {current} is not complete"
        );
        let listed = self.cutover(&["releases", "--json"], path);
        assert_eq!(exit_code(&listed), 0, "{what}: releases: {}", text(&listed));
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        for row in one_result(&listed)["releases"].as_array().unwrap() {
            let id = row["id"].as_str().unwrap();
            assert!(
                self.complete(path, id),
                "{what}: `releases` lists {id}, which is not complete"
            );
        }
        // The next deploy works, and cleanup leaves nothing but complete releases.
        write_source(&self.sb.src(), &self.versions["z"]);
        let next = self.cutover(
            &[
                "deploy",
                &self.sb.src_arg(),
                "--release",
                "z",
                "--keep",
                "100",
            ],
            path,
        );
        assert_eq!(
            exit_code(&next),
            0,
            "{what}: the next deploy: {}",
            text(&next)
        );
        assert_eq!(Suite::current(path).as_deref(), Some("z"), "{what}");
        assert!(
            self.complete(path, "z"),
            "{what}: the next deploy is incomplete"
        );
        let cleanup = self.cutover(&["cleanup", "--keep", "100"], path);
        assert_eq!(
            exit_code(&cleanup),
            0,
            "{what}: cleanup: {}",
            text(&cleanup)
        );
        let state = path.join(".cutover");
        for entry in std::fs::read_dir(&state).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with("staging-")
                    && !name.starts_with("unfinished-")
                    && !name.ends_with(".tmp"),
                "{what}: debris after cleanup: {name}"
            );
        }
        let trash = std::fs::read_dir(state.join("trash"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(trash, 0, "{what}: the trash is not empty after cleanup");
        for entry in std::fs::read_dir(path.join("releases")).unwrap().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            assert!(
                self.complete(path, &id),
                "{what}: releases/{id} is not complete after cleanup"
            );
        }
    }

    /// Runs `args` under every fault at every N; returns the number of faults injected.
    fn run(&self, args: &[&str], allowed: &[&str], source: Option<&str>) -> u32 {
        let mut injected = 0;
        for syscall in SYSCALLS {
            for fault in [Fault::Enospc, Fault::Eio, Fault::Kill] {
                for n in 1..=MAX_N {
                    assert!(
                        self.started.elapsed() < TIME_CAP,
                        "the suite ran out of time"
                    );
                    if let Some(id) = source {
                        write_source(&self.sb.src(), &self.versions[id]);
                    }
                    let path = self.fresh_copy();
                    let log = self.sb.path().join("strace.log");
                    let out = Command::new("strace")
                        .args(["-f", "-qq", "-o"])
                        .arg(&log)
                        .args([
                            "-e",
                            &format!("trace={syscall}"),
                            "-e",
                            &fault.inject(syscall, n),
                        ])
                        .arg(env!("CARGO_BIN_EXE_cutover"))
                        .args(args)
                        .arg("--to")
                        .arg(&path)
                        .current_dir(self.sb.path())
                        .output()
                        .unwrap();
                    let hit = std::fs::read_to_string(&log)
                        .is_ok_and(|l| l.contains("INJECTED") || l.contains("killed by SIGKILL"));
                    if !hit {
                        assert_eq!(exit_code(&out), 0, "{args:?} with no fault: {}", text(&out));
                        break;
                    }
                    injected += 1;
                    let what = format!("{args:?} with {fault:?} at {syscall} #{n}");
                    let code = out.status.code();
                    assert!(
                        matches!(code, Some(0..=2) | None),
                        "{what}: exit {code:?} (a panic?): {}",
                        text(&out)
                    );
                    self.check(&path, allowed, &what);
                }
            }
        }
        injected
    }
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn deploy_under_every_injected_fault() {
    if !strace_available() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let suite = Suite::new(&["a"]);
    let src = suite.sb.src_arg();
    let args = ["deploy", src.as_str(), "--release", "next", "--keep", "100"];
    let n = suite.run(&args, &["a", "next"], Some("next"));
    eprintln!("fault injection: deploy survived {n} injected faults");
    assert!(
        n > 100,
        "too few faults were injected to mean anything: {n}"
    );
}

#[test]
fn switch_and_rollback_under_every_injected_fault() {
    if !strace_available() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let suite = Suite::new(&["a", "b"]);
    let n = suite.run(&["switch", "a"], &["a", "b"], None);
    eprintln!("fault injection: switch survived {n} injected faults");
    assert!(n > 20, "too few faults were injected: {n}");
    let n = suite.run(&["rollback"], &["a", "b"], None);
    eprintln!("fault injection: rollback survived {n} injected faults");
    assert!(n > 20, "too few faults were injected: {n}");
}

#[test]
fn cleanup_under_every_injected_fault() {
    if !strace_available() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let suite = Suite::new(&["a", "b", "c"]);
    // What a killed deploy leaves: a release marked unfinished (and, from versions that
    // staged elsewhere, a staging directory).
    write(&suite.template.join("releases/dead/index.php"), "half");
    write(&suite.template.join(".cutover/unfinished-dead"), "");
    write(
        &suite.template.join(".cutover/staging-old/index.php"),
        "half",
    );
    let n = suite.run(&["cleanup", "--keep", "1"], &["c"], None);
    eprintln!("fault injection: cleanup survived {n} injected faults");
    assert!(n > 20, "too few faults were injected: {n}");
}
