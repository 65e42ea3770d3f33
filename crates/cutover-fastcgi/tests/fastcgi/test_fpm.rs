//! Against a real php-fpm 8.2 pool started privately for each test.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use cutover_fastcgi::{get_values, Address, Client, Error, Phase, Request, Timeouts};
use cutover_teststack::{free_port, FpmListen, FpmOptions};

use crate::support::{options, Pool, TIMEOUT};

#[test]
fn get_passes_query_and_headers_and_returns_script_headers() {
    let pool = Pool::start();
    let script = pool.script(
        "echo.php",
        r#"<?php
header('X-Answer: 42');
header('X-Multi: one');
header('X-Multi: two', false);
echo "name=", $_GET['name'] ?? '-', "\n";
echo "agent=", $_SERVER['HTTP_X_CUTOVER'] ?? '-', "\n";
echo "method=", $_SERVER['REQUEST_METHOD'], "\n";
echo "script=", $_SERVER['SCRIPT_FILENAME'], "\n";
"#,
    );
    let mut client = pool.client();
    let request = Request::get(&script, "name=v%C3%A9rif&x=1").header("X-Cutover", "probe/1");
    let response = client.request(&request).unwrap();

    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-answer"), Some("42"));
    let multi: Vec<&str> = response
        .headers
        .iter()
        .filter(|(n, _)| n == "X-Multi")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(multi, ["one", "two"]);
    assert!(response
        .header("Content-type")
        .is_some_and(|v| v.starts_with("text/html")));
    assert_eq!(
        response.body_text(),
        format!(
            "name=vérif\nagent=probe/1\nmethod=GET\nscript={}\n",
            script.display()
        )
    );
    assert_eq!(response.stderr, "");
    assert_eq!(response.app_status, 0);
}

#[test]
fn post_body_arrives_through_stdin() {
    let pool = Pool::start();
    let script = pool.script(
        "post.php",
        r#"<?php
$in = file_get_contents('php://input');
echo strlen($in), " ", md5($in), " ", $_SERVER['CONTENT_TYPE'], " ", $_SERVER['REQUEST_METHOD'];
"#,
    );
    // Larger than one record and than a socket buffer.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = php_md5(&pool, &body);
    let mut client = pool.client();
    let response = client
        .request(&Request::post(&script, "application/octet-stream", body))
        .unwrap();
    assert_eq!(
        response.body_text(),
        format!("300000 {digest} application/octet-stream POST")
    );
}

/// md5 as PHP computes it, so the test needs no hashing crate.
fn php_md5(pool: &Pool, bytes: &[u8]) -> String {
    let script = pool.script(
        "md5.php",
        "<?php echo md5(file_get_contents('php://input'));",
    );
    let mut client = pool.client();
    let response = client
        .request(&Request::post(
            &script,
            "application/octet-stream",
            bytes.to_vec(),
        ))
        .unwrap();
    response.body_text().into_owned()
}

#[test]
fn status_header_sets_the_status_and_is_not_an_error() {
    let pool = Pool::start();
    let script = pool.script(
        "gone.php",
        "<?php http_response_code(404); echo 'no such page';",
    );
    let response = pool.client().request(&Request::get(&script, "")).unwrap();
    assert_eq!(response.status, 404);
    assert_eq!(response.body_text(), "no such page");
    assert!(response.header("Status").is_none());
}

#[test]
fn error_log_arrives_as_stderr_but_php_stderr_stream_does_not() {
    let pool = Pool::start();
    let script = pool.script(
        "warn.php",
        r#"<?php
error_log('first message');
error_log('second message');
fwrite(fopen('php://stderr', 'w'), "to the worker's fd 2\n");
echo 'done';
"#,
    );
    let response = pool.client().request(&Request::get(&script, "")).unwrap();
    assert_eq!(response.body_text(), "done");
    // php-fpm joins the messages of one request into one FCGI_STDERR record.
    assert_eq!(
        response.stderr,
        "PHP message: first message; PHP message: second message"
    );
    // The worker's own stderr goes to php-fpm's log (catch_workers_output), not to us.
    assert!(!response.stderr.contains("fd 2"));
    assert!(wait_for(|| pool
        .fpm
        .error_log()
        .contains("to the worker's fd 2")));
}

#[test]
fn large_response_arrives_whole() {
    let pool = Pool::start();
    let script = pool.script(
        "big.php",
        r#"<?php
for ($i = 0; $i < 3 * 1024 * 16; $i++) { echo str_pad((string)$i, 63, '.'), "\n"; }
"#,
    );
    let response = pool.client().request(&Request::get(&script, "")).unwrap();
    assert_eq!(response.body.len(), 3 * 1024 * 1024);
    let body = response.body_text();
    for (i, line) in body.lines().enumerate() {
        assert_eq!(line, format!("{i:.<63}"), "line {i}");
    }
}

fn pid_of(client: &mut Client, script: &std::path::Path) -> String {
    client
        .request(&Request::get(script, ""))
        .unwrap()
        .body_text()
        .into_owned()
}

