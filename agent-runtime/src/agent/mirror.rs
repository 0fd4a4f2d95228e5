//! Mirroring an agent's inputs to observers (the evolution arbiter's shadows) without slowing
//! the agent: after handling each journaled input the agent offers a [`Mirrored`] record to its
//! tap, a bounded queue. When the queue is full the record is dropped and counted as a gap; the
//! agent never waits for an observer.
//!
//! A *verified* tap ([`MirrorTap::verified`]) is the exception, for agents where a wrong reply is
//! worse than a slow one: each record comes with a [`Verification`], and the input's reply and
//! sends are held until the observer gives its [`Verdict`] — agree, or replace them with its
//! own; when the queue is full the agent waits for room instead of dropping the record. The
//! agent keeps handling inputs meanwhile; only their answers wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::envelope::{Answer, BehaviourId, Kind};

/// One input an agent handled, with everything a shadow needs to handle it the same way in
/// isolation: the recorded host answers, the reply, the sends it queued and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// The input's number (see [`Envelope::seq`](crate::Envelope::seq)).
    pub seq: u64,
    /// Call or cast.
    pub kind: Kind,
    /// The sending agent, `None` for the host.
    pub from: Option<String>,
    /// The message, MessagePack.
    pub payload: Vec<u8>,
    /// How handling it ended, with the reply.
    pub status: MirroredStatus,
    /// The host's answers (`now`, `random`, tools, sends), in the order the behaviour asked.
    pub answers: Vec<Answer>,
    /// The sends it queued (recipient, message).
    pub sends: Vec<(String, Vec<u8>)>,
    /// The fuel it used (Wasm behaviours).
    pub fuel: Option<u64>,
    /// How long the behaviour took (the handle call alone, not journaling).
    pub took: Duration,
    /// The behaviour that handled it.
    pub behaviour: BehaviourId,
    /// Where its outcome is in the journal (`None` when the agent does not journal): an
    /// observer that missed records reads them back from there.
    pub lsn: Option<arbor_wal::Lsn>,
}

/// An observer's verdict on one input of a verified tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Release production's reply and sends.
    Agree,
    /// Release these instead: how handling ended (the reply) and the sends.
    Replace(MirroredStatus, Vec<(String, Vec<u8>)>),
}

/// The observer's duty for one record of a verified tap: say [`Verdict`]. Dropping it without
/// a verdict agrees (an observer that went away releases what it held).
#[derive(Debug)]
pub struct Verification(oneshot::Sender<Verdict>);

impl Verification {
    /// Gives the verdict.
    pub fn verdict(self, verdict: Verdict) {
        // The agent may have stopped; nothing then waits for the answer.
        let _ = self.0.send(verdict);
    }
}

/// What travels through the queue.
#[derive(Debug)]
struct Item {
    record: Arc<Mirrored>,
    verification: Option<Verification>,
}

/// How an input's handling ended, as a mirror sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirroredStatus {
    /// Applied; the reply (MessagePack).
    Applied(Vec<u8>),
    /// Refused (bad input); the state is unchanged.
    Refused(String),
    /// The behaviour crashed; the agent restarts from its checkpoint and journal.
    Crashed(String),
}

/// The agent's end of a mirror: a bounded queue and a gap counter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MirrorTap {
    queue: mpsc::Sender<Item>,
    gaps: Arc<AtomicU64>,
    verified: bool,
}

/// The observer's end of a mirror.
#[derive(Debug)]
pub struct Mirror {
    queue: mpsc::Receiver<Item>,
    gaps: Arc<AtomicU64>,
}

/// What installing a tap returns: the agent's state just after input `seq`, the point from
/// which every later input is offered to the tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tapped {
    /// The last input in `state`.
    pub seq: u64,
    /// The behaviour's snapshot.
    pub state: Vec<u8>,
    /// The behaviour that wrote it.
    pub behaviour: BehaviourId,
}

impl MirrorTap {
    /// A mirror holding at most `capacity` records (at least 1).
    ///
    /// ```
    /// use arbor_agent::MirrorTap;
    ///
    /// let (tap, mut mirror) = MirrorTap::bounded(1);
    /// assert_eq!(mirror.gaps(), 0);
    /// drop(tap);
    /// assert!(mirror.blocking_recv().is_none()); // every tap gone: the mirror ends
    /// ```
    pub fn bounded(capacity: usize) -> (MirrorTap, Mirror) {
        Self::with(capacity, false)
    }

    /// A verified mirror holding at most `capacity` records: every input's reply and sends wait
    /// for the observer's [`Verdict`], and the agent waits for room rather than drop a record.
    ///
    /// ```
    /// use arbor_agent::MirrorTap;
    ///
    /// let (tap, mirror) = MirrorTap::verified(16);
    /// assert!(tap.is_verified());
    /// # drop(mirror);
    /// ```
    pub fn verified(capacity: usize) -> (MirrorTap, Mirror) {
        Self::with(capacity, true)
    }

    fn with(capacity: usize, verified: bool) -> (MirrorTap, Mirror) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let gaps = Arc::new(AtomicU64::new(0));
        (
            MirrorTap {
                queue,
                gaps: Arc::clone(&gaps),
                verified,
            },
            Mirror { queue: rx, gaps },
        )
    }

    /// Whether the tap holds answers until the observer's verdict.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// Offers a record without waiting; a full queue counts a gap. `false` once the observer
    /// has gone (the tap can be dropped).
    pub(crate) fn offer(&self, record: Mirrored) -> bool {
        let item = Item {
            record: Arc::new(record),
            verification: None,
        };
        match self.queue.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.gaps.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Sends a record of a verified tap, waiting for room; returns what will carry the verdict,
    /// or `None` once the observer has gone.
    pub(crate) async fn send_verified(
        &self,
        record: Mirrored,
    ) -> Option<oneshot::Receiver<Verdict>> {
        let (verdict, receiver) = oneshot::channel();
        let item = Item {
            record: Arc::new(record),
            verification: Some(Verification(verdict)),
        };
        self.queue.send(item).await.ok()?;
        Some(receiver)
    }
}

impl Mirror {
    /// The next record; `None` once the agent dropped the tap (it stopped, crashed, or the tap
    /// was replaced) and the queue is empty.
    pub async fn recv(&mut self) -> Option<Arc<Mirrored>> {
        self.queue.recv().await.map(|item| item.record)
    }

    /// [`recv`](Self::recv) with the record's [`Verification`] (a verified tap's; `None` for a
    /// plain tap's).
    pub async fn recv_verified(&mut self) -> Option<(Arc<Mirrored>, Option<Verification>)> {
        self.queue
            .recv()
            .await
            .map(|item| (item.record, item.verification))
    }

    /// [`recv`](Self::recv) from a thread outside the async runtime.
    pub fn blocking_recv(&mut self) -> Option<Arc<Mirrored>> {
        self.queue.blocking_recv().map(|item| item.record)
    }

    /// The next record if one waits; `Err(true)` if the mirror has ended.
    pub fn try_recv(&mut self) -> Result<Arc<Mirrored>, bool> {
        self.queue
            .try_recv()
            .map(|item| item.record)
            .map_err(|e| match e {
                mpsc::error::TryRecvError::Empty => false,
                mpsc::error::TryRecvError::Disconnected => true,
            })
    }

    /// Records dropped because the queue was full.
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }
}
