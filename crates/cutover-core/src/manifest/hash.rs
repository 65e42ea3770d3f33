//! A file's content hash: 32 bytes of blake3, hex where people or JSON see it.

use std::fmt;
use std::fs::File;
use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{IoContext, Result};

/// Bytes, not a hex string: 20,000 of them are compared, hashed and stored per deploy.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    pub fn of_file(path: &Path) -> Result<Self> {
        let mut hasher = blake3::Hasher::new();
        let file = File::open(path).ctx("open", path)?;
        hasher.update_reader(file).ctx("read", path)?;
        Ok(hasher.into())
    }

    /// 64 hex digits, either case; anything else is `None`.
    pub fn from_hex(text: &str) -> Option<Self> {
        blake3::Hash::from_hex(text)
            .ok()
            .map(|h| ContentHash(*h.as_bytes()))
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hasher> for ContentHash {
    fn from(hasher: blake3::Hasher) -> Self {
        ContentHash(*hasher.finalize().as_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// Hex in JSON (the protocol, `--json`), the raw 32 bytes in the stored manifest.
impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            ContentHash::from_hex(&text)
                .ok_or_else(|| D::Error::custom(format!("{text:?} is not a blake3 hash")))
        } else {
            <[u8; 32]>::deserialize(deserializer).map(ContentHash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_junk_is_refused() {
        let hash = ContentHash::of_bytes(b"<?php echo 1;");
        assert_eq!(ContentHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(
            ContentHash::from_hex(&hash.to_hex().to_uppercase()),
            Some(hash)
        );
        for junk in ["", "0", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            assert_eq!(ContentHash::from_hex(junk), None, "{junk:?}");
        }
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{}\"", hash.to_hex()));
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), hash);
        assert!(serde_json::from_str::<ContentHash>("\"abc\"").is_err());
        let bytes = postcard::to_stdvec(&hash).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(postcard::from_bytes::<ContentHash>(&bytes).unwrap(), hash);
    }
}
