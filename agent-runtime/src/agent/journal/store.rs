//! The journal seam: the one interface agent code (the actor, recovery, rollback, the
//! evolution arbiter's gate) uses to keep an agent's records and checkpoints.
//!
//! # The contract
//!
//! - **Append** ([`JournalStore::append`]): the records of one agent, in the order given, in
//!   one call, at increasing positions after every record appended before. The returned
//!   [`Ack`] resolves once they are durable under the store's policy (for the local WAL:
//!   fdatasync'd, grouped with other appends; for a replicated log: acknowledged by the
//!   replicas). Nothing is acknowledged to a caller before its [`Ack`] resolves. One call is
//!   one durability wait: the agent appends an input and its outcome together.
//! - **Fencing**: `append` is where a store that knows ownership (a cluster's lease and epoch)
//!   refuses an agent it does not own any more ([`JournalError::Fenced`]), so a paused or
//!   partitioned former owner can never append once another has taken over. The local store
//!   owns everything.
//! - **Read** ([`JournalStore::read`]): every record from a position on, in position order,
//!   including those appended but not yet durable; a store may return other agents' records
//!   too (the local WAL is shared) — the reader filters by agent. Positions before
//!   [`JournalStore::first`] have been released.
//! - **Checkpoints**: stored with the position they cover (every record of the agent up to it
//!   is in the state); [`JournalStore::sync`] must have made those records durable first, so a
//!   checkpoint never claims records a crash could still lose.
//! - **Release** ([`JournalStore::release_before`]): the store may drop records before a
//!   position once every agent's safe checkpoint covers them (the journal's pins decide which).
//!   A store whose positions are per agent ([`JournalStore::positions_per_agent`], the
//!   cluster's) is released agent by agent instead ([`JournalStore::release_agent_before`]),
//!   under the same rule; it must not drop a record before the checkpoints stored ahead of the
//!   call are durable (the journal does not sync them for it). Reading a released position
//!   fails with [`JournalError::Released`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arbor_vault::{AgentId, Checkpoint, CheckpointMeta, LatestValid, NewCheckpoint, Vault};
use arbor_wal::{Appended, Lsn, Wal};

use crate::agent::error::JournalError;

/// Records read back: (position, payload), in position order.
pub type Records = Box<dyn Iterator<Item = Result<(Lsn, Vec<u8>), JournalError>> + Send>;

/// A durability wait a store other than the local WAL hands out.
pub trait Pending: Send + Sync {
    /// Whether the records are durable already.
    fn is_durable(&self) -> bool;
    /// Resolves once they are.
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send + '_>>;
}

/// Where appended records are, and a wait until they are durable.
pub struct Ack {
    lsn: Lsn,
    wait: AckWait,
}

enum AckWait {
    /// Nothing to wait for (an ephemeral journal, or already durable).
    Done,
    /// The local WAL's append.
    Wal(Appended),
    /// Another store's.
    Other(Arc<dyn Pending>),
}

impl Ack {
    /// Records at `lsn` that need no wait.
    pub fn done(lsn: Lsn) -> Ack {
        Ack {
            lsn,
            wait: AckWait::Done,
        }
    }

    /// The local WAL's append.
    pub fn wal(appended: Appended) -> Ack {
        Ack {
            lsn: appended.lsn(),
            wait: AckWait::Wal(appended),
        }
    }

    /// Another store's wait, for records ending at `lsn`.
    pub fn pending(lsn: Lsn, pending: Arc<dyn Pending>) -> Ack {
        Ack {
            lsn,
            wait: AckWait::Other(pending),
        }
    }

    /// The position of the last record appended.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Whether the records are durable already.
    pub fn is_durable(&self) -> bool {
        match &self.wait {
            AckWait::Done => true,
            AckWait::Wal(appended) => appended.is_durable(),
            AckWait::Other(pending) => pending.is_durable(),
        }
    }

