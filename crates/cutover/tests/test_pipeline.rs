//! One pipeline for a deploy path and for a fleet: the same scenario run on a local path
//! (`--to`) and on a one-host fleet over a real sshd gives the same history and the same
//! `--json` keys; cleanup waits for every check; a dry run on several hosts changes
//! nothing anywhere.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// Every key path of a JSON document (`hosts[].files.linked`), values ignored.
fn key_paths(value: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, at: String, into: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    let path = if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    };
                    into.insert(path.clone());
                    walk(inner, path, into);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, format!("{at}[]"), into);
                }
            }
            _ => {}
        }
    }
    let mut paths = BTreeSet::new();
    walk(value, String::new(), &mut paths);
    paths
}

/// The history as (event, release, previous), without who and when.
fn events(deploy: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(deploy.join(".cutover/history.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let e: Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (field("event"), field("release"), field("previous"))
        })
        .collect()
}

/// The scenario, run with `config` (which names the deploy path or the host): the JSON
/// of each command.
fn scenario(sb: &Sandbox, config: &str, extra: &[&str], fpm: &str) -> Vec<(String, Value)> {
    let run = |args: &[&str]| -> Value {
        let mut all = vec!["--config", config];
        all.extend_from_slice(args);
        all.extend_from_slice(extra);
        all.push("--json");
        let mut cmd = sb.cutover();
        cmd.env("XDG_CACHE_HOME", sb.path().join("cache"));
        let out = cmd.args(&all).output().unwrap();
        assert!(out.status.success(), "{all:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mut docs = Vec::new();
    for id in ["r1", "r2", "r3"] {
        sb.write("public/index.php", &format!("<?php echo '{id}';\n"));
        docs.push((
            format!("deploy {id}"),
            run(&["deploy", "--release", id, "--keep", "2"]),
        ));
    }
    docs.push(("switch".into(), run(&["switch", "r2"])));
    docs.push(("rollback".into(), run(&["rollback", "r3"])));
    docs.push(("cleanup".into(), run(&["cleanup", "--keep", "1"])));
    docs.push(("releases".into(), run(&["releases"])));
    docs.push(("php status".into(), run(&["php", "status", "--fpm", fpm])));
    docs
}

#[test]
fn a_deploy_path_and_a_one_host_fleet_give_the_same_history_and_json_keys() {
    let sb = Sandbox::new();
    let ssh = cutover_teststack::SshHosts::start(&["web1"]).expect("start sshd");
    let local_path = sb.path().join("local");
    let remote_path = sb.path().join("remote");
    std::fs::create_dir_all(&local_path).unwrap();
    std::fs::create_dir_all(&remote_path).unwrap();
    cutover_teststack::make_readable_by_workers(sb.path()).unwrap();
    let fpm = cutover_teststack::PhpFpm::start(cutover_teststack::FpmOptions::default()).unwrap();
    let socket = format!("unix:{}", fpm.unix_socket().unwrap().display());
    let source = format!("[deploy]\nsource = {:?}\n", sb.src().display().to_string());
    let local = sb.config("local.toml", &source);
    let remote = sb.config(
        "remote.toml",
        &format!(
            "{source}\n[ssh]\noptions = [\"-F\", {:?}]\n\n[hosts.web1]\nssh = \"web1\"\npath = {:?}\n",
            ssh.ssh_config().display().to_string(),
            remote_path.display().to_string()
        ),
    );
    let to = local_path.display().to_string();
    let on_path = scenario(&sb, &local, &["--to", &to], &socket);
    let on_fleet = scenario(&sb, &remote, &[], &socket);

    assert_eq!(events(&local_path), events(&remote_path));
    assert!(events(&local_path).len() >= 6, "{:?}", events(&local_path));
    // What only ssh has: the agent cutover uploaded on first contact.
    let shared_keys = |doc: &serde_json::Value| {
        let mut keys = key_paths(doc);
        keys.retain(|k| !k.starts_with("hosts[].agent_upload"));
        keys
    };
    for ((what, a), (_, b)) in on_path.iter().zip(&on_fleet) {
        assert_eq!(
            shared_keys(a),
            shared_keys(b),
            "{what}:\nlocal: {a}\nfleet: {b}"
        );
    }
    // And the same values where they do not name the host or time it.
    let last = |docs: &[(String, Value)]| docs[6].1["hosts"][0]["result"]["releases"].clone();
    let ids = |rows: Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(last(&on_path)), ids(last(&on_fleet)));
    drop(fpm);
}

#[test]
fn a_deploy_whose_health_check_fails_keeps_every_earlier_release() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;\n");
    let keep = sb.config("keep.toml", "[deploy]\nkeep_releases = 2\n");
    for id in ["r1", "r2", "r3"] {
        assert_eq!(
            exit_code(&sb.run_deploy(&["--config", &keep, "--release", id])),
            0
        );
    }
    // keep_releases is reached: r1 went when r3 came.
    assert_eq!(sb.releases(), ["r2", "r3"]);
    // Nothing listens on port 9 of loopback: the check can never pass.
    let broken = sb.config(
        "broken.toml",
        "[deploy]\nkeep_releases = 2\n[health]\nurl = \"http://127.0.0.1:9/health\"\ntimeout_seconds = 1\n",
    );
    let out = sb.run_deploy(&["--config", &broken, "--release", "r4"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(
        stderr(&out).contains("switched back to r3"),
        "{}",
        text(&out)
    );
    assert_eq!(sb.current().as_deref(), Some("r3"));
    // Cleanup runs only after every check passed: r2 is still there (and r4, which was
    // live for the length of the check, stays to be looked at).
    assert_eq!(sb.releases(), ["r2", "r3", "r4"]);
}
