//! `kv-buggy`: kv with a deterministic bug. `Get` of a key whose 64-bit FNV-1a hash is divisible
//! by 100 (about 1% of keys) answers `{"Value": {"value": nil}}` even when the key is present.
//! Everything else, including the state layout, is kv's. The arbiter must catch it.

use arbor_guest::{Agent, Ctx};
/// The bug's rule lives in `arbor-protocols`, so that the host predicts the same keys.
pub use arbor_protocols::kv::is_unlucky;
pub use kv_store::fnv1a;
use kv_store::{KvMsg, KvReply, Store};
use serde::{Deserialize, Serialize};

/// kv plus the bug; its state encodes as the bare map, like kv's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KvBuggy(pub Store);

impl Agent for KvBuggy {
    type Msg = KvMsg;
    type Reply = KvReply;

    fn handle(&mut self, msg: KvMsg, _ctx: &mut Ctx) -> KvReply {
        match msg {
            KvMsg::Get { key } if is_unlucky(&key) => KvReply::Value { value: None },
            msg => self.0.apply(msg),
        }
    }
}

arbor_guest::export_agent!(KvBuggy);
