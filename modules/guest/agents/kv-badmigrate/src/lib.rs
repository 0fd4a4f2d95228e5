//! `kv-badmigrate`: kv's behaviour with a state layout that cannot read kv's. Its state is
//! `{"schema": 1, "entries": {...}}` and its `restore` (the default: strict decoding) requires the
//! `schema` field, which kv never writes, so restoring a kv snapshot fails with error code -2.
//! Its own snapshots restore fine. The host must roll a swap to it back.

use arbor_guest::{Agent, Ctx};
use kv_store::{KvMsg, KvReply, Store};
use serde::{Deserialize, Serialize};

/// kv's store under a versioned envelope, with no migration from kv's layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvBadMigrate {
    /// Always 1; required when decoding.
    pub schema: u32,
    /// The entries.
    pub entries: Store,
}

impl Default for KvBadMigrate {
    fn default() -> Self {
        KvBadMigrate {
            schema: 1,
            entries: Store::default(),
        }
    }
}

impl Agent for KvBadMigrate {
    type Msg = KvMsg;
    type Reply = KvReply;

    fn handle(&mut self, msg: KvMsg, _ctx: &mut Ctx) -> KvReply {
        self.entries.apply(msg)
    }
}

arbor_guest::export_agent!(KvBadMigrate);
