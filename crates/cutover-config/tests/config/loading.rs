use std::path::{Path, PathBuf};

use cutover_config::WritableMode;
use cutover_config::{
    load, parse, AgentMode, BuildSettings, Config, DeploySettings, HealthSettings, HookSettings,
    HostSettings, InventorySettings, NotifyEvent, NotifySettings, PhpSettings, RefreshSettings,
    SharedSettings, SshSettings, DEFAULT_APACHE_COMMAND, DEFAULT_APACHE_PIDFILE,
    DEFAULT_ASSET_DIRS, DEFAULT_INVENTORY_TIMEOUT, DEFAULT_KEEP_ASSET_RELEASES,
    DEFAULT_KEEP_RELEASES, DEFAULT_NOTIFY_TIMEOUT_SECONDS, DEFAULT_RELEASE_FILE,
    DEFAULT_WRITABLE_USER, TEMPLATE,
};

#[test]
fn template_parses_to_the_defaults() {
    let config = parse(TEMPLATE, Path::new("cutover.toml")).unwrap();
    let expected = Config {
        origin: Some("cutover.toml".into()),
        ..Config::default()
    };
    assert_eq!(config, expected);
}

/// Uncommenting the template's examples must give a valid config that sets every key,
/// so the template cannot fall behind the schema.
#[test]
fn template_shows_every_key() {
    let uncommented: String = TEMPLATE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(setting) if setting.contains(" = ") => setting,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let config = parse(&uncommented, Path::new("/app/cutover.toml")).unwrap();
    // No `..`: a new field fails to compile here until the template shows it.
    let Config {
        origin: _,
        deploy:
            DeploySettings {
                path,
                source,
                repository,
                branch,
                keep_releases,
                exclude,
                release_file,
                asset_dirs,
                keep_asset_releases,
                writable,
                writable_mode,
                writable_user,
            },
        shared: SharedSettings { dirs, files },
        build: BuildSettings { run },
        hooks:
            HookSettings {
                before_switch,
                after_switch,
                on_failure,
                after_rollback,
                timeout: hook_timeout,
            },
        php: PhpSettings { fpm, fpm_chroot },
        refresh:
            RefreshSettings {
                strategy,
                fpm_pidfile,
                command,
                apache_pidfile,
                apache_command,
                wait_seconds,
                prewarm_seconds,
                opcache_room,
            },
        health:
            HealthSettings {
                url,
                fastcgi_script,
                expect_release,
                timeout_seconds,
            },
        ssh:
            SshSettings {
                options,
                agent,
                agent_path,
                agent_binaries,
            },
        notify:
            NotifySettings {
                webhook,
                timeout_seconds: notify_timeout,
                on,
            },
        hosts,
        inventory:
            InventorySettings {
                command: inventory_command,
                timeout: inventory_timeout,
            },
    } = config;
    let web1 = &hosts["web1"];
    let HostSettings {
        ssh,
        path: host_path,
        ssh_options,
        agent: host_agent,
        agent_path: host_agent_path,
        roles,
        php: host_php,
        refresh: host_refresh,
        health: host_health,
    } = web1;
    assert!(ssh.is_some() && host_path.is_some() && !ssh_options.is_empty());
    assert!(host_php.is_some() && host_refresh.is_some() && host_health.is_some());
    assert!(!options.is_empty());
    assert_eq!(agent, Some(AgentMode::Installed));
    assert_eq!(*host_agent, Some(AgentMode::Installed));
    assert!(agent_path.is_some() && host_agent_path.is_some());
    assert_eq!(
        agent_binaries["Linux x86_64"],
        Path::new("/app/dist/cutover-x86_64"),
        "relative to the file"
    );
    assert_eq!(agent_binaries.len(), 2);
    assert!(url.is_some() && fastcgi_script.is_some());
    assert_eq!((expect_release, timeout_seconds), (Some(true), Some(10)));
    assert!(!strategy.is_empty() && fpm_pidfile.is_some() && command.is_some());
    assert_eq!(wait_seconds, Some(30));
    assert_eq!(prewarm_seconds, Some(30));
    assert_eq!(opcache_room, Some(cutover_config::OpcacheRoom::Warn));
    assert_eq!(
        apache_pidfile.as_deref(),
        Some(Path::new(DEFAULT_APACHE_PIDFILE))
    );
    assert_eq!(apache_command.as_deref(), Some(DEFAULT_APACHE_COMMAND));
    assert!(
        path.is_some() && source.is_some() && keep_releases.is_some() && release_file.is_some()
    );
    assert!(fpm.is_some() && fpm_chroot.is_some() && hook_timeout.is_some());
    for list in [exclude, dirs, files, run] {
        assert!(!list.is_empty());
    }
    for list in [before_switch, after_switch, on_failure, after_rollback] {
        assert!(!list.is_empty());
    }
    assert!(!roles.is_empty());
    assert!(inventory_command.is_some());
    assert_eq!(inventory_timeout.as_deref(), Some("30s"));
    assert_eq!(
        DEFAULT_INVENTORY_TIMEOUT,
        std::time::Duration::from_secs(30)
    );
    assert!(webhook.is_some() && !on.unwrap().is_empty());

    // The examples that show a default show the real one.
    assert_eq!(keep_releases, Some(DEFAULT_KEEP_RELEASES));
    assert_eq!(release_file.as_deref(), Some(DEFAULT_RELEASE_FILE));
    assert_eq!(asset_dirs.unwrap(), DEFAULT_ASSET_DIRS.map(String::from));
    assert_eq!(keep_asset_releases, Some(DEFAULT_KEEP_ASSET_RELEASES));
    assert!(!writable.is_empty());
    assert_eq!(writable_mode, Some(WritableMode::Acl));
    assert_eq!(writable_user.as_deref(), Some(DEFAULT_WRITABLE_USER));
    assert_eq!(source.as_deref(), Some(Path::new("/app/.")));
    assert_eq!(repository.as_deref(), Some("git@github.com:acme/shop.git"));
    assert_eq!(branch.as_deref(), Some("main"));
    assert_eq!(notify_timeout, Some(DEFAULT_NOTIFY_TIMEOUT_SECONDS));
}

