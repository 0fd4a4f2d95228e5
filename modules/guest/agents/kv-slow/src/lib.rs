//! `kv-slow`: kv's answers and state, at many times kv's cost. Before each message it runs
//! [`BURN_ROUNDS`] rounds of integer mixing whose result goes through `black_box`, so the
//! optimiser cannot drop the loop: about 900,000 fuel per message in wasmtime, some 50 times what
//! kv spends on a mixed workload over 100 keys (kv's own cost grows with its store, so the ratio
//! falls for bigger stores; at 1,000 keys it is still over 6). The arbiter must reject it on cost
//! alone.

use std::hint::black_box;

use arbor_guest::{Agent, Ctx};
use kv_store::{KvMsg, KvReply, Store};
use serde::{Deserialize, Serialize};

/// Mixing rounds per message.
pub const BURN_ROUNDS: u32 = 36_000;

/// kv plus the busy loop; its state encodes as the bare map, like kv's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KvSlow(pub Store);

/// Deterministic busy work: `rounds` steps of a multiply-xorshift, each hidden from the
/// optimiser.
pub fn burn(rounds: u32) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..rounds {
        x = black_box((x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ u64::from(round));
    }
    x
}

impl Agent for KvSlow {
    type Msg = KvMsg;
    type Reply = KvReply;

    fn handle(&mut self, msg: KvMsg, _ctx: &mut Ctx) -> KvReply {
        black_box(burn(BURN_ROUNDS));
        self.0.apply(msg)
    }
}

arbor_guest::export_agent!(KvSlow);
