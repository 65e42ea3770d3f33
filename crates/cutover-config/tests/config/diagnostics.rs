use crate::diagnose;

fn hint_of(text: &str) -> String {
    diagnose(text).3.unwrap()
}

#[test]
fn syntax_error() {
    let (line, column, message, _) = diagnose("[deploy\npath = 'x'\n");
    assert_eq!((line, column), (1, 8));
    assert_eq!(message, "invalid table header: expected `.`, `]`");
}

#[test]
fn syntax_error_columns_count_characters() {
    let (line, column, ..) = diagnose("[hooks]\nbefore_switch = [\"échö ünï\" x]\n");
    assert_eq!((line, column), (2, 29));
}

#[test]
fn unquoted_string_hints_at_quotes() {
    let (line, column, _, hint) = diagnose("[deploy]\npath = /var/www/app\n");
    assert_eq!((line, column), (2, 8));
    assert_eq!(
        hint.unwrap(),
        "text values need quotes, e.g. path = \"/var/www/app\""
    );
}

#[test]
fn duplicate_key() {
    let (line, column, message, _) = diagnose("[deploy]\nkeep_releases = 3\nkeep_releases = 4\n");
    assert_eq!((line, column), (3, 1));
    assert_eq!(message, "duplicate key `keep_releases` in table `deploy`");
}

#[test]
fn misspelled_key_suggests_the_nearest() {
    let text = "[deploy]\npath = \"/srv\"\n  keep_release = 3\n";
    let (line, column, message, hint) = diagnose(text);
    assert_eq!((line, column), (3, 3));
    assert_eq!(message, "unknown key `keep_release` in [deploy]");
    assert_eq!(hint.unwrap(), "did you mean `keep_releases`?");
    assert_eq!(
        cutover_config::parse(text, std::path::Path::new("app/cutover.toml"))
            .unwrap_err()
            .to_string(),
        "app/cutover.toml:3:3: unknown key `keep_release` in [deploy]"
    );
}

#[test]
fn misspelled_key_with_dashes() {
    assert_eq!(
        hint_of("[hooks]\nbefore-switch = []\n"),
        "did you mean `before_switch`?"
    );
}

#[test]
fn unknown_table_suggests_the_nearest() {
    let (line, column, message, hint) = diagnose("[deploy]\n\n[deploi]\npath = \"x\"\n");
    assert_eq!((line, column), (3, 2));
    assert_eq!(message, "unknown table [deploi]");
    assert_eq!(hint.unwrap(), "did you mean `deploy`?");
}

#[test]
fn unknown_key_far_from_any_lists_the_valid_ones() {
    let (line, column, message, hint) = diagnose("[shared]\ndirs = []\ncolour = 1\n");
    assert_eq!((line, column), (3, 1));
    assert_eq!(message, "unknown key `colour` in [shared]");
    assert_eq!(hint.unwrap(), "valid keys in [shared]: dirs, files");
    assert_eq!(
        hint_of("[deploy]\ncolour = \"main\"\n"),
        "valid keys in [deploy]: path, source, repository, branch, keep_releases, exclude, release_file, asset_dirs, keep_asset_releases, writable, writable_mode, writable_user"
    );
}

#[test]
fn unknown_top_level_key() {
    let (line, column, message, hint) = diagnose("verbose = true\n");
    assert_eq!((line, column), (1, 1));
    assert_eq!(message, "unknown top-level key `verbose`");
    assert_eq!(
        hint.unwrap(),
        "valid top-level keys: deploy, shared, build, hooks, php, refresh, health, ssh, notify, hosts, inventory"
    );
}

#[test]
fn unknown_key_in_dotted_and_inline_tables() {
    let (line, column, message, _) = diagnose("deploy.keep_release = 3\n");
    assert_eq!(
        (line, column, message.as_str()),
        (1, 8, "unknown key `keep_release` in [deploy]")
    );
    let (line, column, _, hint) = diagnose("build = { run = [], rn = [] }\n");
    assert_eq!((line, column), (1, 21));
    assert_eq!(hint.unwrap(), "did you mean `run`?");
}

#[test]
fn unknown_subtable() {
    let (line, column, message, _) = diagnose("[deploy.ssh]\nport = 22\n");
    assert_eq!((line, column), (1, 9));
    assert_eq!(message, "unknown key `ssh` in [deploy]");
}

#[test]
fn wrong_type_names_the_key_and_what_was_found() {
    let (line, column, message, hint) = diagnose("[deploy]\nkeep_releases = \"five\"\n");
    assert_eq!((line, column), (2, 17));
    assert_eq!(
        message,
        "expected a whole number for `deploy.keep_releases`, found \"five\""
    );
    assert_eq!(hint.unwrap(), "write a number, e.g. keep_releases = 5");
}

