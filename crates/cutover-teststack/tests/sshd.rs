//! Real sshd hosts on 127.0.0.1: logging in, host key checking, one host going down.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cutover_teststack::{process_running, Error, SshHosts};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_answers(hosts: &SshHosts, name: &str) {
    let output = hosts.run(name, "echo ok").unwrap();
    assert!(
        output.status.success() && stdout(&output) == "ok\n",
        "{name}: {}\n{}\n{}",
        output.status,
        stderr(&output),
        hosts.log(name)
    );
}

#[test]
fn three_hosts_answer_on_distinct_ports() {
    let started = Instant::now();
    let hosts = SshHosts::start(&["web1", "web2", "web3"]).unwrap();
    eprintln!("started 3 sshd hosts in {:?}", started.elapsed());

    assert_eq!(hosts.names(), ["web1", "web2", "web3"]);
    let mut ports: Vec<u16> = hosts.names().iter().map(|n| hosts.port(n)).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{ports:?}");

    let config = std::fs::read_to_string(hosts.ssh_config()).unwrap();
    for name in hosts.names() {
        assert_answers(&hosts, &name);
        assert!(config.contains(&format!("Host {name}\n")), "{config}");
        assert!(
            config.contains(&format!("Port {}\n", hosts.port(&name))),
            "{config}"
        );
    }
    assert!(config.contains("StrictHostKeyChecking yes"), "{config}");

    // The remote command runs as the test's user with the system directories on PATH.
    let output = hosts.run("web2", "id -un; echo \"$PATH\"").unwrap();
    let out = stdout(&output);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(hosts.user()), "{out}{}", stderr(&output));
    let path = lines.next().unwrap_or_default();
    assert!(path.split(':').any(|dir| dir == "/usr/sbin"), "{path}");

    // Each host presents its own key: the known_hosts line for web1 does not fit web3.
    let known_hosts = std::fs::read_to_string(hosts.known_hosts()).unwrap();
    let keys: Vec<&str> = known_hosts
        .lines()
        .map(|line| line.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "{known_hosts}");
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
}

#[test]
fn many_parallel_connections_to_one_host() {
    let hosts = SshHosts::start(&["app"]).unwrap();
    let outputs: Vec<Output> = thread::scope(|scope| {
        let runs: Vec<_> = (0..24)
            .map(|i| {
                let hosts = &hosts;
                scope.spawn(move || hosts.run("app", &format!("echo {i}")).unwrap())
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for (i, output) in outputs.iter().enumerate() {
        assert!(output.status.success(), "{i}: {}", stderr(output));
        assert_eq!(stdout(output), format!("{i}\n"));
    }
}

/// `ssh app echo ok` through `hosts`' config, but checking host keys against `known_hosts`
/// (`-o` before the host name beats the config file).
fn ssh_checking_against(hosts: &SshHosts, known_hosts: &Path) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(hosts.ssh_config())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["app", "--", "echo", "ok"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_host_key_not_in_known_hosts_is_rejected() {
    let first = SshHosts::start(&["app"]).unwrap();
    let second = SshHosts::start(&["app"]).unwrap();
    let before = std::fs::read_to_string(second.known_hosts()).unwrap();

    // The second set's known_hosts has a line for `app`, but with another key.
    let output = ssh_checking_against(&first, second.known_hosts());
    assert_eq!(output.status.code(), Some(255), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("Host key verification failed"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output), "");

    // No line at all for the host: strict checking refuses rather than learning the key.
    let empty = first.dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let output = ssh_checking_against(&first, &empty);
    assert_eq!(output.status.code(), Some(255), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("Host key verification failed"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");
    assert_eq!(
        std::fs::read_to_string(second.known_hosts()).unwrap(),
        before
    );

    // The rejected connections leave the host usable.
    assert_answers(&first, "app");
}

#[test]
fn a_stopped_host_is_unreachable_while_the_others_answer() {
    let mut hosts = SshHosts::start(&["a", "b", "c"]).unwrap();
    let b_pid = hosts.pid("b").unwrap();

    // A connection open when the host goes down is cut too.
    let mut long = hosts
        .ssh_command("b", "echo started; sleep 30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(long.stdout.as_mut().unwrap()),
        &mut first_line,
    )
    .unwrap();
    assert_eq!(first_line, "started\n");

    let stopping = Instant::now();
    hosts.stop("b").unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopping.elapsed()
    );
    assert!(!process_running(b_pid));
    assert_eq!(hosts.pid("b"), None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while long.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "ssh to a stopped host still connected"
        );
        thread::sleep(Duration::from_millis(20));
    }

    let output = hosts.run("b", "echo ok").unwrap();
    assert_eq!(output.status.code(), Some(255));
    assert!(
        stderr(&output).contains("Connection refused"),
        "{}",
        stderr(&output)
    );
    assert_answers(&hosts, "a");
    assert_answers(&hosts, "c");

    hosts.stop("b").unwrap();
    assert!(matches!(hosts.stop("nope"), Err(Error::Ssh { .. })));
    assert!(matches!(hosts.run("nope", "true"), Err(Error::Ssh { .. })));
}

#[test]
fn dropping_the_hosts_stops_every_sshd() {
    let hosts = SshHosts::start(&["a", "b", "c"]).unwrap();
    let pids: Vec<u32> = hosts
        .names()
        .iter()
        .map(|n| hosts.pid(n).unwrap())
        .collect();
    for &pid in &pids {
        assert!(process_running(pid));
    }
    let dir = hosts.dir().to_path_buf();
    drop(hosts);
    for &pid in &pids {
        assert!(!process_running(pid), "sshd {pid} still running");
    }
    if std::env::var_os("CUTOVER_TESTSTACK_KEEP").is_none() {
        assert!(!dir.exists());
    }
}

#[test]
fn bad_host_names_are_refused() {
    for names in [&[][..], &["a", "a"], &["-o"], &["a b"], &["*"]] {
        assert!(
            matches!(SshHosts::start(names), Err(Error::Ssh { .. })),
            "{names:?}"
        );
    }
}
