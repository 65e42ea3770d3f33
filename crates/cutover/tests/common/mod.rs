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

pub fn exit_code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}
