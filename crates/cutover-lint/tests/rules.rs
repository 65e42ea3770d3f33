//! Every rule on fixture files. A fixture marks each line that must have a finding with a
//! comment `expect: RULE…` (or `expect+1: RULE` for the next line, where a comment cannot
//! go), and `strict: RULE` for findings only `--strict` reports; every other line must
//! have none, so a fixture also proves the forms next to the hazards are left alone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cutover_lint::{lint_dir, lint_source, lint_source_with, Finding, Options, Rule};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// (line, rule id) pairs the fixture's comments ask for.
fn marked(text: &str, strict: bool) -> BTreeSet<(usize, String)> {
    let mut marks = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let mut markers = vec![("expect: ", 1), ("expect+1: ", 2)];
        if strict {
            markers.push(("strict: ", 1));
        }
        for (marker, offset) in markers {
            if let Some(at) = line.find(marker) {
                for rule in line[at + marker.len()..].split_whitespace() {
                    marks.insert((index + offset, rule.to_string()));
                }
            }
        }
    }
    marks
}

/// (line, rule id) of each include a finding covers: a finding at a definition stands for
/// every include built from it, so the fixture marks the includes.
fn found(findings: &[Finding]) -> BTreeSet<(usize, String)> {
    findings
        .iter()
        .flat_map(|f| f.uses.iter().map(|u| (u.line, f.rule.id().to_string())))
        .collect()
}

/// Lints a fixture on its own and compares its findings with its marks.
fn check(name: &str) -> Vec<Finding> {
    check_with(name, &Options::default())
}

fn check_with(name: &str, options: &Options) -> Vec<Finding> {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let findings = lint_source_with(Path::new(name), &text, options);
    assert_eq!(
        found(&findings),
        marked(&text, options.strict),
        "{name}: findings (left) differ from the fixture's marks (right):\n{findings:#?}"
    );
    findings
}

/// The finding that covers the include on `line`.
fn at(findings: &[Finding], line: usize) -> &Finding {
    findings
        .iter()
        .find(|f| f.uses.iter().any(|u| u.line == line))
        .unwrap_or_else(|| panic!("no finding on line {line}: {findings:#?}"))
}

#[test]
fn absolute_literal_paths() {
    let findings = check("absolute_literal.php");
    let first = at(&findings, 3);
    assert_eq!((first.line, first.column), (3, 1));
    assert_eq!(first.file, Path::new("absolute_literal.php"));
    assert!(
        first
            .message
            .starts_with("require of the absolute path '/srv/app/current/lib/a.php'"),
        "{}",
        first.message
    );
    // Indented: the column is the include's.
    assert_eq!(at(&findings, 9).column, 6);
}

#[test]
fn absolute_paths_in_concatenation_interpolation_and_heredoc() {
    let findings = check("absolute_concat.php");
    // Literal parts are joined, so the message names the whole known path.
    assert!(
        at(&findings, 3)
            .message
            .contains("'/srv/app/current/lib/a.php'"),
        "{}",
        at(&findings, 3).message
    );
    // What follows a variable is not known: the message says so.
    assert!(at(&findings, 4)
        .message
        .contains("'/srv/app/current/lib/…'"));
}

#[test]
fn variables_set_to_absolute_paths_in_the_same_scope() {
    let findings = check("absolute_variable.php");
    // $root (line 3) is where the path is written: one finding there for its uses,
    // including those through $lib.
    let root = at(&findings, 6);
    assert_eq!((root.line, root.column), (3, 1));
    assert!(
        root.message
            .starts_with("$root is the absolute path '/srv/app/current', and 4 include paths are built from it (first absolute_variable.php:4)"),
        "the finding names the definition: {}",
        root.message
    );
    let lines: Vec<usize> = root.uses.iter().map(|u| u.line).collect();
    assert_eq!(lines, [4, 6, 38, 40]);
    assert_eq!(root.uses_count, 4);
}

#[test]
fn constants_defined_as_absolute_paths() {
    let findings = check("absolute_constant.php");
    // LIB_DIR is built from APP_ROOT: both are reported at APP_ROOT's define().
    let app_root = at(&findings, 8);
    assert_eq!((app_root.line, app_root.column), (3, 1));
    assert!(
        app_root.message.starts_with(
            "constant APP_ROOT is the absolute path '/srv/app/current', and 3 include paths"
        ),
        "the finding names the constant: {}",
        app_root.message
    );
}

#[test]
fn document_root_and_script_filename() {
    let findings = check("document_root.php");
    let message = &at(&findings, 3).message;
    assert!(
        message.contains("$_SERVER['DOCUMENT_ROOT']") && message.contains("$realpath_root"),
        "{message}"
    );
}

#[test]
fn working_directory() {
    check("working_directory.php");
}

#[test]
fn environment_variables() {
    check("environment.php");
}

#[test]
fn ini_settings() {
    check("ini_setting.php");
}

#[test]
fn include_path_lookups() {
    check("include_path.php");
}

