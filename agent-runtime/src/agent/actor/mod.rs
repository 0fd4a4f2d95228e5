//! The agent actor: the ractor actor that owns one behaviour, its live host and its place in
//! the journal. This file holds its state and dispatches messages; what it does with them is in
//! [`input`] (handle, journal, answer), [`swap`] (swaps, rollbacks, restores),
//! [`checkpoint`] (checkpoints, timers, stopping) and [`completer`] (answers once durable).

mod checkpoint;
mod completer;
mod input;
mod swap;

use std::sync::Arc;
use std::time::Instant;

use arbor_vault::AgentId;
use arbor_wal::Lsn;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use self::completer::Completer;
use super::agent_ref::Mailbox;
use super::context::Context;
use super::error::{AgentError, RecoveryError};
use super::mirror::{MirrorTap, Tapped};
use super::msg::{AgentMsg, send};
use super::spec::AgentSpec;
use crate::behaviour::{Behaviour, BehaviourError};
use crate::envelope::BehaviourId;
use crate::host::{Host, LiveHost};

pub(crate) use checkpoint::store_first_checkpoint;

/// The actor; its state is [`Agent`].
pub(crate) struct AgentActor;

/// How an agent actor starts.
pub(crate) struct Start {
    pub(crate) context: Arc<Context>,
    pub(crate) spec: Arc<AgentSpec>,
    pub(crate) id: AgentId,
    pub(crate) behaviour: Box<dyn Behaviour>,
    pub(crate) seq: u64,
    pub(crate) mailbox: Arc<Mailbox>,
}

/// A running agent. Only its actor touches it.
pub(crate) struct Agent {
    context: Arc<Context>,
    spec: Arc<AgentSpec>,
    id: AgentId,
    behaviour: Box<dyn Behaviour>,
    behaviour_id: BehaviourId,
    /// The live host every input is handled with (reused: it only records).
    host: Host,
    /// The number of the last input journaled.
    seq: u64,
    inputs_since_checkpoint: u64,
    last_checkpoint: Instant,
    /// A [`AgentMsg::CheckpointTimer`] is on its way.
    checkpoint_timer: bool,
    /// This actor, for its own timers.
    myself: ActorRef<AgentMsg>,
    /// The journal position of the last checkpoint (one at the same position adds nothing).
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
        let host = Host::live(LiveHost::new(
            Arc::from(start.spec.name.as_str()),
            Arc::new(start.spec.capabilities.clone()),
            Arc::clone(&start.context) as Arc<dyn crate::host::World>,
        ));
        Ok(Agent {
            behaviour_id: start.spec.behaviour.clone(),
            context: start.context,
            spec: start.spec,
            id: start.id,
            behaviour: start.behaviour,
            host,
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
            agent
                .context
                .directory
                .forget(&agent.spec.name, myself.get_id());
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
                answer(reply, result)
            }
            AgentMsg::Tap { tap, reply } => {
                let result = agent.snapshot("snapshot for a mirror").map(|state| Tapped {
                    seq: agent.seq,
                    state,
                    behaviour: agent.behaviour_id.clone(),
                });
                if result.is_ok() {
                    agent.mirror = tap;
                }
                answer(reply, result)
            }
            AgentMsg::Checkpoint { reply } => {
                let result = agent.checkpoint().await;
                match reply {
                    Some(reply) => answer(reply, result),
                    None => match result {
                        Err(error @ AgentError::Crashed { .. }) => Err(error),
                        Err(error) => {
                            tracing::warn!(agent = agent.spec.name, %error, "checkpoint failed");
                            Ok(())
                        }
                        Ok(_) => Ok(()),
                    },
                }
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
                let result = agent.snapshot("snapshot");
                answer(reply, result)
            }
            AgentMsg::Stop { deregister, reply } => {
                let result = agent.stop(deregister).await;
                agent.stopped = true;
                agent
                    .context
                    .directory
                    .forget(&agent.spec.name, myself.get_id());
                send(reply, result);
                myself.stop(None);
                return Ok(());
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            // Stops with `shutdown`: a transient agent is not restarted into the same refusal;
            // whoever acquires the journal next starts it again.
            Err(AgentError::Journal(error)) if error.needs_takeover() => {
                tracing::info!(agent = agent.spec.name, %error, "the journal needs a takeover: stopping here");
                agent
                    .context
                    .directory
                    .forget(&agent.spec.name, myself.get_id());
                myself.stop(Some(format!("shutdown: {error}")));
                Ok(())
            }
            Err(crash) => {
                tracing::warn!(agent = agent.spec.name, error = %crash, "agent crashed");
                agent
                    .context
                    .directory
                    .forget(&agent.spec.name, myself.get_id());
                Err(Box::new(crash))
            }
        }
    }
}

/// Answers `reply`; a crash in the result also stops the agent.
fn answer<T>(reply: super::msg::Reply<T>, result: Result<T, AgentError>) -> Result<(), AgentError> {
    let crash = match &result {
        Err(error @ AgentError::Crashed { .. }) => Err(error.clone()),
        _ => Ok(()),
    };
    send(reply, result);
    crash
}

impl Agent {
    fn crash(&self, seq: u64, from: String, reason: BehaviourError) -> AgentError {
        AgentError::Crashed {
            agent: self.spec.name.clone(),
            seq,
            from,
            reason,
        }
    }

    /// The behaviour's snapshot; a crash doing it is named after the last input.
    fn snapshot(&mut self, during: &str) -> Result<Vec<u8>, AgentError> {
        self.behaviour.snapshot().map_err(|reason| {
            if reason.is_crash() {
                self.crash(self.seq, format!("({during})"), reason)
            } else {
                AgentError::Recovery {
                    agent: self.spec.name.clone(),
                    source: RecoveryError::Snapshot {
                        behaviour: self.behaviour_id.clone(),
                        source: reason,
                    },
                }
            }
        })
    }

    /// Writes what runs the agent now to the registry (the journal already says it; a stale
    /// registry is corrected at recovery).
    fn update_registry(&self, sync: bool) {
        let Some(vault) = self.context.journal.vault() else {
            return;
        };
        let mut spec = (*self.spec).clone();
        spec.behaviour = self.behaviour_id.clone();
        let record = spec.record(self.id.clone(), arbor_vault::AgentState::Running);
        let written = vault
            .put_agent(&record)
            .and_then(|()| if sync { vault.sync() } else { Ok(()) });
        if let Err(error) = written {
            tracing::warn!(agent = self.spec.name, %error, "registry not updated");
        }
    }
}
