//! Reading an agent's journal back: one reader turns the agent's records into [`Step`]s, and
//! one table, [`decide`], says what recovery, a rebuild (rollback, restore) and the evolution
//! arbiter's replay gate do with each. They agree by construction.
//!
//! The reader pairs each input with its outcome (the agent appends them together): an input
//! followed by its outcome is [`Step::Handled`]; an input whose outcome never came (the host
//! died before it was acknowledged) is [`Step::Unacknowledged`]; an outcome whose input is not
//! there is [`Step::Orphan`] (the records cannot be trusted); swaps and rebases are steps of
//! their own.
//!
//! The table (TigerBeetle's habit: the same table as data, [`CASES`], checked row by row):
//!
//! | step                      | recover        | rebuild   | gate      |
//! |---------------------------|----------------|-----------|-----------|
//! | handled, applied          | apply          | apply     | compare   |
//! | handled, refused          | skip           | skip      | compare   |
//! | handled, crashed          | skip           | skip      | skip      |
//! | unacknowledged            | skip (report)  | skip      | skip      |
//! | orphan outcome            | fail           | fail      | stop      |
//! | swap                      | swap           | skip      | stop      |
//! | rebase                    | rebase         | skip      | stop      |
//!
//! A rebuild replays every input the agent applied through one behaviour, whichever handled it
//! live, so swaps and rebases are passed over; the gate compares the current module's own
//! history, which ends where the agent changed modules. A crashed input left no trace in the
//! state it crashed (its instance was discarded): nobody applies or compares it. A refused
//! input changed nothing, but the gate checks the candidate refuses it too.

use arbor_wal::Lsn;

use super::error::JournalError;
use super::journal::Records;
use crate::envelope::{Answer, BehaviourId, Entry, Envelope, Status};

/// One step of an agent's journaled history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An input and how handling it ended, with the host's answers in the order asked.
    Handled {
        /// The input.
        input: Envelope,
        /// Applied, refused or crashed.
        status: Status,
        /// What the host answered.
        answers: Vec<Answer>,
    },
    /// An input journaled without its outcome: the host stopped before it was acknowledged.
    Unacknowledged(Envelope),
    /// An outcome of input `seq` whose input record is missing.
    Orphan {
        /// The input's number.
        seq: u64,
    },
    /// The behaviour was replaced after input `seq`.
    Swap {
        /// Inputs up to this number ran on the old behaviour.
        seq: u64,
        /// The new behaviour.
        behaviour: BehaviourId,
    },
    /// The state was rebuilt after input `seq`: from here it is the checkpoint at
    /// `checkpoint_lsn`, in `behaviour`.
    Rebase {
        /// Inputs up to this number are in the checkpoint.
        seq: u64,
        /// The behaviour from here on.
        behaviour: BehaviourId,
        /// The checkpoint holding the rebuilt state.
        checkpoint_lsn: Lsn,
    },
}

/// Who reads the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Recovering an agent from its newest checkpoint.
    Recover,
    /// Rebuilding an agent's state from a given checkpoint through one behaviour (rollback,
    /// restore).
    Rebuild,
    /// The evolution arbiter's replay gate, comparing a candidate with the current module.
    Gate,
}

/// What the reader does with a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Handle the input again with its journaled answers.
    Apply,
    /// Run it through the current module and the candidate and compare.
    Compare,
    /// Pass over it.
    Skip,
    /// Pass over it, and report it as an input never acknowledged.
    SkipUnacknowledged,
    /// Continue in the swap's behaviour (the state migrated into it).
    Swap,
    /// Continue from the rebase's checkpoint, in its behaviour.
    Rebase,
    /// Stop reading: what follows is not this history.
    Stop,
    /// Refuse: the journal cannot be trusted from here.
    Fail,
}

/// The kind of a step, as the table's rows name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// [`Step::Handled`] with [`Status::Applied`].
    Applied,
    /// [`Step::Handled`] with [`Status::Refused`].
    Refused,
    /// [`Step::Handled`] with [`Status::Crashed`].
    Crashed,
    /// [`Step::Unacknowledged`].
    Unacknowledged,
    /// [`Step::Orphan`].
    Orphan,
    /// [`Step::Swap`].
    Swap,
    /// [`Step::Rebase`].
    Rebase,
}

impl Step {
    /// Its row in the table.
    pub fn kind(&self) -> StepKind {
        match self {
            Step::Handled {
                status: Status::Applied,
                ..
            } => StepKind::Applied,
            Step::Handled {
                status: Status::Refused(_),
                ..
            } => StepKind::Refused,
            Step::Handled {
                status: Status::Crashed(_),
                ..
            } => StepKind::Crashed,
            Step::Unacknowledged(_) => StepKind::Unacknowledged,
            Step::Orphan { .. } => StepKind::Orphan,
            Step::Swap { .. } => StepKind::Swap,
            Step::Rebase { .. } => StepKind::Rebase,
        }
    }
}