#[test]
fn template_comments_fit_a_terminal() {
    for line in TEMPLATE.lines() {
        assert!(line.chars().count() <= 100, "too long: {line}");
    }
}

#[test]
fn a_local_repository_path_is_relative_to_the_file_and_a_url_is_kept() {
    let base = Path::new("/srv/app/cutover.toml");
    let local = parse("[deploy]\nrepository = \"../shop.git\"\n", base).unwrap();
    assert_eq!(
        local.deploy.repository.as_deref(),
        Some("/srv/app/../shop.git")
    );
    for url in ["git@github.com:acme/shop.git", "file:///srv/git/shop.git"] {
        let config = parse(&format!("[deploy]\nrepository = \"{url}\"\n"), base).unwrap();
        assert_eq!(config.deploy.repository.as_deref(), Some(url));
    }
    let err = parse("[deploy]\nbranch = \"--upload-pack=x\"\n", base).unwrap_err();
    assert!(err.to_string().contains("cutover.toml:2:"), "{err}");
    let err = parse("[deploy]\nrepository = \"-oProxyCommand=x\"\n", base).unwrap_err();
    assert!(err.to_string().contains("cutover.toml:2:"), "{err}");
}

#[test]
fn load_resolves_relative_paths_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let file = dir.join("cutover.toml");
    std::fs::write(&file, "[deploy]\npath = \"../www\"\nsource = \"public\"\n").unwrap();
    let config = load(&file).unwrap();

    assert_eq!(config.origin.as_deref(), Some(file.as_path()));
    assert_eq!(config.deploy.path, Some(dir.join("../www")));
    assert_eq!(config.deploy.source, Some(dir.join("public")));
}

#[test]
fn absolute_paths_stay_as_written() {
    let text = "[deploy]\npath = \"/var/www/app\"\nsource = \"/home/ci/build\"\n";
    let config = parse(text, Path::new("/etc/cutover/cutover.toml")).unwrap();
    assert_eq!(config.deploy.path, Some(PathBuf::from("/var/www/app")));
    assert_eq!(config.deploy.source, Some(PathBuf::from("/home/ci/build")));
}

