//! [`NodeStore`]: the journal seam of a cluster node — the agents' records and checkpoints in
//! JetStream ([`JetStreamStore`]), the node's own registry, modules and lineage in a local
//! vault.
//!
//! Why a local vault at all: the agent system keeps what runs each agent (its registry
//! record), the module bytes and the evolution lineage in the store's vault, and the
//! supervision tree starts an agent by reading its record. In a cluster the vault holds only
//! the agents this node owns right now — a cache the ownership loop writes before it starts
//! an agent and clears when it gives one up — while the cluster-wide registry is a KV bucket
//! (`registry.rs`). Nothing in the local vault is needed to recover an agent elsewhere.

use std::future::Future;
use std::pin::Pin;

use arbor_agent::agent::{Ack, Records};
use arbor_agent::{JournalError, JournalStore};
use arbor_cluster::JetStreamStore;
use arbor_vault::{AgentId, Checkpoint, CheckpointMeta, LatestValid, NewCheckpoint, Vault};

/// The replicated journal plus this node's local vault (see the module docs).
pub(crate) struct NodeStore {
    pub(crate) jet: JetStreamStore,
    pub(crate) vault: Vault,
}

type Lsn = u64;

impl JournalStore for NodeStore {
    fn is_durable(&self) -> bool {
        self.jet.is_durable()
    }
    fn append(&self, agent: &str, records: &[&[u8]]) -> Result<Ack, JournalError> {
        self.jet.append(agent, records)
    }
    fn read(&self, agent: &str, from: Lsn) -> Result<Records, JournalError> {
        self.jet.read(agent, from)
    }
    fn first(&self) -> Lsn {
        self.jet.first()
    }
    fn last(&self) -> Lsn {
        self.jet.last()
    }
    fn last_of(&self, agent: &str) -> Lsn {
        self.jet.last_of(agent)
    }
    fn sync(&self) -> Pin<Box<dyn Future<Output = Result<Lsn, JournalError>> + Send + '_>> {
        self.jet.sync()
    }
    fn sync_blocking(&self) -> Result<Lsn, JournalError> {
        self.jet.sync_blocking()
    }
    fn release_points(&self) -> Vec<Lsn> {
        self.jet.release_points()
    }
    fn release_before(&self, lsn: Lsn) -> Result<(), JournalError> {
        self.jet.release_before(lsn)
    }
    fn release_point_bytes(&self) -> u64 {
        self.jet.release_point_bytes()
    }
    fn put_checkpoint(&self, checkpoint: &NewCheckpoint<'_>) -> Result<(), JournalError> {
        self.jet.put_checkpoint(checkpoint)
    }
    fn checkpoint(&self, agent: &AgentId, lsn: Lsn) -> Result<Option<Checkpoint>, JournalError> {
        self.jet.checkpoint(agent, lsn)
    }
    fn checkpoint_meta(
        &self,
        agent: &AgentId,
        lsn: Lsn,
    ) -> Result<Option<CheckpointMeta>, JournalError> {
        self.jet.checkpoint_meta(agent, lsn)
    }
    fn latest_valid(&self, agent: &AgentId) -> Result<LatestValid, JournalError> {
        self.jet.latest_valid(agent)
    }
    fn latest_meta(&self, agent: &AgentId) -> Result<Option<CheckpointMeta>, JournalError> {
        self.jet.latest_meta(agent)
    }
    fn list_checkpoints(&self, agent: &AgentId) -> Result<Vec<CheckpointMeta>, JournalError> {
        self.jet.list_checkpoints(agent)
    }
    fn retain_checkpoints(
        &self,
        agent: &AgentId,
        keep: usize,
        also: Option<Lsn>,
    ) -> Result<(), JournalError> {
        self.jet.retain_checkpoints(agent, keep, also)
    }
    fn delete_checkpoint(&self, agent: &AgentId, lsn: Lsn) -> Result<bool, JournalError> {
        self.jet.delete_checkpoint(agent, lsn)
    }
    fn sync_checkpoints(&self) -> Result<(), JournalError> {
        self.jet.sync_checkpoints()
    }
    fn vault(&self) -> Option<&Vault> {
        Some(&self.vault)
    }
}