/// The table as data: (step, what recovery, a rebuild and the gate do).
pub const CASES: &[(StepKind, [Action; 3])] = &[
    (
        StepKind::Applied,
        [Action::Apply, Action::Apply, Action::Compare],
    ),
    (
        StepKind::Refused,
        [Action::Skip, Action::Skip, Action::Compare],
    ),
    (
        StepKind::Crashed,
        [Action::Skip, Action::Skip, Action::Skip],
    ),
    (
        StepKind::Unacknowledged,
        [Action::SkipUnacknowledged, Action::Skip, Action::Skip],
    ),
    (StepKind::Orphan, [Action::Fail, Action::Fail, Action::Stop]),
    (StepKind::Swap, [Action::Swap, Action::Skip, Action::Stop]),
    (
        StepKind::Rebase,
        [Action::Rebase, Action::Skip, Action::Stop],
    ),
];

/// What `purpose` does with `step` (the table in the module docs).
pub fn decide(step: &Step, purpose: Purpose) -> Action {
    let column = match purpose {
        Purpose::Recover => 0,
        Purpose::Rebuild => 1,
        Purpose::Gate => 2,
    };
    let kind = step.kind();
    CASES
        .iter()
        .find(|(row, _)| *row == kind)
        .map_or(Action::Fail, |(_, actions)| actions[column])
}

/// The steps of one agent from a position on; see [`steps`].
pub struct Steps {
    records: Records,
    agent: String,
    pending: Option<(Lsn, Envelope)>,
    /// A step found while yielding another (an unacknowledged input before the next one).
    queued: Option<(Lsn, Step)>,
}

/// The steps of `agent` in `records` (its journal from some position on), each with its
/// position (a handled input's is its outcome's).
pub fn steps(records: Records, agent: &str) -> Steps {
    Steps {
        records,
        agent: agent.to_string(),
        pending: None,
        queued: None,
    }
}

