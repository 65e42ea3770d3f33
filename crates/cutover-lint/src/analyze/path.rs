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
