//! `toolbox`'s protocol: one message per host import, and one calling all five.
//!
//! | message | import(s) | reply |
//! |---|---|---|
//! | `"Now"` | `now` | `{"Time": {"nanos": <u64>}}` |
//! | `"Random"` | `random` | `{"Number": {"value": <u64>}}` |
//! | `{"Echo": {"text": <str>}}` | `call_tool("echo", {"text": <str>})` ([`EchoArgs`]) | `{"Echoed": {"text": <str>}}` or `{"Failed": {"error": <str>}}` |
//! | `{"Send": {"to": <str>, "by": <i64>}}` | `send(to, {"Inc": {"by": <i64>}})`, counter's [`CounterMsg::Inc`](crate::counter::CounterMsg::Inc) | `"Sent"` or `{"Failed": {"error": <str>}}` |
//! | `{"Log": {"level": <0..=4>, "text": <str>}}` | `log` | `"Logged"` |
//! | `{"All": {"to": <str>, "by": <i64>, "text": <str>}}` | all five, in the order now, random, call_tool, send, log | `{"Report": {"nanos", "value", "echoed": <str or nil>, "sent": <bool>}}` |
//!
//! The tool `echo` must return its arguments unchanged.

use alloc::string::String;

use serde::{Deserialize, Serialize};

/// What the toolbox accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolboxMsg {
    /// Read the clock.
    Now,
    /// Draw 64 random bits.
    Random,
    /// Round-trip `text` through the `echo` tool.
    Echo {
        /// What to echo.
        text: String,
    },
    /// Send counter's `Inc { by }` to the agent `to`.
    Send {
        /// The recipient.
        to: String,
        /// The increment.
        by: i64,
    },
    /// Log `text` at `level` (0 trace ..= 4 error).
    Log {
        /// The level; out-of-range values clamp.
        level: i32,
        /// The line.
        text: String,
    },
    /// All of the above in one message.
    All {
        /// The recipient of the send.
        to: String,
        /// The increment sent.
        by: i64,
        /// What to echo and log.
        text: String,
    },
}

/// What the toolbox answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolboxReply {
    /// To `Now`.
    Time {
        /// Unix nanoseconds.
        nanos: u64,
    },
    /// To `Random`.
    Number {
        /// The random bits.
        value: u64,
    },
    /// To `Echo`.
    Echoed {
        /// What the tool returned.
        text: String,
    },
    /// To `Send`.
    Sent,
    /// To `Log`.
    Logged,
    /// `Echo` or `Send` failed.
    Failed {
        /// Why.
        error: String,
    },
    /// To `All`.
    Report {
        /// From `now`.
        nanos: u64,
        /// From `random`.
        value: u64,
        /// From the `echo` tool, nil if it failed.
        echoed: Option<String>,
        /// Whether `send` was accepted.
        sent: bool,
    },
}

/// The `echo` tool's arguments and, since it echoes them, its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoArgs {
    /// What to echo.
    pub text: String,
}

#[cfg(test)]
mod tests {
    use alloc::borrow::ToOwned;

    use super::*;
    use crate::encode;

    #[test]
    fn the_wire_format_is_pinned() {
        assert_eq!(encode(&ToolboxMsg::Now), b"\xa3Now");
        assert_eq!(
            encode(&ToolboxMsg::Log {
                level: 2,
                text: "t".to_owned()
            }),
            b"\x81\xa3Log\x82\xa5level\x02\xa4text\xa1t"
        );
        assert_eq!(encode(&ToolboxReply::Sent), b"\xa4Sent");
        assert_eq!(
            encode(&ToolboxReply::Report {
                nanos: 1,
                value: 2,
                echoed: None,
                sent: true
            }),
            b"\x81\xa6Report\x84\xa5nanos\x01\xa5value\x02\xa6echoed\xc0\xa4sent\xc3"
        );
        assert_eq!(
            encode(&EchoArgs {
                text: "t".to_owned()
            }),
            b"\x81\xa4text\xa1t"
        );
    }
}