    /// Resolves once the records are durable.
    pub async fn wait(&self) -> Result<(), JournalError> {
        match &self.wait {
            AckWait::Done => Ok(()),
            AckWait::Wal(appended) => appended.wait().await.map_err(JournalError::from),
            AckWait::Other(pending) => pending.wait().await,
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("lsn", &self.lsn)
            .field("durable", &self.is_durable())
            .finish()
    }
}

/// Where an agent system keeps its agents' records and checkpoints (see the module docs for
/// the contract). Implemented by the local WAL + vault and by an ephemeral store that keeps
/// nothing; a replicated log implements it without touching the agent code.
pub trait JournalStore: Send + Sync + 'static {
    /// Whether records and checkpoints outlive the process (an ephemeral store's do not:
    /// recovery, rollback and restores need a durable one).
    fn is_durable(&self) -> bool;
    /// Appends `agent`'s records in order, in one durability wait.
    fn append(&self, agent: &str, records: &[&[u8]]) -> Result<Ack, JournalError>;
    /// Every record from `from` on (see the contract).
    fn read(&self, agent: &str, from: Lsn) -> Result<Records, JournalError>;
    /// The first position kept.
    fn first(&self) -> Lsn;
    /// The last position written (0 when empty).
    fn last(&self) -> Lsn;
    /// The last position that may hold a record of `agent`: a checkpoint of the agent's
    /// current state is stored at it. The local WAL's positions are shared by all agents, so
    /// this is [`last`](Self::last); a store with per-agent positions (the cluster's) gives
    /// the agent's own.
    fn last_of(&self, agent: &str) -> Lsn {
        let _ = agent;
        self.last()
    }
    /// Makes every record appended so far durable; resolves with the position covered.
    fn sync(&self) -> Pin<Box<dyn Future<Output = Result<Lsn, JournalError>> + Send + '_>>;
    /// [`sync`](Self::sync), blocking the thread (for synchronous callers; async code awaits
    /// `sync`: a store whose writes run on the caller's runtime may be unable to wait here).
    fn sync_blocking(&self) -> Result<Lsn, JournalError>;
    /// The positions at which release could drop something (the local WAL's segment
    /// starts, oldest first; the first is where the journal begins).
    fn release_points(&self) -> Vec<Lsn>;
    /// Drops records before `lsn` where the store can.
    fn release_before(&self, lsn: Lsn) -> Result<(), JournalError>;
    /// The budget of records kept for history (bytes of log per release point), for the
    /// history rule.
    fn release_point_bytes(&self) -> u64;
    /// Whether each agent's positions are its own (1, 2, 3, … per agent, as in the cluster's
    /// per-agent logs) rather than shared by all agents (the local WAL). The journal then
    /// applies its release rule to each agent's positions on their own, through
    /// [`release_agent_before`](Self::release_agent_before); comparing positions of different
    /// agents would mean nothing.
    fn positions_per_agent(&self) -> bool {
        false
    }
    /// Drops `agent`'s records before `lsn` where the store can (a store with
    /// [per-agent positions](Self::positions_per_agent)), once the checkpoints stored before
    /// this call are durable.
    fn release_agent_before(&self, agent: &str, lsn: Lsn) -> Result<(), JournalError> {
        let _ = (agent, lsn);
        Ok(())
    }
    /// The first position of `agent`'s newest records that fit in `bytes` (a store with
    /// [per-agent positions](Self::positions_per_agent); the history rule's budget).
    fn history_floor(&self, agent: &str, bytes: u64) -> Lsn {
        let _ = (agent, bytes);
        0
    }

    /// Stores a checkpoint.
    fn put_checkpoint(&self, checkpoint: &NewCheckpoint<'_>) -> Result<(), JournalError>;
    /// One stored checkpoint.
    fn checkpoint(&self, agent: &AgentId, lsn: Lsn) -> Result<Option<Checkpoint>, JournalError>;
    /// One stored checkpoint's metadata.
    fn checkpoint_meta(
        &self,
        agent: &AgentId,
        lsn: Lsn,
    ) -> Result<Option<CheckpointMeta>, JournalError>;
    /// The newest checkpoint that verifies, and the newer ones that did not.
    fn latest_valid(&self, agent: &AgentId) -> Result<LatestValid, JournalError>;
    /// The newest checkpoint's metadata.
    fn latest_meta(&self, agent: &AgentId) -> Result<Option<CheckpointMeta>, JournalError>;
    /// Every checkpoint's metadata, oldest first.
    fn list_checkpoints(&self, agent: &AgentId) -> Result<Vec<CheckpointMeta>, JournalError>;
    /// Keeps the newest `keep` checkpoints of `agent` and the one at `also`; deletes older.
    fn retain_checkpoints(
        &self,
        agent: &AgentId,
        keep: usize,
        also: Option<Lsn>,
    ) -> Result<(), JournalError>;
    /// Deletes one checkpoint; whether it existed.
    fn delete_checkpoint(&self, agent: &AgentId, lsn: Lsn) -> Result<bool, JournalError>;
    /// Makes the checkpoints stored so far durable.
    fn sync_checkpoints(&self) -> Result<(), JournalError>;
    /// [`sync_checkpoints`](Self::sync_checkpoints) for async callers: a store whose
    /// checkpoint writes run on the caller's runtime (the cluster's) waits for them here
    /// without holding a thread, which on a current-thread runtime would never let them
    /// finish. The default runs the blocking one.
    fn sync_checkpoints_async(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send + '_>> {
        Box::pin(async move { self.sync_checkpoints() })
    }

    /// The local WAL, when that is what the store is (for operators' tools).
    fn wal(&self) -> Option<&Wal> {
        None
    }
    /// The local vault, when the store has one (registry, modules, lineage live there too).
    fn vault(&self) -> Option<&Vault> {
        None
    }
}