#[test]
fn keep_conn_runs_requests_on_one_connection_and_one_worker() {
    let pool = Pool::start();
    let script = pool.script("pid.php", "<?php echo getmypid();");

    let mut kept = pool.client();
    let pids: Vec<String> = (0..3).map(|_| pid_of(&mut kept, &script)).collect();
    let worker_pids: Vec<String> = pool.fpm.worker_pids().iter().map(u32::to_string).collect();
    assert!(
        worker_pids.contains(&pids[0]),
        "{pids:?} vs {worker_pids:?}"
    );
    assert_eq!(pids, [pids[0].clone(), pids[0].clone(), pids[0].clone()]);

    // While the kept connection is open its worker waits on it and accepts no other
    // connection, so fresh clients always reach the pool's other worker.
    for _ in 0..4 {
        let other = pid_of(&mut pool.client(), &script);
        assert_ne!(other, pids[0]);
        assert!(worker_pids.contains(&other));
    }
    assert_eq!(pid_of(&mut kept, &script), pids[0]);
}

#[test]
fn a_worker_recycled_by_max_requests_is_reconnected_to_transparently() {
    let pool = Pool::start_with(FpmOptions {
        workers: 1,
        extra_pool: "pm.max_requests = 2".into(),
        ..options()
    });
    let script = pool.script("pid.php", "<?php echo getmypid();");
    let mut client = pool.client();
    // The worker exits after two requests (the pool's start-up ping may have been one of
    // them) and closes our kept connection with it; every request still succeeds.
    let pids: Vec<String> = (0..6).map(|_| pid_of(&mut client, &script)).collect();
    let mut runs: Vec<(String, usize)> = Vec::new();
    for pid in pids {
        match runs.last_mut() {
            Some((last, n)) if *last == pid => *n += 1,
            _ => runs.push((pid, 1)),
        }
    }
    assert!(runs.len() >= 3, "{runs:?}");
    assert!(runs.iter().all(|(_, n)| *n <= 2), "{runs:?}");
}

