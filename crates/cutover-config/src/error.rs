use std::ops::Range;
use std::path::{Path, PathBuf};

/// A `cutover.toml` that could not be read or is not valid, located to the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", location(.path, .position))]
pub struct ConfigError {
    path: PathBuf,
    position: Option<(usize, usize)>,
    message: String,
    hint: Option<String>,
    io: Option<std::io::ErrorKind>,
}

impl ConfigError {
    /// An error at the byte `span` of `text`.
    pub(crate) fn at(
        path: &Path,
        text: &str,
        span: Range<usize>,
        message: String,
        hint: Option<String>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            position: Some(line_column(text, span.start)),
            message,
            hint,
            io: None,
        }
    }

    pub(crate) fn io(path: &Path, err: &std::io::Error) -> Self {
        let hint = (err.kind() == std::io::ErrorKind::NotFound)
            .then(|| "run `cutover init` to write a commented cutover.toml".to_owned());
        Self {
            path: path.to_path_buf(),
            position: None,
            message: format!("cannot read: {err}"),
            hint,
            io: Some(err.kind()),
        }
    }

    /// The file the error is in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 1-based line and column (in characters); `None` when the file could not be read.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        self.position
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it, e.g. "did you mean `keep_releases`?".
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Whether the file does not exist, for callers that treat a missing config as the defaults.
    pub fn is_not_found(&self) -> bool {
        self.io == Some(std::io::ErrorKind::NotFound)
    }
}

fn location(path: &Path, position: &Option<(usize, usize)>) -> String {
    match position {
        Some((line, column)) => format!("{}:{line}:{column}", path.display()),
        None => path.display().to_string(),
    }
}

/// Editors count columns in characters, not the bytes TOML spans are made of.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_columns_in_characters() {
        let text = "a = 1\nbé = \"ü\" x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, text.find('x').unwrap()), (2, 10));
        assert_eq!(line_column(text, text.len()), (3, 1));
        assert_eq!(
            line_column(text, 8),
            (2, 2),
            "inside `é` snaps to its start"
        );
        assert_eq!(line_column(text, 1000), (3, 1));
    }

    #[test]
    fn display_names_file_line_and_column() {
        let err = ConfigError::at(Path::new("cutover.toml"), "\n x", 2..3, "bad".into(), None);
        assert_eq!(err.to_string(), "cutover.toml:2:2: bad");
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = ConfigError::io(Path::new("/nope/cutover.toml"), &missing);
        assert!(err
            .to_string()
            .starts_with("/nope/cutover.toml: cannot read: "));
        assert!(err.is_not_found());
        assert_eq!(err.line_column(), None);
    }
}
