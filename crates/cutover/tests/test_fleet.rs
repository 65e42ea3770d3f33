//! Deploys to several hosts over real ssh: private sshd instances on 127.0.0.1 (own host
//! keys, own client key and known_hosts, strict host key checking), one deploy path each.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cutover_teststack::SshHosts;

use crate::common::{exit_code, stderr, text, wait_until, write, Sandbox};

pub(crate) const HOSTS: [&str; 3] = ["web1", "web2", "web3"];

pub(crate) struct Fleet {
    pub(crate) sb: Sandbox,
    pub(crate) ssh: SshHosts,
}

impl Fleet {
    pub(crate) fn start() -> Fleet {
        let sb = Sandbox::new();
        let ssh = SshHosts::start(&HOSTS).expect("start sshd hosts");
        Fleet { sb, ssh }
    }

    pub(crate) fn host_path(&self, name: &str) -> PathBuf {
        self.sb.path().join("hosts").join(name)
    }

    /// A config with every host, `extra` appended (tables of its own).
    pub(crate) fn config(&self, name: &str, extra: &str) -> String {
        let mut text = format!(
            "[deploy]\nsource = {:?}\n{}\n[ssh]\noptions = [\"-F\", {:?}]\n",
            self.sb.src().display().to_string(),
            extra_for(extra, "deploy").join("\n"),
            self.ssh.ssh_config().display().to_string(),
        );
        for host in HOSTS {
            text.push_str(&format!(
                "\n[hosts.{host}]\nssh = \"{host}\"\npath = {:?}\n",
                self.host_path(host).display().to_string()
            ));
            for line in extra_for(extra, host) {
                text.push_str(line);
                text.push('\n');
            }
        }
        text.push_str(&extra_global(extra));
        self.sb.config(name, &text)
    }

    fn command(&self, config: &str, args: &[&str]) -> Command {
        let mut cmd = self.sb.cutover();
        cmd.env("XDG_CACHE_HOME", self.sb.path().join("cache"));
        cmd.args(["--config", config]).args(args);
        cmd
    }

    pub(crate) fn run(&self, config: &str, args: &[&str]) -> Output {
        self.command(config, args).output().unwrap()
    }

