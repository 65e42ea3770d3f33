//! Generated code nests far deeper than people write: 50,000-term concatenations, hundreds of
//! nested `if`s or parentheses. The linter must neither overflow its stack on such a file
//! nor silently skip what is inside. Each test lints on the test's own thread (2 MiB of
//! stack), where a recursion as deep as the input overflows.

use std::path::Path;

use cutover_lint::{lint_dir, lint_source, lint_source_with, Finding, Options};

/// (line, rule id) of each finding.
/// (line, rule id) of each include the findings cover.
fn found(findings: &[Finding]) -> Vec<(usize, &str)> {
    findings
        .iter()
        .flat_map(|f| f.uses.iter().map(|u| (u.line, f.rule.id())))
        .collect()
}

/// `'a' . 'b' . …`: tree-sitter nests a chain of `.` one level per operand.
fn concatenation(terms: usize) -> String {
    (0..terms)
        .map(|i| format!("'{}'", char::from(b'a' + (i % 26) as u8)))
        .collect::<Vec<_>>()
        .join(" . ")
}

/// `statements` inside `depth` nested `if (1) { … }`, one per line.
fn inside_ifs(depth: usize, statements: &str) -> String {
    format!(
        "{}{statements}\n{}",
        "if (1) {\n".repeat(depth),
        "}\n".repeat(depth)
    )
}

/// `expression` inside `depth` pairs of parentheses.
fn inside_parentheses(depth: usize, expression: &str) -> String {
    format!("{}{expression}{}", "(".repeat(depth), ")".repeat(depth))
}

#[test]
fn a_concatenation_of_50000_terms_is_linted_like_any_file() {
    let source = format!(
        "<?php $s = {};\ninclude '/abs/x.php';\ninclude __DIR__ . '/y.php';\n",
        concatenation(50_000)
    );
    let findings = lint_source(Path::new("a.php"), &source);
    assert_eq!(found(&findings), [(2, "absolute-path")], "{findings:#?}");
}

#[test]
fn a_path_built_by_a_50000_term_concatenation_keeps_its_start() {
    // Only the first operands are evaluated; the start of the path is among them.
    let source = format!(
        "<?php\n$root = '/srv/app/current/' . {};\nrequire $root;\n",
        concatenation(50_000)
    );
    let findings = lint_source(Path::new("a.php"), &source);
    assert_eq!(found(&findings), [(3, "absolute-path")], "{findings:#?}");
    // Reported where $root is set, with the require as its use.
    assert_eq!(findings[0].line, 2);
    assert!(
        findings[0]
            .message
            .starts_with("$root is the absolute path '/srv/app/current/abcdefghij"),
        "{}",
        findings[0].message
    );
    // The rest is unknown, so the path is shown as unfinished.
    assert!(findings[0]
        .message
        .contains("…', and an include path is built from it (a.php:3)"));
}

#[test]
fn an_include_inside_200_nested_ifs_is_reported() {
    let source = format!("<?php\n{}", inside_ifs(200, "include '/abs/path.php';"));
    let findings = lint_source(Path::new("a.php"), &source);
    assert_eq!(found(&findings), [(202, "absolute-path")]);
    assert!(findings[0]
        .message
        .starts_with("include of the absolute path '/abs/path.php'"));
}

#[test]
fn a_variable_set_inside_200_nested_ifs_is_followed() {
    let source = format!(
        "<?php\n{}include $root . '/path.php';\n",
        inside_ifs(200, "$root = '/abs';")
    );
    let findings = lint_source(Path::new("a.php"), &source);
    assert_eq!(found(&findings), [(403, "absolute-path")]);
}

#[test]
fn an_include_path_inside_500_parentheses_is_reported() {
    let source = format!(
        "<?php\ninclude {};\n",
        inside_parentheses(500, "'/abs/path.php'")
    );
    let findings = lint_source(Path::new("a.php"), &source);
    assert_eq!(found(&findings), [(2, "absolute-path")], "{findings:#?}");
    assert!(findings[0]
        .message
        .starts_with("include of the absolute path '/abs/path.php'"));
}