#[test]
fn load_names_a_missing_file() {
    let err = load(Path::new("/nonexistent/cutover.toml")).unwrap_err();
    assert_eq!(err.path(), Path::new("/nonexistent/cutover.toml"));
    assert_eq!(err.line_column(), None);
    assert!(err.is_not_found());
    assert!(
        err.to_string()
            .starts_with("/nonexistent/cutover.toml: cannot read: "),
        "{err}"
    );
    assert_eq!(
        err.hint(),
        Some("run `cutover init` to write a commented cutover.toml")
    );
}

#[test]
fn load_reports_errors_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cutover.toml");
    std::fs::write(&file, "[deploy]\nkeep_releases = 0\n").unwrap();
    let err = load(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:17: `deploy.keep_releases` must be at least 1",
            file.display()
        )
    );
}

#[test]
fn hook_entries_are_commands_or_tables_and_their_roles_must_exist() {
    let text = r#"
[hooks]
before_switch = ["php artisan config:cache", { run = "php artisan migrate --force", once = true, roles = ["db"], timeout = "5m" }]
after_switch = ["php artisan queue:restart"]

[hosts.web1]
roles = ["web", "db"]
"#;
    let config = parse(text, Path::new("cutover.toml")).unwrap();
    let migrate = &config.hooks.before_switch[1];
    assert_eq!(migrate.run, "php artisan migrate --force");
    assert!(migrate.once);
    assert_eq!(migrate.roles, ["db"]);
    assert_eq!(
        migrate.timeout_or(config.hooks.timeout()),
        std::time::Duration::from_secs(300)
    );
    let cache = &config.hooks.before_switch[0];
    assert!(!cache.once && cache.roles.is_empty());
    assert_eq!(
        cache.timeout_or(config.hooks.timeout()),
        cutover_config::DEFAULT_HOOK_TIMEOUT
    );

    let typo = text.replace(r#"roles = ["db"]"#, r#"roles = ["dbs"]"#);
    let err = parse(&typo, Path::new("cutover.toml")).unwrap_err();
    assert!(
        err.to_string().contains("no host has the role `dbs`"),
        "{err}"
    );
    assert_eq!(err.hint(), Some("roles of [hosts]: db, web"));

    let unknown = text.replace("once = true", "one = true");
    let err = parse(&unknown, Path::new("cutover.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("one"), "{err}");

    let bad_timeout = text.replace(r#"timeout = "5m""#, r#"timeout = "soon""#);
    let err = parse(&bad_timeout, Path::new("cutover.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`soon` is not a duration"), "{err}");
    // What a host would refuse is refused here, before anything runs.
    for text_of in ["2d", "25h", "500us"] {
        let bad = text.replace(r#"timeout = "5m""#, &format!("timeout = {text_of:?}"));
        let err = parse(&bad, Path::new("cutover.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("from 1ms to 24h"), "{text_of}: {err}");
    }
}

/// Every `toml` example in the README is a valid cutover.toml.
#[test]
fn the_readme_examples_parse() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut examples = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + "```toml\n".len()..];
        let end = body.find("```").unwrap();
        if let Err(e) = parse(&body[..end], Path::new("/app/cutover.toml")) {
            panic!(
                "README example {} does not parse: {e}\n{}",
                examples + 1,
                &body[..end]
            );
        }
        examples += 1;
        rest = &body[end..];
    }
    assert!(examples >= 3, "only {examples} examples found");
}

#[test]
fn an_inventory_is_a_command_with_a_timeout_and_defers_the_role_check() {
    let text = r#"
[inventory]
command = "ansible-inventory -i hosts.ini --list"

[hooks]
before_switch = [{ run = "php artisan migrate --force", once = true, roles = ["db"] }]
"#;
    let config = parse(text, Path::new("cutover.toml")).unwrap();
    assert_eq!(
        config.inventory.command.as_deref(),
        Some("ansible-inventory -i hosts.ini --list")
    );
    assert_eq!(config.inventory.timeout(), DEFAULT_INVENTORY_TIMEOUT);

    let timed = format!("{text}\n[inventory.x]\n");
    assert!(parse(&timed, Path::new("cutover.toml")).is_err());
    let timed = text.replace("--list\"", "--list\"\ntimeout = \"5s\"");
    let config = parse(&timed, Path::new("cutover.toml")).unwrap();
    assert_eq!(
        config.inventory.timeout(),
        std::time::Duration::from_secs(5)
    );

    for (from, to, message) in [
        (
            "ansible-inventory -i hosts.ini --list",
            " ",
            "`inventory.command` is empty",
        ),
        (
            "--list\"",
            "--list\"\ntimeout = \"2d\"",
            "`2d` is not a duration",
        ),
        ("command", "comand", "comand"),
    ] {
        let err = parse(&text.replace(from, to), Path::new("cutover.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{err}");
    }
}

#[test]
fn notify_takes_an_http_or_https_webhook_a_bounded_timeout_and_known_events() {
    let base = Path::new("/srv/app/cutover.toml");
    let config = parse(
        "[notify]\nwebhook = \"https://hooks.example.com/T/B/x\"\ntimeout_seconds = 2\non = [\"deployed\", \"deploy_failed\"]\n",
        base,
    )
    .unwrap();
    assert_eq!(config.notify.timeout(), std::time::Duration::from_secs(2));
    assert!(config.notify.wants(NotifyEvent::DeployFailed));
    assert!(!config.notify.wants(NotifyEvent::RolledBack));
    assert!(Config::default().notify.wants(NotifyEvent::RolledBack));
    assert_eq!(
        Config::default().notify.timeout(),
        std::time::Duration::from_secs(DEFAULT_NOTIFY_TIMEOUT_SECONDS)
    );
    assert!(parse("[notify]\nwebhook = \"http://127.0.0.1:9/hook\"\n", base).is_ok());

    for (text, says) in [
        ("webhook = \"ftp://example.com/x\"", "scheme is `ftp`"),
        ("webhook = \"hooks.example.com/x\"", "not a URL"),
        ("webhook = \"mailto:ops@example.com\"", "scheme is `mailto`"),
        ("timeout_seconds = 0", "from 1 to 60"),
        ("timeout_seconds = 600", "from 1 to 60"),
    ] {
        let err = parse(&format!("[notify]\n{text}\n"), base).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("cutover.toml:2:"), "{text}: {shown}");
        assert!(shown.contains(says), "{text}: {shown}");
    }
    let err = parse("[notify]\non = [\"deploy\"]\n", base).unwrap_err();
    assert!(err.to_string().contains("cutover.toml:2:"), "{err}");
}

#[test]
fn agent_settings_are_checked_where_they_are_written() {
    let base = Path::new("/srv/app/cutover.toml");
    let err = parse("[ssh]\nagent_path = \"/usr/local/bin/cutover\"\n", base).unwrap_err();
    assert!(err.to_string().contains("cutover.toml:2:"), "{err}");
    assert!(err.to_string().contains("only used with"), "{err}");
    assert!(err.hint().unwrap().contains("[ssh]"), "{err:?}");

    let err = parse(
        "[ssh]\nagent = \"installed\"\nagent_path = \"bin/cutover\"\n",
        base,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not an absolute path"), "{err}");

    // A host that uploads may not name an installed agent, even under an installed [ssh].
    let text = "[ssh]\nagent = \"installed\"\n[hosts.web1]\nssh = \"web1\"\nagent = \"upload\"\nagent_path = \"/x\"\n";
    let err = parse(text, base).unwrap_err();
    assert!(err.hint().unwrap().contains("[hosts.web1]"), "{err:?}");

    let text = "[ssh]\n[hosts.web1]\nssh = \"web1\"\nagent = \"installed\"\nagent_path = \"/opt/cutover\"\n";
    let config = parse(text, base).unwrap();
    assert_eq!(config.hosts["web1"].agent, Some(AgentMode::Installed));

    let err = parse("[ssh]\nagent = \"copy\"\n", base).unwrap_err();
    assert!(err.to_string().contains("cutover.toml:2:"), "{err}");

    let err = parse(
        "[ssh]\nagent_binaries = { \"x86_64\" = \"dist/a\" }\n",
        base,
    )
    .unwrap_err();
    assert!(err.to_string().contains("uname -sm"), "{err}");
    let config = parse(
        "[ssh]\nagent_binaries = { \"Linux aarch64\" = \"dist/a\", \"Linux x86_64\" = \"/opt/b\" }\n",
        base,
    )
    .unwrap();
    assert_eq!(
        config.ssh.agent_binaries["Linux aarch64"],
        Path::new("/srv/app/dist/a")
    );
    assert_eq!(
        config.ssh.agent_binaries["Linux x86_64"],
        Path::new("/opt/b")
    );
}
