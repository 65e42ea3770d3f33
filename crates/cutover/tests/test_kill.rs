//! Invariants 1 and 2 under SIGKILL: a deploy killed at a random instant leaves `current`
//! pointing to a complete release, nothing incomplete under `releases/` that is not marked
//! unfinished (`.cutover/unfinished-<id>`) and left out of `cutover releases`, and the
//! next deploy succeeds and clears what the killed one left behind.
//!
//! The source has 3,000 files so staging takes long enough to be hit. Trials rotate
//! through three kinds of deploy, each killed after a random delay up to the time an
//! unkilled deploy of that kind takes (until 50 deploys were killed that way):
//! - `Few`: 5 files changed, no hooks; the rest are hard-linked, the 5 fsynced one by one;
//! - `Many`: 400 files changed, no hooks; copies, and a syncfs(2) flush;
//! - `Hook`: 5 files changed and a `before_switch = ["sleep 0.05"]` hook; every file is
//!   copied, the hook runs, unchanged files are swapped for hard links, syncfs(2).
//!
//! Random delays almost never land in the few milliseconds between moving the staged
//! release into `releases/` and the switch, or just after the switch, so one trial in five
//! instead kills the deploy the moment the test sees the new release or the new `current`.
//!
//! Each source version writes its number into the files it changes and into `VERSION`, and
//! the test remembers which version last changed each file, so a release is checked file
//! by file against the version it claims to be.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const FILES: usize = 3_000;
/// Kills at random delays the test makes; a deploy that finishes first does not count.
const RANDOM_KILLS: usize = 50;
/// Kills on sight of a step (see `Kill`), one trial in five.
const TARGETED_KILLS: usize = 12;
/// Bounds the loop when deploys keep finishing before their kill.
const MAX_TRIALS: usize = 100;
const KEEP: &str = "3";
const FEW: usize = 5;
/// Above the 256 written files where staging switches from an fsync each to syncfs(2).
const MANY: usize = 400;
const SLOW_HOOK: &str = "[hooks]\nbefore_switch = [\"sleep 0.05\"]\n";
/// The whole test. It takes 40-50 s on two idle cores and up to twice that while other
/// builds run; the cap only turns a stuck or pathologically slow run into a failure.
const TIME_CAP: Duration = Duration::from_secs(240);
/// One unkilled deploy.
const DEPLOY_LIMIT: Duration = Duration::from_secs(30);
/// "cutover" in ASCII; `KILL_TEST_SEED=<n>` replays another sequence.
const BASE_SEED: u64 = 0x63_7574_6f76_6572;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Few,
    Many,
    Hook,
}

const KINDS: [Kind; 3] = [Kind::Few, Kind::Many, Kind::Hook];

impl Kind {
    fn changes(self) -> usize {
        match self {
            Kind::Many => MANY,
            Kind::Few | Kind::Hook => FEW,
        }
    }
}

/// When a trial kills its deploy.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// After a random delay, up to what an unkilled deploy of the same kind takes.
    After(Duration),
    /// As soon as a new release under `releases/` is complete (its unfinished marker
    /// gone): the steps between its completion and the switch take a few fsyncs, a window
    /// random delays seldom hit.
    OnNewRelease,
    /// As soon as `current` changes: the history append and the start of the cleanup.
    OnSwitch,
}

/// SplitMix64: a few lines, good enough to spread delays, same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn rel(i: usize) -> String {
    format!("d{:02}/s{}/f{i:04}.php", i % 20, (i / 20) % 10)
}

fn content(i: usize, version: u32) -> String {
    format!("<?php // file {i}, version {version}\n")
}

/// The app source and what every version of it held.
struct Source {
    root: PathBuf,
    /// For each version, the version that last changed each file.
    versions: Vec<Vec<u32>>,
}

impl Source {
    fn create(root: PathBuf) -> Source {
        for i in 0..FILES {
            write(&root.join(rel(i)), &content(i, 0));
        }
        write(&root.join("VERSION"), "0\n");
        Source {
            root,
            versions: vec![vec![0; FILES]],
        }
    }

    /// Writes a new version changing `changes` files (picked by `rng`); returns its number.
    fn next_version(&mut self, changes: usize, rng: &mut Rng) -> u32 {
        let version = self.versions.len() as u32;
        let mut last = self.versions[self.versions.len() - 1].clone();
        for _ in 0..changes {
            let i = rng.below(FILES as u64) as usize;
            last[i] = version;
            write(&self.root.join(rel(i)), &content(i, version));
        }
        write(&self.root.join("VERSION"), &format!("{version}\n"));
        self.versions.push(last);
        version
    }

