//! Rebuilding an agent's state from its checkpoints and journal: recovery (newest valid
//! checkpoint, then every step after it), rebuilds for rollbacks and restores (a given state,
//! then the applied inputs since, through one behaviour), and committing a rebuilt state.
//! What each does with a step is [`decide`]'s table, shared with the evolution arbiter's gate.

use std::time::{Duration, Instant};

use arbor_vault::{AgentId, NewCheckpoint};
use arbor_wal::Lsn;

use super::error::{JournalError, RecoveryError, ReplayError};
use super::journal::Journal;
use super::msg::{AfterRestore, RestoreFrom};
use super::services::Services;
use super::spec::AgentSpec;
use super::steps::{Action, Purpose, Step, decide, steps};
use crate::behaviour::Behaviour;
use crate::envelope::{Answer, BehaviourId, Entry, Envelope};
use crate::host::Host;

/// What recovering an agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The journal position of the checkpoint it started from.
    pub checkpoint_lsn: Lsn,
    /// Newer checkpoints that failed verification and were passed over.
    pub skipped_checkpoints: Vec<Lsn>,
    /// Inputs replayed (handled again with their journaled answers).
    pub replayed: u64,
    /// Inputs passed over because the behaviour refused or crashed on them live.
    pub refused_or_crashed: u64,
    /// Inputs journaled without an outcome: the crash came before they were acknowledged, so
    /// they were not applied.
    pub unacknowledged: Vec<u64>,
    /// Swaps replayed.
    pub swaps: u64,
    /// The agent's last input number.
    pub seq: u64,
    /// The behaviour it runs now.
    pub behaviour: BehaviourId,
    /// How long it took.
    pub took: Duration,
}

/// Makes an instance of `behaviour` with `spec`'s limits and grants.
fn instance(
    services: &Services,
    behaviour: &BehaviourId,
    spec: &AgentSpec,
) -> Result<Box<dyn Behaviour>, RecoveryError> {
    services
        .instantiate(behaviour, &spec.limits, &spec.capabilities)
        .map_err(|source| RecoveryError::Instantiate {
            behaviour: behaviour.clone(),
            source,
        })
}

/// Recovers `spec`'s agent: its newest valid checkpoint, then every step of its journal after
/// it, as [`decide`] says for [`Purpose::Recover`].
pub(crate) fn recover(
    services: &Services,
    journal: &Journal,
    spec: &AgentSpec,
    id: &AgentId,
) -> Result<(Box<dyn Behaviour>, RecoveryReport), RecoveryError> {
    let started = Instant::now();
    let store = journal.store();
    let latest = store.latest_valid(id)?;
    let skipped_checkpoints: Vec<Lsn> = latest.skipped.iter().map(|s| s.lsn).collect();
    for skipped in &latest.skipped {
        tracing::warn!(agent = id.as_str(), lsn = skipped.lsn, error = %skipped.error, "checkpoint skipped");
    }
    let Some(checkpoint) = latest.checkpoint else {
        return Err(if skipped_checkpoints.is_empty() {
            RecoveryError::NoCheckpoint
        } else {
            RecoveryError::NoValidCheckpoint(skipped_checkpoints)
        });
    };
    let mut behaviour_id = services.behaviour_for(&checkpoint.meta.module, &spec.behaviour);
    let mut behaviour = instance(services, &behaviour_id, spec)?;
    restore(
        behaviour.as_mut(),
        &behaviour_id,
        &checkpoint.state,
        format!("checkpoint {}", checkpoint.meta.lsn),
    )?;
    let mut report = RecoveryReport {
        checkpoint_lsn: checkpoint.meta.lsn,
        skipped_checkpoints,
        replayed: 0,
        refused_or_crashed: 0,
        unacknowledged: Vec::new(),
        swaps: 0,
        seq: checkpoint.meta.seq,
        behaviour: behaviour_id.clone(),
        took: Duration::ZERO,
    };
    // Records before the checkpoint may be released; the release rule keeps every record after
    // an agent's pin, which is at or before its newest checkpoint.
    let from = (checkpoint.meta.lsn + 1).max(store.first());
    for step in steps(store.read(id.as_str(), from)?, id.as_str()) {
        let (lsn, step) = step?;
        report.seq = report.seq.max(step_seq(&step));
        match (decide(&step, Purpose::Recover), step) {
            (Action::Apply, Step::Handled { input, answers, .. }) => {
                replay_input(behaviour.as_mut(), &input, answers)?;
                report.replayed += 1;
            }
            (Action::Skip, Step::Handled { .. }) => report.refused_or_crashed += 1,
            (Action::SkipUnacknowledged, Step::Unacknowledged(input)) => {
                report.unacknowledged.push(input.seq);
            }
            (
                Action::Swap,
                Step::Swap {
                    seq,
                    behaviour: next,
                },
            ) => {
                let state = behaviour
                    .snapshot()
                    .map_err(|source| RecoveryError::Snapshot {
                        behaviour: behaviour_id.clone(),
                        source,
                    })?;
                let mut swapped = instance(services, &next, spec)?;
                restore(
                    swapped.as_mut(),
                    &next,
                    &state,
                    format!("the swap after input {seq}"),
                )?;
                behaviour = swapped;
                behaviour_id = next;
                report.swaps += 1;
            }
            (
                Action::Rebase,
                Step::Rebase {
                    behaviour: next,
                    checkpoint_lsn,
                    ..
                },
            ) => {
                // Starting from that very checkpoint (holding that behaviour's state), there
                // is nothing to redo.
                if checkpoint_lsn != report.checkpoint_lsn || behaviour_id != next {
                    let mut rebased = instance(services, &next, spec)?;
                    restore_stored(journal, id, checkpoint_lsn, &next, rebased.as_mut())?;
                    behaviour = rebased;
                }
                behaviour_id = next;
                report.swaps += 1;
            }
            (_, Step::Orphan { seq }) => return Err(RecoveryError::Orphan { lsn, seq }),
            // The table and this match disagree: a bug, refused rather than guessed.
            (action, step) => return Err(unexpected(action, &step, lsn)),
        }
    }
    report.behaviour = behaviour_id;
    report.took = started.elapsed();
    Ok((behaviour, report))
}

