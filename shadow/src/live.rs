//! Live shadowing: production's inputs, mirrored after production handled them, run through the
//! shadows on a thread of their own.
//!
//! - **Evaluation**: a candidate shadow and a control shadow (the current module). When the
//!   replay gate passed over the whole journal, its two instances go on: they catch up from the
//!   journal to the state production had when the mirror was installed (checked: the control
//!   must then hold exactly production's snapshot), so the candidate's instance keeps aging
//!   through history and live traffic alike. Otherwise both are seeded from production's
//!   snapshot taken in the same mailbox turn as the mirror was installed. Each mirrored input
//!   runs through both; the control must do exactly what production did (A/A), the candidate
//!   what the control did.
//! - **Watch**: after a promotion, the previous module runs as a reverse shadow; production
//!   (now the candidate) must keep doing what the previous module does on the inputs after the
//!   promotion. A difference or a production crash is a regression. The watch lasts at least
//!   its window *and* its sample count ([`WatchRule`]). In a *verified* watch production's
//!   replies are held until the reverse shadow agrees, and replaced by its answer when it does
//!   not.
//!
//! The mirror is bounded: when the shadows fall behind, production drops the record and counts
//! a gap instead of waiting (a verified watch's production waits instead). The inputs a gap
//! skipped are read back from the journal (with their recorded answers) and handled by the
//! shadows all the same, so nothing is skipped and no instance restarts; only without a
//! journal does a gap re-seed the evaluation's shadows from a fresh production snapshot (and
//! end a watch, which says so).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arbor_agent::agent::Journaled;
use arbor_agent::envelope::{Answer, Envelope, Status};
use arbor_agent::{
    AgentRef, BehaviourId, Mirror, MirrorTap, Mirrored, MirroredStatus, Tapped, Verdict,
    Verification,
};
use arbor_wal::Lsn;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::compare::IgnoreRule;
use crate::gate::Resume;
use crate::policy::{Policy, ShadowLimits, Tally, already_failed, enough};
use crate::shadow::{Ended, Factory, Pair, Run, Shadow, Side, difference};

/// How often a waiting shadow thread looks at its deadline and cancellation flag.
const TICK: Duration = Duration::from_millis(20);

/// How often it looks for a restarted production agent to mirror (inputs handled before the
/// new mirror is in are caught up from the journal, or not compared without one).
const RETAP: Duration = Duration::from_millis(1);

/// What the shadow thread shares with the arbiter while it runs.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) tally: Mutex<Tally>,
    pub(crate) cancel: AtomicBool,
}

/// How long a watch waits for production to come back after its mirror ended (a supervisor
/// restart takes milliseconds; an agent stopped for good never comes back).
const RESTART_WAIT: Duration = Duration::from_secs(10);

/// Publish the tally every this many samples.
const PUBLISH_EVERY: u64 = 64;

/// How a live run ended.
#[derive(Debug)]
pub(crate) enum LiveEnd {
    /// Enough samples, or failures enough to reject.
    Complete,
    /// The deadline (evaluation) passed.
    TimeUp,
    /// Watch: production regressed.
    Regression(String),
    /// Watch: its longest time passed before it had the samples its rule asks for.
    Incomplete(String),
    /// The run could not go on (the agent is gone, the candidate cannot take the state, …).
    Failed(String),
    /// Cancelled by the arbiter.
    Cancelled,
}

/// How long a watch lasts (see the [`policy`](crate::policy) module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WatchRule {
    /// At least this long.
    pub(crate) window: Duration,
    /// And at least this many compared inputs.
    pub(crate) samples: u64,
    /// But no longer than this (then it ends incomplete, saying so).
    pub(crate) max: Duration,
    /// Production's answers wait for the reverse shadow's agreement.
    pub(crate) verified: bool,
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

/// A mirrored input and, for a verified tap, the duty to give its verdict.
type Next = (Arc<Mirrored>, Option<Verification>);

