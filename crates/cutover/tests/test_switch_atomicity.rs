//! Invariant 1 under load: `current` never stops existing while it is switched.
//!
//! Reader threads open `current/index.php` in a tight loop while `current` is switched
//! between two releases 1,000 times. With the real switch (symlink to a temporary name,
//! rename(2) over `current`) every open succeeds. The counterpart does the same switches
//! the way old `ln -sfn` does (unlink, then symlink) and the same readers must catch the
//! moment `current` is missing, so the harness is shown able to fail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cutover_core::{DeployPath, ReleaseId};

use crate::common::*;

const SWITCHES: usize = 1_000;
const READERS: usize = 2;
/// Hard limit on one switching run; readers stop here even if the switcher is stuck.
const TIME_CAP: Duration = Duration::from_secs(60);
/// Each binary switch is a whole process (start, lock, switch, history) competing with the
/// readers for two cores: 30-110 ms each depending on the machine's load. The claim is
/// that no read fails, so the binary must switch often, not 1,000 times in a fixed time.
const MIN_BINARY_SWITCHES: usize = 200;
/// Far below what two readers manage while 1,000 switches run (hundreds of thousands),
/// far above what a reader that never ran would count.
const MIN_READS: u64 = 2_000;
const MARKER_A: &str = "served-by-release-A";
const MARKER_B: &str = "served-by-release-B";

/// What the readers saw.
#[derive(Debug, Default)]
struct Reads {
    total: u64,
    saw_a: u64,
    saw_b: u64,
    not_found: u64,
    other_errors: u64,
    /// Read fine but held neither marker.
    unexpected: u64,
    first_failure: Option<String>,
}

impl Reads {
    fn errors(&self) -> u64 {
        self.not_found + self.other_errors + self.unexpected
    }

    fn merge(&mut self, other: Reads) {
        self.total += other.total;
        self.saw_a += other.saw_a;
        self.saw_b += other.saw_b;
        self.not_found += other.not_found;
        self.other_errors += other.other_errors;
        self.unexpected += other.unexpected;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    fn read_once(&mut self, file: &Path) {
        self.total += 1;
        match std::fs::read_to_string(file) {
            Ok(text) if text.contains(MARKER_A) => self.saw_a += 1,
            Ok(text) if text.contains(MARKER_B) => self.saw_b += 1,
            Ok(text) => {
                self.unexpected += 1;
                self.first_failure
                    .get_or_insert_with(|| format!("read {} bytes: {text:?}", text.len()));
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    self.not_found += 1;
                } else {
                    self.other_errors += 1;
                }
                self.first_failure
                    .get_or_insert_with(|| format!("{e} ({:?})", e.kind()));
            }
        }
    }
}

/// Runs `switch` on this thread while READERS threads read `file` in a loop. The readers
/// stop when `switch` returns, or at `deadline` whatever `switch` is doing.
fn read_while<T>(file: &Path, deadline: Instant, switch: impl FnOnce() -> T) -> (Reads, T) {
    let stop = AtomicBool::new(false);
    let started = Barrier::new(READERS + 1);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let (stop, started) = (&stop, &started);
                scope.spawn(move || {
                    let mut reads = Reads::default();
                    started.wait();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        reads.read_once(file);
                    }
                    reads
                })
            })
            .collect();
        started.wait();
        let result = switch();
        stop.store(true, Ordering::Relaxed);
        let mut reads = Reads::default();
        for reader in readers {
            reads.merge(reader.join().unwrap());
        }
        (reads, result)
    })
}

/// A deploy path with releases "1" (marker A) and "2" (marker B, current), deployed by
/// the binary.
fn two_releases() -> (Sandbox, String, String) {
    let sb = Sandbox::new();
    sb.write("index.php", &format!("<?php echo '{MARKER_A}';\n"));
    let a = sb.deploy_src(&["--release", "1"]);
    sb.write("index.php", &format!("<?php echo '{MARKER_B}';\n"));
    let b = sb.deploy_src(&["--release", "2"]);
    assert_eq!(sb.current().as_deref(), Some(b.as_str()));
    (sb, a, b)
}

fn index(sb: &Sandbox) -> PathBuf {
    sb.deploy().join("current/index.php")
}

/// `current` as old coreutils and busybox `ln -sfn` replace it: gone between the calls.
fn unlink_then_symlink(deploy: &Path, id: &str) {
    let current = deploy.join("current");
    std::fs::remove_file(&current).unwrap();
    std::os::unix::fs::symlink(Path::new("releases").join(id), &current).unwrap();
}

/// `n` switches alternating between `a` and `b` (starting with `a`, as `b` is current),
/// stopping early at `deadline`; returns how many were done.
fn alternate(n: usize, a: &str, b: &str, deadline: Instant, mut switch: impl FnMut(&str)) -> usize {
    for i in 0..n {
        if Instant::now() >= deadline {
            return i;
        }
        switch(if i % 2 == 0 { a } else { b });
    }
    n
}

