//! The kv family's protocol (`kv`, `kv-v2`, `kv-buggy`, `kv-slow`, `kv-placebo`,
//! `kv-badmigrate`, `kv-hostile`): every version accepts the same messages and answers with the
//! same kinds. Keys and values are strings.
//!
//! | message | reply |
//! |---|---|
//! | `{"Get": {"key": <str>}}` | `{"Value": {"value": <str or nil>}}` |
//! | `{"Put": {"key": <str>, "value": <str>}}` | `{"Stored": {"replaced": <bool>}}` |
//! | `{"Delete": {"key": <str>}}` | `{"Deleted": {"existed": <bool>}}` |
//! | `{"Scan": {"prefix": <str>, "limit": <u32>}}` | `{"Entries": {"entries": [{"key": <str>, "value": <str>}, ...]}}`: the first `limit` entries whose key starts with `prefix`, in key order |
//!
//! Also [`is_unlucky`], the rule by which kv-buggy goes wrong.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

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

/// What every kv version answers, one kind per message kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// To `Get`.
    Value {
        /// The value, or `None` (nil) when the key is absent.
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
        entries: Vec<KvEntry>,
    },
}

/// One key and its value, in a `Scan`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// Whether kv-buggy answers `Get` of `key` wrongly (nil although present): the key's 64-bit
/// FNV-1a hash ([`crate::fnv1a`]) is divisible by 100, about 1 key in 100.
pub fn is_unlucky(key: &str) -> bool {
    crate::fnv1a(key).is_multiple_of(100)
}

#[cfg(test)]
mod tests {
    use alloc::borrow::ToOwned;
    use alloc::vec;

    use super::*;
    use crate::encode;

    #[test]
    fn the_wire_format_is_pinned() {
        let s = |text: &str| text.to_owned();
        assert_eq!(
            encode(&KvMsg::Put {
                key: s("k"),
                value: s("v")
            }),
            b"\x81\xa3Put\x82\xa3key\xa1k\xa5value\xa1v"
        );
        assert_eq!(
            encode(&KvMsg::Delete { key: s("k") }),
            b"\x81\xa6Delete\x81\xa3key\xa1k"
        );
        assert_eq!(
            encode(&KvMsg::Scan {
                prefix: s(""),
                limit: 3
            }),
            b"\x81\xa4Scan\x82\xa6prefix\xa0\xa5limit\x03"
        );
        assert_eq!(
            encode(&KvReply::Value { value: None }),
            b"\x81\xa5Value\x81\xa5value\xc0"
        );
        assert_eq!(
            encode(&KvReply::Stored { replaced: true }),
            b"\x81\xa6Stored\x81\xa8replaced\xc3"
        );
        assert_eq!(
            encode(&KvReply::Deleted { existed: false }),
            b"\x81\xa7Deleted\x81\xa7existed\xc2"
        );
        assert_eq!(
            encode(&KvReply::Entries {
                entries: vec![KvEntry {
                    key: s("k"),
                    value: s("v")
                }]
            }),
            b"\x81\xa7Entries\x81\xa7entries\x91\x82\xa3key\xa1k\xa5value\xa1v"
        );
    }

    #[test]
    fn about_one_key_in_a_hundred_is_unlucky() {
        let unlucky = (0..10_000)
            .filter(|i| is_unlucky(&alloc::format!("key-{i}")))
            .count();
        assert!((50..=150).contains(&unlucky), "{unlucky} of 10,000");
    }
}
