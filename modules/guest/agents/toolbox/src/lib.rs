//! `toolbox`: calls every host import, so its module imports all five (`log`, `send`, `now`,
//! `random`, `call_tool`); for capability-grant and replay-determinism tests.
//!
//! | message (MessagePack, named)                       | import(s)        | reply |
//! |----------------------------------------------------|------------------|-------|
//! | `"Now"`                                            | `now`            | `{"Time": {"nanos": <u64>}}` |
//! | `"Random"`                                         | `random`         | `{"Number": {"value": <u64>}}` |
//! | `{"Echo": {"text": <str>}}`                        | `call_tool("echo", {"text": <str>})` | `{"Echoed": {"text": <str>}}` or `{"Failed": {"error": <str>}}` |
//! | `{"Send": {"to": <str>, "by": <i64>}}`             | `send(to, {"Inc": {"by": <i64>}})` — counter's message | `"Sent"` or `{"Failed": {"error": <str>}}` |
//! | `{"Log": {"level": <0..=4>, "text": <str>}}`       | `log`            | `"Logged"` |
//! | `{"All": {"to": <str>, "by": <i64>, "text": <str>}}` | all five, in the order now, random, call_tool, send, log | `{"Report": {"nanos", "value", "echoed": <str or nil>, "sent": <bool>}}` |
//!
//! The tool `echo` must return its arguments unchanged. State: `{"handled": <u64>, "digest":
//! <u64>}`, where `digest` folds in every value an import returned (FNV-1a), so a replay that
//! fed the agent different import results ends in a different snapshot.

use arbor_guest::{Agent, Ctx, Level};
use serde::{Deserialize, Serialize};

/// The toolbox's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolbox {
    /// Messages handled.
    pub handled: u64,
    /// FNV-1a over every import result so far.
    pub digest: u64,
}

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

/// The `echo` tool's arguments and (since it echoes) result.
#[derive(Serialize, Deserialize)]
struct EchoArgs {
    text: String,
}

/// Counter's `Inc` message, as sent.
#[derive(Serialize)]
enum CounterInc {
    Inc { by: i64 },
}

impl Toolbox {
    fn fold(&mut self, bytes: &[u8]) {
        let start = if self.digest == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.digest
        };
        self.digest = bytes.iter().fold(start, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    }

    fn now(&mut self, ctx: &mut Ctx) -> u64 {
        let nanos = ctx.now();
        self.fold(&nanos.to_le_bytes());
        nanos
    }

    fn random(&mut self, ctx: &mut Ctx) -> u64 {
        let value = ctx.random();
        self.fold(&value.to_le_bytes());
        value
    }

    fn echo(&mut self, ctx: &mut Ctx, text: String) -> Result<String, String> {
        let result = ctx.call_tool::<EchoArgs, _>("echo", &EchoArgs { text });
        match result {
            Ok(EchoArgs { text }) => {
                self.fold(text.as_bytes());
                Ok(text)
            }
            Err(err) => {
                self.fold(b"tool error");
                Err(err.to_string())
            }
        }
    }

    fn send(&mut self, ctx: &mut Ctx, to: &str, by: i64) -> Result<(), String> {
        let result = ctx.send(to, &CounterInc::Inc { by });
        self.fold(if result.is_ok() { b"sent" } else { b"not sent" });
        result.map_err(|err| err.to_string())
    }
}

impl Agent for Toolbox {
    type Msg = ToolboxMsg;
    type Reply = ToolboxReply;

    fn handle(&mut self, msg: ToolboxMsg, ctx: &mut Ctx) -> ToolboxReply {
        self.handled += 1;
        match msg {
            ToolboxMsg::Now => ToolboxReply::Time {
                nanos: self.now(ctx),
            },
            ToolboxMsg::Random => ToolboxReply::Number {
                value: self.random(ctx),
            },
            ToolboxMsg::Echo { text } => match self.echo(ctx, text) {
                Ok(text) => ToolboxReply::Echoed { text },
                Err(error) => ToolboxReply::Failed { error },
            },
            ToolboxMsg::Send { to, by } => match self.send(ctx, &to, by) {
                Ok(()) => ToolboxReply::Sent,
                Err(error) => ToolboxReply::Failed { error },
            },
            ToolboxMsg::Log { level, text } => {
                ctx.log(Level::from_abi(level), &text);
                ToolboxReply::Logged
            }
            ToolboxMsg::All { to, by, text } => {
                let nanos = self.now(ctx);
                let value = self.random(ctx);
                let echoed = self.echo(ctx, text.clone()).ok();
                let sent = self.send(ctx, &to, by).is_ok();
                ctx.log(Level::Info, &text);
                ToolboxReply::Report {
                    nanos,
                    value,
                    echoed,
                    sent,
                }
            }
        }
    }
}

arbor_guest::export_agent!(Toolbox);
