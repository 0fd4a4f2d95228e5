//! The variants' behaviour as plain functions of the variant, so native tests can run every one
//! (they cannot patch a module's bytes): [`handle_as`], [`snapshot_as`], [`restore_as`], and the
//! rules that say which inputs each defect hits.

use std::collections::BTreeMap;
use std::hint::black_box;

use arbor_guest::{decode, encode};
use kv_store::{Entry, KvMsg, KvReply, Store, fnv1a, fnv1a_extend};
use serde::{Deserialize, Serialize};

use crate::Variant;

/// `LossyLongValues` drops, when migrating kv's state, every entry whose value is longer than
/// this many bytes.
pub const LONG_VALUE_BYTES: usize = 16;
/// `LossyKeys` drops, when migrating kv's state, every entry whose key's FNV-1a hash is a
/// multiple of this.
pub const LOSSY_KEY_DIVISOR: u64 = 3;
/// `RarePrefix` answers nil to `Get` of keys starting with this.
pub const RARE_PREFIX: &str = "zz";
/// `RareTrap` traps on a `Put` whose key-then-value FNV-1a hash is a multiple of this.
pub const TRAP_DIVISOR: u64 = 500;
/// `Spiky` spikes on inputs whose key (`Scan`: prefix) FNV-1a hash is a multiple of this.
pub const SPIKE_DIVISOR: u64 = 10;
/// `Spiky` redoes kv's walk for a spiking `Get` this many more times (so it walks 10 times).
pub const SPIKE_REPEATS: u32 = 9;
/// `Spiky`'s extra cost for a spiking input, as a multiple of kv's estimated cost for it.
pub const SPIKE_FACTOR: u64 = 9;
/// Busy-loop rounds costing about what kv spends on any message besides its store work
/// (decoding, encoding, buffers): some 7,000 fuel.
pub const KV_MESSAGE_ROUNDS: u64 = 290;
/// Busy-loop rounds costing about what kv spends on a whole `Put`, or a `Delete` of a present
/// key, over 1,000 keys: some 14,000 fuel.
pub const KV_WRITE_ROUNDS: u64 = 560;
/// Busy-loop rounds costing about what kv's `Scan` spends per stored key (it copies the whole
/// store): some 1,350 fuel.
pub const KV_SCAN_ROUNDS_PER_KEY: u64 = 54;
/// `CostlyScan` adds this share of kv's estimated `Scan` cost, in percent.
pub const SCAN_EXTRA_PERCENT: u64 = 30;
/// `MemoryProbe` tries to grow its linear memory to this many bytes in total.
pub const PROBE_BYTES: usize = 96 << 20;
/// `Aging` answers like kv for this many messages per instance.
pub const AGING_CALLS: u64 = 3_000;
/// What `AllWrong` answers to `Get`.
pub const WRONG: &str = "wrong";

/// The layout version `LossyLongValues` and `LossyKeys` write, as kv-v2 does.
pub const V2_VERSION: u32 = 2;

/// What one instance of the module remembers outside the agent's state, for its lifetime: not
/// snapshotted, not reset by a restore, back to [`Instance::new`] in a fresh instance. The
/// exported agent keeps it in module globals; native tests pass their own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Instance {
    /// Messages this instance has handled (`Aging` counts them).
    pub handled: u64,
    /// `MemoryProbe`'s finding once it has probed: whether memory grew to [`PROBE_BYTES`].
    /// Natively there is no linear memory to grow and the probe finds `false`; tests set it.
    pub big_memory: Option<bool>,
}

impl Instance {
    /// A fresh instance: nothing handled, nothing probed.
    pub const fn new() -> Instance {
        Instance {
            handled: 0,
            big_memory: None,
        }
    }
}

/// Handles `msg` as `variant` does, on kv's store: first the defects that answer instead of kv,
/// trap or add cost, then kv's own work, whose answer `AllWrong` falsifies.
///
/// # Panics
/// `RareTrap` panics (traps, in Wasm) on a `Put` that [`traps_on_put`]: that is its defect.
pub fn handle_as(
    variant: Variant,
    instance: &mut Instance,
    store: &mut Store,
    msg: KvMsg,
) -> KvReply {
    instance.handled = instance.handled.saturating_add(1);
    if let Some(reply) = answer_instead(variant, instance, store, &msg) {
        return reply;
    }
    if variant != Variant::AllWrong {
        return store.apply(msg);
    }
    let prefix = match &msg {
        KvMsg::Scan { prefix, .. } => prefix.clone(),
        _ => String::new(),
    };
    falsify(store.apply(msg), prefix)
}

