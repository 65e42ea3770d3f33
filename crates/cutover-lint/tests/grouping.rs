//! Findings grouped by the definition their paths come from, and judged against the deploy
//! path when it is known.

use std::path::Path;

use cutover_lint::{lint_dir, lint_source_with, Options, MAX_USES_LISTED};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn deploy(path: &str) -> Options {
    Options {
        deploy_paths: vec![path.into()],
        ..Options::default()
    }
}

#[test]
fn many_includes_through_one_define_are_one_finding_at_the_define() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "config.php",
        "<?php\n\ndefine('ROOT', '/srv/app/current/');\n",
    );
    let mut expected = Vec::new();
    for file in 0..4 {
        let mut text = String::from("<?php\n");
        for include in 0..5 {
            text.push_str(&format!(
                "require_once ROOT . 'lib/{file}-{include}.php';\n"
            ));
            expected.push((format!("f{file}.php"), include + 2));
        }
        write(root, &format!("f{file}.php"), &text);
    }
    let report = lint_dir(root, &Options::default()).unwrap();
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let finding = &report.findings[0];
    assert_eq!(finding.file, root.join("config.php"));
    assert_eq!((finding.line, finding.column), (3, 1));
    assert_eq!(finding.rule.id(), "absolute-path");
    assert_eq!(finding.uses_count, 20);
    assert_eq!(finding.uses.len(), MAX_USES_LISTED);
    let listed: Vec<(String, usize)> = finding
        .uses
        .iter()
        .map(|u| {
            let name = u.file.strip_prefix(root).unwrap().to_string_lossy();
            (name.into_owned(), u.line)
        })
        .collect();
    assert_eq!(listed, expected[..MAX_USES_LISTED]);
    assert!(
        finding.message.starts_with(
            "constant ROOT is the absolute path '/srv/app/current/', and 20 include paths are \
             built from it (first "
        ),
        "{}",
        finding.message
    );
    // Without the deploy path it does not claim the path runs through the symlink.
    assert!(
        finding
            .message
            .contains("if it runs through the deploy symlink"),
        "{}",
        finding.message
    );

    // An allow comment at the definition accepts all of its uses.
    write(
        root,
        "config.php",
        "<?php\n// cutover-lint: allow(absolute-path)\ndefine('ROOT', '/srv/app/current/');\n",
    );
    let report = lint_dir(root, &Options::default()).unwrap();
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[test]
fn one_variable_used_twice_is_one_finding_listing_both() {
    let source = "<?php\n$lib = '/opt/lib';\nrequire $lib . '/a.php';\ninclude \"$lib/b.php\";\n";
    let findings = lint_source_with(Path::new("a.php"), source, &Options::default());
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].line, 2);
    let lines: Vec<usize> = findings[0].uses.iter().map(|u| u.line).collect();
    assert_eq!(lines, [3, 4]);
    assert_eq!(findings[0].uses_count, 2);
}

#[test]
fn with_the_deploy_path_only_paths_through_its_current_are_hazards() {
    let source = "<?php\n\
        require '/srv/app/current/lib/a.php';\n\
        require '/usr/share/php/Foo/Bar.php';\n\
        define('ABSPATH', '/usr/share/wordpress/');\n\
        require ABSPATH . 'wp-settings.php';\n\
        require '/srv/app/releases/5/lib/a.php';\n\
        require '/srv/' . $site . '/x.php';\n\
        require '/srv/app/shared/config.php';\n";
    let findings = lint_source_with(Path::new("a.php"), source, &deploy("/srv/app"));
    let lines: Vec<usize> = findings.iter().map(|f| f.line).collect();
    // Line 7 may continue into /srv/app/current.
    assert_eq!(lines, [2, 7], "{findings:#?}");
    assert!(
        findings[0].message.starts_with(
            "require of the absolute path '/srv/app/current/lib/a.php': it runs through the \
             deploy symlink /srv/app/current, resolved again at include time"
        ),
        "{}",
        findings[0].message
    );
    assert!(
        findings[1]
            .message
            .contains("if it runs through the deploy symlink"),
        "{}",
        findings[1].message
    );

    // Without the deploy path, everything absolute is reported, once per origin.
    let findings = lint_source_with(Path::new("a.php"), source, &Options::default());
    let lines: Vec<usize> = findings.iter().map(|f| f.line).collect();
    assert_eq!(lines, [2, 3, 4, 6, 7, 8], "{findings:#?}");
    assert!(findings
        .iter()
        .all(|f| f.message.contains("if it runs through the deploy symlink,")));
}

#[test]
fn a_symlink_into_the_releases_on_this_machine_is_a_hazard_too() {
    let dir = tempfile::tempdir().unwrap();
    let deploy_path = dir.path().join("deploy");
    std::fs::create_dir_all(deploy_path.join("releases/1/lib")).unwrap();
    std::os::unix::fs::symlink("releases/1", deploy_path.join("current")).unwrap();
    // /var/www/site -> <deploy>/current, as some servers are set up.
    let site = dir.path().join("site");
    std::os::unix::fs::symlink(deploy_path.join("current"), &site).unwrap();
    let source = format!(
        "<?php\nrequire '{}/lib/a.php';\nrequire '{}/lib/a.php';\n",
        site.display(),
        deploy_path.join("releases/1").display()
    );
    let options = deploy(deploy_path.to_str().unwrap());
    let findings = lint_source_with(Path::new("a.php"), &source, &options);
    let lines: Vec<usize> = findings.iter().map(|f| f.line).collect();
    assert_eq!(lines, [2], "{findings:#?}");
}
