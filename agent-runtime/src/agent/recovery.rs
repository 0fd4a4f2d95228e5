//! Rebuilding an agent: newest valid checkpoint, then its journal records after it.

use std::time::{Duration, Instant};

use arbor_vault::AgentId;
use arbor_wal::Lsn;

use super::agent_ref::{AfterRestore, RestoreFrom};
use super::error::AgentError;
use super::history::Journaled;
use super::host::ReplayHost;
use super::journal::Journal;
use super::system::{AgentSpec, Shared};
use crate::behaviour::Behaviour;
use crate::envelope::{BehaviourId, Entry, Envelope, Status};

/// What recovering an agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The WAL position of the checkpoint it started from.
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

pub(crate) fn recover(
    shared: &Shared,
    journal: &Journal,
    spec: &AgentSpec,
) -> Result<(Box<dyn Behaviour>, RecoveryReport), AgentError> {
    let started = Instant::now();
    let name = spec.name.as_str();
    let failed = |reason: String| AgentError::Recovery {
        agent: name.into(),
        reason,
    };
    let id = AgentId::new(name).map_err(|e| failed(e.to_string()))?;
    let latest = journal
        .vault
        .latest_valid(&id)
        .map_err(|e| AgentError::Vault(e.to_string()))?;
    let skipped_checkpoints: Vec<Lsn> = latest.skipped.iter().map(|s| s.lsn).collect();
    for skipped in &latest.skipped {
        tracing::warn!(agent = name, lsn = skipped.lsn, error = %skipped.error, "checkpoint skipped");
    }
    let Some(checkpoint) = latest.checkpoint else {
        return Err(failed(if skipped_checkpoints.is_empty() {
            "no checkpoint".into()
        } else {
            format!("every checkpoint failed verification (at {skipped_checkpoints:?})")
        }));
    };
    let mut behaviour_id = shared.behaviour_for(&checkpoint.meta.module, &spec.behaviour);
    let mut behaviour = shared
        .instantiate(&behaviour_id, &spec.limits, &spec.capabilities)
        .map_err(&failed)?;
    behaviour.restore(&checkpoint.state).map_err(|e| {
        failed(format!(
            "{behaviour_id} refused checkpoint {}: {e}",
            checkpoint.meta.lsn
        ))
    })?;

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
    // Segments before the checkpoint may be gone; the release rule keeps every record after an
    // agent's pin, which is at or before its newest checkpoint.
    let from = (checkpoint.meta.lsn + 1).max(journal.wal.first_lsn());
    let records = journal
        .wal
        .read_from(from)
        .map_err(|e| AgentError::Journal(e.to_string()))?;
    let mut pending: Option<Envelope> = None;
    for record in records {
        let record = record.map_err(|e| AgentError::Journal(e.to_string()))?;
        let entry = Entry::decode(&record.payload).map_err(|e| {
            failed(format!(
                "WAL record {} is not a journal entry: {e}",
                record.lsn
            ))
        })?;
        if entry.agent() != name {
            continue;
        }
        match entry {
            Entry::Input(envelope) => {
                report.seq = report.seq.max(envelope.seq);
                if let Some(unanswered) = pending.replace(envelope) {
                    report.unacknowledged.push(unanswered.seq);
                }
            }
            Entry::Outcome {
                seq,
                status,
                answers,
                ..
            } => {
                let Some(input) = pending.take().filter(|input| input.seq == seq) else {
                    return Err(failed(format!(
                        "WAL record {}: outcome of input {seq} without the input",
                        record.lsn
                    )));
                };
                if status != Status::Applied {
                    report.refused_or_crashed += 1;
                    continue;
                }
                replay_input(behaviour.as_mut(), &input, answers).map_err(&failed)?;
                report.replayed += 1;
            }
            Entry::Rebase {
                behaviour: next,
                checkpoint_lsn,
                seq,
                ..
            } => {
                // Starting from that very checkpoint (holding that behaviour's state), there is
                // nothing to redo.
                if checkpoint_lsn != report.checkpoint_lsn || behaviour_id != next {
                    let mut rebased = shared
                        .instantiate(&next, &spec.limits, &spec.capabilities)
                        .map_err(&failed)?;
                    restore_checkpoint(journal, &id, checkpoint_lsn, &next, rebased.as_mut())
                        .map_err(&failed)?;
                    behaviour = rebased;
                }
                behaviour_id = next;
                report.seq = report.seq.max(seq);
                report.swaps += 1;
            }
            Entry::Swap {
                behaviour: next, ..
            } => {
                let state = behaviour
                    .snapshot()
                    .map_err(|e| failed(format!("snapshot for the swap to {next}: {e}")))?;
                let mut swapped = shared
                    .instantiate(&next, &spec.limits, &spec.capabilities)
                    .map_err(&failed)?;
                swapped
                    .restore(&state)
                    .map_err(|e| failed(format!("{next} refused the state at the swap: {e}")))?;
                behaviour = swapped;
                behaviour_id = next;
                report.swaps += 1;
            }
        }
    }
    if let Some(unanswered) = pending {
        report.unacknowledged.push(unanswered.seq);
    }
    report.behaviour = behaviour_id;
    report.took = started.elapsed();
    Ok((behaviour, report))
}

/// Handles one applied input again with its journaled answers.
fn replay_input(
    behaviour: &mut dyn Behaviour,
    input: &Envelope,
    answers: Vec<crate::envelope::Answer>,
) -> Result<(), String> {
    let seq = input.seq;
    let mut host = ReplayHost::new(answers);
    let handled = behaviour.handle(&input.payload, &mut host);
    if let Some(divergence) = host.divergence() {
        return Err(format!(
            "replay of input {seq} diverged from the journal: {divergence}"
        ));
    }
    handled
        .map(drop)
        .map_err(|error| format!("input {seq} was applied live but fails in replay: {error}"))
}

