//! `kv`: the v1 key-value store (protocol and state layout in [`kv_store`]). Imports nothing.

use arbor_guest::{Agent, Ctx};
use kv_store::{KvMsg, KvReply, Store};
use serde::{Deserialize, Serialize};

/// The v1 agent; its state encodes as the bare map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kv(pub Store);

impl Agent for Kv {
    type Msg = KvMsg;
    type Reply = KvReply;

    fn handle(&mut self, msg: KvMsg, _ctx: &mut Ctx) -> KvReply {
        self.0.apply(msg)
    }
}

arbor_guest::export_agent!(Kv);
