//! `cutover init`'s presets: which framework an app is, told by its files, and the
//! cutover.toml that deploys it.

use std::path::Path;

use serde::Serialize;

/// A framework cutover knows how to deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Laravel,
    Symfony,
    WordPress,
    Generic,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::Laravel,
        Preset::Symfony,
        Preset::WordPress,
        Preset::Generic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Laravel => "laravel",
            Preset::Symfony => "symfony",
            Preset::WordPress => "wordpress",
            Preset::Generic => "generic",
        }
    }

    pub fn from_name(name: &str) -> Option<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }
}

/// What an app's files say about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub preset: Preset,
    /// The files that told, e.g. "artisan, and laravel/framework in composer.json".
    pub why: String,
    /// composer.json is there: the build installs the dependencies.
    pub composer: bool,
    /// Doctrine Migrations is required: migrations run once before the switch.
    pub doctrine_migrations: bool,
}

/// Tells the framework of the app in `dir` from its files; generic when none fits.
pub fn detect(dir: &Path) -> Detection {
    let composer_json = std::fs::read_to_string(dir.join("composer.json")).ok();
    let required = |package: &str| {
        composer_json
            .as_deref()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
            .is_some_and(|doc| {
                ["require", "require-dev"]
                    .iter()
                    .any(|key| doc[key].get(package).is_some())
            })
    };
    let has = |rel: &str| dir.join(rel).exists();
    let (preset, why) = if has("artisan") && required("laravel/framework") {
        (
            Preset::Laravel,
            "artisan, and laravel/framework in composer.json".to_string(),
        )
    } else if has("bin/console") && required("symfony/framework-bundle") {
        (
            Preset::Symfony,
            "bin/console, and symfony/framework-bundle in composer.json".to_string(),
        )
    } else if has("wp-config.php") || has("wp-includes") {
        let file = if has("wp-config.php") {
            "wp-config.php"
        } else {
            "wp-includes/"
        };
        (Preset::WordPress, file.to_string())
    } else {
        (
            Preset::Generic,
            "no Laravel, Symfony or WordPress files".to_string(),
        )
    };
    Detection {
        preset,
        why,
        composer: composer_json.is_some(),
        doctrine_migrations: required("doctrine/doctrine-migrations-bundle")
            || required("doctrine/migrations"),
    }
}

/// The cutover.toml for `detection`: the preset's file with the lines that depend on what
/// was found kept or commented out.
pub fn render(detection: &Detection) -> String {
    let text = match detection.preset {
        Preset::Laravel => include_str!("presets/laravel.toml"),
        Preset::Symfony => include_str!("presets/symfony.toml"),
        Preset::WordPress => include_str!("presets/wordpress.toml"),
        Preset::Generic => return crate::TEMPLATE.to_string(),
    };
    // `@composer …` and `@migrations …`: kept when the fact holds, else shown commented out
    // so the user sees what it would be.
    let conditional = |line: &str| -> Option<(bool, String)> {
        let (marker, rest) = line.split_once(' ')?;
        let holds = match marker {
            "@composer" => detection.composer,
            "@migrations" => detection.doctrine_migrations,
            _ => return None,
        };
        Some((holds, rest.to_string()))
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = match conditional(line) {
            Some((true, rest)) => rest,
            Some((false, rest)) => format!("# {}", rest.trim_start()),
            None => line.replace("{why}", &detection.why),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn frameworks_are_told_by_their_files_and_every_preset_parses() {
        let cases = [
            (
                app(&[
                    ("artisan", "<?php"),
                    (
                        "composer.json",
                        r#"{"require": {"laravel/framework": "^11.0"}}"#,
                    ),
                ]),
                Preset::Laravel,
            ),
            (
                app(&[
                    ("bin/console", "<?php"),
                    (
                        "composer.json",
                        r#"{"require": {"symfony/framework-bundle": "7.*", "doctrine/doctrine-migrations-bundle": "^3"}}"#,
                    ),
                ]),
                Preset::Symfony,
            ),
            (
                app(&[("wp-includes/version.php", "<?php")]),
                Preset::WordPress,
            ),
            // An artisan file alone is not Laravel.
            (app(&[("artisan", "<?php")]), Preset::Generic),
            (app(&[("index.php", "<?php")]), Preset::Generic),
        ];
        for (dir, expected) in cases {
            let detection = detect(dir.path());
            assert_eq!(detection.preset, expected, "{detection:?}");
            let text = render(&detection);
            let config = crate::parse(&text, Path::new("/app/cutover.toml"))
                .unwrap_or_else(|e| panic!("{expected:?}: {e}\n{text}"));
            match expected {
                Preset::Laravel => {
                    assert!(text.contains(&detection.why));
                    assert_eq!(config.shared.dirs, ["storage"]);
                    assert_eq!(config.shared.files, [".env"]);
                    assert!(config
                        .hooks
                        .before_switch
                        .iter()
                        .any(|h| h.once && h.run.contains("migrate")));
                    assert_eq!(
                        config.hooks.after_switch[0].run,
                        "php artisan queue:restart"
                    );
                    assert!(config.build.run[0].starts_with("composer install"));
                }
                Preset::Symfony => {
                    assert!(config
                        .hooks
                        .before_switch
                        .iter()
                        .any(|h| h.once && h.run.contains("doctrine:migrations")));
                    assert_eq!(config.shared.files, [".env.local"]);
                }
                Preset::WordPress => {
                    assert_eq!(config.shared.dirs, ["wp-content/uploads"]);
                    assert!(config.build.run.is_empty());
                }
                Preset::Generic => assert_eq!(text, crate::TEMPLATE),
            }
        }
    }

    #[test]
    fn what_an_app_lacks_is_shown_commented_out() {
        let dir = app(&[
            ("bin/console", "<?php"),
            (
                "composer.json",
                r#"{"require": {"symfony/framework-bundle": "7.*"}}"#,
            ),
        ]);
        let text = render(&detect(dir.path()));
        let config = crate::parse(&text, Path::new("/app/cutover.toml")).unwrap();
        assert!(config
            .hooks
            .before_switch
            .iter()
            .all(|h| !h.run.contains("doctrine")));
        assert!(
            text.contains("#   { run = \"php bin/console doctrine:migrations:migrate")
                || text.contains("# { run = \"php bin/console doctrine:migrations:migrate"),
            "{text}"
        );
        std::fs::remove_file(dir.path().join("composer.json")).unwrap();
        assert_eq!(detect(dir.path()).preset, Preset::Generic);
        assert_eq!(Preset::from_name("WordPress"), Some(Preset::WordPress));
        assert_eq!(Preset::from_name("drupal"), None);
    }
}
