//! The two identifiers other crates share with the vault: [`AgentId`] and [`ModuleHash`].

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// An agent's name: non-empty, at most [`AgentId::MAX_LEN`] bytes of UTF-8, no NUL.
///
/// NUL is refused because the checkpoint keys separate the agent id from the LSN with a 0x00
/// byte: with no NUL inside an id, no agent's keys can fall inside another agent's key range, even
/// when one id is a prefix of the other (`kv` and `kv-1`).
///
/// ```
/// use arbor_vault::AgentId;
///
/// let id = AgentId::new("counter-1")?;
/// assert_eq!(id.as_str(), "counter-1");
/// assert!(AgentId::new("").is_err());
/// assert!(AgentId::new("a\0b").is_err());
/// # Ok::<(), arbor_vault::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(String);

impl AgentId {
    /// The longest id accepted, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates `id` as an agent id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > Self::MAX_LEN {
            Some("it is longer than 255 bytes")
        } else if id.contains('\0') {
            Some("it contains a nul byte")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidAgentId { id, reason }),
            None => Ok(Self(id)),
        }
    }

    /// Validates raw bytes (a key read back from disk) as an agent id.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::new(s),
            Err(_) => Err(Error::InvalidAgentId {
                id: String::from_utf8_lossy(bytes).into_owned(),
                reason: "it is not utf-8",
            }),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's bytes, as they appear in keys.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({:?})", self.0)
    }
}

impl FromStr for AgentId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for AgentId {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for AgentId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl AsRef<str> for AgentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for AgentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(s).map_err(de::Error::custom)
    }
}

/// The content hash of a Wasm module: the 32-byte BLAKE3 digest of its bytes. Displayed and
/// parsed as 64 lowercase hex digits.
///
/// ```
/// use arbor_vault::ModuleHash;
///
/// let hash = ModuleHash::of(b"\0asm\x01\0\0\0");
/// let text = hash.to_string();
/// assert_eq!(text.len(), 64);
/// assert_eq!(text.parse::<ModuleHash>()?, hash);
/// # Ok::<(), arbor_vault::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleHash([u8; 32]);

impl ModuleHash {
    /// Wraps a digest computed elsewhere.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The BLAKE3 hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The digest's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(12);
        s
    }
}

impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleHash({self})")
    }
}

impl FromStr for ModuleHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidModuleHash {
            input: s.chars().take(80).collect(),
        };
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(invalid)?;
            let lo = hex_value(pair[1]).ok_or_else(invalid)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Serialized as 32 raw bytes (MessagePack `bin`); accepts bytes, a sequence of 32 numbers, or
/// the hex string (for human-readable formats) when reading.
impl Serialize for ModuleHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ModuleHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HashVisitor;

        impl<'de> Visitor<'de> for HashVisitor {
            type Value = ModuleHash;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes or 64 hex digits")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ModuleHash, E> {
                <[u8; 32]>::try_from(v)
                    .map(ModuleHash)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ModuleHash, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ModuleHash, A::Error> {
                let mut out = [0u8; 32];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(de::Error::invalid_length(33, &self));
                }
                Ok(ModuleHash(out))
            }
        }

        deserializer.deserialize_any(HashVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_rules() {
        assert!(AgentId::new("a").is_ok());
        assert!(AgentId::new("x".repeat(255)).is_ok());
        assert!(AgentId::new("x".repeat(256)).is_err());
        assert!(AgentId::new("").is_err());
        assert!(AgentId::new("nul\0inside").is_err());
        assert!(AgentId::from_bytes(&[0xff, 0xfe]).is_err());
        let err = AgentId::new("").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("invalid agent id \"\": it is empty"));
    }

    #[test]
    fn module_hash_hex_round_trip() {
        let hash = ModuleHash::of(b"some bytes");
        let text = hash.to_string();
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<ModuleHash>().ok(), Some(hash));
        assert_eq!(text.to_uppercase().parse::<ModuleHash>().ok(), Some(hash));
        assert!(text[..63].parse::<ModuleHash>().is_err());
        assert!(format!("{}g", &text[..63]).parse::<ModuleHash>().is_err());
    }

    #[test]
    fn ids_round_trip_through_messagepack() {
        let hash = ModuleHash::of(b"m");
        let id = AgentId::new("agent-7").unwrap_or_else(|e| panic!("{e}"));
        let bytes = rmp_serde::to_vec_named(&(id.clone(), hash)).unwrap_or_default();
        // 32 raw bytes (bin8 header of 2 bytes), not an array of numbers.
        assert!(bytes.len() < 1 + 8 + 34 + 2);
        let back: (AgentId, ModuleHash) =
            rmp_serde::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, (id, hash));
        // An invalid id inside a record is refused on the way in.
        let bad = rmp_serde::to_vec(&"").unwrap_or_default();
        assert!(rmp_serde::from_slice::<AgentId>(&bad).is_err());
    }
}
