//! Helpers for driving the real binary against temporary deploy paths.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory holding an app source (`src/`) and a deploy path (`deploy/`).
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("cutover-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn src(&self) -> PathBuf {
        self.path().join("src")
    }

    pub fn deploy(&self) -> PathBuf {
        self.path().join("deploy")
    }

    /// Writes a file under the source, creating parent directories.
    pub fn write(&self, rel: &str, text: &str) {
        write(&self.src().join(rel), text);
    }

    /// A `cutover` command with cwd = the sandbox (so no stray cutover.toml is read) and a
    /// clean CUTOVER_* environment.
    pub fn cutover(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
        cmd.current_dir(self.path());
        for (key, _) in std::env::vars() {
            if key.starts_with("CUTOVER_") {
                cmd.env_remove(key);
            }
        }
        // Recorded as who deployed: the tests run in CI too.
        for var in [
            "GITHUB_ACTOR",
            "GITLAB_USER_LOGIN",
            "BUILDKITE_BUILD_CREATOR",
            "CIRCLE_USERNAME",
            "BITBUCKET_STEP_TRIGGERER_UUID",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs cutover with args; returns the output whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cutover().args(args).output().unwrap()
    }

    /// Runs cutover and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cutover {args:?} failed:\n{}",
            text(&out)
        );
        out
    }

    /// Runs cutover with --json appended, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.ok(&args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout of {args:?} is not JSON ({e}):\n{}", text(&out)))
    }

    /// `cutover deploy src --to deploy [extra…] --json`, returning the new release id.
    pub fn deploy_src(&self, extra: &[&str]) -> String {
        let src = self.src();
        let deploy = self.deploy();
        let mut args = vec![
            "deploy",
            src.to_str().unwrap(),
            "--to",
            deploy.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.json(&args)["release"].as_str().unwrap().to_string()
    }

    /// The release `current` points to, read from the link itself.
    pub fn current(&self) -> Option<String> {
        let target = std::fs::read_link(self.deploy().join("current")).ok()?;
        Some(target.file_name()?.to_str()?.to_string())
    }

    pub fn releases(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.deploy().join("releases"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one host of a command run against a deploy path (`--to`): its entry in `hosts`.
pub fn one_host(doc: &serde_json::Value) -> &serde_json::Value {
    let hosts = doc["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no hosts: {doc}"));
    assert_eq!(hosts.len(), 1, "one host expected: {doc}");
    &hosts[0]
}

/// What a read-only command (releases, php) answered on its one host.
pub fn one_result(doc: &serde_json::Value) -> &serde_json::Value {
    &one_host(doc)["result"]
}

/// Polls `done` until it holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub fn exit_code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

// ---- Helpers for the CLI behaviour tests (test_cli*.rs) ----

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

impl Sandbox {
    /// The deploy path as a string, for `--to`.
    pub fn to(&self) -> String {
        self.deploy().display().to_string()
    }

    /// The source as a string, for the SOURCE argument.
    pub fn src_arg(&self) -> String {
        self.src().display().to_string()
    }

    /// `deploy/releases/<id>`.
    pub fn release_dir(&self, id: &str) -> PathBuf {
        self.deploy().join("releases").join(id)
    }

    /// Writes a settings file at the sandbox root and returns its path. Never name it
    /// `cutover.toml`: the sandbox is the cwd, where that name is read without --config.
    pub fn config(&self, name: &str, text: &str) -> String {
        assert_ne!(
            name, "cutover.toml",
            "pass settings explicitly with --config"
        );
        let path = self.path().join(name);
        write(&path, text);
        path.display().to_string()
    }

    /// `cutover deploy <src> --to <deploy> extra…`, whatever the outcome.
    pub fn run_deploy(&self, extra: &[&str]) -> Output {
        let (src, to) = (self.src_arg(), self.to());
        let mut args = vec!["deploy", src.as_str(), "--to", to.as_str()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `cutover <command> [args…] --to <deploy>`, whatever the outcome.
    pub fn run_to(&self, command: &[&str]) -> Output {
        let to = self.to();
        let mut args = command.to_vec();
        args.extend_from_slice(&["--to", to.as_str()]);
        self.run(&args)
    }

    /// `cutover <command> [args…] --to <deploy> --json`, asserting success; parsed stdout.
    pub fn json_to(&self, command: &[&str]) -> serde_json::Value {
        let to = self.to();
        let mut args = command.to_vec();
        args.extend_from_slice(&["--to", to.as_str()]);
        self.json(&args)
    }

    /// Deploys releases with the given ids (and `--keep 100`, so none is cleaned up yet).
    pub fn deploy_ids(&self, ids: &[&str]) {
        for id in ids {
            assert_eq!(self.deploy_src(&["--release", id, "--keep", "100"]), *id);
        }
    }

    /// The events of `.cutover/history.jsonl`, each line parsed (and asserted to parse).
    pub fn history(&self) -> Vec<serde_json::Value> {
        let path = self.deploy().join(".cutover/history.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("history line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// What the deploy path holds, for "nothing changed" checks. Ignores what a refused
    /// command may legitimately touch: the lock file's holder text and an empty trash dir.
    pub fn state(&self) -> Listing {
        Listing::of(&self.deploy(), false)
    }

    /// Everything under the deploy path, byte for byte, lock holder included: for dry runs.
    pub fn exact(&self) -> Listing {
        Listing::of(&self.deploy(), true)
    }

    /// Runs the binary as `nobody` (uid/gid 65534) with the sandbox made traversable for
    /// it; `None` when neither setpriv nor runuser is installed.
    pub fn run_as_nobody(&self, args: &[&str]) -> Option<Output> {
        let bin = env!("CARGO_BIN_EXE_cutover");
        let has = |tool: &str| {
            Command::new(tool)
                .arg("--help")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let mut cmd = if has("setpriv") {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                bin,
            ]);
            cmd
        } else if has("runuser") {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "nobody", "--", bin]);
            cmd
        } else {
            eprintln!("SKIPPED: neither setpriv nor runuser (util-linux) is installed");
            return None;
        };
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.current_dir(self.path());
        for (key, _) in std::env::vars() {
            if key.starts_with("CUTOVER_") {
                cmd.env_remove(key);
            }
        }
        Some(cmd.args(args).output().unwrap())
    }
}

/// Every entry under a directory: relative path → type, mode, inode and content (files),
/// or link text (symlinks). Small trees only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing(pub BTreeMap<String, String>);

impl Listing {
    pub fn of(root: &Path, exact: bool) -> Listing {
        let mut entries = BTreeMap::new();
        if std::fs::symlink_metadata(root).is_err() {
            entries.insert(".".to_string(), "missing".to_string());
            return Listing(entries);
        }
        fn visit(root: &Path, dir: &Path, exact: bool, out: &mut BTreeMap<String, String>) {
            let mut children: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            for path in children {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let mode = meta.mode() & 0o7777;
                let what = if meta.file_type().is_symlink() {
                    format!("link -> {}", std::fs::read_link(&path).unwrap().display())
                } else if meta.is_dir() {
                    if !exact
                        && rel == ".cutover/trash"
                        && std::fs::read_dir(&path).unwrap().next().is_none()
                    {
                        continue;
                    }
                    visit(root, &path, exact, out);
                    format!("dir {mode:o}")
                } else if !exact && rel == ".cutover/lock" {
                    "lock".to_string()
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    format!(
                        "file {mode:o} ino {} {:?}",
                        meta.ino(),
                        String::from_utf8_lossy(&bytes)
                    )
                };
                out.insert(rel, what);
            }
        }
        visit(root, root, exact, &mut entries);
        Listing(entries)
    }

    /// Panics with the entries that differ.
    pub fn assert_same(&self, after: &Listing, what: &str) {
        let mut diff = Vec::new();
        let keys: BTreeSet<&String> = self.0.keys().chain(after.0.keys()).collect();
        for key in keys {
            let (b, a) = (self.0.get(key), after.0.get(key));
            if b != a {
                diff.push(format!("  {key}: before {b:?}, after {a:?}"));
            }
        }
        assert!(
            diff.is_empty(),
            "{what} changed the deploy path:\n{}",
            diff.join("\n")
        );
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a refused command: the exit code, nothing on stdout, and on stderr exactly one
/// `error:` line (containing every needle) followed only by `hint:` / `caused by:` lines,
/// with at least one hint containing `hint`.
pub fn assert_refused(out: &Output, code: i32, needles: &[&str], hint: &str) {
    let err = stderr(out);
    assert_eq!(exit_code(out), code, "wrong exit code:\n{}", text(out));
    assert!(
        out.stdout.is_empty(),
        "stdout must be empty:\n{}",
        text(out)
    );
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("error: ")),
        "stderr must start with `error: `:\n{}",
        text(out)
    );
    for line in &lines[1..] {
        assert!(
            line.starts_with("hint: ") || line.starts_with("  caused by: "),
            "the error must be one line, then hints; unexpected line {line:?}:\n{}",
            text(out)
        );
    }
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "the error line should mention {needle:?}:\n{}",
            text(out)
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("hint: ") && l.contains(hint)),
        "expected a `hint:` line containing {hint:?}:\n{}",
        text(out)
    );
}

/// The JSON documents on stdout; asserts there is nothing else.
pub fn json_documents(out: &Output) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is not a JSON stream ({e}):\n{}", text(out)))
}

