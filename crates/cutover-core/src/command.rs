//! Running the user's build and hook commands.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::stage::Observer;

const TAIL_LINES: usize = 20;

/// Runs `script` with `sh -c` in `dir`; on failure returns its status and the last lines
/// of its output (stdout and stderr interleaved as it wrote them).
///
/// The command runs in a process group of its own, and nothing of it outlives the call:
/// when `sh` ends, whatever it left running in its group is killed, and if cutover itself
/// dies (killed, interrupted), a guard process sees its pipe close and kills the group. A
/// hook must never go on writing into a staging directory the next deploy removes.
///
/// The script itself starts only once the guard is in place: the shell first waits for a
/// line on its stdin, which cutover writes after starting the guard. Were cutover killed
/// in between, the shell reads end-of-file (or dies with it) and runs nothing.
pub fn run(
    phase: &'static str,
    script: &str,
    dir: &Path,
    env: &[(&str, &str)],
    timeout: Option<Duration>,
    observer: &dyn Observer,
) -> Result<()> {
    let (reader, writer) = std::io::pipe().ctx("create a pipe for", dir)?;
    let writer_err = writer.try_clone().ctx("create a pipe for", dir)?;
    let (mut child, guard) = spawn_guarded(script, dir, env, writer.into(), writer_err.into())?;
    let group = child.id();
    let deadline = timeout.map(|limit| Instant::now() + limit);
    let (status, tail, in_time) = std::thread::scope(|scope| {
        let reading = scope.spawn(|| read_output(reader, observer));
        // Whatever the command left running in its group ends with it (which also closes
        // the output pipe for the reader). The shell is reaped only after the kill: until
        // then its pid, and so the group's id, cannot name another process.
        let in_time = wait_exited(group, deadline);
        kill_group(group);
        let status = child.wait();
        drop(guard);
        (status, reading.join().unwrap_or_default(), in_time)
    });
    if !in_time {
        return Err(Error::CommandTimedOut {
            phase,
            command: script.to_string(),
            limit: humantime_like(timeout.unwrap_or_default()),
            tail: tail.into(),
        });
    }
    let status = status.ctx("wait for a command in", dir)?;
    if status.success() {
        return Ok(());
    }
    let status = describe(status);
    Err(Error::CommandFailed {
        phase,
        command: script.to_string(),
        status,
        tail: tail.into(),
    })
}

/// What [`capture`] got from a command that ended by itself.
#[derive(Debug)]
pub struct Captured {
    /// `exited with status 3`, `was killed by signal 9`; `None` on success.
    pub failure: Option<String>,
    /// Everything it printed on stdout, when that was at most the limit asked for.
    pub stdout: Vec<u8>,
    /// Whether stdout was longer than the limit (and `stdout` is cut there).
    pub stdout_overflow: bool,
    /// The last lines it printed on stderr.
    pub stderr_tail: Vec<String>,
}

/// Runs `script` with `sh -c` in `dir` and keeps its stdout (up to `max_stdout` bytes)
/// apart from its stderr: for a command whose output cutover reads, like an inventory.
/// Its process group is killed when it ends or at `timeout` (then `CommandTimedOut`),
/// as for [`run`]; stdin is `/dev/null`.
pub fn capture(
    phase: &'static str,
    script: &str,
    dir: &Path,
    timeout: Duration,
    max_stdout: usize,
) -> Result<Captured> {
    use std::io::Read;
    let (mut child, guard) = spawn_guarded(script, dir, &[], Stdio::piped(), Stdio::piped())?;
    let group = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let deadline = Instant::now() + timeout;
    let (status, (out, overflow), tail, in_time) = std::thread::scope(|scope| {
        let reading = scope.spawn(move || {
            let mut out = Vec::new();
            let mut overflow = false;
            if let Some(mut pipe) = stdout {
                // One byte past the limit tells "exactly the limit" from "more"; the rest
                // is drained, so a command printing too much ends instead of blocking.
                let limit = max_stdout as u64 + 1;
                let _ = (&mut pipe).take(limit).read_to_end(&mut out);
                if out.len() > max_stdout {
                    out.truncate(max_stdout);
                    overflow = true;
                    let _ = std::io::copy(&mut pipe, &mut std::io::sink());
                }
            }
            (out, overflow)
        });
        let tailing = scope.spawn(move || match stderr {
            Some(pipe) => read_output(pipe, &crate::stage::Silent),
            None => VecDeque::new(),
        });
        let in_time = wait_exited(group, Some(deadline));
        kill_group(group);
        let status = child.wait();
        drop(guard);
        (
            status,
            reading.join().unwrap_or_default(),
            tailing.join().unwrap_or_default(),
            in_time,
        )
    });
    if !in_time {
        return Err(Error::CommandTimedOut {
            phase,
            command: script.to_string(),
            limit: humantime_like(timeout),
            tail: tail.into(),
        });
    }
    let status = status.ctx("wait for a command in", dir)?;
    let failure = (!status.success()).then(|| describe(status));
    Ok(Captured {
        failure,
        stdout: out,
        stdout_overflow: overflow,
        stderr_tail: tail.into(),
    })
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "failed".to_string(),
    }
}

