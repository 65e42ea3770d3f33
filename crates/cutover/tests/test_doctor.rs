//! `cutover doctor` and `cutover config` against real php-fpm pools, nginx and Apache
//! configs: every hazard is reported when present and not when absent, and a stack
//! started from the recommended snippets reports none.
//!
//! nginx and Apache variants are read the way doctor reads them (`nginx -T -c FILE`,
//! `apache2 -f FILE -M/-S`) from configs the test stack writes without starting them:
//! a running server shows nothing more. The pools are running: their ini values come over
//! FastCGI, their own config from `php-fpm -tt`.

use std::path::Path;
use std::process::Command;

use cutover_teststack::{
    http_get, make_readable_by_workers, write_apache_config, write_nginx_config, Apache,
    ApacheOptions, FastcgiTarget, FpmOptions, Nginx, NginxOptions, PhpFpm, DEFAULT_APACHE,
    DEFAULT_NGINX, DEFAULT_PHP_FPM,
};

use crate::common::*;

/// The app: a front controller, a preload script and ~1.2 MB of generated classes (about
/// 8 MB once compiled: two releases need more than a 16 MB OPcache, far less than 128 MB).
fn app(sb: &Sandbox) {
    sb.write(
        "public/index.php",
        "<?php echo 'release ', trim(file_get_contents(__DIR__ . '/../RELEASE')), \"\\n\";\n",
    );
    sb.write("preload.php", "<?php function preloaded() { return 1; }\n");
    for i in 0..300 {
        let mut code = format!("<?php\nnamespace App;\nclass C{i} {{\n");
        for j in 0..20 {
            code.push_str(&format!(
                "    public function m{j}(array $a, int $b): array {{ $x = [];\n        foreach ($a as $k => $v) {{ if ($v > $b) {{ $x[$k] = strtoupper((string) $v) . 'suffix{j}'; }} }}\n        return array_merge($x, ['k{j}' => $b * 2]);\n    }}\n"
            ));
        }
        code.push_str("}\n");
        sb.write(&format!("lib/C{i}.php"), &code);
    }
}

/// A sandbox with one release of the app, readable by the pool's workers.
fn deployed() -> Sandbox {
    let sb = Sandbox::new();
    app(&sb);
    sb.deploy_src(&[]);
    make_readable_by_workers(sb.path()).unwrap();
    sb
}

fn socket(fpm: &PhpFpm) -> String {
    format!("unix:{}", fpm.unix_socket().unwrap().display())
}

/// `cutover doctor --to <deploy> --config <toml> args… --json`: exit code, finding ids
/// (with severity), the whole document.
fn doctor(sb: &Sandbox, toml: &str, args: &[&str]) -> (i32, Vec<String>, serde_json::Value) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("doctor-{}.toml", N.fetch_add(1, Ordering::Relaxed));
    let config = sb.config(&name, toml);
    let to = sb.to();
    let mut all = vec!["doctor", "--config", &config, "--to", &to, "--json"];
    all.extend_from_slice(args);
    let out = sb.run(&all);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(&out)));
    let ids = json["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings list:\n{}", text(&out)))
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["severity"].as_str().unwrap(),
                f["id"].as_str().unwrap()
            )
        })
        .collect();
    (exit_code(&out), ids, json)
}

/// Per refresh setting, the findings of one pool.
type Runs = Vec<(String, Vec<String>)>;

fn has(ids: &[String], id: &str) -> bool {
    ids.iter().any(|i| i.ends_with(&format!(" {id}")))
}