    /// Checks that `dir` is a complete release `id`: its RELEASE file, and exactly the files
    /// of the version its VERSION file names, each with that version's content. With
    /// `contents` false only the names are compared (for releases already checked in
    /// full: releases are never modified after staging). Returns the version.
    fn check_release(&self, dir: &Path, id: &str, contents: bool) -> Result<u32, String> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| format!("release {id}: cannot read {name}: {e}"))
        };
        let release = read("RELEASE")?;
        if release.trim() != id {
            return Err(format!("release {id}: RELEASE holds {release:?}"));
        }
        let version_text = read("VERSION")?;
        let version: u32 = version_text
            .trim()
            .parse()
            .map_err(|_| format!("release {id}: VERSION holds {version_text:?}"))?;
        let expected = self
            .versions
            .get(version as usize)
            .ok_or_else(|| format!("release {id}: unknown version {version}"))?;
        let mut files = BTreeMap::new();
        collect(dir, dir, contents, &mut files)?;
        let mut problems = Vec::new();
        for (i, &changed_in) in expected.iter().enumerate() {
            match files.remove(&rel(i)) {
                None => problems.push(format!("{} missing", rel(i))),
                Some(Some(text)) if text != content(i, changed_in) => problems.push(format!(
                    "{} holds {text:?}, version {version} has {:?}",
                    rel(i),
                    content(i, changed_in)
                )),
                Some(_) => {}
            }
        }
        files.remove("RELEASE");
        files.remove("VERSION");
        problems.extend(
            files
                .keys()
                .map(|extra| format!("{extra} should not be there")),
        );
        if problems.is_empty() {
            return Ok(version);
        }
        let shown: Vec<_> = problems.iter().take(8).cloned().collect();
        Err(format!(
            "release {id} is incomplete or mixed ({} problems against version {version}):\n  {}",
            problems.len(),
            shown.join("\n  ")
        ))
    }
}

/// Regular files under `dir`, relative to `root`, with their text when `contents`.
fn collect(
    root: &Path,
    dir: &Path,
    contents: bool,
    out: &mut BTreeMap<String, Option<String>>,
) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("list {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("list {}: {e}", dir.display()))?;
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let file_type = entry
            .file_type()
            .map_err(|e| format!("stat {}: {e}", path.display()))?;
        if file_type.is_dir() {
            collect(root, &path, contents, out)?;
        } else if file_type.is_file() {
            let text = if contents {
                Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| format!("read {}: {e}", path.display()))?,
                )
            } else {
                None
            };
            out.insert(rel, text);
        } else {
            return Err(format!("{rel}: unexpected {file_type:?}"));
        }
    }
    Ok(())
}

/// What a deploy path holds, once checked.
#[derive(Debug, Clone)]
struct Layout {
    current: String,
    /// Release id → version.
    releases: BTreeMap<String, u32>,
    /// Releases marked unfinished (their directories may be partial).
    unfinished: Vec<String>,
    temp_links: Vec<String>,
    trash: Vec<String>,
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Checks invariants 1 and 2: `current` is a relative link to `releases/<id>`, and every
/// directory under `releases/` is a complete release. `checked` holds the releases already
/// compared in full (by id and inode).
fn check_layout(
    deploy: &Path,
    source: &Source,
    checked: &mut HashSet<(String, u64)>,
) -> Result<Layout, String> {
    let current = deploy.join("current");
    let meta = std::fs::symlink_metadata(&current)
        .map_err(|e| format!("`current` does not exist: {e}"))?;
    if !meta.file_type().is_symlink() {
        return Err(format!(
            "`current` is not a symlink: {:?}",
            meta.file_type()
        ));
    }
    let target = std::fs::read_link(&current).unwrap();
    let id = match target.strip_prefix("releases") {
        Ok(id) if id.components().count() == 1 => id.display().to_string(),
        _ => return Err(format!("`current` -> {target:?}, not releases/<id>")),
    };
    let mut releases = BTreeMap::new();
    let state = names(&deploy.join(".cutover"));
    let unfinished: Vec<String> = state
        .iter()
        .filter_map(|n| n.strip_prefix("unfinished-"))
        .map(str::to_string)
        .collect();
    for name in names(&deploy.join("releases")) {
        if unfinished.contains(&name) {
            continue;
        }
        let dir = deploy.join("releases").join(&name);
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| format!("stat {name}: {e}"))?;
        if !meta.is_dir() {
            return Err(format!("releases/{name} is not a directory"));
        }
        let key = (name.clone(), meta.ino());
        let full = !checked.contains(&key);
        let version = source.check_release(&dir, &name, full)?;
        checked.insert(key);
        releases.insert(name, version);
    }
    if !releases.contains_key(&id) {
        return Err(format!(
            "`current` -> {target:?}, which does not exist; releases: {:?}",
            releases.keys()
        ));
    }
    if unfinished.contains(&id) {
        return Err(format!(
            "`current` -> {target:?}, which is marked unfinished"
        ));
    }
    Ok(Layout {
        current: id,
        releases,
        unfinished,
        temp_links: state
            .iter()
            .filter(|n| n.starts_with("current.") && n.ends_with(".tmp"))
            .cloned()
            .collect(),
        trash: names(&deploy.join(".cutover/trash")),
    })
}

