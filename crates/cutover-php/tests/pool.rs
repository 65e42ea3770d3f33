//! `Pool::status` and `Pool::reset` against a real, private php-fpm.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_fastcgi::{Address, Client, Request};
use cutover_php::{Error, Pool};
use cutover_teststack::{make_readable_by_workers, FpmOptions, PhpFpm};

struct Setup {
    fpm: PhpFpm,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start(opts: FpmOptions) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("cutover-php-")
            .tempdir()
            .unwrap();
        make_readable_by_workers(dir.path()).unwrap();
        let fpm = PhpFpm::start(opts).unwrap();
        Setup { fpm, dir }
    }

    fn address(&self) -> Address {
        Address::Unix(self.fpm.unix_socket().unwrap().to_path_buf())
    }

    fn pool(&self) -> Pool {
        Pool {
            address: self.address(),
            script_dir: self.dir.path().join(".cutover/php"),
            chroot: None,
            timeout: Duration::from_secs(10),
        }
    }

    fn app(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs a script of the "app" straight through the pool, as nginx would.
    fn get(&self, script: &Path) -> String {
        let mut client = Client::connect(&self.address(), Duration::from_secs(10)).unwrap();
        let response = client.request(&Request::get(script, "")).unwrap();
        response.body_text().into_owned()
    }
}

fn write_world_readable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    make_readable_by_workers(path.parent().unwrap()).unwrap();
}

#[test]
fn status_reports_opcache_and_ini_as_the_pool_sees_them() {
    let setup = Setup::start(FpmOptions::default());
    let status = setup.pool().status().unwrap();
    let opcache = status.opcache.as_ref().expect("OPcache status");
    assert!(opcache.enabled);
    assert_eq!(status.sapi, "fpm-fcgi");
    assert_eq!(status.ini_value("opcache.validate_timestamps"), Some("0"));
    assert!(
        setup.fpm.worker_pids().contains(&status.pid),
        "pid {} is not a worker",
        status.pid
    );
    assert!(status.ini.contains_key("realpath_cache_ttl"));
    // The workers' user, as the teststack runs them: nobody under root, else the invoking
    // user.
    let uid = setup.fpm.probe().unwrap().uid;
    let expected = user_name(uid);
    assert_eq!(
        status.user.as_deref(),
        Some(expected.as_str()),
        "{status:?}"
    );
    // The script is removed after the request.
    let left: Vec<_> = std::fs::read_dir(setup.dir.path().join(".cutover/php"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn reset_makes_the_pool_see_changed_code() {
    let setup = Setup::start(FpmOptions::default());
    let index = setup.app("public/index.php");
    write_world_readable(&index, "<?php echo 'v1';");
    assert_eq!(setup.get(&index), "v1");
    // validate_timestamps=0: an in-place change stays invisible, as in production.
    std::fs::write(&index, "<?php echo 'v2 changed';").unwrap();
    for _ in 0..8 {
        assert_eq!(
            setup.get(&index),
            "v1",
            "OPcache should still serve the cached script"
        );
    }
    let before = setup
        .pool()
        .status()
        .unwrap()
        .opcache
        .unwrap()
        .manual_restarts;
    let report = setup.pool().reset(Duration::from_secs(10)).unwrap();
    let after = report.status.opcache.as_ref().unwrap();
    assert!(!after.restart_pending);
    assert_eq!(after.manual_restarts, before + 1);
    for _ in 0..8 {
        assert_eq!(setup.get(&index), "v2 changed");
    }
}

/// After a reset the cache is looked at again: scripts of a release other than the live
/// one, compiled in by requests that were under way, make another reset (bounded).
#[test]
fn a_reset_is_repeated_while_another_release_is_compiled_back_in() {
    let setup = Setup::start(FpmOptions {
        workers: 3,
        ..FpmOptions::default()
    });
    let releases = setup.app("releases");
    for id in ["v1", "v2"] {
        write_world_readable(
            &releases.join(id).join("index.php"),
            &format!("<?php echo '{id}';"),
        );
    }
    let (v1, v2) = (releases.join("v1/index.php"), releases.join("v2/index.php"));
    assert_eq!(setup.get(&v2), "v2");
    assert_eq!(setup.get(&v1), "v1");
    let wait = Duration::from_secs(10);

    // Nothing of v2 comes back: one reset.
    let (report, resets) = setup
        .pool()
        .reset_leaving_only(wait, &releases, "v1")
        .unwrap();
    assert_eq!(resets, 1);
    assert!(!report.status.opcache.unwrap().restart_pending);

    // A client that keeps asking for v2 compiles it back in after every restart, as a
    // request under way at a switch can: reset again, up to three times in all.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asking = {
        let (stop, address) = (stop.clone(), setup.address());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                let mut client = Client::connect(&address, Duration::from_secs(5)).unwrap();
                assert_eq!(
                    client.request(&Request::get(&v2, "")).unwrap().body_text(),
                    "v2"
                );
                served += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            served
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let (_, resets) = setup
        .pool()
        .reset_leaving_only(wait, &releases, "v1")
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(asking.join().unwrap() > 0);
    assert_eq!(resets, 3);
}

#[test]
fn restrict_api_is_reported_with_a_hint() {
    let opts = FpmOptions {
        extra_ini: vec![("opcache.restrict_api".into(), "/nonexistent/".into())],
        // The stack's own OPcache probe is refused by restrict_api too.
        check_opcache: false,
        ..FpmOptions::default()
    };
    let setup = Setup::start(opts);
    let status = setup.pool().status().unwrap();
    assert!(status.opcache.is_none());
    assert!(
        status
            .opcache_error
            .as_deref()
            .unwrap_or("")
            .contains("restrict_api"),
        "{status:?}"
    );
    let err = setup.pool().reset(Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, Error::Opcache(_)), "{err}");
    assert!(
        err.hint().unwrap().contains("restrict_api"),
        "{:?}",
        err.hint()
    );
}

#[test]
fn open_basedir_outside_the_script_dir_is_explained() {
    let elsewhere = tempfile::tempdir().unwrap();
    let opts = FpmOptions {
        open_basedir: Some(elsewhere.path().to_path_buf()),
        ..FpmOptions::default()
    };
    let setup = Setup::start(opts);
    let err = setup.pool().status().unwrap_err();
    let hint = err.hint().unwrap_or_default();
    assert!(err.to_string().contains("open_basedir"), "{err}");
    assert!(hint.contains("open_basedir"), "{hint}");
}

#[test]
fn a_script_dir_the_pool_cannot_read_is_explained() {
    if !cutover_teststack::running_as_root() {
        eprintln!("skipped: the pool runs as this user and can read everything it can");
        return;
    }
    let setup = Setup::start(FpmOptions::default());
    let private = setup.dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pool = Pool {
        script_dir: private.join("php"),
        ..setup.pool()
    };
    let err = pool.status().unwrap_err();
    assert!(matches!(err, Error::FastCgi(_)), "{err}");
    assert!(err.hint().is_some(), "{err} has no hint");
}

#[test]
fn a_missing_socket_is_a_connect_error_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool {
        address: Address::Unix(dir.path().join("no.sock")),
        script_dir: dir.path().join("php"),
        chroot: None,
        timeout: Duration::from_secs(2),
    };
    let err = pool.status().unwrap_err();
    assert!(err.to_string().contains("no.sock"), "{err}");
    assert!(err.hint().is_some());
}

fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields[0].to_string())
        })
        .unwrap()
}