#[test]
fn relative_paths() {
    let findings = check("relative.php");
    assert!(at(&findings, 3)
        .message
        .contains("looked up in include_path and the working directory"));
    assert!(at(&findings, 4)
        .message
        .contains("resolved against the working directory"));
    // Without a tree, the hint still spells the __DIR__ form.
    assert!(
        at(&findings, 3)
            .hint
            .starts_with("use `require __DIR__ . '/lib/a.php';`"),
        "{}",
        at(&findings, 3).hint
    );
}

#[test]
fn set_include_path_with_entries_outside_the_release() {
    let findings = check("set_include_path.php");
    assert!(at(&findings, 3).message.starts_with(
        "set_include_path() with an entry built from the absolute path '/srv/app/current/lib'"
    ));
    assert!(at(&findings, 5).message.starts_with("ini_set() with"));
}

#[test]
fn composer_autoloader_through_the_symlink() {
    let findings = check("composer_autoload.php");
    for finding in &findings {
        assert!(
            finding.message.contains("the Composer autoloader")
                && finding.message.contains("every class it loads"),
            "{}",
            finding.message
        );
    }
}

#[test]
fn opcache_compile_file_and_preload_scripts() {
    let findings = check("preload/warmup.php");
    let compile = findings
        .iter()
        .find(|f| f.rule == Rule::PreloadPath)
        .unwrap();
    assert!(compile.message.contains("never revalidated"));
    let script = findings
        .iter()
        .find(|f| f.rule == Rule::OpcachePreload)
        .unwrap();
    assert!(script.message.contains("survives opcache_reset()"));
    assert!(script.hint.contains("fpm-reload"));
    // Named like a preload script: reported at its first include, though the path is fine.
    check("preload/preload.php");
}

#[test]
fn allow_comments_accept_a_line() {
    check("suppressed.php");
}

#[test]
fn dir_based_includes_have_no_findings() {
    check("dir_based.php");
}

#[test]
fn strict_reports_unknown_origins_too() {
    let findings = check_with(
        "dir_based.php",
        &Options {
            strict: true,
            ..Options::default()
        },
    );
    for finding in &findings {
        assert_eq!(finding.rule, Rule::UnknownOrigin);
        assert!(finding.hint.contains("allow(unknown-origin)"));
    }
    let param = &at(&findings, 46).message;
    assert!(param.contains("$file, a parameter of a closure"), "{param}");
}

#[test]
fn every_finding_says_why_and_how() {
    let names = [
        "absolute_literal.php",
        "absolute_concat.php",
        "absolute_variable.php",
        "absolute_constant.php",
        "document_root.php",
        "working_directory.php",
        "environment.php",
        "ini_setting.php",
        "include_path.php",
        "relative.php",
        "set_include_path.php",
        "composer_autoload.php",
        "preload/warmup.php",
    ];
    let mut rules = BTreeSet::new();
    for name in names {
        for finding in check(name) {
            rules.insert(finding.rule);
            assert!(
                finding.message.contains("deploy symlink") || finding.rule == Rule::OpcachePreload,
                "{name}:{}: the message must say why: {}",
                finding.line,
                finding.message
            );
            assert!(
                finding.hint.contains("__DIR__") || finding.rule == Rule::OpcachePreload,
                "{name}:{}: the hint must show the __DIR__ form: {}",
                finding.line,
                finding.hint
            );
        }
    }
    let all_but_strict: BTreeSet<Rule> = Rule::ALL
        .into_iter()
        .filter(|r| *r != Rule::UnknownOrigin)
        .collect();
    assert_eq!(rules, all_but_strict, "every rule has a fixture");
}

#[test]
fn a_tree_follows_constants_and_variables_across_files_and_lints_vendor() {
    let root = fixture("tree");
    let report = lint_dir(&root, &Options::default()).unwrap();
    assert!(report.unparsable.is_empty(), "{:#?}", report.unparsable);
    assert_eq!(report.files_scanned, 5);
    for rel in ["public/index.php", "vendor/legacy/Loader.php"] {
        let text = std::fs::read_to_string(root.join(rel)).unwrap();
        let used: BTreeSet<(usize, String)> = report
            .findings
            .iter()
            .flat_map(|f| f.uses.iter().map(move |u| (u, f.rule)))
            .filter(|(u, _)| u.file == root.join(rel))
            .map(|(u, rule)| (u.line, rule.id().to_string()))
            .collect();
        assert_eq!(used, marked(&text, false), "{rel}: {:#?}", report.findings);
    }
    assert!(report.findings.iter().all(|f| f.file.starts_with(&root)
        && (f.file.ends_with("public/index.php")
            || f.file.ends_with("config/paths.php")
            || f.file.ends_with("vendor/legacy/Loader.php"))));

    let index = |line: usize| {
        report
            .findings
            .iter()
            .find(|f| {
                f.uses
                    .iter()
                    .any(|u| u.file.ends_with("public/index.php") && u.line == line)
            })
            .unwrap()
    };
    // The constant and the variable came from config/paths.php: reported there.
    assert!(index(3).file.ends_with("config/paths.php"));
    assert_eq!(index(3).line, 3);
    assert!(
        index(3).message.starts_with(
            "constant APP_ROOT is the absolute path '/srv/app/current', and an include path is \
             built from it ("
        ) && index(3).message.contains("public/index.php:3)"),
        "{}",
        index(3).message
    );
    assert!(index(4).file.ends_with("config/paths.php"));
    assert!(
        index(4)
            .message
            .starts_with("$templates is the absolute path '/srv/app/current/templates'"),
        "{}",
        index(4).message
    );
    // Hints name the file of this tree that the path meant, from this file's directory.
    assert_eq!(
        index(6).hint,
        "use `require __DIR__ . '/../lib/b.php';` — lib/b.php from this file's real directory, \
         so it stays in this release; if the file is outside the deploy path, give \
         --deploy-path (or [deploy] path) and such paths are not reported, or accept the line \
         with `// cutover-lint: allow(absolute-path)`"
    );
    assert!(
        index(3)
            .hint
            .starts_with("set it from __DIR__, the defining file's real directory"),
        "{}",
        index(3).hint
    );
    assert!(
        index(7)
            .hint
            .starts_with("use `require __DIR__ . '/../lib/a.php';`"),
        "{}",
        index(7).hint
    );
    assert!(
        index(8)
            .hint
            .starts_with("use `require __DIR__ . '/../lib/a.php';`"),
        "{}",
        index(8).hint
    );
}