impl Iterator for Steps {
    type Item = Result<(Lsn, Step), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(queued) = self.queued.take() {
            return Some(Ok(queued));
        }
        loop {
            let (lsn, payload) = match self.records.next() {
                Some(Ok(record)) => record,
                Some(Err(error)) => return Some(Err(error)),
                None => {
                    return self
                        .pending
                        .take()
                        .map(|(lsn, input)| Ok((lsn, Step::Unacknowledged(input))));
                }
            };
            let entry = match Entry::decode(&payload) {
                Ok(entry) => entry,
                Err(error) => {
                    return Some(Err(JournalError::NotAnEntry {
                        lsn,
                        source: std::sync::Arc::new(error),
                    }));
                }
            };
            if entry.agent() != self.agent {
                continue;
            }
            let step = match entry {
                Entry::Input(input) => match self.pending.replace((lsn, input)) {
                    Some((at, unanswered)) => {
                        return Some(Ok((at, Step::Unacknowledged(unanswered))));
                    }
                    None => continue,
                },
                Entry::Outcome {
                    seq,
                    status,
                    answers,
                    ..
                } => match self.pending.take() {
                    Some((_, input)) if input.seq == seq => Step::Handled {
                        input,
                        status,
                        answers,
                    },
                    Some((at, other)) => {
                        self.queued = Some((lsn, Step::Orphan { seq }));
                        return Some(Ok((at, Step::Unacknowledged(other))));
                    }
                    None => Step::Orphan { seq },
                },
                Entry::Swap { seq, behaviour, .. } => Step::Swap { seq, behaviour },
                Entry::Rebase {
                    seq,
                    behaviour,
                    checkpoint_lsn,
                    ..
                } => Step::Rebase {
                    seq,
                    behaviour,
                    checkpoint_lsn,
                },
            };
            // A swap or rebase after an input without outcome: that input was never
            // acknowledged; report it first.
            if let Some((at, unanswered)) = self.pending.take() {
                self.queued = Some((lsn, step));
                return Some(Ok((at, Step::Unacknowledged(unanswered))));
            }
            return Some(Ok((lsn, step)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::envelope::Kind;

    fn input(agent: &str, seq: u64) -> Entry {
        Entry::Input(Envelope {
            to: agent.into(),
            from: None,
            seq,
            kind: Kind::Call,
            payload: vec![0xc0],
        })
    }

    fn outcome(agent: &str, seq: u64, status: Status) -> Entry {
        Entry::Outcome {
            agent: agent.into(),
            seq,
            status,
            answers: Vec::new(),
        }
    }

    fn read(entries: Vec<Entry>) -> Vec<(Lsn, StepKind)> {
        let records: Vec<Result<(Lsn, Vec<u8>), JournalError>> = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| Ok((i as Lsn + 1, entry.encode())))
            .collect();
        steps(Box::new(records.into_iter()), "a")
            .map(|step| step.map(|(lsn, step)| (lsn, step.kind())).unwrap())
            .collect()
    }

    /// Every row of the table is a step kind exactly once, and every kind has a row.
    #[test]
    fn every_step_kind_has_exactly_one_row() {
        let kinds = [
            StepKind::Applied,
            StepKind::Refused,
            StepKind::Crashed,
            StepKind::Unacknowledged,
            StepKind::Orphan,
            StepKind::Swap,
            StepKind::Rebase,
        ];
        for kind in kinds {
            assert_eq!(
                CASES.iter().filter(|(row, _)| *row == kind).count(),
                1,
                "{kind:?}"
            );
        }
        assert_eq!(CASES.len(), kinds.len());
    }

    /// Each row, through `decide`, for a step of that kind.
    #[test]
    fn each_row_decides() {
        let envelope = Envelope {
            to: "a".into(),
            from: None,
            seq: 1,
            kind: Kind::Call,
            payload: vec![0xc0],
        };
        let handled = |status: Status| Step::Handled {
            input: envelope.clone(),
            status,
            answers: Vec::new(),
        };
        let swap = Step::Swap {
            seq: 1,
            behaviour: BehaviourId::Native("n".into()),
        };
        let rebase = Step::Rebase {
            seq: 1,
            behaviour: BehaviourId::Native("n".into()),
            checkpoint_lsn: 3,
        };
        use Action::*;
        use Purpose::*;
        let rows: [(Step, [Action; 3]); 7] = [
            (handled(Status::Applied), [Apply, Apply, Compare]),
            (handled(Status::Refused("no".into())), [Skip, Skip, Compare]),
            (handled(Status::Crashed("trap".into())), [Skip, Skip, Skip]),
            (
                Step::Unacknowledged(envelope.clone()),
                [SkipUnacknowledged, Skip, Skip],
            ),
            (Step::Orphan { seq: 1 }, [Fail, Fail, Stop]),
            (swap, [Swap, Skip, Stop]),
            (rebase, [Rebase, Skip, Stop]),
        ];
        for (step, expected) in rows {
            let got = [Recover, Rebuild, Gate].map(|purpose| decide(&step, purpose));
            assert_eq!(got, expected, "{:?}", step.kind());
        }
    }

    #[test]
    fn the_reader_pairs_inputs_with_outcomes_and_names_the_rest() {
        let steps = read(vec![
            input("a", 1),
            outcome("a", 1, Status::Applied),
            input("b", 1),
            input("a", 2),
            outcome("b", 1, Status::Applied),
            outcome("a", 2, Status::Refused("no".into())),
            // An input whose outcome never came, then the next one.
            input("a", 3),
            input("a", 4),
            outcome("a", 4, Status::Crashed("trap".into())),
            // An outcome without its input.
            outcome("a", 9, Status::Applied),
            Entry::Swap {
                agent: "a".into(),
                seq: 9,
                behaviour: BehaviourId::Native("n".into()),
            },
            input("a", 10),
        ]);
        assert_eq!(
            steps,
            [
                (2, StepKind::Applied),
                (6, StepKind::Refused),
                (7, StepKind::Unacknowledged),
                (9, StepKind::Crashed),
                (10, StepKind::Orphan),
                (11, StepKind::Swap),
                (12, StepKind::Unacknowledged),
            ]
        );
        // An input without outcome before a swap is reported before it; a mismatched outcome
        // after an input reports both.
        let steps = read(vec![
            input("a", 1),
            Entry::Rebase {
                agent: "a".into(),
                seq: 1,
                behaviour: BehaviourId::Native("n".into()),
                checkpoint_lsn: 1,
            },
            input("a", 2),
            outcome("a", 3, Status::Applied),
        ]);
        assert_eq!(
            steps,
            [
                (1, StepKind::Unacknowledged),
                (2, StepKind::Rebase),
                (3, StepKind::Unacknowledged),
                (4, StepKind::Orphan),
            ]
        );
    }

    #[test]
    fn a_record_that_is_not_an_entry_is_an_error() {
        let records: Vec<Result<(Lsn, Vec<u8>), JournalError>> = vec![Ok((1, vec![0xc1]))];
        let mut steps = steps(Box::new(records.into_iter()), "a");
        assert!(matches!(
            steps.next(),
            Some(Err(JournalError::NotAnEntry { lsn: 1, .. }))
        ));
    }
}
