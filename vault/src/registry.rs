//! The agent registry: which agents exist, where they sit in the supervision tree, what runs
//! them and under which limits, so a restarted host can bring back every agent that was running.
//!
//! One tree, [`tree::AGENTS`], keyed by the agent id's bytes; the value is an [`AgentRecord`]
//! (MessagePack, named fields). New fields are added with `#[serde(default)]`.

use serde::{Deserialize, Serialize};

use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::ids::{AgentId, ModuleHash};
use crate::vault::{Vault, tree};

/// An agent as the runtime registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent's id; the key.
    pub id: AgentId,
    /// What runs it.
    pub behaviour: Behaviour,
    /// Its place in the supervision tree: supervisor names from the root down.
    pub supervisor: Vec<String>,
    /// Its resource limits.
    pub limits: Limits,
    /// The host imports it is granted (`log`, `send`, `now`, `random`, `call_tool`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Whether it should be running.
    pub state: AgentState,
    /// Why it is not running, for [`AgentState::Terminated`] and [`AgentState::Quarantined`]
    /// (written by the runtime, shown to operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What runs an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// A Wasm module from the module store.
    Wasm(ModuleHash),
    /// A native behaviour compiled into the host, by name.
    Native(String),
}

/// An agent's resource limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Linear memory cap in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Fuel per message, if fuel metering is used.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Wall-clock deadline per message in milliseconds, if epoch deadlines are used.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Largest message accepted, in bytes.
    #[serde(default)]
    pub max_message_bytes: u64,
}

/// Whether an agent should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Running; bring it back after a restart.
    Running,
    /// Stopped on purpose; leave it stopped.
    Stopped,
    /// A `temporary` agent that exited: gone for good (OTP never restarts a temporary child);
    /// its checkpoints stay until it is removed.
    Terminated,
    /// Its state could not be recovered (e.g. its checkpoint's restore traps or loops): the
    /// host runs without it until an operator restores it from a checkpoint or removes it.
    Quarantined,
}

impl Vault {
    /// Stores (or replaces) an agent's record.
    ///
    /// ```
    /// use arbor_vault::{AgentId, AgentRecord, AgentState, Behaviour, Config, Limits, Vault};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let vault = Vault::open(dir.path(), Config::default())?;
    /// let record = AgentRecord {
    ///     id: AgentId::new("pool/worker-1")?,
    ///     behaviour: Behaviour::Native("echo".into()),
    ///     supervisor: vec!["root".into(), "pool".into()],
    ///     limits: Limits { memory_bytes: 16 << 20, ..Limits::default() },
    ///     capabilities: vec!["log".into()],
    ///     state: AgentState::Running,
    ///     reason: None,
    /// };
    /// vault.put_agent(&record)?;
    /// assert_eq!(vault.agent(&record.id)?, Some(record));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_agent(&self, record: &AgentRecord) -> Result<()> {
        let key = record.id.as_bytes();
        let body = codec::to_msgpack("agent record", record)?;
        self.inner
            .config
            .check_size(|| format!("record of agent {}", record.id), body.len())?;
        let value = codec::encode(key, Kind::AgentRecord, &body);
        self.inner
            .agents
            .insert(key, value)
            .map_err(Error::sled("insert", tree::AGENTS))?;
        Ok(())
    }

    /// An agent's record.
    pub fn agent(&self, id: &AgentId) -> Result<Option<AgentRecord>> {
        let value = self
            .inner
            .agents
            .get(id.as_bytes())
            .map_err(|e| Error::from_sled_read(tree::AGENTS, || id.to_string(), e))?;
        value.map(|v| decode_agent(id.as_bytes(), &v)).transpose()
    }

    /// Every registered agent, in id order.
    pub fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.inner
            .agents
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(Error::sled("scan", tree::AGENTS))?;
                decode_agent(&key, &value)
            })
            .collect()
    }

    /// Removes an agent's record (its checkpoints and lineage stay); returns whether it existed.
    pub fn remove_agent(&self, id: &AgentId) -> Result<bool> {
        let old = self
            .inner
            .agents
            .remove(id.as_bytes())
            .map_err(Error::sled("remove", tree::AGENTS))?;
        Ok(old.is_some())
    }
}

fn decode_agent(key: &[u8], value: &[u8]) -> Result<AgentRecord> {
    let render = || String::from_utf8_lossy(key).into_owned();
    let body = codec::decode(tree::AGENTS, key, render, Kind::AgentRecord, value)?;
    let record: AgentRecord = codec::from_msgpack(tree::AGENTS, render, body)?;
    if record.id.as_bytes() != key {
        return Err(Error::corrupt(
            tree::AGENTS,
            render(),
            format!("record is for agent {}", record.id),
        ));
    }
    Ok(record)
}
