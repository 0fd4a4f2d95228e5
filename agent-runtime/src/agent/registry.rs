//! The registry side of [`AgentSystem`]: what the vault records of agents that are not
//! running — whether to recover them, marking them stopped or quarantined, rebuilding one
//! offline, forgetting one.

use std::time::Instant;

use arbor_vault::{AgentState, Vault};

use super::error::{AgentError, RecoveryError};
use super::msg::{AfterRestore, RebuildReport, RestoreFrom};
use super::recovery::{self, RebaseFailed};
use super::spec::{AgentSpec, agent_id};
use super::system::AgentSystem;

impl AgentSystem {
    /// Whether the registry has `name` as a running agent (so it is recovered, not spawned).
    pub fn is_registered(&self, name: &str) -> Result<bool, AgentError> {
        Ok(self.registered_state(name)? == Some(AgentState::Running))
    }

    /// What the registry says of `name`: running (to be recovered), stopped on purpose, or
    /// nothing (never spawned, or the system does not journal).
    pub fn registered_state(&self, name: &str) -> Result<Option<AgentState>, AgentError> {
        let Some(vault) = self.context.journal.vault() else {
            return Ok(None);
        };
        let id = agent_id(name)?;
        Ok(vault.agent(&id)?.map(|record| record.state))
    }

    /// Sets `name`'s registry state (and the reason shown to operators) and syncs the vault:
    /// e.g. [`AgentState::Quarantined`] after its recovery failed, [`AgentState::Terminated`]
    /// after a temporary agent exited. Does nothing without a journal or without a record.
    pub fn mark_registered(
        &self,
        name: &str,
        state: AgentState,
        reason: Option<String>,
    ) -> Result<(), AgentError> {
        let Some(vault) = self.context.journal.vault() else {
            return Ok(());
        };
        let id = agent_id(name)?;
        let Some(mut record) = vault.agent(&id)? else {
            return Ok(());
        };
        record.state = state;
        record.reason = reason;
        vault.put_agent(&record)?;
        Ok(vault.sync()?)
    }

    /// Rebuilds the state of `name`, which is registered but not running (e.g. quarantined
    /// because its newest checkpoint cannot be restored), without starting it: `from` (an
    /// older checkpoint, or exported state) is restored into a fresh instance of the behaviour
    /// that wrote it, the inputs journaled after it are replayed or dropped as `after` says,
    /// and the result is stored as the agent's newest checkpoint with a rebase record, so the
    /// next [`recover`](Self::recover) starts from it. The registry then says running. If any
    /// step before the checkpoint fails nothing changes.
    pub async fn rebuild_registered(
        &self,
        name: &str,
        from: RestoreFrom,
        after: AfterRestore,
    ) -> Result<RebuildReport, AgentError> {
        let started = Instant::now();
        let id = agent_id(name)?;
        if self.context.directory.is_running(name) {
            return Err(AgentError::Running(name.into()));
        }
        let refused = |source: RecoveryError| AgentError::Recovery {
            agent: name.into(),
            source,
        };
        let journal = &self.context.journal;
        let vault = self.registry().map_err(refused)?;
        let record = vault
            .agent(&id)?
            .ok_or_else(|| AgentError::UnknownAgent(name.into()))?;
        let mut spec = AgentSpec::from_record(&record);
        let services = &self.context.services;
        let to = match &from {
            RestoreFrom::Checkpoint(lsn) => {
                let meta = journal
                    .store()
                    .checkpoint_meta(&id, *lsn)?
                    .ok_or_else(|| refused(RecoveryError::CheckpointGone(*lsn)))?;
                services.behaviour_for(&meta.module, &spec.behaviour)
            }
            RestoreFrom::State { .. } => spec.behaviour.clone(),
        };
        let mut behaviour = services
            .instantiate(&to, &spec.limits, &spec.capabilities)
            .map_err(|source| {
                refused(RecoveryError::Instantiate {
                    behaviour: to.clone(),
                    source,
                })
            })?;
        let replayed = recovery::rebuild(journal, &id, &from, after, &to, behaviour.as_mut())
            .map_err(refused)?;
        let state = behaviour.snapshot().map_err(|source| {
            refused(RecoveryError::Snapshot {
                behaviour: to.clone(),
                source,
            })
        })?;
        let seq = recovery::last_seq(journal, &id)?;
        journal.pin_from_store(&id)?;
        let lsn = recovery::commit_rebase(journal, &id, &to, seq, &state)
            .await
            .map_err(|failed| match failed {
                RebaseFailed::Checkpoint(error) | RebaseFailed::Afterwards(error) => {
                    AgentError::from(error)
                }
            })?;
        let from_behaviour = std::mem::replace(&mut spec.behaviour, to.clone());
        vault.put_agent(&spec.record(id, AgentState::Running))?;
        vault.sync()?;
        Ok(RebuildReport {
            pause: started.elapsed(),
            from: from_behaviour,
            to,
            replayed,
            checkpoint_lsn: lsn,
            seq,
        })
    }

    /// Forgets `name`, which must not be running: its registry record and every checkpoint go
    /// (its journal records are released with the journal), so the name is free again.
    /// Returns whether there was anything to remove.
    pub fn remove_registered(&self, name: &str) -> Result<bool, AgentError> {
        let id = agent_id(name)?;
        if self.context.directory.is_running(name) {
            return Err(AgentError::Running(name.into()));
        }
        let journal = &self.context.journal;
        let Some(vault) = journal.vault() else {
            return Ok(false);
        };
        let mut removed = vault.remove_agent(&id)?;
        let store = journal.store();
        for meta in store.list_checkpoints(&id)? {
            removed |= store.delete_checkpoint(&id, meta.lsn)?;
        }
        vault.sync()?;
        journal.unpin(name);
        Ok(removed)
    }

    /// The registry, when the system keeps one (a durable journal with a vault).
    fn registry(&self) -> Result<&Vault, RecoveryError> {
        let journal = &self.context.journal;
        journal
            .vault()
            .filter(|_| journal.is_durable())
            .ok_or(RecoveryError::NoJournal)
    }
}
