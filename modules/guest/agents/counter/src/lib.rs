//! `counter`: the smallest useful agent. It calls no import, so its module imports nothing.
//!
//! Its protocol — `Inc`, `Get`, `Reset`, each answered with the count, and `Fail`, which traps
//! — is `arbor_protocols::counter` (shared with the host; the types are re-exported here).
//!
//! State: `{"count": <i64>}`.

use arbor_guest::{Agent, Ctx};
pub use arbor_protocols::counter::{CounterMsg, CounterReply};
use serde::{Deserialize, Serialize};

/// The counter's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// The current count.
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
