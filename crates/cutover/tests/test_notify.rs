//! `[notify] webhook`: what a deploy, a failed deploy, a rollback and a switch POST, and
//! that a webhook that fails (an error answer, nobody listening, no answer in time) is a
//! warning only. The webhook is a real HTTP server on 127.0.0.1 in the test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long the test server lives at most, whatever the test does.
const SERVER_LIFETIME: Duration = Duration::from_secs(60);
/// A request's head and body, at most.
const MAX_REQUEST: usize = 256 * 1024;

/// What the test server saw of one request.
struct Request {
    head: String,
    body: serde_json::Value,
}

/// How the test server answers.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Reads the request, then says nothing for this long before closing.
    Silence(Duration),
}

/// A webhook on 127.0.0.1 that takes at most `requests` connections, answers each as told
/// and hands what it read to the test.
struct TestWebhook {
    url: String,
    requests: mpsc::Receiver<Request>,
}

impl TestWebhook {
    fn start(answer: Answer, requests: usize) -> TestWebhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!(
            "http://{}/hooks/T000/SECRET-TOKEN",
            listener.local_addr().unwrap()
        );
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let deadline = Instant::now() + SERVER_LIFETIME;
            let mut served = 0;
            while served < requests && Instant::now() < deadline {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => return,
                };
                served += 1;
                if let Some(request) = serve(stream, answer) {
                    if sender.send(request).is_err() {
                        return;
                    }
                }
            }
        });
        TestWebhook {
            url,
            requests: receiver,
        }
    }

    /// The next request, waiting at most a few seconds (the command has ended already,
    /// but the server thread may not have read it yet).
    fn next(&self) -> Request {
        self.requests
            .recv_timeout(Duration::from_secs(5))
            .expect("the webhook received nothing")
    }

    fn assert_nothing_more(&self) {
        if let Ok(request) = self.requests.recv_timeout(Duration::from_millis(300)) {
            panic!("unexpected notification: {}", request.body);
        }
    }
}

/// One request with a Content-Length body; `None` when it was not one.
fn serve(mut stream: TcpStream, answer: Answer) -> Option<Request> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if bytes.len() > MAX_REQUEST {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .filter(|n| *n <= MAX_REQUEST)?;
    while bytes.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&bytes[head_end..head_end + length]).ok()?;
    match answer {
        Answer::Status(status) => {
            let reply = format!(
                "HTTP/1.1 {status} Test\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: close\r\n\r\nno_service\n"
            );
            let _ = stream.write_all(reply.as_bytes());
        }
        Answer::Silence(quiet) => std::thread::sleep(quiet),
    }
    Some(Request { head, body })
}

/// A port on 127.0.0.1 nothing listens on (it did a moment ago).
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/hook")
}

fn notify_config(sb: &Sandbox, notify: &str) -> String {
    sb.config("notify.toml", &format!("[notify]\n{notify}\n"))
}

fn app(sb: &Sandbox) {
    sb.write("index.php", "<?php echo 'hello';\n");
}

