//! Changing what runs an agent while it runs: a hot swap (the state migrates into a new
//! behaviour), a promotion (a swap that keeps the state before it for a rollback), and a
//! rebuild (rollback or restore: a stored or given state, replayed forward, in a fresh
//! instance). Inputs wait in the mailbox meanwhile; until the new state is committed a failure
//! leaves the agent as it was.

use std::sync::Arc;
use std::time::Instant;

use super::Agent;
use crate::agent::error::{AgentError, SwapError};
use crate::agent::msg::{
    AfterRestore, RebuildReport, Reply, RestoreFrom, StateCheck, SwapReport, send,
};
use crate::agent::recovery::{self, RebaseFailed};
use crate::behaviour::{Behaviour, BehaviourError};
use crate::envelope::{BehaviourId, Entry};

impl Agent {
    fn swap_refused(&self, reason: SwapError) -> AgentError {
        AgentError::SwapRefused {
            agent: self.spec.name.clone(),
            reason,
        }
    }

    /// Snapshots the old behaviour, restores into `next`, checks the migration, journals the
    /// swap and runs `next`; answers once the swap record is durable (and, for a promotion,
    /// once the state before it is stored as a checkpoint, off the actor).
    pub(super) fn swap(
        &mut self,
        mut next: Box<dyn Behaviour>,
        id: BehaviourId,
        keep_checkpoint: bool,
        check: Option<StateCheck>,
        reply: Reply<SwapReport>,
    ) -> Result<(), AgentError> {
        let paused = Instant::now();
        let state = match self.snapshot("snapshot for swap") {
            Ok(state) => state,
            Err(error) => {
                let crash = matches!(error, AgentError::Crashed { .. }).then(|| error.clone());
                send(reply, Err(error));
                return crash.map_or(Ok(()), Err);
            }
        };
        if let Err(source) = next.restore(&state) {
            let refused = SwapError::StateRefused {
                behaviour: id,
                source,
            };
            send(reply, Err(self.swap_refused(refused)));
            return Ok(());
        }
        if let Some(check) = check {
            let checked = next
                .snapshot()
                .map_err(|e| format!("{id} cannot snapshot the migrated state: {e}"))
                .and_then(|migrated| check(&state, &migrated));
            if let Err(reason) = checked {
                send(reply, Err(self.swap_refused(SwapError::Check(reason))));
                return Ok(());
            }
        }
        let journal = &self.context.journal;
        // Everything of this agent before the swap record; the promotion checkpoint claims it.
        let before_swap = journal.last_of(&self.spec.name);
        let entry = Entry::Swap {
            agent: self.spec.name.clone(),
            seq: self.seq,
            behaviour: id.clone(),
        };
        let records = if journal.is_durable() {
            vec![entry.encode()]
        } else {
            Vec::new()
        };
        let records: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let ack = match journal.append(&self.spec.name, &records) {
            Ok(ack) => ack,
            Err(error) => {
                send(reply, Err(self.swap_refused(SwapError::Journal(error))));
                return Ok(());
            }
        };
        let from = std::mem::replace(&mut self.behaviour_id, id.clone());
        self.behaviour = next;
        let pause = paused.elapsed();
        self.update_registry(false);
        let mut report = SwapReport {
            pause,
            from: from.clone(),
            to: id,
            state_bytes: state.len(),
            seq: self.seq,
            checkpoint_lsn: None,
        };
        if !(keep_checkpoint && journal.is_durable()) {
            self.completer.after_durable(
                ack,
                None,
                Box::new(move |durable, _| send(reply, durable.map(|()| report))),
            );
            return Ok(());
        }
        // Held now, before any later checkpoint of this agent can release the log past it.
        journal.hold(&self.spec.name, before_swap);
        // The old state goes to the checkpoint store off the actor, once the swap record is
        // durable: the agent already runs the new behaviour.
        let context = Arc::clone(&self.context);
        let agent = self.id.clone();
        let seq = self.seq;
        self.completer.after_durable(
            ack,
            None,
            Box::new(move |durable, _| {
                if let Err(error) = durable {
                    context.journal.unhold(agent.as_str());
                    send(reply, Err(error));
                    return;
                }
                tokio::spawn(async move {
                    let journal = &context.journal;
                    let stored = journal
                        .store_checkpoint(&arbor_vault::NewCheckpoint {
                            agent: &agent,
                            lsn: before_swap,
                            seq,
                            module: from.checkpoint_hash(),
                            abi_version: 1,
                            state_schema: 0,
                            state: &state,
                        })
                        .await;
                    match stored {
                        Ok(lsn) => report.checkpoint_lsn = Some(lsn),
                        Err(error) => {
                            journal.unhold(agent.as_str());
                            tracing::warn!(agent = agent.as_str(), %error, "promotion checkpoint failed");
                        }
                    }
                    send(reply, Ok(report));
                });
            }),
        );
        Ok(())
    }

    /// Rebuilds the agent's state in `previous` from `from` and (per `after`) the agent's
    /// applied inputs after it, stores the rebuilt state as a checkpoint at the journal's end,
    /// journals [`Entry::Rebase`] and runs `previous` from then on.
    pub(super) async fn rebuild(
        &mut self,
        mut previous: Box<dyn Behaviour>,
        id: BehaviourId,
        from: RestoreFrom,
        after: AfterRestore,
    ) -> Result<RebuildReport, AgentError> {
        let started = Instant::now();
        let context = Arc::clone(&self.context);
        let journal = &context.journal;
        if !journal.is_durable() {
            return Err(self.swap_refused(SwapError::NoJournal));
        }
        let replayed = recovery::rebuild(journal, &self.id, &from, after, &id, previous.as_mut())
            .map_err(|e| self.swap_refused(SwapError::Rebuild(e)))?;
        let state = previous.snapshot().map_err(|source| {
            self.swap_refused(SwapError::Rebuild(
                crate::agent::error::RecoveryError::Snapshot {
                    behaviour: id.clone(),
                    source,
                },
            ))
        })?;
        // Once the checkpoint is stored the rollback has happened (recovery starts from it): a
        // failure after that must not leave this instance running, so the agent crashes and
        // its supervisor recovers it from the journal.
        let lsn = match recovery::commit_rebase(journal, &self.id, &id, self.seq, &state).await {
            Ok(lsn) => lsn,
            Err(RebaseFailed::Checkpoint(error)) => return Err(error.into()),
            Err(RebaseFailed::Afterwards(error)) => {
                return Err(self.crash(
                    self.seq,
                    "(rollback)".into(),
                    BehaviourError::Contract(format!("rollback after its checkpoint: {error}")),
                ));
            }
        };
        let from = std::mem::replace(&mut self.behaviour_id, id.clone());
        self.behaviour = previous;
        self.checkpoint_lsn = Some(lsn);
        self.inputs_since_checkpoint = 0;
        journal.unhold(&self.spec.name);
        self.update_registry(true);
        Ok(RebuildReport {
            pause: started.elapsed(),
            from,
            to: id,
            replayed,
            checkpoint_lsn: lsn,
            seq: self.seq,
        })
    }
}
