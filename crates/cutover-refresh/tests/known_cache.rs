//! The check before each switch on a real php-fpm: a flip between two warm releases asks
//! OPcache for its counters only, and lists its scripts again as soon as anything was
//! compiled.

use std::path::Path;
use std::time::Duration;

use cutover_config::{HealthSettings, PhpSettings, RefreshSettings, RefreshStrategy};
use cutover_core::{DeployPath, ReleaseId};
use cutover_fastcgi::{Address, Client, Request};
use cutover_refresh::{RefreshSpec, Refresher};
use cutover_teststack::{make_readable_by_workers, FpmOptions, PhpFpm};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Points `current` at `id`, as a switch does.
fn switch(deploy: &DeployPath, id: &str) {
    let next = deploy.root().join("current.next");
    std::os::unix::fs::symlink(format!("releases/{id}"), &next).unwrap();
    std::fs::rename(&next, deploy.current()).unwrap();
}

fn get(fpm: &PhpFpm, script: &Path) -> String {
    let address = Address::Unix(fpm.unix_socket().unwrap().to_path_buf());
    let mut client = Client::connect(&address, Duration::from_secs(10)).unwrap();
    let response = client.request(&Request::get(script, "")).unwrap();
    response.body_text().into_owned()
}

#[test]
fn flips_between_warm_releases_ask_for_counters_only() {
    let dir = tempfile::Builder::new()
        .prefix("cutover-refresh-")
        .tempdir()
        .unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    for id in ["v1", "v2"] {
        for file in ["index.php", "lib.php", "rare.php"] {
            write(
                &root.join("releases").join(id).join(file),
                &format!("<?php echo '{id}/{file}';"),
            );
        }
    }
    make_readable_by_workers(&root).unwrap();
    let deploy = DeployPath::new(&root).unwrap();
    switch(&deploy, "v1");
    let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
    for file in ["index.php", "lib.php"] {
        get(&fpm, &root.join("releases/v1").join(file));
    }

    let php = PhpSettings {
        fpm: Some(format!("unix:{}", fpm.unix_socket().unwrap().display())),
        fpm_chroot: None,
    };
    let refresh = RefreshSettings {
        strategy: vec![RefreshStrategy::Prewarm, RefreshStrategy::None],
        ..RefreshSettings::default()
    };
    let spec = RefreshSpec::from_settings(&php, &refresh, &HealthSettings::default()).unwrap();
    let mut refresher = Refresher::prepare(&spec, &deploy).unwrap().unwrap();
    let mut flip = |to: &str| {
        let report = refresher
            .before_switch(&deploy, &ReleaseId::parse(to).unwrap())
            .unwrap()
            .unwrap();
        switch(&deploy, to);
        report
    };

    let first = flip("v2");
    assert!(first.listed, "{first:?}");
    assert_eq!(first.prewarm.as_ref().unwrap().compiled, 2, "{first:?}");
    // Back and forth between two warm releases: nothing compiled, nothing listed.
    for to in ["v1", "v2", "v1"] {
        let report = flip(to);
        assert!(!report.listed, "flip to {to}: {report:?}");
        assert!(report.room.enough, "{report:?}");
        let prewarm = report.prewarm.as_ref().unwrap();
        assert_eq!(
            (prewarm.compiled, prewarm.already_cached),
            (0, 2),
            "{report:?}"
        );
        let held: Vec<(&str, u64)> = report
            .cache
            .releases
            .iter()
            .map(|r| (r.release.as_str(), r.scripts))
            .collect();
        assert_eq!(held, [("v1", 2), ("v2", 2)], "{report:?}");
    }

    // A request compiles a script of the live release (v1): the next check lists again,
    // and pre-warms that script for v2.
    assert_eq!(get(&fpm, &root.join("releases/v1/rare.php")), "v1/rare.php");
    let report = flip("v2");
    assert!(report.listed, "{report:?}");
    assert_eq!(report.prewarm.as_ref().unwrap().compiled, 1, "{report:?}");
    let report = flip("v1");
    assert!(!report.listed, "{report:?}");
}
