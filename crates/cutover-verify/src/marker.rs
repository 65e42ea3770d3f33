//! Which release produced a page.

use cutover_core::ReleaseId;

use crate::Error;

/// What a page's markers named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    A,
    B,
    Mixed,
    Neither,
}

/// Which release produced (parts of) a page: matches of a regex, group 1 if it has one.
#[derive(Debug)]
pub struct Marker {
    pattern: regex::Regex,
    a: String,
    b: String,
}

impl Marker {
    /// `custom`, or by default the two release ids as words.
    pub fn new(custom: Option<&str>, a: &ReleaseId, b: &ReleaseId) -> Result<Marker, Error> {
        let text = match custom {
            Some(text) => text.to_string(),
            None => format!(
                r"\b({}|{})\b",
                regex::escape(a.as_str()),
                regex::escape(b.as_str())
            ),
        };
        let pattern = regex::Regex::new(&text).map_err(|source| Error::BadMarker {
            pattern: text.clone(),
            source,
        })?;
        Ok(Marker {
            pattern,
            a: a.to_string(),
            b: b.to_string(),
        })
    }

    pub(crate) fn classify(&self, body: &str) -> Served {
        let (mut a, mut b) = (false, false);
        for found in self.pattern.captures_iter(body) {
            let Some(name) = found.get(1).or_else(|| found.get(0)) else {
                continue;
            };
            a |= name.as_str() == self.a;
            b |= name.as_str() == self.b;
        }
        match (a, b) {
            (true, true) => Served::Mixed,
            (true, false) => Served::A,
            (false, true) => Served::B,
            (false, false) => Served::Neither,
        }
    }
}

#[cfg(test)]
mod tests {
    use cutover_core::ReleaseId;

    use super::{Marker, Served};
    use crate::Error;

    fn marker(custom: Option<&str>) -> Marker {
        let (a, b) = (
            ReleaseId::parse("v1").unwrap(),
            ReleaseId::parse("v2").unwrap(),
        );
        Marker::new(custom, &a, &b).unwrap()
    }

    #[test]
    fn by_default_the_release_ids_as_words_name_the_release() {
        let marker = marker(None);
        assert_eq!(marker.classify("<p>v1 v1</p>"), Served::A);
        assert_eq!(marker.classify("v2\n"), Served::B);
        assert_eq!(marker.classify("v1 v2"), Served::Mixed);
        assert_eq!(marker.classify("v10 xv2 v2x"), Served::Neither);
        assert_eq!(marker.classify(""), Served::Neither);
    }

    #[test]
    fn a_custom_marker_names_the_release_with_its_first_group() {
        let marker = marker(Some(r"release=(\S+)"));
        assert_eq!(marker.classify("release=v2 v1"), Served::B);
        assert_eq!(marker.classify("release=v1 release=v2"), Served::Mixed);
        assert_eq!(marker.classify("release=v3"), Served::Neither);
        // Without a group the whole match names it.
        assert_eq!(self::marker(Some("v[12]")).classify("v1"), Served::A);
    }

    #[test]
    fn a_marker_that_is_no_regex_is_refused() {
        let (a, b) = (
            ReleaseId::parse("v1").unwrap(),
            ReleaseId::parse("v2").unwrap(),
        );
        let error = Marker::new(Some("release=("), &a, &b).unwrap_err();
        assert!(matches!(error, Error::BadMarker { .. }), "{error:?}");
    }
}
