//! One input: refuse what is too large or not MessagePack (unjournaled), handle it with the
//! agent's live host, journal the input and its outcome in one append, mirror it, and answer
//! once the append is durable.

use std::time::{Duration, Instant};

use super::Agent;
use super::completer::Deliver;
use crate::agent::error::AgentError;
use crate::agent::mirror::{Mirrored, MirroredStatus, Verdict};
use crate::agent::msg::{Reply, send};
use crate::agent::services::GuestCalls;
use crate::behaviour::BehaviourError;
use crate::envelope::{Entry, Envelope, Kind, Status, check_msgpack};
use crate::host::PendingSend;

/// How handling an input ended, computed once from the behaviour's result.
enum Outcome {
    /// Applied, with the reply.
    Applied(Vec<u8>),
    /// Refused: the state is unchanged and the agent lives on.
    Refused(BehaviourError),
    /// Crashed: the instance must go.
    Crashed(BehaviourError),
}

impl Outcome {
    fn of(result: Result<Vec<u8>, BehaviourError>) -> Outcome {
        match result {
            Ok(reply) => Outcome::Applied(reply),
            Err(error) if error.is_crash() => Outcome::Crashed(error),
            Err(error) => Outcome::Refused(error),
        }
    }

    /// What the journal records.
    fn status(&self) -> Status {
        match self {
            Outcome::Applied(_) => Status::Applied,
            Outcome::Refused(error) => Status::Refused(error.to_string()),
            Outcome::Crashed(error) => Status::Crashed(error.to_string()),
        }
    }

    /// What a mirror sees.
    fn mirrored(&self) -> MirroredStatus {
        match self {
            Outcome::Applied(reply) => MirroredStatus::Applied(reply.clone()),
            Outcome::Refused(error) => MirroredStatus::Refused(error.to_string()),
            Outcome::Crashed(error) => MirroredStatus::Crashed(error.to_string()),
        }
    }

    /// The metrics label.
    fn label(&self) -> &'static str {
        match self {
            Outcome::Applied(_) => "applied",
            Outcome::Refused(_) => "refused",
            Outcome::Crashed(_) => "crashed",
        }
    }
}

impl Agent {
    pub(super) async fn input(
        &mut self,
        from: Option<String>,
        kind: Kind,
        payload: Vec<u8>,
        reply: Option<Reply<Vec<u8>>>,
    ) -> Result<(), AgentError> {
        if let Err(error) = self.admit(&payload) {
            match reply {
                Some(reply) => send(reply, Err(error)),
                None => tracing::warn!(agent = self.spec.name, %error, "cast refused"),
            }
            return Ok(());
        }
        let envelope = Envelope {
            to: self.spec.name.clone(),
            from,
            seq: self.seq + 1,
            kind,
            payload,
        };
        let (outcome, took) = self.handle(&envelope);
        let (answers, sends) = self
            .host
            .live_mut()
            .map(|live| live.finish())
            .unwrap_or_default();
        record_handled(&self.spec.name, &outcome, took);
        // Who sent it, named only in a crash report (not built for every input).
        let sender = |from: &Option<String>| from.clone().unwrap_or_else(|| "host".into());

        // The input and its outcome, in one append: one durability wait per input.
        let journal = &self.context.journal;
        let appended = if journal.is_durable() {
            let input = Entry::encode_input(&envelope);
            let record =
                Entry::encode_outcome(&self.spec.name, envelope.seq, &outcome.status(), &answers);
            journal.append(&self.spec.name, &[&input, &record])
        } else {
            journal.append(&self.spec.name, &[])
        };
        let ack = match appended {
            Ok(ack) => ack,
            Err(error) => {
                // Nothing of this input is journaled: its number is free again.
                let error = AgentError::from(error);
                return match outcome {
                    Outcome::Refused(_) => {
                        if let Some(reply) = reply {
                            send(reply, Err(error));
                        }
                        Ok(())
                    }
                    // The journal stopped taking this agent's records from this node (see
                    // `needs_takeover`): the state holds an input it cannot record, so the
                    // agent stops here, not as a crash of its behaviour.
                    Outcome::Applied(_) | Outcome::Crashed(_) if matches!(&error, AgentError::Journal(e) if e.needs_takeover()) =>
                    {
                        if let Some(reply) = reply {
                            send(reply, Err(error.clone()));
                        }
                        Err(error)
                    }
                    // The state holds an input the journal cannot record (or the instance
                    // crashed): it must go; recovery rebuilds the journaled state.
                    Outcome::Applied(_) | Outcome::Crashed(_) => {
                        let crash = self.crash(
                            envelope.seq,
                            sender(&envelope.from),
                            BehaviourError::Contract(format!(
                                "the input could not be journaled: {error}"
                            )),
                        );
                        if let Some(reply) = reply {
                            send(reply, Err(crash.clone()));
                        }
                        Err(crash)
                    }
                };
            }
        };
        self.seq = envelope.seq;

        let verdict = match self.mirror.clone() {
            None => None,
            Some(tap) => {
                let record = Mirrored {
                    seq: envelope.seq,
                    kind: envelope.kind,
                    from: envelope.from.clone(),
                    status: outcome.mirrored(),
                    answers,
                    sends: sends
                        .iter()
                        .map(|s| (s.to.clone(), s.payload.clone()))
                        .collect(),
                    fuel: self.behaviour.last_cost().fuel,
                    took,
                    behaviour: self.behaviour_id.clone(),
                    lsn: journal.is_durable().then(|| ack.lsn()),
                    payload: envelope.payload,
                };
                let (open, verdict) = if tap.is_verified() {
                    let verdict = tap.send_verified(record).await;
                    (verdict.is_some(), verdict)
                } else {
                    (tap.offer(record), None)
                };
                if !open {
                    self.mirror = None;
                }
                verdict
            }
        };
        self.count_unsaved();

        let seq = self.seq;
        let (answer, crash) = match outcome {
            Outcome::Applied(bytes) => (Ok(bytes), None),
            Outcome::Refused(reason) => (
                Err(AgentError::Refused {
                    agent: self.spec.name.clone(),
                    seq,
                    reason,
                }),
                None,
            ),
            Outcome::Crashed(reason) => {
                let crash = self.crash(seq, sender(&envelope.from), reason);
                (Err(crash.clone()), Some(crash))
            }
        };
        self.completer
            .after_durable(ack, verdict, self.deliver(seq, answer, sends, reply));
        match crash {
            Some(crash) => Err(crash),
            None => self.checkpoint_if_due().await,
        }
    }

