//! The replay gate: before any live traffic, the agent's recorded inputs from the WAL, from the
//! oldest checkpoint of the current module the log still covers onward (the journal keeps at
//! least [`CheckpointPolicy::history`](arbor_agent::CheckpointPolicy::history) inputs of each
//! agent for this), run through the candidate and through the current module, offline, with
//! the journaled `now` / `random` / tool answers. A candidate that traps, answers differently,
//! diverges in state, loses data migrating the checkpoint's state or costs more fuel beyond the
//! tolerance (per message kind) fails the gate and never gets a shadow; the gate stops at the
//! failure that decides it. A candidate that passes goes on to the shadows with the same two
//! instances, and the gate's comparisons count towards the verdict's bound.

use std::time::{Duration, Instant};

use arbor_agent::envelope::{Answer, Envelope, Status};
use arbor_agent::{AgentError, AgentSystem, BehaviourId};
use arbor_wal::Lsn;
use serde::{Deserialize, Serialize};

use crate::error::{ShadowError, agent_id};
use crate::journal::{self, Read};
use crate::objective::Rules;
use crate::policy::{Divergence, Policy, ShadowLimits, Tally, already_failed, judge_cost};
use crate::shadow::{Ended, Factory, Pair};
use crate::stats::PairedComparison;

/// What the replay gate found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// The checkpoint replay started from (`None`: the agent has none, or the system does not
    /// journal, so there was nothing to replay).
    pub checkpoint_lsn: Option<Lsn>,
    /// Journal records read (all agents', from the checkpoint to the last input compared).
    pub records_read: u64,
    /// Why replay stopped before the log's end, if it did (a swap, the record limit).
    pub stopped_early: Option<String>,
    /// The comparison (replies, sends, state, traps, fuel) of candidate against current.
    pub tally: Tally,
    /// The fuel comparison.
    pub fuel: Option<PairedComparison>,
    /// Whether the candidate passed, and if not, why.
    pub passed: bool,
    /// The failed rules.
    pub reasons: Vec<String>,
    /// How long the gate took.
    pub took: Duration,
    /// Inputs replayed per second (both modules).
    pub inputs_per_second: f64,
}

/// Where the gate left its pair of instances, so the live shadows can go on with them (the
/// candidate's instance keeps aging) by catching up from the journal.
pub(crate) struct Resume {
    /// The control and the candidate, having handled the journal up to `lsn`.
    pub(crate) pair: Pair,
    /// The last journal position they handled.
    pub(crate) lsn: Lsn,
    /// The agent's last input they handled.
    pub(crate) seq: u64,
}