#[test]
fn a_file_with_syntax_errors_is_reported_and_still_linted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("syntax_error.php"), dir.path().join("broken.php")).unwrap();
    std::fs::write(
        dir.path().join("ok.php"),
        "<?php require __DIR__ . '/x.php';\n",
    )
    .unwrap();
    let report = lint_dir(dir.path(), &Options::default()).unwrap();
    assert_eq!(report.files_scanned, 2);
    assert_eq!(report.unparsable.len(), 1, "{:#?}", report.unparsable);
    assert_eq!(report.unparsable[0].file, dir.path().join("broken.php"));
    assert_eq!(report.unparsable[0].line, 3);
    assert_eq!(
        found(&report.findings),
        marked(
            &std::fs::read_to_string(fixture("syntax_error.php")).unwrap(),
            false
        )
    );
}

#[test]
fn the_walk_reads_php_files_and_skips_git_and_node_modules() {
    let dir = tempfile::tempdir().unwrap();
    let hazard = "<?php require '/srv/app/current/a.php';\n";
    for rel in [
        "a.php",
        "views/b.phtml",
        "lib/c.inc",
        "modules/d.module",
        ".git/hooks/e.php",
        "node_modules/pkg/f.php",
        "notes.txt",
        "g.js",
    ] {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, hazard).unwrap();
    }
    // Symlinks are not followed: a release's shared/ links lead out of the tree.
    std::os::unix::fs::symlink(dir.path().join("lib"), dir.path().join("linked")).unwrap();
    let report = lint_dir(dir.path(), &Options::default()).unwrap();
    let files: Vec<_> = report
        .findings
        .iter()
        .map(|f| f.file.strip_prefix(dir.path()).unwrap().to_path_buf())
        .collect();
    assert_eq!(
        files,
        ["a.php", "lib/c.inc", "modules/d.module", "views/b.phtml"].map(PathBuf::from)
    );
    assert_eq!(report.files_scanned, 4);

    let missing = lint_dir(&dir.path().join("nope"), &Options::default());
    assert!(matches!(missing, Err(cutover_lint::Error::NotFound { .. })));
    // One file works too.
    let one = lint_dir(&dir.path().join("a.php"), &Options::default()).unwrap();
    assert_eq!((one.files_scanned, one.findings.len()), (1, 1));
}

#[test]
fn a_dir_based_app_without_vendor_has_no_findings() {
    let report = lint_dir(&fixture("laravel-app"), &Options::default()).unwrap();
    assert_eq!(report.findings, Vec::<Finding>::new());
    assert!(report.unparsable.is_empty(), "{:#?}", report.unparsable);
    assert_eq!(report.files_scanned, 11);
}

#[test]
fn findings_serialize_with_stable_field_names() {
    let findings = lint_source(Path::new("a.php"), "<?php\n  include 'x.php';\n");
    let json = serde_json::to_value(&findings).unwrap();
    assert_eq!(json[0]["file"], "a.php");
    assert_eq!(json[0]["line"], 2);
    assert_eq!(json[0]["column"], 3);
    assert_eq!(json[0]["rule"], "relative-path");
    assert!(json[0]["message"]
        .as_str()
        .unwrap()
        .contains("include of the relative path 'x.php'"));
    assert!(json[0]["hint"]
        .as_str()
        .unwrap()
        .contains("__DIR__ . '/x.php'"));
}

#[test]
fn columns_count_characters_not_bytes() {
    let findings = lint_source(Path::new("a.php"), "<?php $é = 1; require 'x.php';\n");
    assert_eq!(findings[0].column, 15);
}