/// Restores `agent`'s checkpoint at `lsn` into `behaviour` (an instance of `id`).
fn restore_checkpoint(
    journal: &Journal,
    agent: &AgentId,
    lsn: Lsn,
    id: &BehaviourId,
    behaviour: &mut dyn Behaviour,
) -> Result<(), String> {
    let checkpoint = journal
        .vault
        .get_checkpoint(agent, lsn)
        .map_err(|e| format!("checkpoint {lsn}: {e}"))?
        .ok_or_else(|| format!("checkpoint {lsn} is gone"))?;
    behaviour
        .restore(&checkpoint.state)
        .map_err(|e| format!("{id} refused checkpoint {lsn}: {e}"))
}

/// A rollback's or restore's rebuild: `from` (a stored checkpoint of `agent`, or given state)
/// restored into `behaviour` (a fresh instance of `id`), then, with [`AfterRestore::Replay`],
/// every input of the agent applied after it, replayed through `behaviour` with its journaled
/// answers whatever behaviour handled it live (swaps are passed over). Returns the number of
/// inputs replayed.
pub(crate) fn rebuild(
    journal: &Journal,
    agent: &AgentId,
    from: &RestoreFrom,
    after: AfterRestore,
    id: &BehaviourId,
    behaviour: &mut dyn Behaviour,
) -> Result<u64, String> {
    let lsn = match from {
        RestoreFrom::Checkpoint(lsn) => {
            restore_checkpoint(journal, agent, *lsn, id, behaviour)?;
            *lsn
        }
        RestoreFrom::State { state, lsn } => {
            behaviour
                .restore(state)
                .map_err(|e| format!("{id} refused the given state: {e}"))?;
            *lsn
        }
    };
    if after == AfterRestore::Discard {
        return Ok(0);
    }
    if lsn + 1 < journal.wal.first_lsn() {
        return Err(format!(
            "the WAL no longer holds the inputs after LSN {lsn} (it starts at {}): restore with \
             discard, or from a newer checkpoint",
            journal.wal.first_lsn()
        ));
    }
    let mut replayed = 0;
    for step in super::history::history(&journal.wal, agent.as_str(), lsn + 1)? {
        if let (
            _,
            Journaled::Handled {
                input,
                status: Status::Applied,
                answers,
            },
        ) = step?
        {
            replay_input(behaviour, &input, answers)?;
            replayed += 1;
        }
    }
    Ok(replayed)
}

/// Why [`commit_rebase`] failed: before its checkpoint was stored nothing changed; after it,
/// recovery already starts from the rebuilt state, so whoever runs the old state must stop.
pub(crate) enum RebaseFailed {
    /// Storing the checkpoint failed; nothing changed.
    Checkpoint(AgentError),
    /// The checkpoint is stored but syncing it or journaling the rebase failed (`what`, why).
    Afterwards(&'static str, String),
}

/// Makes a rebuilt state `agent`'s own: stores it as a checkpoint at the WAL's end (every
/// record of the agent is before it), syncs the vault, then journals [`Entry::Rebase`] onto it
/// and waits until that is durable. The checkpoint goes first, so the rebase record never names
/// a checkpoint a crash lost. Returns the checkpoint's LSN.
pub(crate) async fn commit_rebase(
    journal: &Journal,
    agent: &AgentId,
    behaviour: &BehaviourId,
    seq: u64,
    state: &[u8],
) -> Result<Lsn, RebaseFailed> {
    let lsn = journal.wal.last_lsn();
    super::actor::store_checkpoint(journal, agent, behaviour, seq, state, lsn)
        .await
        .map_err(RebaseFailed::Checkpoint)?;
    journal
        .vault
        .sync()
        .map_err(|e| RebaseFailed::Afterwards("checkpoint sync", e.to_string()))?;
    let entry = Entry::Rebase {
        agent: agent.as_str().to_string(),
        seq,
        behaviour: behaviour.clone(),
        checkpoint_lsn: lsn,
    };
    let appended = journal
        .wal
        .append(&entry.encode())
        .map_err(|e| RebaseFailed::Afterwards("journal", e.to_string()))?;
    appended
        .wait()
        .await
        .map_err(|e| RebaseFailed::Afterwards("journal", e.to_string()))?;
    Ok(lsn)
}

/// The number of `agent`'s last journaled input, read without running its behaviour: the
/// newest checkpoint's, or a later one in the WAL (inputs with or without an outcome, swaps and
/// rebases all count, as in [`recover`]).
pub(crate) fn last_seq(journal: &Journal, agent: &AgentId) -> Result<u64, AgentError> {
    let newest = journal
        .vault
        .latest_meta(agent)
        .map_err(|e| AgentError::Vault(e.to_string()))?;
    let (mut seq, from) = newest.map_or((0, 0), |meta| (meta.seq, meta.lsn + 1));
    let records = journal
        .wal
        .read_from(from.max(journal.wal.first_lsn()))
        .map_err(|e| AgentError::Journal(e.to_string()))?;
    for record in records {
        let record = record.map_err(|e| AgentError::Journal(e.to_string()))?;
        let entry = Entry::decode(&record.payload).map_err(|e| {
            AgentError::Journal(format!(
                "WAL record {} is not a journal entry: {e}",
                record.lsn
            ))
        })?;
        if entry.agent() != agent.as_str() {
            continue;
        }
        seq = seq.max(match entry {
            Entry::Input(envelope) => envelope.seq,
            Entry::Outcome { seq, .. } | Entry::Swap { seq, .. } | Entry::Rebase { seq, .. } => seq,
        });
    }
    Ok(seq)
}
