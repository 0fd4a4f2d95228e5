//! The agent actor: journal before apply, answer after durable, checkpoint, swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arbor_vault::{AgentId, NewCheckpoint};
use arbor_wal::{Appended, Lsn};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::agent_ref::{AfterRestore, Mailbox, RebuildReport, RestoreFrom, StateCheck, SwapReport};
use super::error::AgentError;
use super::host::LiveHost;
use super::host::PendingSend;
use super::journal::Journal;
use super::mirror::{MirrorTap, Mirrored, MirroredStatus, Tapped, Verdict};
use super::system::{AgentSpec, Shared};
use crate::behaviour::Behaviour;
use crate::envelope::{BehaviourId, Entry, Envelope, Kind, Status, check_msgpack};

/// A reply port.
pub(crate) type Reply<T> = RpcReplyPort<Result<T, AgentError>>;

/// What an agent actor receives.
pub(crate) enum AgentMsg {
    /// A call (with a reply port) or a cast.
    Input {
        from: Option<String>,
        kind: Kind,
        payload: Vec<u8>,
        reply: Option<Reply<Vec<u8>>>,
    },
    /// Replace the behaviour with this already-made instance of `id`; with `keep_checkpoint`
    /// the state before the swap is stored as a checkpoint (a promotion's, which a rollback
    /// restores) and the WAL is held from it until [`Journal::unhold`].
    Swap {
        behaviour: Box<dyn Behaviour>,
        id: BehaviourId,
        keep_checkpoint: bool,
        check: Option<StateCheck>,
        reply: Reply<SwapReport>,
    },
    /// Rebuild the state in `behaviour` (a fresh instance of `id`): `from`, then (with
    /// [`AfterRestore::Replay`]) the agent's applied inputs since, replayed; then run it.
    Rebuild {
        behaviour: Box<dyn Behaviour>,
        id: BehaviourId,
        from: RestoreFrom,
        after: AfterRestore,
        reply: Reply<RebuildReport>,
    },
    /// Mirror every later input to `tap` (or stop mirroring) and return the state it starts
    /// from.
    Tap {
        tap: Option<MirrorTap>,
        reply: Reply<Tapped>,
    },
    /// Checkpoint now (asked by the caller, or by the journal because the agent pins the WAL).
    Checkpoint { reply: Option<Reply<Lsn>> },
    /// The policy's time since the first unsaved input may have passed: checkpoint if due.
    CheckpointTimer,
    /// The behaviour's snapshot.
    Snapshot { reply: Reply<Vec<u8>> },
    /// What runs the agent now, and its last input's number.
    Running { reply: Reply<(BehaviourId, u64)> },
    /// Final checkpoint, then stop; `deregister` marks the agent stopped in the registry (it is
    /// not brought back by `recover_all`).
    Stop { deregister: bool, reply: Reply<()> },
}

/// The actor; its state is [`Agent`].
pub(crate) struct AgentActor;

/// How an agent actor starts.
pub(crate) struct Start {
    pub(crate) shared: Arc<Shared>,
    pub(crate) spec: Arc<AgentSpec>,
    pub(crate) behaviour: Box<dyn Behaviour>,
    pub(crate) seq: u64,
    pub(crate) mailbox: Arc<Mailbox>,
}

