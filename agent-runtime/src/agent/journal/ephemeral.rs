//! The store of a system without a data directory: it keeps nothing, so every append is
//! acknowledged at once, nothing reads back, and no checkpoint exists. Agents then live in
//! memory only; a restarted agent starts from its init config.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use arbor_vault::{AgentId, Checkpoint, CheckpointMeta, LatestValid, NewCheckpoint};
use arbor_wal::Lsn;

use super::store::{Ack, JournalStore, Records};
use crate::agent::error::JournalError;

/// Counts positions so acknowledgements stay ordered; stores nothing.
#[derive(Default)]
pub(crate) struct Ephemeral {
    last: AtomicU64,
}

impl JournalStore for Ephemeral {
    fn is_durable(&self) -> bool {
        false
    }

    fn append(&self, _agent: &str, records: &[&[u8]]) -> Result<Ack, JournalError> {
        let lsn =
            self.last.fetch_add(records.len() as u64, Ordering::Relaxed) + records.len() as u64;
        Ok(Ack::done(lsn))
    }

    fn read(&self, _agent: &str, _from: Lsn) -> Result<Records, JournalError> {
        Ok(Box::new(std::iter::empty()))
    }

    fn first(&self) -> Lsn {
        self.last.load(Ordering::Relaxed) + 1
    }

    fn last(&self) -> Lsn {
        self.last.load(Ordering::Relaxed)
    }

    fn sync(&self) -> Pin<Box<dyn Future<Output = Result<Lsn, JournalError>> + Send + '_>> {
        Box::pin(async move { Ok(self.last()) })
    }

    fn sync_blocking(&self) -> Result<Lsn, JournalError> {
        Ok(self.last())
    }

    fn release_points(&self) -> Vec<Lsn> {
        Vec::new()
    }

    fn release_before(&self, _lsn: Lsn) -> Result<(), JournalError> {
        Ok(())
    }

    fn release_point_bytes(&self) -> u64 {
        1
    }

    fn put_checkpoint(&self, _checkpoint: &NewCheckpoint<'_>) -> Result<(), JournalError> {
        Ok(())
    }

    fn checkpoint(&self, _agent: &AgentId, _lsn: Lsn) -> Result<Option<Checkpoint>, JournalError> {
        Ok(None)
    }

    fn checkpoint_meta(
        &self,
        _agent: &AgentId,
        _lsn: Lsn,
    ) -> Result<Option<CheckpointMeta>, JournalError> {
        Ok(None)
    }

    fn latest_valid(&self, _agent: &AgentId) -> Result<LatestValid, JournalError> {
        Ok(LatestValid::none())
    }

    fn latest_meta(&self, _agent: &AgentId) -> Result<Option<CheckpointMeta>, JournalError> {
        Ok(None)
    }

    fn list_checkpoints(&self, _agent: &AgentId) -> Result<Vec<CheckpointMeta>, JournalError> {
        Ok(Vec::new())
    }

    fn retain_checkpoints(
        &self,
        _agent: &AgentId,
        _keep: usize,
        _also: Option<Lsn>,
    ) -> Result<(), JournalError> {
        Ok(())
    }

    fn delete_checkpoint(&self, _agent: &AgentId, _lsn: Lsn) -> Result<bool, JournalError> {
        Ok(false)
    }

    fn sync_checkpoints(&self) -> Result<(), JournalError> {
        Ok(())
    }
}
