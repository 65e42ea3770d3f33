//! nginx's configuration as nginx itself sees it: the output of `nginx -T` (every file it
//! read, each after a `# configuration file PATH:` line), tokenized like nginx does,
//! `include`s expanded from the dumped files, and for every `server` and `location` the
//! settings in effect there — with nginx's inheritance rules, which differ per directive.

use std::path::Path;

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct At {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One directive: its name, its arguments (unquoted), where it is, and its block if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub at: At,
    pub block: Option<Vec<Directive>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ParseError {
    pub at: At,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Open,
    Close,
    Semicolon,
}

/// Splits nginx config text into words, `{`, `}` and `;`, with their lines. Follows
/// `ngx_conf_read_token`: `#` starts a comment only at the start of a word; quotes group
/// (and `\"`, `\'`, `\\`, `\n`, `\r`, `\t` are unescaped); `{` right after `$` belongs to
/// a `${variable}`; other backslashes stay (regexes keep `\.`).
fn tokenize(text: &str, file: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let error = |line, message: &str| ParseError {
        at: At {
            file: file.to_string(),
            line,
        },
        message: message.to_string(),
    };
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '{' | '}' | ';' => {
                chars.next();
                let token = match c {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    _ => Token::Semicolon,
                };
                tokens.push((token, line));
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err(error(start, "unterminated quoted string")),
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\'' | '\\')) => word.push(e),
                            Some('n') => word.push('\n'),
                            Some('r') => word.push('\r'),
                            Some('t') => word.push('\t'),
                            Some(other) => {
                                if other == '\n' {
                                    line += 1;
                                }
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err(error(start, "unterminated quoted string")),
                        },
                        Some(q) if q == c => break,
                        Some(other) => {
                            if other == '\n' {
                                line += 1;
                            }
                            word.push(other);
                        }
                    }
                }
                tokens.push((Token::Word(word), start));
            }
            _ => {
                let mut word = String::new();
                let mut in_variable_brace = false;
                while let Some(&c) = chars.peek() {
                    if c == '{' && word.ends_with('$') {
                        in_variable_brace = true;
                    } else if c == '}' && in_variable_brace {
                        in_variable_brace = false;
                    } else if c.is_whitespace() || matches!(c, '{' | '}' | ';') {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        match chars.next() {
                            Some(e @ ('"' | '\'' | '\\')) => word.push(e),
                            Some('n') => word.push('\n'),
                            Some('r') => word.push('\r'),
                            Some('t') => word.push('\t'),
                            Some(other) => {
                                if other == '\n' {
                                    line += 1;
                                }
                                word.push('\\');
                                word.push(other);
                            }
                            None => word.push('\\'),
                        }
                    } else {
                        word.push(c);
                    }
                }
                tokens.push((Token::Word(word), line));
            }
        }
    }
    Ok(tokens)
}

/// Parses one file's text into its directives (`include`s not expanded).
pub fn parse(text: &str, file: &str) -> Result<Vec<Directive>, ParseError> {
    let tokens = tokenize(text, file)?;
    let mut position = 0;
    let directives = parse_block(&tokens, &mut position, file, None)?;
    Ok(directives)
}

fn parse_block(
    tokens: &[(Token, usize)],
    position: &mut usize,
    file: &str,
    opened_at: Option<usize>,
) -> Result<Vec<Directive>, ParseError> {
    let at = |line| At {
        file: file.to_string(),
        line,
    };
    let mut directives = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut first_line = 0;
    while let Some((token, line)) = tokens.get(*position) {
        *position += 1;
        match token {
            Token::Word(word) => {
                if words.is_empty() {
                    first_line = *line;
                }
                words.push(word.clone());
            }
            Token::Semicolon | Token::Open => {
                if words.is_empty() {
                    return Err(ParseError {
                        at: at(*line),
                        message: format!(
                            "unexpected \"{}\"",
                            if *token == Token::Open { "{" } else { ";" }
                        ),
                    });
                }
                let block = if *token == Token::Open {
                    Some(parse_block(tokens, position, file, Some(*line))?)
                } else {
                    None
                };
                let mut words = std::mem::take(&mut words).into_iter();
                directives.push(Directive {
                    name: words.next().unwrap_or_default(),
                    args: words.collect(),
                    at: at(first_line),
                    block,
                });
            }
            Token::Close => {
                if !words.is_empty() {
                    return Err(ParseError {
                        at: at(*line),
                        message: "unexpected \"}\" (a directive before it lacks \";\")".into(),
                    });
                }
                if opened_at.is_none() {
                    return Err(ParseError {
                        at: at(*line),
                        message: "unexpected \"}\"".into(),
                    });
                }
                return Ok(directives);
            }
        }
    }
    if !words.is_empty() {
        return Err(ParseError {
            at: at(first_line),
            message: "unexpected end of file, expecting \";\" or \"}\"".into(),
        });
    }
    if let Some(line) = opened_at {
        return Err(ParseError {
            at: at(line),
            message: "unexpected end of file: this \"{\" is never closed".into(),
        });
    }
    Ok(directives)
}

