//! The command line as scripts see it: what goes to stdout and stderr, the JSON shapes
//! (pinned here: a shape change must be a deliberate change of these tests), dry runs
//! that change nothing, and `init`.
//!
//! The rest of the CLI behaviour tests: test_cli_errors.rs (refusals and the lock),
//! test_cli_hooks.rs (build and hook commands), test_cli_releases.rs (cleanup, rollback,
//! the history, adoption of Capistrano and Deployer paths).

use serde_json::Value;

use crate::common::*;

/// A hook that talks on both streams: its output must never reach --json or --quiet output.
const NOISY_HOOK: &str = "[hooks]\nbefore_switch = [\"echo hook-stdout; echo hook-stderr >&2\"]\n";

/// Runs `args` (plus `--to`), asserts success, one JSON document on stdout, empty stderr.
fn one_json(sb: &Sandbox, args: &[&str]) -> Value {
    let out = sb.run_to(args);
    assert_eq!(exit_code(&out), 0, "{args:?}: {}", text(&out));
    assert!(
        out.stderr.is_empty(),
        "{args:?} wrote to stderr with --json:\n{}",
        text(&out)
    );
    let docs = json_documents(&out);
    assert_eq!(
        docs.len(),
        1,
        "{args:?} must print exactly one JSON document:\n{}",
        text(&out)
    );
    docs.into_iter().next().unwrap()
}

#[test]
fn json_output_is_one_document_with_pinned_keys_and_nothing_on_stderr() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.write("lib/a.php", "<?php // a");
    std::os::unix::fs::symlink("lib/a.php", sb.src().join("a.php")).unwrap();
    let config = sb.config("noisy.toml", NOISY_HOOK);
    let src = sb.src_arg();

    one_json(
        &sb,
        &[
            "deploy",
            &src,
            "--release",
            "r1",
            "--config",
            &config,
            "--json",
        ],
    );
    let deploy = one_json(
        &sb,
        &[
            "deploy",
            &src,
            "--release",
            "r2",
            "--config",
            &config,
            "--json",
        ],
    );
    // One shape for a deploy path and for a fleet: the whole run, then one entry per host.
    assert_eq!(
        keys(&deploy),
        key_set(&[
            "release",
            "previous",
            "dry_run",
            "source",
            "switch_skew_us",
            "total_ms",
            "hosts"
        ])
    );
    let host = &deploy["hosts"][0];
    assert_eq!(
        keys(host),
        key_set(&[
            "host",
            "status",
            "deploy_path",
            "previous",
            "files",
            "assets",
            "hooks",
            "files_sent",
            "bytes_sent",
            "stage_ms",
            "switch_ms",
            "switched_at_us",
            "cleanup"
        ])
    );
    assert_eq!(
        keys(&host["files"]),
        key_set(&[
            "files",
            "linked",
            "copied",
            "bytes_total",
            "bytes_copied",
            "dirs",
            "symlinks"
        ])
    );
    assert_eq!(
        keys(&deploy["source"]),
        key_set(&["path"]),
        "not a git work tree"
    );
    assert_eq!(deploy["release"], "r2");
    assert_eq!(deploy["previous"], "r1");
    assert_eq!(deploy["dry_run"], false);
    assert_eq!(
        (&host["host"], &host["status"]),
        (&Value::from("local"), &Value::from("deployed"))
    );
    assert_eq!(host["previous"], "r1");
    assert_eq!(host["deploy_path"], sb.to());
    assert_eq!(
        (
            &host["files"]["files"],
            &host["files"]["linked"],
            &host["files"]["copied"]
        ),
        (&Value::from(2), &Value::from(2), &Value::from(0)),
        "{deploy}"
    );

    let releases = one_json(&sb, &["releases", "--json"]);
    assert_eq!(keys(&releases), key_set(&["hosts"]));
    assert_eq!(
        keys(&releases["hosts"][0]),
        key_set(&["host", "status", "deploy_path", "previous", "result"])
    );
    let releases = &releases["hosts"][0]["result"];
    assert_eq!(
        keys(releases),
        key_set(&[
            "deploy_path",
            "flavor",
            "current",
            "current_target",
            "releases"
        ])
    );
    assert_eq!(releases["flavor"], "cutover");
    assert_eq!(releases["current"], "r2");
    assert_eq!(releases["current_target"], "releases/r2");
    let row = &releases["releases"][1];
    assert_eq!(
        keys(row),
        key_set(&["id", "current", "path", "staged_at", "user"])
    );
    assert_eq!(
        (&row["id"], &row["current"]),
        (&Value::from("r2"), &Value::from(true))
    );
    assert_eq!(row["path"], sb.release_dir("r2").display().to_string());

    let switch = one_json(&sb, &["switch", "r1", "--json"]);
    let switch_keys = key_set(&["release", "previous", "dry_run", "switch_skew_us", "hosts"]);
    assert_eq!(keys(&switch), switch_keys);
    assert_eq!(
        keys(&switch["hosts"][0]),
        key_set(&[
            "host",
            "status",
            "deploy_path",
            "previous",
            "switch_ms",
            "switched_at_us",
            "unchanged"
        ])
    );
    assert_eq!(
        (
            &switch["release"],
            &switch["previous"],
            &switch["hosts"][0]["unchanged"]
        ),
        (&Value::from("r1"), &Value::from("r2"), &Value::from(false))
    );
    let rollback = one_json(&sb, &["rollback", "r2", "--json"]);
    assert_eq!(keys(&rollback), switch_keys);

    let cleanup = one_json(&sb, &["cleanup", "--keep", "1", "--json"]);
    assert_eq!(keys(&cleanup), key_set(&["dry_run", "hosts"]));
    let cleaned = &cleanup["hosts"][0]["cleanup"];
    assert_eq!(keys(cleaned), key_set(&["removed", "kept", "debris"]));
    assert_eq!(
        cleaned["removed"],
        serde_json::json!([]),
        "r1 is protected: r2 replaced it"
    );
}

