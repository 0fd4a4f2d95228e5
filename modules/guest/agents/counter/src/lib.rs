//! `counter`: the smallest useful agent. It calls no import, so its module imports nothing.
//!
//! | message (MessagePack, named)  | reply            |
//! |-------------------------------|------------------|
//! | `{"Inc": {"by": <i64>}}`      | `{"count": <i64>}` after adding (wrapping on overflow) |
//! | `"Get"`                       | `{"count": <i64>}` |
//! | `"Reset"`                     | `{"count": 0}`   |
//! | `"Fail"`                      | none: the module traps (a guest panic), for supervision tests |
//!
//! State: `{"count": <i64>}`.

use arbor_guest::{Agent, Ctx};
use serde::{Deserialize, Serialize};

/// The counter's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// The current count.
    pub count: i64,
}

/// What the counter accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterMsg {
    /// Add `by` (negative to subtract).
    Inc {
        /// The amount to add.
        by: i64,
    },
    /// Read the count.
    Get,
    /// Set the count to zero.
    Reset,
    /// Trap (panic in the guest): the agent crashes and its supervisor restarts it.
    Fail,
}

/// Every message answers with the count after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterReply {
    /// The count after the message.
    pub count: i64,
}

impl Agent for Counter {
    type Msg = CounterMsg;
    type Reply = CounterReply;

    fn handle(&mut self, msg: CounterMsg, _ctx: &mut Ctx) -> CounterReply {
        match msg {
            CounterMsg::Inc { by } => self.count = self.count.wrapping_add(by),
            CounterMsg::Get => {}
            CounterMsg::Reset => self.count = 0,
            CounterMsg::Fail => panic!("asked to fail at count {}", self.count),
        }
        CounterReply { count: self.count }
    }
}

arbor_guest::export_agent!(Counter);
