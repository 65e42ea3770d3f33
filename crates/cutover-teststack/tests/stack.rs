//! Real php-fpm + nginx, started privately, talked to, reloaded and stopped.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_teststack::{
    http_get, make_readable_by_workers, process_running, running_as_root, FpmListen, FpmOptions,
    HttpConnection, Nginx, NginxOptions, PhpFpm,
};

const STATUS_PAGE: &str = r#"<?php
$s = opcache_get_status(false);
echo "pid=", getmypid(), "\n";
echo "opcache_enabled=", $s['opcache_enabled'] ? 1 : 0, "\n";
echo "file=", __FILE__, "\n";
echo "script_filename=", $_SERVER['SCRIPT_FILENAME'], "\n";
echo "document_root=", $_SERVER['DOCUMENT_ROOT'], "\n";
"#;

fn write(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

fn field(body: &str, name: &str) -> String {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {body:?}"))
        .to_string()
}

/// A docroot with the status page as index.php, readable by the workers.
fn docroot(tmp: &tempfile::TempDir, page: &str) -> PathBuf {
    let root = tmp.path().join("public");
    write(&root.join("index.php"), page);
    make_readable_by_workers(tmp.path()).unwrap();
    root
}

fn stack(root: &Path, fpm: FpmOptions, realpath_root: bool) -> (PhpFpm, Nginx) {
    let fpm = PhpFpm::start(fpm).unwrap();
    let mut options = NginxOptions::new(root, fpm.fastcgi_target());
    options.realpath_root = realpath_root;
    let nginx = Nginx::start(options).unwrap();
    (fpm, nginx)
}

#[test]
fn serves_php_through_nginx_with_opcache_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = docroot(&tmp, STATUS_PAGE);
    let (fpm, nginx) = stack(&root, FpmOptions::default(), false);

    let response = http_get(&nginx.url("/")).unwrap();
    let body = response.text();
    assert_eq!(response.status, 200, "{body}\n{}", nginx.error_log());
    assert_eq!(field(&body, "opcache_enabled"), "1", "{body}");
    let pid: u32 = field(&body, "pid").parse().unwrap();
    assert!(fpm.worker_pids().contains(&pid), "{pid} not a worker");
    assert_eq!(
        field(&body, "file"),
        root.join("index.php").display().to_string()
    );

    // The front-controller fallback and a missing script.
    assert_eq!(http_get(&nginx.url("/some/route?x=1")).unwrap().status, 200);
    assert_eq!(http_get(&nginx.url("/missing.php")).unwrap().status, 404);

    let probe = fpm.probe().unwrap();
    assert!(probe.opcache_enabled);
    assert_eq!(probe.validate_timestamps, "0");
    if running_as_root() {
        assert_eq!(probe.uid, 65534, "workers run as nobody");
    }
    assert_eq!(fpm.worker_pids().len(), 4);
    let status = fpm.status().unwrap();
    assert!(
        status.contains("pool:                 teststack"),
        "{status}"
    );
    assert!(status.contains("process manager:      static"), "{status}");

    // The probe is blacklisted, so OPcache statistics only show the test's scripts.
    write(
        &root.join("scripts.php"),
        "<?php foreach (opcache_get_status(true)['scripts'] as $k => $v) echo $k, \"\\n\";",
    );
    make_readable_by_workers(&root).unwrap();
    let cached = http_get(&nginx.url("/scripts.php")).unwrap().text();
    assert!(cached.contains("index.php"), "{cached}");
    assert!(!cached.contains("teststack-probe"), "{cached}");
    let pidfile = fs::read_to_string(fpm.pidfile()).unwrap();
    assert_eq!(pidfile.trim(), fpm.master_pid().to_string());
    let pidfile = fs::read_to_string(nginx.pidfile()).unwrap();
    assert_eq!(pidfile.trim(), nginx.pid().to_string());
}

#[test]
fn fastcgi_request_straight_to_the_pool_over_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    let root = docroot(&tmp, STATUS_PAGE);
    let fpm = PhpFpm::start(FpmOptions {
        listen: FpmListen::Tcp,
        workers: 2,
        validate_timestamps: true,
        ..FpmOptions::default()
    })
    .unwrap();
    let addr = fpm.tcp_addr().unwrap();
    assert!(addr.ip().is_loopback());
    assert!(fpm.unix_socket().is_none());

    let response = fpm.request(&root.join("index.php"), "a=b").unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(field(&response.body(), "opcache_enabled"), "1");
    assert_eq!(fpm.probe().unwrap().validate_timestamps, "1");

    fpm.stop();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

