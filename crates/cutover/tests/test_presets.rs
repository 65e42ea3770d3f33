//! `cutover init`'s presets, each on an app of its framework's shape: init tells the
//! framework, the config it writes deploys the app to a real php-fpm behind a real nginx
//! (after the two edits init asks for: the pool's address and the refresh), and `cutover
//! verify` passes on it under load.
//!
//! The frameworks themselves cannot be installed here (no network beyond loopback), so
//! `artisan` and `bin/console` are stand-ins that do what the real commands do to the
//! release — write caches that bake in `__DIR__`, link storage, install assets — and record
//! each call; `composer` is a stand-in too, put in the build command by absolute path.

use std::path::{Path, PathBuf};

use cutover_teststack::{make_readable_by_workers, FpmOptions, Nginx, NginxOptions, PhpFpm};

use crate::common::*;

/// Laravel's artisan, as far as a deploy sees it.
pub(crate) const ARTISAN: &str = r#"<?php
// A stand-in for Laravel's artisan: records each call, writes what the real command writes.
$app = __DIR__;
$cmd = $argv[1] ?? '';
$release = trim((string) @file_get_contents($app . '/RELEASE'));
$host = getenv('CUTOVER_HOST');
@mkdir($app . '/storage/logs', 0777, true);
file_put_contents($app . '/storage/logs/artisan.log', "$host $release $cmd\n", FILE_APPEND);
switch ($cmd) {
    case 'storage:link':
        @mkdir($app . '/storage/app/public', 0777, true);
        if (!file_exists($app . '/public/storage')) {
            symlink('../storage/app/public', $app . '/public/storage');
        }
        break;
    case 'config:cache':
        @mkdir($app . '/bootstrap/cache', 0777, true);
        $config = ['base_path' => $app, 'release' => $release];
        file_put_contents($app . '/bootstrap/cache/config.php', '<?php return ' . var_export($config, true) . ';');
        break;
    case 'route:cache':
    case 'view:cache':
        @mkdir($app . '/bootstrap/cache', 0777, true);
        $name = str_replace(':cache', '', $cmd);
        file_put_contents($app . "/bootstrap/cache/$name.php", '<?php return ' . var_export($app, true) . ';');
        break;
    case 'migrate':
        file_put_contents($app . '/storage/migrations.log', "$host $release\n", FILE_APPEND);
        break;
    case 'queue:restart':
        $current = readlink(getenv('CUTOVER_DEPLOY_PATH') . '/current');
        file_put_contents($app . '/storage/queue-restarts.log', "$host $release $current\n", FILE_APPEND);
        break;
    default:
        fwrite(STDERR, "artisan stand-in: unknown command $cmd\n");
        exit(1);
}
"#;

const LARAVEL_INDEX: &str = r#"<?php
$config = require __DIR__ . '/../bootstrap/cache/config.php';
require $config['base_path'] . '/app/version.php';
echo 'release ', $config['release'], ' ', app_version(), "\n";
"#;

/// Symfony's bin/console, as far as a deploy sees it.
const CONSOLE: &str = r#"<?php
// A stand-in for Symfony's bin/console: records each call, writes what the real command writes.
$project = dirname(__DIR__);
$cmd = $argv[1] ?? '';
$release = trim((string) @file_get_contents($project . '/RELEASE'));
$host = getenv('CUTOVER_HOST');
file_put_contents($project . '/var/log/console.log', "$host $release $cmd\n", FILE_APPEND);
switch ($cmd) {
    case 'cache:clear':
        @mkdir($project . '/var/cache/prod', 0777, true);
        $container = ['project_dir' => $project, 'release' => $release];
        file_put_contents($project . '/var/cache/prod/container.php', '<?php return ' . var_export($container, true) . ';');
        break;
    case 'assets:install':
        @mkdir($project . '/public/bundles/app', 0777, true);
        file_put_contents($project . '/public/bundles/app/app.css', "body{}\n");
        break;
    case 'doctrine:migrations:migrate':
        file_put_contents($project . '/var/log/migrations.log', "$host $release\n", FILE_APPEND);
        break;
    default:
        fwrite(STDERR, "console stand-in: unknown command $cmd\n");
        exit(1);
}
"#;

const SYMFONY_INDEX: &str = r#"<?php
$container = require __DIR__ . '/../var/cache/prod/container.php';
require $container['project_dir'] . '/src/version.php';
echo 'release ', $container['release'], ' ', app_version(), "\n";
"#;

const WORDPRESS_INDEX: &str = r#"<?php
require __DIR__ . '/wp-config.php';
require __DIR__ . '/wp-includes/version.php';
echo 'release ', trim(file_get_contents(__DIR__ . '/RELEASE')), ' ', SITE_NAME, ' ', $wp_version, "\n";
"#;