impl Live {
    fn publish(&self, tally: &Tally) {
        *self.progress.tally.lock() = tally.clone();
    }

    fn cancelled(&self) -> bool {
        self.progress.cancel.load(Ordering::Acquire)
    }

    /// Waits for the running agent and mirrors it; `None` at the deadline or on cancel.
    fn tap(
        &self,
        deadline: Instant,
        verified: bool,
    ) -> Result<(AgentRef, Tapped, Mirror), LiveEnd> {
        loop {
            if self.cancelled() || self.factory.system.is_shut_down() {
                return Err(LiveEnd::Cancelled);
            }
            if Instant::now() >= deadline {
                return Err(LiveEnd::TimeUp);
            }
            if let Some(agent) = self.factory.system.lookup(&self.agent) {
                let (tap, mirror) = if verified {
                    MirrorTap::verified(self.limits.queue)
                } else {
                    MirrorTap::bounded(self.limits.queue)
                };
                if let Ok(tapped) = self.handle.block_on(agent.tap(Some(tap))) {
                    return Ok((agent, tapped, mirror));
                }
            }
            std::thread::sleep(RETAP);
        }
    }

    /// The next mirrored input; `Ok(None)` when the mirror ended (production restarted).
    fn next(&self, mirror: &mut Mirror, deadline: Instant) -> Result<Option<Next>, LiveEnd> {
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
                .block_on(async { tokio::time::timeout(wait, mirror.recv_verified()).await });
            match next {
                Ok(record) => return Ok(record),
                Err(_elapsed) => continue,
            }
        }
    }

    /// Reads `agent`'s journaled inputs after `lsn` up to input `until` (included) and hands
    /// each to `step` with its status, answers and LSN; returns the last LSN and input
    /// handled. `Err` when the journal no longer holds them, or the agent changed modules
    /// between (nothing to catch up from then).
    fn catch_up(
        &self,
        lsn: Lsn,
        until: u64,
        mut step: impl FnMut(Envelope, Status, Vec<Answer>) -> Result<(), String>,
    ) -> Result<(Lsn, u64), String> {
        let wal = self
            .factory
            .system
            .wal()
            .ok_or("the system does not journal")?;
        let mut at = (lsn, 0);
        for next in arbor_agent::agent::history(wal, &self.agent, lsn + 1)? {
            let (lsn, journaled) = next?;
            match journaled {
                Journaled::Handled {
                    input,
                    status,
                    answers,
                } => {
                    if input.seq > until {
                        break;
                    }
                    at = (lsn, input.seq);
                    step(input, status, answers)?;
                    if at.1 == until {
                        break;
                    }
                }
                Journaled::Changed(change) => {
                    return Err(format!("the agent changed modules ({change:?})"));
                }
            }
        }
        Ok(at)
    }

    /// The evaluation of `candidate` against `control` (the module production runs), going on
    /// from the gate's instances when it left them (`resume`). `mirroring` hears once the
    /// mirror is in and the shadows are seeded.
    pub(crate) fn evaluate(
        &self,
        control: &BehaviourId,
        candidate: &BehaviourId,
        resume: Option<Resume>,
        mirroring: oneshot::Sender<()>,
    ) -> LiveEnd {
        let deadline = Instant::now() + self.limits.deadline;
        let mut mirroring = Some(mirroring);
        // The pair and the journal position (LSN, input) its instances have handled.
        let (mut pair, mut at) = match resume {
            Some(resume) => (Some(resume.pair), Some((resume.lsn, resume.seq))),
            None => (None, None),
        };
        loop {
            let (_agent, tapped, mut mirror) = match self.tap(deadline, false) {
                Ok(tapped) => tapped,
                Err(end) => return end,
            };
            if &tapped.behaviour != control {
                return LiveEnd::Failed(format!(
                    "production runs {}, not {control}",
                    tapped.behaviour
                ));
            }
            let brought = match (pair.as_mut(), at) {
                (Some(pair), Some((lsn, seq))) => {
                    self.bring_to(pair, lsn, seq, &tapped).map(|()| true)
                }
                _ => Ok(false),
            };
            let seeded = match (brought, pair.as_mut()) {
                (Ok(true), _) => Ok(()),
                (_, None) => Pair::seeded(
                    self.factory.clone(),
                    control,
                    candidate,
                    &tapped.state,
                    self.ignore.clone(),
                )
                .map(|p| pair = Some(p)),
                (_, Some(pair)) => {
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
            at = None;
            let mut expected = tapped.seq + 1;
            // Mirror this tap until it ends or production crashes; then tap again.
            loop {
                let record = match self.next(&mut mirror, deadline) {
                    Ok(Some((record, _))) => record,
                    Ok(None) => break,
                    Err(end) => {
                        self.publish(&pair.tally);
                        return end;
                    }
                };
                if record.seq < expected {
                    continue;
                }
                if record.seq > expected {
                    let missed = record.seq - expected;
                    metrics::counter!(arbor_metrics::SHADOW_GAPS).increment(missed);
                    pair.tally.gaps += missed;
                    let caught = at
                        .ok_or_else(|| "no journal position".to_string())
                        .and_then(|(lsn, _)| {
                            self.catch_up(lsn, record.seq - 1, |input, status, answers| {
                                pair.tally.caught_up += 1;
                                crate::gate::replay(pair, &input, status, answers, &self.policy)
                            })
                        });
                    if caught.is_err() {
                        // Without the journal the shadows cannot know the missed inputs.
                        break;
                    }
                }
                expected = record.seq + 1;
                at = record.lsn.map(|lsn| (lsn, record.seq));
                let control_run = match pair.step(
                    record.seq,
                    &record.payload,
                    record.answers.clone(),
                    &self.policy,
                    true,
                ) {
                    Ok(run) => run,
                    Err(reason) => return LiveEnd::Failed(reason),
                };
                // A/A: the control is production's code on production's state and answers.
                let production = Ended::from(&record.status);
                let reference = Side::production(&production, &record.sends);
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
                    at = None;
                    break;
                }
            }
            self.publish(&pair.tally);
        }
    }

    /// Brings `pair` (at journal position `lsn`, input `seq`) to production's tapped state by
    /// replaying the journal between; `Err` if it cannot (then it is re-seeded). The control
    /// must end with exactly production's snapshot: its instances are production's code on
    /// production's inputs and answers.
    fn bring_to(&self, pair: &mut Pair, lsn: Lsn, seq: u64, tapped: &Tapped) -> Result<(), String> {
        if tapped.seq < seq || tapped.seq - seq > self.limits.gate_max_records {
            return Err(format!(
                "production is at input {}, the shadows at {seq}",
                tapped.seq
            ));
        }
        if tapped.seq > seq {
            self.catch_up(lsn, tapped.seq, |input, status, answers| {
                pair.tally.caught_up += 1;
                crate::gate::replay(pair, &input, status, answers, &self.policy)
            })?;
        }
        let control = pair.control.snapshot()?;
        if control != tapped.state {
            return Err(format!(
                "after catching up to input {}, the control's state is not production's",
                tapped.seq
            ));
        }
        Ok(())
    }

    /// The watch after a promotion to `promoted`: `previous` runs as a reverse shadow from the
    /// state production had before the promotion. `ready` gets the tap's result once the
    /// mirror is installed (the promotion must wait for it, so no input falls between). A
    /// verified watch does not end at a regression: it tells `regressed` and goes on giving
    /// verdicts (the reverse shadow's answers) until the arbiter, having rolled back, cancels
    /// it.
    pub(crate) fn watch(
        &self,
        previous: &BehaviourId,
        promoted: &BehaviourId,
        rule: WatchRule,
        ready: oneshot::Sender<Result<u64, String>>,
        regressed: oneshot::Sender<String>,
    ) -> LiveEnd {
        let started = Instant::now();
        let tapped = self.tap(Instant::now() + self.limits.deadline, rule.verified);
        let (_agent, tapped, mut mirror) = match tapped {
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
        let mut watch = Watching {
            live: self,
            promoted,
            shadow: &mut shadow,
            tally: Tally::default(),
            regressed: Some(regressed),
            verified: rule.verified,
        };
        let mut expected = tapped.seq + 1;
        let mut at: Option<Lsn> = None;
        loop {
            let enough = watch.tally.samples >= rule.samples;
            let deadline = started + if enough { rule.window } else { rule.max };
            let (record, verification) = match self.next(&mut mirror, deadline) {
                Ok(Some(next)) => next,
                Ok(None) => {
                    // Production restarted: mirror it again, and catch up with what it
                    // handled before the new mirror was in.
                    match self.tap(Instant::now() + RESTART_WAIT, rule.verified) {
                        Ok((_, tapped, next)) => {
                            mirror = next;
                            if let Err(end) = watch.catch_up_to(at, expected, tapped.seq + 1) {
                                return end;
                            }
                            expected = tapped.seq + 1;
                            continue;
                        }
                        Err(LiveEnd::TimeUp) => {
                            return watch.end(LiveEnd::Incomplete(format!(
                                "production did not come back within {RESTART_WAIT:?} of its \
                                 mirror ending"
                            )));
                        }
                        Err(end) => return watch.end(end),
                    }
                }
                Err(LiveEnd::TimeUp) if enough => return watch.end(LiveEnd::Complete),
                Err(LiveEnd::TimeUp) => {
                    let reason = format!(
                        "{} of the {} samples the watch needs in {:?}",
                        watch.tally.samples, rule.samples, rule.max
                    );
                    return watch.end(LiveEnd::Incomplete(reason));
                }
                Err(end) => return watch.end(end),
            };
            if record.seq < expected {
                if let Some(verification) = verification {
                    verification.verdict(Verdict::Agree);
                }
                continue;
            }
            if record.seq > expected {
                let missed = record.seq - expected;
                metrics::counter!(arbor_metrics::SHADOW_GAPS).increment(missed);
                watch.tally.gaps += missed;
                if let Err(end) = watch.catch_up_to(at, expected, record.seq) {
                    return end;
                }
            }
            expected = record.seq + 1;
            at = record.lsn;
            if let Err(end) = watch.compare(&record, verification) {
                return end;
            }
            if watch.tally.samples.is_multiple_of(PUBLISH_EVERY) {
                self.publish(&watch.tally);
            }
        }
    }
}

/// A watch under way: the reverse shadow and what it found.
struct Watching<'a> {
    live: &'a Live,
    promoted: &'a BehaviourId,
    shadow: &'a mut Shadow,
    tally: Tally,
    /// Told of the first regression (a verified watch goes on after it).
    regressed: Option<oneshot::Sender<String>>,
    verified: bool,
}

