//! `kv-v2`: kv rewritten. Same protocol and the same answer to every input as kv, but:
//!
//! - `Scan` seeks to the prefix with a range query and stops at the first key past it, instead
//!   of copying and walking the whole map: O(log n + limit) instead of O(n);
//! - its state layout is new, `{"version": 2, "entries": {<key>: <value>, ...}}`, and its
//!   `restore` migrates kv's layout (the bare map) as well as reading its own.

use std::collections::BTreeMap;
use std::ops::Bound;

use arbor_guest::{Agent, Ctx, decode};
use kv_store::{Entry, KvMsg, KvReply};
use serde::{Deserialize, Serialize};

/// The layout version this build writes.
pub const STATE_VERSION: u32 = 2;

/// The v2 agent and its state layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvV2 {
    /// Always [`STATE_VERSION`]; a restore refuses any other.
    pub version: u32,
    /// The entries.
    pub entries: BTreeMap<String, String>,
}

impl Default for KvV2 {
    fn default() -> Self {
        KvV2 {
            version: STATE_VERSION,
            entries: BTreeMap::new(),
        }
    }
}

impl Agent for KvV2 {
    type Msg = KvMsg;
    type Reply = KvReply;

    fn handle(&mut self, msg: KvMsg, _ctx: &mut Ctx) -> KvReply {
        match msg {
            KvMsg::Get { key } => KvReply::Value {
                value: self.entries.get(&key).cloned(),
            },
            KvMsg::Put { key, value } => KvReply::Stored {
                replaced: self.entries.insert(key, value).is_some(),
            },
            KvMsg::Delete { key } => KvReply::Deleted {
                existed: self.entries.remove(&key).is_some(),
            },
            KvMsg::Scan { prefix, limit } => {
                let from = (Bound::Included(prefix.as_str()), Bound::Unbounded);
                let entries = self
                    .entries
                    .range::<str, _>(from)
                    .take_while(|(key, _)| key.starts_with(&prefix))
                    .take(limit as usize)
                    .map(|(key, value)| Entry {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect();
                KvReply::Entries { entries }
            }
        }
    }

    /// Reads v2 state, or migrates kv's (v1: the bare map). The two cannot be confused: a v1
    /// map's values are strings, so it never decodes as v2's `version: u32` plus `entries` map.
    fn restore(state: &[u8]) -> Result<Self, String> {
        let v2_err = match decode::<KvV2>(state) {
            Ok(v2) if v2.version == STATE_VERSION => return Ok(v2),
            Ok(other) => return Err(format!("unknown kv state version {}", other.version)),
            Err(err) => err,
        };
        match decode::<BTreeMap<String, String>>(state) {
            Ok(entries) => Ok(KvV2 {
                version: STATE_VERSION,
                entries,
            }),
            Err(v1_err) => Err(format!(
                "neither kv v2 state ({v2_err}) nor kv v1 state ({v1_err})"
            )),
        }
    }
}

arbor_guest::export_agent!(KvV2);
