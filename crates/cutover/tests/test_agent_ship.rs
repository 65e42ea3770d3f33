//! Where a host's agent comes from (issue 13): an installed one (nothing uploaded), one of
//! another version (refused before anything is staged), the file of `[ssh] agent_binaries`
//! for the host's platform, and the upload's compression. Real sshd hosts on 127.0.0.1.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::{exit_code, text};
use crate::test_fleet::{message, write_app, Fleet, HOSTS};

/// A config with every host over ssh; `ssh` lines go into `[ssh]`, `host(name)` lines into
/// each `[hosts.NAME]`.
fn config(fleet: &Fleet, name: &str, ssh: &str, host: impl Fn(&str) -> String) -> String {
    let mut text = format!(
        "[deploy]\nsource = {:?}\n\n[ssh]\noptions = [\"-F\", {:?}]\n{ssh}\n",
        fleet.sb.src().display().to_string(),
        fleet.ssh.ssh_config().display().to_string(),
    );
    for name in HOSTS {
        text.push_str(&format!(
            "\n[hosts.{name}]\nssh = \"{name}\"\npath = {:?}\n{}\n",
            fleet.host_path(name).display().to_string(),
            host(name)
        ));
    }
    fleet.sb.config(name, &text)
}

/// A copy of the binary under test, with `tail` appended (an ELF runs the same with bytes
/// after its sections, and hashes differently).
fn copy_of_cutover(to: &Path, tail: &[u8]) -> PathBuf {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_cutover"), to).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(to)
        .unwrap()
        .write_all(tail)
        .unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to.to_path_buf()
}

fn agents(fleet: &Fleet, host: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fleet.host_path(host).join(".cutover/bin"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn uname_sm() -> String {
    let out = std::process::Command::new("uname")
        .arg("-sm")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn an_installed_agent_is_run_where_it_is_and_nothing_is_uploaded() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 3);
    let installed = copy_of_cutover(&fleet.sb.path().join("opt/bin/cutover"), b"");
    let ssh = format!(
        "agent = \"installed\"\nagent_path = {:?}",
        installed.display().to_string()
    );
    let cfg = config(&fleet, "installed.toml", &ssh, |_| String::new());
    let json = fleet.deploy_json(&cfg, &[]);
    let release = json["release"].as_str().unwrap();
    for (index, host) in HOSTS.iter().enumerate() {
        assert_eq!(fleet.current(host).as_deref(), Some(release), "{host}");
        assert!(agents(&fleet, host).is_empty(), "{host}: nothing uploaded");
        assert!(json["hosts"][index].get("agent_upload").is_none(), "{json}");
    }

    // A per-host path that holds no agent: that host cannot start, so nobody moves on.
    write_app(&fleet.sb, "v2", 3);
    let cfg = config(&fleet, "missing.toml", &ssh, |name| {
        if name == "web3" {
            "agent_path = \"/nonexistent/cutover\"".to_string()
        } else {
            String::new()
        }
    });
    let out = fleet.run(&cfg, &["deploy"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("web3") && all.contains("/nonexistent/cutover") && all.contains("install"),
        "{all}"
    );
    for host in HOSTS {
        assert_eq!(fleet.current(host).as_deref(), Some(release), "{host}");
        assert_eq!(fleet.releases(host), vec![release.to_string()], "{host}");
    }
}

#[test]
fn an_agent_of_another_protocol_is_refused_before_any_host_stages() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 3);
    // First contact with the default `upload`: cutover sends the agent-only build beside
    // it, compressed.
    let cfg = config(&fleet, "upload.toml", "", |_| String::new());
    let json = fleet.deploy_json(&cfg, &[]);
    let v1 = json["release"].as_str().unwrap().to_string();
    let agent = Path::new(env!("CARGO_BIN_EXE_cutover")).with_file_name("cutover-agent");
    let size = std::fs::metadata(&agent).unwrap().len();
    for (index, host) in HOSTS.iter().enumerate() {
        let upload = &json["hosts"][index]["agent_upload"];
        assert_eq!(upload["size"].as_u64(), Some(size), "{host}: {json}");
        assert_eq!(upload["platform"].as_str(), Some(uname_sm().as_str()));
        let sent = upload["bytes_sent"].as_u64().unwrap();
        // A debug build compresses to ~30 % (a release build to ~34 % of 11 MB).
        assert!(
            (sent as f64) < 0.5 * size as f64,
            "{host}: {sent} bytes sent for an agent of {size}"
        );
        assert_eq!(agents(&fleet, host).len(), 1, "{host}");
    }

    // An "old" cutover installed on web2: its hello names protocol 2.
    let hello = message(serde_json::json!({
        "reply": "hello", "protocol": 2, "version": "0.0.9", "pid": 1, "hostname": "old"
    }));
    // One that checks our protocol first and refuses it.
    let refusal = message(serde_json::json!({
        "reply": "failed", "message": "the peer speaks protocol 3; this cutover speaks 4",
        "causes": [], "hints": [], "usage": true
    }));
    for (what, reply, expected) in [
        ("old hello", hello, vec!["0.0.9", "protocol 2"]),
        ("refusal", refusal, vec!["refused", "speaks protocol 3"]),
    ] {
        let frames = fleet.sb.path().join("old-agent.frames");
        std::fs::write(&frames, reply).unwrap();
        let old = fleet.sb.path().join("old-cutover");
        std::fs::write(
            &old,
            format!("#!/bin/sh\ncat '{}'\nsleep 5\n", frames.display()),
        )
        .unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        write_app(&fleet.sb, "v2", 3);
        let cfg = config(&fleet, "old.toml", "", |name| {
            if name == "web2" {
                format!(
                    "agent = \"installed\"\nagent_path = {:?}",
                    old.display().to_string()
                )
            } else {
                String::new()
            }
        });
        let out = fleet.run(&cfg, &["deploy", "--release", "v2"]);
        assert_eq!(exit_code(&out), 1, "{what}: {}", text(&out));
        let all = text(&out);
        let ours = format!(
            "cutover {VERSION} (protocol {})",
            cutover_protocol::PROTOCOL
        );
        for part in expected.iter().chain([&"web2", &ours.as_str(), &"hint:"]) {
            assert!(all.contains(part), "{what}: no {part:?} in {all}");
        }
        for host in HOSTS {
            assert_eq!(fleet.current(host).as_deref(), Some(v1.as_str()), "{host}");
            assert_eq!(fleet.releases(host), vec![v1.clone()], "{what}: {host}");
        }
    }
}