/// The files of an `nginx -T` dump, in the order nginx read them: (path, text).
pub fn split_dump(dump: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in dump.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(path) = bare
            .strip_prefix("# configuration file ")
            .and_then(|rest| rest.strip_suffix(':'))
        {
            files.push((path.to_string(), String::new()));
        } else if let Some((_, text)) = files.last_mut() {
            text.push_str(line);
        }
    }
    files
}

/// The main file's directives with every `include` replaced by the directives of the
/// dumped files it names (relative patterns resolve against the main file's directory, as
/// nginx's conf prefix does; globs match the dumped paths, in sorted order, as glob(3)).
pub fn load(dump: &str) -> Result<Vec<Directive>, ParseError> {
    let files = split_dump(dump);
    let Some((main, _)) = files.first() else {
        return Err(ParseError {
            at: At {
                file: "nginx -T".into(),
                line: 1,
            },
            message: "no \"# configuration file\" in the output".into(),
        });
    };
    let prefix = Path::new(main)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut parsed = Vec::new();
    for (path, text) in &files {
        parsed.push((path.clone(), parse(text, path)?));
    }
    expand(&parsed[0].1, &parsed, &prefix, 0)
}

fn expand(
    directives: &[Directive],
    files: &[(String, Vec<Directive>)],
    prefix: &Path,
    depth: usize,
) -> Result<Vec<Directive>, ParseError> {
    let mut out = Vec::new();
    for directive in directives {
        if directive.name == "include" && directive.block.is_none() {
            if depth > 32 {
                return Err(ParseError {
                    at: directive.at.clone(),
                    message: "includes nested more than 32 deep".into(),
                });
            }
            let Some(pattern) = directive.args.first() else {
                continue;
            };
            let pattern = prefix.join(pattern).display().to_string();
            let mut matched: Vec<&(String, Vec<Directive>)> = files
                .iter()
                .filter(|(path, _)| glob_match(&pattern, path))
                .collect();
            matched.sort_by(|a, b| a.0.cmp(&b.0));
            matched.dedup_by(|a, b| a.0 == b.0);
            for (_, included) in matched {
                out.extend(expand(included, files, prefix, depth + 1)?);
            }
            continue;
        }
        let mut directive = directive.clone();
        if let Some(block) = &directive.block {
            directive.block = Some(expand(block, files, prefix, depth)?);
        }
        out.push(directive);
    }
    Ok(out)
}

/// glob(3) matching of one path: `*` and `?` never match `/`; `[...]` classes (with `!`
/// or `^` negation and ranges).
fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != '/')
                .any(|i| go(&p[1..], &s[i..])),
            Some('?') => s.first().is_some_and(|&c| c != '/') && go(&p[1..], &s[1..]),
            Some('[') => {
                let Some(&c) = s.first() else { return false };
                let Some(end) = p.iter().skip(2).position(|&c| c == ']').map(|i| i + 2) else {
                    return c == '[' && go(&p[1..], &s[1..]);
                };
                let class = &p[1..end];
                let (negated, class) = match class.first() {
                    Some('!' | '^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negated && c != '/' && go(&p[end + 1..], &s[1..])
            }
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = path.chars().collect();
    go(&p, &s)
}

/// A directive's value where it is in effect, and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Setting {
    pub value: String,
    pub at: At,
}