#[test]
fn errors_with_json_are_one_document_on_stdout() {
    let sb = Sandbox::new();
    sb.write("index.php", "1");
    sb.deploy_ids(&["r1"]);
    let out = sb.run_to(&["switch", "nope", "--json"]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    let docs = json_documents(&out);
    assert_eq!(docs.len(), 1, "{}", text(&out));
    assert_eq!(keys(&docs[0]), key_set(&["error", "hosts"]));
    assert_eq!(docs[0]["hosts"][0]["status"], "failed");
    let error = &docs[0]["error"];
    assert_eq!(
        keys(error),
        key_set(&["message", "causes", "hints", "exit_code"])
    );
    assert_eq!(error["exit_code"], 2);
    assert!(
        error["message"].as_str().unwrap().contains("nope"),
        "{error}"
    );
    assert!(
        error["hints"][0].as_str().unwrap().contains("r1"),
        "{error}"
    );
    assert!(
        stderr(&out).starts_with("error: "),
        "people still see the error on stderr"
    );
}

#[test]
fn quiet_prints_nothing_on_success() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    let config = sb.config("noisy.toml", NOISY_HOOK);
    let src = sb.src_arg();
    for args in [
        &[
            "deploy",
            &src,
            "--release",
            "r1",
            "--config",
            &config,
            "--quiet",
        ][..],
        &["deploy", &src, "--release", "r2", "--config", &config, "-q"],
        &["releases", "--quiet"],
        &["switch", "r1", "--quiet"],
        &["rollback", "r2", "--quiet"],
        &["rollback", "--quiet", "--dry-run"],
        &["cleanup", "--keep", "1", "--quiet"],
    ] {
        let out = sb.run_to(args);
        assert_eq!(exit_code(&out), 0, "{args:?}: {}", text(&out));
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{args:?} printed with --quiet:\n{}",
            text(&out)
        );
    }
    assert_eq!(sb.current().as_deref(), Some("r2"));
}

#[test]
fn quiet_still_prints_errors() {
    let sb = Sandbox::new();
    sb.write("index.php", "1");
    sb.deploy_ids(&["r1"]);
    let out = sb.run_to(&["switch", "nope", "--quiet"]);
    assert_refused(&out, 2, &["nope"], "r1");
}

#[test]
fn no_terminal_means_no_progress_escape_codes() {
    let sb = Sandbox::new();
    for i in 0..600 {
        sb.write(
            &format!("lib/f{}/{i}.php", i % 7),
            "<?php // some bytes to copy\n",
        );
    }
    let config = sb.config("noisy.toml", NOISY_HOOK);
    let out = sb.run_deploy(&["--config", &config]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.contains(&0x1b) && !bytes.contains(&b'\r'),
            "escape codes or carriage returns on {name} without a terminal:\n{}",
            text(&out)
        );
    }
    let human = stdout(&out);
    assert!(human.starts_with("Deployed release "), "{human}");
    assert!(human.contains("600 files"), "{human}");
}

/// Three releases (r3 current), a changed source, and a build hook that would leave a
/// marker if it ran.
fn dry_run_fixture() -> (Sandbox, String) {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    sb.write("lib/a.php", "<?php // a");
    sb.deploy_ids(&["r1", "r2", "r3"]);
    sb.write("index.php", "<?php echo 2;");
    let marker = sb.path().join("build-ran");
    let config = sb.config(
        "marker.toml",
        &format!(
            "[build]\nrun = [\"touch {0}\"]\n[hooks]\nbefore_switch = [\"touch {0}\"]\n",
            marker.display()
        ),
    );
    (sb, config)
}

