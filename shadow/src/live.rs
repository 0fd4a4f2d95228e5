//! Live shadowing: production's inputs, mirrored after production handled them, run through the
//! shadows on a thread of their own.
//!
//! - **Evaluation**: a candidate shadow and a control shadow (the current module), both seeded
//!   from production's snapshot taken in the same mailbox turn as the mirror was installed. Each
//!   mirrored input runs through both; the control must do exactly what production did (A/A),
//!   the candidate what the control did.
//! - **Watch**: after a promotion, the previous module runs as a reverse shadow; production
//!   (now the candidate) must keep doing what the previous module does on the inputs after the
//!   promotion. A difference or a production crash is a regression.
//!
//! The mirror is bounded: when the shadows fall behind, production drops the record and counts
//! a gap instead of waiting. A gap (or a production restart, which ends the mirror) re-seeds the
//! evaluation's shadows from a fresh production snapshot; a watch cannot re-seed (production's
//! state is in the new module's layout) and ends without a verdict.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arbor_agent::{AgentRef, BehaviourId, Mirror, MirrorTap, Mirrored, Tapped};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::compare::IgnoreRule;
use crate::policy::{Policy, ShadowLimits, Tally, already_failed, enough};
use crate::shadow::{Ended, Factory, Pair, Shadow, Side, difference};

/// How often a waiting shadow thread looks at its deadline and cancellation flag.
const TICK: Duration = Duration::from_millis(20);

/// How often it looks for a restarted production agent to mirror (inputs handled before the
/// new mirror is in are not compared).
const RETAP: Duration = Duration::from_millis(1);

/// What the shadow thread shares with the arbiter while it runs.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) tally: Mutex<Tally>,
    pub(crate) cancel: AtomicBool,
}

/// Publish the tally every this many samples.
const PUBLISH_EVERY: u64 = 64;

/// How a live run ended.
#[derive(Debug)]
pub(crate) enum LiveEnd {
    /// Enough samples, or failures enough to reject.
    Complete,
    /// The deadline (evaluation) or the window (watch) passed.
    TimeUp,
    /// Watch: production regressed.
    Regression(String),
    /// The run could not go on (the agent is gone, the candidate cannot take the state, …).
    Failed(String),
    /// Cancelled by the arbiter.
    Cancelled,
}

pub(crate) struct Live {
    pub(crate) factory: Factory,
    pub(crate) agent: String,
    pub(crate) ignore: Vec<IgnoreRule>,
    pub(crate) policy: Policy,
    pub(crate) limits: ShadowLimits,
    pub(crate) progress: Arc<Progress>,
    pub(crate) handle: Handle,
}

impl Live {
    fn publish(&self, tally: &Tally) {
        *self.progress.tally.lock() = tally.clone();
    }

    fn cancelled(&self) -> bool {
        self.progress.cancel.load(Ordering::Acquire)
    }

    /// Waits for the running agent and mirrors it; `None` at the deadline or on cancel.
    fn tap(&self, deadline: Instant) -> Result<(AgentRef, Tapped, Mirror), LiveEnd> {
        loop {
            if self.cancelled() {
                return Err(LiveEnd::Cancelled);
            }
            if Instant::now() >= deadline {
                return Err(LiveEnd::TimeUp);
            }
            if let Some(agent) = self.factory.system.lookup(&self.agent) {
                let (tap, mirror) = MirrorTap::bounded(self.limits.queue);
                if let Ok(tapped) = self.handle.block_on(agent.tap(Some(tap))) {
                    return Ok((agent, tapped, mirror));
                }
            }
            std::thread::sleep(RETAP);
        }
    }