/// Writes into a directory the pool's user was made able to write to.
const UPLOAD: &str = r#"<?php
$ok = @file_put_contents($_GET['to'] . '/upload-test.txt', 'x') !== false;
echo $ok ? 'written' : 'refused';
"#;

/// A stand-in for composer: records the call and writes the autoloader.
pub(crate) const COMPOSER: &str = "#!/bin/sh\necho \"$*\" >> composer-calls.log\nmkdir -p vendor\necho '<?php' > vendor/autoload.php\n";

struct App {
    sb: Sandbox,
    /// Where the web server's root is, in a release.
    web_root: &'static str,
    /// The file of the app's own code that says its version (`{v}` in `code`).
    version_file: &'static str,
    version_code: &'static str,
}

impl App {
    fn laravel() -> App {
        let sb = Sandbox::new();
        sb.write("artisan", ARTISAN);
        sb.write(
            "composer.json",
            r#"{"require": {"php": "^8.2", "laravel/framework": "^11.0"}}"#,
        );
        sb.write("public/index.php", LARAVEL_INDEX);
        sb.write("public/upload.php", UPLOAD);
        sb.write("storage/app/.gitignore", "*\n");
        App {
            sb,
            web_root: "public",
            version_file: "app/version.php",
            version_code: "<?php function app_version() { return '{v}'; }\n",
        }
    }

    fn symfony() -> App {
        let sb = Sandbox::new();
        sb.write("bin/console", CONSOLE);
        sb.write(
            "composer.json",
            r#"{"require": {"symfony/framework-bundle": "7.1.*", "doctrine/doctrine-migrations-bundle": "^3.3"}}"#,
        );
        sb.write("public/index.php", SYMFONY_INDEX);
        sb.write("public/upload.php", UPLOAD);
        App {
            sb,
            web_root: "public",
            version_file: "src/version.php",
            version_code: "<?php function app_version() { return '{v}'; }\n",
        }
    }

    fn wordpress() -> App {
        let sb = Sandbox::new();
        sb.write("wp-includes/version.php", "<?php $wp_version = '6.4.3';\n");
        sb.write("index.php", WORDPRESS_INDEX);
        sb.write("upload.php", UPLOAD);
        App {
            sb,
            web_root: ".",
            version_file: "wp-includes/version.php",
            version_code: "<?php $wp_version = '{v}';\n",
        }
    }

    /// The release's own code, which differs between versions.
    fn write_version(&self, version: &str) {
        self.sb.write(
            self.version_file,
            &self.version_code.replace("{v}", version),
        );
    }

    /// `cutover init` in the app; returns its JSON report.
    fn init(&self) -> serde_json::Value {
        self.sb.json(&["init", &self.sb.src_arg()])
    }

    fn config_path(&self) -> PathBuf {
        self.sb.src().join("cutover.toml")
    }

