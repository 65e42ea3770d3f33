//! Living with several releases: cleanup and what it protects, rollback and switch, the
//! history they record (`.cutover/history.jsonl`), and adopting deploy paths that Capistrano or Deployer laid out.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;

fn ids(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn events(sb: &Sandbox, kind: &str) -> Vec<Value> {
    sb.history()
        .into_iter()
        .filter(|e| e["event"] == kind)
        .collect()
}

#[test]
fn cleanup_keeps_newest_current_and_the_release_current_replaced() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.deploy_ids(&["r1", "r2", "r3", "r4", "r5", "r6", "r7"]);
    // current is old and replaced another old one: both only survive by protection.
    sb.json_to(&["switch", "r2"]);
    let switched = sb.json_to(&["switch", "r4"]);
    assert_eq!(switched["previous"], "r2");

    let before = sb.exact();
    let dry = sb.json_to(&["cleanup", "--keep", "2", "--dry-run"]);
    before.assert_same(&sb.exact(), "cleanup --dry-run");
    assert_eq!(
        ids(&one_host(&dry)["cleanup"]["removed"]),
        ["r1", "r3", "r5"]
    );
    assert_eq!(
        ids(&one_host(&dry)["cleanup"]["kept"]),
        ["r2", "r4", "r6", "r7"]
    );
    assert_eq!(dry["dry_run"], true);

    let report = sb.json_to(&["cleanup", "--keep", "2"]);
    assert_eq!(
        ids(&one_host(&report)["cleanup"]["removed"]),
        ["r1", "r3", "r5"]
    );
    assert_eq!(
        ids(&one_host(&report)["cleanup"]["kept"]),
        ["r2", "r4", "r6", "r7"]
    );
    assert_eq!(report["dry_run"], false);
    assert_eq!(sb.releases(), ["r2", "r4", "r6", "r7"]);
    assert_eq!(sb.current().as_deref(), Some("r4"));
    let removed: Vec<String> = events(&sb, "removed")
        .iter()
        .map(|e| e["release"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        removed,
        ["r1", "r3", "r5"],
        "one `removed` event per release"
    );
    let trash = sb.deploy().join(".cutover/trash");
    assert_eq!(
        std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0),
        0,
        "removed releases must not linger in the trash"
    );

    let again = sb.json_to(&["cleanup", "--keep", "2"]);
    assert_eq!(
        ids(&one_host(&again)["cleanup"]["removed"]),
        Vec::<String>::new()
    );
}

#[test]
fn deploy_with_keep_cleans_up_but_protects_the_release_it_replaced() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.deploy_ids(&["r1", "r2", "r3", "r4"]);
    sb.json_to(&["switch", "r1"]);
    let report = sb.json(&[
        "deploy",
        &sb.src_arg(),
        "--to",
        &sb.to(),
        "--release",
        "r5",
        "--keep",
        "2",
    ]);
    assert_eq!(report["previous"], "r1");
    assert_eq!(ids(&one_host(&report)["cleanup"]["removed"]), ["r2", "r3"]);
    assert_eq!(sb.releases(), ["r1", "r4", "r5"]);
    assert_eq!(sb.current().as_deref(), Some("r5"));
}

#[test]
fn rollback_goes_to_the_release_before_current_or_the_one_named() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.deploy_ids(&["r1", "r2", "r3"]);

    let back = sb.json_to(&["rollback"]);
    assert_eq!(
        (&back["release"], &back["previous"]),
        (&json!("r2"), &json!("r3"))
    );
    assert_eq!(sb.current().as_deref(), Some("r2"));
    sb.json_to(&["rollback"]);
    assert_eq!(sb.current().as_deref(), Some("r1"));
    let named = sb.json_to(&["rollback", "r3"]);
    assert_eq!(
        (&named["release"], &named["previous"]),
        (&json!("r3"), &json!("r1"))
    );
    assert_eq!(sb.current().as_deref(), Some("r3"));
    let link = std::fs::read_link(sb.deploy().join("current")).unwrap();
    assert_eq!(link, Path::new("releases/r3"));

    let rolled: Vec<(Value, Value)> = events(&sb, "rolled_back")
        .into_iter()
        .map(|e| (e["release"].clone(), e["previous"].clone()))
        .collect();
    assert_eq!(
        rolled,
        [
            (json!("r2"), json!("r3")),
            (json!("r1"), json!("r2")),
            (json!("r3"), json!("r1"))
        ]
    );
    assert_eq!(
        sb.releases(),
        ["r1", "r2", "r3"],
        "rollback removes nothing"
    );
}

#[test]
fn rollback_with_a_single_release_is_refused_with_a_hint() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.deploy_ids(&["r1"]);
    let before = sb.state();
    let out = sb.run_to(&["rollback"]);
    assert_refused(&out, 2, &["r1"], "");
    before.assert_same(&sb.state(), "a refused rollback");
    assert_eq!(sb.current().as_deref(), Some("r1"));
}

