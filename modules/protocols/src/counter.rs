//! `counter`'s protocol.
//!
//! | message | reply |
//! |---|---|
//! | `{"Inc": {"by": <i64>}}` | `{"count": <i64>}` after adding (wrapping on overflow) |
//! | `"Get"` | `{"count": <i64>}` |
//! | `"Reset"` | `{"count": 0}` |
//! | `"Fail"` | none: the module traps (a guest panic), for supervision tests |
//!
//! The agent's state has the reply's layout, `{"count": <i64>}`.

use serde::{Deserialize, Serialize};

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
    /// Trap (a guest panic): the agent crashes and its supervisor restarts it.
    Fail,
}

/// Every message but `Fail` answers with the count after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterReply {
    /// The count after the message.
    pub count: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    #[test]
    fn the_wire_format_is_pinned() {
        assert_eq!(
            encode(&CounterMsg::Inc { by: -1 }),
            b"\x81\xa3Inc\x81\xa2by\xff"
        );
        assert_eq!(encode(&CounterMsg::Get), b"\xa3Get");
        assert_eq!(encode(&CounterMsg::Reset), b"\xa5Reset");
        assert_eq!(encode(&CounterMsg::Fail), b"\xa4Fail");
        assert_eq!(encode(&CounterReply { count: 7 }), b"\x81\xa5count\x07");
    }
}