    /// What the user does after init: the pool's address, OPcache reset after each switch,
    /// the stand-in composer, and the shared files init names, created on the deploy path.
    fn complete_config(&self, fpm: &PhpFpm, shared_files: &[(&str, &str)]) {
        let socket = fpm.unix_socket().unwrap().display().to_string();
        let composer = self.sb.path().join("bin/composer");
        write(&composer, COMPOSER);
        std::fs::set_permissions(
            &composer,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        let text = text
            .replace(
                "# fpm = \"unix:/run/php/php8.2-fpm.sock\"",
                &format!("fpm = \"unix:{socket}\""),
            )
            .replace(
                "# strategy = [\"opcache-reset\"]",
                "strategy = [\"opcache-reset\"]",
            )
            .replace(
                "\"composer install",
                &format!("\"{} install", composer.display()),
            );
        std::fs::write(self.config_path(), text).unwrap();
        for (rel, body) in shared_files {
            write(&self.sb.deploy().join("shared").join(rel), body);
        }
    }

    fn deploy(&self, release: &str) {
        self.write_version(release);
        let out = self.sb.run_deploy(&["--release", release]);
        assert!(out.status.success(), "deploy {release}:\n{}", text(&out));
    }

    fn release(&self, id: &str) -> PathBuf {
        std::fs::canonicalize(self.sb.release_dir(id)).unwrap()
    }

    fn nginx(&self, fpm: &PhpFpm) -> Nginx {
        make_readable_by_workers(self.sb.path()).unwrap();
        let root = std::fs::canonicalize(self.sb.deploy())
            .unwrap()
            .join("current")
            .join(self.web_root);
        Nginx::start(NginxOptions::new(root, fpm.fastcgi_target())).unwrap()
    }

    /// `cutover verify` flipping between v1 and v2 under load (bounded: ~3 s).
    fn verify(&self, nginx: &Nginx) -> serde_json::Value {
        let (url, to) = (nginx.url("/index.php"), self.sb.to());
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
            "300ms",
            "--concurrency",
            "4",
            "--config",
            self.config_path().to_str().unwrap(),
            "--json",
        ]);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        assert_eq!(exit_code(&out), 0, "verify failed:\n{}", text(&out));
        assert_eq!(json["passed"], true, "{json}");
        assert_eq!(json["mixed"], 0, "{json}");
        json
    }

    /// Whether a PHP page of the pool could write into `dir` of the live release.
    fn pool_can_write(&self, nginx: &Nginx, dir: &Path) -> bool {
        let url = format!("{}?to={}", nginx.url("/upload.php"), dir.display());
        let response = cutover_teststack::http_get(&url).unwrap();
        String::from_utf8_lossy(&response.body).trim() == "written"
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_laravel_preset_deploys_a_laravel_app_and_passes_verify() {
    let app = App::laravel();
    let report = app.init();
    assert_eq!(report["preset"], "laravel", "{report}");
    assert_eq!(report["shared_files"], serde_json::json!([".env"]));
    let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
    app.complete_config(&fpm, &[(".env", "APP_ENV=production\n")]);
    app.deploy("v1");
    app.deploy("v2");

    let deploy = std::fs::canonicalize(app.sb.deploy()).unwrap();
    let v2 = app.release("v2");
    let cached = std::fs::read_to_string(v2.join("bootstrap/cache/config.php")).unwrap();
    assert!(cached.contains(&format!("'{}'", v2.display())), "{cached}");
    assert_eq!(
        std::fs::read_link(v2.join("storage")).unwrap(),
        Path::new("../../shared/storage")
    );
    assert_eq!(
        std::fs::read_link(v2.join(".env")).unwrap(),
        Path::new("../../shared/.env")
    );
    assert!(v2.join("vendor/autoload.php").is_file(), "the build ran");
    let shared = deploy.join("shared/storage");
    assert_eq!(
        lines(&shared.join("migrations.log")),
        ["local v1", "local v2"]
    );
    // queue:restart ran after the switch, each time with the new release live.
    assert_eq!(
        lines(&shared.join("queue-restarts.log")),
        ["local v1 releases/v1", "local v2 releases/v2"]
    );

    let nginx = app.nginx(&fpm);
    assert!(app.pool_can_write(&nginx, &shared), "storage is writable");
    assert!(
        app.pool_can_write(&nginx, &v2.join("bootstrap/cache")),
        "bootstrap/cache is writable"
    );
    app.verify(&nginx);
}

#[test]
fn the_symfony_preset_deploys_a_symfony_app_and_passes_verify() {
    let app = App::symfony();
    let report = app.init();
    assert_eq!(report["preset"], "symfony", "{report}");
    let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
    app.complete_config(&fpm, &[(".env.local", "APP_ENV=prod\n")]);
    app.deploy("v1");
    app.deploy("v2");

    let deploy = std::fs::canonicalize(app.sb.deploy()).unwrap();
    let v2 = app.release("v2");
    let container = std::fs::read_to_string(v2.join("var/cache/prod/container.php")).unwrap();
    assert!(
        container.contains(&format!("'{}'", v2.display())),
        "{container}"
    );
    assert!(v2.join("public/bundles/app/app.css").is_file());
    assert_eq!(
        lines(&deploy.join("shared/var/log/migrations.log")),
        ["local v1", "local v2"]
    );
    let calls = std::fs::read_to_string(v2.join("composer-calls.log")).unwrap();
    assert!(calls.contains("--no-scripts"), "{calls}");

    let nginx = app.nginx(&fpm);
    assert!(app.pool_can_write(&nginx, &v2.join("var/cache")));
    app.verify(&nginx);
}

#[test]
fn the_wordpress_preset_deploys_a_wordpress_site_and_passes_verify() {
    let app = App::wordpress();
    let report = app.init();
    assert_eq!(report["preset"], "wordpress", "{report}");
    assert_eq!(report["why"], "wp-includes/");
    let fpm = PhpFpm::start(FpmOptions::default()).unwrap();
    app.complete_config(
        &fpm,
        &[("wp-config.php", "<?php define('SITE_NAME', 'blog');\n")],
    );
    app.deploy("v1");
    app.deploy("v2");

    let deploy = std::fs::canonicalize(app.sb.deploy()).unwrap();
    let nginx = app.nginx(&fpm);
    let uploads = deploy.join("shared/wp-content/uploads");
    assert!(app.pool_can_write(&nginx, &uploads), "uploads are writable");
    assert!(
        !app.pool_can_write(&nginx, &app.release("v2")),
        "the code is not"
    );
    app.verify(&nginx);
}