#[test]
fn quoted_number_hints_at_the_quotes() {
    let (line, column, _, hint) = diagnose("[deploy]\nkeep_releases = \"5\"\n");
    assert_eq!((line, column), (2, 17));
    assert_eq!(hint.unwrap(), "leave out the quotes: keep_releases = 5");
}

#[test]
fn negative_and_fractional_numbers() {
    let (line, column, message, _) = diagnose("[deploy]\nkeep_releases = -1\n");
    assert_eq!((line, column), (2, 17));
    assert_eq!(
        message,
        "expected a whole number for `deploy.keep_releases`, found -1"
    );
    let (_, _, message, _) = diagnose("[deploy]\nkeep_releases = 2.5\n");
    assert_eq!(
        message,
        "expected a whole number for `deploy.keep_releases`, found 2.5"
    );
}

#[test]
fn string_where_an_array_belongs() {
    let (line, column, message, hint) = diagnose("[shared]\nfiles = \".env\"\n");
    assert_eq!((line, column), (2, 9));
    assert_eq!(
        message,
        "expected an array for `shared.files`, found \".env\""
    );
    assert_eq!(
        hint.unwrap(),
        "write a list, even of one: files = [\".env\"]"
    );
}

#[test]
fn wrong_type_inside_an_array() {
    let (line, column, message, _) = diagnose("[shared]\ndirs = [\"storage\", 7]\n");
    assert_eq!((line, column), (2, 20));
    assert_eq!(message, "expected a string for `shared.dirs[1]`, found 7");
}

#[test]
fn path_must_be_a_string() {
    let (line, column, message, _) = diagnose("[deploy]\npath = 3\n");
    assert_eq!((line, column), (2, 8));
    assert_eq!(message, "expected a string for `deploy.path`, found 3");
}

#[test]
fn settings_must_be_tables() {
    let (line, column, message, _) = diagnose("deploy = 5\n");
    assert_eq!((line, column), (1, 10));
    assert_eq!(message, "expected a table for `deploy`, found 5");
    let (line, column, message, _) = diagnose("[[deploy]]\npath = \"x\"\n");
    assert_eq!((line, column), (1, 1));
    assert_eq!(message, "expected a table for `deploy`, found an array");
    let (line, column, message, _) = diagnose("\nhooks = [\"x\"]\n");
    assert_eq!((line, column), (2, 9));
    assert_eq!(message, "expected a table for `hooks`, found an array");
}

#[test]
fn keep_releases_must_be_at_least_one() {
    let (line, column, message, hint) = diagnose("[deploy]\nkeep_releases = 0\n");
    assert_eq!((line, column), (2, 17));
    assert_eq!(message, "`deploy.keep_releases` must be at least 1");
    assert_eq!(hint.unwrap(), "leave it out to keep 5");
}

#[test]
fn empty_deploy_path() {
    let (line, column, message, _) = diagnose("[deploy]\nsource = \"\"\n");
    assert_eq!((line, column), (2, 10));
    assert_eq!(message, "`deploy.source` is empty");
}

#[test]
fn shared_entry_must_be_relative() {
    let (line, column, message, hint) =
        diagnose("[shared]\ndirs = [\n  \"storage\",\n  \"/var/log\",\n]\n");
    assert_eq!((line, column), (4, 3));
    assert_eq!(message, "`/var/log` is absolute");
    assert_eq!(
        hint.unwrap(),
        "write it relative to the release root: `var/log`"
    );
}

#[test]
fn shared_entry_must_stay_inside_the_release() {
    let (line, column, message, hint) = diagnose("[shared]\nfiles = [\"../.env\"]\n");
    assert_eq!((line, column), (2, 10));
    assert_eq!(message, "`../.env` leaves the release with `..`");
    assert_eq!(
        hint.unwrap(),
        "paths here are relative to the release root and stay inside it"
    );
}

#[test]
fn shared_entry_must_name_something() {
    let (line, column, message, _) = diagnose("[shared]\ndirs = [\"a\", \"\"]\n");
    assert_eq!((line, column), (2, 14));
    assert_eq!(message, "`` names no path inside the release");
    let (_, column, message, _) = diagnose("[shared]\ndirs = [\"./\"]\n");
    assert_eq!(column, 9);
    assert_eq!(message, "`./` names no path inside the release");
}

#[test]
fn shared_entries_are_unique_across_dirs_and_files() {
    let (line, column, message, hint) =
        diagnose("[shared]\ndirs = [\"storage\"]\nfiles = [\".env\", \"./storage/\"]\n");
    assert_eq!((line, column), (3, 18));
    assert_eq!(message, "`./storage/` is listed twice");
    assert_eq!(hint.unwrap(), "it is already in `shared.dirs` as `storage`");
}