/// What a check before a switch relies on to skip listing the cache: OPcache's counters
/// are those of the last listing until a script is compiled (by a request or
/// `opcache_compile_file`), invalidated, or OPcache restarts; requests served from the
/// cache (here without classes: linking one the first time takes inheritance-cache
/// memory) change nothing.
#[test]
fn cache_counters_change_with_every_compile_invalidation_and_restart() {
    let setup = Setup::start(FpmOptions::default());
    let releases = setup.app("releases");
    for (id, file) in [("v1", "index.php"), ("v1", "more.php"), ("v2", "index.php")] {
        write_world_readable(
            &releases.join(id).join(file),
            &format!("<?php echo '{id}/{file}';"),
        );
    }
    let pool = setup.pool();
    let v1 = releases.join("v1/index.php");
    assert_eq!(setup.get(&v1), "v1/index.php");
    // cutover's own script is compiled on its first run: the reference is taken after.
    pool.cache_counters().unwrap();
    let listed = pool.cached_under(&releases).unwrap();
    let paths: Vec<&str> = listed.scripts.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["v1/index.php"]);
    let dirs = listed.clone().by_dir();
    let tally = cutover_php::ReleaseCache::tally(&dirs);
    assert_eq!(tally.len(), 1);
    assert_eq!((tally[0].release.as_str(), tally[0].scripts), ("v1", 1));
    assert!(tally[0].memory > 0, "{tally:?}");

    // Served from the cache: the same counters.
    for _ in 0..3 {
        assert_eq!(setup.get(&v1), "v1/index.php");
    }
    let unchanged = pool.cache_counters().unwrap();
    assert_eq!(unchanged, listed.counters);

    // A request that compiles a script.
    assert_eq!(setup.get(&releases.join("v1/more.php")), "v1/more.php");
    let compiled = pool.cache_counters().unwrap();
    assert_ne!(compiled, unchanged);

    // A pre-warm compile. cutover's compile and invalidate scripts are compiled on their
    // first run: each runs once on a file that is not there before the reference.
    let budget = cutover_php::CompileBudget {
        deadline: std::time::Instant::now() + Duration::from_secs(10),
        slice: Duration::from_millis(100),
        reserve: 0,
    };
    let script = |path: &str| cutover_php::CachedScript {
        path: path.into(),
        memory: 0,
        hits: 0,
    };
    let v2 = releases.join("v2");
    let outcome = pool.compile(&v2, &[script("gone.php")], budget).unwrap();
    assert_eq!((outcome.compiled, outcome.missing), (0, 1));
    assert_eq!(
        pool.invalidate(&releases, &["v2/gone.php".into()]).unwrap(),
        0
    );
    let before = pool.cache_counters().unwrap();
    let outcome = pool.compile(&v2, &[script("index.php")], budget).unwrap();
    assert_eq!(outcome.compiled, 1);
    let prewarmed = pool.cache_counters().unwrap();
    assert_ne!(prewarmed, before);

    // An invalidation, then a restart.
    assert_eq!(
        pool.invalidate(&releases, &["v2/index.php".into()])
            .unwrap(),
        1
    );
    let invalidated = pool.cache_counters().unwrap();
    assert_ne!(invalidated, prewarmed);
    assert_eq!(invalidated.cached_scripts, prewarmed.cached_scripts);
    assert!(invalidated.wasted_memory > prewarmed.wasted_memory);
    pool.reset(Duration::from_secs(10)).unwrap();
    let restarted = pool.cache_counters().unwrap();
    assert_ne!(restarted, invalidated);
    assert_eq!(restarted.manual_restarts, invalidated.manual_restarts + 1);
}