/// A running agent.
pub(crate) struct Agent {
    shared: Arc<Shared>,
    spec: Arc<AgentSpec>,
    id: AgentId,
    behaviour: Box<dyn Behaviour>,
    behaviour_id: BehaviourId,
    /// The number of the last input journaled.
    seq: u64,
    inputs_since_checkpoint: u64,
    last_checkpoint: Instant,
    /// A [`AgentMsg::CheckpointTimer`] is on its way.
    checkpoint_timer: bool,
    /// This actor, for its own timers.
    myself: ActorRef<AgentMsg>,
    /// The WAL position of the last checkpoint (a checkpoint at the same position adds nothing).
    checkpoint_lsn: Option<Lsn>,
    completer: Completer,
    mailbox: Arc<Mailbox>,
    /// Stopped by an [`AgentMsg::Stop`] (which took the final checkpoint).
    stopped: bool,
    /// Where handled inputs are mirrored, if anywhere.
    mirror: Option<MirrorTap>,
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = Agent;
    type Arguments = Start;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        start: Start,
    ) -> Result<Agent, ActorProcessingErr> {
        let id = AgentId::new(&start.spec.name)?;
        Ok(Agent {
            behaviour_id: start.spec.behaviour.clone(),
            shared: start.shared,
            spec: start.spec,
            id,
            behaviour: start.behaviour,
            seq: start.seq,
            inputs_since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            checkpoint_timer: false,
            myself,
            checkpoint_lsn: None,
            completer: Completer::spawn(),
            mailbox: start.mailbox,
            stopped: false,
            mirror: None,
        })
    }

    /// A stop from outside (a supervisor shutting the agent down): final checkpoint, the agent
    /// stays registered as running. Not called after a crash or a kill, whose state recovery
    /// rebuilds from the journal.
    async fn post_stop(
        &self,
        myself: ActorRef<AgentMsg>,
        agent: &mut Agent,
    ) -> Result<(), ActorProcessingErr> {
        if !agent.stopped {
            if let Err(error) = agent.checkpoint().await {
                tracing::warn!(agent = agent.spec.name, %error, "final checkpoint failed");
            }
            agent.shared.forget(&agent.spec.name, myself.get_id());
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        agent: &mut Agent,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = match message {
            AgentMsg::Input {
                from,
                kind,
                payload,
                reply,
            } => {
                agent.mailbox.taken();
                agent.input(from, kind, payload, reply).await
            }
            AgentMsg::Swap {
                behaviour,
                id,
                keep_checkpoint,
                check,
                reply,
            } => agent.swap(behaviour, id, keep_checkpoint, check, reply),
            AgentMsg::Rebuild {
                behaviour,
                id,
                from,
                after,
                reply,
            } => {
                let result = agent.rebuild(behaviour, id, from, after).await;
                let crash = crash_of(&result);
                send(reply, result);
                crash
            }
            AgentMsg::Tap { tap, reply } => {
                let result = agent
                    .behaviour
                    .snapshot()
                    .map_err(|e| agent.crashed_outside_input("snapshot for a mirror", e))
                    .map(|state| Tapped {
                        seq: agent.seq,
                        state,
                        behaviour: agent.behaviour_id.clone(),
                    });
                if result.is_ok() {
                    agent.mirror = tap;
                }
                let crash = crash_of(&result);
                send(reply, result);
                crash
            }
            AgentMsg::Checkpoint { reply } => {
                let result = agent.checkpoint().await;
                let crash = crash_of(&result);
                match reply {
                    Some(reply) => send(reply, result),
                    None => {
                        if let Err(error) = result {
                            tracing::warn!(agent = agent.spec.name, %error, "checkpoint failed");
                        }
                    }
                }
                crash
            }
            AgentMsg::Running { reply } => {
                send(reply, Ok((agent.behaviour_id.clone(), agent.seq)));
                Ok(())
            }
            AgentMsg::CheckpointTimer => {
                agent.checkpoint_timer = false;
                if agent.inputs_since_checkpoint > 0 {
                    agent.checkpoint_if_due().await
                } else {
                    Ok(())
                }
            }
            AgentMsg::Snapshot { reply } => {
                let result = agent
                    .behaviour
                    .snapshot()
                    .map_err(|e| agent.crashed_outside_input("snapshot", e));
                let crash = crash_of(&result);
                send(reply, result);
                crash
            }
            AgentMsg::Stop { deregister, reply } => {
                let result = agent.stop(deregister).await;
                agent.stopped = true;
                agent.shared.forget(&agent.spec.name, myself.get_id());
                send(reply, result);
                myself.stop(None);
                return Ok(());
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(crash) => {
                tracing::warn!(agent = agent.spec.name, error = %crash, "agent crashed");
                agent.shared.forget(&agent.spec.name, myself.get_id());
                Err(Box::new(crash))
            }
        }
    }
}

/// The crash in a result, if it is one (the agent must stop).
fn crash_of<T>(result: &Result<T, AgentError>) -> Result<(), AgentError> {
    match result {
        Err(error @ AgentError::Crashed { .. }) => Err(error.clone()),
        _ => Ok(()),
    }
}

fn send<T>(reply: Reply<T>, value: Result<T, AgentError>) {
    // The caller may have given up (timeout); nothing to do then.
    let _ = reply.send(value);
}

/// The borrowed form of [`Entry::Input`]: encodes identically without moving the envelope.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum InputRef<'a> {
    Input(&'a Envelope),
}

impl Agent {
    async fn input(
        &mut self,
        from: Option<String>,
        kind: Kind,
        payload: Vec<u8>,
        reply: Option<Reply<Vec<u8>>>,
    ) -> Result<(), AgentError> {
        let name = &self.spec.name;
        let refuse = |reply: Option<Reply<Vec<u8>>>, error: AgentError| {
            match reply {
                Some(reply) => send(reply, Err(error)),
                None => tracing::warn!(agent = name, %error, "cast refused"),
            }
            Ok(())
        };
        let max = self.spec.limits.max_message_bytes;
        if payload.len() > max {
            let error = AgentError::TooLarge {
                agent: name.clone(),
                len: payload.len(),
                max,
            };
            return refuse(reply, error);
        }
        if let Err(reason) = check_msgpack(&payload) {
            let error = AgentError::Malformed {
                agent: name.clone(),
                reason,
            };
            return refuse(reply, error);
        }
        let envelope = Envelope {
            to: name.clone(),
            from,
            seq: self.seq + 1,
            kind,
            payload,
        };
        let journal = self.shared.journal.as_ref();
        if let Some(journal) = journal {
            let record = rmp_serde::to_vec_named(&InputRef::Input(&envelope))
                .map_err(|e| AgentError::Journal(e.to_string()));
            if let Err(error) = record.and_then(|record| append(journal, &record)) {
                return refuse(reply, error);
            }
        }
        self.seq = envelope.seq;

        let mut host = LiveHost::new(name, envelope.seq, &self.spec.capabilities, &self.shared);
        let started = Instant::now();
        // A native behaviour that panics is a crashed behaviour, not a crashed host.
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.behaviour.handle(&envelope.payload, &mut host)
        }));
        let result = handled.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(crate::BehaviourError::Trap(format!("panicked: {what}")))
        });
        let took = started.elapsed();
        record_handled(name, &result, took);
        let (answers, sends) = (host.answers, host.sends);
        let status = match &result {
            Ok(_) => Status::Applied,
            Err(error) if error.is_crash() => Status::Crashed(error.to_string()),
            Err(error) => Status::Refused(error.to_string()),
        };
        // The mirror's copy is taken now (the answers go into the outcome record) and offered
        // once the outcome is journaled, with the status production ends up with.
        let mirrored = self.mirror.as_ref().map(|_| {
            let sends: Vec<(String, Vec<u8>)> = sends
                .iter()
                .map(|s| (s.to.clone(), s.payload.clone()))
                .collect();
            let cost = self.behaviour.last_cost().fuel;
            (answers.clone(), sends, cost, envelope.from.clone())
        });
        let appended = match journal {
            None => Ok(None),
            Some(journal) => {
                let outcome = Entry::Outcome {
                    agent: name.clone(),
                    seq: envelope.seq,
                    status,
                    answers,
                };
                append(journal, &outcome.encode()).map(Some)
            }
        };
        let from = envelope.from.unwrap_or_else(|| "host".into());
        let (appended, result) = match appended {
            Ok(appended) => (appended, result),
            // The state now holds an input the journal cannot record: the instance must go, and
            // recovery (which skips inputs without an outcome) rebuilds the journaled state.
            Err(error) if result.is_ok() => (
                None,
                Err(crate::BehaviourError::Contract(format!(
                    "the outcome could not be journaled: {error}"
                ))),
            ),
            Err(error) => {
                if let Some(reply) = reply {
                    send(reply, Err(error));
                }
                return match result {
                    Err(e) if e.is_crash() => Err(self.crash(envelope.seq, from, e)),
                    _ => Ok(()),
                };
            }
        };
        let mut verdict = None;
        if let (Some(tap), Some((answers, sends, fuel, sender))) = (self.mirror.clone(), mirrored) {
            let record = Mirrored {
                seq: envelope.seq,
                kind: envelope.kind,
                from: sender,
                payload: envelope.payload.clone(),
                status: match &result {
                    Ok(reply) => MirroredStatus::Applied(reply.clone()),
                    Err(error) if error.is_crash() => MirroredStatus::Crashed(error.to_string()),
                    Err(error) => MirroredStatus::Refused(error.to_string()),
                },
                answers,
                sends,
                fuel,
                took,
                behaviour: self.behaviour_id.clone(),
                lsn: appended.as_ref().map(Appended::lsn),
            };
            let open = if tap.is_verified() {
                verdict = tap.send_verified(record).await;
                verdict.is_some()
            } else {
                tap.offer(record)
            };
            if !open {
                self.mirror = None;
            }
        }
        self.inputs_since_checkpoint += 1;
        // The first input since the last checkpoint: the journal learns its age (a gauge) and
        // a timer makes sure it is checkpointed within the policy's time even if no other
        // input comes.
        if self.inputs_since_checkpoint == 1
            && let Some(journal) = &self.shared.journal
        {
            journal.unsaved(name);
            arm_checkpoint_timer(
                &mut self.checkpoint_timer,
                &self.myself,
                journal.policy.every,
            );
        }
        let seq = envelope.seq;
        let (answer, crash) = match result {
            Ok(bytes) => (Ok(bytes), None),
            Err(error) if !error.is_crash() => {
                let refused = AgentError::Refused {
                    agent: name.clone(),
                    seq,
                    reason: error.to_string(),
                };
                (Err(refused), None)
            }
            Err(error) => {
                let crash = self.crash(seq, from, error);
                (Err(crash.clone()), Some(crash))
            }
        };
        let shared = Arc::clone(&self.shared);
        let agent = name.clone();
        self.completer.after_durable(
            appended,
            verdict,
            Box::new(move |durable, verdict| {
                // A verified watch's observer may replace what production answered.
                let (answer, sends) = match verdict {
                    Some(Verdict::Replace(status, replaced)) => {
                        let sends = replaced
                            .into_iter()
                            .map(|(to, payload)| PendingSend { to, payload })
                            .collect();
                        (answer_of(&agent, seq, status), sends)
                    }
                    _ => (answer, sends),
                };
                if durable.is_ok() {
                    shared.deliver(&agent, sends);
                }
                if let Some(reply) = reply {
                    send(reply, durable.and(answer));
                }
            }),
        );
        match crash {
            Some(crash) => Err(crash),
            None => self.checkpoint_if_due().await,
        }
    }

    fn crash(&self, seq: u64, from: String, reason: crate::BehaviourError) -> AgentError {
        AgentError::Crashed {
            agent: self.spec.name.clone(),
            seq,
            from,
            reason,
        }
    }

    /// A crash outside an input (snapshot, checkpoint, swap): named after the last input.
    fn crashed_outside_input(&self, during: &str, reason: crate::BehaviourError) -> AgentError {
        if reason.is_crash() {
            self.crash(self.seq, format!("({during})"), reason)
        } else {
            AgentError::Recovery {
                agent: self.spec.name.clone(),
                reason: format!("{during}: {reason}"),
            }
        }
    }

    async fn checkpoint_if_due(&mut self) -> Result<(), AgentError> {
        let Some(journal) = &self.shared.journal else {
            return Ok(());
        };
        if self.inputs_since_checkpoint < journal.policy.every_records
            && self.last_checkpoint.elapsed() < journal.policy.every
        {
            if self.inputs_since_checkpoint > 0 {
                let left = journal
                    .policy
                    .every
                    .saturating_sub(self.last_checkpoint.elapsed());
                arm_checkpoint_timer(&mut self.checkpoint_timer, &self.myself, left);
            }
            return Ok(());
        }
        let result = self.checkpoint().await;
        crash_of(&result)?;
        if let Err(error) = result {
            tracing::warn!(agent = self.spec.name, %error, "checkpoint failed");
        }
        Ok(())
    }

    /// Snapshots the behaviour into the vault at the WAL's current end (nothing of this agent
    /// comes after it: the actor is here), once the WAL is durable up to there; then releases
    /// what the journal's pins allow and asks pinning agents to checkpoint.
    async fn checkpoint(&mut self) -> Result<Lsn, AgentError> {
        let Some(journal) = &self.shared.journal else {
            return Ok(0);
        };
        let lsn = journal.wal.last_lsn();
        if self.checkpoint_lsn == Some(lsn) {
            journal.checkpoint_unchanged(&self.spec.name);
            return Ok(lsn);
        }
        let state = self
            .behaviour
            .snapshot()
            .map_err(|e| self.crashed_outside_input("snapshot", e))?;
        store_checkpoint(journal, &self.id, &self.behaviour_id, self.seq, &state, lsn).await?;
        // A held checkpoint (a promotion's, until its watch ends) must outlive the count, and
        // so must the one the agent's kept history starts from.
        if !journal.is_held(&self.spec.name) {
            let vault_error = |e: arbor_vault::Error| AgentError::Vault(e.to_string());
            let metas = journal
                .vault
                .list_checkpoints(&self.id)
                .map_err(vault_error)?;
            let history = journal.history_from(&metas, self.seq);
            journal
                .vault
                .retain_keeping(&self.id, journal.policy.keep.max(2), history)
                .map_err(vault_error)?;
            journal.keep_history_from(&self.spec.name, history);
        }
        self.checkpoint_lsn = Some(lsn);
        self.inputs_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        for pinning in journal.release()? {
            if let Some(agent) = self.shared.lookup(&pinning) {
                agent.send(AgentMsg::Checkpoint { reply: None });
            }
        }
        Ok(lsn)
    }

    fn swap(
        &mut self,
        mut next: Box<dyn Behaviour>,
        id: BehaviourId,
        keep_checkpoint: bool,
        check: Option<StateCheck>,
        reply: Reply<SwapReport>,
    ) -> Result<(), AgentError> {
        let paused = Instant::now();
        let refused = |reason: String| AgentError::SwapRefused {
            agent: self.spec.name.clone(),
            reason,
        };
        let state = match self.behaviour.snapshot() {
            Ok(state) => state,
            Err(error) => {
                let crash = self.crashed_outside_input("snapshot for swap", error);
                send(reply, Err(crash.clone()));
                return crash_of::<()>(&Err(crash));
            }
        };
        if let Err(error) = next.restore(&state) {
            send(
                reply,
                Err(refused(format!("{id} refused the state: {error}"))),
            );
            return Ok(());
        }
        if let Some(check) = check {
            let checked = next
                .snapshot()
                .map_err(|e| format!("{id} cannot snapshot the migrated state: {e}"))
                .and_then(|migrated| check(&state, &migrated));
            if let Err(reason) = checked {
                send(reply, Err(refused(reason)));
                return Ok(());
            }
        }
        // Everything of this agent before the swap record; the promotion checkpoint claims it.
        let before_swap = self.shared.journal.as_ref().map(|j| j.wal.last_lsn());
        let appended = match &self.shared.journal {
            None => None,
            Some(journal) => {
                let entry = Entry::Swap {
                    agent: self.spec.name.clone(),
                    seq: self.seq,
                    behaviour: id.clone(),
                };
                match append(journal, &entry.encode()) {
                    Ok(appended) => Some(appended),
                    Err(error) => {
                        send(reply, Err(refused(error.to_string())));
                        return Ok(());
                    }
                }
            }
        };
        let from = std::mem::replace(&mut self.behaviour_id, id.clone());
        self.behaviour = next;
        let pause = paused.elapsed();
        if let Some(journal) = &self.shared.journal {
            let mut spec = (*self.spec).clone();
            spec.behaviour = id.clone();
            let record = spec.record(self.id.clone(), arbor_vault::AgentState::Running);
            if let Err(error) = journal.vault.put_agent(&record) {
                tracing::warn!(agent = self.spec.name, %error, "registry not updated after swap");
            }
        }
        let mut report = SwapReport {
            pause,
            from: from.clone(),
            to: id,
            state_bytes: state.len(),
            seq: self.seq,
            checkpoint_lsn: None,
        };
        let keep = match before_swap {
            Some(lsn) if keep_checkpoint => Some(lsn),
            _ => None,
        };
        let Some(lsn) = keep else {
            self.completer.after_durable(
                appended,
                None,
                Box::new(move |durable, _| send(reply, durable.map(|()| report))),
            );
            return Ok(());
        };
        // Held now, before any later checkpoint of this agent can release the log past it.
        if let Some(journal) = &self.shared.journal {
            journal.hold(&self.spec.name, lsn);
        }
        // The old state goes to the vault off the actor, once the swap record is durable: the
        // agent is already running the new behaviour.
        let shared = Arc::clone(&self.shared);
        let agent = self.id.clone();
        let seq = self.seq;
        self.completer.after_durable(
            appended,
            None,
            Box::new(move |durable, _| {
                if let Err(error) = durable {
                    if let Some(journal) = &shared.journal {
                        journal.unhold(agent.as_str());
                    }
                    send(reply, Err(error));
                    return;
                }
                tokio::spawn(async move {
                    let Some(journal) = &shared.journal else {
                        return;
                    };
                    match store_checkpoint(journal, &agent, &from, seq, &state, lsn).await {
                        Ok(lsn) => report.checkpoint_lsn = Some(lsn),
                        Err(error) => {
                            journal.unhold(agent.as_str());
                            tracing::warn!(agent = agent.as_str(), %error, "promotion checkpoint failed");
                        }
                    }
                    send(reply, Ok(report));
                });
            }),
        );
        Ok(())
    }

    /// Rebuilds the agent's state in `previous` from `from` and (per `after`) the agent's
    /// applied inputs after it, stores the rebuilt state as a checkpoint at the WAL's
    /// end, journals [`Entry::Rebase`] and runs `previous` from then on. Inputs wait in the
    /// mailbox meanwhile. Until the checkpoint is stored nothing has changed: a failure leaves
    /// the agent as it was.
    async fn rebuild(
        &mut self,
        mut previous: Box<dyn Behaviour>,
        id: BehaviourId,
        from: RestoreFrom,
        after: AfterRestore,
    ) -> Result<RebuildReport, AgentError> {
        let started = Instant::now();
        let shared = Arc::clone(&self.shared);
        let refused = |reason: String| AgentError::SwapRefused {
            agent: self.spec.name.clone(),
            reason,
        };
        let Some(journal) = &shared.journal else {
            return Err(refused("a rebuild needs a journal".into()));
        };
        let replayed =
            super::recovery::rebuild(journal, &self.id, &from, after, &id, previous.as_mut())
                .map_err(refused)?;
        let state = previous
            .snapshot()
            .map_err(|e| refused(format!("{id} cannot snapshot the rebuilt state: {e}")))?;
        // Once the checkpoint is on disk the rollback has happened (recovery starts from it):
        // a failure after that must not leave this instance running, so the agent crashes and
        // its supervisor recovers it from the journal.
        let lsn = match super::recovery::commit_rebase(journal, &self.id, &id, self.seq, &state)
            .await
        {
            Ok(lsn) => lsn,
            Err(super::recovery::RebaseFailed::Checkpoint(error)) => return Err(error),
            Err(super::recovery::RebaseFailed::Afterwards(what, error)) => {
                return Err(AgentError::Crashed {
                    agent: self.spec.name.clone(),
                    seq: self.seq,
                    from: "(rollback)".into(),
                    reason: crate::BehaviourError::Contract(format!("rollback {what}: {error}")),
                });
            }
        };
        let from = std::mem::replace(&mut self.behaviour_id, id.clone());
        self.behaviour = previous;
        self.checkpoint_lsn = Some(lsn);
        self.inputs_since_checkpoint = 0;
        journal.unhold(&self.spec.name);
        let mut spec = (*self.spec).clone();
        spec.behaviour = id.clone();
        let record = spec.record(self.id.clone(), arbor_vault::AgentState::Running);
        // The journal already says what runs; a stale registry is corrected at recovery.
        if let Err(error) = journal
            .vault
            .put_agent(&record)
            .and_then(|()| journal.vault.sync())
        {
            tracing::warn!(agent = self.spec.name, %error, "registry not updated after rollback");
        }
        Ok(RebuildReport {
            pause: started.elapsed(),
            from,
            to: id,
            replayed,
            checkpoint_lsn: lsn,
            seq: self.seq,
        })
    }

    async fn stop(&mut self, deregister: bool) -> Result<(), AgentError> {
        let shared = Arc::clone(&self.shared);
        let Some(journal) = &shared.journal else {
            return Ok(());
        };
        self.checkpoint().await?;
        if deregister {
            let mut record = journal
                .vault
                .agent(&self.id)
                .map_err(|e| AgentError::Vault(e.to_string()))?
                .ok_or_else(|| AgentError::UnknownAgent(self.spec.name.clone()))?;
            record.state = arbor_vault::AgentState::Stopped;
            journal
                .vault
                .put_agent(&record)
                .map_err(|e| AgentError::Vault(e.to_string()))?;
            journal
                .vault
                .sync()
                .map_err(|e| AgentError::Vault(e.to_string()))?;
            // Everything of this agent is in its final checkpoint.
            journal.unpin(&self.spec.name);
        }
        Ok(())
    }
}

