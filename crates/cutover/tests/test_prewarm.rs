//! `[refresh] strategy = ["prewarm", "none"]` and `opcache_room` on a real php-fpm (OPcache
//! on, validate_timestamps=0) behind a real nginx passing `$realpath_root`.
//!
//! The app: `public/index.php` asks OPcache, before including them, whether its
//! [`LIBS`] library files (by their real path, through `__DIR__`) are cached, prints how
//! many were not ("cold=N") and its release, then includes them all. A probe script
//! outside the deploy path reads the pool's OPcache statistics, so the tests can see what
//! the pool compiled without going through cutover.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_teststack::{
    http_get, make_readable_by_workers, FpmOptions, Nginx, NginxOptions, PhpFpm,
};

use crate::common::*;

const LIBS: usize = 20;
const CUTOVER_LIMIT: Duration = Duration::from_secs(120);

const INDEX: &str = r#"<?php
// dirname(): real paths, as OPcache keys them ($realpath_root, __DIR__).
$libs = glob(dirname(__DIR__) . '/lib/*.php');
$cold = 0;
foreach ($libs as $lib) {
    if (!opcache_is_script_cached($lib)) {
        $cold++;
    }
}
foreach ($libs as $lib) {
    require $lib;
}
echo 'release=' . trim(file_get_contents(dirname(__DIR__) . '/RELEASE')) . "\n";
echo 'cold=' . $cold . "\n";
echo 'libs=' . count($libs) . "\n";
"#;

/// Prints the pool's OPcache statistics and, for each path in `?check=a,b`, whether it is
/// cached.
const PROBE: &str = r#"<?php
$s = opcache_get_status(false);
echo json_encode([
    'misses' => $s['opcache_statistics']['misses'],
    'scripts' => $s['opcache_statistics']['num_cached_scripts'],
    'free' => $s['memory_usage']['free_memory'],
    'wasted' => $s['memory_usage']['wasted_memory'],
    'oom_restarts' => $s['opcache_statistics']['oom_restarts'],
    'cache_full' => $s['cache_full'],
    'cached' => array_map('opcache_is_script_cached', array_filter(explode(',', $_GET['check'] ?? ''))),
]);
"#;

/// Writes a release of the app: [`LIBS`] library files of about `functions` functions
/// each (which sets how much OPcache memory a release takes), named after `version`.
fn write_app(dir: &Path, version: &str, functions: usize) {
    write(&dir.join("public/index.php"), INDEX);
    for lib in 0..LIBS {
        let mut code = String::from("<?php\n");
        for f in 0..functions {
            code.push_str(&format!(
                "function {version}_l{lib}_f{f}($x) {{ return $x + {f} . '{version}'; }}\n"
            ));
        }
        write(&dir.join(format!("lib/l{lib:02}.php")), &code);
    }
}

struct Stack {
    nginx: Nginx,
    fpm: PhpFpm,
    sb: Sandbox,
    deploy: PathBuf,
    probe: PathBuf,
}

#[derive(Debug, serde::Deserialize)]
struct Probe {
    misses: u64,
    wasted: u64,
    oom_restarts: u64,
    cache_full: bool,
    cached: Vec<bool>,
}

impl Stack {
    /// Versions v1..=v3 as sources, `functions` per library file; `ini` for the pool.
    fn start(functions: usize, ini: &[(&str, &str)]) -> Stack {
        let sb = Sandbox::new();
        for version in ["v1", "v2", "v3"] {
            write_app(&sb.path().join(version), version, functions);
        }
        let probe = sb.path().join("probe/probe.php");
        write(&probe, PROBE);
        std::fs::create_dir_all(sb.deploy()).unwrap();
        make_readable_by_workers(sb.path()).unwrap();
        let deploy = std::fs::canonicalize(sb.deploy()).unwrap();
        let options = FpmOptions {
            extra_ini: ini
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..FpmOptions::default()
        };
        let fpm = PhpFpm::start(options).unwrap();
        let mut nginx_options =
            NginxOptions::new(deploy.join("current/public"), fpm.fastcgi_target());
        nginx_options.realpath_root = true;
        let nginx = Nginx::start(nginx_options).unwrap();
        Stack {
            nginx,
            fpm,
            sb,
            deploy,
            probe,
        }
    }

