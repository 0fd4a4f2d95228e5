//! [`AgentRef`]: how the host talks to a running agent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arbor_wal::Lsn;
use ractor::ActorRef;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::AgentError;
use super::mirror::{MirrorTap, Tapped};
use super::msg::{
    AfterRestore, AgentMsg, RebuildReport, Reply, RestoreFrom, StateCheck, SwapReport,
};
use super::spec::AgentSpec;
use crate::behaviour::Behaviour;
use crate::envelope::{BehaviourId, Kind};

/// A handle on a running agent; cheap to clone. Calls are answered once the input's journal
/// records are durable under the system's WAL policy.
#[derive(Clone)]
pub struct AgentRef {
    actor: ActorRef<AgentMsg>,
    spec: Arc<AgentSpec>,
    mailbox: Arc<Mailbox>,
}

/// The bound on an agent's queued inputs (ractor mailboxes are unbounded): senders count an
/// input in, the actor counts it out when it takes it.
#[derive(Debug)]
pub(crate) struct Mailbox {
    queued: AtomicUsize,
    capacity: usize,
}

impl Mailbox {
    pub(crate) fn new(capacity: usize) -> Mailbox {
        Mailbox {
            queued: AtomicUsize::new(0),
            capacity,
        }
    }

    /// The actor took an input.
    pub(crate) fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// How many inputs wait.
    pub(crate) fn len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl AgentRef {
    pub(crate) fn new(
        actor: ActorRef<AgentMsg>,
        spec: Arc<AgentSpec>,
        mailbox: Arc<Mailbox>,
    ) -> AgentRef {
        AgentRef {
            actor,
            spec,
            mailbox,
        }
    }

    /// How many inputs wait in the agent's mailbox.
    pub fn queued(&self) -> usize {
        self.mailbox.len()
    }

    /// The actor's cell (for monitoring or linking).
    pub fn cell(&self) -> ractor::ActorCell {
        self.actor.get_cell()
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The spec the agent was started with (its behaviour may have been swapped since).
    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    pub(crate) fn actor_id(&self) -> ractor::ActorId {
        self.actor.get_id()
    }

    /// Whether the actor is still running.
    pub fn is_running(&self) -> bool {
        matches!(
            self.actor.get_status(),
            ractor::ActorStatus::Running
                | ractor::ActorStatus::Starting
                | ractor::ActorStatus::Upgrading
        )
    }

    /// Whether the actor is gone for good (stopped, crashed or killed); one still stopping has
    /// not exited.
    pub(crate) fn has_exited(&self) -> bool {
        self.actor.get_status() == ractor::ActorStatus::Stopped
    }

    /// Sends `payload` (MessagePack) and waits for the reply.
    pub async fn call(&self, payload: Vec<u8>) -> Result<Vec<u8>, AgentError> {
        self.call_inner(payload, None).await
    }

    /// [`call`](Self::call), giving up after `timeout` (the input may still be handled).
    pub async fn call_timeout(
        &self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, AgentError> {
        self.call_inner(payload, Some(timeout)).await
    }

    /// Serialises `message` (MessagePack, named fields), calls, and deserialises the reply.
    pub async fn call_msg<M, R>(&self, message: &M) -> Result<R, AgentError>
    where
        M: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let payload = rmp_serde::to_vec_named(message).map_err(|e| AgentError::Encode {
            agent: self.name().into(),
            source: Arc::new(e),
        })?;
        let reply = self.call(payload).await?;
        crate::envelope::decode_untrusted(&reply).map_err(|e| AgentError::Decode {
            agent: self.name().into(),
            source: Arc::new(e),
        })
    }

    /// Sends `payload` without waiting. It is journaled and handled like a call; a refusal or
    /// crash is logged (and a crash stops the agent). An error here means the agent is gone.
    pub fn cast(&self, payload: Vec<u8>) -> Result<(), AgentError> {
        self.send_input(AgentMsg::Input {
            from: None,
            kind: Kind::Cast,
            payload,
            reply: None,
        })
    }

    /// [`cast`](Self::cast) as a send from the agent `from` (which the receiver sees as its
    /// input's sender): for sends that crossed from another node.
    pub fn cast_from(&self, from: &str, payload: Vec<u8>) -> Result<(), AgentError> {
        self.send_input(AgentMsg::Input {
            from: Some(from.to_string()),
            kind: Kind::Cast,
            payload,
            reply: None,
        })
    }

    /// Queues an input unless the mailbox is full or the agent is gone.
    pub(crate) fn send_input(&self, input: AgentMsg) -> Result<(), AgentError> {
        let mailbox = &self.mailbox;
        if mailbox.queued.fetch_add(1, Ordering::AcqRel) >= mailbox.capacity {
            mailbox.taken();
            metrics::counter!(arbor_metrics::MAILBOX_FULL).increment(1);
            return Err(AgentError::MailboxFull {
                agent: self.name().into(),
                capacity: mailbox.capacity,
            });
        }
        if self.send(input) {
            Ok(())
        } else {
            mailbox.taken();
            Err(AgentError::Stopped(self.name().into()))
        }
    }

    /// Checkpoints now; returns the WAL position the checkpoint covers.
    pub async fn checkpoint(&self) -> Result<Lsn, AgentError> {
        self.ask(|reply| AgentMsg::Checkpoint { reply: Some(reply) })
            .await
    }

    /// What runs the agent now (its spec names what it started with; swaps, promotions and
    /// rollbacks change it) and the number of its last input.
    pub async fn running(&self) -> Result<(BehaviourId, u64), AgentError> {
        self.ask(|reply| AgentMsg::Running { reply }).await
    }

    /// The behaviour's current state, as its snapshot bytes.
    pub async fn snapshot(&self) -> Result<Vec<u8>, AgentError> {
        self.ask(|reply| AgentMsg::Snapshot { reply }).await
    }

    /// Stops the agent after a final checkpoint and marks it stopped in the registry, so
    /// [`AgentSystem::recover_all`](super::AgentSystem::recover_all) leaves it alone.
    pub async fn stop(&self) -> Result<(), AgentError> {
        self.shut_down(true).await
    }

    pub(crate) async fn shut_down(&self, deregister: bool) -> Result<(), AgentError> {
        let result = self.ask(|reply| AgentMsg::Stop { deregister, reply }).await;
        // Wait for the actor to be gone, so its name is free when this returns.
        self.actor.wait(Some(Duration::from_secs(10))).await.ok();
        result
    }

    /// Waits until the actor has stopped (it crashed or was stopped).
    pub async fn wait_stopped(&self, timeout: Duration) -> bool {
        self.actor.wait(Some(timeout)).await.is_ok()
    }

    pub(crate) fn kill(&self) {
        self.actor.kill();
    }

    pub(crate) async fn swap(
        &self,
        behaviour: Box<dyn Behaviour>,
        id: BehaviourId,
        keep_checkpoint: bool,
        check: Option<StateCheck>,
    ) -> Result<SwapReport, AgentError> {
        self.ask(|reply| AgentMsg::Swap {
            behaviour,
            id,
            keep_checkpoint,
            check,
            reply,
        })
        .await
    }

    pub(crate) async fn rebuild(
        &self,
        behaviour: Box<dyn Behaviour>,
        id: BehaviourId,
        from: RestoreFrom,
        after: AfterRestore,
    ) -> Result<RebuildReport, AgentError> {
        self.ask(|reply| AgentMsg::Rebuild {
            behaviour,
            id,
            from,
            after,
            reply,
        })
        .await
    }

    /// Mirrors every input the agent handles from now on to `tap` (replacing any tap; `None`
    /// stops mirroring) and returns the state the mirror starts from: the agent's snapshot
    /// after its last input, taken in the same mailbox turn, so no input falls between.
    pub async fn tap(&self, tap: Option<MirrorTap>) -> Result<Tapped, AgentError> {
        self.ask(|reply| AgentMsg::Tap { tap, reply }).await
    }

    /// Sends a message to the actor; `false` if it is gone.
    pub(crate) fn send(&self, message: AgentMsg) -> bool {
        self.actor.send_message(message).is_ok()
    }

    async fn call_inner(
        &self,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, AgentError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.send_input(AgentMsg::Input {
            from: None,
            kind: Kind::Call,
            payload,
            reply: Some(tx.into()),
        })?;
        let answer = match timeout {
            None => rx.await,
            Some(timeout) => {
                tokio::time::timeout(timeout, rx)
                    .await
                    .map_err(|_| AgentError::Timeout {
                        agent: self.name().into(),
                        timeout,
                    })?
            }
        };
        answer.map_err(|_| AgentError::Stopped(self.name().into()))?
    }

    async fn ask<T: Send + 'static>(
        &self,
        message: impl FnOnce(Reply<T>) -> AgentMsg,
    ) -> Result<T, AgentError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        if !self.send(message(tx.into())) {
            return Err(AgentError::Stopped(self.name().into()));
        }
        rx.await
            .map_err(|_| AgentError::Stopped(self.name().into()))?
    }
}

impl std::fmt::Debug for AgentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRef")
            .field("name", &self.spec.name)
            .field("actor", &self.actor.get_id())
            .finish()
    }
}
