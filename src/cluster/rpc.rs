//! Calls and casts between nodes: NATS request/reply on the owner's subject
//! `arbor.rpc.<node>`.
//!
//! A caller finds the owner in the lease bucket (the lease names the node), sends the request
//! there and waits. The owner answers with the agent's reply, after the input's journal
//! records were acknowledged by the stream, or with why not. An owner that does not run the
//! agent (it just moved, or is still starting it) answers [`Reply::NotHere`] without touching
//! anything, so the caller can look again and retry; until the call's deadline, a caller
//! never gives up on a moving agent silently: it ends with the owner's reply or with a typed,
//! retryable [`Error::Unavailable`](crate::Error::Unavailable).

use std::time::{Duration, Instant};

use arbor_agent::AgentError;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use std::sync::{Arc, Weak};

use super::Local;

/// The subject a node answers on.
pub(crate) fn subject(node: &str) -> String {
    // Node names are subject tokens (checked when the runtime joins).
    format!("arbor.rpc.{node}")
}

/// What a node asks an owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Call `agent` with `payload`; answer within `timeout_ms`.
    Call {
        agent: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        timeout_ms: u64,
    },
    /// Deliver `payload` to `agent`'s mailbox (from the agent `from`, for an agent's send).
    Cast {
        agent: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        from: Option<String>,
    },
}

/// What the owner answers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The agent's reply (empty for a cast).
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// This node does not run the agent (moving, starting, or not its owner any more).
    NotHere,
    /// The agent refused, crashed, timed out, …: the owner's error.
    Failed {
        /// What kind of failure.
        kind: RemoteFailure,
        /// The owner's error, rendered with its sources.
        message: String,
    },
}

/// What kind of failure an agent on another node reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoteFailure {
    /// The agent refused the input (its state is unchanged).
    Refused,
    /// The agent crashed on the input (its supervisor restarts it).
    Crashed,
    /// The input was not answered in time.
    Timeout,
    /// The agent's mailbox is full.
    MailboxFull,
    /// The input is malformed or too large.
    BadInput,
    /// The agent is restarting or being recovered; try again.
    Restarting,
    /// The owner's journal could not take the input (fenced, store unreachable): the agent is
    /// moving; try again.
    Journal,
    /// Anything else.
    Other,
}

impl RemoteFailure {
    fn of(error: &crate::Error) -> RemoteFailure {
        use crate::Error;
        match error {
            Error::Agent(AgentError::Refused { .. }) => RemoteFailure::Refused,
            Error::Agent(AgentError::Crashed { .. }) => RemoteFailure::Crashed,
            Error::Agent(AgentError::Timeout { .. }) => RemoteFailure::Timeout,
            Error::Agent(AgentError::MailboxFull { .. }) => RemoteFailure::MailboxFull,
            Error::Agent(
                AgentError::Malformed { .. }
                | AgentError::TooLarge { .. }
                | AgentError::Encode { .. }
                | AgentError::Decode { .. },
            ) => RemoteFailure::BadInput,
            Error::Restarting(_) => RemoteFailure::Restarting,
            Error::Agent(AgentError::Journal(_)) => RemoteFailure::Journal,
            _ => RemoteFailure::Other,
        }
    }

    /// Whether retrying the same input may succeed (the agent is moving or restarting).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            RemoteFailure::Restarting | RemoteFailure::Journal | RemoteFailure::MailboxFull
        )
    }
}

/// Requests a node answers at once; more wait in the subscription (whose own buffer is
/// bounded: a flood slows callers down, it does not grow this node's memory).
const IN_FLIGHT: usize = 1024;

/// Serves this node's subject until the runtime is gone: each request runs on its own task,
/// at most [`IN_FLIGHT`] at a time.
pub(crate) async fn serve(
    client: async_nats::Client,
    node: String,
    local: Weak<dyn Local>,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = client.subscribe(subject(&node)).await?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply.clone() else {
                continue;
            };
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                return;
            };
            let Some(local) = local.upgrade() else {
                return;
            };
            let client = client.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let reply = match rmp_serde::from_slice::<Request>(&message.payload) {
                    Ok(request) => answer(local.as_ref(), request).await,
                    Err(error) => Reply::Failed {
                        kind: RemoteFailure::BadInput,
                        message: format!("undecodable request: {error}"),
                    },
                };
                drop(local);
                respond(&client, reply_to, &reply).await;
            });
        }
    });
    Ok(())
}

