//! The kv protocol and the v1 store behind `kv`, `kv-buggy`, `kv-slow`, `kv-placebo`,
//! `kv-badmigrate` and `kv-hostile`. `kv-v2` shares only the protocol. Also the 64-bit FNV-1a
//! hash by which the test variants pick the keys they get wrong ([`fnv1a`]).
//!
//! | message (MessagePack, named)                              | reply                                  |
//! |-----------------------------------------------------------|----------------------------------------|
//! | `{"Get": {"key": <str>}}`                                 | `{"Value": {"value": <str or nil>}}`   |
//! | `{"Put": {"key": <str>, "value": <str>}}`                 | `{"Stored": {"replaced": <bool>}}`     |
//! | `{"Delete": {"key": <str>}}`                              | `{"Deleted": {"existed": <bool>}}`     |
//! | `{"Scan": {"prefix": <str>, "limit": <u32>}}`             | `{"Entries": {"entries": [{"key": <str>, "value": <str>}, ...]}}`: the first `limit` entries whose key starts with `prefix`, in key order |
//!
//! v1 state: the map itself, `{<key>: <value>, ...}` in key order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// FNV-1a's 64-bit offset basis: the hash of no bytes, where [`fnv1a_extend`] starts.
pub const FNV1A_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `key`'s UTF-8 bytes. The host's `arbor_modules::fnv1a` is the same function,
/// so host tests can predict which inputs a test variant gets wrong.
pub fn fnv1a(key: &str) -> u64 {
    fnv1a_extend(FNV1A_OFFSET, key.as_bytes())
}

/// Continues a 64-bit FNV-1a `hash` over `bytes`: hashing `a` then `b` gives the hash of their
/// concatenation, without building it.
pub fn fnv1a_extend(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What every kv version accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvMsg {
    /// Read one key.
    Get {
        /// The key.
        key: String,
    },
    /// Write one key.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Remove one key.
    Delete {
        /// The key.
        key: String,
    },
    /// List entries by key prefix, in key order.
    Scan {
        /// Keys must start with this (empty: every key).
        prefix: String,
        /// At most this many entries.
        limit: u32,
    },
}

/// What every kv version answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// To `Get`.
    Value {
        /// The value, or nil when the key is absent.
        value: Option<String>,
    },
    /// To `Put`.
    Stored {
        /// Whether the key had a value before.
        replaced: bool,
    },
    /// To `Delete`.
    Deleted {
        /// Whether the key had a value.
        existed: bool,
    },
    /// To `Scan`.
    Entries {
        /// The matching entries, in key order.
        entries: Vec<Entry>,
    },
}

/// One key and its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// The v1 store. Its encoding is the bare map (`transparent`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Store {
    entries: BTreeMap<String, String>,
}

impl From<BTreeMap<String, String>> for Store {
    fn from(entries: BTreeMap<String, String>) -> Store {
        Store { entries }
    }
}

impl Store {
    /// The store's entries.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.entries
    }

    /// Applies one message.
    ///
    /// v1 is written naively, on purpose, so that kv-v2 has something to improve: `Get` walks
    /// the map from the first key (O(n)), `Put` and `Delete` look the key up before changing it
    /// (two descents instead of one), and `Scan` copies the whole map and then walks it from the
    /// first key (O(n) allocations). kv-v2 gives the same answers with direct lookups and a
    /// range seek, so it costs less fuel for every kind of message.
    pub fn apply(&mut self, msg: KvMsg) -> KvReply {
        match msg {
            KvMsg::Get { key } => KvReply::Value {
                value: self
                    .entries
                    .iter()
                    .find(|(candidate, _)| **candidate == key)
                    .map(|(_, value)| value.clone()),
            },
            KvMsg::Put { key, value } => {
                let replaced = self.entries.contains_key(&key);
                self.entries.insert(key, value);
                KvReply::Stored { replaced }
            }
            KvMsg::Delete { key } => {
                let existed = self.entries.contains_key(&key);
                if existed {
                    self.entries.remove(&key);
                }
                KvReply::Deleted { existed }
            }
            KvMsg::Scan { prefix, limit } => {
                let everything: Vec<(String, String)> = self.entries.clone().into_iter().collect();
                let entries = everything
                    .into_iter()
                    .filter(|(key, _)| key.starts_with(&prefix))
                    .take(limit as usize)
                    .map(|(key, value)| Entry { key, value })
                    .collect();
                KvReply::Entries { entries }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // From the FNV reference test suite; `arbor_modules` checks the same three.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fnv1a_extend_continues_over_a_concatenation() {
        assert_eq!(fnv1a_extend(fnv1a("foo"), b"bar"), fnv1a("foobar"));
        assert_eq!(fnv1a_extend(fnv1a("foobar"), b""), fnv1a("foobar"));
    }
}
