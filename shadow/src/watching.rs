//! The watch after a promotion: the previous module as a reverse shadow on production's
//! mirrored inputs, for at least its window and its sample count (see [`live`](crate::live)).

use std::ops::Range;
use std::time::{Duration, Instant};

use arbor_agent::envelope::Status;
use arbor_agent::{BehaviourId, Mirrored, MirroredStatus, Tapped, Verdict, Verification};
use tokio::sync::oneshot;

use crate::live::{Follower, Live, LiveEnd, PUBLISH_EVERY, Position};
use crate::policy::Tally;
use crate::shadow::{Ended, Run, Shadow, Side, difference};

/// How long a watch waits for production to come back after its mirror ended (a supervisor
/// restart takes milliseconds; an agent stopped for good never comes back).
const RESTART_WAIT: Duration = Duration::from_secs(10);

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

impl Live {
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
        let first = match self.tap(started + self.limits.deadline, rule.verified) {
            Ok(tap) => tap,
            Err(end) => {
                let _ = ready.send(Err(format!("{end:?}")));
                return end;
            }
        };
        let tapped = &first.1;
        let seeded = if &tapped.behaviour != previous {
            Err(format!(
                "production runs {}, not {previous}",
                tapped.behaviour
            ))
        } else {
            self.factory.seeded(previous, &tapped.state)
        };
        let mut shadow = match seeded {
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
            rule,
            started,
        };
        self.follow(&mut watch, first, None)
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
    rule: WatchRule,
    started: Instant,
}

impl Watching<'_> {
    fn end(&self, end: LiveEnd) -> LiveEnd {
        self.live.publish(&self.tally);
        end
    }

    /// Handles the inputs from `expected` to before `until` from the journal (after `at`):
    /// their replies were not mirrored, so only how each ended is compared.
    fn catch_up_to(
        &mut self,
        at: Option<Position>,
        expected: u64,
        until: u64,
    ) -> Result<(), LiveEnd> {
        if until <= expected {
            return Ok(());
        }
        let Some((lsn, _)) = at else {
            return Err(self.end(LiveEnd::Incomplete(format!(
                "the reverse shadow missed inputs {expected}..{until} and has no journal \
                 position to read them back from"
            ))));
        };
        let mut regression = None;
        // Production's inputs on both sides of the swap of the promotion watched.
        let through = Some(self.promoted);
        let caught = self
            .live
            .catch_up(lsn, until - 1, through, |input, status, answers| {
                if input.seq < expected {
                    return Ok(());
                }
                self.tally.caught_up += 1;
                let run = self
                    .shadow
                    .run(&input.payload, answers)
                    .map_err(|e| e.to_string())?;
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
        let run = match self.shadow.run(&record.payload, record.answers.clone()) {
            Ok(run) => run,
            // A verification dropped unanswered agrees: production's reply goes out.
            Err(lost) => return Err(self.end(LiveEnd::Failed(lost.to_string()))),
        };
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
            &self.live.rules.ignore,
        )
        .filter(|divergence| !self.intended(divergence, &run.ended, &production, &record.payload));
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

    /// Whether `divergence` between the previous module's reply (`before`) and the promoted
    /// one's (`after`) is a change the evaluation's comparator grades better or the same:
    /// the change the promotion was accepted for, not a regression.
    fn intended(
        &self,
        divergence: &crate::policy::Divergence,
        before: &Ended,
        after: &Ended,
        payload: &[u8],
    ) -> bool {
        let (Some(comparator), Ended::Replied(a), Ended::Replied(b)) =
            (&self.live.rules.comparator, before, after)
        else {
            return false;
        };
        divergence.what == "reply"
            && !comparator
                .grade(&divergence.kind, payload, a, b)
                .is_failure()
    }

    /// A regression: a plain watch ends with it; a verified one tells the arbiter and goes on
    /// answering with the reverse shadow until the rollback is done.
    fn regress(&mut self, reason: String) -> Result<(), LiveEnd> {
        if !self.rule.verified {
            return Err(self.end(LiveEnd::Regression(reason)));
        }
        if let Some(regressed) = self.regressed.take() {
            self.live.publish(&self.tally);
            let _ = regressed.send(reason);
        }
        Ok(())
    }
}

impl Follower for Watching<'_> {
    fn verified(&self) -> bool {
        self.rule.verified
    }

    fn next_until(&self) -> Instant {
        let enough = self.tally.samples >= self.rule.samples;
        self.started
            + if enough {
                self.rule.window
            } else {
                self.rule.max
            }
    }

    fn stopped(&mut self, end: LiveEnd) -> LiveEnd {
        match end {
            LiveEnd::TimeUp if self.tally.samples >= self.rule.samples => {
                self.end(LiveEnd::Complete)
            }
            LiveEnd::TimeUp => {
                let reason = format!(
                    "{} of the {} samples the watch needs in {:?}",
                    self.tally.samples, self.rule.samples, self.rule.max
                );
                self.end(LiveEnd::Incomplete(reason))
            }
            end => self.end(end),
        }
    }

    fn missed(&mut self, missed: Range<u64>, at: Option<Position>) -> Result<bool, LiveEnd> {
        self.tally.gaps += missed.end - missed.start;
        self.catch_up_to(at, missed.start, missed.end)?;
        Ok(true)
    }

    fn input(
        &mut self,
        record: &Mirrored,
        verification: Option<Verification>,
    ) -> Result<bool, LiveEnd> {
        self.compare(record, verification)?;
        if self.tally.samples.is_multiple_of(PUBLISH_EVERY) {
            self.live.publish(&self.tally);
        }
        Ok(true)
    }

    fn retap_until(&self) -> Instant {
        Instant::now() + RESTART_WAIT
    }

    fn untapped(&mut self, end: LiveEnd) -> LiveEnd {
        match end {
            LiveEnd::TimeUp => self.end(LiveEnd::Incomplete(format!(
                "production did not come back within {RESTART_WAIT:?} of its mirror ending"
            ))),
            end => self.end(end),
        }
    }

    /// Catches up with what production handled before the new mirror was in.
    fn retapped(
        &mut self,
        tapped: &Tapped,
        at: Option<Position>,
        expected: u64,
    ) -> Result<Option<Position>, LiveEnd> {
        self.catch_up_to(at, expected, tapped.seq + 1)?;
        // Still valid: reading back from it skips the inputs already handled.
        Ok(at)
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
