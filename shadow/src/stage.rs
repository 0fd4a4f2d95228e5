//! Where an evaluation is ([`Stage`]), how it ended ([`Outcome`]), and the one decision table
//! that moves it: [`next`] (stage, event) → stage.
//!
//! The table, and why every move goes through it, are in the crate docs (# Stages); the test
//! below holds the same table as data. `next` is applied in one place,
//! `Evaluation::apply`, under the status's lock.

use serde::{Deserialize, Serialize};

use arbor_vault::Step;

use crate::config::Approval;
use crate::report::{Promotion, Rollback};

/// Where an evaluation is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Replaying the journal through candidate and current module, then starting the shadows.
    Gate,
    /// Shadows on mirrored traffic (from the moment production's inputs reach them).
    Shadowing,
    /// Approved; waiting for a person to promote.
    AwaitingApproval,
    /// Swapping.
    Promoting,
    /// Promoted; the previous module runs as a reverse shadow.
    Watching,
    /// Rolling back (a regression in the watch, or asked for).
    RollingBack,
    /// Over.
    Done(Outcome),
}

/// How an evaluation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Failed the gate or the decision rule.
    Rejected,
    /// Not promoted: the evidence could not tell (nondeterminism).
    Inconclusive,
    /// Promoted, and the watch found no regression.
    Promoted,
    /// Promoted, then rolled back.
    RolledBack,
    /// The arbiter could not go on.
    Failed(String),
    /// Cancelled.
    Cancelled,
}

/// Something that happened to an evaluation, which may move its stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The replay gate passed; the shadows start.
    GatePassed,
    /// The replay gate failed (its verdict is recorded).
    GateFailed,
    /// Production's inputs reach the shadows.
    MirroringStarted,
    /// The verdict approves; who promotes decides what follows.
    Approved(Approval),
    /// The verdict rejects.
    Rejected,
    /// The verdict cannot tell.
    Inconclusive,
    /// The shadows stopped, cancelled, before a verdict.
    ShadowsCancelled,
    /// A person promotes the approved candidate.
    PromoteRequested,
    /// A person cancels the evaluation.
    CancelRequested,
    /// The swap is done (its report goes into the status with the stage); the watch runs.
    Promoted(Promotion),
    /// The watch found a regression.
    Regression,
    /// A person rolls the promotion back.
    RollbackRequested,
    /// The watch ended without a regression; the promotion is kept.
    WatchEnded(WatchEnd),
    /// The rollback is done (its report goes into the status with the stage).
    RolledBack(Rollback),
    /// The arbiter cannot go on: the lineage, a swap or a rollback failed, a task panicked.
    Failed(String),
    /// A person accepts a rejected candidate (its differences are intended), with a reason;
    /// it then waits for promotion like an approved one.
    Accepted(String),
}

/// How a watch ended without a regression. Each keeps the promotion; the lineage says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchEnd {
    /// It lasted its window and had its samples.
    Passed,
    /// Its longest time passed before it had its samples.
    Incomplete,
    /// It could not go on (the reverse shadow crashed, production stopped, …).
    EndedEarly,
    /// It was cancelled.
    Cancelled,
}

impl WatchEnd {
    /// The lineage step that records it.
    pub(crate) fn step(self) -> Step {
        match self {
            WatchEnd::Passed => Step::WatchPassed,
            WatchEnd::Incomplete => Step::WatchIncomplete,
            WatchEnd::EndedEarly => Step::WatchEnded,
            WatchEnd::Cancelled => Step::WatchCancelled,
        }
    }
}

