//! The rules, their stable ids, and the texts of their findings.

/// One kind of hazard. The ids (`absolute-path`, …) are stable: they appear in `--json`
/// output and in `// cutover-lint: allow(ID)` comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The path starts with an absolute literal (directly, concatenated, interpolated, or
    /// through a variable or constant set to one).
    AbsolutePath,
    /// From `$_SERVER['DOCUMENT_ROOT']`, `SCRIPT_FILENAME` or `PATH_TRANSLATED`.
    DocumentRoot,
    /// From `getcwd()`.
    WorkingDirectory,
    /// From `getenv()`, `$_ENV`, other `$_SERVER` keys.
    Environment,
    /// From `ini_get()` / `get_cfg_var()`.
    IniSetting,
    /// From `get_include_path()` / `stream_resolve_include_path()`.
    IncludePath,
    /// A relative path (`'lib/a.php'`, `'./a.php'`): looked up in include_path and the
    /// working directory.
    RelativePath,
    /// `set_include_path()` / `ini_set('include_path', …)` with entries that are not
    /// `__DIR__`-based.
    SetIncludePath,
    /// Composer's `vendor/autoload.php` reached through any of the above.
    ComposerAutoload,
    /// `opcache_compile_file()` of such a path.
    PreloadPath,
    /// A file that looks like an `opcache.preload` script.
    OpcachePreload,
    /// With `--strict`: an include whose path comes from somewhere the linter cannot follow.
    UnknownOrigin,
}

impl Rule {
    pub const ALL: [Rule; 12] = [
        Rule::AbsolutePath,
        Rule::DocumentRoot,
        Rule::WorkingDirectory,
        Rule::Environment,
        Rule::IniSetting,
        Rule::IncludePath,
        Rule::RelativePath,
        Rule::SetIncludePath,
        Rule::ComposerAutoload,
        Rule::PreloadPath,
        Rule::OpcachePreload,
        Rule::UnknownOrigin,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Rule::AbsolutePath => "absolute-path",
            Rule::DocumentRoot => "document-root",
            Rule::WorkingDirectory => "working-directory",
            Rule::Environment => "environment",
            Rule::IniSetting => "ini-setting",
            Rule::IncludePath => "include-path",
            Rule::RelativePath => "relative-path",
            Rule::SetIncludePath => "set-include-path",
            Rule::ComposerAutoload => "composer-autoload",
            Rule::PreloadPath => "preload-path",
            Rule::OpcachePreload => "opcache-preload",
            Rule::UnknownOrigin => "unknown-origin",
        }
    }

    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.id() == id)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kebab_case_and_serialize_as_themselves() {
        for rule in Rule::ALL {
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(json, format!("\"{}\"", rule.id()));
            assert_eq!(Rule::from_id(rule.id()), Some(rule));
        }
    }
}