    /// The next mirrored input; `Ok(None)` when the mirror ended (production restarted).
    fn next(
        &self,
        mirror: &mut Mirror,
        deadline: Instant,
    ) -> Result<Option<Arc<Mirrored>>, LiveEnd> {
        loop {
            if self.cancelled() {
                return Err(LiveEnd::Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LiveEnd::TimeUp);
            }
            let wait = TICK.min(deadline - now);
            let next = self
                .handle
                .block_on(async { tokio::time::timeout(wait, mirror.recv()).await });
            match next {
                Ok(record) => return Ok(record),
                Err(_elapsed) => continue,
            }
        }
    }

    /// The evaluation of `candidate` against `control` (the module production runs).
    /// `mirroring` hears once the mirror is in and the shadows are seeded.
    pub(crate) fn evaluate(
        &self,
        control: &BehaviourId,
        candidate: &BehaviourId,
        mirroring: oneshot::Sender<()>,
    ) -> LiveEnd {
        let deadline = Instant::now() + self.limits.deadline;
        let mut pair: Option<Pair> = None;
        let mut mirroring = Some(mirroring);
        loop {
            let (_agent, tapped, mut mirror) = match self.tap(deadline) {
                Ok(tapped) => tapped,
                Err(end) => return end,
            };
            if &tapped.behaviour != control {
                return LiveEnd::Failed(format!(
                    "production runs {}, not {control}",
                    tapped.behaviour
                ));
            }
            let seeded = match pair.as_mut() {
                None => Pair::seeded(
                    self.factory.clone(),
                    control,
                    candidate,
                    &tapped.state,
                    self.ignore.clone(),
                )
                .map(|p| pair = Some(p)),
                Some(pair) => {
                    pair.tally.resyncs += 1;
                    // What the shadows hold is still comparable (both saw the same inputs);
                    // compare it before it is replaced. A dead control has nothing to give.
                    let _ = pair.check_state(tapped.seq);
                    pair.reseed(&tapped.state)
                }
            };
            if let Err(reason) = seeded {
                return LiveEnd::Failed(format!("state migration failed: {reason}"));
            }
            let Some(pair) = pair.as_mut() else {
                return LiveEnd::Failed("no shadows".into());
            };
            if let Some(mirroring) = mirroring.take() {
                let _ = mirroring.send(());
            }
            let mut expected = tapped.seq + 1;
            // Mirror this tap until it ends or skips an input; then tap again.
            loop {
                let record = match self.next(&mut mirror, deadline) {
                    Ok(Some(record)) => record,
                    Ok(None) => break,
                    Err(end) => {
                        self.publish(&pair.tally);
                        return end;
                    }
                };
                if record.seq != expected {
                    let gap = record.seq.saturating_sub(expected);
                    metrics::counter!(arbor_metrics::SHADOW_GAPS).increment(gap);
                    pair.tally.gaps += gap;
                    break;
                }
                expected += 1;
                let control_run = match pair.step(
                    record.seq,
                    &record.payload,
                    record.answers.clone(),
                    &self.policy,
                ) {
                    Ok(run) => run,
                    Err(reason) => return LiveEnd::Failed(reason),
                };
                // A/A: the control is production's code on production's state and answers.
                let production = Ended::from(&record.status);
                let reference = Side {
                    ended: &production,
                    sends: &record.sends,
                    tools: None,
                    asked_otherwise: None,
                };
                if let Some(divergence) = difference(
                    record.seq,
                    &record.payload,
                    reference,
                    Side::of(&control_run),
                    &[],
                ) {
                    pair.tally.aa_diverged(divergence);
                }
                if pair.tally.samples.is_multiple_of(PUBLISH_EVERY) {
                    self.publish(&pair.tally);
                }
                let crashed = matches!(production, Ended::Crashed(_))
                    || matches!(control_run.ended, Ended::Crashed(_));
                if already_failed(&pair.tally, &self.policy) {
                    self.publish(&pair.tally);
                    return LiveEnd::Complete;
                }
                if enough(&pair.tally, &self.policy) && !crashed {
                    // The last word on state before deciding.
                    let checked = pair.check_state(record.seq);
                    self.publish(&pair.tally);
                    return match checked {
                        Ok(()) => LiveEnd::Complete,
                        Err(reason) => LiveEnd::Failed(format!("final state check: {reason}")),
                    };
                }
                if crashed {
                    // Production restarts (or the control died): re-seed from its next state.
                    break;
                }
            }
            self.publish(&pair.tally);
        }
    }

