//! What an agent actor is sent and what it answers: [`AgentMsg`], the reply port, and the
//! reports of swaps, rollbacks and restores.

use std::time::Duration;

use arbor_wal::Lsn;
use ractor::RpcReplyPort;

use super::error::AgentError;
use super::mirror::{MirrorTap, Tapped};
use crate::behaviour::Behaviour;
use crate::envelope::{BehaviourId, Kind};

/// A reply port.
pub(crate) type Reply<T> = RpcReplyPort<Result<T, AgentError>>;

/// Answers on `reply`; the caller may have given up (a timeout), which is fine.
pub(crate) fn send<T>(reply: Reply<T>, value: Result<T, AgentError>) {
    let _ = reply.send(value);
}

/// What an agent actor receives.
pub(crate) enum AgentMsg {
    /// A call (with a reply port) or a cast.
    Input {
        from: Option<String>,
        kind: Kind,
        payload: Vec<u8>,
        reply: Option<Reply<Vec<u8>>>,
    },
    /// Replace the behaviour with this already-made instance of `id`; with `keep_checkpoint`
    /// the state before the swap is stored as a checkpoint (a promotion's, which a rollback
    /// restores) and the journal is held from it until the hold is released.
    Swap {
        behaviour: Box<dyn Behaviour>,
        id: BehaviourId,
        keep_checkpoint: bool,
        check: Option<StateCheck>,
        reply: Reply<SwapReport>,
    },
    /// Rebuild the state in `behaviour` (a fresh instance of `id`): `from`, then (with
    /// [`AfterRestore::Replay`]) the agent's applied inputs since, replayed; then run it.
    Rebuild {
        behaviour: Box<dyn Behaviour>,
        id: BehaviourId,
        from: RestoreFrom,
        after: AfterRestore,
        reply: Reply<RebuildReport>,
    },
    /// Mirror every later input to `tap` (or stop mirroring) and return the state it starts
    /// from.
    Tap {
        tap: Option<MirrorTap>,
        reply: Reply<Tapped>,
    },
    /// Checkpoint now (asked by the caller, or by the journal because the agent pins it).
    Checkpoint { reply: Option<Reply<Lsn>> },
    /// The policy's time since the first unsaved input may have passed: checkpoint if due.
    CheckpointTimer,
    /// The behaviour's snapshot.
    Snapshot { reply: Reply<Vec<u8>> },
    /// What runs the agent now, and its last input's number.
    Running { reply: Reply<(BehaviourId, u64)> },
    /// Final checkpoint, then stop; `deregister` marks the agent stopped in the registry (it is
    /// not brought back by `recover_all`).
    Stop { deregister: bool, reply: Reply<()> },
}

/// What a hot swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapReport {
    /// How long the agent's mailbox was paused: snapshot with the old behaviour, restore into
    /// the new one, journal the swap.
    pub pause: Duration,
    /// The behaviour before.
    pub from: BehaviourId,
    /// The behaviour now.
    pub to: BehaviourId,
    /// The size of the state carried over.
    pub state_bytes: usize,
    /// The number of the last input the old behaviour handled.
    pub seq: u64,
    /// For a promotion ([`AgentSystem::promote_module`](crate::AgentSystem::promote_module)):
    /// the checkpoint of the state before the swap, which a rollback restores; `None` for a
    /// plain swap or if storing it failed.
    pub checkpoint_lsn: Option<Lsn>,
}

/// Judges a swap's state migration before it happens: given the state before the swap and the
/// new behaviour's snapshot after restoring it, an `Err` (why) refuses the swap, and the old
/// behaviour keeps running (see [`AgentSystem::promote_module_checked`]).
///
/// [`AgentSystem::promote_module_checked`]: crate::AgentSystem::promote_module_checked
pub type StateCheck = Box<dyn FnOnce(&[u8], &[u8]) -> Result<(), String> + Send>;

/// What a rollback or a checkpoint restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// How long the agent's mailbox was paused (rebuild, checkpoint, journal).
    pub pause: Duration,
    /// The behaviour that ran before.
    pub from: BehaviourId,
    /// The behaviour that runs the rebuilt state.
    pub to: BehaviourId,
    /// Inputs replayed through `to` after the restored state.
    pub replayed: u64,
    /// The checkpoint holding the rebuilt state.
    pub checkpoint_lsn: Lsn,
    /// The agent's last input number.
    pub seq: u64,
}

/// Where a rebuilt state starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The agent's checkpoint stored at this LSN.
    Checkpoint(Lsn),
    /// This state (e.g. from an exported checkpoint file), which held the agent's inputs up
    /// to `lsn`.
    State {
        /// The snapshot bytes.
        state: Vec<u8>,
        /// The WAL position the state covers.
        lsn: Lsn,
    },
}

/// What a restore does with the inputs the agent journaled after the restored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterRestore {
    /// Replays every applied input since, with its journaled answers (nothing acknowledged
    /// is lost; the state is as if the restored one had handled them).
    Replay,
    /// Drops them: the agent goes on from the restored state (they stay in the WAL, behind a
    /// rebase record, until released).
    Discard,
}