/// The defects that act before kv's work: an answer of their own, a trap, or extra cost (then
/// `None`, and kv's work goes ahead).
///
/// The extra cost never allocates: the allocator's state, and with it the cost of every later
/// message, stays exactly as under kv.
fn answer_instead(
    variant: Variant,
    instance: &mut Instance,
    store: &Store,
    msg: &KvMsg,
) -> Option<KvReply> {
    let nil = Some(KvReply::Value { value: None });
    match (variant, msg) {
        (Variant::RarePrefix, KvMsg::Get { key }) if key.starts_with(RARE_PREFIX) => nil,
        (Variant::RareTrap, KvMsg::Put { key, value }) if traps_on_put(key, value) => {
            panic!("kv-hostile RareTrap: Put of {key:?} hits the 1-in-{TRAP_DIVISOR} trap")
        }
        (Variant::CostlyScan, KvMsg::Scan { .. }) => {
            let rounds = kv_scan_rounds(store.entries().len()) * SCAN_EXTRA_PERCENT / 100;
            black_box(burn(rounds));
            None
        }
        (Variant::Spiky, msg) if is_spiky(msg) => {
            spike(store, msg);
            None
        }
        (Variant::MemoryProbe, msg) => {
            let big_memory = *instance.big_memory.get_or_insert_with(probe_memory);
            if big_memory && matches!(msg, KvMsg::Get { .. }) {
                nil
            } else {
                None
            }
        }
        (Variant::Aging, KvMsg::Get { .. }) if instance.handled > AGING_CALLS => nil,
        _ => None,
    }
}

/// `Spiky`'s extra work for a spiking input: about [`SPIKE_FACTOR`] times kv's cost for it. A
/// `Get` redoes kv's walk to the key ([`SPIKE_REPEATS`] times) and burns the rest, as its cost
/// depends on where the key is; the others only burn, by kv's estimated cost. Over 100 to 3,000
/// keys that comes to 8.7x to 12.3x kv's fuel, by kind.
fn spike(store: &Store, msg: &KvMsg) {
    let rounds = match msg {
        KvMsg::Get { key } => {
            for _ in 0..SPIKE_REPEATS {
                // kv's own walk (`Store::apply`), hidden from the optimiser each time.
                let entries = black_box(store.entries());
                black_box(entries.iter().find(|(candidate, _)| *candidate == key));
            }
            KV_MESSAGE_ROUNDS
        }
        KvMsg::Put { .. } => KV_WRITE_ROUNDS,
        // A Delete that finds nothing changes nothing: kv spends little more than on any message.
        KvMsg::Delete { key } if !store.entries().contains_key(key) => KV_MESSAGE_ROUNDS,
        KvMsg::Delete { .. } => KV_WRITE_ROUNDS,
        KvMsg::Scan { .. } => kv_scan_rounds(store.entries().len()),
    };
    black_box(burn(rounds.saturating_mul(SPIKE_FACTOR)));
}

/// `variant`'s state bytes for `store`: kv's bare map, or kv-v2's layout for the variants that
/// [`Variant::has_v2_layout`].
pub fn snapshot_as(variant: Variant, store: &Store) -> Result<Vec<u8>, String> {
    if variant.has_v2_layout() {
        encode(&V2Ref {
            version: V2_VERSION,
            entries: store.entries(),
        })
    } else {
        encode(store)
    }
}

/// Reads state as `variant` does. kv's layout variants accept only kv's bare map, as kv does.
/// The kv-v2 layout variants accept their own layout whole and migrate kv's, losing the entries
/// [`lost_in_migration`] names.
pub fn restore_as(variant: Variant, state: &[u8]) -> Result<Store, String> {
    if !variant.has_v2_layout() {
        return decode(state);
    }
    let v2_err = match decode::<V2>(state) {
        Ok(v2) if v2.version == V2_VERSION => return Ok(Store::from(v2.entries)),
        Ok(other) => return Err(format!("unknown kv state version {}", other.version)),
        Err(err) => err,
    };
    match decode::<BTreeMap<String, String>>(state) {
        Ok(mut entries) => {
            entries.retain(|key, value| !lost_in_migration(variant, key, value));
            Ok(Store::from(entries))
        }
        Err(v1_err) => Err(format!(
            "neither kv v2 state ({v2_err}) nor kv v1 state ({v1_err})"
        )),
    }
}

