//! `cutover verify` on a real php-fpm behind a real nginx, with the app: index.php
//! requires lib/A.php, sleeps 20 ms, requires lib/B.php; v2's A calls a function only v2's
//! B defines (so mixing the two is a fatal error), and each file prints its release.

use std::path::Path;

use cutover_teststack::{make_readable_by_workers, FpmOptions, Nginx, NginxOptions, PhpFpm};

use crate::common::*;

const INDEX: &str = "<?php\nrequire __DIR__ . '/../lib/A.php';\nusleep(20000);\nrequire __DIR__ . '/../lib/B.php';\necho a() . ' ' . b() . \"\\n\";\n";

fn write_release(dir: &Path, version: &str) {
    write(&dir.join("public/index.php"), INDEX);
    let (a, b) = if version == "v1" {
        (
            "function a() { return 'v1'; }",
            "function b() { return 'v1'; }",
        )
    } else {
        (
            "function a() { return 'v2' . only_in_v2(); }",
            "function b() { return 'v2'; }\nfunction only_in_v2() { return ''; }",
        )
    };
    write(&dir.join("lib/A.php"), &format!("<?php\n{a}\n"));
    write(&dir.join("lib/B.php"), &format!("<?php\n{b}\n"));
}

struct Stack {
    nginx: Nginx,
    fpm: PhpFpm,
    sb: Sandbox,
}

impl Stack {
    fn start(realpath_root: bool) -> Stack {
        let sb = Sandbox::new();
        for version in ["v1", "v2"] {
            write_release(&sb.path().join(version), version);
        }
        let (fpm, nginx) = php_stack(&sb, realpath_root);
        let stack = Stack { nginx, fpm, sb };
        for version in ["v1", "v2"] {
            let src = stack.sb.path().join(version).display().to_string();
            let to = stack.sb.deploy().display().to_string();
            stack
                .sb
                .ok(&["deploy", &src, "--to", &to, "--release", version]);
        }
        make_readable_by_workers(stack.sb.path()).unwrap();
        stack
    }

    /// Runs a short verify (bounded: ~5 s of load) with `refresh` as [refresh]'s body.
    fn verify(&self, refresh: &str) -> (i32, serde_json::Value, String) {
        let socket = self.fpm.unix_socket().unwrap().display().to_string();
        let config = self.sb.path().join("verify.toml");
        write(
            &config,
            &format!("[php]\nfpm = \"unix:{socket}\"\n[refresh]\n{refresh}\n"),
        );
        let (url, to) = (
            self.nginx.url("/index.php"),
            self.sb.deploy().display().to_string(),
        );
        let out = self.sb.run(&[
            "verify",
            "--url",
            &url,
            "--to",
            &to,
            "--between",
            "v1,v2",
            "--duration",
            "3s",
            "--flip-every",
            "200ms",
            "--concurrency",
            "4",
            "--baseline",
            "500ms",
            "--settle",
            "1500ms",
            "--config",
            config.to_str().unwrap(),
            "--json",
        ]);
        let json =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        (exit_code(&out), json, text(&out))
    }
}

fn assert_clean_pass(code: i32, v: &serde_json::Value, out: &str) {
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["mixed"], 0, "{v}");
    assert!(v["switches"].as_u64().unwrap() >= 10, "{v}");
    assert!(
        v["served"]["a"].as_u64().unwrap() > 0 && v["served"]["b"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["visibility_ms"].as_f64().unwrap() < 1000.0, "{v}");
    assert_eq!(v["passed"], true);
}

#[test]
fn realpath_root_with_no_refresh_passes_under_load() {
    let stack = Stack::start(true);
    let (code, v, out) = stack.verify("strategy = [\"none\"]");
    assert_clean_pass(code, &v, &out);
    assert_eq!(
        stack.sb.current().as_deref(),
        Some("v2"),
        "verify ends on B"
    );
}

#[test]
fn document_root_with_opcache_reset_passes_under_load() {
    let stack = Stack::start(false);
    let (code, v, out) = stack.verify("strategy = [\"opcache-reset\"]");
    assert_clean_pass(code, &v, &out);
}

#[test]
fn document_root_without_refresh_fails_verify() {
    // The stale setup: B is never seen by every request, and verify says so.
    let stack = Stack::start(false);
    let (code, v, out) = stack.verify("strategy = [\"none\"]");
    assert_eq!(code, 1, "{out}");
    assert_eq!(v["passed"], false, "{v}");
    assert!(v["visibility_ms"].is_null(), "{v}");
    assert!(out.contains("never visible"), "{out}");
}