    pub(crate) fn deploy_json(&self, config: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["deploy", "--json"];
        all.extend_from_slice(args);
        let out = self.run(config, &all);
        assert!(out.status.success(), "deploy failed:\n{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Deploys with `config` and returns the new release's id.
    fn deploy_release(&self, config: &str) -> String {
        let json = self.deploy_json(config, &[]);
        json["release"].as_str().unwrap().to_string()
    }

    pub(crate) fn current(&self, host: &str) -> Option<String> {
        let link = std::fs::read_link(self.host_path(host).join("current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    pub(crate) fn releases(&self, host: &str) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.host_path(host).join("releases"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Unfinished releases left on a host.
    fn debris(&self, host: &str) -> Vec<String> {
        std::fs::read_dir(self.host_path(host).join(".cutover"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("unfinished-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn assert_all_on(&self, release: &str) {
        for host in HOSTS {
            assert_eq!(self.current(host).as_deref(), Some(release), "{host}");
        }
    }
}

/// `extra` holds per-host lines as `@web2 line`, [deploy] lines as `@deploy line` and
/// global tables as plain lines.
fn extra_for<'a>(extra: &'a str, host: &str) -> Vec<&'a str> {
    let tag = format!("@{host} ");
    extra
        .lines()
        .filter_map(|l| l.strip_prefix(tag.as_str()))
        .collect()
}

fn extra_global(extra: &str) -> String {
    extra
        .lines()
        .filter(|l| !l.starts_with('@'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Bytes that do not compress, so "bytes sent" can be compared with bytes changed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(crate) fn write_app(sb: &Sandbox, version: &str, files: usize) {
    sb.write("public/index.php", &format!("<?php echo '{version}';\n"));
    for i in 0..files {
        let path = sb.src().join(format!("lib/f{i}.bin"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if !path.exists() {
            std::fs::write(&path, noise(i as u64, 4096)).unwrap();
        }
    }
}

#[test]
fn three_hosts_switch_together_and_an_incremental_deploy_sends_only_the_change() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 300);
    fleet.sb.write("public/build/app.1111aaaa.css", "v1 css\n");
    let config = fleet.config("fleet.toml", "");

    let first = fleet.deploy_json(&config, &[]);
    let v1 = first["release"].as_str().unwrap().to_string();
    fleet.assert_all_on(&v1);
    for host in HOSTS {
        let index = fleet.host_path(host).join("current/public/index.php");
        assert_eq!(
            std::fs::read_to_string(index).unwrap(),
            "<?php echo 'v1';\n"
        );
        let bin = fleet.host_path(host).join(".cutover/bin");
        assert_eq!(
            std::fs::read_dir(bin).unwrap().count(),
            1,
            "{host}: one agent"
        );
    }
    assert_eq!(first["hosts"].as_array().unwrap().len(), 3);
    assert!(first["switch_skew_us"].as_u64().is_some());

    // Another build's agent on web1: the upload of this one replaces it.
    let bin = fleet.host_path("web1").join(".cutover/bin");
    let ours = std::fs::read_dir(&bin)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::rename(&ours, bin.join("cutover-0.0.1-0123456789abcdef")).unwrap();

    // v2 drops v1's stylesheet: pages of v1 still get it on every host.
    std::fs::remove_file(fleet.sb.src().join("public/build/app.1111aaaa.css")).unwrap();

    // Change 10 files: 40 KiB of bytes that do not compress.
    let mut changed = 0;
    for i in 0..10u64 {
        let bytes = noise(1000 + i, 4096);
        changed += bytes.len();
        std::fs::write(fleet.sb.src().join(format!("lib/f{}.bin", i * 7)), bytes).unwrap();
    }
    let second = fleet.deploy_json(&config, &[]);
    let v2 = second["release"].as_str().unwrap().to_string();
    // Every host was told when to rename, its clock's offset measured (one machine here).
    for host in second["hosts"].as_array().unwrap() {
        let offset = host["clock_offset_us"].as_i64();
        assert!(offset.is_some_and(|o| o.abs() < 1_000_000), "{host}");
    }
    let agents: Vec<_> = std::fs::read_dir(&bin)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(agents, vec![ours], "the old agent is replaced");
    assert_ne!(v1, v2);
    fleet.assert_all_on(&v2);
    for host in second["hosts"].as_array().unwrap() {
        let name = host["host"].as_str().unwrap();
        assert_eq!(host["status"], "deployed", "{name}");
        assert_eq!(host["files_sent"], 10, "{name}");
        let sent = host["bytes_sent"].as_u64().unwrap();
        assert!(
            sent as f64 <= changed as f64 * 1.1,
            "{name}: sent {sent} bytes for {changed} changed"
        );
        assert_eq!(host["files"]["linked"], 291, "{name}: {host}");
        assert_eq!(host["assets"]["carried"], 1, "{name}: {host}");
        let css = fleet
            .host_path(name)
            .join("current/public/build/app.1111aaaa.css");
        assert_eq!(std::fs::read_to_string(css).unwrap(), "v1 css\n", "{name}");
        // The release on the host is byte for byte the source.
        for i in [0u64, 7, 8] {
            let rel = format!("lib/f{i}.bin");
            assert_eq!(
                std::fs::read(fleet.host_path(name).join("current").join(&rel)).unwrap(),
                std::fs::read(fleet.sb.src().join(&rel)).unwrap(),
                "{name}: {rel}"
            );
        }
    }
}

#[test]
fn one_host_failing_to_stage_leaves_every_host_on_the_old_release() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 20);
    let good = fleet.config("good.toml", "");
    let v1 = fleet.deploy_release(&good);

    write_app(&fleet.sb, "v2", 20);
    let web2 = fleet.host_path("web2").display().to_string();
    let failing = fleet.config(
        "failing.toml",
        &format!(
            "\n[hooks]\nbefore_switch = [\"test \\\"$CUTOVER_DEPLOY_PATH\\\" != '{web2}' || {{ echo disk says no >&2; exit 3; }}\"]\n"
        ),
    );
    let out = fleet.run(&failing, &["deploy"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("web2") && all.contains("disk says no"),
        "{all}"
    );
    assert!(all.contains("no host was switched"), "{all}");
    fleet.assert_all_on(&v1);
    for host in HOSTS {
        assert_eq!(
            fleet.releases(host),
            vec![v1.clone()],
            "{host}: staged release removed"
        );
        assert!(fleet.debris(host).is_empty(), "{host}");
    }
    // Locks were released and nothing is in the way of the next deploy.
    let v2 = fleet.deploy_release(&good);
    fleet.assert_all_on(&v2);
}

#[test]
fn a_failing_health_check_on_one_host_rolls_every_host_back() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 5);
    let good = fleet.config("good.toml", "");
    let v1 = fleet.deploy_release(&good);

    // Nothing listens on port 9 of loopback: web3's check can never pass.
    let broken = fleet.config(
        "broken.toml",
        "@web3 health = { url = \"http://127.0.0.1:9/health\", timeout_seconds = 1 }\n",
    );
    write_app(&fleet.sb, "v2", 5);
    let out = fleet.run(&broken, &["deploy", "--json"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<(&str, &str)> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap(), h["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("web1", "rolled back"),
            ("web2", "rolled back"),
            ("web3", "failed")
        ]
    );
    fleet.assert_all_on(&v1);
    for host in HOSTS {
        let history =
            std::fs::read_to_string(fleet.host_path(host).join(".cutover/history.jsonl")).unwrap();
        assert!(history.contains("\"rolled_back\""), "{host}: {history}");
    }
}

/// Every entry under `root` with its type, size, mode, inode and mtime: any write shows.
fn metadata_of(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut entries = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path.clone());
            }
            entries.push(format!(
                "{} {:o} {} {} {}",
                path.display(),
                meta.mode(),
                meta.size(),
                meta.ino(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000
            ));
        }
    }
    entries.sort();
    entries
}

#[test]
fn a_dry_run_on_three_hosts_plans_each_and_changes_nothing() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 5);
    let config = fleet.config("fleet.toml", "");
    let hosts = fleet.sb.path().join("hosts");
    let dry_run = || {
        let before = metadata_of(&hosts);
        let json = fleet.deploy_json(&config, &["--dry-run", "--keep", "1"]);
        assert_eq!(before, metadata_of(&hosts), "a dry run changed a host");
        json
    };
    // On hosts never deployed to: a plan each, and not even a directory is created.
    let first = dry_run();
    assert_eq!(first["dry_run"], true);
    for host in first["hosts"].as_array().unwrap() {
        assert_eq!(host["status"], "planned", "{host}");
        assert_eq!(host["files"]["copied"], 6, "{host}");
        let warning = host["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains("uploads nothing"), "{host}");
    }
    assert!(!hosts.exists());

    let v1 = fleet.deploy_release(&config);
    write_app(&fleet.sb, "v2", 6);
    let second = dry_run();
    let hosts = second["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    for host in hosts {
        assert_eq!(host["status"], "planned", "{host}");
        // index.php and one new file would be sent; the rest linked.
        assert_eq!(host["files"]["copied"], 2, "{host}");
        assert_eq!(host["files"]["linked"], 5, "{host}");
        assert_eq!(host["previous"], v1.as_str(), "{host}");
        assert_eq!(host["cleanup"]["removed"], serde_json::json!([]), "{host}");
    }
    fleet.assert_all_on(&v1);
}

/// Shared paths are checked on every host before any byte is sent, as on a deploy path:
/// a shared file missing on one host stops the deploy everywhere.
#[test]
fn a_shared_file_missing_on_one_host_stops_the_deploy_everywhere() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 3);
    let config = fleet.config(
        "shared.toml",
        "[shared]\ndirs = [\"storage\"]\nfiles = [\".env\"]\n",
    );
    for host in ["web1", "web3"] {
        let shared = fleet.host_path(host).join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join(".env"), host).unwrap();
    }
    let out = fleet.run(&config, &["deploy"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("web2") && text(&out).contains(".env"),
        "{}",
        text(&out)
    );
    for host in HOSTS {
        assert_eq!(fleet.current(host), None, "{host}");
    }

    let shared = fleet.host_path("web2").join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join(".env"), "web2").unwrap();
    fleet.deploy_release(&config);
    for host in HOSTS {
        let current = fleet.host_path(host).join("current");
        assert_eq!(std::fs::read_to_string(current.join(".env")).unwrap(), host);
        assert!(
            current.join("storage").is_dir(),
            "{host}: storage is the shared dir"
        );
    }
}