#[test]
fn a_deploy_posts_deployed_with_the_release_the_previous_one_and_its_host() {
    let sb = Sandbox::new();
    app(&sb);
    let hook = TestWebhook::start(Answer::Status(200), 2);
    let config = notify_config(&sb, &format!("webhook = {:?}", hook.url));

    let out = sb.run_deploy(&["--release", "v1", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    let first = hook.next();
    assert_eq!(first.body["event"], "deployed");
    assert_eq!(first.body["previous"], serde_json::Value::Null);

    let out = sb.run_deploy(&["--release", "v2", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stderr(&out).contains("warning"), "{}", text(&out));
    let Request { head, body } = hook.next();
    assert!(
        head.starts_with("POST /hooks/T000/SECRET-TOKEN HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body["event"], "deployed");
    assert_eq!(body["release"], "v2");
    assert_eq!(body["previous"], "v1");
    let deploy_path = sb.to();
    assert_eq!(body["deploy_paths"], serde_json::json!([deploy_path]));
    assert_eq!(
        body["hosts"],
        serde_json::json!([{ "name": "local", "status": "deployed",
                             "deploy_path": deploy_path, "error": null }])
    );
    assert!(!body["user"].as_str().unwrap().is_empty(), "{body}");
    assert!(body["duration_ms"].is_u64(), "{body}");
    assert!(body["time"].is_string(), "{body}");
    assert_eq!(body["error"], serde_json::Value::Null);
    let line = body["text"].as_str().unwrap();
    assert!(
        line.contains(&format!("deployed v2 to {deploy_path} in ")) && line.ends_with("(was v1)"),
        "{line}"
    );
    hook.assert_nothing_more();
}

#[test]
fn a_failed_deploy_posts_deploy_failed_with_the_error_and_still_exits_1() {
    let sb = Sandbox::new();
    app(&sb);
    let hook = TestWebhook::start(Answer::Status(200), 2);
    let config = notify_config(
        &sb,
        &format!("webhook = {:?}\non = [\"deploy_failed\"]", hook.url),
    );
    let out = sb.run_deploy(&["--release", "v1", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    let failing = sb.config(
        "failing.toml",
        &format!(
            "[hooks]\nbefore_switch = [\"false\"]\n\n[notify]\nwebhook = {:?}\n",
            hook.url
        ),
    );

    let out = sb.run_deploy(&["--release", "v2", "--config", &failing, "--json"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("v1"));
    let Request { body, .. } = hook.next();
    assert_eq!(body["event"], "deploy_failed");
    assert_eq!(body["release"], "v2");
    assert_eq!(body["previous"], "v1");
    assert_eq!(body["hosts"][0]["name"], "local");
    assert_eq!(body["hosts"][0]["status"], "failed");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("false"), "{body}");
    assert_eq!(body["hosts"][0]["error"], error);
    assert_eq!(body["state"], "the deploy path is as it was");
    let line = body["text"].as_str().unwrap();
    assert!(
        line.starts_with(&format!("deploy of v2 to {} by ", sb.to()))
            && line.contains(" failed: ")
            && line.ends_with("; the deploy path is as it was"),
        "{line}"
    );
    // The first deploy was not asked for (`on`): only the failure was sent.
    hook.assert_nothing_more();
}

#[test]
fn a_rollback_posts_rolled_back_and_a_switch_switched() {
    let sb = Sandbox::new();
    app(&sb);
    let hook = TestWebhook::start(Answer::Status(204), 2);
    let config = notify_config(
        &sb,
        &format!(
            "webhook = {:?}\non = [\"rolled_back\", \"switched\"]",
            hook.url
        ),
    );
    for id in ["v1", "v2"] {
        let out = sb.run_deploy(&["--release", id, "--config", &config]);
        assert!(out.status.success(), "{}", text(&out));
    }

    let to = sb.to();
    let out = sb.run(&["rollback", "--to", &to, "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stderr(&out).contains("warning"), "{}", text(&out));
    let Request { body, .. } = hook.next();
    assert_eq!(body["event"], "rolled_back");
    assert_eq!(body["release"], "v1");
    assert_eq!(body["previous"], "v2");
    assert_eq!(body["hosts"][0]["status"], "rolled back");
    assert_eq!(body["commit"], serde_json::Value::Null);
    let line = body["text"].as_str().unwrap();
    assert!(
        line.ends_with(&format!(" rolled back {to} to v1 (was v2)")),
        "{line}"
    );

    let out = sb.run(&["switch", "v2", "--to", &to, "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    let Request { body, .. } = hook.next();
    assert_eq!(body["event"], "switched");
    assert_eq!(
        (&body["release"], &body["previous"]),
        (&"v2".into(), &"v1".into())
    );
    hook.assert_nothing_more();
}

/// A webhook answering 500: a warning that names the host of the webhook, not its secret
/// path; the deploy exits 0 and its JSON carries the warning.
#[test]
fn a_webhook_answering_500_is_a_warning_and_the_deploy_succeeds() {
    let sb = Sandbox::new();
    app(&sb);
    let hook = TestWebhook::start(Answer::Status(500), 1);
    let config = notify_config(&sb, &format!("webhook = {:?}", hook.url));

    let out = sb.run_deploy(&["--release", "v1", "--config", &config, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("v1"));
    assert_eq!(hook.next().body["event"], "deployed");
    let err = stderr(&out);
    assert!(
        err.contains("warning: the deployed notification failed: the webhook at http://127.0.0.1:")
            && err.contains("answered 500: \"no_service\""),
        "{err}"
    );
    assert!(!err.contains("SECRET-TOKEN"), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = doc["warnings"].as_array().unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].as_str().unwrap().contains("answered 500"),
        "{doc}"
    );
}

#[test]
fn an_unreachable_or_silent_webhook_is_a_warning_and_the_command_succeeds() {
    let sb = Sandbox::new();
    app(&sb);
    let closed = notify_config(&sb, &format!("webhook = {:?}", closed_port_url()));
    let out = sb.run_deploy(&["--release", "v1", "--config", &closed]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("the deployed notification failed: the webhook at http://127.0.0.1:")
            && stderr(&out).contains("could not be reached: cannot connect"),
        "{}",
        text(&out)
    );

    // Read, never answered: the one attempt ends at the timeout.
    let hook = TestWebhook::start(Answer::Silence(Duration::from_secs(4)), 1);
    let silent = sb.config(
        "silent.toml",
        &format!("[notify]\nwebhook = {:?}\ntimeout_seconds = 1\n", hook.url),
    );
    let started = Instant::now();
    let out = sb.run_deploy(&["--release", "v2", "--config", &silent]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("v2"));
    assert!(
        stderr(&out).contains("could not be reached: no answer within 1 s"),
        "{}",
        text(&out)
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(hook.next().body["release"], "v2");

    // A rollback's notification fails the same way, and the rollback stands.
    let to = sb.to();
    let out = sb.run(&["rollback", "--to", &to, "--config", &closed]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("the rolled_back notification failed"),
        "{}",
        text(&out)
    );
    assert_eq!(sb.current().as_deref(), Some("v1"));
}

#[test]
fn a_dry_run_posts_nothing() {
    let sb = Sandbox::new();
    app(&sb);
    let hook = TestWebhook::start(Answer::Status(200), 1);
    let config = notify_config(&sb, &format!("webhook = {:?}", hook.url));
    let out = sb.run_deploy(&["--release", "v1", "--config", &config, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    hook.assert_nothing_more();
}

/// Two hosts of `[hosts]` (agents on this machine), a hook failing on one: the notice names
/// that host and its error, the other as not switched, and says nothing changed.
#[test]
fn a_fleet_deploy_failing_on_one_host_names_it_and_the_state() {
    let sb = Sandbox::new();
    app(&sb);
    let hook = TestWebhook::start(Answer::Status(200), 1);
    let hosts = sb.path().join("hosts");
    let config = sb.config(
        "fleet.toml",
        &format!(
            "[hooks]\nbefore_switch = [{{ run = \"exit 3\", roles = [\"db\"] }}]\n\n[notify]\nwebhook = {:?}\n\n[hosts.web1]\npath = {:?}\nroles = [\"web\"]\n\n[hosts.web2]\npath = {:?}\nroles = [\"db\"]\n",
            hook.url,
            hosts.join("web1").display().to_string(),
            hosts.join("web2").display().to_string()
        ),
    );
    let src = sb.src_arg();
    let out = sb.run(&["deploy", &src, "--release", "v1", "--config", &config]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let Request { body, .. } = hook.next();
    assert_eq!(body["event"], "deploy_failed");
    assert_eq!(body["release"], "v1");
    let statuses: Vec<(&str, &str)> = body["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap(), h["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("web1", "not switched"), ("web2", "failed")]);
    assert_eq!(body["hosts"][0]["error"], serde_json::Value::Null);
    assert!(
        body["hosts"][1]["error"]
            .as_str()
            .unwrap()
            .contains("exit 3"),
        "{body}"
    );
    let line = body["text"].as_str().unwrap();
    assert!(
        line.starts_with("deploy of v1 to 2 hosts by ")
            && line.contains(" failed on web2: ")
            && line.ends_with("; every host is as it was"),
        "{line}"
    );
}

/// `openssl s_server` on 127.0.0.1 with a self-signed certificate, killed by pid on drop.
struct SelfSignedServer {
    child: std::process::Child,
    port: u16,
}

impl SelfSignedServer {
    fn start(dir: &std::path::Path) -> SelfSignedServer {
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (scripts/test installs it)");
        assert!(made.status.success(), "{}", text(&made));
        let port = cutover_teststack::free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-naccept", "4", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = SelfSignedServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for SelfSignedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// cutover carries its own TLS for webhooks (not ureq's feature, so the agent stays
/// small): an https:// webhook is spoken to over TLS and its certificate is checked.
#[test]
fn an_https_webhook_gets_a_tls_handshake_and_an_unknown_certificate_is_refused() {
    let sb = Sandbox::new();
    app(&sb);
    let server = SelfSignedServer::start(sb.path());
    let url = format!("https://localhost:{}/hook", server.port);
    let config = notify_config(&sb, &format!("webhook = {url:?}"));
    let out = sb.run_deploy(&["--release", "v1", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sb.current().as_deref(), Some("v1"));
    let err = stderr(&out);
    assert!(
        err.contains("the deployed notification failed: the webhook at https://localhost:")
            && err.contains("TLS handshake")
            && err.contains("UnknownIssuer"),
        "{}",
        text(&out)
    );
}