/// Sends the agent a [`AgentMsg::CheckpointTimer`] after `after`, unless one is on its way.
fn arm_checkpoint_timer(armed: &mut bool, myself: &ActorRef<AgentMsg>, after: Duration) {
    if !*armed {
        *armed = true;
        // If the actor is gone by then, the message has nowhere to go, which is fine.
        drop(myself.send_after(after, || AgentMsg::CheckpointTimer));
    }
}

/// The metrics of one handled input (see `arbor-metrics`).
fn record_handled(
    agent: &str,
    result: &Result<Vec<u8>, crate::BehaviourError>,
    took: std::time::Duration,
) {
    let outcome = match result {
        Ok(_) => "applied",
        Err(error) if error.is_crash() => "crashed",
        Err(_) => "refused",
    };
    if arbor_metrics::agent_labels() {
        let agent = agent.to_string();
        metrics::counter!(arbor_metrics::MESSAGES_IN, "outcome" => outcome, "agent" => agent.clone())
            .increment(1);
        metrics::histogram!(arbor_metrics::HANDLE_SECONDS, "agent" => agent).record(took);
    } else {
        metrics::counter!(arbor_metrics::MESSAGES_IN, "outcome" => outcome).increment(1);
        metrics::histogram!(arbor_metrics::HANDLE_SECONDS).record(took);
    }
    if outcome == "crashed" {
        metrics::counter!(arbor_metrics::TRAPS).increment(1);
    }
}

