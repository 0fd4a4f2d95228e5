//! The embedded store: the runtime's one segmented WAL (shared by all agents, so one
//! fdatasync covers many agents' records) and the sled vault's checkpoints.

use std::future::Future;
use std::pin::Pin;

use arbor_vault::{AgentId, Checkpoint, CheckpointMeta, LatestValid, NewCheckpoint, Vault};
use arbor_wal::{Lsn, Wal};

use super::store::{Ack, JournalStore, Records};
use crate::agent::error::JournalError;

/// The WAL and the vault of one data directory.
pub(crate) struct LocalStore {
    pub(crate) wal: Wal,
    pub(crate) vault: Vault,
}

impl JournalStore for LocalStore {
    fn is_durable(&self) -> bool {
        true
    }

    fn append(&self, _agent: &str, records: &[&[u8]]) -> Result<Ack, JournalError> {
        let appended = match records {
            [one] => self.wal.append(one)?,
            many => self.wal.append_batch(many)?,
        };
        Ok(Ack::wal(appended))
    }

    fn read(&self, _agent: &str, from: Lsn) -> Result<Records, JournalError> {
        let first = self.wal.first_lsn();
        if from < first {
            return Err(JournalError::Released { first, asked: from });
        }
        let records = self.wal.read_from(from)?;
        Ok(Box::new(records.map(|record| {
            record
                .map(|record| (record.lsn, record.payload))
                .map_err(JournalError::from)
        })))
    }

    fn first(&self) -> Lsn {
        self.wal.first_lsn()
    }

    fn last(&self) -> Lsn {
        self.wal.last_lsn()
    }

    fn sync(&self) -> Pin<Box<dyn Future<Output = Result<Lsn, JournalError>> + Send + '_>> {
        Box::pin(async move { self.wal.sync_async().await.map_err(JournalError::from) })
    }

    fn sync_blocking(&self) -> Result<Lsn, JournalError> {
        self.wal.sync().map_err(JournalError::from)
    }

    fn release_points(&self) -> Vec<Lsn> {
        self.wal.segment_first_lsns()
    }

    fn release_before(&self, lsn: Lsn) -> Result<(), JournalError> {
        self.wal.truncate_before(lsn)?;
        Ok(())
    }

    fn release_point_bytes(&self) -> u64 {
        self.wal.config().segment_size()
    }

    fn put_checkpoint(&self, checkpoint: &NewCheckpoint<'_>) -> Result<(), JournalError> {
        self.vault.put_checkpoint(checkpoint)?;
        Ok(())
    }

    fn checkpoint(&self, agent: &AgentId, lsn: Lsn) -> Result<Option<Checkpoint>, JournalError> {
        Ok(self.vault.get_checkpoint(agent, lsn)?)
    }

    fn checkpoint_meta(
        &self,
        agent: &AgentId,
        lsn: Lsn,
    ) -> Result<Option<CheckpointMeta>, JournalError> {
        Ok(self.vault.checkpoint_meta(agent, lsn)?)
    }

    fn latest_valid(&self, agent: &AgentId) -> Result<LatestValid, JournalError> {
        Ok(self.vault.latest_valid(agent)?)
    }

    fn latest_meta(&self, agent: &AgentId) -> Result<Option<CheckpointMeta>, JournalError> {
        Ok(self.vault.latest_meta(agent)?)
    }

    fn list_checkpoints(&self, agent: &AgentId) -> Result<Vec<CheckpointMeta>, JournalError> {
        Ok(self.vault.list_checkpoints(agent)?)
    }

    fn retain_checkpoints(
        &self,
        agent: &AgentId,
        keep: usize,
        also: Option<Lsn>,
    ) -> Result<(), JournalError> {
        self.vault.retain_keeping(agent, keep, also)?;
        Ok(())
    }

    fn delete_checkpoint(&self, agent: &AgentId, lsn: Lsn) -> Result<bool, JournalError> {
        Ok(self.vault.delete_checkpoint(agent, lsn)?)
    }

    fn sync_checkpoints(&self) -> Result<(), JournalError> {
        self.vault.sync()?;
        Ok(())
    }

    fn wal(&self) -> Option<&Wal> {
        Some(&self.wal)
    }

    fn vault(&self) -> Option<&Vault> {
        Some(&self.vault)
    }
}