/// The highest input number a step names.
fn step_seq(step: &Step) -> u64 {
    match step {
        Step::Handled { input, .. } | Step::Unacknowledged(input) => input.seq,
        Step::Orphan { seq } | Step::Swap { seq, .. } | Step::Rebase { seq, .. } => *seq,
    }
}

fn unexpected(action: Action, step: &Step, lsn: Lsn) -> RecoveryError {
    RecoveryError::Replay {
        seq: step_seq(step),
        source: ReplayError::Diverged(format!(
            "journal record {lsn}: no rule applies {action:?} to {:?}",
            step.kind()
        )),
    }
}

fn restore(
    behaviour: &mut dyn Behaviour,
    id: &BehaviourId,
    state: &[u8],
    at: String,
) -> Result<(), RecoveryError> {
    behaviour
        .restore(state)
        .map_err(|source| RecoveryError::StateRefused {
            behaviour: id.clone(),
            at,
            source,
        })
}

/// Handles one applied input again with its journaled answers.
pub(crate) fn replay_input(
    behaviour: &mut dyn Behaviour,
    input: &Envelope,
    answers: Vec<Answer>,
) -> Result<(), RecoveryError> {
    let seq = input.seq;
    let mut host = Host::replay(answers);
    let handled = behaviour.handle(&input.payload, &mut host);
    if let Some(divergence) = host.replayed().and_then(|replay| replay.divergence()) {
        return Err(RecoveryError::Replay {
            seq,
            source: ReplayError::Diverged(divergence),
        });
    }
    handled.map(drop).map_err(|error| RecoveryError::Replay {
        seq,
        source: ReplayError::Failed(error),
    })
}

/// Restores `agent`'s checkpoint at `lsn` into `behaviour` (an instance of `id`).
fn restore_stored(
    journal: &Journal,
    agent: &AgentId,
    lsn: Lsn,
    id: &BehaviourId,
    behaviour: &mut dyn Behaviour,
) -> Result<(), RecoveryError> {
    let checkpoint = journal
        .store()
        .checkpoint(agent, lsn)?
        .ok_or(RecoveryError::CheckpointGone(lsn))?;
    restore(
        behaviour,
        id,
        &checkpoint.state,
        format!("checkpoint {lsn}"),
    )
}

