//! Static assets outlive their release: on a real nginx + php-fpm, a page of release A
//! references `a.<hash>.css`; after switching to B, which has only `b.<hash>.css`, A's URL
//! still answers with A's bytes, for `keep_asset_releases` releases, and never a script.

use std::path::Path;

use cutover_teststack::make_readable_by_workers;

use crate::common::*;

/// Writes release `name` into `dir`: a page that links its own stylesheet, that
/// stylesheet, a script only this release has, and an `.htaccess`.
fn write_release(dir: &Path, name: &str, hash: &str) {
    let css = format!("/build/{name}.{hash}.css");
    write(
        &dir.join("public/index.php"),
        &format!("<?php echo '<link rel=\"stylesheet\" href=\"{css}\">release {name}';\n"),
    );
    write(&dir.join(format!("public{css}")), &format!("{name} css\n"));
    write(
        &dir.join(format!("public/build/only-{name}.php")),
        &format!("<?php echo 'script {name}';\n"),
    );
    write(&dir.join("public/build/.htaccess"), &format!("# {name}\n"));
}

fn get(nginx: &cutover_teststack::Nginx, path: &str) -> (u16, String) {
    let response = cutover_teststack::http_get(&nginx.url(path)).unwrap();
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

#[test]
fn an_old_release_assets_stay_reachable_for_keep_asset_releases_and_scripts_never_do() {
    let sb = Sandbox::new();
    let releases = [
        ("a", "1111aaaa"),
        ("b", "2222bbbb"),
        ("c", "3333cccc"),
        ("d", "4444dddd"),
    ];
    for (name, hash) in releases {
        write_release(&sb.path().join(name), name, hash);
    }
    let config = sb.config(
        "assets.toml",
        "[deploy]\nasset_dirs = [\"public/build\"]\nkeep_asset_releases = 2\n",
    );
    let (_fpm, nginx) = php_stack(&sb, true);
    let deploy = |name: &str| {
        let src = sb.path().join(name).display().to_string();
        let out = sb.ok(&[
            "--config",
            &config,
            "deploy",
            &src,
            "--to",
            &sb.to(),
            "--release",
            name,
            "--json",
        ]);
        make_readable_by_workers(sb.path()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };

    deploy("a");
    assert_eq!(
        get(&nginx, "/build/a.1111aaaa.css"),
        (200, "a css\n".into())
    );
    let b = deploy("b");
    assert_eq!(one_host(&b)["assets"]["carried"], 1, "{b}");
    assert_eq!(
        get(&nginx, "/index.php").1,
        "<link rel=\"stylesheet\" href=\"/build/b.2222bbbb.css\">release b"
    );
    // A's page, rendered a moment ago, still gets its stylesheet: A's bytes.
    assert_eq!(
        get(&nginx, "/build/a.1111aaaa.css"),
        (200, "a css\n".into())
    );
    // Scripts and dotfiles are never carried: A's script is gone with A.
    assert_eq!(get(&nginx, "/build/only-a.php").0, 404);
    assert_eq!(get(&nginx, "/build/only-b.php"), (200, "script b".into()));
    let htaccess = std::fs::read_to_string(sb.release_dir("b").join("public/build/.htaccess"));
    assert_eq!(htaccess.unwrap(), "# b\n");
    // The carried file is A's inode, not a copy; A itself is untouched.
    let ino =
        |p: std::path::PathBuf| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(
        ino(sb.release_dir("a").join("public/build/a.1111aaaa.css")),
        ino(sb.release_dir("b").join("public/build/a.1111aaaa.css"))
    );
    assert!(!sb
        .release_dir("a")
        .join("public/build/b.2222bbbb.css")
        .exists());

    // keep_asset_releases = 2: A's stylesheet lasts two releases after A, then it is gone.
    deploy("c");
    assert_eq!(get(&nginx, "/build/a.1111aaaa.css").0, 200);
    assert_eq!(get(&nginx, "/build/b.2222bbbb.css").0, 200);
    deploy("d");
    // Gone from the release (nginx's try_files then hands the URL to the front controller).
    assert!(!sb
        .release_dir("d")
        .join("public/build/a.1111aaaa.css")
        .exists());
    assert_ne!(get(&nginx, "/build/a.1111aaaa.css").1, "a css\n");
    assert_eq!(get(&nginx, "/build/b.2222bbbb.css").0, 200);
    assert_eq!(get(&nginx, "/build/c.3333cccc.css").0, 200);

    // Cleanup removes the releases the carried files came from; current's stay whole.
    sb.ok(&[
        "--config",
        &config,
        "cleanup",
        "--keep",
        "1",
        "--to",
        &sb.to(),
    ]);
    assert!(!sb.release_dir("b").exists());
    assert_eq!(
        get(&nginx, "/build/b.2222bbbb.css"),
        (200, "b css\n".into())
    );
    assert_eq!(
        get(&nginx, "/build/d.4444dddd.css"),
        (200, "d css\n".into())
    );

    // Going back: the release being left keeps its assets reachable in the one switched to.
    sb.ok(&["--config", &config, "rollback", "--to", &sb.to()]);
    assert_eq!(sb.current().as_deref(), Some("c"));
    assert_eq!(
        get(&nginx, "/build/d.4444dddd.css"),
        (200, "d css\n".into())
    );
    // Adding only: C's own stylesheet is still C's.
    assert_eq!(
        get(&nginx, "/build/c.3333cccc.css"),
        (200, "c css\n".into())
    );
}

#[test]
fn an_asset_changed_under_the_same_name_is_warned_about_once_and_a_hashed_rename_is_not() {
    let sb = Sandbox::new();
    sb.write("public/css/app.css", "body { color: red }\n");
    sb.write("public/css/print.css", "x\n");
    sb.write("public/js/app.1111aaaa.js", "one\n");
    sb.deploy_src(&[]);

    // Content-hashed rename: nothing to warn about.
    std::fs::remove_file(sb.src().join("public/js/app.1111aaaa.js")).unwrap();
    sb.write("public/js/app.2222bbbb.js", "two\n");
    let out = sb.run_deploy(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // In place, same name, new content: one warning naming the file and the fix.
    sb.write("public/css/app.css", "body { color: blue }\n");
    sb.write("public/css/print.css", "y\n");
    let out = sb.run_deploy(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(
        err.contains("public/css/app.css and 1 more changed content under the same name")
            && err.contains("content-hashed"),
        "{err}"
    );
    let json = sb.json(&["deploy", &sb.src_arg(), "--to", &sb.to()]);
    assert!(
        one_host(&json)["assets"]["changed_in_place"].is_null(),
        "nothing changed since: {json}"
    );
}