#[test]
fn agent_binaries_upload_the_file_for_the_host_platform_and_name_a_missing_one() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 3);
    let platform = uname_sm();
    let file = copy_of_cutover(
        &fleet.sb.path().join("dist/cutover-here"),
        b"\0agent_binaries test copy",
    );
    let hash = blake3::hash(&std::fs::read(&file).unwrap()).to_hex();
    let expected_name = format!("cutover-{VERSION}-{}", &hash[..16]);
    // Relative to the config file (the sandbox root).
    let ssh = format!("agent_binaries = {{ {platform:?} = \"dist/cutover-here\" }}");
    let cfg = config(&fleet, "binaries.toml", &ssh, |_| String::new());
    let json = fleet.deploy_json(&cfg, &[]);
    let v1 = json["release"].as_str().unwrap().to_string();
    let copy = std::fs::read(&file).unwrap();
    for (index, host) in HOSTS.iter().enumerate() {
        assert_eq!(agents(&fleet, host), vec![expected_name.clone()], "{host}");
        let uploaded = fleet
            .host_path(host)
            .join(".cutover/bin")
            .join(&expected_name);
        assert!(
            std::fs::read(uploaded).unwrap() == copy,
            "{host}: the file as it is"
        );
        let upload = &json["hosts"][index]["agent_upload"];
        assert!(
            upload["file"]
                .as_str()
                .unwrap()
                .ends_with("dist/cutover-here"),
            "{json}"
        );
        assert!(upload["bytes_sent"].as_u64().unwrap() < copy.len() as u64 / 2);
        assert_eq!(fleet.current(host), Some(v1.clone()));
    }

    // Only other platforms listed: refused, naming the host's platform and the keys.
    let other = if platform == "Linux aarch64" {
        "Linux x86_64"
    } else {
        "Linux aarch64"
    };
    write_app(&fleet.sb, "v2", 3);
    let ssh = format!("agent_binaries = {{ {other:?} = \"dist/cutover-here\" }}");
    let cfg = config(&fleet, "other.toml", &ssh, |_| String::new());
    let out = fleet.run(&cfg, &["deploy"]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains(&platform) && all.contains(other) && all.contains("agent_binaries"),
        "{all}"
    );

    // A file for this platform that is not executable: checked before it is sent.
    let broken = fleet.sb.path().join("dist/not-executable");
    std::fs::write(&broken, b"\x7fELF not really").unwrap();
    let ssh = format!("agent_binaries = {{ {platform:?} = \"dist/not-executable\" }}");
    let cfg = config(&fleet, "broken.toml", &ssh, |_| String::new());
    let out = fleet.run(&cfg, &["deploy"]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("is not executable"), "{}", text(&out));
    for host in HOSTS {
        assert_eq!(fleet.current(host), Some(v1.clone()), "{host}");
        assert_eq!(fleet.releases(host), vec![v1.clone()], "{host}");
        assert_eq!(agents(&fleet, host), vec![expected_name.clone()], "{host}");
    }
}