#[test]
fn readers_see_no_error_while_the_binary_switches_hundreds_of_times() {
    let (sb, a, b) = two_releases();
    let deploy = sb.deploy();
    let deploy_arg = deploy.to_str().unwrap();
    let started = Instant::now();
    let deadline = started + TIME_CAP;
    let mut failed_switch = None;
    let (reads, done) = read_while(&index(&sb), deadline, || {
        alternate(SWITCHES, &a, &b, deadline, |id| {
            if failed_switch.is_some() {
                return;
            }
            let out = output_within(
                sb.cutover()
                    .args(["switch", id, "--to", deploy_arg, "--quiet"]),
                Duration::from_secs(20),
            );
            if !out.status.success() {
                failed_switch = Some(format!("cutover switch {id}:\n{}", text(&out)));
            }
        })
    });
    let elapsed = started.elapsed();
    eprintln!(
        "binary: {done} switches in {:.2} s ({:.1} ms each); {reads:?}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / done.max(1) as f64
    );
    if let Some(failure) = failed_switch {
        panic!("a switch failed: {failure}");
    }
    assert!(
        done >= MIN_BINARY_SWITCHES,
        "only {done} switches within {TIME_CAP:?}; reads: {reads:?}"
    );
    assert_eq!(
        reads.errors(),
        0,
        "readers saw errors while `current` was switched by the binary: {reads:?}"
    );
    assert!(
        reads.saw_a > 0 && reads.saw_b > 0,
        "readers did not see both releases, so no switch happened under them: {reads:?}"
    );
    assert!(
        reads.total >= MIN_READS,
        "readers ran too little to prove anything: {reads:?}"
    );
    // Switches alternate from `b` (current) to `a`: an even number ends on `b`.
    let last = if done % 2 == 0 { &b } else { &a };
    assert_eq!(sb.current().as_deref(), Some(last.as_str()));
}

/// The library's switch in a loop with no process start between switches: the switches
/// come about a hundred times closer together than through the binary, and the loop is
/// the very one the counterpart below runs, with only the switch function changed.
#[test]
fn readers_see_no_error_during_1000_switches_by_the_library() {
    let (sb, a, b) = two_releases();
    let deploy = DeployPath::new(sb.deploy()).unwrap();
    let (ida, idb) = (ReleaseId::parse(&a).unwrap(), ReleaseId::parse(&b).unwrap());
    let started = Instant::now();
    let deadline = started + TIME_CAP;
    let (reads, done) = read_while(&index(&sb), deadline, || {
        alternate(SWITCHES, &a, &b, deadline, |id| {
            let id = if id == a { &ida } else { &idb };
            cutover_core::swap::switch_current(&deploy, id).unwrap();
        })
    });
    eprintln!(
        "library: {done} switches in {:.2} s; {reads:?}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(done, SWITCHES, "only {done} switches within {TIME_CAP:?}");
    assert_eq!(
        reads.errors(),
        0,
        "readers saw errors while `current` was switched by rename: {reads:?}"
    );
    assert!(
        reads.saw_a > 0 && reads.saw_b > 0,
        "readers did not see both releases: {reads:?}"
    );
    assert!(
        reads.total >= MIN_READS,
        "readers ran too little: {reads:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(deploy.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary links left: {leftovers:?}");
}

/// The same readers against unlink-then-symlink must fail. The window is a few
/// microseconds per switch, so rounds of 1,000 switches repeat until a reader falls into
/// it (and readers saw both releases), bounded in rounds and time.
#[test]
fn readers_catch_an_unlink_then_symlink_switch() {
    const MAX_ROUNDS: usize = 20;
    let (sb, a, b) = two_releases();
    let deploy = sb.deploy();
    let started = Instant::now();
    let deadline = started + TIME_CAP;
    let mut all = Reads::default();
    let mut rounds = 0;
    // Until a reader fell into the window and readers saw both releases: on a loaded
    // machine one round can end with every read landing on one side.
    let caught = |all: &Reads| all.not_found > 0 && all.saw_a > 0 && all.saw_b > 0;
    while rounds < MAX_ROUNDS && !caught(&all) && Instant::now() < deadline {
        rounds += 1;
        let (reads, _) = read_while(&index(&sb), deadline, || {
            alternate(SWITCHES, &a, &b, deadline, |id| {
                unlink_then_symlink(&deploy, id)
            })
        });
        all.merge(reads);
    }
    eprintln!(
        "unlink-then-symlink: {rounds} round(s) of {SWITCHES} switches in {:.3} s; {all:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        all.not_found > 0,
        "readers never saw `current` missing during {rounds} rounds of unlink-then-symlink \
         switches, so they could not catch a non-atomic switch either: {all:?}"
    );
    assert_eq!(
        all.other_errors + all.unexpected,
        0,
        "only NotFound was expected: {all:?}"
    );
    assert!(
        all.saw_a > 0 && all.saw_b > 0,
        "readers did not see both releases: {all:?}"
    );
}