#[test]
fn shared_entries_do_not_nest() {
    let (line, column, message, hint) =
        diagnose("[shared]\ndirs = [\"storage/logs\", \"storage\"]\n");
    assert_eq!((line, column), (2, 25));
    assert_eq!(
        message,
        "`storage/logs` is inside `storage`, which is shared whole"
    );
    assert_eq!(
        hint.unwrap(),
        "keep only `storage`; everything in it persists already"
    );
}

#[test]
fn exclude_patterns_stay_inside_the_source() {
    let (line, column, message, _) = diagnose("[deploy]\nexclude = [\"tests\", \"../secrets\"]\n");
    assert_eq!((line, column), (2, 21));
    assert_eq!(message, "`../secrets` leaves the release with `..`");
}

#[test]
fn release_file_is_a_file_inside_the_release() {
    let (line, column, message, _) = diagnose("[deploy]\nrelease_file = \"/etc/passwd\"\n");
    assert_eq!((line, column), (2, 16));
    assert_eq!(message, "`/etc/passwd` is absolute");
    let (_, _, message, _) = diagnose("[deploy]\nrelease_file = \"../RELEASE\"\n");
    assert_eq!(message, "`../RELEASE` leaves the release with `..`");
    let (_, _, message, _) = diagnose("[deploy]\nrelease_file = \"meta/\"\n");
    assert_eq!(
        message,
        "`meta/` names a directory; the release file must be a file"
    );
}

#[test]
fn commands_are_not_blank() {
    let (line, column, message, _) =
        diagnose("[hooks]\nbefore_switch = [\"php artisan up\", \"  \"]\n");
    assert_eq!((line, column), (2, 36));
    assert_eq!(message, "empty command in `hooks.before_switch`");
}

#[test]
fn errors_in_inline_tables_point_at_the_value() {
    let (line, column, message, _) = diagnose("deploy = { keep_releases = 0 }\n");
    assert_eq!((line, column), (1, 28));
    assert_eq!(message, "`deploy.keep_releases` must be at least 1");
}

#[test]
fn keys_that_need_quotes_are_shown_quoted() {
    let (line, column, message, _) = diagnose("[deploy]\n\"keep releases\" = 3\n");
    assert_eq!((line, column), (2, 1));
    assert_eq!(message, "unknown key `\"keep releases\"` in [deploy]");
}

#[test]
fn unknown_strategy_value_suggests_the_nearest() {
    let (line, column, message, hint) = diagnose("[refresh]\nstrategy = [\"opcache-rest\"]\n");
    assert_eq!((line, column), (2, 13));
    assert_eq!(
        message,
        "unknown value `opcache-rest` for `refresh.strategy[0]`"
    );
    assert_eq!(hint.unwrap(), "did you mean `opcache-reset`?");
    let (_, _, _, hint) = diagnose("[refresh]\nstrategy = [\"restart\"]\n");
    assert_eq!(
        hint.unwrap(),
        "valid values: opcache-reset, fpm-reload, apache-graceful, command, none, prewarm"
    );
    let (_, _, _, hint) = diagnose("[refresh]\nstrategy = [\"apache-gracefull\"]\n");
    assert_eq!(hint.unwrap(), "did you mean `apache-graceful`?");
}

#[test]
fn writable_settings_are_checked() {
    let (line, column, message, hint) = diagnose("[deploy]\nwritable_mode = \"acls\"\n");
    assert_eq!((line, column), (2, 17));
    assert_eq!(message, "unknown value `acls` for `deploy.writable_mode`");
    assert_eq!(hint.unwrap(), "did you mean `acl`?");
    let (_, _, _, hint) = diagnose("[deploy]\nwritable_mode = \"sudo\"\n");
    assert_eq!(hint.unwrap(), "valid values: acl, chmod, chown");

    let (line, _, message, _) = diagnose("[deploy]\nwritable = [\"storage\", \"../logs\"]\n");
    assert_eq!(line, 2);
    assert_eq!(message, "`../logs` leaves the release with `..`");
    let (_, _, message, hint) = diagnose("[deploy]\nwritable = [\"/var/www/storage\"]\n");
    assert_eq!(message, "`/var/www/storage` is absolute");
    assert_eq!(
        hint.unwrap(),
        "write it relative to the release root: `var/www/storage`"
    );

    let (line, column, message, hint) = diagnose("[deploy]\nwritable_user = \"www-data:rwx\"\n");
    assert_eq!((line, column), (2, 17));
    assert_eq!(message, "`www-data:rwx` is not a user name");
    assert!(hint.unwrap().contains("pool config"));
    for bad in ["", "-R", "a b"] {
        let text = format!("[deploy]\nwritable_user = \"{bad}\"\n");
        assert!(diagnose(&text).2.contains("is not a user name"), "{bad}");
    }
}