    fn config(&self, name: &str, refresh: &str) -> String {
        let socket = self.fpm.unix_socket().unwrap().display().to_string();
        self.sb.config(
            name,
            &format!("[php]\nfpm = \"unix:{socket}\"\n\n[refresh]\n{refresh}\n"),
        )
    }

    fn run_deploy(&self, version: &str, config: &str) -> std::process::Output {
        self.run_deploy_as(version, version, config)
    }

    fn run_deploy_as(&self, version: &str, release: &str, config: &str) -> std::process::Output {
        let source = self.sb.path().join(version).display().to_string();
        let to = self.deploy.display().to_string();
        let args = [
            "deploy",
            &source,
            "--to",
            &to,
            "--release",
            release,
            "--keep",
            "100",
            "--config",
            config,
            "--json",
        ];
        output_within(self.sb.cutover().args(args), CUTOVER_LIMIT)
    }

    fn deploy(&self, version: &str, config: &str) -> serde_json::Value {
        self.deploy_as(version, version, config)
    }

    /// Deploys source `version` as release `release`.
    fn deploy_as(&self, version: &str, release: &str, config: &str) -> serde_json::Value {
        let out = self.run_deploy_as(version, release, config);
        assert!(
            out.status.success(),
            "deploy {version} failed:\n{}",
            text(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The pool's statistics, and whether each of `release`'s scripts is cached.
    fn probe(&self, release: &str) -> Probe {
        let scripts = self.scripts(release);
        let check: Vec<String> = scripts.iter().map(|p| p.display().to_string()).collect();
        let response = self
            .fpm
            .request(&self.probe, &format!("check={}", check.join(",")))
            .unwrap();
        let body = response.body();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("probe: {e}: {body}"))
    }

    /// The real paths of a release's scripts: index.php and the libraries.
    fn scripts(&self, release: &str) -> Vec<PathBuf> {
        let dir = self.deploy.join("releases").join(release);
        let mut scripts = vec![dir.join("public/index.php")];
        scripts.extend((0..LIBS).map(|l| dir.join(format!("lib/l{l:02}.php"))));
        scripts
    }

    /// One page: (release, cold library files).
    fn page(&self) -> (String, usize) {
        let response = http_get(&self.nginx.url("/index.php")).unwrap();
        let body = response.text();
        assert_eq!(response.status, 200, "{body}\n{}", self.fpm.error_log());
        let field = |name: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {body}"))
                .to_string()
        };
        assert_eq!(field("libs"), LIBS.to_string(), "{body}");
        (field("release"), field("cold").parse().unwrap())
    }
}

fn opcache(report: &serde_json::Value) -> &serde_json::Value {
    &one_host(report)["opcache"]
}

/// The tentpole: with prewarm the new release's scripts are in OPcache before anything
/// switches, and the first request after the switch compiles nothing. The control (plain
/// `none`) shows the same first request compiling every library cold.
#[test]
fn prewarm_compiles_the_new_release_before_the_switch() {
    let stack = Stack::start(20, &[]);
    let warm = stack.config("warm.toml", "strategy = [\"prewarm\", \"none\"]");
    stack.deploy("v1", &warm);
    assert_eq!(
        stack.page(),
        ("v1".into(), LIBS),
        "the first request on v1 is cold"
    );
    assert_eq!(stack.page(), ("v1".into(), 0));

    let report = stack.deploy("v2", &warm);
    let cache = &opcache(&report)["cache"];
    let prewarm = &opcache(&report)["prewarm"];
    assert_eq!(prewarm["compiled"], (LIBS + 1) as u64, "{report:#}");
    assert_eq!(opcache(&report)["room"]["enough"], true, "{report:#}");
    let v2 = cache["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["release"] == "v2")
        .unwrap_or_else(|| panic!("the report's cache must hold v2: {report:#}"));
    assert_eq!(v2["scripts"], (LIBS + 1) as u64, "{report:#}");

    // No request has reached v2 yet: what the pool holds now is what it held before the
    // switch.
    let before = stack.probe("v2");
    assert!(
        before.cached.iter().all(|c| *c),
        "every v2 script cached: {before:?}"
    );
    let first = stack.page();
    let after = stack.probe("v2");
    assert_eq!(
        first,
        ("v2".into(), 0),
        "the first request on v2 found every library cached"
    );
    assert_eq!(
        after.misses, before.misses,
        "the first request after the switch compiled nothing: {before:?} {after:?}"
    );

    // The control: without prewarm the first request on v3 compiles everything.
    let none = stack.config("none.toml", "strategy = [\"none\"]");
    let report = stack.deploy("v3", &none);
    assert!(opcache(&report).get("prewarm").is_none(), "{report:#}");
    let before = stack.probe("v3");
    assert!(
        before.wasted > 0 && before.oom_restarts == 0,
        "v1's memory is wasted, nothing restarted yet: {before:?}"
    );
    assert_eq!(stack.page(), ("v3".into(), LIBS));
    let after = stack.probe("v3");
    assert!(after.misses > before.misses, "{before:?} {after:?}");
}

/// Releases out of service since an earlier switch are invalidated before the next one,
/// so OPcache holds at most the live release and the new one.
#[test]
fn releases_out_of_service_are_let_go() {
    let stack = Stack::start(20, &[]);
    let warm = stack.config("warm.toml", "strategy = [\"prewarm\", \"none\"]");
    for version in ["v1", "v2"] {
        stack.deploy(version, &warm);
        stack.page();
    }
    let wasted_before = stack.probe("v1").wasted;
    let report = stack.deploy("v3", &warm);
    assert_eq!(
        opcache(&report)["invalidated"],
        (LIBS + 1) as u64,
        "{report:#}"
    );
    let held: Vec<&str> = opcache(&report)["cache"]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["release"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["v2", "v3"], "{report:#}");
    let probe = stack.probe("v1");
    assert!(
        probe.cached.iter().all(|c| !c),
        "v1 no longer cached: {probe:?}"
    );
    assert!(
        probe.wasted > wasted_before,
        "invalidated scripts count as wasted: {probe:?}"
    );
    assert_eq!(stack.page(), ("v3".into(), 0));

    // `php status` says the same, per release.
    let to = stack.deploy.display().to_string();
    let args = ["php", "status", "--to", &to, "--config", &warm, "--json"];
    let out = output_within(stack.sb.cutover().args(args), CUTOVER_LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let releases = &status["hosts"][0]["result"]["status"]["releases"];
    let held: Vec<(&str, u64)> = releases
        .as_array()
        .unwrap_or_else(|| panic!("{status:#}"))
        .iter()
        .map(|r| {
            (
                r["release"].as_str().unwrap(),
                r["scripts"].as_u64().unwrap(),
            )
        })
        .collect();
    let scripts = (LIBS + 1) as u64;
    assert_eq!(held, [("v2", scripts), ("v3", scripts)], "{status:#}");
    let args = ["php", "status", "--to", &to, "--config", &warm];
    let out = output_within(stack.sb.cutover().args(args), CUTOVER_LIMIT);
    assert!(
        stdout(&out).contains(&format!("release v3: {scripts} scripts")),
        "{}",
        text(&out)
    );
}

/// Ten deploys with traffic between them: before each switch OPcache holds (as cached,
/// not invalidated) at most the live release and the new one, and each new release is
/// warm before it goes live.
#[test]
fn ten_deploys_keep_two_releases_cached() {
    let stack = Stack::start(20, &[]);
    let warm = stack.config("warm.toml", "strategy = [\"prewarm\", \"none\"]");
    let mut one_release = 0;
    for n in 1..=10 {
        let release = format!("r{n:02}");
        let report = stack.deploy_as(["v1", "v2", "v3"][n % 3], &release, &warm);
        let cache = &opcache(&report)["cache"];
        let held = cache["releases"].as_array().unwrap();
        assert!(held.len() <= 2, "deploy {n}: {report:#}");
        let memory: u64 = held.iter().map(|r| r["memory"].as_u64().unwrap()).sum();
        if n == 1 {
            assert!(held.is_empty(), "{report:#}");
        } else {
            assert!(
                held.iter().any(|r| r["release"] == release.as_str()),
                "{report:#}"
            );
            if n == 2 {
                one_release = held[0]["memory"].as_u64().unwrap();
            }
            assert!(
                memory <= 2 * one_release + one_release / 10,
                "deploy {n}: {report:#}"
            );
        }
        let (served, cold) = stack.page();
        assert_eq!(served, release);
        assert_eq!(cold, if n == 1 { LIBS } else { 0 }, "deploy {n}");
    }
}

/// OPcache of 16 MiB (1 MiB of interned strings) and a release of about 12 MiB: a second
/// copy never fits, not even after a restart. `refuse`: exit 1, nothing switched or left;
/// `reset`: no pre-warm, OPcache reset after the switch (the new release starts cold, the
/// old one is gone from the cache); the default with prewarm (`restart`) falls back to a
/// warning and pre-warms what fits.
#[test]
fn a_pool_without_room_is_warned_about_refused_or_reset() {
    let ini = [
        ("opcache.memory_consumption", "16"),
        ("opcache.interned_strings_buffer", "1"),
    ];
    let stack = Stack::start(1200, &ini);
    let warm = stack.config("warm.toml", "strategy = [\"prewarm\", \"none\"]");
    stack.deploy("v1", &warm);
    stack.page();
    let probe = stack.probe("v1");
    assert!(
        probe.cached.iter().all(|c| *c),
        "v1 must fit once: {probe:?}"
    );

    let refuse = stack.config(
        "refuse.toml",
        "strategy = [\"prewarm\", \"none\"]\nopcache_room = \"refuse\"",
    );
    let out = stack.run_deploy("v2", &refuse);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("OPcache has") && err.contains("opcache_room"),
        "{err}"
    );
    assert_eq!(stack.sb.current().as_deref(), Some("v1"));
    assert_eq!(stack.sb.releases(), ["v1"], "the refused release is gone");

    let reset = stack.config(
        "reset.toml",
        "strategy = [\"prewarm\", \"none\"]\nopcache_room = \"reset\"",
    );
    let report = stack.deploy("v2", &reset);
    let warm_report = opcache(&report);
    assert_eq!(warm_report["room"]["after_restart"], false, "{report:#}");
    assert_eq!(warm_report["reset_after_switch"], true, "{report:#}");
    assert!(warm_report.get("prewarm").is_none(), "{report:#}");
    let steps = one_host(&report)["refresh"]["steps"].to_string();
    assert!(steps.contains("opcache-reset"), "{report:#}");
    let old = stack.probe("v1");
    assert!(old.cached.iter().all(|c| !c), "v1 left the cache: {old:?}");
    assert_eq!(stack.page(), ("v2".into(), LIBS), "v2 starts cold");
    let after = stack.probe("v2");
    assert!(after.cached.iter().all(|c| *c), "and fits: {after:?}");
    assert_eq!(after.oom_restarts, 0, "{after:?}");

    // The default with prewarm: a restart would not make room either, so a warning, and
    // pre-warm stops before OPcache is full.
    let report = stack.deploy("v3", &warm);
    let host = one_host(&report);
    assert_eq!(opcache(&report)["room"]["enough"], false, "{report:#}");
    assert_eq!(
        opcache(&report)["room"]["after_restart"],
        false,
        "{report:#}"
    );
    assert!(opcache(&report)["restart"].is_null(), "{report:#}");
    let warnings = host["warnings"].to_string();
    assert!(
        warnings.contains("OPcache has") && warnings.contains("memory_consumption"),
        "{report:#}"
    );
    assert_eq!(
        opcache(&report)["prewarm"]["stopped"],
        "memory",
        "{report:#}"
    );
    let after = stack.probe("v3");
    assert!(
        !after.cache_full,
        "pre-warm stops before OPcache is full: {after:?}"
    );
    assert_eq!(stack.page().0, "v3");
}

/// OPcache of 32 MiB and releases of about 12 MiB: two fit, but the third deploy finds the
/// first one's scripts invalidated (wasted, reusable only after a restart) and too little
/// free. With prewarm (its default `opcache_room = "restart"`), OPcache is restarted
/// before the switch and the live release, then the new one, compiled again: the first
/// request after the switch compiles nothing, and OPcache never restarted by itself.
#[test]
fn a_restart_before_the_switch_gives_wasted_memory_back_and_rewarms() {
    let ini = [
        ("opcache.memory_consumption", "32"),
        ("opcache.interned_strings_buffer", "1"),
    ];
    let stack = Stack::start(1200, &ini);
    let reset = stack.config("warm.toml", "strategy = [\"prewarm\", \"none\"]");
    stack.deploy("v1", &reset);
    stack.page();
    let report = stack.deploy("v2", &reset);
    assert_eq!(opcache(&report)["room"]["enough"], true, "{report:#}");
    assert_eq!(stack.page(), ("v2".into(), 0));

    let report = stack.deploy("v3", &reset);
    let warm = opcache(&report);
    assert_eq!(warm["room"]["enough"], false, "{report:#}");
    assert_eq!(warm["room"]["after_restart"], true, "{report:#}");
    assert_eq!(warm["reset_after_switch"], false, "{report:#}");
    let scripts = (LIBS + 1) as u64;
    assert_eq!(warm["restart"]["live"]["compiled"], scripts, "{report:#}");
    assert_eq!(warm["prewarm"]["compiled"], scripts, "{report:#}");
    let steps = one_host(&report)["refresh"]["steps"].to_string();
    assert!(!steps.contains("opcache-reset"), "{report:#}");

    // No request has reached v3 yet.
    let live = stack.probe("v2");
    assert!(live.cached.iter().all(|c| *c), "v2 re-warmed: {live:?}");
    let before = stack.probe("v3");
    assert!(before.cached.iter().all(|c| *c), "v3 warm: {before:?}");
    assert!(
        before.wasted < 1 << 20,
        "the restart gave the wasted memory back: {before:?}"
    );
    assert_eq!(stack.page(), ("v3".into(), 0));
    let after = stack.probe("v3");
    assert_eq!(after.misses, before.misses, "{before:?} {after:?}");
    assert_eq!(after.oom_restarts, 0, "{after:?}");
}

/// Settings that cannot work are refused before anything happens, naming the key.
#[test]
fn prewarm_settings_that_cannot_work_are_refused() {
    let sb = Sandbox::new();
    sb.write("src/index.php", "<?php echo 1;");
    let cases = [
        ("[refresh]\nstrategy = [\"prewarm\", \"none\"]\n", "prewarm", "[php]"),
        (
            "[php]\nfpm = \"unix:/nonexistent.sock\"\n[refresh]\nstrategy = [\"prewarm\", \"opcache-reset\"]\n",
            "opcache-reset",
            "realpath_root",
        ),
        (
            "[php]\nfpm = \"unix:/nonexistent.sock\"\n[refresh]\nstrategy = [\"prewarm\"]\nopcache_room = \"maybe\"\n",
            "opcache_room",
            "valid values",
        ),
        (
            "[php]\nfpm = \"unix:/nonexistent.sock\"\n[refresh]\nstrategy = [\"none\"]\nopcache_room = \"restart\"\n",
            "needs strategy \"prewarm\"",
            "opcache_room = \"reset\"",
        ),
        (
            "[php]\nfpm = \"unix:/nonexistent.sock\"\n[refresh]\nstrategy = [\"prewarm\"]\nprewarm_seconds = 0\n",
            "prewarm_seconds",
            "1 to 3600",
        ),
    ];
    for (i, (config, needle, hint)) in cases.into_iter().enumerate() {
        let path = sb.config(&format!("c{i}.toml"), config);
        let out = sb.run(&["deploy", &sb.src_arg(), "--to", &sb.to(), "--config", &path]);
        assert_refused(&out, 2, &[needle], hint);
        assert!(
            !sb.deploy().exists(),
            "nothing created for a refused config"
        );
    }
}

/// In a fleet every host pre-warms its own pool before the coordinated switch: web1 and
/// web2 each have a php-fpm behind an nginx passing `$realpath_root` (web3 none), reached
/// by the agent over ssh.
#[test]
fn every_host_of_a_fleet_prewarms_its_own_pool() {
    use crate::test_fleet::{Fleet, HOSTS};
    let fleet = Fleet::start();
    write_app(&fleet.sb.src(), "v", 5);
    let mut pools = Vec::new();
    let mut extra = String::new();
    for host in &HOSTS[..2] {
        let path = fleet.host_path(host);
        std::fs::create_dir_all(&path).unwrap();
        make_readable_by_workers(fleet.sb.path()).unwrap();
        let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
        let mut options = NginxOptions::new(
            std::fs::canonicalize(&path).unwrap().join("current/public"),
            fpm.fastcgi_target(),
        );
        options.realpath_root = true;
        let nginx = Nginx::start(options).unwrap();
        let socket = fpm.unix_socket().unwrap().display().to_string();
        extra.push_str(&format!(
            "@{host} php = {{ fpm = \"unix:{socket}\" }}\n@{host} refresh = {{ strategy = [\"prewarm\", \"none\"] }}\n"
        ));
        pools.push((fpm, nginx));
    }
    let config = fleet.config("warm.toml", &extra);
    fleet.deploy_json(&config, &["--release", "r1"]);
    for (_, nginx) in &pools {
        assert_eq!(http_get(&nginx.url("/index.php")).unwrap().status, 200);
    }
    let report = fleet.deploy_json(&config, &["--release", "r2"]);
    let hosts = report["hosts"].as_array().unwrap();
    for (i, host) in hosts.iter().enumerate() {
        let prewarm = &host["opcache"]["prewarm"];
        if i < 2 {
            assert_eq!(prewarm["compiled"], (LIBS + 1) as u64, "{host:#}");
        } else {
            assert!(host.get("opcache").is_none(), "web3 has no pool: {host:#}");
        }
    }
    let probe = fleet.sb.path().join("probe.php");
    write(&probe, PROBE);
    make_readable_by_workers(fleet.sb.path()).unwrap();
    for (host, (fpm, _)) in HOSTS.iter().zip(&pools) {
        let index =
            std::fs::canonicalize(fleet.host_path(host).join("releases/r2/public/index.php"))
                .unwrap();
        let response = fpm
            .request(&probe, &format!("check={}", index.display()))
            .unwrap();
        let probe: Probe = serde_json::from_str(&response.body()).unwrap();
        assert_eq!(probe.cached, [true], "{host}: r2 cached before any request");
    }

    // `php status` through web1's agent: what its pool holds per release.
    let out = fleet.run(&config, &["php", "status", "--host", HOSTS[0], "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let releases = &status["hosts"][0]["result"]["status"]["releases"];
    let held: Vec<&str> = releases
        .as_array()
        .unwrap_or_else(|| panic!("{status:#}"))
        .iter()
        .map(|r| r["release"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["r1", "r2"], "{status:#}");
}

/// What invalidating releases out of service buys, measured: OPcache of 16 MiB, releases
/// of about 12 MiB. v1 live and cached; v2 deployed with `none` (warned: no room) fills
/// the cache: v2 stays partly uncached, without a restart — and without `cache_full`,
/// which OPcache sets only when its largest free block is under 64 KiB, not when a large
/// script does not fit. Deploying v3 invalidates v1
/// (its memory becomes wasted, above max_wasted_percentage): the next request that cannot
/// be cached makes OPcache restart by itself, and v3 ends up cached.
#[test]
fn invalidated_releases_let_a_full_opcache_restart_by_itself() {
    let ini = [
        ("opcache.memory_consumption", "16"),
        ("opcache.interned_strings_buffer", "1"),
    ];
    let stack = Stack::start(1200, &ini);
    let none = stack.config("none.toml", "strategy = [\"none\"]");
    stack.deploy("v1", &none);
    stack.page();
    stack.deploy("v2", &none);
    for _ in 0..3 {
        stack.page();
    }
    let full = stack.probe("v2");
    assert_eq!(
        full.oom_restarts, 0,
        "a full cache without waste does not restart: {full:?}"
    );
    assert!(
        full.cached.iter().any(|c| !c),
        "v2 is partly uncached: {full:?}"
    );

    let report = stack.deploy("v3", &none);
    assert_eq!(
        opcache(&report)["invalidated"],
        (LIBS + 1) as u64,
        "{report:#}"
    );
    // v1's memory is wasted now; the first compile that finds no room makes OPcache restart
    // by itself: a page below, or already one of cutover's own scripts during the deploy
    // (which comes first is that close: one more line in cutover's cached.php moved it).
    let before = stack.probe("v3");
    assert!(
        (before.wasted > 0 && before.oom_restarts == 0) || before.oom_restarts == 1,
        "v1's memory is wasted, or OPcache restarted once because of it: {before:?}\n{report:#}"
    );
    for _ in 0..4 {
        stack.page();
    }
    let after = stack.probe("v3");
    assert!(
        after.oom_restarts > 0,
        "OPcache restarted by itself: {after:?}"
    );
    assert!(
        after.cached.iter().all(|c| *c),
        "v3 cached after the restart: {after:?}"
    );
    assert_eq!(stack.page(), ("v3".into(), 0));
}
