//! [`Spawn`]: an agent to start, as the host describes it.

// Named by the docs' links only.
#[cfg(doc)]
use crate::{Runtime, RuntimeBuilder};

use std::sync::Arc;

use arbor_agent::AgentRef;
use arbor_agent::wasm::{AgentLimits, Capabilities};
use arbor_vault::ModuleHash;

/// An agent to start: what runs it, and its name, grants, limits, init config and supervisor.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub(super) name: String,
    pub(super) source: Source,
    pub(super) capabilities: Capabilities,
    pub(super) limits: Option<AgentLimits>,
    pub(super) config: Vec<u8>,
    pub(super) under: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) enum Source {
    Bytes { label: String, bytes: Arc<[u8]> },
    Module(ModuleHash),
    Native(String),
}

impl Spawn {
    /// An agent run by these Wasm module bytes (checked, compiled and stored; the module is
    /// labelled with the agent's name).
    pub fn wasm_bytes(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Spawn {
        let name = name.into();
        Spawn::new(
            name.clone(),
            Source::Bytes {
                label: name,
                bytes: bytes.into(),
            },
        )
    }

    /// An agent run by a module already stored (see [`Runtime::add_module`]).
    pub fn module(name: impl Into<String>, module: ModuleHash) -> Spawn {
        Spawn::new(name.into(), Source::Module(module))
    }

    /// An agent run by the native behaviour registered under `native`.
    pub fn native(name: impl Into<String>, native: impl Into<String>) -> Spawn {
        Spawn::new(name.into(), Source::Native(native.into()))
    }

    fn new(name: String, source: Source) -> Spawn {
        Spawn {
            name,
            source,
            capabilities: Capabilities::none(),
            limits: None,
            config: Vec::new(),
            under: Vec::new(),
        }
    }

    /// With these grants (default: none).
    pub fn capabilities(mut self, capabilities: Capabilities) -> Spawn {
        self.capabilities = capabilities;
        self
    }

    /// With these limits (default: the runtime's).
    pub fn limits(mut self, limits: AgentLimits) -> Spawn {
        self.limits = Some(limits);
        self
    }

    /// With this init config (MessagePack; default empty).
    pub fn config(mut self, config: Vec<u8>) -> Spawn {
        self.config = config;
        self
    }

    /// Under the supervisor at `path` (`"pool"`, `"pools/fast"`), declared with
    /// [`RuntimeBuilder::supervisor`]; default: the root.
    pub fn under(mut self, path: &str) -> Spawn {
        self.under = split_path(path);
        self
    }
}

pub(super) fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}

/// A spawned agent: its name, the node it runs on (cluster mode) and, when it runs on this
/// node, its handle.
#[derive(Debug, Clone)]
pub struct Spawned {
    pub(super) name: String,
    pub(super) node: Option<String>,
    pub(super) agent: Option<AgentRef>,
}

impl Spawned {
    /// The agent's name (what [`Runtime::call`] takes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node that runs it (cluster mode; `None` on a single node).
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Its handle, when it runs on this node.
    pub fn local(&self) -> Option<&AgentRef> {
        self.agent.as_ref()
    }
}
