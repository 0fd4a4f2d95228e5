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
//!
//! Both follow the mirror through one loop, `Live::follow`: inputs in order and once each, gaps
//! read back, production tapped again when it restarts. What differs — seeding, what an input
//! is compared with, when to stop — is each one's `Follower` (`Evaluating`, `Watching`).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arbor_agent::envelope::{Answer, Envelope, Status};
use arbor_agent::report::chain;
use arbor_agent::{
    AgentRef, BehaviourId, Mirror, MirrorTap, Mirrored, Tapped, Verdict, Verification,
};
use arbor_wal::Lsn;
use parking_lot::Mutex;
use tokio::runtime::Handle;

use crate::journal::{self, Read};
use crate::objective::Rules;
use crate::policy::{Policy, ShadowLimits, Tally};
use crate::shadow::Factory;

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

/// Publish the tally every this many samples.
pub(crate) const PUBLISH_EVERY: u64 = 64;

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

pub(crate) struct Live {
    pub(crate) factory: Factory,
    pub(crate) agent: String,
    pub(crate) rules: Rules,
    pub(crate) policy: Policy,
    pub(crate) limits: ShadowLimits,
    pub(crate) progress: Arc<Progress>,
    pub(crate) handle: Handle,
}

/// A mirrored input and, for a verified tap, the duty to give its verdict.
type Next = (Arc<Mirrored>, Option<Verification>);

impl Live {
    pub(crate) fn publish(&self, tally: &Tally) {
        *self.progress.tally.lock() = tally.clone();
    }

    fn cancelled(&self) -> bool {
        self.progress.cancel.load(Ordering::Acquire)
    }

    /// Waits for the running agent and mirrors it; `None` at the deadline or on cancel.
    pub(crate) fn tap(&self, deadline: Instant, verified: bool) -> Result<Tap, LiveEnd> {
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
    pub(crate) fn next(
        &self,
        mirror: &mut Mirror,
        deadline: Instant,
    ) -> Result<Option<Next>, LiveEnd> {
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
    /// between (nothing to catch up from then), unless to `through` (a watch reads across the
    /// swap of the promotion it watches).
    pub(crate) fn catch_up(
        &self,
        lsn: Lsn,
        until: u64,
        through: Option<&BehaviourId>,
        mut step: impl FnMut(Envelope, Status, Vec<Answer>) -> Result<(), String>,
    ) -> Result<(Lsn, u64), String> {
        let mut at = (lsn, 0);
        let read = journal::read(&self.factory.system, &self.agent, lsn + 1, through)
            .map_err(|error| chain(&error))?;
        for next in read {
            let (lsn, read) = next.map_err(|error| chain(&error))?;
            match read {
                Read::Handled {
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
                Read::Stop(reason) => return Err(reason),
            }
        }
        Ok(at)
    }

    /// Follows production's mirror for `run`, from the tap `first` (the shadows at journal
    /// position `at`, if known), until `run` ends it: the loop the evaluation and the watch
    /// share. It hands `run` the mirrored inputs in order, once each; inputs the mirror
    /// dropped, for `run` to read back from the journal; and a new tap whenever the mirror
    /// ends (production restarted) or `run` gives the tap up.
    pub(crate) fn follow(
        &self,
        run: &mut impl Follower,
        first: Tap,
        mut at: Option<Position>,
    ) -> LiveEnd {
        let (mut _agent, mut tapped, mut mirror) = first;
        loop {
            let mut expected = tapped.seq + 1;
            loop {
                let (record, verification) = match self.next(&mut mirror, run.next_until()) {
                    Ok(Some(next)) => next,
                    Ok(None) => break,
                    Err(end) => return run.stopped(end),
                };
                if record.seq < expected {
                    // Already handled (read back from the journal after a gap).
                    if let Some(verification) = verification {
                        verification.verdict(Verdict::Agree);
                    }
                    continue;
                }
                if record.seq > expected {
                    metrics::counter!(arbor_metrics::SHADOW_GAPS).increment(record.seq - expected);
                    match run.missed(expected..record.seq, at) {
                        Ok(true) => {}
                        Ok(false) => {
                            at = None;
                            break;
                        }
                        Err(end) => return end,
                    }
                }
                expected = record.seq + 1;
                at = record.lsn.map(|lsn| (lsn, record.seq));
                match run.input(&record, verification) {
                    Ok(true) => {}
                    Ok(false) => {
                        at = None;
                        break;
                    }
                    Err(end) => return end,
                }
            }
            (_agent, tapped, mirror) = match self.tap(run.retap_until(), run.verified()) {
                Ok(tap) => tap,
                Err(end) => return run.untapped(end),
            };
            at = match run.retapped(&tapped, at, expected) {
                Ok(at) => at,
                Err(end) => return end,
            };
        }
    }
}

/// A tap of production: the agent, its state when the mirror went in, and the mirror.
pub(crate) type Tap = (AgentRef, Tapped, Mirror);

/// Where the shadows are in the journal: the last input they handled and its LSN.
pub(crate) type Position = (Lsn, u64);

/// What a live run does at each turn of [`Live::follow`], the loop the evaluation
/// (`Evaluating`) and the watch (`Watching`) share. `Err` from any of them ends the run
/// with that end.
pub(crate) trait Follower {
    /// Whether production's replies wait for this run's verdicts.
    fn verified(&self) -> bool;
    /// Until when to wait for the next mirrored input.
    fn next_until(&self) -> Instant;
    /// No input came before [`next_until`](Self::next_until), or the run was cancelled: how
    /// it ends.
    fn stopped(&mut self, end: LiveEnd) -> LiveEnd;
    /// The mirror dropped inputs `missed`: read them back from the journal after `at`.
    /// `Ok(false)`: they cannot be, so tap production again.
    fn missed(&mut self, missed: Range<u64>, at: Option<Position>) -> Result<bool, LiveEnd>;
    /// The next mirrored input. `Ok(false)`: tap production again (it crashed).
    fn input(
        &mut self,
        record: &Mirrored,
        verification: Option<Verification>,
    ) -> Result<bool, LiveEnd>;
    /// Until when to wait for production to be tapped again.
    fn retap_until(&self) -> Instant;
    /// Production could not be tapped again: how the run ends.
    fn untapped(&mut self, end: LiveEnd) -> LiveEnd;
    /// Production tapped again at `tapped`, the shadows at journal position `at` (if known)
    /// expecting input `expected`: get them to production's state; the position to go on from.
    fn retapped(
        &mut self,
        tapped: &Tapped,
        at: Option<Position>,
        expected: u64,
    ) -> Result<Option<Position>, LiveEnd>;
}
