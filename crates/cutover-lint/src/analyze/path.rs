//! Path text: what kind of path a literal is, and resolving and relating paths inside the
//! tree. Apart because it is plain string arithmetic, shared by includes, findings and
//! hints.

pub(super) enum LiteralKind {
    Absolute,
    Relative,
    /// `phar://…`, `file://…` and other stream wrappers: not a plain path.
    Wrapper,
}

pub(super) fn literal_kind(text: &str) -> LiteralKind {
    if text.starts_with('/') || text.starts_with('\\') {
        return LiteralKind::Absolute;
    }
    let bytes = text.as_bytes();
    if bytes.len() >= 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && matches!(bytes[2], b'/' | b'\\')
    {
        return LiteralKind::Absolute;
    }
    if let Some(at) = text.find("://") {
        if text[..at]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '+' || c == '-')
        {
            return LiteralKind::Wrapper;
        }
    }
    LiteralKind::Relative
}

/// The path inside the tree that `text` names from directory `dir` (`up` levels higher),
/// normalised; `None` when it leaves the tree.
pub(super) fn resolve(dir: &[String], up: usize, text: &str) -> Option<String> {
    let mut parts: Vec<String> = dir.to_vec();
    for _ in 0..up {
        parts.pop()?;
    }
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part.to_string()),
        }
    }
    Some(parts.join("/"))
}

/// `target` as seen from directory `dir`, both inside the tree: `../lib/a.php`.
pub(super) fn relative_path(dir: &[String], target: &str) -> String {
    let target: Vec<&str> = target.split('/').filter(|p| !p.is_empty()).collect();
    let common = dir
        .iter()
        .zip(&target)
        .take_while(|(a, b)| a.as_str() == **b)
        .count();
    let mut parts: Vec<&str> = vec![".."; dir.len() - common];
    parts.extend(&target[common..]);
    parts.join("/")
}

/// The `current` of the deploy path an absolute path can run through, if any: lexically
/// under `<deploy>/current` (an unfinished path: one that may still continue there), or, on
/// this machine, through some other symlink into `<deploy>/releases`; and whether it
/// certainly does (not only may continue there).
pub(crate) fn deploy_reach(
    deploy_paths: &[std::path::PathBuf],
    text: &str,
    complete: bool,
) -> Option<(std::path::PathBuf, bool)> {
    let parts = normalized(text);
    for deploy in deploy_paths {
        let current = deploy.join("current");
        let current_parts = normalized(&current.to_string_lossy());
        if parts.starts_with(&current_parts) {
            return Some((current, true));
        }
        // '/var/www/' . $site: may continue into /var/www/app/current.
        if !complete && current_parts.starts_with(&parts) {
            return Some((current, false));
        }
        if through_symlink(&parts, deploy) {
            return Some((current, true));
        }
    }
    None
}

/// '/a//b/./c/../d' as [a, b, d].
fn normalized(text: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for part in text.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part.to_string()),
        }
    }
    parts
}

/// Whether the longest part of the path that exists here resolves into
/// `<deploy>/releases` without being spelled that way: a symlink (other than `current`) leads
/// there.
fn through_symlink(parts: &[String], deploy: &std::path::Path) -> bool {
    let Ok(releases) = deploy.join("releases").canonicalize() else {
        return false;
    };
    let mut existing = parts.len();
    while existing > 0 {
        let prefix: std::path::PathBuf = std::iter::once("/".to_string())
            .chain(parts[..existing].iter().cloned())
            .collect();
        if let Ok(real) = prefix.canonicalize() {
            let spelled = normalized(&deploy.join("releases").to_string_lossy());
            return real.starts_with(&releases) && !parts.starts_with(&spelled);
        }
        existing -= 1;
    }
    false
}