/// Publishes `reply` (MessagePack) to a request's `reply_to`; a reply that cannot be sent is
/// logged (the requester times out and retries or reports it).
pub(crate) async fn respond(
    client: &async_nats::Client,
    reply_to: async_nats::Subject,
    reply: &impl Serialize,
) {
    match rmp_serde::to_vec_named(reply) {
        Ok(bytes) => {
            if let Err(error) = client.publish(reply_to, Bytes::from(bytes)).await {
                tracing::warn!(%error, "reply not sent");
            }
        }
        Err(error) => tracing::error!(%error, "reply does not encode"),
    }
}

async fn answer(local: &dyn Local, request: Request) -> Reply {
    let result = match request {
        Request::Call {
            agent,
            payload,
            timeout_ms,
        } => {
            let Some(target) = local.lookup(&agent) else {
                return Reply::NotHere;
            };
            let timeout = Duration::from_millis(timeout_ms);
            target
                .call_timeout(payload, timeout)
                .await
                .map_err(crate::Error::from)
        }
        Request::Cast {
            agent,
            payload,
            from,
        } => {
            let Some(target) = local.lookup(&agent) else {
                return Reply::NotHere;
            };
            match from {
                Some(from) => target.cast_from(&from, payload),
                None => target.cast(payload),
            }
            .map(|()| Vec::new())
            .map_err(crate::Error::from)
        }
    };
    match result {
        Ok(reply) => Reply::Ok(reply),
        Err(error) => Reply::Failed {
            kind: RemoteFailure::of(&error),
            message: arbor_agent::report::chain(&error),
        },
    }
}