#[test]
fn realpath_root_hands_php_the_resolved_release() {
    let tmp = tempfile::tempdir().unwrap();
    let deploy = tmp.path().join("deploy");
    write(&deploy.join("releases/1/public/index.php"), STATUS_PAGE);
    write(&deploy.join("releases/2/public/index.php"), STATUS_PAGE);
    symlink("releases/1", deploy.join("current")).unwrap();
    make_readable_by_workers(tmp.path()).unwrap();
    let deploy = fs::canonicalize(&deploy).unwrap();
    let root = deploy.join("current/public");

    let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
    let mut resolved = NginxOptions::new(&root, fpm.fastcgi_target());
    resolved.realpath_root = true;
    let resolved = Nginx::start(resolved).unwrap();
    let unresolved = Nginx::start(NginxOptions::new(&root, fpm.fastcgi_target())).unwrap();

    let release1 = deploy.join("releases/1/public");
    let body = http_get(&resolved.url("/index.php")).unwrap().text();
    assert_eq!(
        field(&body, "file"),
        release1.join("index.php").display().to_string()
    );
    assert_eq!(
        field(&body, "document_root"),
        release1.display().to_string()
    );
    assert_eq!(
        field(&body, "script_filename"),
        release1.join("index.php").display().to_string()
    );

    let body = http_get(&unresolved.url("/index.php")).unwrap().text();
    assert_eq!(field(&body, "document_root"), root.display().to_string());
    assert_eq!(
        field(&body, "script_filename"),
        root.join("index.php").display().to_string()
    );

    // Switch with one rename; with $realpath_root every request resolves it anew, even
    // with validate_timestamps=0.
    symlink("releases/2", deploy.join("current.tmp")).unwrap();
    fs::rename(deploy.join("current.tmp"), deploy.join("current")).unwrap();
    let release2 = deploy.join("releases/2/public/index.php");
    for _ in 0..20 {
        let body = http_get(&resolved.url("/index.php")).unwrap().text();
        assert_eq!(field(&body, "file"), release2.display().to_string());
    }
}

#[test]
fn reload_replaces_the_workers_and_the_pool_keeps_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let root = docroot(&tmp, STATUS_PAGE);
    let (fpm, nginx) = stack(
        &root,
        FpmOptions {
            workers: 2,
            process_control_timeout: Some(5),
            ..FpmOptions::default()
        },
        false,
    );
    let master = fpm.master_pid();
    let before = fpm.worker_pids();
    assert_eq!(before.len(), 2);
    assert_eq!(http_get(&nginx.url("/")).unwrap().status, 200);

    fpm.reload().unwrap();

    assert_eq!(fpm.master_pid(), master);
    assert!(process_running(master));
    let after = fpm.worker_pids();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "workers {before:?} were not replaced: {after:?}"
    );
    for _ in 0..10 {
        let response = http_get(&nginx.url("/")).unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        let pid: u32 = field(&response.text(), "pid").parse().unwrap();
        assert!(after.contains(&pid));
    }
    // The re-executed master kept our -d settings: OPcache on, production timestamps.
    let probe = fpm.probe().unwrap();
    assert!(
        probe.opcache_enabled && probe.validate_timestamps == "0",
        "{probe:?}"
    );

    // A second reload works as well.
    fpm.reload().unwrap();
    fpm.ping().unwrap();
    assert_eq!(
        fpm.error_log()
            .matches("ready to handle connections")
            .count(),
        3
    );
}

#[test]
fn stop_leaves_no_process_and_no_listening_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let root = docroot(&tmp, STATUS_PAGE);
    let (fpm, nginx) = stack(&root, FpmOptions::default(), false);
    assert_eq!(http_get(&nginx.url("/")).unwrap().status, 200);

    let mut pids = vec![fpm.master_pid(), nginx.pid()];
    pids.extend(fpm.worker_pids());
    pids.extend(nginx.worker_pids());
    assert_eq!(pids.len(), 2 + 4 + 2, "{pids:?}");
    assert!(pids.iter().all(|&pid| process_running(pid)));
    let socket = fpm.unix_socket().unwrap().to_path_buf();
    let fpm_dir = fpm.dir().to_path_buf();
    let nginx_dir = nginx.dir().to_path_buf();
    let addr = format!("127.0.0.1:{}", nginx.port()).parse().unwrap();

    nginx.stop();
    fpm.stop();

    for pid in &pids {
        assert!(!process_running(*pid), "pid {pid} still running");
    }
    assert!(UnixStream::connect(&socket).is_err());
    assert!(!socket.exists());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
    assert!(
        !fpm_dir.exists() && !nginx_dir.exists(),
        "temp dirs removed"
    );
}

#[test]
fn drop_stops_the_processes_too() {
    let tmp = tempfile::tempdir().unwrap();
    let root = docroot(&tmp, STATUS_PAGE);
    let (fpm, nginx) = stack(&root, FpmOptions::default(), false);
    let mut pids = vec![fpm.master_pid(), nginx.pid()];
    pids.extend(fpm.worker_pids());
    pids.extend(nginx.worker_pids());
    drop(nginx);
    drop(fpm);
    for pid in &pids {
        assert!(!process_running(*pid), "pid {pid} still running");
    }
}

