//! The directory of running agents by name, and delivery of agents' sends to each other.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use super::agent_ref::AgentRef;
use super::error::AgentError;
use super::msg::AgentMsg;
use crate::envelope::Kind;
use crate::host::PendingSend;

/// Agents that run somewhere else (another node of a cluster): where the sends to names that
/// do not run here go. Set once per system ([`AgentSystem::send_elsewhere`](super::AgentSystem::send_elsewhere)).
pub trait Elsewhere: Send + Sync + 'static {
    /// Whether `name` is an agent that runs (or will run again) elsewhere: a send to it is
    /// accepted rather than refused as an unknown agent.
    fn knows(&self, name: &str) -> bool;
    /// Delivers `payload` as a cast from `from` to `to`, after the sender's input is durable
    /// (best effort, as a local send to an agent that stops meanwhile: a failure is logged).
    fn deliver(&self, from: &str, to: &str, payload: Vec<u8>);
}

/// Running agents by name.
#[derive(Default)]
pub(crate) struct Directory {
    agents: RwLock<HashMap<String, AgentRef>>,
    elsewhere: OnceLock<Arc<dyn Elsewhere>>,
}

impl Directory {
    /// The agent `name`, unless its actor has exited. An agent removes itself when it stops
    /// or crashes, but a killed actor runs no code: its entry stays until found dead here.
    /// (An actor still stopping counts as present: its final checkpoint must come before a
    /// successor starts journaling.)
    pub(crate) fn lookup(&self, name: &str) -> Option<AgentRef> {
        self.agents
            .read()
            .get(name)
            .filter(|agent| !agent.has_exited())
            .cloned()
    }

    pub(crate) fn is_running(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Adds a started agent, unless a live one has the name (then gives it back).
    pub(crate) fn insert(&self, agent: AgentRef) -> Result<AgentRef, AgentRef> {
        let mut agents = self.agents.write();
        if agents
            .get(agent.name())
            .is_some_and(|other| !other.has_exited())
        {
            return Err(agent);
        }
        agents.insert(agent.name().to_string(), agent.clone());
        Ok(agent)
    }

    /// Removes `name` if it is still this actor (a recovered successor may already have taken
    /// the name).
    pub(crate) fn forget(&self, name: &str, actor: ractor::ActorId) {
        let mut agents = self.agents.write();
        if agents.get(name).is_some_and(|r| r.actor_id() == actor) {
            agents.remove(name);
        }
    }

    /// Every agent whose actor has not exited.
    pub(crate) fn live(&self) -> Vec<AgentRef> {
        self.agents
            .read()
            .values()
            .filter(|agent| !agent.has_exited())
            .cloned()
            .collect()
    }

    /// Sets where sends to agents that do not run here go; `false` if it was set already.
    pub(crate) fn set_elsewhere(&self, elsewhere: Arc<dyn Elsewhere>) -> bool {
        self.elsewhere.set(elsewhere).is_ok()
    }

    /// Whether a send to `name` is accepted: it runs here, or elsewhere knows it.
    pub(crate) fn accepts(&self, name: &str) -> bool {
        self.is_running(name) || self.elsewhere.get().is_some_and(|e| e.knows(name))
    }

    /// Delivers sends whose input is durable, as casts from `from`.
    pub(crate) fn deliver(&self, from: &str, sends: Vec<PendingSend>) {
        for send in sends {
            let delivered = match (self.lookup(&send.to), self.elsewhere.get()) {
                (Some(to), _) => to.send_input(AgentMsg::Input {
                    from: Some(from.to_string()),
                    kind: Kind::Cast,
                    payload: send.payload,
                    reply: None,
                }),
                (None, Some(elsewhere)) if elsewhere.knows(&send.to) => {
                    elsewhere.deliver(from, &send.to, send.payload);
                    Ok(())
                }
                (None, _) => Err(AgentError::UnknownAgent(send.to.clone())),
            };
            match delivered {
                Ok(()) => metrics::counter!(arbor_metrics::MESSAGES_OUT).increment(1),
                Err(error) => tracing::warn!(agent = from, to = send.to, %error, "send dropped"),
            }
        }
    }
}