#[test]
fn a_tree_with_deeply_nested_files_is_linted() {
    // The same files through lint_dir: every pass over the tree, on rayon's threads.
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "concat.php",
            format!(
                "<?php $s = {};\ninclude '/abs/x.php';\n",
                concatenation(50_000)
            ),
        ),
        (
            "ifs.php",
            format!("<?php\n{}", inside_ifs(200, "include '/abs/path.php';")),
        ),
        (
            "parens.php",
            format!(
                "<?php\ninclude {};\n",
                inside_parentheses(500, "'/abs/path.php'")
            ),
        ),
    ];
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let report = lint_dir(dir.path(), &Options::default()).unwrap();
    assert!(report.unparsable.is_empty(), "{:#?}", report.unparsable);
    let found: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.file.strip_prefix(dir.path()).unwrap(), f.line))
        .collect();
    assert_eq!(
        found,
        [
            (Path::new("concat.php"), 2),
            (Path::new("ifs.php"), 202),
            (Path::new("parens.php"), 2),
        ]
    );
}

#[test]
fn expressions_nested_past_the_bound_are_unknown_and_the_rest_is_linted() {
    // Nesting that evaluation still follows by recursion, deeper than its bound: the value
    // becomes unknown, and nothing around it is lost.
    let depth = 1_000;
    let nested = [
        format!("{}__DIR__{}", "dirname(".repeat(depth), ")".repeat(depth)),
        format!("{}__DIR__", "$a ?? ".repeat(depth)),
        format!("{}__DIR__{}", "$c ? ".repeat(depth), " : $d".repeat(depth)),
        format!("{}__DIR__{}", "[".repeat(depth), "]".repeat(depth)),
        format!("$a{}", "[0]".repeat(depth)),
        format!("{}0{}", "$a[".repeat(depth), "]".repeat(depth)),
        (0..depth).fold("'x'".to_string(), |inner, _| {
            format!("\"{{$a[{inner}]}}/x\"")
        }),
        format!("{}__DIR__", "$x = ".repeat(depth)),
    ];
    for expression in &nested {
        let source = format!(
            "<?php\n$p = {expression};\ninclude $p;\n[{}$v{}] = $p;\ninclude '/abs/x.php';\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let findings = lint_source(Path::new("a.php"), &source);
        assert_eq!(found(&findings), [(5, "absolute-path")], "{expression:.40}");
        let strict = Options {
            strict: true,
            ..Options::default()
        };
        let findings = lint_source_with(Path::new("a.php"), &source, &strict);
        let lines: Vec<usize> = findings.iter().map(|f| f.line).collect();
        assert!(lines.ends_with(&[5]), "{expression:.40}: {findings:#?}");
    }
}

/// 100,000 levels: deeper than any recursion over the tree survives on a 2 MiB stack.
#[test]
fn expressions_100000_deep_neither_crash_nor_hide_what_follows() {
    let depth = 100_000;
    let nested = [
        inside_parentheses(depth, "'/abs/p.php'"),
        format!("{}__DIR__{}", "dirname(".repeat(depth), ")".repeat(depth)),
        format!("{}__DIR__{}", "[".repeat(depth), "]".repeat(depth)),
        format!("{}__DIR__", "$a ?? ".repeat(depth)),
        format!("{}'x'{}", "f(".repeat(depth), ")".repeat(depth)),
        format!("{}'x'", "-".repeat(depth)),
        concatenation(depth),
    ];
    for expression in &nested {
        let source = format!("<?php\n$p = {expression};\ninclude '/abs/x.php';\n");
        let findings = lint_source(Path::new("a.php"), &source);
        let lines: Vec<usize> = findings.iter().map(|f| f.line).collect();
        assert_eq!(lines, [3], "{expression:.40}: {findings:#?}");
    }
    // 100,000 nested ifs around an include.
    let source = format!("<?php\n{}", inside_ifs(depth, "include '/abs/path.php';"));
    let findings = lint_source(Path::new("a.php"), &source);
    assert_eq!(found(&findings), [(depth + 2, "absolute-path")]);
}
