//! Checkpoints: when the policy says so, when the journal asks (the agent pins its oldest
//! release point), when asked, and a final one when the agent stops.

use std::time::{Duration, Instant};

use arbor_vault::{AgentId, NewCheckpoint};
use arbor_wal::Lsn;

use super::Agent;
use crate::agent::error::{AgentError, JournalError};
use crate::agent::journal::Journal;
use crate::agent::msg::AgentMsg;
use crate::envelope::BehaviourId;

/// Stores an agent's first checkpoint, its state after `init`, at the journal's end (for a
/// spawn: nothing of the agent is journaled yet).
pub(crate) async fn store_first_checkpoint(
    journal: &Journal,
    agent: &AgentId,
    behaviour: &BehaviourId,
    state: &[u8],
) -> Result<Lsn, JournalError> {
    journal
        .store_checkpoint(&NewCheckpoint {
            agent,
            lsn: journal.last_of(agent.as_str()),
            seq: 0,
            module: behaviour.checkpoint_hash(),
            abi_version: 1,
            state_schema: 0,
            state,
        })
        .await
}

impl Agent {
    /// Sends the agent a [`AgentMsg::CheckpointTimer`] after `after`, unless one is on its way.
    pub(super) fn arm_checkpoint_timer(&mut self, after: Duration) {
        if !self.checkpoint_timer {
            self.checkpoint_timer = true;
            // If the actor is gone by then, the message has nowhere to go, which is fine.
            drop(self.myself.send_after(after, || AgentMsg::CheckpointTimer));
        }
    }

    pub(super) async fn checkpoint_if_due(&mut self) -> Result<(), AgentError> {
        let journal = &self.context.journal;
        if !journal.is_durable() {
            return Ok(());
        }
        let policy = &journal.policy;
        if self.inputs_since_checkpoint < policy.every_records
            && self.last_checkpoint.elapsed() < policy.every
        {
            if self.inputs_since_checkpoint > 0 {
                let left = policy.every.saturating_sub(self.last_checkpoint.elapsed());
                self.arm_checkpoint_timer(left);
            }
            return Ok(());
        }
        match self.checkpoint().await {
            Err(crash @ AgentError::Crashed { .. }) => Err(crash),
            Err(error) => {
                tracing::warn!(agent = self.spec.name, %error, "checkpoint failed");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// Snapshots the behaviour into the checkpoint store at the journal's current end (nothing
    /// of this agent comes after it: the actor is here), once the journal is durable up to
    /// there; then releases what the journal's pins allow and asks pinning agents to
    /// checkpoint.
    pub(super) async fn checkpoint(&mut self) -> Result<Lsn, AgentError> {
        let journal = &self.context.journal;
        if !journal.is_durable() {
            return Ok(0);
        }
        let lsn = journal.last_of(&self.spec.name);
        if self.checkpoint_lsn == Some(lsn) {
            journal.checkpoint_unchanged(&self.spec.name);
            return Ok(lsn);
        }
        let state = self.snapshot("snapshot")?;
        let journal = &self.context.journal;
        journal
            .store_checkpoint(&NewCheckpoint {
                agent: &self.id,
                lsn,
                seq: self.seq,
                module: self.behaviour_id.checkpoint_hash(),
                abi_version: 1,
                state_schema: 0,
                state: &state,
            })
            .await?;
        // A held checkpoint (a promotion's, until its watch ends) must outlive the count, and
        // so must the one the agent's kept history starts from.
        journal.retain(&self.id, self.seq)?;
        self.checkpoint_lsn = Some(lsn);
        self.inputs_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        for pinning in journal.release()? {
            if let Some(agent) = self.context.directory.lookup(&pinning) {
                agent.send(AgentMsg::Checkpoint { reply: None });
            }
        }
        Ok(lsn)
    }

    /// The final checkpoint; with `deregister` the registry then says stopped (recovery at
    /// start-up leaves the agent alone) and the agent's pin goes (everything is in the
    /// checkpoint).
    pub(super) async fn stop(&mut self, deregister: bool) -> Result<(), AgentError> {
        if !self.context.journal.is_durable() {
            return Ok(());
        }
        self.checkpoint().await?;
        if !deregister {
            return Ok(());
        }
        let journal = &self.context.journal;
        if let Some(vault) = journal.vault() {
            let mut record = vault
                .agent(&self.id)?
                .ok_or_else(|| AgentError::UnknownAgent(self.spec.name.clone()))?;
            record.state = arbor_vault::AgentState::Stopped;
            vault.put_agent(&record)?;
            vault.sync()?;
        }
        journal.unpin(&self.spec.name);
        Ok(())
    }
}