    /// The watch after a promotion to `promoted`: `previous` runs as a reverse shadow from the
    /// state production had before the promotion. `ready` gets the tap's result once the
    /// mirror is installed (the promotion must wait for it, so no input falls between).
    pub(crate) fn watch(
        &self,
        previous: &BehaviourId,
        promoted: &BehaviourId,
        window: Duration,
        ready: oneshot::Sender<Result<u64, String>>,
    ) -> LiveEnd {
        let deadline = Instant::now() + window;
        let (_agent, tapped, mut mirror) = match self.tap(Instant::now() + self.limits.deadline) {
            Ok(tapped) => tapped,
            Err(end) => {
                let _ = ready.send(Err(format!("{end:?}")));
                return end;
            }
        };
        if &tapped.behaviour != previous {
            let reason = format!("production runs {}, not {previous}", tapped.behaviour);
            let _ = ready.send(Err(reason.clone()));
            return LiveEnd::Failed(reason);
        }
        let mut shadow: Shadow = match self.factory.seeded(previous, &tapped.state) {
            Ok(shadow) => shadow,
            Err(reason) => {
                let _ = ready.send(Err(reason.clone()));
                return LiveEnd::Failed(reason);
            }
        };
        let _ = ready.send(Ok(tapped.seq));
        let mut tally = Tally::default();
        let mut expected = tapped.seq + 1;
        loop {
            let record = match self.next(&mut mirror, deadline) {
                Ok(Some(record)) => record,
                Ok(None) => {
                    self.publish(&tally);
                    return LiveEnd::Failed("production restarted during the watch".into());
                }
                Err(end) => {
                    self.publish(&tally);
                    return end;
                }
            };
            if record.seq != expected {
                let gap = record.seq.saturating_sub(expected);
                metrics::counter!(arbor_metrics::SHADOW_GAPS).increment(gap);
                tally.gaps += gap;
                self.publish(&tally);
                return LiveEnd::Failed(format!(
                    "the reverse shadow missed {} inputs (mirror queue full)",
                    record.seq.saturating_sub(expected)
                ));
            }
            expected += 1;
            let run = shadow.run(&record.payload, record.answers.clone());
            if &record.behaviour != promoted {
                // Still the previous module in production: nothing to compare yet.
                continue;
            }
            tally.samples += 1;
            metrics::counter!(arbor_metrics::SHADOW_COMPARISONS).increment(1);
            tally.count_kind(crate::compare::message_kind(&record.payload));
            if let (Some(a), Some(b)) = (run.fuel, record.fuel) {
                tally.pair_fuel(a as f64, b as f64);
            }
            let production = Ended::from(&record.status);
            let got = Side {
                ended: &production,
                sends: &record.sends,
                tools: None,
                asked_otherwise: None,
            };
            if let Some(divergence) = difference(
                record.seq,
                &record.payload,
                Side::of(&run),
                got,
                &self.ignore,
            ) {
                let reason = format!(
                    "{promoted} {} on input {} (`{}`): expected {}, got {}",
                    divergence.what,
                    divergence.seq,
                    divergence.kind,
                    divergence.expected,
                    divergence.got
                );
                tally.diverged(divergence);
                self.publish(&tally);
                return LiveEnd::Regression(reason);
            }
            if matches!(run.ended, Ended::Crashed(_)) {
                self.publish(&tally);
                return LiveEnd::Failed("the reverse shadow crashed".into());
            }
            if tally.samples.is_multiple_of(PUBLISH_EVERY) {
                self.publish(&tally);
            }
        }
    }
}