#[test]
fn switch_to_an_unknown_release_lists_the_available_ones() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.deploy_ids(&["r1", "r2"]);
    let before = sb.state();
    let out = sb.run_to(&["switch", "nope"]);
    assert_refused(&out, 2, &["nope"], "available releases: r1, r2");
    let out = sb.run_to(&["rollback", "nope"]);
    assert_refused(&out, 2, &["nope"], "available releases: r1, r2");
    let out = sb.run_to(&["switch", "../r1"]);
    assert_refused(&out, 2, &["../r1"], "letters, digits");
    before.assert_same(&sb.state(), "a refused switch");
    assert_eq!(sb.current().as_deref(), Some("r2"));
}

#[test]
fn switch_to_the_current_release_changes_nothing() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.deploy_ids(&["r1", "r2"]);
    let events_before = sb.history().len();
    let same = sb.json_to(&["switch", "r2"]);
    assert_eq!(one_host(&same)["unchanged"], true);
    assert_eq!(
        sb.history().len(),
        events_before,
        "no event for a no-op switch"
    );
}

/// A deploy path as Capistrano 3 leaves it: timestamp ids, an absolute `current`.
fn capistrano_path(sb: &Sandbox) {
    let d = sb.deploy();
    for (id, body) in [("20230101120000", "v1"), ("20230102120000", "v2")] {
        write(&d.join("releases").join(id).join("index.php"), body);
        write(&d.join("releases").join(id).join("REVISION"), "abc123\n");
    }
    std::fs::create_dir_all(d.join("shared/storage")).unwrap();
    write(&d.join("repo/HEAD"), "ref: refs/heads/main\n");
    write(
        &d.join("revisions.log"),
        "Branch main (at abc122) deployed as release 20230101120000 by deploy\n\
         Branch main (at abc123) deployed as release 20230102120000 by deploy\n",
    );
    std::os::unix::fs::symlink(d.join("releases/20230102120000"), d.join("current")).unwrap();
}