#[test]
fn two_stacks_run_side_by_side() {
    let tmp_a = tempfile::tempdir().unwrap();
    let tmp_b = tempfile::tempdir().unwrap();
    let root_a = docroot(&tmp_a, "<?php echo 'stack A ', getmypid();");
    let root_b = docroot(&tmp_b, "<?php echo 'stack B ', getmypid();");
    let (fpm_a, nginx_a) = stack(&root_a, FpmOptions::default(), false);
    let fpm_b = PhpFpm::start(FpmOptions::default()).unwrap();
    let mut options_b = NginxOptions::new(&root_b, fpm_b.fastcgi_target());
    options_b.realpath_root = true;
    options_b.open_file_cache = true;
    let nginx_b = Nginx::start(options_b).unwrap();

    assert_ne!(nginx_a.port(), nginx_b.port());
    assert_ne!(fpm_a.unix_socket(), fpm_b.unix_socket());
    let mut a = HttpConnection::connect(&nginx_a.url("/"), Duration::from_secs(10)).unwrap();
    let mut b = HttpConnection::connect(&nginx_b.url("/"), Duration::from_secs(10)).unwrap();
    for _ in 0..25 {
        let body_a = a.get("/").unwrap().text();
        let body_b = b.get("/").unwrap().text();
        assert!(body_a.starts_with("stack A "), "{body_a}");
        assert!(body_b.starts_with("stack B "), "{body_b}");
        let pid_a: u32 = body_a["stack A ".len()..].parse().unwrap();
        let pid_b: u32 = body_b["stack B ".len()..].parse().unwrap();
        assert!(fpm_a.worker_pids().contains(&pid_a));
        assert!(fpm_b.worker_pids().contains(&pid_b));
    }

    // Stopping one leaves the other serving.
    fpm_a.stop();
    nginx_a.stop();
    assert_eq!(b.get("/").unwrap().status, 200);
    fpm_b.ping().unwrap();
}

#[test]
fn a_pool_that_cannot_start_reports_its_log() {
    let err = match PhpFpm::start(FpmOptions {
        extra_pool: "pm.no_such_directive = 1".into(),
        start_timeout: Duration::from_secs(10),
        ..FpmOptions::default()
    }) {
        Ok(_) => panic!("a bad pool directive must fail the start"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("php-fpm"), "{err}");
    assert!(err.contains("pm.no_such_directive"), "{err}");
}

/// Run by `a_killed_test_binary_leaves_no_servers_behind` in a child test process.
#[test]
#[ignore = "helper: runs only inside a_killed_test_binary_leaves_no_servers_behind"]
fn helper_hold_a_stack_until_killed() {
    let Some(report) = std::env::var_os("CUTOVER_TESTSTACK_HOLD") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = docroot(&tmp, STATUS_PAGE);
    let (fpm, nginx) = stack(&root, FpmOptions::default(), false);
    let mut pids = vec![fpm.master_pid(), nginx.pid()];
    pids.extend(fpm.worker_pids());
    pids.extend(nginx.worker_pids());
    let text: Vec<String> = pids.iter().map(u32::to_string).collect();
    let report = PathBuf::from(report);
    let dirs = [fpm.dir(), nginx.dir(), tmp.path()].map(|d| d.display().to_string());
    let text = format!("{}\n{}\n", text.join(" "), dirs.join("\n"));
    fs::write(report.with_extension("tmp"), text).unwrap();
    fs::rename(report.with_extension("tmp"), &report).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_test_binary_leaves_no_servers_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("pids");
    // The helper's servers become orphans when it dies. Make this process their new
    // parent (instead of PID 1, which in a container may never collect them) so that it
    // can collect them below and leave no zombies.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "helper_hold_a_stack_until_killed"])
        .env("CUTOVER_TESTSTACK_HOLD", &report)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !report.exists() {
        assert!(std::time::Instant::now() < deadline, "helper never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = fs::read_to_string(&report).unwrap();
    let mut lines = report.lines();
    let pids: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    let leaked_dirs: Vec<PathBuf> = lines.map(PathBuf::from).collect();
    assert!(pids.iter().all(|&pid| process_running(pid)));

    // SIGKILL: no unwinding, no Drop. The parent-death signal must stop the servers.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let collect = |pid: u32| {
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG);
    };
    while pids.iter().any(|&pid| process_running(pid)) {
        let left: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&p| process_running(p))
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pids.iter().copied().for_each(collect);
    // Their temp dirs are left behind: nobody ran Drop.
    for dir in leaked_dirs {
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn open_basedir_applies_to_the_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let root = docroot(
        &tmp,
        "<?php echo ini_get('open_basedir'), '|', var_export(@file_get_contents('/etc/hostname'), true);",
    );
    let fpm = PhpFpm::start(FpmOptions {
        open_basedir: Some(root.clone()),
        workers: 1,
        ..FpmOptions::default()
    })
    .unwrap();
    let response = fpm.request(&root.join("index.php"), "").unwrap();
    assert_eq!(response.body(), format!("{}|false", root.display()));
}