#[test]
fn dry_run_changes_nothing_at_all() {
    let (sb, config) = dry_run_fixture();
    let before = sb.exact();
    let src = sb.src_arg();

    let deploy = one_json(
        &sb,
        &[
            "deploy",
            &src,
            "--release",
            "r4",
            "--config",
            &config,
            "--keep",
            "1",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(deploy["dry_run"], true);
    assert_eq!(
        (&deploy["release"], &deploy["previous"]),
        (&Value::from("r4"), &Value::from("r3"))
    );
    assert_eq!(one_host(&deploy)["files"]["copied"], 1, "{deploy}");
    assert_eq!(one_host(&deploy)["files"]["linked"], 1, "{deploy}");
    let switch = one_json(&sb, &["switch", "r1", "--dry-run", "--json"]);
    assert_eq!(
        (&switch["release"], &switch["dry_run"]),
        (&Value::from("r1"), &Value::from(true))
    );
    let rollback = one_json(&sb, &["rollback", "--dry-run", "--json"]);
    assert_eq!(rollback["release"], "r2");
    assert_eq!(rollback["dry_run"], true);
    one_json(&sb, &["rollback", "r1", "--dry-run", "--json"]);
    let cleanup = one_json(&sb, &["cleanup", "--keep", "1", "--dry-run", "--json"]);
    assert_eq!(
        one_host(&cleanup)["cleanup"]["removed"],
        serde_json::json!(["r1"])
    );

    for args in [
        &[
            "deploy",
            &src,
            "--release",
            "r4",
            "--config",
            &config,
            "--dry-run",
        ][..],
        &["switch", "r1", "--dry-run"],
        &["rollback", "--dry-run"],
        &["cleanup", "--keep", "1", "--dry-run"],
    ] {
        let out = sb.run_to(args);
        assert_eq!(exit_code(&out), 0, "{args:?}: {}", text(&out));
        assert!(
            stdout(&out).starts_with("Would "),
            "{args:?}: {}",
            text(&out)
        );
    }

    before.assert_same(&sb.exact(), "a dry run");
    assert!(
        !sb.path().join("build-ran").exists(),
        "a dry run ran a build or hook command"
    );
    assert_eq!(sb.current().as_deref(), Some("r3"));
}

#[test]
fn dry_run_deploy_lists_the_releases_it_would_remove() {
    let (sb, config) = dry_run_fixture();
    let before = sb.exact();
    let deploy = one_json(
        &sb,
        &[
            "deploy",
            &sb.src_arg(),
            "--release",
            "r4",
            "--config",
            &config,
            "--keep",
            "1",
            "--dry-run",
            "--json",
        ],
    );
    // r4 would be current and r3 the release it replaced: both kept.
    assert_eq!(
        one_host(&deploy)["cleanup"]["removed"],
        serde_json::json!(["r1", "r2"]),
        "{deploy}"
    );
    before.assert_same(&sb.exact(), "a dry run");
}

#[test]
fn deploy_stats_are_the_same_with_and_without_commands() {
    let stats = |config: Option<&str>| {
        let sb = Sandbox::new();
        sb.write("index.php", "<?php echo 1;");
        sb.write("lib/a.php", "<?php // a");
        std::os::unix::fs::symlink("lib/a.php", sb.src().join("a.php")).unwrap();
        let mut args = vec![];
        let path;
        if let Some(text) = config {
            path = sb.config("cmd.toml", text);
            args.extend(["--config", path.as_str()]);
        }
        sb.deploy_src(&args);
        let out = sb.run_deploy(&[&args[..], &["--json"]].concat());
        assert_eq!(exit_code(&out), 0, "{}", text(&out));
        one_host(&json_documents(&out)[0])["files"].clone()
    };
    assert_eq!(
        stats(Some("[hooks]\nbefore_switch = [\"true\"]\n")),
        stats(None)
    );
}

#[test]
fn dry_run_leaves_debris_of_a_killed_deploy_alone() {
    let (sb, _config) = dry_run_fixture();
    write(&sb.deploy().join(".cutover/staging-r9/index.php"), "half");
    let before = sb.exact();
    let cleanup = one_json(&sb, &["cleanup", "--dry-run", "--json"]);
    assert_eq!(
        one_host(&cleanup)["cleanup"]["debris"],
        serde_json::json!(["staging-r9"])
    );
    one_json(
        &sb,
        &[
            "deploy",
            &sb.src_arg(),
            "--release",
            "r4",
            "--dry-run",
            "--json",
        ],
    );
    before.assert_same(&sb.exact(), "a dry run");
    let cleanup = one_json(&sb, &["cleanup", "--json"]);
    assert_eq!(
        one_host(&cleanup)["cleanup"]["debris"],
        serde_json::json!(["staging-r9"])
    );
    assert_eq!(unfinished_left(&sb.deploy()), Vec::<String>::new());
}

#[test]
fn dry_run_deploy_to_a_new_path_creates_nothing() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    let deploy = one_json(&sb, &["deploy", &sb.src_arg(), "--dry-run", "--json"]);
    assert_eq!(deploy["dry_run"], true);
    assert_eq!(deploy["previous"], Value::Null);
    assert_eq!(one_host(&deploy)["files"]["copied"], 1);
    assert!(!sb.deploy().exists(), "a dry run created the deploy path");
    let nested = sb.path().join("a/b/deploy").display().to_string();
    let out = sb.run(&["deploy", &sb.src_arg(), "--to", &nested, "--dry-run"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    assert!(
        !sb.path().join("a").exists(),
        "a dry run created parent directories"
    );
}

#[test]
fn init_writes_a_config_deploy_accepts_and_refuses_to_overwrite() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    std::fs::create_dir_all(sb.path().join("conf")).unwrap();
    let out = sb.run(&["init", "conf", "--json"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    let docs = json_documents(&out);
    assert_eq!(
        keys(&docs[0]),
        key_set(&["config", "preset", "why", "shared_files", "content"])
    );
    assert_eq!(docs[0]["preset"], "generic");
    let config = sb.path().join("conf/cutover.toml");
    let template = std::fs::read_to_string(&config).unwrap();
    assert!(template.contains("[deploy]"), "{template}");

    let conf = config.display().to_string();
    let report = sb.json(&["deploy", &sb.src_arg(), "--to", &sb.to(), "--config", &conf]);
    assert_eq!(sb.current().as_deref(), report["release"].as_str());

    std::fs::write(&config, format!("{template}\n# mine\n")).unwrap();
    let out = sb.run(&["init", "conf"]);
    assert_refused(&out, 2, &["already exists"], "--force");
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .ends_with("# mine\n"),
        "init overwrote the file"
    );
    let out = sb.run(&["init", "conf", "--force", "--quiet"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), template);
}

#[test]
fn init_defaults_to_the_working_directory() {
    let sb = Sandbox::new();
    let out = sb.run(&["init"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    assert!(sb.path().join("cutover.toml").is_file());
    let out = sb.run(&["init"]);
    assert_refused(&out, 2, &["already exists"], "--force");
}

#[test]
fn every_example_in_the_init_template_is_valid() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php echo 1;");
    let out = sb.run(&["init", &sb.src_arg(), "--quiet"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    let config = sb.src().join("cutover.toml");
    let template = std::fs::read_to_string(&config).unwrap();
    // Uncomment every `# key = value` line, pointing `path` at the sandbox.
    let mut uncommented = 0;
    let lines: Vec<String> = template
        .lines()
        .map(|line| {
            let Some((key, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) else {
                return line.to_string();
            };
            if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                return line.to_string();
            }
            // A git repository and its ref would deploy a commit of github.com/acme/shop
            // instead of this source (test_git_source covers them).
            if key == "repository" || key == "branch" {
                return line.to_string();
            }
            // An inventory's hosts would replace the deploy path (test_inventory covers it).
            if line.contains("ansible-inventory") {
                return line.to_string();
            }
            uncommented += 1;
            if key == "path" {
                format!("path = {:?}", sb.to())
            } else {
                line[2..].to_string()
            }
        })
        .collect();
    assert!(
        uncommented >= 9,
        "found only {uncommented} examples in:\n{template}"
    );
    std::fs::write(&config, lines.join("\n")).unwrap();
    // Source (`.`) and path come from the file; --dry-run, so no example command runs.
    let out = sb.run(&[
        "deploy",
        "--config",
        &config.display().to_string(),
        "--dry-run",
        "--json",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    let deploy = &json_documents(&out)[0];
    assert_eq!(one_host(deploy)["deploy_path"], sb.to(), "{deploy}");
    let src_real = std::fs::canonicalize(sb.src())
        .unwrap()
        .display()
        .to_string();
    assert_eq!(deploy["source"]["path"], src_real, "{deploy}");
    assert!(!sb.deploy().exists());
}

/// Completions and the man page come from the CLI definition itself: every command is in
/// them, a flag added yesterday too.
#[test]
fn completions_and_the_man_page_cover_every_command() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = sb.run(&["completions", shell]);
        assert_eq!(exit_code(&out), 0, "{}", text(&out));
        let script = stdout(&out);
        for word in ["deploy", "rollback", "releases", "role", "preset"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let out = sb.run(&["man"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH cutover 1"),
        "{page}"
    );
    for word in ["deploy", "rollback", "verify", "doctor"] {
        assert!(page.contains(word), "man: no {word}");
    }
    let out = sb.run(&["completions", "tcsh"]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(
        stderr(&out).contains("possible values: bash"),
        "{}",
        text(&out)
    );
}
