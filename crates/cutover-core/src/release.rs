//! Release ids: directory names under `releases/`, so they must be safe path components.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Error, Result};

/// Deserializing checks the id like `parse`: ids also arrive from remote agents and from
/// history files, and one with a `/` must never become a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ReleaseId(String);

impl TryFrom<String> for ReleaseId {
    type Error = Error;
    fn try_from(id: String) -> Result<Self> {
        ReleaseId::parse(&id)
    }
}

impl From<ReleaseId> for String {
    fn from(id: ReleaseId) -> String {
        id.0
    }
}

impl ReleaseId {
    pub fn parse(id: &str) -> Result<Self> {
        let unsafe_id = |reason| Error::UnsafeReleaseId {
            id: id.to_string(),
            reason,
        };
        if id.is_empty() {
            return Err(unsafe_id("it is empty"));
        }
        if id.len() > 128 {
            return Err(unsafe_id("it is longer than 128 characters"));
        }
        if id.starts_with('.') {
            return Err(unsafe_id("it starts with `.` (hidden, or `..`)"));
        }
        if id.contains('/') || id.contains('\\') {
            return Err(unsafe_id("it contains a path separator"));
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(unsafe_id(
                "it contains characters other than letters, digits, `.`, `_` and `-`",
            ));
        }
        Ok(ReleaseId(id.to_string()))
    }

    /// Capistrano's id format (UTC `YYYYmmddHHMMSS`), so a path shared with Capistrano sorts the same.
    pub fn timestamp(now: time::OffsetDateTime) -> Self {
        let now = now.to_offset(time::UtcOffset::UTC);
        ReleaseId(format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        ))
    }

    pub fn with_suffix(&self, n: u32) -> Self {
        ReleaseId(format!("{}-{n}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Deploy order: digit runs compare as numbers, so Deployer's `9` < `10` and Capistrano's
/// timestamps both sort by age, and `20240101120000-2` follows `20240101120000`.
impl Ord for ReleaseId {
    fn cmp(&self, other: &Self) -> Ordering {
        // Tie-break on the bytes so `007` and `7` stay distinct, as Eq says they are.
        natural_cmp(&self.0, &other.0).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for ReleaseId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_unsafe_ids() {
        for bad in [
            "", "..", ".hidden", "a/b", "../x", "a b", "x\0y", "über", "a\\b",
        ] {
            assert!(ReleaseId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["20240101120000", "1", "v2.3.1", "2024-05-01_hotfix"] {
            assert_eq!(ReleaseId::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn sorts_numbers_numerically() {
        let mut ids: Vec<_> = [
            "10",
            "9",
            "20240101120000-2",
            "20240101120000",
            "100",
            "a2",
            "a10",
        ]
        .iter()
        .map(|s| ReleaseId::parse(s).unwrap())
        .collect();
        ids.sort();
        let names: Vec<_> = ids.iter().map(ReleaseId::as_str).collect();
        assert_eq!(
            names,
            [
                "9",
                "10",
                "100",
                "20240101120000",
                "20240101120000-2",
                "a2",
                "a10"
            ]
        );
    }

    #[test]
    fn timestamp_is_capistrano_format() {
        let t = time::macros::datetime!(2024-03-05 07:08:09 UTC);
        assert_eq!(ReleaseId::timestamp(t).as_str(), "20240305070809");
    }

    proptest! {
        #[test]
        fn parsed_ids_are_single_safe_components(s in "\\PC{0,40}") {
            if let Ok(id) = ReleaseId::parse(&s) {
                let path = std::path::Path::new(id.as_str());
                prop_assert_eq!(path.components().count(), 1);
                prop_assert!(matches!(path.components().next(), Some(std::path::Component::Normal(_))));
            }
        }

        #[test]
        fn natural_order_is_total(a in "[a-z0-9.-]{1,12}", b in "[a-z0-9.-]{1,12}") {
            prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
        }
    }
}