fn append(journal: &Journal, record: &[u8]) -> Result<Appended, AgentError> {
    journal
        .wal
        .append(record)
        .map_err(|e| AgentError::Journal(e.to_string()))
}

/// Stores `state` as `agent`'s checkpoint at `lsn` (at or before the WAL's end, after every
/// record of the agent the state holds), after making the WAL durable up to there (a checkpoint must never claim records a crash could still lose: their LSNs would
/// be reused, and replay would skip the new records).
pub(crate) async fn store_checkpoint(
    journal: &Journal,
    agent: &AgentId,
    behaviour: &BehaviourId,
    seq: u64,
    state: &[u8],
    lsn: Lsn,
) -> Result<Lsn, AgentError> {
    let started = Instant::now();
    journal
        .wal
        .sync_async()
        .await
        .map_err(|e| AgentError::Journal(e.to_string()))?;
    journal
        .vault
        .put_checkpoint(&NewCheckpoint {
            agent,
            lsn,
            seq,
            module: behaviour.checkpoint_hash(),
            abi_version: 1,
            state_schema: 0,
            state,
        })
        .map_err(|e| AgentError::Vault(e.to_string()))?;
    journal.checkpointed(agent.as_str(), lsn);
    metrics::counter!(arbor_metrics::CHECKPOINTS).increment(1);
    metrics::histogram!(arbor_metrics::CHECKPOINT_BYTES).record(state.len() as f64);
    metrics::histogram!(arbor_metrics::CHECKPOINT_SECONDS).record(started.elapsed());
    Ok(lsn)
}