/// The stage `event` moves `stage` to, or `None` if the move is refused (see the module docs'
/// table).
pub(crate) fn next(stage: &Stage, event: &Event) -> Option<Stage> {
    use Stage::{AwaitingApproval, Done, Gate, Promoting, RollingBack, Shadowing, Watching};
    Some(match (stage, event) {
        (Done(Outcome::Rejected), Event::Accepted(_)) => AwaitingApproval,
        (Done(_), _) => return None,
        (_, Event::Failed(reason)) => Done(Outcome::Failed(reason.clone())),
        (Gate, Event::GatePassed) => Gate,
        (Gate, Event::GateFailed) => Done(Outcome::Rejected),
        (Gate, Event::MirroringStarted) => Shadowing,
        (Gate | Shadowing, Event::Rejected) => Done(Outcome::Rejected),
        (Gate | Shadowing, Event::Inconclusive) => Done(Outcome::Inconclusive),
        (Gate | Shadowing, Event::ShadowsCancelled) => Done(Outcome::Cancelled),
        (Shadowing, Event::Approved(Approval::Suggest)) => AwaitingApproval,
        (Shadowing, Event::Approved(Approval::Auto)) => Promoting,
        (AwaitingApproval, Event::PromoteRequested) => Promoting,
        (AwaitingApproval, Event::CancelRequested) => Done(Outcome::Cancelled),
        (Promoting, Event::Promoted(_)) => Watching,
        (Watching, Event::Regression | Event::RollbackRequested) => RollingBack,
        (Watching, Event::WatchEnded(_)) => Done(Outcome::Promoted),
        (RollingBack, Event::RolledBack(_)) => Done(Outcome::RolledBack),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stages, each with one example (`Done` with every outcome).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum S {
        Gate,
        Shadowing,
        Awaiting,
        Promoting,
        Watching,
        RollingBack,
        Rejected,
        Inconclusive,
        Promoted,
        RolledBack,
        Failed,
        Cancelled,
    }

    const STAGES: [S; 12] = [
        S::Gate,
        S::Shadowing,
        S::Awaiting,
        S::Promoting,
        S::Watching,
        S::RollingBack,
        S::Rejected,
        S::Inconclusive,
        S::Promoted,
        S::RolledBack,
        S::Failed,
        S::Cancelled,
    ];

    const DONE: &[S] = &[
        S::Rejected,
        S::Inconclusive,
        S::Promoted,
        S::RolledBack,
        S::Failed,
        S::Cancelled,
    ];

    const REASON: &str = "vault: the disk is full";
    const ACCEPTED: &str = "the differences fix the zz bug";

    fn stage(s: S) -> Stage {
        match s {
            S::Gate => Stage::Gate,
            S::Shadowing => Stage::Shadowing,
            S::Awaiting => Stage::AwaitingApproval,
            S::Promoting => Stage::Promoting,
            S::Watching => Stage::Watching,
            S::RollingBack => Stage::RollingBack,
            S::Rejected => Stage::Done(Outcome::Rejected),
            S::Inconclusive => Stage::Done(Outcome::Inconclusive),
            S::Promoted => Stage::Done(Outcome::Promoted),
            S::RolledBack => Stage::Done(Outcome::RolledBack),
            S::Failed => Stage::Done(Outcome::Failed(REASON.into())),
            S::Cancelled => Stage::Done(Outcome::Cancelled),
        }
    }

    fn promotion() -> Promotion {
        Promotion {
            from: arbor_agent::BehaviourId::Native("kv".into()),
            pause: std::time::Duration::from_micros(40),
            state_bytes: 2,
            seq: 7,
            checkpoint_lsn: Some(9),
        }
    }

    fn rollback() -> Rollback {
        Rollback {
            reason: "a regression".into(),
            pause: std::time::Duration::from_micros(40),
            replayed: 3,
        }
    }

    /// Every event, with its data where it has some.
    fn events() -> Vec<Event> {
        vec![
            Event::GatePassed,
            Event::GateFailed,
            Event::MirroringStarted,
            Event::Approved(Approval::Suggest),
            Event::Approved(Approval::Auto),
            Event::Rejected,
            Event::Inconclusive,
            Event::ShadowsCancelled,
            Event::PromoteRequested,
            Event::CancelRequested,
            Event::Promoted(promotion()),
            Event::Regression,
            Event::RollbackRequested,
            Event::WatchEnded(WatchEnd::Passed),
            Event::WatchEnded(WatchEnd::Incomplete),
            Event::WatchEnded(WatchEnd::EndedEarly),
            Event::WatchEnded(WatchEnd::Cancelled),
            Event::RolledBack(rollback()),
            Event::Failed(REASON.into()),
            Event::Accepted(ACCEPTED.into()),
        ]
    }

    /// A row of the module docs' table: these stages, these events, that stage next (`None`:
    /// refused).
    struct Case {
        stages: &'static [S],
        events: Vec<Event>,
        next: Option<S>,
    }

    fn case(stages: &'static [S], events: &[Event], next: Option<S>) -> Case {
        Case {
            stages,
            events: events.to_vec(),
            next,
        }
    }

    /// The crate docs' stage table, as data; the last rows spell out "any other pair: refused"
    /// stage by stage.
    fn cases() -> Vec<Case> {
        use Event as E;
        let watch_ends = [
            E::WatchEnded(WatchEnd::Passed),
            E::WatchEnded(WatchEnd::Incomplete),
            E::WatchEnded(WatchEnd::EndedEarly),
            E::WatchEnded(WatchEnd::Cancelled),
        ];
        let running: &[S] = &[
            S::Gate,
            S::Shadowing,
            S::Awaiting,
            S::Promoting,
            S::Watching,
            S::RollingBack,
        ];
        let all: Vec<Event> = events();
        // The events refused in a stage that is not done: all but its legal ones and `failed`.
        let except = |stages: &'static [S], legal: &[Event]| Case {
            stages,
            events: all
                .iter()
                .filter(|event| !legal.contains(event) && !matches!(event, E::Failed(_)))
                .cloned()
                .collect(),
            next: None,
        };
        // The events refused in a done stage: all but its legal ones.
        let except_done = |stages: &'static [S], legal: &[Event]| Case {
            stages,
            events: all
                .iter()
                .filter(|event| !legal.contains(event))
                .cloned()
                .collect(),
            next: None,
        };
        vec![
            case(&[S::Gate], &[E::GatePassed], Some(S::Gate)),
            case(&[S::Gate], &[E::GateFailed], Some(S::Rejected)),
            case(&[S::Gate], &[E::MirroringStarted], Some(S::Shadowing)),
            case(&[S::Gate, S::Shadowing], &[E::Rejected], Some(S::Rejected)),
            case(
                &[S::Gate, S::Shadowing],
                &[E::Inconclusive],
                Some(S::Inconclusive),
            ),
            case(
                &[S::Gate, S::Shadowing],
                &[E::ShadowsCancelled],
                Some(S::Cancelled),
            ),
            case(
                &[S::Shadowing],
                &[E::Approved(Approval::Suggest)],
                Some(S::Awaiting),
            ),
            case(
                &[S::Shadowing],
                &[E::Approved(Approval::Auto)],
                Some(S::Promoting),
            ),
            case(&[S::Awaiting], &[E::PromoteRequested], Some(S::Promoting)),
            case(&[S::Awaiting], &[E::CancelRequested], Some(S::Cancelled)),
            case(
                &[S::Promoting],
                &[E::Promoted(promotion())],
                Some(S::Watching),
            ),
            case(
                &[S::Watching],
                &[E::Regression, E::RollbackRequested],
                Some(S::RollingBack),
            ),
            case(&[S::Watching], &watch_ends, Some(S::Promoted)),
            case(
                &[S::RollingBack],
                &[E::RolledBack(rollback())],
                Some(S::RolledBack),
            ),
            case(running, &[E::Failed(REASON.into())], Some(S::Failed)),
            case(
                &[S::Rejected],
                &[E::Accepted(ACCEPTED.into())],
                Some(S::Awaiting),
            ),
            except_done(&[S::Rejected], &[E::Accepted(ACCEPTED.into())]),
            case(
                &[
                    S::Inconclusive,
                    S::Promoted,
                    S::RolledBack,
                    S::Failed,
                    S::Cancelled,
                ],
                &all,
                None,
            ),
            // Any other pair: refused.
            except(
                &[S::Gate],
                &[
                    E::GatePassed,
                    E::GateFailed,
                    E::MirroringStarted,
                    E::Rejected,
                    E::Inconclusive,
                    E::ShadowsCancelled,
                ],
            ),
            except(
                &[S::Shadowing],
                &[
                    E::Approved(Approval::Suggest),
                    E::Approved(Approval::Auto),
                    E::Rejected,
                    E::Inconclusive,
                    E::ShadowsCancelled,
                ],
            ),
            except(&[S::Awaiting], &[E::PromoteRequested, E::CancelRequested]),
            except(&[S::Promoting], &[E::Promoted(promotion())]),
            except(
                &[S::Watching],
                &[
                    E::Regression,
                    E::RollbackRequested,
                    watch_ends[0].clone(),
                    watch_ends[1].clone(),
                    watch_ends[2].clone(),
                    watch_ends[3].clone(),
                ],
            ),
            except(&[S::RollingBack], &[E::RolledBack(rollback())]),
        ]
    }

    #[test]
    fn every_stage_and_event_matches_exactly_one_row_of_the_table() {
        let cases = cases();
        let mut used = vec![0usize; cases.len()];
        for s in STAGES {
            for event in events() {
                let rows: Vec<usize> = (0..cases.len())
                    .filter(|&row| {
                        cases[row].stages.contains(&s) && cases[row].events.contains(&event)
                    })
                    .collect();
                assert_eq!(rows.len(), 1, "{s:?} + {event:?} matches rows {rows:?}");
                let row = rows[0];
                used[row] += 1;
                assert_eq!(
                    next(&stage(s), &event),
                    cases[row].next.map(stage),
                    "{s:?} + {event:?} (row {row})"
                );
            }
        }
        for (row, used) in used.iter().enumerate() {
            assert!(*used > 0, "row {row} matches no pair");
        }
    }

    /// Done is final but for one move: a person accepting a rejected candidate.
    #[test]
    fn done_is_final_and_a_failure_ends_any_other_stage() {
        for s in STAGES {
            let accepted = next(&stage(s), &Event::Accepted(ACCEPTED.into()));
            if s == S::Rejected {
                assert_eq!(accepted, Some(stage(S::Awaiting)));
            } else {
                assert_eq!(accepted, None, "{s:?}");
            }
        }
        for s in STAGES {
            let failed = next(&stage(s), &Event::Failed(REASON.into()));
            if DONE.contains(&s) {
                assert_eq!(failed, None, "{s:?}");
            } else {
                assert_eq!(failed, Some(stage(S::Failed)), "{s:?}");
            }
        }
    }

    #[test]
    fn every_watch_end_has_its_own_step() {
        let ends = [
            WatchEnd::Passed,
            WatchEnd::Incomplete,
            WatchEnd::EndedEarly,
            WatchEnd::Cancelled,
        ];
        let steps: Vec<Step> = ends.iter().map(|end| end.step()).collect();
        assert!(steps.iter().all(Step::ends_watch));
        for (i, step) in steps.iter().enumerate() {
            assert!(!steps[..i].contains(step), "{step} twice");
        }
    }
}
