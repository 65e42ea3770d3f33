//! `cutover lint`: the real binary on real files — output format, `--json`, exit codes,
//! allow comments, and a Laravel-shaped app with a Composer-generated autoloader (Debian's
//! `composer`, which scripts/test installs) that must have no findings.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::*;

const HAZARD: &str = "<?php\nrequire '/srv/app/current/lib/a.php';\n";

fn lint_json(sb: &Sandbox, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["lint"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = sb.run(&all);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", text(&out)));
    (exit_code(&out), json)
}

#[test]
fn lint_prints_each_finding_with_a_hint_and_exits_1() {
    let sb = Sandbox::new();
    sb.write("public/index.php", HAZARD);
    sb.write("lib/a.php", "<?php return 1;\n");
    sb.write("lib/ok.php", "<?php require __DIR__ . '/a.php';\n");
    let out = sb.run(&["lint", "src"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with(
            "src/public/index.php:2:1: require of the absolute path '/srv/app/current/lib/a.php': \
             if it runs through the deploy symlink, it is resolved again at include time"
        ),
        "{stdout}"
    );
    assert!(lines[0].ends_with(" [absolute-path]"), "{stdout}");
    // The hint names the file of this tree the path meant, from the including file.
    assert!(
        lines[1].starts_with("  hint: use `require __DIR__ . '/../lib/a.php';`"),
        "{stdout}"
    );
    assert_eq!(lines[2], "1 finding in 1 file (3 files scanned)");
    assert!(
        stderr(&out).contains("error: lint found 1 finding in 1 file"),
        "{}",
        text(&out)
    );
}

#[test]
fn lint_json_lists_findings_files_scanned_and_unparsable_files() {
    let sb = Sandbox::new();
    sb.write("index.php", HAZARD);
    // With an include: a file the walk has nothing to do in is not parsed, nor reported.
    sb.write(
        "broken.php",
        "<?php require __DIR__ . '/index.php';\nfunction broken( {\n",
    );
    let (code, json) = lint_json(&sb, &["src"]);
    assert_eq!(code, 1);
    assert_eq!(json["files_scanned"], 2);
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{json:#}");
    let finding = &findings[0];
    let keys: Vec<&str> = finding
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "column",
            "file",
            "hint",
            "line",
            "message",
            "rule",
            "uses",
            "uses_count"
        ],
        "{json:#}"
    );
    assert_eq!(finding["file"], "src/index.php");
    assert_eq!(
        (finding["line"].as_u64(), finding["column"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(finding["rule"], "absolute-path");
    assert_eq!(
        finding["uses"],
        serde_json::json!([{"file": "src/index.php", "line": 2, "column": 1}])
    );
    assert_eq!(finding["uses_count"], 1);
    assert_eq!(json["deploy_paths"], serde_json::json!([]));
    let unparsable = json["unparsable"].as_array().unwrap();
    assert_eq!(unparsable.len(), 1, "{json:#}");
    assert_eq!(unparsable[0]["file"], "src/broken.php");
    assert_eq!(unparsable[0]["line"], 2);
    // One JSON document on stdout, also when the exit code is 1.
    let out = sb.run(&["lint", "src", "--json"]);
    assert!(
        stderr(&out).contains("warning: src/broken.php:2:"),
        "{}",
        text(&out)
    );
}

#[test]
fn lint_accepts_allowed_lines_and_exits_0_without_findings() {
    let sb = Sandbox::new();
    sb.write(
        "index.php",
        "<?php\n\
         require '/etc/app/secrets.php'; // cutover-lint: allow\n\
         # cutover-lint: allow(relative-path)\n\
         require 'lib/a.php';\n\
         require __DIR__ . '/lib/a.php';\n",
    );
    let out = sb.run(&["lint", "src"]);
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no findings (1 file scanned)\n"
    );
    // The wrong rule id does not accept a line.
    sb.write(
        "index.php",
        "<?php\n// cutover-lint: allow(relative-path)\nrequire '/etc/app/secrets.php';\n",
    );
    let (code, json) = lint_json(&sb, &["src"]);
    assert_eq!(code, 1);
    assert_eq!(json["findings"][0]["line"], 3);
}

#[test]
fn lint_defaults_to_the_current_directory_and_a_missing_dir_is_a_usage_error() {
    let sb = Sandbox::new();
    sb.write("index.php", "<?php include 'header.php';\n");
    let out = sb
        .cutover()
        .arg("lint")
        .current_dir(sb.src())
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("index.php:1:7: include of the relative path 'header.php'"),
        "{}",
        text(&out)
    );

    let out = sb.run(&["lint", "no-such-dir"]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(
        stderr(&out).contains("no-such-dir does not exist"),
        "{}",
        text(&out)
    );
    let out = sb.run(&["lint", "no-such-dir", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["exit_code"], 2);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `composer dump-autoload` offline, with a private COMPOSER_HOME. scripts/test installs
/// Debian's composer, so its absence is a failure, not a skip.
fn dump_autoload(app: &Path, home: &Path) {
    let out = Command::new("composer")
        .args(["dump-autoload", "--no-interaction", "--optimize"])
        .current_dir(app)
        .env("COMPOSER_HOME", home)
        .env("COMPOSER_DISABLE_NETWORK", "1")
        .env("COMPOSER_NO_AUDIT", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("composer is missing ({e}): scripts/test installs it (apt-get install composer)")
        });
    assert!(
        out.status.success(),
        "composer dump-autoload failed:\n{}",
        text(&out)
    );
}

#[test]
fn a_dir_based_app_with_a_composer_generated_autoloader_has_no_findings() {
    let sb = Sandbox::new();
    let app = sb.path().join("shop");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../cutover-lint/tests/fixtures/laravel-app");
    copy_tree(&fixture, &app);
    dump_autoload(&app, &sb.path().join("composer-home"));
    for generated in [
        "vendor/autoload.php",
        "vendor/composer/autoload_real.php",
        "vendor/composer/autoload_static.php",
        "vendor/composer/ClassLoader.php",
        "vendor/composer/platform_check.php",
    ] {
        assert!(
            app.join(generated).is_file(),
            "composer did not write {generated}"
        );
    }

    for strict in [false, true] {
        let mut args = vec!["shop"];
        if strict {
            args.push("--strict");
        }
        let (code, json) = lint_json(&sb, &args);
        assert_eq!(code, 0, "strict={strict}: {json:#}");
        assert_eq!(json["findings"], serde_json::json!([]), "strict={strict}");
        assert_eq!(json["unparsable"], serde_json::json!([]));
        assert!(json["files_scanned"].as_u64().unwrap() >= 17, "{json:#}");
    }

    // The same app loading its autoloader through the symlink.
    let index = app.join("public/index.php");
    let source = std::fs::read_to_string(&index).unwrap().replace(
        "require __DIR__.'/../vendor/autoload.php';",
        "require '/srv/shop/current/vendor/autoload.php';",
    );
    std::fs::write(&index, source).unwrap();
    let (code, json) = lint_json(&sb, &["shop"]);
    assert_eq!(code, 1);
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{json:#}");
    assert_eq!(findings[0]["rule"], "composer-autoload");
    assert_eq!(findings[0]["file"], "shop/public/index.php");
    assert!(
        findings[0]["hint"]
            .as_str()
            .unwrap()
            .starts_with("use `require __DIR__ . '/../vendor/autoload.php';`"),
        "{json:#}"
    );
}

#[test]
fn lint_groups_includes_by_definition_and_knows_the_deploy_path_of_cutover_toml() {
    let sb = Sandbox::new();
    sb.write(
        "config.php",
        "<?php\ndefine('ROOT', '/srv/shop/current/');\ndefine('PEAR', '/usr/share/php/');\n",
    );
    sb.write(
        "index.php",
        "<?php\nrequire ROOT . 'a.php';\nrequire ROOT . 'b.php';\nrequire PEAR . 'Mail.php';\n",
    );
    // Without a deploy path: both definitions, each once, with their uses.
    let out = sb.run(&["lint", "src"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with(
            "src/config.php:2:1: constant ROOT is the absolute path '/srv/shop/current/', and 2 \
             include paths are built from it (first src/index.php:2): if it runs through"
        ),
        "{stdout}"
    );
    assert_eq!(lines[1], "  used at: src/index.php:2:1, src/index.php:3:1");
    assert!(
        lines[3].starts_with("src/config.php:3:1: constant PEAR"),
        "{stdout}"
    );
    assert_eq!(
        lines.last(),
        Some(&"2 findings in 1 file (2 files scanned)")
    );

    // [deploy] path of cutover.toml: PEAR is outside it, ROOT runs through its current.
    write(
        &sb.path().join("cutover.toml"),
        "[deploy]\npath = \"/srv/shop\"\n",
    );
    let (code, json) = lint_json(&sb, &["src"]);
    assert_eq!(code, 1);
    assert_eq!(json["deploy_paths"], serde_json::json!(["/srv/shop"]));
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{json:#}");
    assert_eq!(findings[0]["uses_count"], 2);
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap()
            .contains("it runs through the deploy symlink /srv/shop/current,"),
        "{json:#}"
    );
    // --deploy-path beats the file.
    let (code, json) = lint_json(&sb, &["src", "--deploy-path", "/srv/other"]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["findings"], serde_json::json!([]));
}

/// Debian's WordPress package, unpacked into the sandbox; `None` (skipped) without apt.
fn debian_wordpress(sb: &Sandbox) -> Option<std::path::PathBuf> {
    let unpacked = cutover_teststack::debian_packages(&["wordpress"], sb.path())?;
    Some(unpacked[0].join("usr/share/wordpress"))
}

#[test]
fn debian_wordpress_reports_abspath_once_and_nothing_outside_the_deploy_path() {
    let sb = Sandbox::new();
    let Some(wordpress) = debian_wordpress(&sb) else {
        return;
    };
    let dir = wordpress.to_str().unwrap();
    // Debian's wp-config.php: define('ABSPATH', '/usr/share/wordpress/'), used by hundreds
    // of includes.
    let (code, json) = lint_json(&sb, &[dir]);
    assert_eq!(code, 1);
    assert!(
        json["files_scanned"].as_u64().unwrap() > 900,
        "{}",
        json["files_scanned"]
    );
    let findings = json["findings"].as_array().unwrap();
    let abspath: Vec<&Value> = findings
        .iter()
        .filter(|f| f["message"].as_str().unwrap().contains("ABSPATH"))
        .collect();
    assert_eq!(abspath.len(), 1, "{json:#}");
    assert!(abspath[0]["file"]
        .as_str()
        .unwrap()
        .ends_with("wp-config.php"));
    assert!(
        abspath[0]["uses_count"].as_u64().unwrap() > 500,
        "{:#}",
        abspath[0]
    );
    // At most one finding per origin, and none claims the deploy symlink: it is not known.
    let mut origins: Vec<(String, u64, u64)> = findings
        .iter()
        .map(|f| {
            let at = (f["line"].as_u64().unwrap(), f["column"].as_u64().unwrap());
            (f["file"].as_str().unwrap().to_string(), at.0, at.1)
        })
        .collect();
    let count = origins.len();
    origins.dedup();
    assert_eq!(origins.len(), count, "{json:#}");
    assert!(findings.len() < 20, "{json:#}");
    for finding in findings {
        let message = finding["message"].as_str().unwrap();
        assert!(
            !message.contains("it runs through the deploy symlink /"),
            "{message}"
        );
    }

    // Deployed to /var/www/wordpress: /usr/share/wordpress is elsewhere, not a hazard.
    let (_, json) = lint_json(&sb, &[dir, "--deploy-path", "/var/www/wordpress"]);
    let findings = json["findings"].as_array().unwrap();
    for finding in findings {
        let message = finding["message"].as_str().unwrap();
        // (The files' own paths in the sandbox end in usr/share/wordpress too.)
        assert!(!message.contains("'/usr/share/wordpress"), "{json:#}");
        assert!(
            !message.contains("it runs through the deploy symlink /"),
            "{json:#}"
        );
    }
    assert!(
        findings.iter().all(|f| f["rule"] != "absolute-path"),
        "{json:#}"
    );
}