/// Runs the gate for `agent` (running `current`) and `candidate`; with the report, the pair to
/// resume from when the gate passed over the whole history.
pub(crate) fn run(
    factory: &Factory,
    agent: &str,
    current: &BehaviourId,
    candidate: &BehaviourId,
    rules: Rules,
    policy: &Policy,
    limits: &ShadowLimits,
) -> Result<(GateReport, Option<Resume>), ShadowError> {
    let started = Instant::now();
    let system: &AgentSystem = &factory.system;
    let mut report = GateReport {
        checkpoint_lsn: None,
        records_read: 0,
        stopped_early: None,
        tally: Tally::default(),
        fuel: None,
        passed: true,
        reasons: Vec::new(),
        took: Duration::ZERO,
        inputs_per_second: 0.0,
    };
    // Through the journal seam: the local WAL + vault, or a cluster's replicated store.
    let store = system.journal_store();
    if !store.is_durable() {
        report.stopped_early = Some("the system does not journal: nothing to replay".into());
        return Ok((report, None));
    }
    let id = agent_id(agent)?;
    let journal = |e: arbor_agent::JournalError| ShadowError::Journal(AgentError::Journal(e));
    // The oldest checkpoint written by the current module whose records are all still in the
    // log: the longest history the current module produced. (A store with positions per agent
    // releases each agent's records on its own: ask it whether they are still there.)
    let first = store.first();
    let kept = |lsn: Lsn| {
        if store.positions_per_agent() {
            store.read(agent, lsn + 1).is_ok()
        } else {
            lsn + 1 >= first
        }
    };
    let mut metas = store.list_checkpoints(&id).map_err(journal)?;
    metas.sort_by_key(|m| m.lsn);
    let start = metas
        .iter()
        .filter(|m| m.module == current.checkpoint_hash() && kept(m.lsn))
        .find_map(|m| store.checkpoint(&id, m.lsn).ok().flatten());
    let Some(checkpoint) = start else {
        report.stopped_early = Some("no checkpoint of the current module to start from".into());
        return Ok((report, None));
    };
    report.checkpoint_lsn = Some(checkpoint.meta.lsn);
    let mut pair = match Pair::seeded(
        factory.clone(),
        current,
        candidate,
        &checkpoint.state,
        rules,
    ) {
        Ok(pair) => pair,
        Err(reason) => {
            report.passed = false;
            report.reasons.push(format!(
                "state migration failed on checkpoint {}: {reason}",
                checkpoint.meta.lsn
            ));
            report.took = started.elapsed();
            return Ok((report, None));
        }
    };
    let (mut last_lsn, mut last_seq) = (checkpoint.meta.lsn, checkpoint.meta.seq);
    for step in journal::read(system, agent, checkpoint.meta.lsn + 1, None)? {
        let (lsn, step) = step?;
        if lsn - checkpoint.meta.lsn > limits.gate_max_records {
            report.stopped_early = Some(format!("read {} records", limits.gate_max_records));
            break;
        }
        report.records_read = lsn - checkpoint.meta.lsn;
        let (input, status, answers) = match step {
            Read::Handled {
                input,
                status,
                answers,
            } => (input, status, answers),
            Read::Stop(reason) => {
                report.stopped_early = Some(reason);
                break;
            }
        };
        (last_lsn, last_seq) = (lsn, input.seq);
        if let Err(reason) = replay(&mut pair, &input, status, answers, policy) {
            report.stopped_early = Some(reason);
            break;
        }
        // Issue 17.6: once the failures exceed what the rule allows, more inputs cannot change
        // the verdict.
        if already_failed(&pair.tally, policy) {
            report.stopped_early = Some(format!(
                "stopped after {} failures in {} inputs: the verdict can no longer change",
                pair.tally.failure_count(),
                pair.tally.samples
            ));
            break;
        }
    }
    if pair.tally.samples > 0 {
        let seq = u64::MAX;
        pair.check_state(seq).map_err(ShadowError::Snapshot)?;
    }
    let tally = pair.tally.clone();
    if tally.mismatch_count() > 0 {
        report.reasons.push(format!(
            "{} of {} replayed inputs mismatched ({} replies/sends, {} states)",
            tally.mismatch_count(),
            tally.samples,
            tally.mismatches,
            tally.state_divergences
        ));
    }
    if tally.error_count() > 0 {
        report.reasons.push(format!(
            "the candidate failed {} replayed inputs ({} traps, {} refusals)",
            tally.error_count(),
            tally.traps,
            tally.errors
        ));
    }
    if tally.aa_mismatches > 0 {
        report
            .reasons
            .push("the current module does not reproduce its own journal".into());
    }
    let (fuel, _, cost) = judge_cost(&tally, policy);
    report.fuel = fuel;
    report.reasons.extend(
        cost.into_iter()
            .map(|reason| format!("{reason} over the journal")),
    );
    report.passed = report.reasons.is_empty();
    report.took = started.elapsed();
    report.inputs_per_second = tally.samples as f64 / report.took.as_secs_f64().max(1e-9);
    report.tally = tally;
    let resume = (report.passed && report.stopped_early.is_none()).then_some(Resume {
        pair,
        lsn: last_lsn,
        seq: last_seq,
    });
    Ok((report, resume))
}

/// Replays one journaled input through `pair`: the control must reproduce what the journal
/// says production did (else the comparison is meaningless from here: `Err`), the candidate is
/// compared with the control. Inputs production crashed on left no trace in its state: seen,
/// not compared.
pub(crate) fn replay(
    pair: &mut Pair,
    input: &Envelope,
    status: Status,
    answers: Vec<Answer>,
    policy: &Policy,
) -> Result<(), String> {
    if matches!(status, Status::Crashed(_)) {
        pair.tally.count_skipped(&input.payload);
        return Ok(());
    }
    let seq = input.seq;
    let control = pair.step(seq, &input.payload, answers, policy, false)?;
    let recorded = match status {
        Status::Applied => matches!(control.ended, Ended::Replied(_)),
        _ => matches!(control.ended, Ended::Refused(_)),
    };
    if !recorded || control.divergence.is_some() {
        pair.tally.aa_diverged(Divergence {
            seq,
            kind: crate::compare::message_kind(&input.payload),
            what: "replay".into(),
            input: crate::compare::render(&input.payload, 200),
            expected: format!("{status:?}"),
            got: format!("{:?}", control.divergence),
        });
        return Err(format!("the current module does not replay input {seq}"));
    }
    Ok(())
}
