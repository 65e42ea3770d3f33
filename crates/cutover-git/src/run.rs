//! `git` as a subprocess: never prompting, never reading the terminal.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

pub(crate) struct Output {
    pub ok: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    /// stdout as text, trimmed; `None` when git failed or printed nothing.
    pub fn text(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.stdout).trim().to_string();
        (self.ok && !text.is_empty()).then_some(text)
    }

    /// git's own words for a failure: its last lines on stderr.
    pub fn message(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tail = &lines[lines.len().saturating_sub(3)..];
        if tail.is_empty() {
            "git failed without saying why".to_string()
        } else {
            tail.join("; ")
        }
    }
}

/// Runs `git -C dir args…`. Only a git that cannot be started is an error here; a git
/// that fails is an `Output` with `ok == false`, for the caller to name.
pub(crate) fn git<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Result<Output> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // A deploy must fail rather than hang on a password prompt nobody sees.
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(Error::GitMissing)?;
    Ok(Output {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// As `git`, turning a failure into `Error::Git` naming `repository` and the command.
pub(crate) fn git_ok<S: AsRef<OsStr>>(dir: &Path, repository: &str, args: &[S]) -> Result<Output> {
    let out = git(dir, args)?;
    if out.ok {
        return Ok(out);
    }
    let command: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    Err(Error::Git {
        repository: repository.to_string(),
        command: command.join(" "),
        message: out.message(),
    })
}
