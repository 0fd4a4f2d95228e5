//! [`Ctx`]: the host's capabilities as seen from [`crate::Agent::handle`].

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{abi, decode, encode, sys};

/// The host's imports, handed to [`crate::Agent::handle`].
///
/// Each method is one `arbor` import, and each import is a capability the host grants per agent:
/// a module that imports something its agent is not granted is refused at instantiation. Because
/// the linker drops imports nothing calls, a module imports exactly the methods its code can
/// reach — calling none of them gives a module with no imports at all.
///
/// Replay determinism: `now`, `random`, the result of `send` and of `call_tool` are journaled by
/// the host, so replaying the agent's log gives it the same values and it reaches the same state.
/// They are the only sources of time, randomness and outside data an agent has; do not look for
/// others.
#[derive(Debug)]
pub struct Ctx {
    _only_the_sdk_makes_one: (),
}

/// Severity of a [`Ctx::log`] line; the `i32` is what crosses the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// 0: very detailed tracing.
    Trace = 0,
    /// 1: debugging detail.
    Debug = 1,
    /// 2: normal operation.
    Info = 2,
    /// 3: something odd that the agent handled.
    Warn = 3,
    /// 4: something failed.
    Error = 4,
}

impl Level {
    /// The level for an ABI value, clamped to 0..=4 as the host does.
    pub fn from_abi(level: i32) -> Level {
        match level {
            i32::MIN..=0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            _ => Level::Error,
        }
    }
}

/// Why [`Ctx::send`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The message could not be encoded; nothing was sent.
    Encode(String),
    /// The recipient does not exist (`send` returned -1).
    UnknownRecipient,
    /// The host refused the send: not permitted, mailbox full, shutting down (-2).
    Refused,
    /// Another negative code from the host.
    Other(i32),
}

/// Why [`Ctx::call_tool`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolError {
    /// The arguments could not be encoded; the tool was not called.
    Encode(String),
    /// No tool of that name is granted to this agent (`call_tool` returned -1).
    UnknownTool,
    /// The tool ran and failed (-2).
    Failed,
    /// The host could not place the result in this module's memory (-3).
    NoMemory,
    /// Another negative code from the host.
    Other(i32),
    /// The tool's result is not MessagePack of the expected type.
    Decode(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Encode(err) => write!(f, "send: message not encodable: {err}"),
            SendError::UnknownRecipient => f.write_str("send: no such recipient"),
            SendError::Refused => f.write_str("send: refused by the host"),
            SendError::Other(code) => write!(f, "send: host error code {code}"),
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Encode(err) => write!(f, "call_tool: arguments not encodable: {err}"),
            ToolError::UnknownTool => f.write_str("call_tool: no such tool granted"),
            ToolError::Failed => f.write_str("call_tool: the tool failed"),
            ToolError::NoMemory => f.write_str("call_tool: no guest memory for the result"),
            ToolError::Other(code) => write!(f, "call_tool: host error code {code}"),
            ToolError::Decode(err) => write!(f, "call_tool: result not decodable: {err}"),
        }
    }
}

impl std::error::Error for SendError {}
impl std::error::Error for ToolError {}

impl Ctx {
    pub(crate) fn new() -> Ctx {
        Ctx {
            _only_the_sdk_makes_one: (),
        }
    }

    /// Writes a log line through the host (`log` import).
    pub fn log(&mut self, level: Level, text: &str) {
        sys::log_text(level as i32, text.as_bytes());
    }

    /// Sends `msg` (encoded with named fields) to the agent named `to`, as a cast from this
    /// agent (`send` import). The host delivers it after this `handle` returns, and not at all if
    /// `handle` traps.
    pub fn send<M: Serialize + ?Sized>(&mut self, to: &str, msg: &M) -> Result<(), SendError> {
        let bytes = encode(msg).map_err(SendError::Encode)?;
        match sys::send_message(to.as_bytes(), &bytes) {
            0 => Ok(()),
            abi::SEND_UNKNOWN_RECIPIENT => Err(SendError::UnknownRecipient),
            abi::SEND_REFUSED => Err(SendError::Refused),
            code => Err(SendError::Other(code)),
        }
    }

    /// Wall-clock time as nanoseconds since the Unix epoch (`now` import).
    pub fn now(&mut self) -> u64 {
        // The host returns a non-negative i64; the cast keeps every bit either way.
        sys::now_nanos() as u64
    }

    /// 64 random bits (`random` import).
    pub fn random(&mut self) -> u64 {
        sys::random_bits() as u64
    }

    /// Calls the host tool `name` with `args` (encoded with named fields) and decodes its
    /// MessagePack result as `R` (`call_tool` import). The guest waits while the tool runs.
    ///
    /// A tool's own failure modes belong in `R` (e.g. a `Result`-shaped reply); the errors here
    /// are the plumbing's.
    pub fn call_tool<R: DeserializeOwned, A: Serialize + ?Sized>(
        &mut self,
        name: &str,
        args: &A,
    ) -> Result<R, ToolError> {
        let bytes = encode(args).map_err(ToolError::Encode)?;
        match sys::call_tool_raw(name.as_bytes(), &bytes) {
            Ok(result) => decode(&result).map_err(ToolError::Decode),
            Err(abi::TOOL_UNKNOWN) => Err(ToolError::UnknownTool),
            Err(abi::TOOL_FAILED) => Err(ToolError::Failed),
            Err(abi::TOOL_NO_MEMORY) => Err(ToolError::NoMemory),
            Err(code) => Err(ToolError::Other(code)),
        }
    }
}