/// Whether `variant`'s migration from kv's state drops the entry `key` → `value`.
pub fn lost_in_migration(variant: Variant, key: &str, value: &str) -> bool {
    match variant {
        Variant::LossyLongValues => value.len() > LONG_VALUE_BYTES,
        Variant::LossyKeys => fnv1a(key).is_multiple_of(LOSSY_KEY_DIVISOR),
        _ => false,
    }
}

/// Whether `RareTrap` traps on `Put` of `key` → `value`: the FNV-1a hash of the key's bytes
/// followed by the value's is a multiple of [`TRAP_DIVISOR`].
pub fn traps_on_put(key: &str, value: &str) -> bool {
    fnv1a_extend(fnv1a(key), value.as_bytes()).is_multiple_of(TRAP_DIVISOR)
}

/// Whether `Spiky` spikes on `msg`: its key's (a `Scan`'s prefix's) FNV-1a hash is a multiple
/// of [`SPIKE_DIVISOR`].
pub fn is_spiky(msg: &KvMsg) -> bool {
    let text = match msg {
        KvMsg::Get { key } | KvMsg::Put { key, .. } | KvMsg::Delete { key } => key,
        KvMsg::Scan { prefix, .. } => prefix,
    };
    fnv1a(text).is_multiple_of(SPIKE_DIVISOR)
}

/// Busy-loop rounds costing about what kv's `Scan` of a store of `keys` keys costs.
pub fn kv_scan_rounds(keys: usize) -> u64 {
    let keys = u64::try_from(keys).unwrap_or(u64::MAX);
    KV_MESSAGE_ROUNDS.saturating_add(keys.saturating_mul(KV_SCAN_ROUNDS_PER_KEY))
}

/// Deterministic busy work: `rounds` steps of a multiply-xorshift, each hidden from the
/// optimiser so the loop cannot be dropped or shortened. About 25 fuel a round in wasmtime.
pub fn burn(rounds: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..rounds {
        x = black_box((x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ round);
    }
    x
}

/// `AllWrong`: kv's `reply` (to a `Scan` of `prefix`, if it is one), made wrong without
/// changing its type.
fn falsify(reply: KvReply, prefix: String) -> KvReply {
    match reply {
        // A stored value that is itself "wrong" would make "wrong" right: answer nil then.
        KvReply::Value { value } if value.as_deref() == Some(WRONG) => {
            KvReply::Value { value: None }
        }
        KvReply::Value { .. } => KvReply::Value {
            value: Some(WRONG.to_owned()),
        },
        KvReply::Stored { replaced } => KvReply::Stored {
            replaced: !replaced,
        },
        KvReply::Deleted { existed } => KvReply::Deleted { existed: !existed },
        // Where kv's answer is empty, empty would be right: invent an entry (ignoring `limit`).
        KvReply::Entries { entries } if entries.is_empty() => KvReply::Entries {
            entries: vec![Entry {
                key: prefix,
                value: WRONG.to_owned(),
            }],
        },
        KvReply::Entries { .. } => KvReply::Entries {
            entries: Vec::new(),
        },
    }
}

/// `MemoryProbe`'s probe: grows linear memory to [`PROBE_BYTES`] in one `memory.grow`, which
/// the host either grants whole or refuses (-1) leaving memory as it was.
///
/// The grown pages are never touched, so they cost the host address space but no resident
/// memory. The SDK's allocator (std's dlmalloc) does not mind: it does not assume memory ends
/// where its own last grow did, and its next grow starts above these pages, as a new segment.
#[cfg(target_arch = "wasm32")]
fn probe_memory() -> bool {
    use core::arch::wasm32::{memory_grow, memory_size};
    const PAGE_BYTES: usize = 64 << 10;
    let want = PROBE_BYTES / PAGE_BYTES;
    let have = memory_size(0);
    have >= want || memory_grow(0, want - have) != usize::MAX
}

/// Natively there is no linear memory to grow: the probe always finds a small cap.
#[cfg(not(target_arch = "wasm32"))]
fn probe_memory() -> bool {
    false
}

/// kv-v2's layout, as read.
#[derive(Deserialize)]
struct V2 {
    version: u32,
    entries: BTreeMap<String, String>,
}

/// kv-v2's layout, as written (borrowing the entries).
#[derive(Serialize)]
struct V2Ref<'a> {
    version: u32,
    entries: &'a BTreeMap<String, String>,
}