/// The settings in effect in one `server`, or one `location` (or `if`) inside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Site {
    /// `server_name`s of the enclosing server.
    pub server_names: Vec<String>,
    /// Where the enclosing `server` block starts.
    pub server_at: At,
    /// `server` or `location ~ \.php$` (nested ones joined with ` > `).
    pub context: String,
    pub at: At,
    /// `root` (or `alias`) in effect.
    pub root: Option<Setting>,
    /// Has `fastcgi_pass` (PHP is handed requests here).
    pub fastcgi: bool,
    /// The last `fastcgi_param SCRIPT_FILENAME` in effect (php-fpm keeps the last of
    /// duplicate parameters).
    pub script_filename: Option<Setting>,
    pub document_root: Option<Setting>,
    pub open_file_cache: Option<Setting>,
    pub open_file_cache_valid: Option<Setting>,
    pub open_file_cache_errors: Option<Setting>,
    pub disable_symlinks: Option<Setting>,
}

#[derive(Debug, Clone, Default)]
struct Scope {
    root: Option<Setting>,
    /// Array directive: a level that has any `fastcgi_param` replaces the inherited list.
    params: Vec<(String, Setting)>,
    open_file_cache: Option<Setting>,
    open_file_cache_valid: Option<Setting>,
    open_file_cache_errors: Option<Setting>,
    disable_symlinks: Option<Setting>,
}

impl Scope {
    fn enter(&self, directives: &[Directive]) -> Scope {
        let mut scope = self.clone();
        let setting = |d: &Directive| Setting {
            value: d.args.join(" "),
            at: d.at.clone(),
        };
        let own_params: Vec<(String, Setting)> = directives
            .iter()
            .filter(|d| d.name == "fastcgi_param" && d.args.len() >= 2)
            .map(|d| {
                (
                    d.args[0].clone(),
                    Setting {
                        value: d.args[1].clone(),
                        at: d.at.clone(),
                    },
                )
            })
            .collect();
        if !own_params.is_empty() {
            scope.params = own_params;
        }
        for d in directives {
            match d.name.as_str() {
                "root" | "alias" => scope.root = Some(setting(d)),
                "open_file_cache" => scope.open_file_cache = Some(setting(d)),
                "open_file_cache_valid" => scope.open_file_cache_valid = Some(setting(d)),
                "open_file_cache_errors" => scope.open_file_cache_errors = Some(setting(d)),
                "disable_symlinks" => scope.disable_symlinks = Some(setting(d)),
                _ => {}
            }
        }
        scope
    }

    fn param(&self, name: &str) -> Option<Setting> {
        self.params
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }

    fn site(&self, server: &Server, context: String, at: At, fastcgi: bool) -> Site {
        Site {
            server_names: server.names.clone(),
            server_at: server.at.clone(),
            context,
            at,
            root: self.root.clone(),
            fastcgi,
            script_filename: self.param("SCRIPT_FILENAME"),
            document_root: self.param("DOCUMENT_ROOT"),
            open_file_cache: self.open_file_cache.clone(),
            open_file_cache_valid: self.open_file_cache_valid.clone(),
            open_file_cache_errors: self.open_file_cache_errors.clone(),
            disable_symlinks: self.disable_symlinks.clone(),
        }
    }
}

/// Every server of every `http` block, and every location (and `if`) in them.
pub fn sites(config: &[Directive]) -> Vec<Site> {
    let mut sites = Vec::new();
    for http in config.iter().filter(|d| d.name == "http") {
        let Some(http_block) = &http.block else {
            continue;
        };
        let http_scope = Scope::default().enter(http_block);
        for server in http_block.iter().filter(|d| d.name == "server") {
            let Some(block) = &server.block else { continue };
            let names: Vec<String> = block
                .iter()
                .filter(|d| d.name == "server_name")
                .flat_map(|d| d.args.clone())
                .collect();
            let here = Server {
                names,
                at: server.at.clone(),
            };
            let scope = http_scope.enter(block);
            sites.push(scope.site(&here, "server".into(), server.at.clone(), false));
            locations(block, &scope, &here, "", &mut sites);
        }
    }
    sites
}

struct Server {
    names: Vec<String>,
    at: At,
}

