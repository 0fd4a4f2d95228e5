//! `kv-hostile`: a **test fixture** of deliberately defective kv candidates, for testing that the
//! evolution arbiter rejects what it must. It speaks kv's protocol ([`kv_store::KvMsg`] /
//! [`kv_store::KvReply`]) and answers exactly like `kv` except for the one defect of its
//! [`Variant`]. Never deploy it.
//!
//! One build, many modules: the variant is a byte in the module's data (see [`variant`]) that
//! the host patches (`arbor_modules::kv_hostile(Hostile::…)`), so a single LTO build yields one
//! module per variant, each with its own bytes and content hash. As built the byte is 0, `Kv`.
//! Every defect is deterministic: no randomness, no clock.
//!
//! | byte | variant | state layout | what it does wrong | how often |
//! |---|---|---|---|---|
//! | 0 | `Kv` | kv's bare map | nothing: kv's answers, state and fuel (a placebo) | never |
//! | 1 | `LossyLongValues` | kv-v2's `{"version": 2, "entries": {..}}` | migrating kv's state drops every entry whose value is longer than 16 bytes; its own layout restores whole | once, at the swap |
//! | 2 | `LossyKeys` | kv-v2's | migrating kv's state drops every entry whose key's 64-bit FNV-1a hash is divisible by 3 | once, at the swap: ~1/3 of keys |
//! | 3 | `RarePrefix` | kv's | `Get` of a key starting with `zz` answers nil even when present | those `Get`s only |
//! | 4 | `RareTrap` | kv's | traps (a guest panic) on a `Put` whose key-then-value FNV-1a hash is divisible by 500 | ~1 in 500 `Put`s |
//! | 5 | `CostlyScan` | kv's | every `Scan` first runs a busy loop sized by the store ([`kv_scan_rounds`] × [`SCAN_EXTRA_PERCENT`] %): about +30 % of kv's fuel for that `Scan` (+28 % to +32 % measured over 100 to 3,000 keys) | every `Scan` |
//! | 6 | `Spiky` | kv's | an input whose key (`Scan`: prefix) has an FNV-1a hash divisible by 10 costs ~10x kv's fuel for it: a `Get` redoes kv's walk 9 times, every kind burns a busy loop sized by kv's cost (8.7x to 12.3x measured, by kind, over 100 to 3,000 keys) | ~1 in 10 inputs: ~+85 % on the mean input, the median input unchanged |
//! | 7 | `MemoryProbe` | kv's | its first message grows linear memory to 96 MiB in one `memory.grow`; if the host allows that, every `Get` answers nil, else it is kv | every `Get`, under a cap ≥ 96 MiB |
//! | 8 | `Aging` | kv's | after 3,000 messages in one instance every `Get` answers nil (the count lives in the instance, not the state: a fresh instance starts again at 0, restored or not) | every `Get` after the 3,000th message |
//! | 9 | `AllWrong` | kv's | every reply wrong but well-typed — `Get` → `"wrong"` (nil if the value is `"wrong"`), `Put` → `!replaced`, `Delete` → `!existed`, `Scan` → no entries (one invented entry where kv has none); the state evolves exactly as kv's | every reply |
//!
//! The fuel figures are from `modules/catalog/tests/hostile_run.rs`, which runs the patched
//! modules in wasmtime. Every variant also pays some 175 fuel a message over kv for reading its
//! byte and dispatching (under 3 % of kv's cheapest message); the busy loops never allocate, so
//! the allocator, and with it every later message's cost, stays as under kv.
//!
//! The variant logic is plain functions of the variant ([`handle_as`], [`snapshot_as`],
//! [`restore_as`]) so native tests run every variant; the exported agent [`KvHostile`] reads the
//! byte once per call and keeps what an instance remembers ([`Instance`]) in module globals.
//! An unknown byte makes `init` and `restore` fail, so no agent ever runs as an unknown variant.
//! Imports nothing.

mod behaviour;
pub mod variant;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arbor_guest::{Agent, Ctx};
pub use behaviour::{
    AGING_CALLS, Instance, KV_MESSAGE_ROUNDS, KV_SCAN_ROUNDS_PER_KEY, KV_WRITE_ROUNDS,
    LONG_VALUE_BYTES, LOSSY_KEY_DIVISOR, PROBE_BYTES, RARE_PREFIX, SCAN_EXTRA_PERCENT,
    SPIKE_DIVISOR, SPIKE_FACTOR, SPIKE_REPEATS, TRAP_DIVISOR, V2_VERSION, WRONG, burn, handle_as,
    is_spiky, kv_scan_rounds, lost_in_migration, restore_as, snapshot_as, traps_on_put,
};
use kv_store::{KvMsg, KvReply, Store};
use serde::{Deserialize, Serialize};
pub use variant::Variant;

// What this instance remembers outside the state (an `Instance`, split into atomics so a plain
// `static` can hold it without `unsafe`; on wasm32 they are ordinary loads and stores, cheaper
// than a `thread_local!`). A fresh instance starts from zero, whatever it is restored from.
static HANDLED: AtomicU64 = AtomicU64::new(0);
/// `Instance::big_memory`: 0 not probed yet, 1 refused, 2 granted.
static BIG_MEMORY: AtomicU8 = AtomicU8::new(0);

fn load_instance() -> Instance {
    Instance {
        handled: HANDLED.load(Ordering::Relaxed),
        big_memory: match BIG_MEMORY.load(Ordering::Relaxed) {
            0 => None,
            1 => Some(false),
            _ => Some(true),
        },
    }
}

fn store_instance(instance: Instance) {
    HANDLED.store(instance.handled, Ordering::Relaxed);
    let big_memory = match instance.big_memory {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    };
    BIG_MEMORY.store(big_memory, Ordering::Relaxed);
}

/// The exported agent: kv's store, behaving as the variant the module's byte names.
/// Its derived encoding is kv's bare map; `snapshot` and `restore` go through the variant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KvHostile(pub Store);

impl Agent for KvHostile {
    type Msg = KvMsg;
    type Reply = KvReply;

    fn init(config: &[u8]) -> Result<Self, String> {
        variant::marked()?;
        if config.is_empty() {
            Ok(Self::default())
        } else {
            Err(format!(
                "kv-hostile takes no config ({} bytes given)",
                config.len()
            ))
        }
    }

    fn handle(&mut self, msg: KvMsg, _ctx: &mut Ctx) -> KvReply {
        // init and restore refuse an unknown byte, so there is no agent to get here with one.
        let variant = variant::marked().unwrap_or(Variant::Kv);
        let mut instance = load_instance();
        let reply = handle_as(variant, &mut instance, &mut self.0, msg);
        store_instance(instance);
        reply
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        snapshot_as(variant::marked()?, &self.0)
    }

    fn restore(state: &[u8]) -> Result<Self, String> {
        restore_as(variant::marked()?, state).map(KvHostile)
    }
}

arbor_guest::export_agent!(KvHostile);
