//! `cache`: numbered records behind a read cache whose size, eviction policy and admission rule
//! are the module's parameters (protocol and parameters in [`arbor_protocols::cache`]). The
//! example of parameter evolution: every configuration gives the same answers and the same
//! state, and costs differ.
//!
//! Records are kept encoded; reading one from the store decodes it, which costs
//! [`DECODE_ROUNDS`] rounds of mixing, and keeps the decoded copy ([`DECODED_BYTES`]) in the
//! cache. Looking a key up in the cache walks it and compares each entry at [`PROBE_ROUNDS`]
//! rounds. So a small cache misses and decodes often, a large one walks far on every read and
//! holds more memory: fuel per read is lowest at a size between, which depends on the traffic,
//! and memory grows with the size.

use std::collections::BTreeMap;
use std::hint::black_box;

use arbor_guest::{Agent, Ctx, params_as};
use arbor_protocols::cache::{CacheMsg, CacheParams, CacheReply, Policy};
use serde::{Deserialize, Serialize};

/// Mixing rounds to decode a record from the store.
pub const DECODE_ROUNDS: u32 = 2_000;
/// Mixing rounds to compare one cache entry with the key looked up.
pub const PROBE_ROUNDS: u32 = 40;
/// Bytes a decoded record holds in the cache.
pub const DECODED_BYTES: usize = 1_024;

arbor_guest::tunables!(arbor_protocols::cache::TUNABLES);

/// The state is the store alone; the cache is not state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Cache {
    records: BTreeMap<u32, String>,
    #[serde(skip)]
    hot: Option<Hot>,
}

/// The read cache: entries in eviction order (the front goes first).
#[derive(Debug)]
struct Hot {
    params: CacheParams,
    entries: Vec<(u32, Vec<u8>)>,
    /// Misses per key not yet admitted, for `admit_after`; forgotten when it grows past 4,096.
    misses: BTreeMap<u32, u32>,
}

impl Hot {
    fn new() -> Hot {
        // A module whose parameters do not decode must not run as if it had the defaults: the
        // evolution that wrote them would measure a configuration it did not ask for.
        let params = match params_as::<CacheParams>() {
            Ok(params) => params,
            Err(err) => panic!("{err}"),
        };
        Hot {
            params,
            entries: Vec::new(),
            misses: BTreeMap::new(),
        }
    }

    /// The decoded record, if cached; a hit moves it to the back under LRU.
    fn find(&mut self, key: u32) -> Option<&[u8]> {
        let mut found = None;
        for (at, (cached, _)) in self.entries.iter().enumerate() {
            black_box(burn(PROBE_ROUNDS));
            if *cached == key {
                found = Some(at);
                break;
            }
        }
        let at = found?;
        let at = if self.params.policy == Policy::Lru {
            let entry = self.entries.remove(at);
            self.entries.push(entry);
            self.entries.len() - 1
        } else {
            at
        };
        Some(&self.entries[at].1)
    }

    fn admit(&mut self, key: u32, decoded: Vec<u8>) {
        if self.params.capacity == 0 {
            return;
        }
        let seen = self.misses.entry(key).or_insert(0);
        *seen += 1;
        if *seen < self.params.admit_after {
            if self.misses.len() > 4_096 {
                self.misses.clear();
            }
            return;
        }
        self.misses.remove(&key);
        if self.entries.len() >= self.params.capacity as usize {
            self.entries.remove(0);
        }
        self.entries.push((key, decoded));
    }

    fn forget(&mut self, key: u32) {
        self.entries.retain(|(cached, _)| *cached != key);
    }
}

/// The record decoded: its bytes spread over [`DECODED_BYTES`], after the decoding's work.
fn decode_record(value: &str) -> Vec<u8> {
    black_box(burn(DECODE_ROUNDS));
    let mut decoded = vec![0u8; DECODED_BYTES.max(value.len())];
    decoded[..value.len()].copy_from_slice(value.as_bytes());
    decoded
}

/// The value a decoded record holds.
fn value_of(decoded: &[u8], len: usize) -> String {
    String::from_utf8_lossy(&decoded[..len]).into_owned()
}

/// Deterministic busy work, hidden from the optimiser.
fn burn(rounds: u32) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..rounds {
        x = black_box((x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ u64::from(round));
    }
    x
}

impl Agent for Cache {
    type Msg = CacheMsg;
    type Reply = CacheReply;

    fn handle(&mut self, msg: CacheMsg, _ctx: &mut Ctx) -> CacheReply {
        let hot = self.hot.get_or_insert_with(Hot::new);
        match msg {
            CacheMsg::Put { key, value } => {
                hot.forget(key);
                self.records.insert(key, value);
                CacheReply::Stored
            }
            CacheMsg::Get { key } => {
                let Some(record) = self.records.get(&key) else {
                    return CacheReply::Value { value: None };
                };
                let len = record.len();
                if let Some(decoded) = hot.find(key) {
                    return CacheReply::Value {
                        value: Some(value_of(decoded, len)),
                    };
                }
                let decoded = decode_record(record);
                let value = value_of(&decoded, len);
                hot.admit(key, decoded);
                CacheReply::Value { value: Some(value) }
            }
        }
    }
}

arbor_guest::export_agent!(Cache);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arbor_guest::testing::Harness;

    use super::*;

    fn get(cache: &Harness<Cache>, key: u32) -> Option<String> {
        match cache.call(&CacheMsg::Get { key }).unwrap() {
            CacheReply::Value { value } => value,
            CacheReply::Stored => panic!("a Get answered Stored"),
        }
    }

    #[test]
    fn every_configuration_answers_the_same_and_keeps_the_same_state() {
        let mut states = Vec::new();
        for params in [
            CacheParams::default(),
            CacheParams {
                capacity: 0,
                ..CacheParams::default()
            },
            CacheParams {
                capacity: 3,
                policy: Policy::Lru,
                admit_after: 2,
            },
        ] {
            let cache = Harness::<Cache>::new();
            cache.configure(&rmp_serde_encode(&params));
            cache.init(&[]).unwrap();
            for key in 0..10 {
                let _: CacheReply = cache
                    .call(&CacheMsg::Put {
                        key,
                        value: format!("v{key}"),
                    })
                    .unwrap();
            }
            for key in [1, 2, 1, 3, 4, 1, 2, 11, 1] {
                let expected = (key < 10).then(|| format!("v{key}"));
                assert_eq!(get(&cache, key), expected, "{params:?}");
            }
            let _: CacheReply = cache
                .call(&CacheMsg::Put {
                    key: 1,
                    value: "new".into(),
                })
                .unwrap();
            assert_eq!(get(&cache, 1).as_deref(), Some("new"), "{params:?}");
            states.push(cache.snapshot().unwrap());
        }
        assert!(states.windows(2).all(|pair| pair[0] == pair[1]));
    }

    fn rmp_serde_encode(params: &CacheParams) -> Vec<u8> {
        arbor_guest::encode(params).unwrap()
    }
}