/// Where the kill landed, judged from what it left.
fn landed(finished: bool, before: &Layout, after: &Layout) -> &'static str {
    let new_release = after
        .releases
        .keys()
        .any(|id| !before.releases.contains_key(id));
    if finished {
        "finished before the kill"
    } else if after.current != before.current {
        if after.trash.is_empty() {
            "killed after the switch"
        } else {
            "killed after the switch, in cleanup"
        }
    } else if new_release {
        "killed between staging and the switch"
    } else if !after.unfinished.is_empty() {
        "killed while staging"
    } else {
        "killed before staging began"
    }
}

struct Trials {
    sb: Sandbox,
    source: Source,
    hooks_config: String,
    checked: HashSet<(String, u64)>,
    seed: u64,
    log: Vec<String>,
}

impl Trials {
    fn deploy_command(&self, kind: Kind) -> std::process::Command {
        let (src, deploy) = (self.sb.src(), self.sb.deploy());
        let mut cmd = self.sb.cutover();
        cmd.arg("deploy")
            .arg(&src)
            .arg("--to")
            .arg(&deploy)
            .args(["--keep", KEEP, "--quiet"]);
        if kind == Kind::Hook {
            cmd.args(["--config", &self.hooks_config]);
        }
        cmd
    }

    /// A deploy that is not killed; returns how long it took and the layout after it.
    fn deploy(&mut self, kind: Kind, before: &Layout) -> (Duration, Layout) {
        // Its own sequence: the files a follow-up deploy changes differ every time.
        let mut rng = Rng(self.seed ^ (self.source.versions.len() as u64) << 32);
        let version = self.source.next_version(kind.changes(), &mut rng);
        let started = Instant::now();
        let out = output_within(self.deploy_command(kind).arg("--json"), DEPLOY_LIMIT);
        let took = started.elapsed();
        if !out.status.success() {
            self.fail(&format!(
                "an unkilled {kind:?} deploy failed:\n{}",
                text(&out)
            ));
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| self.fail(&format!("deploy output is not JSON ({e})")));
        let id = report["release"].as_str().unwrap_or_default().to_string();
        let after = self.layout();
        let mut problems = Vec::new();
        if after.current != id {
            problems.push(format!(
                "current is {}, the deploy said {id}",
                after.current
            ));
        }
        if after.releases.get(&id) != Some(&version) {
            problems.push(format!("release {id} is not version {version}"));
        }
        if !after.releases.contains_key(&before.current) {
            problems.push(format!(
                "cleanup removed {}, the release the deploy replaced",
                before.current
            ));
        }
        // --keep 3, plus the one `current` replaced when an unswitched release is newer.
        if after.releases.len() > 4 {
            problems.push(format!("cleanup kept {:?}", after.releases.keys()));
        }
        for (what, left) in [
            ("unfinished releases", &after.unfinished),
            ("temporary links", &after.temp_links),
            ("trash", &after.trash),
        ] {
            if !left.is_empty() {
                problems.push(format!("{what} left after a successful deploy: {left:?}"));
            }
        }
        if !problems.is_empty() {
            self.fail(&problems.join("\n"));
        }
        (took, after)
    }