#[test]
fn doctor_reports_pool_hazards_exactly_when_present() {
    let started = std::time::Instant::now();
    let mut variants: Vec<(&str, FpmOptions, bool)> = Vec::new();
    // validate_timestamps=1 with a 2 s window; process_control_timeout left at 0.
    variants.push((
        "window",
        FpmOptions {
            validate_timestamps: true,
            revalidate_freq: 2,
            ..FpmOptions::default()
        },
        false,
    ));
    // What survives a reset: preload from the release, a file cache.
    let mut survivors = FpmOptions {
        process_control_timeout: Some(10),
        ..FpmOptions::default()
    };
    survivors.extra_ini = vec![
        (
            "opcache.file_cache".into(),
            std::env::temp_dir().display().to_string(),
        ),
        ("opcache.preload_user".into(), "nobody".into()),
    ];
    variants.push(("survivors", survivors, true));
    // open_basedir, a restrict_api that excludes cutover's script, too little memory.
    let restricted = FpmOptions {
        process_control_timeout: Some(10),
        extra_ini: vec![
            ("opcache.restrict_api".into(), "/nonexistent/tools".into()),
            ("opcache.memory_consumption".into(), "16".into()),
            ("opcache.interned_strings_buffer".into(), "4".into()),
        ],
        ..FpmOptions::default()
    };
    variants.push(("restricted", restricted, false));

    // Each pool in its own thread (an instance must stay in the thread that started it).
    let results: Vec<(&str, Runs)> = std::thread::scope(|scope| {
        let handles: Vec<_> = variants
            .into_iter()
            .map(|(name, mut options, preload)| {
                scope.spawn(move || {
                    let sb = deployed();
                    let deploy = std::fs::canonicalize(sb.deploy()).unwrap();
                    if preload {
                        options.extra_ini.push((
                            "opcache.preload".into(),
                            deploy.join("current/preload.php").display().to_string(),
                        ));
                    }
                    if name == "restricted" {
                        options.open_basedir = Some(deploy.clone());
                    }
                    // PHP in the shared directory: a cache written after the last switch
                    // (window, survivors), configuration from before it (restricted).
                    let switched = std::fs::symlink_metadata(deploy.join("current"))
                        .unwrap()
                        .modified()
                        .unwrap();
                    let second = std::time::Duration::from_secs(1);
                    let shared_php = match name {
                        "window" | "survivors" => Some(("cache/l10n.php", switched + second)),
                        "restricted" => Some(("config/local.php", switched - 60 * second)),
                        _ => None,
                    };
                    if let Some((file, written)) = shared_php {
                        let path = deploy.join("shared").join(file);
                        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                        std::fs::write(&path, "<?php return [];\n").unwrap();
                        let file = std::fs::File::options().write(true).open(&path).unwrap();
                        file.set_modified(written).unwrap();
                    }
                    let fpm = PhpFpm::start(options).unwrap();
                    let fpm_line = format!("[php]\nfpm = \"{}\"\n", socket(&fpm));
                    let pidfile = fpm.pidfile().display().to_string();
                    let mut runs = Vec::new();
                    for (label, refresh) in [
                        ("none", "".to_string()),
                        ("reset", "[refresh]\nstrategy = [\"opcache-reset\"]\n".to_string()),
                        (
                            "reload",
                            format!("[refresh]\nstrategy = [\"fpm-reload\"]\nfpm_pidfile = \"{pidfile}\"\n"),
                        ),
                    ] {
                        let (code, ids, json) = doctor(&sb, &format!("{fpm_line}{refresh}"), &[]);
                        let errors = ids.iter().any(|i| i.starts_with("error "));
                        assert_eq!(code, if errors { 1 } else { 0 }, "{name}/{label}: {json:#}");
                        assert!(!has(&ids, "not-checked"), "{name}/{label}: {json:#}");
                        runs.push((label.to_string(), ids));
                    }
                    (name, runs)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids = |variant: &str, run: &str| -> Vec<String> {
        results
            .iter()
            .find(|(n, _)| *n == variant)
            .and_then(|(_, runs)| runs.iter().find(|(r, _)| r == run))
            .map(|(_, ids)| ids.clone())
            .unwrap()
    };
    let everywhere = |id: &str| -> Vec<(String, bool)> {
        results
            .iter()
            .flat_map(|(n, runs)| {
                runs.iter()
                    .map(move |(r, ids)| (format!("{n}/{r}"), has(ids, id)))
            })
            .collect()
    };
    let exactly = |id: &str, expected: &[&str]| {
        let found: Vec<String> = everywhere(id)
            .into_iter()
            .filter(|(_, hit)| *hit)
            .map(|(run, _)| run)
            .collect();
        assert_eq!(
            found, expected,
            "{id} was reported in other runs than expected: {results:#?}"
        );
    };
    // validate_timestamps=1 + revalidate_freq=2: a window, unless the pool is reset.
    exactly("opcache-revalidate-window", &["window/none"]);
    // validate_timestamps=0 and nothing resets OPcache (no nginx read: an error).
    exactly("opcache-no-reset", &["survivors/none", "restricted/none"]);
    assert!(ids("survivors", "none").contains(&"error opcache-no-reset".to_string()));
    // fpm-reload with php-fpm's default process_control_timeout of 0.
    exactly("fpm-reload-kills-requests", &["window/reload"]);
    assert!(ids("window", "reload").contains(&"error fpm-reload-kills-requests".to_string()));
    // Preloaded code from the release needs a restart: fine with fpm-reload only.
    exactly(
        "opcache-preload-under-deploy-path",
        &["survivors/none", "survivors/reset"],
    );
    exactly(
        "opcache-file-cache",
        &["survivors/none", "survivors/reset", "survivors/reload"],
    );
    // PHP written in the shared directory since the last switch: a hazard only where
    // OPcache never revalidates; configuration from before it is not reported.
    exactly(
        "php-in-shared",
        &["survivors/none", "survivors/reset", "survivors/reload"],
    );
    exactly(
        "open-basedir",
        &["restricted/none", "restricted/reset", "restricted/reload"],
    );
    exactly(
        "opcache-restrict-api",
        &["restricted/none", "restricted/reset", "restricted/reload"],
    );
    // An error where cutover would reset, a warning elsewhere.
    assert!(ids("restricted", "reset").contains(&"error opcache-restrict-api".to_string()));
    assert!(ids("restricted", "none").contains(&"warning opcache-restrict-api".to_string()));
    exactly(
        "opcache-memory-too-small",
        &["restricted/none", "restricted/reset", "restricted/reload"],
    );
    eprintln!(
        "pool variants took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// nginx -T of a config the test stack would run with `options`.
fn nginx_config(dir: &Path, name: &str, options: &NginxOptions) -> String {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write_nginx_config(options, &dir)
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn doctor_reports_nginx_hazards_exactly_when_present() {
    let sb = Sandbox::new();
    app(&sb);
    sb.deploy_src(&[]);
    let deploy = std::fs::canonicalize(sb.deploy()).unwrap();
    let root = deploy.join("current/public");
    let fastcgi = FastcgiTarget::Unix("/run/php/php8.2-fpm.sock".into());
    let configs = sb.path().join("nginx");
    let base = || NginxOptions::new(&root, fastcgi.clone());
    let variant = |name: &str, change: &dyn Fn(&mut NginxOptions)| {
        let mut options = base();
        change(&mut options);
        nginx_config(&configs, name, &options)
    };
    let document_root = variant("document-root", &|_| {});
    let realpath_root = variant("realpath-root", &|o| o.realpath_root = true);
    let open_file_cache = variant("open-file-cache", &|o| {
        o.realpath_root = true;
        o.open_file_cache = true;
    });
    let disable_symlinks = variant("disable-symlinks", &|o| {
        o.realpath_root = true;
        o.extra_server = "disable_symlinks on;".into();
    });
    let disable_symlinks_from_root = variant("disable-symlinks-from-root", &|o| {
        o.realpath_root = true;
        o.extra_server = "disable_symlinks on from=$document_root;".into();
    });
    let nginx = |config: &str, toml: &str| {
        doctor(
            &sb,
            toml,
            &["--nginx-config", config, "--nginx-bin", DEFAULT_NGINX],
        )
    };
    let reset = "[refresh]\nstrategy = [\"opcache-reset\"]\n";

    let (code, ids, json) = nginx(&document_root, "");
    assert_eq!(ids, ["error nginx-root-through-symlink"], "{json:#}");
    assert_eq!(code, 1);
    // The fix names the line nginx read the parameter from.
    let finding = &json["findings"][0];
    assert!(
        finding["fix"]
            .as_str()
            .unwrap()
            .contains("$realpath_root$fastcgi_script_name"),
        "{finding}"
    );
    assert!(
        finding["at"].as_str().unwrap().starts_with(&document_root),
        "{finding}"
    );
    assert_eq!(json["checked"]["nginx"]["files"][0], document_root.as_str());
    // With a refresh that resets the pool, $document_root is fine.
    let (code, ids, _) = nginx(&document_root, reset);
    assert_eq!((code, ids), (0, vec![]));
    let (code, ids, _) = nginx(&realpath_root, "");
    assert_eq!((code, ids), (0, vec![]));

    let (code, ids, json) = nginx(&open_file_cache, reset);
    assert_eq!(ids, ["warning nginx-open-file-cache"], "{json:#}");
    assert_eq!(code, 0, "warnings only: exit 0");
    assert!(
        json["findings"][0]["why"].as_str().unwrap().contains("404"),
        "{json:#}"
    );

    let (code, ids, json) = nginx(&disable_symlinks, reset);
    assert_eq!(ids, ["error nginx-disable-symlinks"], "{json:#}");
    assert_eq!(code, 1);
    let (code, ids, _) = nginx(&disable_symlinks_from_root, reset);
    assert_eq!((code, ids), (0, vec![]));

    // A root that is not the deploy path's `current` is not judged.
    let elsewhere = variant("elsewhere", &|o| o.root = sb.path().to_path_buf());
    let (code, ids, _) = nginx(&elsewhere, "");
    assert_eq!((code, ids), (0, vec![]));

    // A config nginx refuses is reported as not checked (error), with nginx's words.
    let broken = sb.path().join("broken.conf");
    std::fs::write(&broken, "http {\n").unwrap();
    let (code, ids, json) = nginx(&broken.display().to_string(), "");
    assert_eq!(ids, ["error not-checked"], "{json:#}");
    assert_eq!(code, 1);

    // Human output: severity[id], why, fix, and a summary.
    let config = sb.config("human.toml", "");
    let out = sb.run(&[
        "doctor",
        "--config",
        &config,
        "--to",
        &sb.to(),
        "--nginx-config",
        &document_root,
        "--nginx-bin",
        DEFAULT_NGINX,
    ]);
    let human = stdout(&out);
    assert!(
        human.starts_with("error[nginx-root-through-symlink]: "),
        "{}",
        text(&out)
    );
    assert!(
        human.contains("\n  why: ") && human.contains("\n  fix: "),
        "{}",
        text(&out)
    );
    assert!(human.contains("1 error(s), 0 warning(s)"), "{}", text(&out));
    assert_eq!(exit_code(&out), 1);
}

#[test]
fn doctor_reports_apache_hazards_exactly_when_present() {
    let sb = Sandbox::new();
    app(&sb);
    sb.deploy_src(&[]);
    let deploy = std::fs::canonicalize(sb.deploy()).unwrap();
    let root = deploy.join("current/public");
    let config = |name: &str, options: &ApacheOptions| {
        let dir = sb.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_apache_config(options, &dir)
            .unwrap()
            .display()
            .to_string()
    };
    let apache = |file: &str, toml: &str| {
        doctor(
            &sb,
            toml,
            &["--apache-config", file, "--apache-bin", DEFAULT_APACHE],
        )
    };
    let graceful = "[refresh]\nstrategy = [\"apache-graceful\"]\n";

    let prefork = config("prefork", &ApacheOptions::new(&root));
    let (code, ids, json) = apache(&prefork, "");
    assert_eq!(ids, ["error apache-root-through-symlink"], "{json:#}");
    assert_eq!(code, 1);
    let (code, ids, json) = apache(&prefork, graceful);
    assert_eq!((code, ids), (0, vec![]), "{json:#}");
    assert_eq!(json["checked"]["apache"]["mpm"], "prefork");
    assert_eq!(json["checked"]["apache"]["mod_php"], true);

    // mod_php under the event MPM: Apache refuses to start it; doctor says why.
    let event = config(
        "event",
        &ApacheOptions {
            mpm: "event".into(),
            ..ApacheOptions::new(&root)
        },
    );
    let (code, ids, json) = apache(&event, graceful);
    assert_eq!(ids, ["error apache-threaded-mpm-mod-php"], "{json:#}");
    assert_eq!(code, 1);
    // event without PHP is fine (and serves no PHP to judge).
    let static_only = config(
        "event-static",
        &ApacheOptions {
            mpm: "event".into(),
            php: false,
            ..ApacheOptions::new(&root)
        },
    );
    let (code, ids, json) = apache(&static_only, "");
    assert_eq!((code, ids), (0, vec![]), "{json:#}");

    // The recommended vhost, in a real Apache config: accepted by `apache2 -t`, and no
    // hazard with the refresh it names.
    let snippet = stdout(&sb.ok(&["config", "apache", "--to", &sb.to()]));
    assert!(
        snippet.contains(&format!(
            "DocumentRoot \"{}\"",
            sb.deploy().join("current/public").display()
        )),
        "{snippet}"
    );
    let with_vhost = config(
        "vhost",
        &ApacheOptions {
            extra: snippet,
            ..ApacheOptions::new(&root)
        },
    );
    let test = Command::new(DEFAULT_APACHE)
        .args(["-f", &with_vhost, "-t"])
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "apache2 -t refused the snippet:\n{}",
        text(&test)
    );
    let (code, ids, json) = apache(&with_vhost, graceful);
    assert_eq!((code, ids), (0, vec![]), "{json:#}");
    let roots = json["checked"]["apache"]["roots"].as_array().unwrap().len();
    assert_eq!(roots, 2, "the main root and the vhost's: {json:#}");
}

#[test]
fn a_stack_started_from_the_recommended_snippets_reports_no_hazard() {
    let sb = deployed();
    let release = sb.current().unwrap();
    let to = sb.to();

    // php-fpm from `cutover config fpm` (the stack puts in its own socket, user and pid).
    let fpm_text = stdout(&sb.ok(&["config", "fpm", "--to", &to]));
    assert!(
        fpm_text.contains("process_control_timeout = 10s"),
        "{fpm_text}"
    );
    let fpm = PhpFpm::start(FpmOptions {
        config: Some(fpm_text.clone()),
        ..FpmOptions::default()
    })
    .unwrap();
    // The snippet as printed is accepted by php-fpm's own config test.
    let raw = sb.path().join("fpm-snippet.conf");
    std::fs::write(
        &raw,
        format!(
            "{fpm_text}\n[global]\nerror_log = {}\n",
            sb.path().join("fpm-test.log").display()
        ),
    )
    .unwrap();
    let test = Command::new(DEFAULT_PHP_FPM)
        .arg("-t")
        .arg("-y")
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "php-fpm -t refused the snippet:\n{}",
        text(&test)
    );

    // nginx from `cutover config nginx`, passing PHP to that pool; it serves the release.
    let nginx_text = stdout(&sb.ok(&["config", "nginx", "--to", &to, "--fpm", &socket(&fpm)]));
    let nginx = Nginx::start(NginxOptions {
        server: Some(nginx_text),
        ..NginxOptions::new(sb.deploy(), fpm.fastcgi_target())
    })
    .unwrap();
    let page = http_get(&nginx.url("/index.php")).unwrap();
    assert!(
        page.text().contains(&format!("release {release}")),
        "{}",
        page.text()
    );
    let test = Command::new(DEFAULT_NGINX)
        .args(["-t", "-e", "stderr", "-c"])
        .arg(nginx.config_path())
        .output()
        .unwrap();
    assert!(test.status.success(), "nginx -t:\n{}", text(&test));

    let toml = format!(
        "[php]\nfpm = \"{}\"\n[refresh]\nstrategy = [\"opcache-reset\"]\nfpm_pidfile = \"{}\"\n",
        socket(&fpm),
        fpm.pidfile().display()
    );
    let nginx_conf = nginx.config_path().display().to_string();
    let (code, ids, json) = doctor(
        &sb,
        &toml,
        &["--nginx-config", &nginx_conf, "--nginx-bin", DEFAULT_NGINX],
    );
    assert_eq!((code, ids), (0, vec![]), "{json:#}");
    // Everything asked for was read: the pool, php-fpm's own config, nginx.
    let checked = &json["checked"];
    assert_eq!(
        checked["fpm"]["ini"]["opcache.validate_timestamps"], "0",
        "{checked:#}"
    );
    assert_eq!(
        checked["fpm_config"]["global"]["process_control_timeout"], "10s",
        "{checked:#}"
    );
    assert!(
        checked["nginx"]["files"].as_array().unwrap().len() >= 2,
        "{checked:#}"
    );
    assert_eq!(checked["release"]["php_files"], 302, "{checked:#}");

    // The same pool reloaded by cutover is fine too (process_control_timeout = 10s).
    let toml = toml.replace("opcache-reset", "fpm-reload");
    let (code, ids, json) = doctor(
        &sb,
        &toml,
        &["--nginx-config", &nginx_conf, "--nginx-bin", DEFAULT_NGINX],
    );
    assert_eq!((code, ids), (0, vec![]), "{json:#}");

    // And Apache with mod_php, refreshed by a graceful restart: a running one.
    let apache = Apache::start(ApacheOptions::new(
        std::fs::canonicalize(sb.deploy())
            .unwrap()
            .join("current/public"),
    ))
    .unwrap();
    let conf = apache.conf().display().to_string();
    let (code, ids, json) = doctor(
        &sb,
        "[refresh]\nstrategy = [\"apache-graceful\"]\n",
        &["--apache-config", &conf, "--apache-bin", DEFAULT_APACHE],
    );
    assert_eq!((code, ids), (0, vec![]), "{json:#}");
}

#[test]
fn config_needs_a_deploy_path_and_prints_json() {
    let sb = Sandbox::new();
    let out = sb.run(&["config", "nginx"]);
    assert_refused(&out, 2, &["no deploy path"], "--to");
    let json = sb.json(&[
        "config",
        "fpm",
        "--to",
        "/srv/app",
        "--fpm",
        "127.0.0.1:9000",
    ]);
    assert_eq!(json["server"], "fpm");
    assert!(
        json["text"]
            .as_str()
            .unwrap()
            .contains("listen = 127.0.0.1:9000"),
        "{json}"
    );
}