impl Watching<'_> {
    fn end(&self, end: LiveEnd) -> LiveEnd {
        self.live.publish(&self.tally);
        end
    }

    /// Handles the inputs from `expected` to before `until` from the journal (after `at`):
    /// their replies were not mirrored, so only how each ended is compared.
    fn catch_up_to(&mut self, at: Option<Lsn>, expected: u64, until: u64) -> Result<(), LiveEnd> {
        if until <= expected {
            return Ok(());
        }
        let Some(lsn) = at else {
            return Err(self.end(LiveEnd::Incomplete(format!(
                "the reverse shadow missed inputs {expected}..{until} and has no journal \
                 position to read them back from"
            ))));
        };
        let mut regression = None;
        let caught = self
            .live
            .catch_up(lsn, until - 1, |input, status, answers| {
                if input.seq < expected {
                    return Ok(());
                }
                self.tally.caught_up += 1;
                let run = self.shadow.run(&input.payload, answers);
                let agrees = matches!(
                    (&status, &run.ended),
                    (Status::Applied, Ended::Replied(_))
                        | (Status::Refused(_), Ended::Refused(_))
                        | (Status::Crashed(_), Ended::Crashed(_))
                );
                if !agrees && regression.is_none() {
                    regression = Some(format!(
                        "{} on input {} (read back from the journal): the previous module {}, \
                         production {status:?}",
                        self.promoted,
                        input.seq,
                        match &run.ended {
                            Ended::Replied(_) => "replied".to_string(),
                            Ended::Refused(why) => format!("refused ({why})"),
                            Ended::Crashed(why) => format!("crashed ({why})"),
                        }
                    ));
                }
                Ok(())
            });
        if let Err(reason) = caught {
            return Err(self.end(LiveEnd::Incomplete(format!(
                "the reverse shadow missed inputs {expected}..{until} and could not read them \
                 back: {reason}"
            ))));
        }
        match regression {
            Some(reason) => self.regress(reason),
            None => Ok(()),
        }
    }

    /// Compares production's handling of `record` with the reverse shadow's.
    fn compare(
        &mut self,
        record: &Mirrored,
        verification: Option<Verification>,
    ) -> Result<(), LiveEnd> {
        let run = self.shadow.run(&record.payload, record.answers.clone());
        if &record.behaviour != self.promoted {
            // Still (or again, after a rollback) the previous module in production.
            if let Some(verification) = verification {
                verification.verdict(Verdict::Agree);
            }
            return Ok(());
        }
        let tally = &mut self.tally;
        metrics::counter!(arbor_metrics::SHADOW_COMPARISONS).increment(1);
        let kind = tally.count_input(&record.payload, true);
        if let (Some(a), Some(b)) = (run.fuel, record.fuel) {
            tally.pair_fuel(&kind, a as f64, b as f64);
        }
        let production = Ended::from(&record.status);
        let got = Side::production(&production, &record.sends);
        let divergence = difference(
            record.seq,
            &record.payload,
            Side::of(&run),
            got,
            &self.live.ignore,
        );
        let Some(divergence) = divergence else {
            if let Some(verification) = verification {
                verification.verdict(Verdict::Agree);
            }
            if matches!(run.ended, Ended::Crashed(_)) {
                return Err(self.end(LiveEnd::Failed("the reverse shadow crashed".into())));
            }
            return Ok(());
        };
        if let Some(verification) = verification {
            // The caller gets what the previous module answers, not the regression.
            verification.verdict(Verdict::Replace(status_of(&run), run.sends.clone()));
        }
        let reason = format!(
            "{} {} on input {} (`{}`): expected {}, got {}",
            self.promoted,
            divergence.what,
            divergence.seq,
            divergence.kind,
            divergence.expected,
            divergence.got
        );
        self.tally.diverged(divergence);
        self.regress(reason)
    }

    /// A regression: a plain watch ends with it; a verified one tells the arbiter and goes on
    /// answering with the reverse shadow until the rollback is done.
    fn regress(&mut self, reason: String) -> Result<(), LiveEnd> {
        if !self.verified {
            return Err(self.end(LiveEnd::Regression(reason)));
        }
        if let Some(regressed) = self.regressed.take() {
            self.live.publish(&self.tally);
            let _ = regressed.send(reason);
        }
        Ok(())
    }
}

/// How the reverse shadow's run ended, as a verified tap's replacement.
fn status_of(run: &Run) -> MirroredStatus {
    match &run.ended {
        Ended::Replied(reply) => MirroredStatus::Applied(reply.clone()),
        Ended::Refused(why) => MirroredStatus::Refused(why.clone()),
        Ended::Crashed(why) => MirroredStatus::Crashed(why.clone()),
    }
}
