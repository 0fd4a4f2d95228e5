//! The live evaluation: the candidate and the control shadow on production's mirrored inputs,
//! going on from the replay gate's instances when it left them (see [`live`](crate::live)).

use std::ops::Range;
use std::time::Instant;

use arbor_agent::{BehaviourId, Mirrored, Tapped, Verification};
use arbor_wal::Lsn;
use tokio::sync::oneshot;

use crate::gate::Resume;
use crate::live::{Follower, Live, LiveEnd, PUBLISH_EVERY, Position};
use crate::policy::{already_failed, enough};
use crate::shadow::{Ended, Pair, Side, difference};

impl Live {
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
        let first = match self.tap(deadline, false) {
            Ok(tap) => tap,
            Err(end) => return end,
        };
        let tapped = &first.1;
        let seeded = match resume {
            Some(Resume { mut pair, lsn, seq }) => self
                .resync(&mut pair, Some((lsn, seq)), control, tapped)
                .map(|()| pair),
            None => runs(control, tapped).and_then(|()| {
                Pair::seeded(
                    self.factory.clone(),
                    control,
                    candidate,
                    &tapped.state,
                    self.rules.clone(),
                )
                .map_err(migration_failed)
            }),
        };
        let mut pair = match seeded {
            Ok(pair) => pair,
            Err(end) => return end,
        };
        let _ = mirroring.send(());
        let mut run = Evaluating {
            live: self,
            control,
            pair: &mut pair,
            deadline,
        };
        self.follow(&mut run, first, None)
    }

    /// Gets `pair` to production's `tapped` state: brought there from the journal position
    /// `at` when it can be, else re-seeded from the tapped snapshot.
    fn resync(
        &self,
        pair: &mut Pair,
        at: Option<Position>,
        control: &BehaviourId,
        tapped: &Tapped,
    ) -> Result<(), LiveEnd> {
        runs(control, tapped)?;
        if let Some((lsn, seq)) = at
            && self.bring_to(pair, lsn, seq, tapped).is_ok()
        {
            return Ok(());
        }
        pair.tally.resyncs += 1;
        // What the shadows hold is still comparable (both saw the same inputs); compare it
        // before it is replaced. A dead control has nothing to give.
        let _ = pair.check_state(tapped.seq);
        pair.reseed(&tapped.state).map_err(migration_failed)
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
            self.catch_up(lsn, tapped.seq, None, |input, status, answers| {
                pair.tally.caught_up += 1;
                crate::gate::replay(pair, &input, status, answers, &self.policy)
            })?;
        }
        let control = pair.control.snapshot().map_err(|e| e.to_string())?;
        if control != tapped.state {
            return Err(format!(
                "after catching up to input {}, the control's state is not production's",
                tapped.seq
            ));
        }
        Ok(())
    }
}

/// An evaluation under way: the candidate beside the control, both on production's inputs.
struct Evaluating<'a> {
    live: &'a Live,
    control: &'a BehaviourId,
    pair: &'a mut Pair,
    deadline: Instant,
}

impl Follower for Evaluating<'_> {
    fn verified(&self) -> bool {
        false
    }

    fn next_until(&self) -> Instant {
        self.deadline
    }

    fn stopped(&mut self, end: LiveEnd) -> LiveEnd {
        self.live.publish(&self.pair.tally);
        end
    }

    fn missed(&mut self, missed: Range<u64>, at: Option<Position>) -> Result<bool, LiveEnd> {
        let pair = &mut *self.pair;
        pair.tally.gaps += missed.end - missed.start;
        // Without the journal the shadows cannot know the missed inputs: re-seeded instead.
        let Some((lsn, _)) = at else {
            return Ok(false);
        };
        let policy = &self.live.policy;
        let caught = self
            .live
            .catch_up(lsn, missed.end - 1, None, |input, status, answers| {
                pair.tally.caught_up += 1;
                crate::gate::replay(pair, &input, status, answers, policy)
            });
        Ok(caught.is_ok())
    }

    fn input(&mut self, record: &Mirrored, _: Option<Verification>) -> Result<bool, LiveEnd> {
        let (live, pair) = (self.live, &mut *self.pair);
        let control_run = pair
            .step(
                record.seq,
                &record.payload,
                record.answers.clone(),
                &live.policy,
                true,
            )
            .map_err(LiveEnd::Failed)?;
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
            live.publish(&pair.tally);
        }
        let crashed = matches!(production, Ended::Crashed(_))
            || matches!(control_run.ended, Ended::Crashed(_));
        if already_failed(&pair.tally, &live.policy) {
            live.publish(&pair.tally);
            return Err(LiveEnd::Complete);
        }
        if enough(&pair.tally, &live.policy) && !crashed {
            // The last word on state before deciding.
            let checked = pair.check_state(record.seq);
            live.publish(&pair.tally);
            return Err(match checked {
                Ok(()) => LiveEnd::Complete,
                Err(reason) => LiveEnd::Failed(format!("final state check: {reason}")),
            });
        }
        // Production restarts (or the control died): re-seed from its next state.
        Ok(!crashed)
    }

    fn retap_until(&self) -> Instant {
        self.deadline
    }

    fn untapped(&mut self, end: LiveEnd) -> LiveEnd {
        self.live.publish(&self.pair.tally);
        end
    }

    fn retapped(
        &mut self,
        tapped: &Tapped,
        at: Option<Position>,
        _: u64,
    ) -> Result<Option<Position>, LiveEnd> {
        self.live.publish(&self.pair.tally);
        self.live.resync(self.pair, at, self.control, tapped)?;
        // The tapped state has no journal position: a gap before the next input re-seeds.
        Ok(None)
    }
}

/// `Err` unless production runs `module` (the module the shadows compare against).
fn runs(module: &BehaviourId, tapped: &Tapped) -> Result<(), LiveEnd> {
    if &tapped.behaviour == module {
        Ok(())
    } else {
        Err(LiveEnd::Failed(format!(
            "production runs {}, not {module}",
            tapped.behaviour
        )))
    }
}

fn migration_failed(reason: String) -> LiveEnd {
    LiveEnd::Failed(format!("state migration failed: {reason}"))
}