fn locations(
    block: &[Directive],
    scope: &Scope,
    server: &Server,
    outer: &str,
    out: &mut Vec<Site>,
) {
    for d in block {
        let Some(inner) = &d.block else { continue };
        if d.name != "location" && d.name != "if" {
            continue;
        }
        let here = format!("{} {}", d.name, d.args.join(" "));
        let context = if outer.is_empty() {
            here
        } else {
            format!("{outer} > {here}")
        };
        let scope = scope.enter(inner);
        let fastcgi = inner.iter().any(|d| d.name == "fastcgi_pass");
        out.push(scope.site(server, context.clone(), d.at.clone(), fastcgi));
        locations(inner, &scope, server, &context, out);
    }
}

/// What `nginx -T` showed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NginxConfig {
    /// The files nginx read, in order.
    pub files: Vec<String>,
    pub sites: Vec<Site>,
}

impl NginxConfig {
    /// Runs `BINARY -T [-c CONFIG]` and reads what it dumped. `-e stderr` keeps nginx from
    /// opening its compiled-in error log just to test a config.
    pub fn read(binary: &str, config: Option<&str>) -> Result<NginxConfig, crate::ReadError> {
        let mut command = std::process::Command::new(binary);
        command.arg("-T").args(["-e", "stderr"]);
        if let Some(config) = config {
            command.args(["-c", config]);
        }
        let shown = format!(
            "{binary} -T{}",
            config.map(|c| format!(" -c {c}")).unwrap_or_default()
        );
        let output = command.output().map_err(|e| crate::ReadError {
            what: shown.clone(),
            message: e.to_string(),
        })?;
        if !output.status.success() {
            return Err(crate::ReadError {
                what: shown,
                message: crate::fpm::last_lines(&String::from_utf8_lossy(&output.stderr), 5),
            });
        }
        NginxConfig::from_dump(&String::from_utf8_lossy(&output.stdout)).map_err(|e| {
            crate::ReadError {
                what: shown,
                message: e.to_string(),
            }
        })
    }