type Deliver = Box<dyn FnOnce(Result<(), AgentError>, Option<Verdict>) + Send>;

/// How an observer's replacement reads to the caller.
fn answer_of(agent: &str, seq: u64, status: MirroredStatus) -> Result<Vec<u8>, AgentError> {
    let refused = |reason: String| AgentError::Refused {
        agent: agent.to_string(),
        seq,
        reason,
    };
    match status {
        MirroredStatus::Applied(reply) => Ok(reply),
        MirroredStatus::Refused(reason) => Err(refused(reason)),
        MirroredStatus::Crashed(reason) => Err(refused(format!(
            "the verified watch's reference module crashed on it: {reason}"
        ))),
    }
}

/// Runs deliveries (replies, sends) once their journal records are durable, in the order they
/// were queued, while the actor goes on with the next inputs. A delivery whose record is
/// already durable, with nothing queued before it, runs at once on the actor.
/// A delivery waiting: its journal records, the verdict it waits for (a verified tap's), and
/// what to do then.
type Queued = (
    Option<Appended>,
    Option<oneshot::Receiver<Verdict>>,
    Deliver,
);

struct Completer {
    queue: mpsc::UnboundedSender<Queued>,
    queued: Arc<AtomicUsize>,
}

impl Completer {
    fn spawn() -> Completer {
        let (queue, mut rx) = mpsc::unbounded_channel::<Queued>();
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&queued);
        // Ends when the actor's state is dropped, after the deliveries already queued.
        tokio::spawn(async move {
            while let Some((appended, verdict, deliver)) = rx.recv().await {
                let durable = match &appended {
                    Some(appended) => appended
                        .wait()
                        .await
                        .map_err(|e| AgentError::Journal(e.to_string())),
                    None => Ok(()),
                };
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

    fn after_durable(
        &self,
        appended: Option<Appended>,
        verdict: Option<oneshot::Receiver<Verdict>>,
        deliver: Deliver,
    ) {
        let durable = appended.as_ref().is_none_or(Appended::is_durable);
        if durable && verdict.is_none() && self.queued.load(Ordering::Acquire) == 0 {
            deliver(Ok(()), None);
            return;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError((_, _, deliver))) =
            self.queue.send((appended, verdict, deliver))
        {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            deliver(
                Err(AgentError::Journal("the delivery task stopped".into())),
                None,
            );
        }
    }
}