    /// Starts a deploy of `kind` and SIGKILLs it `when` (unless it finishes first); checks
    /// the layout it leaves. Returns whether it finished, and the layout.
    fn kill(&mut self, kind: Kind, when: Kill, before: &Layout) -> (bool, Layout) {
        let spawned = Instant::now();
        let mut child = self
            .deploy_command(kind)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let releases = self.sb.deploy().join("releases");
        let current = self.sb.deploy().join("current");
        let old_target = Path::new("releases").join(&before.current);
        let seen = || match when {
            Kill::After(delay) => spawned.elapsed() >= delay,
            Kill::OnNewRelease => names(&releases).iter().any(|id| {
                !before.releases.contains_key(id)
                    && !self
                        .sb
                        .deploy()
                        .join(format!(".cutover/unfinished-{id}"))
                        .exists()
            }),
            Kill::OnSwitch => std::fs::read_link(&current).is_ok_and(|t| t != old_target),
        };
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if seen() {
                break false;
            }
            if spawned.elapsed() > DEPLOY_LIMIT {
                let _ = child.kill();
                self.fail(&format!(
                    "the deploy was still running after {DEPLOY_LIMIT:?}"
                ));
            }
            if let Kill::After(delay) = when {
                std::thread::sleep(delay.saturating_sub(spawned.elapsed()));
            }
        };
        if !finished {
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        if !status.success() && status.signal() != Some(9) {
            self.fail(&format!("the deploy failed by itself ({status}):\n{err}"));
        }
        let after = self.layout();
        if !after.unfinished.is_empty() {
            // What a killed deploy left unfinished is no release to offer.
            let listed = self.sb.json_to(&["releases"]);
            let listed = one_result(&listed)["releases"].to_string();
            for id in &after.unfinished {
                if listed.contains(&format!("\"{id}\"")) {
                    self.fail(&format!("`cutover releases` lists the unfinished {id}"));
                }
            }
        }
        if after.current != before.current && !after.releases.contains_key(&before.current) {
            self.fail(&format!(
                "the release current replaced ({}) was removed",
                before.current
            ));
        }
        (status.success(), after)
    }

    fn layout(&mut self) -> Layout {
        match check_layout(&self.sb.deploy(), &self.source, &mut self.checked) {
            Ok(layout) => layout,
            Err(problem) => self.fail(&problem),
        }
    }

    fn fail(&self, problem: &str) -> ! {
        let deploy = self.sb.deploy();
        let recent = self.log.len().saturating_sub(12);
        panic!(
            "{problem}\n\nseed {:#x} (replay: KILL_TEST_SEED={}); last trials:\n  {}\n\
             releases/: {:?}\n.cutover/: {:?}\ntrash: {:?}\ncurrent -> {:?}",
            self.seed,
            self.seed,
            self.log[recent..].join("\n  "),
            names(&deploy.join("releases")),
            names(&deploy.join(".cutover")),
            names(&deploy.join(".cutover/trash")),
            std::fs::read_link(deploy.join("current")),
        )
    }
}

