//! `// cutover-lint: allow` (or `# …`, `/* … */`), optionally `allow(rule-id, …)`, on the
//! line of a finding or the line just above accepts it.

use crate::Rule;

pub(crate) const MARKER: &str = "cutover-lint:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Allowed {
    Everything,
    Rules(Vec<String>),
}

/// One comment that accepts findings, by its (1-based) first and last line.
#[derive(Debug, Clone)]
pub(crate) struct Allow {
    pub first_line: usize,
    pub last_line: usize,
    pub allowed: Allowed,
}

impl Allow {
    /// Reads a comment's text; `None` unless it says `cutover-lint: allow…`.
    pub fn parse(comment: &str, first_line: usize, last_line: usize) -> Option<Allow> {
        let at = comment.find(MARKER)?;
        let rest = comment[at + MARKER.len()..].trim_start();
        let rest = rest.strip_prefix("allow")?;
        let allowed = match rest.trim_start().strip_prefix('(') {
            Some(list) => {
                let list = &list[..list.find(')')?];
                Allowed::Rules(
                    list.split(',')
                        .map(|id| id.trim().to_string())
                        .filter(|id| !id.is_empty())
                        .collect(),
                )
            }
            // `allowed` or `allowance` is not the marker.
            None if rest.starts_with(|c: char| c.is_alphanumeric() || c == '-') => return None,
            None => Allowed::Everything,
        };
        Some(Allow {
            first_line,
            last_line,
            allowed,
        })
    }

    /// Whether this comment accepts `rule` for a construct spanning `first..=last`.
    pub fn covers(&self, rule: Rule, first: usize, last: usize) -> bool {
        let placed = (first..=last).contains(&self.first_line) || self.last_line + 1 == first;
        placed
            && match &self.allowed {
                Allowed::Everything => true,
                Allowed::Rules(ids) => ids.iter().any(|id| id == rule.id()),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_marker_in_any_comment_style() {
        for text in [
            "// cutover-lint: allow",
            "# cutover-lint: allow",
            "/* cutover-lint: allow */",
            "//cutover-lint:allow -- config outside the deploy path",
        ] {
            let allow = Allow::parse(text, 3, 3).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(allow.allowed, Allowed::Everything, "{text}");
        }
        let allow = Allow::parse("// cutover-lint: allow(absolute-path, relative-path)", 1, 1);
        assert_eq!(
            allow.map(|a| a.allowed),
            Some(Allowed::Rules(vec![
                "absolute-path".into(),
                "relative-path".into()
            ]))
        );
        assert!(Allow::parse("// allow everything", 1, 1).is_none());
        assert!(Allow::parse("// cutover-lint: allowed", 1, 1).is_none());
        assert!(Allow::parse("// cutover-lint: deny", 1, 1).is_none());
    }

    #[test]
    fn covers_its_own_line_and_the_next_only() {
        let allow = Allow::parse("// cutover-lint: allow(absolute-path)", 4, 4).unwrap();
        assert!(allow.covers(Rule::AbsolutePath, 4, 4));
        assert!(allow.covers(Rule::AbsolutePath, 5, 6));
        assert!(!allow.covers(Rule::AbsolutePath, 6, 6));
        assert!(!allow.covers(Rule::AbsolutePath, 3, 3));
        assert!(!allow.covers(Rule::RelativePath, 5, 5));
    }
}
