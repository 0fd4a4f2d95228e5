//! [`AgentSpec`]: what an agent is — its name, behaviour, limits, grants and init config —
//! and how it reads from and writes to the registry.

use std::time::Duration;

use arbor_vault::{AgentId, AgentRecord, AgentState, ModuleHash};

use super::error::AgentError;
use crate::envelope::BehaviourId;
use crate::wasm::{AgentLimits, Capabilities};

/// What an agent is: its name, its behaviour, its limits and grants, and the config its
/// behaviour is initialised with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// The agent's name, unique in the system (see [`AgentId::new`] for what it may contain).
    pub name: String,
    /// What runs it.
    pub behaviour: BehaviourId,
    /// Its limits (memory, deadline, fuel, message and reply sizes).
    pub limits: AgentLimits,
    /// The host imports and tools it may use.
    pub capabilities: Capabilities,
    /// Passed to `arbor_init` (a native behaviour gets it from its factory) when the agent is created (not kept: recovery starts from
    /// checkpoints).
    pub config: Vec<u8>,
    /// Its place in the supervision tree, supervisor names from the root down.
    pub supervisor: Vec<String>,
}

impl AgentSpec {
    /// An agent run by the Wasm module with this hash (added with
    /// [`AgentSystem::add_module`](super::AgentSystem::add_module)), default limits, no capabilities.
    pub fn wasm(name: impl Into<String>, module: ModuleHash) -> AgentSpec {
        AgentSpec::new(name, BehaviourId::Wasm(module))
    }

    /// An agent run by the native behaviour registered under `native`.
    pub fn native(name: impl Into<String>, native: impl Into<String>) -> AgentSpec {
        AgentSpec::new(name, BehaviourId::Native(native.into()))
    }

    fn new(name: impl Into<String>, behaviour: BehaviourId) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            behaviour,
            limits: AgentLimits::default(),
            capabilities: Capabilities::none(),
            config: Vec::new(),
            supervisor: Vec::new(),
        }
    }

    /// With these limits.
    pub fn limits(mut self, limits: AgentLimits) -> AgentSpec {
        self.limits = limits;
        self
    }

    /// With these capabilities.
    pub fn capabilities(mut self, capabilities: Capabilities) -> AgentSpec {
        self.capabilities = capabilities;
        self
    }

    /// With this init config (MessagePack).
    pub fn config(mut self, config: Vec<u8>) -> AgentSpec {
        self.config = config;
        self
    }

    /// The registry record of this spec (without the init config, which the registry does not
    /// keep), in `state`.
    pub fn record(&self, id: AgentId, state: AgentState) -> AgentRecord {
        let caps = &self.capabilities;
        let mut capabilities: Vec<String> = [
            (caps.log, "log"),
            (caps.send, "send"),
            (caps.now, "now"),
            (caps.random, "random"),
        ]
        .into_iter()
        .filter(|(granted, _)| *granted)
        .map(|(_, name)| name.to_string())
        .collect();
        capabilities.extend(caps.tools.iter().map(|tool| format!("tool:{tool}")));
        AgentRecord {
            id,
            behaviour: (&self.behaviour).into(),
            supervisor: self.supervisor.clone(),
            limits: arbor_vault::Limits {
                memory_bytes: self.limits.memory_bytes,
                fuel: self.limits.fuel,
                deadline_ms: Some(
                    u64::try_from(self.limits.deadline.as_millis()).unwrap_or(u64::MAX),
                ),
                max_message_bytes: self.limits.max_message_bytes as u64,
            },
            capabilities,
            state,
            reason: None,
        }
    }

    /// The spec a registry record describes (empty init config; limits the record does not
    /// keep take their defaults).
    pub fn from_record(record: &AgentRecord) -> AgentSpec {
        let defaults = AgentLimits::default();
        let mut capabilities = Capabilities::none();
        for grant in &record.capabilities {
            match grant.as_str() {
                "log" => capabilities.log = true,
                "send" => capabilities.send = true,
                "now" => capabilities.now = true,
                "random" => capabilities.random = true,
                other => {
                    if let Some(tool) = other.strip_prefix("tool:") {
                        capabilities.tools.insert(tool.to_string());
                    }
                }
            }
        }
        let limits = &record.limits;
        AgentSpec {
            name: record.id.as_str().to_string(),
            behaviour: (&record.behaviour).into(),
            limits: AgentLimits {
                memory_bytes: limits.memory_bytes,
                deadline: limits
                    .deadline_ms
                    .map_or(defaults.deadline, Duration::from_millis),
                fuel: limits.fuel,
                max_message_bytes: usize::try_from(limits.max_message_bytes).unwrap_or(usize::MAX),
                max_reply_bytes: defaults.max_reply_bytes,
            },
            capabilities,
            config: Vec::new(),
            supervisor: record.supervisor.clone(),
        }
    }
}

/// `name` as an agent id, or why it cannot be one.
pub(crate) fn agent_id(name: &str) -> Result<AgentId, AgentError> {
    AgentId::new(name).map_err(|source| AgentError::InvalidName {
        name: name.into(),
        source: std::sync::Arc::new(source),
    })
}