#[test]
fn each_host_runs_its_hooks_under_its_own_name() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 3);
    let config = fleet.config(
        "hooks.toml",
        "[hooks]\nbefore_switch = ['echo \"$CUTOVER_HOST\" > host.txt']\n",
    );
    fleet.deploy_release(&config);
    for host in HOSTS {
        let seen = std::fs::read_to_string(fleet.host_path(host).join("current/host.txt")).unwrap();
        assert_eq!(seen, format!("{host}\n"));
    }
}

#[test]
fn an_unreachable_host_or_a_held_lock_changes_nothing_anywhere() {
    let mut fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 5);
    let config = fleet.config("fleet.toml", "");
    let v1 = fleet.deploy_release(&config);

    // web2's lock is held by another process.
    let lock = fleet.host_path("web2").join(".cutover/lock");
    // -o: the lock stays with flock itself (not `sleep`), so killing flock releases it.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    write_app(&fleet.sb, "v2", 5);
    let out = fleet.run(&config, &["deploy"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("web2") && text(&out).contains("lock"),
        "{}",
        text(&out)
    );
    fleet.assert_all_on(&v1);
    for host in HOSTS {
        assert_eq!(fleet.releases(host), vec![v1.clone()], "{host}");
    }

    // web3 is down.
    fleet.ssh.stop("web3").unwrap();
    let out = fleet.run(&config, &["deploy"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("web3"), "{}", text(&out));
    fleet.assert_all_on(&v1);
    for host in HOSTS {
        assert_eq!(fleet.releases(host), vec![v1.clone()], "{host}");
    }
    // The others were not left locked.
    let out = fleet.run(&config, &["deploy", "--host", "web1", "--host", "web2"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The pids of `parent`'s direct children.
fn children(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{parent}/task"))
        .into_iter()
        .flatten()
    {
        let path = task.unwrap().path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    pids
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn a_dropped_connection_or_a_killed_deploy_mid_transfer_leaves_complete_releases() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 5);
    let config = fleet.config("fleet.toml", "");
    let v1 = fleet.deploy_release(&config);

    // 48 MiB of new bytes per host: long enough to cut in the middle.
    for i in 0..12u64 {
        std::fs::write(
            fleet.sb.src().join(format!("big{i}.bin")),
            noise(50 + i, 4 << 20),
        )
        .unwrap();
    }
    let staging_on = |host: &str| !fleet.debris(host).is_empty();

    // 1. Drop web2's connection: kill its ssh client.
    let deploy = fleet
        .command(&config, &["deploy"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("web2 to start staging", Duration::from_secs(30), || {
        staging_on("web2")
    });
    let ssh = children(deploy.id())
        .into_iter()
        .find(|&pid| cmdline(pid).contains("ssh") && cmdline(pid).contains(" web2 "))
        .expect("the ssh client for web2");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(ssh as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let out = deploy.wait_with_output().unwrap();
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("web2"), "{}", text(&out));
    fleet.assert_all_on(&v1);

    // 2. Kill the deploying process itself.
    let mut deploy = fleet
        .command(&config, &["deploy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("staging to start", Duration::from_secs(30), || {
        HOSTS.iter().all(|h| staging_on(h))
    });
    deploy.kill().unwrap();
    deploy.wait().unwrap();
    fleet.assert_all_on(&v1);
    // The agents notice, drop their staging and release their locks.
    wait_until("agents to clean up", Duration::from_secs(20), || {
        HOSTS.iter().all(|h| !staging_on(h))
    });
    for host in HOSTS {
        assert_eq!(fleet.releases(host), vec![v1.clone()], "{host}");
    }

    // The next deploy works everywhere.
    let v2 = fleet.deploy_release(&config);
    fleet.assert_all_on(&v2);
    for host in HOSTS {
        let big = fleet.host_path(host).join("current/big11.bin");
        assert_eq!(std::fs::metadata(big).unwrap().len(), 4 << 20, "{host}");
    }
}

#[test]
fn a_deploy_killed_between_switch_and_commit_leaves_every_host_on_the_old_release() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 5);
    let good = fleet.config("good.toml", "");
    let v1 = fleet.deploy_release(&good);
    // web3's refresh takes 3 s: web1 and web2 have switched and wait for the commit.
    let slow = fleet.config(
        "slow.toml",
        "@web3 refresh = { strategy = [\"command\"], command = \"sleep 3\" }\n",
    );
    write_app(&fleet.sb, "v2", 5);
    let mut deploy = fleet
        .command(&slow, &["deploy", "--release", "v2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("every host to switch", Duration::from_secs(30), || {
        HOSTS
            .iter()
            .all(|h| fleet.current(h).as_deref() == Some("v2"))
    });
    deploy.kill().unwrap();
    deploy.wait().unwrap();
    // Nobody committed: each agent goes back when its session ends.
    wait_until("every host to go back", Duration::from_secs(20), || {
        HOSTS
            .iter()
            .all(|h| fleet.current(h).as_deref() == Some(v1.as_str()))
    });
    for host in HOSTS {
        let index = fleet.host_path(host).join("current/public/index.php");
        assert_eq!(
            std::fs::read_to_string(index).unwrap(),
            "<?php echo 'v1';\n"
        );
    }
    // And the next deploy works (web3's agent may still be refreshing for v1: queue).
    fleet.deploy_json(&good, &["--release", "v3", "--wait-lock", "20s"]);
    fleet.assert_all_on("v3");
}

/// Replaces web1's agent with a script that sends `reply` (raw frames) whatever it is
/// asked, as a compromised or broken host would.
fn plant_agent(fleet: &Fleet, reply: &[u8]) {
    let bin_dir = fleet.host_path("web1").join(".cutover/bin");
    let agent = std::fs::read_dir(&bin_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let frames = fleet.sb.path().join("hostile.bin");
    std::fs::write(&frames, reply).unwrap();
    std::fs::write(
        &agent,
        format!("#!/bin/sh\ncat '{}'\nsleep 5\n", frames.display()),
    )
    .unwrap();
}

pub(crate) fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub(crate) fn message(json: serde_json::Value) -> Vec<u8> {
    frame(1, &serde_json::to_vec(&json).unwrap())
}

fn hello() -> Vec<u8> {
    message(serde_json::json!({
        "reply": "hello", "protocol": cutover_protocol::PROTOCOL, "version": "0", "pid": 1, "hostname": "evil"
    }))
}

#[test]
fn hostile_agent_replies_are_refused_before_anything_is_acted_on() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 5);
    let config = fleet.config("fleet.toml", "");
    let v1 = fleet.deploy_release(&config);
    write_app(&fleet.sb, "v2", 5);
    let secret = fleet.sb.path().join("secret");
    std::fs::write(&secret, "not for the host").unwrap();

    let opened = message(serde_json::json!({
        "reply": "opened", "current": null, "releases": [], "manifest_digest": null
    }));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "oversized frame",
            [hello(), vec![1, 0x7f, 0xff, 0xff, 0xff]].concat(),
            "over the limit",
        ),
        (
            "release outside releases/",
            [
                hello(),
                message(serde_json::json!({
                    "reply": "opened", "current": "../../etc", "releases": [], "manifest_digest": null
                })),
            ]
            .concat(),
            "not safe",
        ),
        (
            "file outside the manifest",
            [
                hello(),
                opened.clone(),
                message(serde_json::json!({
                    "reply": "need", "release": "x", "previous": null, "need": [100000]
                })),
            ]
            .concat(),
            "outside the manifest",
        ),
    ];
    for (what, reply, expected) in cases {
        plant_agent(&fleet, &reply);
        let out = fleet.run(&config, &["deploy", "--release", "hostile"]);
        assert_eq!(exit_code(&out), 1, "{what}: {}", text(&out));
        let all = text(&out);
        assert!(
            all.contains("web1") && all.contains(expected),
            "{what}: {all}"
        );
        fleet.assert_all_on(&v1);
        for host in ["web2", "web3"] {
            assert_eq!(fleet.releases(host), vec![v1.clone()], "{what}: {host}");
        }
    }
}

fn body(url: &str) -> String {
    String::from_utf8_lossy(&cutover_teststack::http_get(url).unwrap().body).into_owned()
}

#[test]
fn each_host_refreshes_its_own_php_fpm_and_the_fleet_commands_act_on_every_host() {
    let fleet = Fleet::start();
    fleet.sb.write(
        "public/index.php",
        "<?php echo 'release ', trim(file_get_contents(__DIR__ . '/../RELEASE')), \"\\n\";\n",
    );
    let web1 = fleet.host_path("web1");
    std::fs::create_dir_all(&web1).unwrap();
    cutover_teststack::make_readable_by_workers(fleet.sb.path()).unwrap();
    let fpm = cutover_teststack::PhpFpm::start(cutover_teststack::FpmOptions::default()).unwrap();
    // $document_root through `current`: without a refresh OPcache keeps the old release.
    let nginx = cutover_teststack::Nginx::start(cutover_teststack::NginxOptions::new(
        std::fs::canonicalize(&web1).unwrap().join("current/public"),
        fpm.fastcgi_target(),
    ))
    .unwrap();
    let socket = fpm.unix_socket().unwrap().display().to_string();
    let url = nginx.url("/index.php");
    let php = format!(
        "@web1 php = {{ fpm = \"unix:{socket}\" }}\n@web1 health = {{ url = \"{url}\" }}\n"
    );
    let refreshed = fleet.config(
        "refreshed.toml",
        &format!("{php}@web1 refresh = {{ strategy = [\"opcache-reset\"] }}\n"),
    );
    let stale = fleet.config("stale.toml", &php);

    let v1 = fleet.deploy_json(&refreshed, &["--release", "v1"])["release"].clone();
    assert_eq!(body(&url), "release v1\n");
    let v2 = fleet.deploy_json(&refreshed, &["--release", "v2"]);
    assert_eq!(
        v2["hosts"][0]["refresh"]["steps"][0]["strategy"], "opcache-reset",
        "{v2}"
    );
    assert_eq!(body(&url), "release v2\n");

    // No refresh: web1's health check sees v2 still served, so every host goes back.
    let out = fleet.run(&stale, &["deploy", "--release", "v3"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("release v2"),
        "the check says what it saw: {}",
        text(&out)
    );
    fleet.assert_all_on("v2");

    // releases, php status, rollback and cleanup, each on every host.
    let out = fleet.run(&refreshed, &["releases", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let releases: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for host in releases["hosts"].as_array().unwrap() {
        assert_eq!(host["result"]["current"], "v2", "{host}");
    }
    let out = fleet.run(&refreshed, &["php", "status", "--host", "web1", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["hosts"][0]["result"]["status"]["opcache"]["enabled"], true,
        "{status}"
    );

    let out = fleet.run(&refreshed, &["rollback", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    fleet.assert_all_on(v1.as_str().unwrap());
    assert_eq!(body(&url), "release v1\n");
    let out = fleet.run(&refreshed, &["switch", "v2"]);
    assert!(out.status.success(), "{}", text(&out));
    fleet.assert_all_on("v2");
    assert_eq!(body(&url), "release v2\n");
    // verify flips every host at once under load, through the same switch and refresh.
    let out = fleet.run(
        &refreshed,
        &[
            "verify",
            "--url",
            &url,
            "--between",
            "v1,v2",
            "--duration",
            "2s",
            "--flip-every",
            "250ms",
            "--concurrency",
            "4",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["failed"], 0, "{verdict}");
    assert_eq!(verdict["mixed"], 0, "{verdict}");
    assert!(verdict["switches"].as_u64().unwrap() >= 4, "{verdict}");
    fleet.assert_all_on("v2");

    // v4 replaces v2; cleanup keeps current and the release it replaced, nothing else.
    fleet.deploy_json(&refreshed, &["--release", "v4", "--keep", "100"]);
    let out = fleet.run(&refreshed, &["cleanup", "--keep", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    for host in HOSTS {
        assert_eq!(
            fleet.releases(host),
            vec!["v2".to_string(), "v4".to_string()],
            "{host}"
        );
    }
    assert_eq!(body(&url), "release v4\n");
    drop(nginx);
    drop(fpm);
}

/// The lifecycle on three hosts: `once` hooks run first on one host (the first with one of
/// their roles), `roles` pick hosts, `--role` deploys only some, `after_switch` sees the
/// new release live everywhere, `on_failure` runs on every host of a deploy that failed,
/// `after_rollback` after a rollback, and `writable` gives the pool's user its ACL.
#[test]
fn once_roles_and_every_hook_phase_on_three_hosts() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 3);
    let log = fleet.sb.path().join("hooks.log");
    let hooks = |extra_before: &str, extra_after: &str| {
        format!(
            "@deploy writable = [\"storage\"]\n@deploy writable_user = \"nobody\"\n[hooks]\n\
             before_switch = [\n  \
               'echo \"all $CUTOVER_HOST\" >> {log}',\n  \
               {{ run = 'echo \"warm $CUTOVER_HOST\" >> {log}', roles = [\"web\"] }},\n  \
               {{ run = 'echo \"migrate $CUTOVER_HOST $(pwd -P)\" >> {log}', once = true, roles = [\"db\"] }},\n  \
               {{ run = 'echo \"notify $CUTOVER_HOST\" >> {log}', once = true }},\n{extra_before}]\n\
             after_switch = ['echo \"after $CUTOVER_HOST $(readlink \"$CUTOVER_DEPLOY_PATH/current\")\" >> {log}', {extra_after}]\n\
             on_failure = ['echo \"failed $CUTOVER_HOST $CUTOVER_FAILED_STEP\" >> {log}']\n\
             after_rollback = ['echo \"back $CUTOVER_HOST $CUTOVER_RELEASE\" >> {log}']\n",
            log = log.display()
        )
    };
    let roles =
        "@web1 roles = [\"web\"]\n@web2 roles = [\"web\", \"db\"]\n@web3 roles = [\"worker\"]\n";
    let config = fleet.config("lifecycle.toml", &format!("{roles}{}", hooks("", "")));
    let take_log = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        text.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let sorted = |lines: &[String]| {
        let mut lines = lines.to_vec();
        lines.sort();
        lines
    };
    let strings = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();

    let v1 = fleet.deploy_release(&config);
    let lines = take_log();
    let web2 = std::fs::canonicalize(fleet.host_path("web2")).unwrap();
    assert_eq!(lines.len(), 10, "{lines:#?}");
    // Once-entries first, each on its one host, before any host runs the others.
    assert_eq!(
        lines[..2],
        [
            format!("migrate web2 {}", web2.join("releases").join(&v1).display()),
            "notify web1".to_string(),
        ],
        "{lines:#?}"
    );
    assert_eq!(
        sorted(&lines[2..7]),
        strings(&["all web1", "all web2", "all web3", "warm web1", "warm web2"])
    );
    assert_eq!(
        sorted(&lines[7..]),
        ["web1", "web2", "web3"].map(|h| format!("after {h} releases/{v1}"))
    );
    for host in HOSTS {
        let storage = fleet
            .host_path(host)
            .join("releases")
            .join(&v1)
            .join("storage");
        let acl = Command::new("getfacl")
            .arg("-p")
            .arg(&storage)
            .output()
            .unwrap();
        let acl = String::from_utf8_lossy(&acl.stdout).into_owned();
        assert!(
            acl.contains("user:nobody:rwx") && acl.contains("default:user:nobody:rwx"),
            "{host}: {acl}"
        );
    }

    // --role web: web1 and web2 only; the once hook without roles goes to web1.
    write_app(&fleet.sb, "v2", 3);
    let json = fleet.deploy_json(&config, &["--role", "web"]);
    let v2 = json["release"].as_str().unwrap().to_string();
    assert_eq!(json["hosts"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(fleet.current("web1").as_deref(), Some(v2.as_str()));
    assert_eq!(fleet.current("web2").as_deref(), Some(v2.as_str()));
    assert_eq!(fleet.current("web3").as_deref(), Some(v1.as_str()));
    let lines = take_log();
    assert_eq!(
        lines[..2],
        [
            format!("migrate web2 {}", web2.join("releases").join(&v2).display()),
            "notify web1".to_string(),
        ],
        "{lines:#?}"
    );
    let mut expected = strings(&["all web1", "all web2", "warm web1", "warm web2"]);
    expected.extend(["web1", "web2"].map(|h| format!("after {h} releases/{v2}")));
    assert_eq!(sorted(&lines[2..]), sorted(&expected));

    // A before_switch hook fails on web3: on_failure runs on every host, nothing moves.
    write_app(&fleet.sb, "v3", 3);
    let failing = fleet.config(
        "before-fails.toml",
        &format!(
            "{roles}{}",
            hooks("  { run = 'exit 4', roles = [\"worker\"] },\n", "")
        ),
    );
    let out = fleet.run(&failing, &["deploy"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("web3"), "{}", text(&out));
    let lines = take_log();
    let failed: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("failed"))
        .cloned()
        .collect();
    assert_eq!(
        sorted(&failed),
        ["web1", "web2", "web3"].map(|h| format!("failed {h} before_switch"))
    );
    assert!(lines.iter().all(|l| !l.starts_with("after")), "{lines:#?}");
    assert_eq!(fleet.current("web1").as_deref(), Some(v2.as_str()));
    assert_eq!(fleet.current("web3").as_deref(), Some(v1.as_str()));
    for host in HOSTS {
        assert!(fleet.debris(host).is_empty(), "{host}");
        assert!(
            fleet.releases(host).len() <= 2,
            "{host}: {:?}",
            fleet.releases(host)
        );
    }

    // after_rollback on the hosts that went back.
    let out = fleet.run(&config, &["rollback", "--role", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        sorted(&take_log()),
        ["web1", "web2"].map(|h| format!("back {h} {v1}"))
    );
    fleet.assert_all_on(&v1);

    // An after_switch hook fails on web3: exit 1 naming it, the release stays live.
    let after_fails = fleet.config(
        "after-fails.toml",
        &format!(
            "{roles}{}",
            hooks("", "{ run = 'exit 5', roles = [\"worker\"] }")
        ),
    );
    let json_out = fleet.run(&after_fails, &["deploy", "--json"]);
    assert_eq!(exit_code(&json_out), 1, "{}", text(&json_out));
    let err = stderr(&json_out);
    assert!(
        err.contains("web3") && err.contains("after_switch"),
        "{err}"
    );
    let v4 = fleet.current("web1").unwrap();
    assert_ne!(v4, v1);
    fleet.assert_all_on(&v4);
}

/// A commit of a git repository, deployed to three hosts: each gets exactly its tree, and
/// each host's history records the commit, the ref and the author.
#[test]
fn a_git_ref_is_deployed_to_every_host_with_its_commit_in_each_history() {
    let fleet = Fleet::start();
    let root = fleet.sb.path();
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=Ann Author",
                "-c",
                "user.email=ann@example.com",
            ])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(root, &["init", "-q", "--bare", "app.git"]);
    git(root, &["clone", "-q", "app.git", "app"]);
    let work = root.join("app");
    std::fs::create_dir_all(work.join("public")).unwrap();
    std::fs::write(work.join("public/index.php"), "<?php echo 'tagged';\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["tag", "v1.0"]);
    let commit = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("public/index.php"), "<?php echo 'later';\n").unwrap();
    git(&work, &["commit", "-q", "-am", "second"]);
    git(&work, &["push", "-q", "--tags", "origin", "main"]);

    let config = fleet.config(
        "git.toml",
        &format!(
            "@deploy repository = {:?}\n",
            root.join("app.git").display().to_string()
        ),
    );
    let json = fleet.deploy_json(&config, &["--ref", "v1.0"]);
    let release = json["release"].as_str().unwrap();
    fleet.assert_all_on(release);
    let listed = fleet.run(&config, &["releases", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    for host in listed["hosts"].as_array().unwrap() {
        let row = &host["result"]["releases"][0];
        assert_eq!(row["git_commit"], commit.as_str(), "{host}");
        assert_eq!(row["git_ref"], "v1.0", "{host}");
        assert_eq!(
            row["git_author"].as_str().map(|a| a.contains("Ann Author")),
            Some(true),
            "{host}"
        );
        let name = host["host"].as_str().unwrap();
        let index = fleet.host_path(name).join("current/public/index.php");
        assert_eq!(
            std::fs::read_to_string(index).unwrap(),
            "<?php echo 'tagged';\n"
        );
    }
}

/// A Laravel-shaped app, after `cutover init` and one deploy to three hosts: the config
/// cache names `releases/<id>`, migrations ran once across the hosts, `queue:restart` ran
/// on every host after the switch, `storage` and `.env` are shared and `storage` is
/// writable for the pool's user (www-data: no pool is configured here).
#[test]
fn the_laravel_preset_on_three_hosts() {
    use crate::test_presets::{ARTISAN, COMPOSER};
    let fleet = Fleet::start();
    let sb = &fleet.sb;
    sb.write("artisan", ARTISAN);
    sb.write(
        "composer.json",
        r#"{"require": {"laravel/framework": "^11.0"}}"#,
    );
    sb.write("public/index.php", "<?php echo 'shop';\n");
    let report = sb.json(&["init", &sb.src_arg()]);
    assert_eq!(report["preset"], "laravel", "{report}");
    let composer = sb.path().join("bin/composer");
    write(&composer, COMPOSER);
    std::fs::set_permissions(
        &composer,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The preset as written, with this fleet's hosts (and the composer stand-in).
    let preset = std::fs::read_to_string(sb.src().join("cutover.toml"))
        .unwrap()
        .replace(
            "\"composer install",
            &format!("\"{} install", composer.display()),
        );
    let hosts = std::fs::read_to_string(fleet.config("hosts.toml", "")).unwrap();
    let config = sb.config("laravel.toml", &merge_tables(&preset, &hosts));
    for host in HOSTS {
        write(
            &fleet.host_path(host).join("shared/.env"),
            "APP_ENV=production\n",
        );
    }
    let release = fleet.deploy_release(&config);
    fleet.assert_all_on(&release);

    let mut migrated = 0;
    for host in HOSTS {
        let root = std::fs::canonicalize(fleet.host_path(host)).unwrap();
        let dir = root.join("releases").join(&release);
        let cached = std::fs::read_to_string(dir.join("bootstrap/cache/config.php")).unwrap();
        assert!(
            cached.contains(&format!("'{}'", dir.display())),
            "{host}: {cached}"
        );
        assert_eq!(
            std::fs::read_link(dir.join(".env")).unwrap(),
            Path::new("../../shared/.env")
        );
        let storage = root.join("shared/storage");
        assert_eq!(
            std::fs::read_link(dir.join("storage")).unwrap(),
            Path::new("../../shared/storage")
        );
        migrated += std::fs::read_to_string(storage.join("migrations.log"))
            .unwrap_or_default()
            .lines()
            .count();
        assert_eq!(
            std::fs::read_to_string(storage.join("queue-restarts.log")).unwrap(),
            format!("{host} {release} releases/{release}\n")
        );
        let acl = Command::new("getfacl")
            .arg("-p")
            .arg(&storage)
            .output()
            .unwrap();
        let acl = String::from_utf8_lossy(&acl.stdout).into_owned();
        assert!(acl.contains("user:www-data:rwx"), "{host}: {acl}");
    }
    assert_eq!(migrated, 1, "migrations ran once across the hosts");
}

/// `base` with the tables of `extra` added, a table both have ([deploy]) merged.
fn merge_tables(base: &str, extra: &str) -> String {
    let mut doc: toml_edit::DocumentMut = base.parse().unwrap();
    let extra: toml_edit::DocumentMut = extra.parse().unwrap();
    for (key, item) in extra.iter() {
        match (
            doc.get_mut(key).and_then(|i| i.as_table_mut()),
            item.as_table(),
        ) {
            (Some(table), Some(more)) => {
                for (k, v) in more.iter() {
                    table.insert(k, v.clone());
                }
            }
            _ => {
                doc.insert(key, item.clone());
            }
        }
    }
    doc.to_string()
}