#[test]
fn capistrano_path_is_adopted_listed_deployed_and_rolled_back() {
    let sb = Sandbox::new();
    sb.write("index.php", "v3");
    capistrano_path(&sb);

    let listed = sb.json_to(&["releases"]);
    let listed = one_result(&listed);
    assert_eq!(listed["flavor"], "capistrano");
    assert_eq!(listed["current"], "20230102120000");
    assert_eq!(
        listed["current_target"],
        sb.deploy()
            .join("releases/20230102120000")
            .display()
            .to_string()
    );
    let rows = listed["releases"].as_array().unwrap();
    let listed_ids: Vec<_> = rows.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(
        listed_ids,
        [json!("20230101120000"), json!("20230102120000")]
    );
    let marks: Vec<_> = rows.iter().map(|r| r["current"].clone()).collect();
    assert_eq!(marks, [json!(false), json!(true)]);
    assert!(
        !sb.deploy().join(".cutover").exists(),
        "listing must not write to the deploy path"
    );

    let new = sb.deploy_src(&[]);
    assert!(new.as_str() > "20230102120000", "{new}");
    assert_eq!(
        std::fs::read_link(sb.deploy().join("current")).unwrap(),
        Path::new("releases").join(&new),
        "cutover writes a relative link"
    );
    assert_eq!(
        std::fs::read_to_string(sb.deploy().join("current/index.php")).unwrap(),
        "v3"
    );
    assert!(sb.deploy().join("repo/HEAD").is_file());
    assert!(sb.deploy().join("shared/storage").is_dir());
    let log = std::fs::read_to_string(sb.deploy().join("revisions.log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.lines().last().unwrap().contains(&new), "{log}");

    let back = sb.json_to(&["rollback"]);
    assert_eq!(back["release"], "20230102120000");
    assert_eq!(back["previous"], json!(new));
    assert_eq!(sb.current().as_deref(), Some("20230102120000"));
    assert_eq!(
        std::fs::read_to_string(sb.deploy().join("current/index.php")).unwrap(),
        "v2"
    );
    let log = std::fs::read_to_string(sb.deploy().join("revisions.log")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    assert!(
        log.lines()
            .last()
            .unwrap()
            .contains("rolled back to release 20230102120000"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.release_dir("20230101120000").join("index.php")).unwrap(),
        "v1"
    );
}

#[test]
fn deployer_path_orders_numeric_ids_numerically() {
    let sb = Sandbox::new();
    let d = sb.deploy();
    for n in 1..=10 {
        write(&d.join(format!("releases/{n}/index.php")), &n.to_string());
    }
    std::fs::create_dir_all(d.join(".dep")).unwrap();
    write(&d.join(".dep/latest_release"), "10");
    std::fs::create_dir_all(d.join("shared")).unwrap();
    std::os::unix::fs::symlink("releases/10", d.join("current")).unwrap();

    let listed = sb.json_to(&["releases"]);
    let listed = one_result(&listed);
    assert_eq!(listed["flavor"], "deployer");
    assert_eq!(listed["current"], "10");
    let order: Vec<String> = listed["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=10).map(|n| n.to_string()).collect();
    assert_eq!(order, expected, "10 sorts after 9");

    let back = sb.json_to(&["rollback"]);
    assert_eq!(
        (&back["release"], &back["previous"]),
        (&json!("9"), &json!("10"))
    );
    assert_eq!(sb.current().as_deref(), Some("9"));
    assert_eq!(
        std::fs::read_to_string(d.join("current/index.php")).unwrap(),
        "9"
    );
    assert!(d.join(".dep/latest_release").is_file());
}

#[test]
fn deploy_without_release_id_after_a_named_release() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.deploy_ids(&["v1"]);
    let out = sb.run_deploy(&["--json"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    let new = json_documents(&out)[0]["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sb.current(), Some(new.clone()));
    let back = sb.json_to(&["rollback"]);
    assert_eq!(
        back["release"], "v1",
        "rollback goes to the release deployed before"
    );
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    stdout(&out).trim().to_string()
}

#[test]
fn history_records_every_event_with_who_and_the_git_source() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    git(&sb.src(), &["init", "-q"]);
    git(&sb.src(), &["add", "."]);
    git(&sb.src(), &["commit", "-q", "-m", "one"]);
    let first_commit = git(&sb.src(), &["rev-parse", "HEAD"]);
    sb.deploy_ids(&["h1"]);
    sb.write("index.php", "<?php echo 2;");
    git(&sb.src(), &["commit", "-q", "-am", "two"]);
    let second_commit = git(&sb.src(), &["rev-parse", "HEAD"]);
    sb.deploy_ids(&["h2", "h3", "h4"]);
    assert!(
        !sb.release_dir("h1").join(".git").exists(),
        ".git must not be deployed"
    );
    sb.json_to(&["rollback"]);
    sb.json_to(&["switch", "h2"]);
    let cleanup = sb.json_to(&["cleanup", "--keep", "1"]);
    assert_eq!(
        one_host(&cleanup)["cleanup"]["removed"],
        serde_json::json!(["h1"])
    );

    let events = sb.history();
    let seen: Vec<(String, String, Value)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["release"].as_str().unwrap().to_string(),
                e["previous"].clone(),
            )
        })
        .collect();
    let expected: Vec<(String, String, Value)> = [
        ("staged", "h1", Value::Null),
        ("switched", "h1", Value::Null),
        ("staged", "h2", Value::Null),
        ("switched", "h2", "h1".into()),
        ("staged", "h3", Value::Null),
        ("switched", "h3", "h2".into()),
        ("staged", "h4", Value::Null),
        ("switched", "h4", "h3".into()),
        ("rolled_back", "h3", "h4".into()),
        ("switched", "h2", "h3".into()),
        ("removed", "h1", Value::Null),
    ]
    .into_iter()
    .map(|(k, r, p)| (k.to_string(), r.to_string(), p))
    .collect();
    assert_eq!(seen, expected);

    for event in &events {
        for field in ["time", "user", "host"] {
            let value = event[field].as_str().unwrap_or("");
            assert!(!value.is_empty(), "{field} missing in {event}");
        }
        let time = event["time"].as_str().unwrap();
        assert!(
            time.len() >= 20 && time.as_bytes()[10] == b'T',
            "time is not RFC 3339: {time}"
        );
        assert_eq!(
            event["source"].is_object(),
            event["event"] == "staged",
            "{event}"
        );
    }
    let src_real = std::fs::canonicalize(sb.src())
        .unwrap()
        .display()
        .to_string();
    let staged: Vec<&Value> = events.iter().filter(|e| e["event"] == "staged").collect();
    for event in &staged {
        assert_eq!(event["source"]["path"], src_real, "{event}");
    }
    assert_eq!(staged[0]["source"]["git_commit"], first_commit);
    assert_eq!(staged[1]["source"]["git_commit"], second_commit);

    let listed = sb.json_to(&["releases"]);
    let listed = one_result(&listed);
    assert_eq!(
        listed["releases"][0]["git_commit"], second_commit,
        "{listed}"
    );
}

#[test]
fn history_of_a_plain_directory_has_no_git_fields() {
    let sb = Sandbox::new();
    sb.write("index.php", "1");
    sb.deploy_ids(&["p1"]);
    let staged = &sb.history()[0];
    assert_eq!(staged["event"], "staged");
    assert_eq!(keys(&staged["source"]), key_set(&["path"]), "{staged}");
}