    /// Refuses, before anything is journaled, an input larger than the agent accepts or not
    /// one well-formed MessagePack value.
    fn admit(&self, payload: &[u8]) -> Result<(), AgentError> {
        let max = self.spec.limits.max_message_bytes;
        if payload.len() > max {
            return Err(AgentError::TooLarge {
                agent: self.spec.name.clone(),
                len: payload.len(),
                max,
            });
        }
        check_msgpack(payload).map_err(|source| AgentError::Malformed {
            agent: self.spec.name.clone(),
            source,
        })
    }

    /// Runs the behaviour on the input with the live host (see the agent module's docs for
    /// where guest code runs). A native behaviour that panics is a crashed behaviour, not a
    /// crashed host.
    fn handle(&mut self, envelope: &Envelope) -> (Outcome, Duration) {
        if let Some(live) = self.host.live_mut() {
            live.begin(envelope.seq);
        }
        let started = Instant::now();
        let (behaviour, host) = (&mut self.behaviour, &mut self.host);
        let mut call = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                behaviour.handle(&envelope.payload, host)
            }))
        };
        let handled = match self.context.services.guest_calls {
            GuestCalls::Inline => call(),
            GuestCalls::BlockInPlace => block_in_place(call),
        };
        let result = handled.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(BehaviourError::Trap(format!("panicked: {what}")))
        });
        (Outcome::of(result), started.elapsed())
    }

    /// The first input since the last checkpoint: the journal learns its age (a gauge), and a
    /// timer makes sure it is checkpointed within the policy's time even if no other input
    /// comes.
    fn count_unsaved(&mut self) {
        self.inputs_since_checkpoint += 1;
        let journal = &self.context.journal;
        if self.inputs_since_checkpoint == 1 && journal.is_durable() {
            journal.unsaved(&self.spec.name);
            let every = journal.policy.every;
            self.arm_checkpoint_timer(every);
        }
    }

    /// What to do once the input's records are durable: answer the caller and perform the
    /// sends — or what a verified watch's observer replaced them with.
    fn deliver(
        &self,
        seq: u64,
        answer: Result<Vec<u8>, AgentError>,
        sends: Vec<PendingSend>,
        reply: Option<Reply<Vec<u8>>>,
    ) -> Deliver {
        let context = std::sync::Arc::clone(&self.context);
        let agent = self.spec.name.clone();
        Box::new(move |durable, verdict| {
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
                context.directory.deliver(&agent, sends);
            }
            if let Some(reply) = reply {
                send(reply, durable.and(answer));
            }
        })
    }
}

/// Runs `call` with [`tokio::task::block_in_place`] on a multi-threaded runtime (the worker's
/// other tasks move to another thread meanwhile), inline elsewhere.
fn block_in_place<R>(call: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(call)
    } else {
        call()
    }
}

/// How an observer's replacement reads to the caller.
fn answer_of(agent: &str, seq: u64, status: MirroredStatus) -> Result<Vec<u8>, AgentError> {
    let refused = |reason: String| AgentError::Refused {
        agent: agent.to_string(),
        seq,
        reason: BehaviourError::BadInput(reason),
    };
    match status {
        MirroredStatus::Applied(reply) => Ok(reply),
        MirroredStatus::Refused(reason) => Err(refused(reason)),
        MirroredStatus::Crashed(reason) => Err(refused(format!(
            "the verified watch's reference module crashed on it: {reason}"
        ))),
    }
}

/// The metrics of one handled input (see `arbor-metrics`).
fn record_handled(agent: &str, outcome: &Outcome, took: Duration) {
    let label = outcome.label();
    if arbor_metrics::agent_labels() {
        let agent = agent.to_string();
        metrics::counter!(arbor_metrics::MESSAGES_IN, "outcome" => label, "agent" => agent.clone())
            .increment(1);
        metrics::histogram!(arbor_metrics::HANDLE_SECONDS, "agent" => agent).record(took);
    } else {
        metrics::counter!(arbor_metrics::MESSAGES_IN, "outcome" => label).increment(1);
        metrics::histogram!(arbor_metrics::HANDLE_SECONDS).record(took);
    }
    if matches!(outcome, Outcome::Crashed(_)) {
        metrics::counter!(arbor_metrics::TRAPS).increment(1);
    }
}