#[test]
fn a_deploy_killed_at_any_moment_leaves_a_complete_current_release() {
    let seed = std::env::var("KILL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(BASE_SEED);
    let started = Instant::now();
    let sb = Sandbox::new();
    let source = Source::create(sb.src());
    let hooks_config = sb.path().join("slow-hook.toml");
    write(&hooks_config, SLOW_HOOK);
    let mut t = Trials {
        source,
        hooks_config: hooks_config.display().to_string(),
        sb,
        checked: HashSet::new(),
        seed,
        log: Vec::new(),
    };
    let first = output_within(t.deploy_command(Kind::Few).arg("--json"), DEPLOY_LIMIT);
    assert!(first.status.success(), "first deploy:\n{}", text(&first));
    let mut layout = t.layout();

    // How long each kind takes unkilled: the range the kill delays are drawn from.
    let mut durations = Vec::new();
    for kind in KINDS {
        let (took, after) = t.deploy(kind, &layout);
        durations.push(took);
        layout = after;
    }
    let setup = started.elapsed();
    eprintln!("kill test: unkilled deploy durations {KINDS:?} = {durations:?}; setup {setup:?}");

    let mut windows = durations.clone();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut trials, mut random_kills, mut targeted) = (0, 0, 0);
    // Where the time goes: killed deploys, follow-up deploys (each with its checks).
    let mut spent = [Duration::ZERO; 2];
    while random_kills < RANDOM_KILLS || targeted < TARGETED_KILLS {
        if trials >= MAX_TRIALS || started.elapsed() > TIME_CAP {
            t.fail(&format!(
                "only {random_kills} kills at random delays after {trials} trials and {:?}; \
                 outcomes {outcomes:?}",
                started.elapsed()
            ));
        }
        let k = trials % KINDS.len();
        let kind = KINDS[k];
        let mut rng = Rng(seed.wrapping_add(trials as u64));
        let version = t.source.next_version(kind.changes(), &mut rng);
        let when = if (trials % 5 == 4 || random_kills >= RANDOM_KILLS) && targeted < TARGETED_KILLS
        {
            targeted += 1;
            if targeted % 2 == 1 {
                Kill::OnNewRelease
            } else {
                Kill::OnSwitch
            }
        } else {
            Kill::After(Duration::from_micros(
                rng.below(windows[k].as_micros() as u64 + 1),
            ))
        };
        t.log.push(format!(
            "trial {trials}: {kind:?} deploy of version {version}, kill {when:?}"
        ));
        trials += 1;

        let killing = Instant::now();
        let (finished, after) = t.kill(kind, when, &layout);
        spent[0] += killing.elapsed();
        let outcome = landed(finished, &layout, &after);
        *outcomes.entry(outcome).or_default() += 1;
        if let Some(line) = t.log.last_mut() {
            line.push_str(&format!(": {outcome}; current {}", after.current));
        }
        if let Kill::After(delay) = when {
            if finished {
                // The load changed since the deploys were timed: narrow the window.
                windows[k] = windows[k].mul_f64(0.8).max(delay);
            } else {
                random_kills += 1;
            }
        }

        // The next deploy succeeds, moves current, and clears the debris.
        let following = Instant::now();
        layout = t.deploy(Kind::Few, &after).1;
        spent[1] += following.elapsed();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "kill test: {trials} trials, {random_kills} killed at random delays, {targeted} on \
         sight, in {:.1} s (setup {:.1} s; killed deploys {:.1} s, follow-up deploys {:.1} s, \
         checks included); windows at the end {windows:?}; {outcomes:#?}",
        elapsed.as_secs_f64(),
        setup.as_secs_f64(),
        spent[0].as_secs_f64(),
        spent[1].as_secs_f64(),
    );
    let landings = outcomes.keys().filter(|o| o.starts_with("killed")).count();
    assert!(
        landings >= 2,
        "the kills landed in too few places to test much: {outcomes:?}"
    );
}

/// The checks above must be able to fail: each kind of damage a killed deploy could do is
/// made by hand to a good deploy path and must be reported.
#[test]
fn the_layout_check_catches_incomplete_and_mixed_releases() {
    let sb = Sandbox::new();
    let mut source = Source::create(sb.src());
    let deploy = sb.deploy();
    let id = sb.deploy_src(&[]);
    let check = |source: &Source| check_layout(&deploy, source, &mut HashSet::new());
    check(&source).unwrap();
    let release = deploy.join("releases").join(&id);
    let victim = release.join(rel(7));
    let original = std::fs::read_to_string(&victim).unwrap();

    std::fs::remove_file(&victim).unwrap();
    let err = check(&source).unwrap_err();
    assert!(err.contains("missing"), "{err}");

    write(&victim, &content(7, 1));
    let err = check(&source).unwrap_err();
    assert!(err.contains("holds"), "{err}");
    write(&victim, &original);

    // A release whose VERSION says 1 while its files are version 0: mixed.
    source.next_version(FEW, &mut Rng(1));
    write(&release.join("VERSION"), "1\n");
    let err = check(&source).unwrap_err();
    assert!(err.contains("against version 1"), "{err}");
    write(&release.join("VERSION"), "0\n");

    write(&release.join("RELEASE"), "someone-else\n");
    let err = check(&source).unwrap_err();
    assert!(err.contains("RELEASE holds"), "{err}");
    write(&release.join("RELEASE"), &format!("{id}\n"));

    write(&release.join("extra.php"), "x");
    let err = check(&source).unwrap_err();
    assert!(err.contains("should not be there"), "{err}");
    std::fs::remove_file(release.join("extra.php")).unwrap();
    check(&source).unwrap();

    let current = deploy.join("current");
    std::fs::remove_file(&current).unwrap();
    let err = check(&source).unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    std::os::unix::fs::symlink("releases/gone", &current).unwrap();
    let err = check(&source).unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
}
