//! `writable::apply` against a real php-fpm pool whose workers run as another user: what the
//! pool cannot write before, it can after, and the live release's files stay untouched.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use cutover_core::writable::{self, WritableMode};
use cutover_core::DeployPath;
use cutover_teststack::{make_readable_by_workers, running_as_root, FpmOptions, PhpFpm};

const WRITE_SCRIPT: &str = r#"<?php
$result = [];
foreach (['storage/logs/app.log', 'bootstrap/cache/config.php', 'bootstrap/cache/new.php'] as $rel) {
    $path = dirname(__DIR__) . '/' . $rel;
    if (!is_dir(dirname($path))) {
        @mkdir(dirname($path), 0775, true);
    }
    $result[$rel] = @file_put_contents($path, 'written by the pool') !== false;
}
echo json_encode($result);
"#;

fn run(fpm: &PhpFpm, script: &Path) -> String {
    let response = fpm.request(script, "").unwrap();
    response.body()
}

#[test]
fn the_pool_can_write_after_acl_mode_and_not_before() {
    if !running_as_root() {
        eprintln!(
            "skipped: the teststack runs the pool as another user (nobody) only under root; \
             as the invoking user the pool owns nothing less than the tests do"
        );
        return;
    }
    if std::process::Command::new("setfacl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: setfacl is not installed (Debian package `acl`)");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("cutover-writable-")
        .tempdir()
        .unwrap();
    let deploy = DeployPath::new(dir.path().join("app")).unwrap();
    deploy.ensure_layout().unwrap();
    let (old, new) = (
        deploy.releases_dir().join("1"),
        deploy.releases_dir().join("2"),
    );
    for release in [&old, &new] {
        std::fs::create_dir_all(release.join("public")).unwrap();
        std::fs::create_dir_all(release.join("bootstrap/cache")).unwrap();
    }
    std::fs::write(old.join("public/write.php"), WRITE_SCRIPT).unwrap();
    std::fs::hard_link(old.join("public/write.php"), new.join("public/write.php")).unwrap();
    // Unchanged since the live release: staging hard-linked it.
    std::fs::write(old.join("bootstrap/cache/config.php"), "<?php return [];").unwrap();
    std::fs::hard_link(
        old.join("bootstrap/cache/config.php"),
        new.join("bootstrap/cache/config.php"),
    )
    .unwrap();
    std::fs::create_dir_all(deploy.shared_dir().join("storage")).unwrap();
    std::os::unix::fs::symlink("../../shared/storage", new.join("storage")).unwrap();
    make_readable_by_workers(dir.path()).unwrap();
    let live_before = std::fs::metadata(old.join("bootstrap/cache/config.php")).unwrap();

    let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
    let script = new.join("public/write.php");
    assert_eq!(
        run(&fpm, &script),
        r#"{"storage\/logs\/app.log":false,"bootstrap\/cache\/config.php":false,"bootstrap\/cache\/new.php":false}"#,
        "the pool must not be able to write before"
    );

    // The user the pipeline defaults writable_user to: the pool's own.
    let pool = cutover_php::Pool {
        address: cutover_fastcgi::Address::Unix(fpm.unix_socket().unwrap().to_path_buf()),
        script_dir: deploy.state_dir().join("php"),
        chroot: None,
        timeout: Duration::from_secs(10),
    };
    let user = pool.status().unwrap().user.expect("the pool's user");
    assert_ne!(user, "root");
    let paths = ["storage".to_string(), "bootstrap/cache".to_string()];
    let report = writable::apply(&new, &deploy, &paths, WritableMode::Acl, &user).unwrap();
    assert_eq!(report.split, 1, "{report:?}");

    assert_eq!(
        run(&fpm, &script),
        r#"{"storage\/logs\/app.log":true,"bootstrap\/cache\/config.php":true,"bootstrap\/cache\/new.php":true}"#,
        "the pool must be able to write after"
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(
        read(&new.join("bootstrap/cache/config.php")),
        "written by the pool"
    );
    assert_eq!(
        read(&deploy.shared_dir().join("storage/logs/app.log")),
        "written by the pool"
    );
    // The live release's file: same inode, same bytes, no ACL.
    let live = old.join("bootstrap/cache/config.php");
    let live_after = std::fs::metadata(&live).unwrap();
    assert_eq!(live_after.ino(), live_before.ino());
    assert_eq!(read(&live), "<?php return [];");
    assert_eq!(live_after.mode(), live_before.mode());
    assert!(writable::acl_entries(&live, writable::ACL_XATTRS[0]).is_none());
    // What the pool created in shared/ carries the default ACL on.
    let logs = deploy.shared_dir().join("storage/logs");
    let uid = std::fs::metadata(&logs).unwrap().uid();
    let inherited = writable::acl_entries(&logs, writable::ACL_XATTRS[1]).unwrap();
    assert_eq!(inherited.user_perm(uid).map(|p| p & 7), Some(7));
    fpm.stop();
}