#[test]
fn many_params_beyond_one_record_work_but_one_oversized_param_is_explained() {
    let pool = Pool::start();
    let script = pool.script(
        "params.php",
        r#"<?php
$n = 0; $bytes = 0;
foreach ($_SERVER as $k => $v) { if (str_starts_with($k, 'CUTOVER_')) { $n++; $bytes += strlen($v); } }
echo "$n $bytes";
"#,
    );
    let mut request = Request::get(&script, "");
    for i in 0..40 {
        request = request.param(format!("CUTOVER_{i}"), "v".repeat(5000));
    }
    let mut client = pool.client();
    let response = client.request(&request).unwrap();
    assert_eq!(response.body_text(), "40 200000");

    let oversized = Request::get(&script, "").param("CUTOVER_BIG", "x".repeat(70_000));
    let err = client.request(&oversized).unwrap_err();
    match &err {
        Error::ConnectionClosed {
            oversized_param, ..
        } => assert_eq!(
            oversized_param.as_ref().map(|(name, _)| name.as_str()),
            Some("CUTOVER_BIG")
        ),
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    assert!(
        err.hint().unwrap().contains("CUTOVER_BIG"),
        "{:?}",
        err.hint()
    );
    // The client reconnects for the next request.
    assert_eq!(client.request(&request).unwrap().body_text(), "40 200000");
}

#[test]
fn missing_script_is_primary_script_unknown_with_a_hint() {
    let pool = Pool::start();
    let missing = pool.scripts.join("nope.php");
    let err = pool
        .client()
        .request(&Request::get(&missing, ""))
        .unwrap_err();
    match &err {
        Error::ScriptNotFound { script, stderr, .. } => {
            assert_eq!(script, &missing.display().to_string());
            assert_eq!(stderr, "Primary script unknown");
        }
        other => panic!("expected ScriptNotFound, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("Primary script unknown"), "{message}");
    assert!(err.hint().unwrap().contains("inside the deploy path"));

    // The raw response is still there for callers who want it.
    let raw = pool
        .client()
        .request_raw(&Request::get(&missing, ""))
        .unwrap();
    assert_eq!(
        (raw.status, raw.body_text().as_ref()),
        (404, "File not found.\n")
    );
}

#[test]
fn script_in_a_directory_the_pool_cannot_enter_is_not_found() {
    let pool = Pool::start();
    std::fs::create_dir(pool.scripts.join("closed")).unwrap();
    let script = pool.script("closed/a.php", "<?php echo 1;");
    std::fs::set_permissions(
        pool.scripts.join("closed"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let err = pool
        .client()
        .request(&Request::get(&script, ""))
        .unwrap_err();
    assert!(matches!(err, Error::ScriptNotFound { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("enter every directory"));
}

#[test]
fn unreadable_script_is_access_denied_naming_the_pool_user() {
    let pool = Pool::start();
    let script = pool.script("secret.php", "<?php echo 1;");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = pool
        .client()
        .request(&Request::get(&script, ""))
        .unwrap_err();
    match &err {
        Error::ScriptNotReadable { stderr, .. } => {
            assert!(stderr.contains("Permission denied"), "{stderr}")
        }
        other => panic!("expected ScriptNotReadable, got {other:?}"),
    }
    assert!(err.hint().unwrap().contains("pool's user"));
}

#[test]
fn txt_script_is_refused_by_security_limit_extensions() {
    let pool = Pool::start();
    let script = pool.script("status.txt", "<?php echo 'ran';");
    let err = pool
        .client()
        .request(&Request::get(&script, ""))
        .unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("security.limit_extensions"));
    assert!(err.hint().unwrap().contains(".php"));
}

#[test]
fn script_outside_open_basedir_names_the_allowed_paths() {
    let allowed = tempfile::tempdir().unwrap();
    let pool = Pool::start_with(FpmOptions {
        open_basedir: Some(allowed.path().to_path_buf()),
        ..options()
    });
    let script = pool.script("a.php", "<?php echo 1;");
    let err = pool
        .client()
        .request(&Request::get(&script, ""))
        .unwrap_err();
    assert!(
        matches!(err, Error::ScriptOutsideOpenBasedir { .. }),
        "{err:?}"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains(&allowed.path().display().to_string()),
        "{hint}"
    );
}

#[test]
fn fatal_error_is_an_empty_500_with_the_php_message() {
    let pool = Pool::start();
    let script = pool.script("fatal.php", "<?php undefined_function_here();");
    let err = pool
        .client()
        .request(&Request::get(&script, ""))
        .unwrap_err();
    match &err {
        Error::EmptyServerError { stderr, .. } => {
            assert!(stderr.contains("undefined_function_here"), "{stderr}")
        }
        other => panic!("expected EmptyServerError, got {other:?}"),
    }
    assert!(err.to_string().contains("undefined_function_here"));
}

#[test]
fn missing_unix_socket_is_a_connect_error_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Address::Unix(dir.path().join("php-fpm.sock"));
    let err = Client::connect(&addr, TIMEOUT).err().unwrap();
    match &err {
        Error::Connect { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(err.to_string().contains("php-fpm.sock"));
    assert!(err.hint().unwrap().contains("is php-fpm running"));
}

#[test]
fn socket_left_by_a_stopped_pool_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("php-fpm.sock");
    // A socket file with no listener, as a killed php-fpm leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let err = Client::connect(&Address::Unix(stale), TIMEOUT)
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("nothing listens"));
}

#[test]
fn tcp_pool_answers_requests_and_get_values() {
    let pool = Pool::start_with(FpmOptions {
        listen: FpmListen::Tcp,
        ..options()
    });
    assert!(matches!(pool.addr, Address::Tcp(_)));
    let script = pool.script("hello.php", "<?php echo 'hello over tcp';");
    let mut client = pool.client();
    for _ in 0..2 {
        let response = client.request(&Request::get(&script, "")).unwrap();
        assert_eq!(response.body_text(), "hello over tcp");
    }
    let values = get_values(&pool.addr, &["FCGI_MPXS_CONNS"], TIMEOUT).unwrap();
    assert_eq!(values.get("FCGI_MPXS_CONNS").map(String::as_str), Some("0"));
}

#[test]
fn tcp_port_with_nothing_listening_is_refused_with_a_hint() {
    let addr = Address::parse(&format!("127.0.0.1:{}", free_port())).unwrap();
    let err = Client::connect(&addr, TIMEOUT).err().unwrap();
    assert!(
        matches!(&err, Error::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("nothing listens"));
}

#[test]
fn slow_script_times_out_in_the_receive_phase_and_the_client_recovers() {
    let pool = Pool::start();
    let slow = pool.script("slow.php", "<?php sleep(3); echo 'late';");
    let fast = pool.script("fast.php", "<?php echo 'quick';");
    let mut client = Client::connect_with(
        &pool.addr,
        Timeouts {
            connect: TIMEOUT,
            send: TIMEOUT,
            receive: Duration::from_millis(500),
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = client.request(&Request::get(&slow, "")).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Receive,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert!(err.to_string().contains("waiting for the response"));
    assert!(err.hint().unwrap().contains("pm.max_children"));
    // The timed-out connection was dropped; the next request gets a new one (and the
    // pool's other worker).
    assert_eq!(
        client
            .request(&Request::get(&fast, ""))
            .unwrap()
            .body_text(),
        "quick"
    );
}

#[test]
fn get_values_reports_that_php_fpm_does_not_multiplex() {
    let pool = Pool::start();
    let values = get_values(
        &pool.addr,
        &["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"],
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(values.get("FCGI_MPXS_CONNS").map(String::as_str), Some("0"));
    // php-fpm 8.2 never sets FCGI_MAX_CONNS / FCGI_MAX_REQS (the code that would is
    // compiled out in fpm_php.c), so it leaves them out of its answer.
    assert!(!values.contains_key("FCGI_MAX_CONNS"), "{values:?}");
    assert!(!values.contains_key("FCGI_MAX_REQS"), "{values:?}");
    // And the pool still serves requests afterwards.
    let script = pool.script("ok.php", "<?php echo 'ok';");
    assert_eq!(
        pool.client()
            .request(&Request::get(&script, ""))
            .unwrap()
            .body_text(),
        "ok"
    );
}

fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