/// A rollback's or restore's rebuild: `from` (a stored checkpoint of `agent`, or given state)
/// restored into `behaviour` (a fresh instance of `id`), then, with [`AfterRestore::Replay`],
/// every input the agent applied after it, replayed through `behaviour` with its journaled
/// answers whatever behaviour handled it live ([`Purpose::Rebuild`]). Returns the number of
/// inputs replayed.
pub(crate) fn rebuild(
    journal: &Journal,
    agent: &AgentId,
    from: &RestoreFrom,
    after: AfterRestore,
    id: &BehaviourId,
    behaviour: &mut dyn Behaviour,
) -> Result<u64, RecoveryError> {
    let lsn = match from {
        RestoreFrom::Checkpoint(lsn) => {
            restore_stored(journal, agent, *lsn, id, behaviour)?;
            *lsn
        }
        RestoreFrom::State { state, lsn } => {
            restore(behaviour, id, state, "the given state".into())?;
            *lsn
        }
    };
    if after == AfterRestore::Discard {
        return Ok(0);
    }
    let store = journal.store();
    let mut replayed = 0;
    for step in steps(store.read(agent.as_str(), lsn + 1)?, agent.as_str()) {
        let (at, step) = step?;
        match (decide(&step, Purpose::Rebuild), step) {
            (Action::Apply, Step::Handled { input, answers, .. }) => {
                replay_input(behaviour, &input, answers)?;
                replayed += 1;
            }
            (Action::Skip, _) => {}
            (_, Step::Orphan { seq }) => return Err(RecoveryError::Orphan { lsn: at, seq }),
            (action, step) => return Err(unexpected(action, &step, at)),
        }
    }
    Ok(replayed)
}

/// Why [`commit_rebase`] failed: before its checkpoint was stored nothing changed; after it,
/// recovery already starts from the rebuilt state, so whoever runs the old state must stop.
pub(crate) enum RebaseFailed {
    /// Storing the checkpoint failed; nothing changed.
    Checkpoint(JournalError),
    /// The checkpoint is stored but syncing it or journaling the rebase failed.
    Afterwards(JournalError),
}

/// Makes a rebuilt state `agent`'s own: stores it as a checkpoint at the journal's end (every
/// record of the agent is before it), syncs the checkpoints, then journals [`Entry::Rebase`]
/// onto it and waits until that is durable. The checkpoint goes first, so the rebase record
/// never names a checkpoint a crash lost. Returns the checkpoint's position.
pub(crate) async fn commit_rebase(
    journal: &Journal,
    agent: &AgentId,
    behaviour: &BehaviourId,
    seq: u64,
    state: &[u8],
) -> Result<Lsn, RebaseFailed> {
    let lsn = journal.last_of(agent.as_str());
    journal
        .store_checkpoint(&NewCheckpoint {
            agent,
            lsn,
            seq,
            module: behaviour.checkpoint_hash(),
            abi_version: 1,
            state_schema: 0,
            state,
        })
        .await
        .map_err(RebaseFailed::Checkpoint)?;
    journal
        .store()
        .sync_checkpoints_async()
        .await
        .map_err(RebaseFailed::Afterwards)?;
    let entry = Entry::Rebase {
        agent: agent.as_str().to_string(),
        seq,
        behaviour: behaviour.clone(),
        checkpoint_lsn: lsn,
    };
    let ack = journal
        .append(agent.as_str(), &[&entry.encode()])
        .map_err(RebaseFailed::Afterwards)?;
    ack.wait().await.map_err(RebaseFailed::Afterwards)?;
    Ok(lsn)
}

/// The number of `agent`'s last journaled input, read without running its behaviour: the
/// newest checkpoint's, or a later one in the journal (every step counts, as in [`recover`]).
pub(crate) fn last_seq(journal: &Journal, agent: &AgentId) -> Result<u64, JournalError> {
    let store = journal.store();
    let newest = store.latest_meta(agent)?;
    let (mut seq, from) = newest.map_or((0, 0), |meta| (meta.seq, meta.lsn + 1));
    for step in steps(
        store.read(agent.as_str(), from.max(store.first()))?,
        agent.as_str(),
    ) {
        seq = seq.max(step_seq(&step?.1));
    }
    Ok(seq)
}
