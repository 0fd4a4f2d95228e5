//! Answers once durable: deliveries (replies, sends) run once their journal records are
//! durable, in the order they were queued, while the actor goes on with the next inputs (so
//! one group commit covers many inputs). A delivery whose records are already durable, with
//! nothing queued before it, runs at once on the actor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::agent::error::{AgentError, JournalError};
use crate::agent::journal::Ack;
use crate::agent::mirror::Verdict;

/// What to do once the records are durable (or failed to be), with a verified watch's verdict.
pub(super) type Deliver = Box<dyn FnOnce(Result<(), AgentError>, Option<Verdict>) + Send>;

/// A delivery waiting: its journal records, the verdict it waits for (a verified tap's), and
/// what to do then.
type Queued = (Ack, Option<oneshot::Receiver<Verdict>>, Deliver);

pub(super) struct Completer {
    queue: mpsc::UnboundedSender<Queued>,
    queued: Arc<AtomicUsize>,
}

impl Completer {
    pub(super) fn spawn() -> Completer {
        let (queue, mut rx) = mpsc::unbounded_channel::<Queued>();
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&queued);
        // Ends when the actor's state is dropped, after the deliveries already queued.
        tokio::spawn(async move {
            while let Some((ack, verdict, deliver)) = rx.recv().await {
                let durable = ack.wait().await.map_err(AgentError::from);
                // An observer that went away without a verdict agrees.
                let verdict = match verdict {
                    Some(verdict) => verdict.await.ok(),
                    None => None,
                };
                deliver(durable, verdict);
                counter.fetch_sub(1, Ordering::AcqRel);
            }
        });
        Completer { queue, queued }
    }

    pub(super) fn after_durable(
        &self,
        ack: Ack,
        verdict: Option<oneshot::Receiver<Verdict>>,
        deliver: Deliver,
    ) {
        if ack.is_durable() && verdict.is_none() && self.queued.load(Ordering::Acquire) == 0 {
            deliver(Ok(()), None);
            return;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError((_, _, deliver))) =
            self.queue.send((ack, verdict, deliver))
        {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            deliver(Err(JournalError::DeliveryStopped.into()), None);
        }
    }
}