/// Starts `script` with `sh -c` in `dir`, in a process group of its own watched by a
/// guard process (see [`run`]). The shell runs the script only once the guard is in place:
/// it first waits for a line on its stdin, written here after the guard started.
fn spawn_guarded(
    script: &str,
    dir: &Path,
    env: &[(&str, &str)],
    stdout: Stdio,
    stderr: Stdio,
) -> Result<(std::process::Child, GroupGuard)> {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("read _go || exit 125; exec sh -c \"$0\" </dev/null")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    for (key, value) in env {
        command.env(key, value);
    }
    // The shell itself goes at once with cutover; the guard takes care of the rest.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().ctx("start `sh` for a command in", dir)?;
    drop(command);
    let guard = GroupGuard::start(child.id());
    if let Some(mut go) = child.stdin.take() {
        use std::io::Write;
        // A shell that already died reports itself through its status.
        let _ = go.write_all(b"go\n");
    }
    Ok((child, guard))
}

/// The command's output, line by line to the observer; the last lines are kept.
fn read_output(reader: impl std::io::Read, observer: &dyn Observer) -> VecDeque<String> {
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut lines = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match lines.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                observer.hook_output(&line);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    }
    tail
}

/// Returns when the process has exited (true), leaving it to be reaped, or at `deadline`
/// (false) with it still running.
fn wait_exited(pid: u32, deadline: Option<Instant>) -> bool {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return true;
    };
    let Some(deadline) = deadline else {
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
        while let Err(rustix::io::Errno::INTR) = waitid(WaitId::Pid(pid), options) {}
        return true;
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
    loop {
        match waitid(WaitId::Pid(pid), options) {
            Ok(Some(_)) | Err(rustix::io::Errno::CHILD) => return true,
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return true,
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

/// `90s`, `10m`, `1h 30m`: as the setting is written.
fn humantime_like(limit: Duration) -> String {
    let secs = limit.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

fn kill_group(group: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(group as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// A separate process that kills a command's process group when cutover's end of a pipe
/// closes: on a normal return (dropped here) as much as when cutover is killed, which no
/// code of ours would survive to handle. It sits in a group of its own, so a Ctrl-C at the
/// terminal reaches cutover and not the guard.
struct GroupGuard {
    child: Option<std::process::Child>,
}

impl GroupGuard {
    fn start(group: u32) -> GroupGuard {
        let child = Command::new("sh")
            .arg("-c")
            .arg("read _ignored; kill -9 \"-$0\" 2>/dev/null")
            .arg(group.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok();
        GroupGuard { child }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Silent;

    #[test]
    fn failure_reports_status_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let script = "for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 3";
        match run("build", script, dir.path(), &[], None, &Silent) {
            Err(Error::CommandFailed { status, tail, .. }) => {
                assert_eq!(status, "exited with status 3");
                assert_eq!(tail.len(), TAIL_LINES);
                assert_eq!(tail.last().map(String::as_str), Some("oops"));
                assert_eq!(tail.first().map(String::as_str), Some("line 12"));
            }
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let script = "sleep 30 & echo started; wait";
        let limit = Some(Duration::from_millis(300));
        let err = run("before_switch", script, dir.path(), &[], limit, &Silent).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(
            text.contains("did not finish within 0s") || text.contains("within"),
            "{text}"
        );
        assert!(text.contains("sleep 30"), "{text}");
        assert!(
            text.contains("started"),
            "the output so far is shown: {text}"
        );
    }

    #[test]
    fn capture_keeps_stdout_apart_from_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo out; echo err >&2; pwd >&2";
        let got = capture(
            "inventory",
            script,
            dir.path(),
            Duration::from_secs(10),
            1024,
        )
        .unwrap();
        assert_eq!(got.failure, None);
        assert_eq!(got.stdout, b"out\n");
        assert!(!got.stdout_overflow);
        assert_eq!(got.stderr_tail[0], "err");
        let failed = capture(
            "inventory",
            "echo no >&2; exit 4",
            dir.path(),
            Duration::from_secs(10),
            1024,
        )
        .unwrap();
        assert_eq!(failed.failure.as_deref(), Some("exited with status 4"));
        assert_eq!(failed.stderr_tail, ["no"]);
    }

    #[test]
    fn capture_bounds_output_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let big = capture(
            "inventory",
            "head -c 300000 /dev/zero",
            dir.path(),
            Duration::from_secs(10),
            100,
        )
        .unwrap();
        assert!(big.stdout_overflow);
        assert_eq!(big.stdout.len(), 100);
        let started = std::time::Instant::now();
        let err = capture(
            "inventory",
            "sleep 30 & wait",
            dir.path(),
            Duration::from_millis(300),
            100,
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(err, Error::CommandTimedOut { .. }), "{err}");
    }

    #[test]
    fn passes_environment_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        run(
            "hook",
            "echo \"$CUTOVER_RELEASE\" > out",
            dir.path(),
            &[("CUTOVER_RELEASE", "7")],
            None,
            &Silent,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "7\n"
        );
    }
}