/// The set of keys of a JSON object.
pub fn keys(value: &serde_json::Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

pub fn key_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

pub fn ino(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

/// Unfinished releases (`.cutover/unfinished-*`, and `staging-*` of older versions) left
/// in a deploy path.
pub fn unfinished_left(deploy: &Path) -> Vec<String> {
    std::fs::read_dir(deploy.join(".cutover"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("staging") || n.starts_with("unfinished-"))
                .collect()
        })
        .unwrap_or_default()
}
// ---- end of the CLI behaviour test helpers ----

// ---- helpers for the switch-atomicity and kill tests ----

/// Like `Command::output`, but a process still running after `limit` is killed and the
/// test fails: a hung deploy must fail the test, not hang it.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let started = std::time::Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}; killed it");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
// ---- end of the switch-atomicity and kill test helpers ----

// ---- A real PHP stack for a sandbox ----

/// A private php-fpm (OPcache on, validate_timestamps=0) and an nginx whose root is
/// `<deploy>/current/public`, with `$realpath_root` or `$document_root`. The sandbox is
/// made readable by the pool's user first (it runs as nobody when the tests run as root).
pub fn php_stack(
    sb: &Sandbox,
    realpath_root: bool,
) -> (cutover_teststack::PhpFpm, cutover_teststack::Nginx) {
    std::fs::create_dir_all(sb.deploy()).unwrap();
    cutover_teststack::make_readable_by_workers(sb.path()).unwrap();
    let deploy = std::fs::canonicalize(sb.deploy()).unwrap();
    let fpm = cutover_teststack::PhpFpm::start(cutover_teststack::FpmOptions::default()).unwrap();
    let mut options =
        cutover_teststack::NginxOptions::new(deploy.join("current/public"), fpm.fastcgi_target());
    options.realpath_root = realpath_root;
    let nginx = cutover_teststack::Nginx::start(options).unwrap();
    (fpm, nginx)
}
