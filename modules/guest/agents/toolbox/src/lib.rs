//! `toolbox`: calls every host import, so its module imports all five (`log`, `send`, `now`,
//! `random`, `call_tool`); for capability-grant and replay-determinism tests.
//!
//! Its protocol, message by message with the imports each calls, is
//! `arbor_protocols::toolbox` (shared with the host; the types are re-exported here).
//!
//! The tool `echo` must return its arguments unchanged. State: `{"handled": <u64>, "digest":
//! <u64>}`, where `digest` folds in every value an import returned (FNV-1a), so a replay that
//! fed the agent different import results ends in a different snapshot.

use arbor_guest::{Agent, Ctx, Level};
use arbor_protocols::counter::CounterMsg;
use arbor_protocols::toolbox::EchoArgs;
pub use arbor_protocols::toolbox::{ToolboxMsg, ToolboxReply};
use arbor_protocols::{FNV1A_OFFSET, fnv1a_extend};
use serde::{Deserialize, Serialize};

/// The toolbox's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolbox {
    /// Messages handled.
    pub handled: u64,
    /// FNV-1a over every import result so far.
    pub digest: u64,
}

impl Toolbox {
    fn fold(&mut self, bytes: &[u8]) {
        // A digest of 0 is the empty state's: the first fold starts FNV-1a afresh.
        let start = if self.digest == 0 {
            FNV1A_OFFSET
        } else {
            self.digest
        };
        self.digest = fnv1a_extend(start, bytes);
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
        let result = ctx.send(to, &CounterMsg::Inc { by });
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
