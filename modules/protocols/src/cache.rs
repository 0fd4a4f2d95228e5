//! `cache`'s protocol: a store of numbered records behind a read cache whose size and policy
//! are the module's parameters (the example of parameter evolution).
//!
//! | message | reply |
//! |---|---|
//! | `{"Put": {"key": <u32>, "value": <str>}}` | `"Stored"` |
//! | `{"Get": {"key": <u32>}}` | `{"Value": {"value": <str>\|nil}}` |
//!
//! The state is the store alone, `{"records": {key: value}}`: the cache is rebuilt by the
//! traffic, so every configuration has the same state and the same answers, and differs only
//! in cost (fuel and memory).
//!
//! The parameters, MessagePack with named fields (absent ones take their defaults):
//! [`CacheParams`].

use alloc::string::String;

use serde::{Deserialize, Serialize};

/// What the cache agent accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheMsg {
    /// Store `value` under `key`.
    Put {
        /// The record's number.
        key: u32,
        /// Its value.
        value: String,
    },
    /// Read `key`.
    Get {
        /// The record's number.
        key: u32,
    },
}

/// The cache agent's answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheReply {
    /// The Put is done.
    Stored,
    /// The value of the key read, nil when absent.
    Value {
        /// The value.
        value: Option<String>,
    },
}

/// Which entry a full cache evicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The least recently used.
    Lru,
    /// The oldest.
    #[default]
    Fifo,
}

/// The module's tunable parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheParams {
    /// Entries the cache holds (0: no cache).
    pub capacity: u32,
    /// What a full cache evicts.
    pub policy: Policy,
    /// A record joins the cache at its n-th miss (1: at once).
    pub admit_after: u32,
}

impl Default for CacheParams {
    fn default() -> CacheParams {
        CacheParams {
            capacity: 4,
            policy: Policy::Fifo,
            admit_after: 1,
        }
    }
}

/// The space of [`CacheParams`] the module declares (`arbor:tunables`).
pub const TUNABLES: &[u8] = br#"[
  {"name": "capacity", "kind": "int", "min": 0, "max": 256},
  {"name": "policy", "kind": "choice", "options": ["lru", "fifo"]},
  {"name": "admit_after", "kind": "int", "min": 1, "max": 3}
]"#;
