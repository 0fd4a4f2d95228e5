//! The kv protocol and the v1 store behind `kv`, `kv-buggy`, `kv-slow`, `kv-placebo`,
//! `kv-badmigrate` and `kv-hostile`. `kv-v2` shares only the protocol. Also the 64-bit FNV-1a
//! hash by which the test variants pick the keys they get wrong ([`fnv1a`]).
//!
//! The protocol's types ([`KvMsg`], [`KvReply`], [`Entry`]) and the hash live in
//! `arbor-protocols` (`modules/protocols`), shared with the host, whose `kv` module has the
//! message table; they are re-exported here for the kv agents.
//!
//! v1 state: the map itself, `{<key>: <value>, ...}` in key order.

use std::collections::BTreeMap;

pub use arbor_protocols::kv::{KvEntry as Entry, KvMsg, KvReply};
pub use arbor_protocols::{FNV1A_OFFSET, fnv1a, fnv1a_extend};
use serde::{Deserialize, Serialize};

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