/// The old way, measured with `--switch-command`: copying v2 over v1 in the live tree
/// while PHP revalidates files on every request mixes the two in one request (a fatal
/// "undefined function" or a page naming both). verify must say so.
#[test]
fn an_in_place_copy_is_caught_by_verify() {
    let sb = Sandbox::new();
    for version in ["v1", "v2"] {
        write_release(&sb.path().join(version), version);
    }
    let live = sb.path().join("live");
    write_release(&live, "v1");
    make_readable_by_workers(sb.path()).unwrap();
    let fpm = PhpFpm::start(FpmOptions {
        validate_timestamps: true,
        revalidate_freq: 0,
        ..FpmOptions::default()
    })
    .unwrap();
    let nginx = Nginx::start(NginxOptions::new(live.join("public"), fpm.fastcgi_target())).unwrap();
    let copy = format!(
        "cp -r {}/$CUTOVER_SWITCH_TO/. {}/",
        sb.path().display(),
        live.display()
    );
    let url = nginx.url("/index.php");
    let out = sb.run(&[
        "verify",
        "--url",
        &url,
        "--between",
        "v1,v2",
        "--switch-command",
        &copy,
        "--duration",
        "4s",
        "--flip-every",
        "20ms",
        "--concurrency",
        "4",
        "--baseline",
        "300ms",
        "--settle",
        "1s",
        "--json",
    ]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let broken = v["failed"].as_u64().unwrap() + v["mixed"].as_u64().unwrap();
    assert!(
        broken > 0,
        "an in-place copy under load broke no request: {v}"
    );
    assert!(v["switches"].as_u64().unwrap() >= 20, "{v}");
}

/// With `$realpath_root` every release is cached under its own real paths, so each deploy
/// leaves the old release's scripts in OPcache until memory runs out and OPcache restarts
/// itself under load. Measured over 10 deploys, and bounded by an opcache-reset refresh.
#[test]
fn opcache_memory_grows_per_realpath_deploy_unless_reset() {
    let mut growth = Vec::new();
    for strategy in ["none", "opcache-reset"] {
        let stack = Stack::start(true);
        let socket = stack.fpm.unix_socket().unwrap().display().to_string();
        let config = stack.sb.path().join("mem.toml");
        write(
            &config,
            &format!("[php]\nfpm = \"unix:{socket}\"\n[refresh]\nstrategy = [\"{strategy}\"]\n"),
        );
        let to = stack.sb.deploy().display().to_string();
        let mut cached = Vec::new();
        let mut memory = Vec::new();
        for n in 0..10 {
            let src = stack.sb.path().join(if n % 2 == 0 { "v1" } else { "v2" });
            let (src, id) = (src.display().to_string(), format!("r{n}"));
            let cfg = config.display().to_string();
            stack.sb.ok(&[
                "deploy",
                &src,
                "--to",
                &to,
                "--release",
                &id,
                "--keep",
                "20",
                "--config",
                &cfg,
            ]);
            for _ in 0..8 {
                cutover_teststack::http_get(&stack.nginx.url("/index.php")).unwrap();
            }
            let status = stack.sb.json(&[
                "php",
                "status",
                "--fpm",
                &format!("unix:{socket}"),
                "--to",
                &to,
            ]);
            cached.push(
                one_result(&status)["status"]["opcache"]["cached_scripts"]
                    .as_u64()
                    .unwrap(),
            );
            memory.push(
                one_result(&status)["status"]["opcache"]["used_memory"]
                    .as_u64()
                    .unwrap()
                    / 1024,
            );
        }
        eprintln!("{strategy}: cached scripts after each of 10 deploys: {cached:?}");
        eprintln!("{strategy}: OPcache used memory (KiB): {memory:?}");
        growth.push(cached);
    }
    let (none, reset) = (&growth[0], &growth[1]);
    // Three scripts per release (index, A, B) stay cached for every release deployed.
    assert!(
        none[9] >= none[0] + 3 * 9,
        "no growth without reset: {none:?}"
    );
    assert!(
        reset.iter().all(|&n| n <= reset[0] + 3),
        "reset did not bound it: {reset:?}"
    );
}