    pub fn from_dump(dump: &str) -> Result<NginxConfig, ParseError> {
        let directives = load(dump)?;
        Ok(NginxConfig {
            files: split_dump(dump).into_iter().map(|(path, _)| path).collect(),
            sites: sites(&directives),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text, "t")
            .unwrap()
            .into_iter()
            .map(|(t, _)| match t {
                Token::Word(w) => w,
                Token::Open => "{".into(),
                Token::Close => "}".into(),
                Token::Semicolon => ";".into(),
            })
            .collect()
    }

    #[test]
    fn tokens_follow_nginx_rules() {
        assert_eq!(
            words("root \"/a b/c\"; # comment\nset $x '${y}z';"),
            ["root", "/a b/c", ";", "set", "$x", "${y}z", ";"]
        );
        // `#` inside a word is not a comment; `${var}` braces belong to the word.
        assert_eq!(words("a#b ${c}d{"), ["a#b", "${c}d", "{"]);
        // Regex backslashes stay, quote escapes do not.
        assert_eq!(
            words(r#"location ~ \.php$ { return 200 "a\"b"; }"#),
            ["location", "~", r"\.php$", "{", "return", "200", "a\"b", ";", "}"]
        );
        assert_eq!(words("a;b"), ["a", ";", "b"]);
    }

    #[test]
    fn parse_reports_lines_and_errors() {
        let parsed = parse(
            "events {}\n\nhttp {\n  server {\n    root /x;\n  }\n}\n",
            "f",
        )
        .unwrap();
        assert_eq!(parsed[1].name, "http");
        assert_eq!(parsed[1].at.line, 3);
        let server = &parsed[1].block.as_ref().unwrap()[0];
        assert_eq!(server.block.as_ref().unwrap()[0].at.line, 5);
        assert!(parse("http {\n", "f")
            .unwrap_err()
            .message
            .contains("never closed"));
        assert!(parse("root /x\n}", "f").is_err());
        assert!(parse("}", "f").is_err());
        assert!(parse("root \"/x;", "f").is_err());
        assert!(parse("root /x", "f").is_err());
    }

    #[test]
    fn glob_is_like_glob3() {
        assert!(glob_match(
            "/etc/nginx/sites-enabled/*",
            "/etc/nginx/sites-enabled/app"
        ));
        assert!(!glob_match("/etc/nginx/*", "/etc/nginx/sites-enabled/app"));
        assert!(glob_match("/e/*.conf", "/e/a.conf"));
        assert!(!glob_match("/e/*.conf", "/e/a.confx"));
        assert!(glob_match("/e/[ab]?.conf", "/e/b1.conf"));
        assert!(!glob_match("/e/[!ab]?.conf", "/e/b1.conf"));
        assert!(glob_match("/e/[a-c].conf", "/e/c.conf"));
    }

    const DUMP: &str = "# configuration file /etc/nginx/nginx.conf:
events {}
http {
    open_file_cache max=1000;
    include /etc/nginx/sites-enabled/*;
}

# configuration file /etc/nginx/sites-enabled/app:
server {
    server_name app;
    root /srv/app/current/public;
    disable_symlinks on;
    location / { try_files $uri /index.php; }
    location ~ \\.php$ {
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        fastcgi_pass unix:/run/php.sock;
    }
    location /static/ {
        open_file_cache off;
        location ~ \\.php$ { fastcgi_pass unix:/x; }
    }
}

# configuration file /etc/nginx/fastcgi_params:
fastcgi_param DOCUMENT_ROOT $document_root;
fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;

";

    #[test]
    fn sites_carry_what_is_in_effect_and_where_it_was_written() {
        let config = NginxConfig::from_dump(DUMP).unwrap();
        assert_eq!(config.files.len(), 3);
        let php = config
            .sites
            .iter()
            .find(|s| s.context == r"location ~ \.php$")
            .unwrap();
        assert!(php.fastcgi);
        assert_eq!(php.server_names, ["app"]);
        assert_eq!(php.root.as_ref().unwrap().value, "/srv/app/current/public");
        assert_eq!(
            php.root.as_ref().unwrap().at.to_string(),
            "/etc/nginx/sites-enabled/app:3"
        );
        // The later SCRIPT_FILENAME wins; DOCUMENT_ROOT comes from the include.
        let script = php.script_filename.as_ref().unwrap();
        assert_eq!(script.value, "$realpath_root$fastcgi_script_name");
        assert_eq!(script.at.line, 8);
        let document_root = php.document_root.as_ref().unwrap();
        assert_eq!(document_root.value, "$document_root");
        assert_eq!(document_root.at.file, "/etc/nginx/fastcgi_params");
        // open_file_cache is inherited from http, disable_symlinks from server.
        assert_eq!(php.open_file_cache.as_ref().unwrap().value, "max=1000");
        assert_eq!(php.disable_symlinks.as_ref().unwrap().value, "on");
        // A nested location inherits the override; fastcgi_param is not inherited into a
        // level... only when the level has none of its own: here it has none, so the
        // server's (none) apply.
        let nested = config
            .sites
            .iter()
            .find(|s| s.context.starts_with("location /static/ > "))
            .unwrap();
        assert!(nested.fastcgi);
        assert_eq!(nested.open_file_cache.as_ref().unwrap().value, "off");
        assert!(nested.script_filename.is_none());
    }

    #[test]
    fn a_level_with_its_own_fastcgi_params_does_not_inherit_the_outer_ones() {
        let dump = "# configuration file /n.conf:
http { server {
    fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
    location /a { fastcgi_pass x; }
    location /b { fastcgi_param X y; fastcgi_pass x; }
} }
";
        let config = NginxConfig::from_dump(dump).unwrap();
        let a = config
            .sites
            .iter()
            .find(|s| s.context == "location /a")
            .unwrap();
        let b = config
            .sites
            .iter()
            .find(|s| s.context == "location /b")
            .unwrap();
        assert!(a.script_filename.is_some());
        assert!(b.script_filename.is_none());
    }

    #[test]
    fn relative_includes_resolve_against_the_main_file() {
        let dump = "# configuration file /etc/nginx/nginx.conf:
http { include conf.d/*.conf; }

# configuration file /etc/nginx/conf.d/b.conf:
server { server_name b; }

# configuration file /etc/nginx/conf.d/a.conf:
server { server_name a; }
";
        let config = NginxConfig::from_dump(dump).unwrap();
        let names: Vec<_> = config
            .sites
            .iter()
            .map(|s| s.server_names[0].clone())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    proptest::proptest! {
        /// Whatever the text, tokenizing and parsing end (with a result or an error).
        #[test]
        fn parsing_never_panics(text in "[a-z \\n;{}#\"'\\\\$]{0,200}") {
            let _ = parse(&text, "f");
            let _ = NginxConfig::from_dump(&format!("# configuration file /f:\n{text}"));
        }
    }
}
