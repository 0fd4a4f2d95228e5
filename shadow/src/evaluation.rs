//! One evaluation as the arbiter holds it: its public face, [`EvaluationStatus`], and the shared
//! state behind it (`Evaluation`), whose `apply` is the one place the stage changes.
//!
//! The status lives in a `tokio::sync::watch` channel, so [`Arbiter::wait`](crate::Arbiter::wait)
//! wakes on every change; the live tally of the shadows (or the watch) lives in [`Progress`],
//! written by their thread and merged into the status when it is read.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arbor_agent::BehaviourId;
use arbor_vault::ModuleHash;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::EvaluationOptions;
use crate::gate::GateReport;
use crate::live::Progress;
use crate::policy::{Decision, Tally};
use crate::report::{Promotion, Rollback};
use crate::stage::{Event, Stage, next};

/// Everything known about one agent's current (or last) evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationStatus {
    /// The agent.
    pub agent: String,
    /// The candidate.
    pub candidate: ModuleHash,
    /// The module the agent ran when the evaluation started.
    pub current: BehaviourId,
    /// Where it is.
    pub stage: Stage,
    /// The replay gate's report.
    pub gate: Option<GateReport>,
    /// The live comparison so far.
    pub shadow: Tally,
    /// The verdict.
    pub decision: Option<Decision>,
    /// The promotion, if any.
    pub promotion: Option<Promotion>,
    /// The watch's comparison so far.
    pub watch: Tally,
    /// The rollback, if any.
    pub rollback: Option<Rollback>,
    /// The node the shadows run on, when not the arbiter's.
    #[serde(default)]
    pub shadows_on: Option<String>,
    /// Why a person accepted the rejected candidate ([`Arbiter::accept`](crate::Arbiter::accept)):
    /// its reply differences are intended, and the watch after its promotion does not roll
    /// back on them.
    #[serde(default)]
    pub accepted: Option<String>,
}

impl EvaluationStatus {
    /// Whether the evaluation waits for nothing more (done, or waiting for a person).
    pub fn is_settled(&self) -> bool {
        matches!(self.stage, Stage::Done(_) | Stage::AwaitingApproval)
    }
}

/// One evaluation, shared by the arbiter, its pipeline, its watch and the people asking.
pub(crate) struct Evaluation {
    status: watch::Sender<EvaluationStatus>,
    /// The running shadows' (or watch's) progress.
    progress: Mutex<Arc<Progress>>,
    /// What it compares and how.
    pub(crate) options: EvaluationOptions,
}

impl Evaluation {
    /// An evaluation of `candidate` for `agent` (running `current`), at the gate.
    pub(crate) fn new(
        agent: &str,
        candidate: ModuleHash,
        current: BehaviourId,
        options: EvaluationOptions,
        shadows_on: Option<String>,
    ) -> Evaluation {
        let status = EvaluationStatus {
            agent: agent.into(),
            candidate,
            current,
            stage: Stage::Gate,
            gate: None,
            shadow: Tally::default(),
            decision: None,
            promotion: None,
            watch: Tally::default(),
            rollback: None,
            shadows_on,
            accepted: None,
        };
        Evaluation {
            status: watch::Sender::new(status),
            progress: Mutex::new(Arc::new(Progress::default())),
            options,
        }
    }

    /// The one place the stage changes: moves it as [`next`] says, with the report the event
    /// carries (a promotion, a rollback) in the same change, so a watcher never sees one
    /// without the other. `Err` with the stage found when the move is refused: then nothing
    /// changes.
    pub(crate) fn apply(&self, event: &Event) -> Result<(), Stage> {
        let mut refused = None;
        self.status.send_if_modified(|status| {
            let Some(stage) = next(&status.stage, event) else {
                refused = Some(status.stage.clone());
                return false;
            };
            status.stage = stage;
            match event {
                Event::Promoted(promotion) => status.promotion = Some(promotion.clone()),
                Event::RolledBack(rollback) => status.rollback = Some(rollback.clone()),
                Event::Accepted(reason) => status.accepted = Some(reason.clone()),
                _ => {}
            }
            true
        });
        refused.map_or(Ok(()), Err)
    }

    /// Records the replay gate's report.
    pub(crate) fn set_gate(&self, gate: GateReport) {
        self.status.send_modify(|s| s.gate = Some(gate));
    }

    /// Records the live comparison's tally.
    pub(crate) fn set_shadow(&self, tally: Tally) {
        self.status.send_modify(|s| s.shadow = tally);
    }

    /// Records the watch's tally.
    pub(crate) fn set_watch(&self, tally: Tally) {
        self.status.send_modify(|s| s.watch = tally);
    }

    /// Records the verdict.
    pub(crate) fn set_decision(&self, decision: Decision) {
        self.status.send_modify(|s| s.decision = Some(decision));
    }

    /// Whether it is over.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.status.borrow().stage, Stage::Done(_))
    }

    /// The status as last written (without the running tally).
    pub(crate) fn recorded(&self) -> EvaluationStatus {
        self.status.borrow().clone()
    }

    /// The status, with the running shadows' or watch's tally so far.
    pub(crate) fn get(&self) -> EvaluationStatus {
        let mut status = self.recorded();
        let progress = self.progress.lock().tally.lock().clone();
        match status.stage {
            Stage::Shadowing => status.shadow = progress,
            Stage::Watching => status.watch = progress,
            _ => {}
        }
        status
    }

    /// Follows the status's changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<EvaluationStatus> {
        self.status.subscribe()
    }

    /// The running work's progress.
    pub(crate) fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress.lock())
    }

    /// New work (the watch) reports its progress here from now on.
    pub(crate) fn set_progress(&self, progress: Arc<Progress>) {
        *self.progress.lock() = progress;
    }

    /// Asks the running work (gate's shadows, shadows, watch) to stop.
    pub(crate) fn cancel_work(&self) {
        self.progress.lock().cancel.store(true, Ordering::Release);
    }
}
