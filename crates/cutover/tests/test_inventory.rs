//! `[inventory]`: hosts from a real `ansible-inventory` run over an INI inventory, deployed
//! to over real ssh (private sshd instances, see test_fleet.rs).

use std::path::PathBuf;
use std::process::Output;

use cutover_teststack::SshHosts;

use crate::common::{exit_code, text, Sandbox};

const HOSTS: [&str; 3] = ["web1", "web2", "db1"];

struct Setup {
    sb: Sandbox,
    ssh: SshHosts,
}

impl Setup {
    fn host_path(&self, name: &str) -> PathBuf {
        self.sb.path().join("hosts").join(name)
    }

    fn run(&self, config: &str, args: &[&str]) -> Output {
        let mut cmd = self.sb.cutover();
        cmd.env("XDG_CACHE_HOME", self.sb.path().join("cache"));
        cmd.args(["--config", config]).args(args);
        cmd.output().unwrap()
    }

    fn current(&self, path: &std::path::Path) -> Option<String> {
        let link = std::fs::read_link(path.join("current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    fn releases(&self, path: &std::path::Path) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(path.join("releases"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// A config whose hosts come from `inventory`, with `extra` appended.
    fn config(&self, name: &str, inventory: &str, extra: &str) -> String {
        let text = format!(
            "[deploy]\nsource = {:?}\n\n[ssh]\noptions = [\"-F\", {:?}]\n\n\
             [inventory]\ncommand = {inventory:?}\n{extra}",
            self.sb.src().display().to_string(),
            self.ssh.ssh_config().display().to_string(),
        );
        self.sb.config(name, &text)
    }
}

/// An INI inventory with [web], [db], [prod:children], host vars and group vars; the
/// hosts' `ansible_host` is the alias the test ssh_config gives each sshd.
fn ini(setup: &Setup) -> String {
    let user = setup.ssh.user();
    let host = |name: &str, user_var: bool| {
        let user = if user_var {
            format!(" ansible_user={user}")
        } else {
            String::new()
        };
        format!(
            "{name} ansible_host={name} ansible_port={}{user}",
            setup.ssh.port(name)
        )
    };
    format!(
        "[web]\n{} cutover_path={}\n{} cutover_path={}\n\n[db]\n{}\n\n\
         [db:vars]\ncutover_path={}\n\n[prod:children]\nweb\ndb\n\n\
         [prod:vars]\ncutover_refresh={{\"strategy\": [\"command\"], \"command\": \"echo refreshed >> {}\"}}\n",
        host("web1", true),
        setup.host_path("web1").display(),
        host("web2", true),
        setup.host_path("web2").display(),
        host("db1", false),
        setup.host_path("db1").display(),
        setup.sb.path().join("refresh.log").display(),
    )
}

#[test]
fn inventory_hosts_get_the_release_roles_select_them_and_hosts_override() {
    let sb = Sandbox::new();
    let ssh = SshHosts::start(&HOSTS).expect("start sshd hosts");
    let setup = Setup { sb, ssh };
    setup.sb.write("public/index.php", "<?php echo 'v1';\n");
    std::fs::write(setup.sb.path().join("hosts.ini"), ini(&setup)).unwrap();
    let once_log = setup.sb.path().join("once.log");
    let override_path = setup.host_path("web2-override");
    let extra = format!(
        "\n[hooks]\nbefore_switch = [{{ run = 'echo \"$CUTOVER_HOST\" >> {}', once = true, roles = [\"prod\"] }}]\n\n\
         [hosts.web2]\npath = {:?}\n",
        once_log.display(),
        override_path.display().to_string()
    );
    // Relative: the command runs in the config file's directory.
    let config = setup.config(
        "inventory.toml",
        "ansible-inventory -i hosts.ini --list",
        &extra,
    );

    // What the inventory resolves to, without contacting anyone.
    let out = setup.run(&config, &["config", "hosts", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = json["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web1", "web2", "db1"], "inventory order: {json}");
    let user = setup.ssh.user();
    assert_eq!(
        hosts[0]["ssh"],
        format!("{user}@web1:{}", setup.ssh.port("web1"))
    );
    assert_eq!(hosts[0]["roles"], serde_json::json!(["prod", "web"]));
    assert_eq!(hosts[0]["from"], "inventory");
    assert_eq!(hosts[1]["from"], "inventory-and-hosts");
    assert_eq!(hosts[1]["path"], override_path.display().to_string());
    assert_eq!(hosts[2]["ssh"], format!("db1:{}", setup.ssh.port("db1")));
    assert_eq!(
        hosts[2]["path"],
        setup.host_path("db1").display().to_string(),
        "a group var"
    );
    assert_eq!(hosts[2]["roles"], serde_json::json!(["prod", "db"]));

    // Every host gets the release; web2 where [hosts] says; the group's refresh runs
    // everywhere; the once hook on the first host with the role.
    let out = setup.run(&config, &["deploy", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v1 = json["release"].as_str().unwrap().to_string();
    for path in [
        setup.host_path("web1"),
        override_path.clone(),
        setup.host_path("db1"),
    ] {
        assert_eq!(
            setup.current(&path).as_deref(),
            Some(v1.as_str()),
            "{path:?}"
        );
    }
    assert!(!setup.host_path("web2").exists(), "the [hosts] path wins");
    let refreshed = std::fs::read_to_string(setup.sb.path().join("refresh.log")).unwrap();
    assert_eq!(refreshed.lines().count(), 3, "{refreshed}");
    assert_eq!(std::fs::read_to_string(&once_log).unwrap(), "web1\n");

    // --role db: the db group only.
    setup.sb.write("public/index.php", "<?php echo 'v2';\n");
    let out = setup.run(&config, &["deploy", "--json", "--role", "db"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v2 = json["release"].as_str().unwrap().to_string();
    assert_eq!(json["hosts"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(
        setup.current(&setup.host_path("db1")).as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(
        setup.current(&setup.host_path("web1")).as_deref(),
        Some(v1.as_str())
    );

    // A failing, garbage, hostile or hung inventory command: nothing is contacted or
    // changed, and the error names the command.
    let before: Vec<Vec<String>> = [
        setup.host_path("web1"),
        override_path.clone(),
        setup.host_path("db1"),
    ]
    .iter()
    .map(|p| setup.releases(p))
    .collect();
    let hostile = r#"{"_meta": {"hostvars": {"web1": {"ansible_user": "-oProxyCommand=touch /tmp/x"}}}, "all": {"hosts": ["web1"]}}"#;
    for (name, command, extra, code, needles) in [
        (
            "fails.toml",
            "echo 'ERROR! no such inventory' >&2; exit 3".to_string(),
            "",
            1,
            vec![
                "exited with status 3",
                "ERROR! no such inventory",
                "echo 'ERROR!",
            ],
        ),
        (
            "missing.toml",
            "ansible-inventory -i missing.ini --list".to_string(),
            "",
            2,
            vec![
                "inventory command `ansible-inventory -i missing.ini --list` lists no host",
                "Unable to parse",
            ],
        ),
        (
            "garbage.toml",
            "echo 'this is not json'".to_string(),
            "",
            1,
            vec!["printed no JSON inventory"],
        ),
        (
            "hostile.toml",
            format!("printf '%s' '{hostile}'"),
            "",
            2,
            vec![
                "host `web1`",
                "ansible_user \"-oProxyCommand=touch /tmp/x\"",
            ],
        ),
        (
            "hung.toml",
            "sleep 20".to_string(),
            "timeout = \"300ms\"\n",
            1,
            vec!["`sleep 20` did not finish within"],
        ),
    ] {
        let config = setup.config(name, &command, extra);
        let started = std::time::Instant::now();
        let out = setup.run(&config, &["deploy"]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{name}"
        );
        assert_eq!(exit_code(&out), code, "{name}: {}", text(&out));
        let all = text(&out);
        for needle in needles {
            assert!(all.contains(needle), "{name}: no {needle:?} in {all}");
        }
        let after: Vec<Vec<String>> = [
            setup.host_path("web1"),
            override_path.clone(),
            setup.host_path("db1"),
        ]
        .iter()
        .map(|p| setup.releases(p))
        .collect();
        assert_eq!(before, after, "{name}");
    }
}