/// Sends `request` about `agent` to its owner, looking the owner up again after every
/// "not here", until `deadline`. When the owner turns out to be this node (the agent moved
/// here while the caller waited), the request is answered here.
pub(crate) async fn forward(
    node: &super::Node,
    local: &dyn Local,
    agent: &str,
    request: Request,
    deadline: Instant,
) -> Result<Vec<u8>, crate::Error> {
    let payload = rmp_serde::to_vec_named(&request).map_err(|e| crate::Error::Codec {
        agent: agent.into(),
        reason: format!("cannot encode the request: {e}"),
    })?;
    let payload = Bytes::from(payload);
    let mut backoff = Duration::from_millis(20);
    let mut last = String::from("no owner yet");
    loop {
        let now = Instant::now();
        if now >= deadline {
            metrics::counter!(arbor_metrics::CLUSTER_REMOTE_CALLS, "outcome" => "unavailable")
                .increment(1);
            return Err(crate::Error::Unavailable {
                agent: agent.into(),
                reason: last,
            });
        }
        let owner = match node.leases.get(agent).await {
            Ok(Some(lease)) if lease.node != node.name() => Some(lease.node),
            Ok(Some(_)) => {
                // Ours: answered here once it runs (it may still be starting).
                match answer(local, request.clone()).await {
                    Reply::Ok(reply) => return Ok(reply),
                    Reply::NotHere => last = "starting here".into(),
                    Reply::Failed { kind, message } if kind.is_retryable() => last = message,
                    Reply::Failed { kind, message } => {
                        return Err(crate::Error::Remote {
                            agent: agent.into(),
                            node: node.name().to_string(),
                            kind,
                            message,
                        });
                    }
                }
                None
            }
            Ok(None) => None,
            Err(error) => {
                last = format!("reading its lease: {error}");
                None
            }
        };
        // An owner whose heartbeat is stale (dead, paused, cut off) cannot answer; its lease
        // runs out within a lease, and another node claims the agent: wait for that.
        let owner = match owner {
            Some(owner) if !node.members.is_live(&owner) => {
                last = format!("`{owner}` holds it but looks dead (waiting for its lease to end)");
                None
            }
            owner => owner,
        };
        if let Some(owner) = owner {
            let remaining = deadline.saturating_duration_since(now);
            // Waits for the answer until the call's deadline (not the client's 10 s default,
            // after which a resend could run the call twice on a slow but live owner), unless
            // the owner's heartbeat goes stale meanwhile: then its lease is read again.
            let request = async_nats::Request::new()
                .payload(payload.clone())
                .timeout(Some(remaining));
            let sent = tokio::select! {
                sent = tokio::time::timeout(
                    remaining,
                    node.client.send_request(subject(&owner), request),
                ) => Some(sent),
                () = owner_goes_stale(node, &owner) => None,
            };
            let Some(sent) = sent else {
                last = format!("`{owner}` stopped answering (its heartbeat is stale)");
                continue;
            };
            match sent {
                Err(_) => {
                    metrics::counter!(arbor_metrics::CLUSTER_REMOTE_CALLS, "outcome" => "unavailable")
                        .increment(1);
                    return Err(crate::Error::Unavailable {
                        agent: agent.into(),
                        reason: format!("no answer from `{owner}` in time"),
                    });
                }
                Ok(Err(error)) => last = format!("asking `{owner}`: {error}"),
                Ok(Ok(message)) => match rmp_serde::from_slice::<Reply>(&message.payload) {
                    Ok(Reply::Ok(reply)) => {
                        metrics::counter!(arbor_metrics::CLUSTER_REMOTE_CALLS, "outcome" => "ok")
                            .increment(1);
                        return Ok(reply);
                    }
                    Ok(Reply::NotHere) => last = format!("`{owner}` does not run it (moving)"),
                    Ok(Reply::Failed { kind, message }) if kind.is_retryable() => {
                        last = format!("`{owner}`: {message}");
                    }
                    Ok(Reply::Failed { kind, message }) => {
                        metrics::counter!(arbor_metrics::CLUSTER_REMOTE_CALLS, "outcome" => "error")
                            .increment(1);
                        return Err(crate::Error::Remote {
                            agent: agent.into(),
                            node: owner,
                            kind,
                            message,
                        });
                    }
                    Err(error) => last = format!("undecodable reply from `{owner}`: {error}"),
                },
            }
        }
        tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
}

/// Resolves once `owner`'s heartbeat is stale in this node's view (checked in memory, every
/// 100 ms; the view follows the heartbeat bucket).
async fn owner_goes_stale(node: &super::Node, owner: &str) {
    while node.members.is_live(owner) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Agents' sends to agents on other nodes ([`arbor_agent::Elsewhere`]): a send to a name the
/// registry has running is forwarded to its owner as a cast from the sender, on a task of its
/// own (the sender's input is durable already; it does not wait).
pub(crate) struct RemoteSends {
    pub(crate) node: Weak<super::Node>,
    pub(crate) local: Weak<dyn Local>,
    pub(crate) timeout: Duration,
}

impl arbor_agent::Elsewhere for RemoteSends {
    fn knows(&self, name: &str) -> bool {
        self.node.upgrade().is_some_and(|node| {
            node.registry
                .get(name)
                .is_some_and(|r| r.record.state == arbor_vault::AgentState::Running)
        })
    }

    fn deliver(&self, from: &str, to: &str, payload: Vec<u8>) {
        let (Some(node), Some(local)) = (self.node.upgrade(), self.local.upgrade()) else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                agent = from,
                to,
                "send dropped: no runtime to forward it on"
            );
            return;
        };
        let request = Request::Cast {
            agent: to.to_string(),
            payload,
            from: Some(from.to_string()),
        };
        let (from, to, timeout) = (from.to_string(), to.to_string(), self.timeout);
        handle.spawn(async move {
            let local: Arc<dyn Local> = local;
            let deadline = Instant::now() + timeout;
            if let Err(error) = forward(&node, local.as_ref(), &to, request, deadline).await {
                tracing::warn!(agent = from, to, %error, "send to another node dropped");
            }
        });
    }
}
