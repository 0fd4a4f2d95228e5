//! What an agent does: the [`Behaviour`] contract, shared by Wasm modules and native Rust
//! behaviours, and [`HostCalls`], what a [`Host`] answers.
//!
//! The agent actor owns one behaviour. For each input it calls [`Behaviour::handle`] with a
//! [`Host`]; everything the behaviour learns from outside itself (the time, random
//! numbers, tool results, whether a send was accepted) comes through that host, which records it
//! while live and plays the recording back during replay. A behaviour that respects this is deterministic: the
//! same state and the same input with the same host answers give the same reply and the same
//! next state, which is what recovery and the evolution arbiter rely on.

use std::any::Any;
use std::fmt;

use crate::host::Host;

/// The outside world as one behaviour sees it while handling one input: what a
/// [`Host`] answers. The agent actor's records every answer; during replay the
/// answers come from the journal and effects are not performed again. Implement it for a
/// custom host ([`Host::custom`](crate::Host::custom)).
pub trait HostCalls: Any + Send {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    fn now(&mut self) -> Result<u64, HostError>;
    /// 64 random bits.
    fn random(&mut self) -> Result<u64, HostError>;
    /// Queues a cast of `message` (MessagePack) to the agent named `to`, delivered after this
    /// input is handled successfully.
    fn send(&mut self, to: &str, message: &[u8]) -> Result<(), HostError>;
    /// Runs the host tool `name` with MessagePack `args`; returns its MessagePack result.
    fn call_tool(&mut self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError>;
    /// A log line from the behaviour (0 trace … 4 error).
    fn log(&mut self, level: u8, line: &str);
}

/// Why a host call failed, as the behaviour sees it. Journaled with the answers, so replay
/// gives the behaviour the same failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HostError {
    /// The agent was not granted this capability (or this tool).
    #[error("capability not granted: {0}")]
    NotGranted(String),
    /// The named agent does not exist.
    #[error("no such agent: {0}")]
    NoSuchAgent(String),
    /// The named tool does not exist.
    #[error("no such tool: {0}")]
    NoSuchTool(String),
    /// The tool ran and failed.
    #[error("tool {tool} failed: {reason}")]
    ToolFailed {
        /// The tool.
        tool: String,
        /// What it said.
        reason: String,
    },
    /// The host refused (mailbox full, shutting down, replay found a different call than it
    /// recorded).
    #[error("refused: {0}")]
    Refused(String),
}

/// How handling an input (or a snapshot/restore) failed. The variants split into two kinds,
/// told apart by [`is_crash`](BehaviourError::is_crash): the input was refused and the agent is
/// unchanged and lives on, or the behaviour crashed and its instance must be discarded (the
/// supervisor restarts the agent from its checkpoint and journal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BehaviourError {
    /// The input was not a message this behaviour understands; the agent is unchanged.
    #[error("bad input: {0}")]
    BadInput(String),
    /// `restore` refused the state bytes (e.g. a layout it cannot migrate); the agent is
    /// unchanged.
    #[error("state rejected: {0}")]
    StateRejected(String),
    /// The behaviour trapped (a panic in agent code, an out-of-bounds access, …).
    #[error("trap: {0}")]
    Trap(String),
    /// The behaviour ran past its per-call deadline and was stopped.
    #[error("deadline of {limit:?} exceeded: stopped after {elapsed:.3?}")]
    DeadlineExceeded {
        /// The deadline ([`AgentLimits::deadline`](crate::wasm::AgentLimits::deadline)).
        limit: std::time::Duration,
        /// How long the call had run when it was stopped (at least `limit`).
        elapsed: std::time::Duration,
    },
    /// The behaviour used up its fuel for this input.
    #[error("out of fuel")]
    OutOfFuel,
    /// The behaviour asked for more memory than its cap.
    #[error("memory cap of {cap_bytes} bytes reached")]
    MemoryCap {
        /// The cap.
        cap_bytes: u64,
    },
    /// The reply was larger than the agent's maximum reply size.
    #[error("reply of {len} bytes exceeds the maximum of {max}")]
    ReplyTooLarge {
        /// The reply's size.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The behaviour broke its contract (a bad pointer, an unknown error code, …).
    #[error("contract violation: {0}")]
    Contract(String),
}

impl BehaviourError {
    /// Whether the behaviour's instance is no longer trustworthy and must be discarded: anything
    /// but refused input or a refused state.
    pub fn is_crash(&self) -> bool {
        !matches!(
            self,
            BehaviourError::BadInput(_) | BehaviourError::StateRejected(_)
        )
    }
}

/// What one input cost, for metrics and for the arbiter's comparisons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Wasm fuel consumed (deterministic: the same code on the same input always uses the same
    /// fuel); `None` for native behaviours.
    pub fuel: Option<u64>,
    /// The instance's linear memory after the input, in bytes (Wasm memory only grows, so
    /// this is its peak so far); `None` for native behaviours.
    pub memory: Option<u64>,
}

/// An agent's behaviour: a Wasm module instance or native Rust code. The contract is the agent
/// ABI's (see `modules/ABI.md`): state in, message in, reply and next state out; snapshots are
/// bytes that `restore` (of this or a newer version) accepts.
pub trait Behaviour: Send + 'static {
    /// Handles one input (MessagePack) and returns the reply (MessagePack).
    fn handle(&mut self, input: &[u8], host: &mut Host) -> Result<Vec<u8>, BehaviourError>;

    /// Creates the agent's initial state from `config` (MessagePack, or empty). A refused config
    /// is [`BehaviourError::BadInput`]. The default accepts only an empty config.
    fn init(&mut self, config: &[u8]) -> Result<(), BehaviourError> {
        if config.is_empty() {
            Ok(())
        } else {
            Err(BehaviourError::BadInput(format!(
                "{} takes no config",
                self.describe()
            )))
        }
    }

    /// The state as bytes; does not change it. Equal states give equal bytes.
    fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError>;

    /// Replaces the state with one from `snapshot` (of this or an older version). On error the
    /// previous state is kept.
    fn restore(&mut self, state: &[u8]) -> Result<(), BehaviourError>;

    /// What the last `handle` cost.
    fn last_cost(&self) -> Cost {
        Cost::default()
    }

    /// A short description for logs and `arborctl` (module hash or native name).
    fn describe(&self) -> String;
}

impl fmt::Debug for dyn Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}
