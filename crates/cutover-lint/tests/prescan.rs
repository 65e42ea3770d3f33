//! The pre-scan leaves files unparsed when their bytes hold nothing the walk acts on, and
//! parses a deferred file after all when another file's include path reads a constant or a
//! variable it defines. It must never change a finding: each test lints the same tree with
//! the pre-scan and with `parse_all`, and compares.

use std::path::Path;

use cutover_lint::{lint_dir, Options, Report};

fn both(dir: &Path, options: &Options) -> (Report, Report) {
    let prescan = lint_dir(dir, options).unwrap();
    let all = Options {
        parse_all: true,
        ..options.clone()
    };
    (prescan, lint_dir(dir, &all).unwrap())
}

fn assert_same(prescan: &Report, all: &Report) {
    assert_eq!(prescan.findings, all.findings);
    assert_eq!(prescan.files_scanned, all.files_scanned);
    // Syntax errors are reported only in files that are parsed.
    for unparsable in &prescan.unparsable {
        assert!(all.unparsable.contains(unparsable), "{unparsable:?}");
    }
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// (file, line) of each finding.
fn at(report: &Report, dir: &Path) -> Vec<(String, usize)> {
    report
        .findings
        .iter()
        .map(|f| {
            let file = f.file.strip_prefix(dir).unwrap_or(&f.file);
            (file.to_string_lossy().into_owned(), f.line)
        })
        .collect()
}

#[test]
fn a_constant_defined_by_const_in_a_file_without_includes_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            // Neither file includes anything or calls define(): both are deferred at first.
            (
                "src/Paths.php",
                "<?php\nclass Paths {\n    const ROOT = '/srv/app/current';\n}\n",
            ),
            (
                "src/base.php",
                "<?php\nconst BASE = Paths::ROOT . '/lib';\n",
            ),
            ("src/Other.php", "<?php\nclass Other { const ROOTS = 1; }\n"),
            ("index.php", "<?php\nrequire BASE . '/a.php';\n"),
        ],
    );
    let (prescan, all) = both(dir.path(), &Options::default());
    assert_same(&prescan, &all);
    assert_eq!(at(&prescan, dir.path()), [("src/Paths.php".into(), 3)]);
    assert_eq!(prescan.findings[0].uses_count, 1);
}

#[test]
fn variables_of_a_file_included_by_a_dir_path_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("config.php", "<?php\n$root = '/srv/app/current';\n"),
            (
                "index.php",
                "<?php\nrequire __DIR__ . '/config.php';\nrequire $root . '/lib.php';\n",
            ),
        ],
    );
    let (prescan, all) = both(dir.path(), &Options::default());
    assert_same(&prescan, &all);
    assert_eq!(at(&prescan, dir.path()), [("config.php".into(), 2)]);
}

#[test]
fn includes_that_only_look_commented_out_are_found() {
    // Each include below follows something a careless comment scan would take for the
    // start of a comment that hides it.
    let files = [
        (
            "string.php",
            "<?php $u = 'http://x/*'; include '/abs/a.php';\n",
        ),
        (
            "double.php",
            "<?php $u = \"#{$a['//']}\"; include '/abs/b.php';\n",
        ),
        (
            "close.php",
            "<?php // ends here ?> text <?php include '/abs/c.php';\n",
        ),
        ("cr.php", "<?php // old Mac lines\rinclude '/abs/d.php';\r"),
        (
            "attribute.php",
            "<?php\n#[Attr('x')] function f() {}\ninclude '/abs/e.php';\n",
        ),
        (
            "heredoc.php",
            "<?php\n$t = <<<EOT\n/* not a comment\nEOT;\ninclude '/abs/f.php'; // */\n",
        ),
        ("shell.php", "<?php $x = `ls /*`; include '/abs/g.php';\n"),
        (
            "escaped.php",
            "<?php $s = 'it\\'s /*'; include '/abs/h.php';\n",
        ),
        (
            "unclosed.php",
            "<?php /* never closed\ninclude '/abs/i.php';\n",
        ),
        ("hash.php", "<?php #?x include '/abs/j.php';\n"),
        (
            "question.php",
            "<?php // the parser reads on past ??> here\n$s = '<?php '; $u = 'x//'; include '/abs/k.php';\n",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &files);
    let (prescan, all) = both(dir.path(), &Options::default());
    assert_same(&prescan, &all);
    let found: Vec<String> = at(&prescan, dir.path()).into_iter().map(|f| f.0).collect();
    // Some are syntax errors: the parser recovers, and finds the include all the same.
    for (name, _) in &files {
        assert!(found.contains(&name.to_string()), "{name}: {found:?}");
    }
}

#[test]
fn a_file_whose_includes_are_all_in_comments_is_not_parsed() {
    let dir = tempfile::tempdir().unwrap();
    // A syntax error shows whether the file was parsed.
    let text = "<?php\n/** Classes include this. */\n// require 'x.php';\nfunction (\n";
    write(dir.path(), &[("doc.php", text)]);
    let (prescan, all) = both(dir.path(), &Options::default());
    assert_same(&prescan, &all);
    assert_eq!(all.unparsable.len(), 1, "{:?}", all.unparsable);
    assert!(prescan.unparsable.is_empty(), "{:?}", prescan.unparsable);
    assert_eq!(prescan.files_scanned, 1);
}

#[test]
fn debian_packages_lint_the_same_with_and_without_the_prescan() {
    let dir = tempfile::tempdir().unwrap();
    let packages = ["wordpress", "phpmyadmin", "roundcube-core"];
    if cutover_teststack::debian_packages(&packages, dir.path()).is_none() {
        return;
    }
    for strict in [false, true] {
        let options = Options {
            strict,
            ..Options::default()
        };
        let (prescan, all) = both(dir.path(), &options);
        assert_same(&prescan, &all);
        assert!(prescan.files_scanned > 1900, "{}", prescan.files_scanned);
        // Debian's packages read their config from /etc and /var/lib: 42 findings here.
        assert!(prescan.findings.len() > 10, "{:#?}", prescan.findings);
    }
}
