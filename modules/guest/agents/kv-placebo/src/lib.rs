//! `kv-placebo`: kv's behaviour and state layout, built as a different module. The only change is
//! the text `init` reports when given config, which no caller of kv's protocol ever sees — so its
//! answers, state and costs match kv's while its bytes (and so its content hash) differ. The
//! arbiter must find it neither better nor worse than kv.

use arbor_guest::{Agent, Ctx};
use kv_store::{KvMsg, KvReply, Store};
use serde::{Deserialize, Serialize};

/// kv under another name; its state encodes as the bare map, like kv's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KvPlacebo(pub Store);

impl Agent for KvPlacebo {
    type Msg = KvMsg;
    type Reply = KvReply;

    fn init(config: &[u8]) -> Result<Self, String> {
        if config.is_empty() {
            Ok(Self::default())
        } else {
            Err(format!(
                "kv-placebo takes no config ({} bytes given)",
                config.len()
            ))
        }
    }

    fn handle(&mut self, msg: KvMsg, _ctx: &mut Ctx) -> KvReply {
        self.0.apply(msg)
    }
}

arbor_guest::export_agent!(KvPlacebo);
