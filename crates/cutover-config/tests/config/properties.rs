use std::path::{Path, PathBuf};

use cutover_config::{
    parse, BuildSettings, Config, DeploySettings, HealthSettings, HookEntry, HookSettings,
    HostSettings, InventorySettings, NotifySettings, PhpSettings, RefreshSettings, SharedSettings,
    SshSettings, TEMPLATE,
};
use proptest::prelude::*;

/// Every error must point inside the text: at a line that exists, at most one column past its end.
fn assert_located(text: &str) {
    let Err(err) = parse(text, Path::new("cutover.toml")) else {
        return;
    };
    let (line, column) = err.line_column().expect("parse errors are located");
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        line >= 1 && line <= lines.len(),
        "line {line} of {}: {err}",
        lines.len()
    );
    let width = lines[line - 1].chars().count();
    assert!(
        column >= 1 && column <= width + 1,
        "column {column} of {width}: {err}"
    );
    assert!(err
        .to_string()
        .starts_with(&format!("cutover.toml:{line}:{column}: ")));
}

/// The template with every example switched on, so mutations reach the schema and the rules.
fn uncommented_template() -> String {
    TEMPLATE
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or(line)))
        .collect()
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let piece = prop_oneof![
        "[\\[\\]{}=\",.'#\n 0-9a-z_-]{1,4}",
        Just("\"..\"".to_owned()),
        Just("\"/x\"".to_owned()),
        Just("0".to_owned()),
        Just("é".to_owned()),
    ];
    let edit = prop_oneof![
        (any::<usize>(), piece).prop_map(|(at, text)| Edit::Insert(at, text)),
        (any::<usize>(), 1..8usize).prop_map(|(at, len)| Edit::Delete(at, len)),
    ];
    prop::collection::vec(edit, 1..6)
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        match edit {
            Edit::Insert(at, piece) => {
                let at = at % (chars.len() + 1);
                chars.splice(at..at, piece.chars());
            }
            Edit::Delete(at, len) if !chars.is_empty() => {
                let at = at % chars.len();
                chars.drain(at..(at + len).min(chars.len()));
            }
            Edit::Delete(..) => {}
        }
    }
    chars.into_iter().collect()
}

/// A path inside the release; distinct `first` segments keep entries from nesting.
fn entry(first: String) -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9_-][a-z0-9._-]{0,7}", 0..3).prop_map(move |rest| {
        std::iter::once(first.clone())
            .chain(rest)
            .collect::<Vec<_>>()
            .join("/")
    })
}

fn shared() -> impl Strategy<Value = SharedSettings> {
    prop::collection::btree_set("\\.?[a-z][a-z0-9_-]{0,7}", 0..6)
        .prop_flat_map(|firsts| {
            let entries: Vec<_> = firsts.into_iter().map(entry).collect();
            (entries, prop::collection::vec(any::<bool>(), 6))
        })
        .prop_map(|(entries, is_dir)| {
            let (dirs, files): (Vec<_>, Vec<_>) = entries
                .into_iter()
                .zip(is_dir)
                .partition(|(_, is_dir)| *is_dir);
            SharedSettings {
                dirs: dirs.into_iter().map(|(entry, _)| entry).collect(),
                files: files.into_iter().map(|(entry, _)| entry).collect(),
            }
        })
}

fn commands() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[^\\p{C}]{0,30}[a-z\"'\\\\é][^\\p{C}]{0,30}", 0..4)
}

fn config() -> impl Strategy<Value = Config> {
    let path =
        prop::option::of("/?[a-z0-9._-]{1,8}(/[a-z0-9._-]{1,8}){0,2}".prop_map(PathBuf::from));
    let deploy = (
        path.clone(),
        path,
        prop::option::of(1..10_000usize),
        prop::collection::vec(
            "(\\.?[a-z*][a-z0-9*._-]{0,7})(/[a-z*][a-z0-9*_-]{0,7}){0,2}",
            0..4,
        ),
        prop::option::of("[A-Za-z][A-Za-z0-9_.-]{0,11}"),
        // scp-like, so parsing keeps it as written; a local path would be resolved.
        prop::option::of("[a-z]{1,5}@[a-z]{1,8}:[a-z]{1,8}/[a-z]{1,8}\\.git"),
        prop::option::of("[a-z][a-z0-9_-]{0,8}(/[a-z0-9_-]{1,8})?"),
    )
        .prop_map(
            |(path, source, keep_releases, exclude, release_file, repository, branch)| {
                DeploySettings {
                    path,
                    source,
                    repository,
                    branch,
                    keep_releases,
                    exclude,
                    release_file,
                    asset_dirs: None,
                    keep_asset_releases: None,
                    ..DeploySettings::default()
                }
            },
        );
    let host = (
        prop::option::of("[a-z]{1,5}@[a-z][a-z0-9.-]{0,8}(:[1-9][0-9]{0,3})?"),
        prop::option::of("(/[a-z0-9._-]{1,8}){1,3}".prop_map(PathBuf::from)),
        prop::collection::vec("-[a-zA-Z]", 0..3),
    )
        .prop_map(|(ssh, path, ssh_options)| HostSettings {
            ssh,
            path,
            ssh_options,
            ..HostSettings::default()
        });
    let hosts = prop::collection::btree_map("[a-z][a-z0-9_-]{0,6}", host, 0..4);
    let ssh = prop::collection::vec("-[a-zA-Z]", 0..3).prop_map(|options| SshSettings {
        options,
        ..SshSettings::default()
    });
    let inventory = (
        prop::option::of("[a-z][a-z -]{0,20}"),
        prop::option::of("[1-9][0-9]{0,2}(s|m)"),
    )
        .prop_map(|(command, timeout)| InventorySettings { command, timeout });
    (
        deploy,
        shared(),
        commands(),
        commands(),
        ssh,
        hosts,
        inventory,
    )
        .prop_map(
            |(deploy, shared, run, before_switch, ssh, hosts, inventory)| Config {
                ssh,
                hosts,
                inventory,
                origin: Some(PathBuf::from("cutover.toml")),
                deploy,
                shared,
                build: BuildSettings { run },
                hooks: HookSettings {
                    before_switch: before_switch.into_iter().map(HookEntry::command).collect(),
                    ..HookSettings::default()
                },
                php: PhpSettings::default(),
                refresh: RefreshSettings::default(),
                health: HealthSettings::default(),
                notify: NotifySettings::default(),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics_and_errors_are_located(text in any::<String>()) {
        assert_located(&text);
    }

    #[test]
    fn toml_like_text_never_panics_and_errors_are_located(text in "[\\[\\]{}=\",.'#\n a-z_0-9/-]{0,120}") {
        assert_located(&text);
    }

    #[test]
    fn mutated_template_never_panics_and_errors_are_located(edits in edits(), uncomment in any::<bool>()) {
        let base = if uncomment { uncommented_template() } else { TEMPLATE.to_owned() };
        assert_located(&apply(&base, &edits));
    }

    #[test]
    fn valid_configs_round_trip(config in config()) {
        let text = toml_edit::ser::to_string_pretty(&config).unwrap();
        prop_assert_eq!(parse(&text, Path::new("cutover.toml")).unwrap(), config, "{}", text);
    }
}