/// A cutover without an agent of its own build beside it (here a stale file that answers
/// another version) uploads itself, and the deploy works the same.
#[test]
fn cutover_uploads_itself_when_no_agent_of_its_build_is_beside_it() {
    let fleet = Fleet::start();
    write_app(&fleet.sb, "v1", 3);
    let cfg = config(&fleet, "default.toml", "", |_| String::new());
    let alone = copy_of_cutover(&fleet.sb.path().join("alone/cutover"), b"");
    let stale = alone.with_file_name("cutover-agent");
    std::fs::write(&stale, "#!/bin/sh\necho cutover-agent 0.0.1 protocol 1\n").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&alone)
        .current_dir(fleet.sb.path())
        .env("XDG_CACHE_HOME", fleet.sb.path().join("cache"))
        .args(["--config", &cfg, "deploy", "--release", "v1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let itself = std::fs::read(&alone).unwrap();
    for host in HOSTS {
        assert_eq!(fleet.current(host).as_deref(), Some("v1"), "{host}");
        let names = agents(&fleet, host);
        assert_eq!(names.len(), 1, "{host}: {names:?}");
        let uploaded = fleet.host_path(host).join(".cutover/bin").join(&names[0]);
        assert!(std::fs::read(uploaded).unwrap() == itself, "{host}");
    }
}

/// First contact (the agent uploaded) costs each host one ssh login, like every later
/// deploy: the upload and the session go through the first connection, and no ssh is
/// left running when cutover exits.
#[test]
fn a_first_contact_is_one_ssh_login_per_host_and_leaves_no_ssh_running() {
    let fleet = Fleet::start();
    let logins = |host: &str| fleet.ssh.log(host).matches("Accepted publickey").count();
    let before: Vec<usize> = HOSTS.iter().map(|h| logins(h)).collect();
    write_app(&fleet.sb, "v1", 3);
    let cfg = config(&fleet, "default.toml", "", |_| String::new());
    let json = fleet.deploy_json(&cfg, &["--release", "v1"]);
    for (index, host) in HOSTS.iter().enumerate() {
        assert!(json["hosts"][index]["agent_upload"].is_object(), "{json}");
        assert_eq!(
            logins(host),
            before[index] + 1,
            "{host}: {}",
            fleet.ssh.log(host)
        );
    }
    let ours = fleet.ssh.ssh_config().display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.starts_with("ssh ") && cmdline.contains(&ours))
        .collect();
    assert!(left.is_empty(), "ssh still running: {left:?}");

    write_app(&fleet.sb, "v2", 3);
    fleet.deploy_json(&cfg, &["--release", "v2"]);
    for (index, host) in HOSTS.iter().enumerate() {
        assert_eq!(logins(host), before[index] + 2, "{host}");
        assert_eq!(fleet.current(host).as_deref(), Some("v2"), "{host}");
    }
}
