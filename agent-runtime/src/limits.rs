//! What an agent may do and use: its [`AgentLimits`] (memory, deadline, fuel, message sizes)
//! and its [`Capabilities`] (the host imports and tools it is granted).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-agent limits (serialisable: shadows on another node run under exactly these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLimits {
    /// The most linear memory the agent may have; a `memory.grow` past it fails. Capped by the
    /// engine's [`EngineConfig::max_memory_bytes`](crate::wasm::EngineConfig::max_memory_bytes).
    pub memory_bytes: u64,
    /// Wall-clock time one call into the agent (handling one message, a snapshot, a restore)
    /// may take. The call is stopped with [`BehaviourError::DeadlineExceeded`](crate::BehaviourError::DeadlineExceeded), which gives the
    /// time it actually ran, no earlier than this and within the larger of +10 % and +20 ms,
    /// also with every core busy (`tests/wasm_deadline.rs` checks it with more spinning threads
    /// than cores). Counted against real time when the epoch (ticking every
    /// [`EngineConfig::epoch_tick`], 1 ms by default) says it may be over, so a coarser tick
    /// adds up to one tick to the bound. The bound needs the guest's thread and the epoch
    /// ticker to be scheduled within a few milliseconds of becoming runnable: on a machine
    /// oversubscribed several times over, the stop comes as late as the scheduler lets them
    /// run. A guest waiting inside a host import is stopped when the import returns.
    ///
    /// [`EngineConfig::epoch_tick`]: crate::wasm::EngineConfig::epoch_tick
    pub deadline: Duration,
    /// Fuel one call may use; `None` meters without limiting.
    pub fuel: Option<u64>,
    /// The largest message `handle` accepts; larger ones are refused before entering the guest.
    pub max_message_bytes: usize,
    /// The largest reply `handle` may produce.
    pub max_reply_bytes: usize,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            memory_bytes: 16 << 20,
            deadline: Duration::from_secs(1),
            fuel: None,
            max_message_bytes: 1 << 20,
            max_reply_bytes: 1 << 20,
        }
    }
}

/// Which `arbor` imports an agent is granted. A module importing one that is not granted is
/// refused at instantiation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `log`.
    pub log: bool,
    /// `send`.
    pub send: bool,
    /// `now`.
    pub now: bool,
    /// `random`.
    pub random: bool,
    /// The tools `call_tool` may name; `call_tool` is granted when this is not empty.
    pub tools: BTreeSet<String>,
}

impl Capabilities {
    /// No imports at all.
    pub fn none() -> Capabilities {
        Capabilities::default()
    }

    /// Every import and the given tools.
    pub fn all<I: IntoIterator<Item = S>, S: Into<String>>(tools: I) -> Capabilities {
        Capabilities {
            log: true,
            send: true,
            now: true,
            random: true,
            tools: tools.into_iter().map(Into::into).collect(),
        }
    }
}
