//! [`AgentSystem`]: the services every agent of a host shares — the Wasm engine, the journal
//! (one WAL and the vault), the tools, the native behaviours — and the directory of running
//! agents.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arbor_vault::{AgentId, AgentRecord, AgentState, ModuleHash, ModuleInfo, Vault};
use arbor_wal::Wal;
use parking_lot::RwLock;
use ractor::Actor;

use super::actor::{AgentActor, AgentMsg, Start};
use super::agent_ref::{
    AfterRestore, AgentRef, Mailbox, RebuildReport, RestoreFrom, StateCheck, SwapReport,
};
use super::error::AgentError;
use super::host::PendingSend;
use super::journal::{CheckpointPolicy, Journal};
use super::recovery::{self, RecoveryReport};
use crate::behaviour::Behaviour;
use crate::envelope::{BehaviourId, Kind};
use crate::tools::Tools;
use crate::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};

/// Makes a fresh instance of a native behaviour (its state then comes from
/// [`Behaviour::init`] or [`Behaviour::restore`]).
pub type NativeFactory = Arc<dyn Fn() -> Box<dyn Behaviour> + Send + Sync>;

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
    /// Passed to [`Behaviour::init`] when the agent is created (not kept: recovery starts from
    /// checkpoints).
    pub config: Vec<u8>,
    /// Its place in the supervision tree, supervisor names from the root down.
    pub supervisor: Vec<String>,
}

impl AgentSpec {
    /// An agent run by the Wasm module with this hash (added with
    /// [`AgentSystem::add_module`]), default limits, no capabilities.
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

    pub(crate) fn record(&self, id: AgentId, state: AgentState) -> AgentRecord {
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
            behaviour: match &self.behaviour {
                BehaviourId::Wasm(hash) => arbor_vault::Behaviour::Wasm(*hash),
                BehaviourId::Native(name) => arbor_vault::Behaviour::Native(name.clone()),
            },
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

    fn from_record(record: &AgentRecord) -> AgentSpec {
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
            behaviour: match &record.behaviour {
                arbor_vault::Behaviour::Wasm(hash) => BehaviourId::Wasm(*hash),
                arbor_vault::Behaviour::Native(name) => BehaviourId::Native(name.clone()),
            },
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

/// What all agents share.
pub(crate) struct Shared {
    pub(crate) wasm: WasmHost,
    pub(crate) journal: Option<Journal>,
    /// The bytes of every module added to a system without a journal (one with a journal
    /// keeps them in its vault), so that a module the Wasm host has released (nothing used it)
    /// can be compiled again. Bytes cost memory only, no file descriptor or mapping.
    modules: RwLock<HashMap<ModuleHash, Arc<[u8]>>>,
    pub(crate) tools: Tools,
    natives: BTreeMap<String, NativeFactory>,
    mailbox: usize,
    directory: RwLock<HashMap<String, AgentRef>>,
    /// [`AgentSystem::shutdown`] ran: observers waiting for an agent to come back stop waiting.
    shut_down: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The agent `name`, unless its actor has exited. An agent removes itself when it stops
    /// or crashes, but a killed actor runs no code: its entry stays until found dead here.
    /// (An actor still stopping counts as present: its final checkpoint must come before a
    /// successor starts journaling.)
    pub(crate) fn lookup(&self, name: &str) -> Option<AgentRef> {
        self.directory
            .read()
            .get(name)
            .filter(|agent| !agent.has_exited())
            .cloned()
    }

    pub(crate) fn is_running(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Removes `name` from the directory if it is still this actor (a recovered successor may
    /// already have taken the name).
    pub(crate) fn forget(&self, name: &str, actor: ractor::ActorId) {
        let mut directory = self.directory.write();
        if directory.get(name).is_some_and(|r| r.actor_id() == actor) {
            directory.remove(name);
        }
    }

    /// Delivers sends whose input is durable, as casts from `from`.
    pub(crate) fn deliver(&self, from: &str, sends: Vec<PendingSend>) {
        for send in sends {
            let delivered = match self.lookup(&send.to) {
                Some(to) => to.send_input(AgentMsg::Input {
                    from: Some(from.to_string()),
                    kind: Kind::Cast,
                    payload: send.payload,
                    reply: None,
                }),
                None => Err(AgentError::UnknownAgent(send.to.clone())),
            };
            match delivered {
                Ok(()) => metrics::counter!(arbor_metrics::MESSAGES_OUT).increment(1),
                Err(error) => tracing::warn!(agent = from, to = send.to, %error, "send dropped"),
            }
        }
    }

    /// A fresh, uninitialised instance of `behaviour` for an agent with these limits and grants.
    pub(crate) fn instantiate(
        &self,
        behaviour: &BehaviourId,
        limits: &AgentLimits,
        capabilities: &Capabilities,
    ) -> Result<Box<dyn Behaviour>, String> {
        match behaviour {
            BehaviourId::Wasm(hash) => {
                let module = match self.wasm.cached(hash) {
                    Some(module) => module,
                    // Never loaded here, or released by the host since: compiled again.
                    None => {
                        let bytes = self
                            .module_bytes(hash)?
                            .ok_or_else(|| format!("no module {}", hash.short()))?;
                        self.wasm.load(&bytes).map_err(|e| e.to_string())?
                    }
                };
                WasmBehaviour::instantiate(
                    &self.wasm,
                    &module,
                    limits.clone(),
                    capabilities.clone(),
                )
                .map(|b| Box::new(b) as Box<dyn Behaviour>)
                .map_err(|e| e.to_string())
            }
            BehaviourId::Native(name) => self
                .natives
                .get(name)
                .map(|factory| factory())
                .ok_or_else(|| format!("no native behaviour `{name}`")),
        }
    }

    /// The bytes of an added module: kept in memory without a journal, else from the vault.
    fn module_bytes(&self, hash: &ModuleHash) -> Result<Option<Arc<[u8]>>, String> {
        if let Some(bytes) = self.modules.read().get(hash) {
            return Ok(Some(Arc::clone(bytes)));
        }
        let Some(journal) = &self.journal else {
            return Ok(None);
        };
        journal
            .vault
            .module_bytes(hash)
            .map(|bytes| bytes.map(Arc::from))
            .map_err(|e| format!("vault: {e}"))
    }

    /// Which behaviour wrote a checkpoint with this module hash: the registered one, a native
    /// one, or a stored module.
    pub(crate) fn behaviour_for(&self, hash: &ModuleHash, registered: &BehaviourId) -> BehaviourId {
        if registered.checkpoint_hash() == *hash {
            return registered.clone();
        }
        self.natives
            .keys()
            .map(|name| BehaviourId::Native(name.clone()))
            .find(|native| native.checkpoint_hash() == *hash)
            .unwrap_or(BehaviourId::Wasm(*hash))
    }
}

/// The agents of one host and what they share: one Wasm engine, one journal (WAL + vault), the
/// host's tools and native behaviours.
///
/// ```
/// use arbor_agent::{AgentSpec, AgentSystem};
/// use arbor_agent::wasm::EngineConfig;
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let dir = tempfile::tempdir()?;
/// let system = AgentSystem::builder()
///     .journal(dir.path())
///     .engine(EngineConfig { max_instances: 100, ..EngineConfig::default() })
///     .build()?;
/// let counter = system.add_module("counter", arbor_modules::COUNTER)?;
/// let agent = system.spawn(AgentSpec::wasm("counter-1", counter)).await?;
///
/// #[derive(serde::Serialize)]
/// enum Msg { Inc { by: i64 } }
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Reply { count: i64 }
/// let reply: Reply = agent.call_msg(&Msg::Inc { by: 2 }).await?;
/// assert_eq!(reply, Reply { count: 2 });
///
/// // The input is journaled: after a restart the agent comes back with its state.
/// system.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct AgentSystem {
    shared: Arc<Shared>,
}

/// Builds an [`AgentSystem`].
#[derive(Default)]
pub struct AgentSystemBuilder {
    journal: Option<PathBuf>,
    wal: Option<arbor_wal::Config>,
    vault: Option<arbor_vault::Config>,
    checkpoints: CheckpointPolicy,
    engine: Option<EngineConfig>,
    wasm: Option<WasmHost>,
    tools: Tools,
    natives: BTreeMap<String, NativeFactory>,
    mailbox: Option<usize>,
}

/// The default bound on each agent's mailbox.
pub const DEFAULT_MAILBOX: usize = 10_000;

impl AgentSystemBuilder {
    /// At most `capacity` inputs wait in each agent's mailbox (default [`DEFAULT_MAILBOX`]);
    /// beyond it calls and casts fail with [`AgentError::MailboxFull`] at once.
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = Some(capacity.max(1));
        self
    }

    /// Journal every input into `dir` (`dir/wal`, `dir/vault`). Without it agents are
    /// ephemeral: nothing is journaled or checkpointed.
    pub fn journal(mut self, dir: impl Into<PathBuf>) -> Self {
        self.journal = Some(dir.into());
        self
    }

    /// The WAL's configuration (durability policy, segment size, …).
    pub fn wal(mut self, config: arbor_wal::Config) -> Self {
        self.wal = Some(config);
        self
    }

    /// The vault's configuration.
    pub fn vault(mut self, config: arbor_vault::Config) -> Self {
        self.vault = Some(config);
        self
    }

    /// When agents checkpoint.
    pub fn checkpoints(mut self, policy: CheckpointPolicy) -> Self {
        self.checkpoints = policy;
        self
    }

    /// Build a Wasm engine with this configuration (default: [`EngineConfig::default`]).
    pub fn engine(mut self, config: EngineConfig) -> Self {
        self.engine = Some(config);
        self
    }

    /// Use this Wasm host (shares its engine and module cache).
    pub fn wasm_host(mut self, host: WasmHost) -> Self {
        self.wasm = Some(host);
        self
    }

    /// The tools agents may be granted.
    pub fn tools(mut self, tools: Tools) -> Self {
        self.tools = tools;
        self
    }

    /// Registers a native behaviour under `name`.
    pub fn native(
        mut self,
        name: impl Into<String>,
        factory: impl Fn() -> Box<dyn Behaviour> + Send + Sync + 'static,
    ) -> Self {
        self.natives.insert(name.into(), Arc::new(factory));
        self
    }

    /// Opens the journal (recovering the WAL) and the vault, and pins the WAL for every agent
    /// the registry says is running, so nothing they need is released before they recover.
    pub fn build(self) -> Result<AgentSystem, AgentError> {
        let wasm = match self.wasm {
            Some(host) => host,
            None => {
                WasmHost::new(self.engine.unwrap_or_default()).map_err(|e| AgentError::Start {
                    agent: "*".into(),
                    reason: format!("Wasm engine: {e}"),
                })?
            }
        };
        let journal = match self.journal {
            None => None,
            Some(dir) => {
                let wal = Wal::open(dir.join("wal"), self.wal.unwrap_or_default())
                    .map_err(|e| AgentError::Journal(e.to_string()))?;
                let vault = Vault::open(dir.join("vault"), self.vault.unwrap_or_default())
                    .map_err(|e| AgentError::Vault(e.to_string()))?;
                let journal = Journal::new(wal, vault, self.checkpoints);
                let records = journal
                    .vault
                    .agents()
                    .map_err(|e| AgentError::Vault(e.to_string()))?;
                for record in records.iter().filter(|r| r.state == AgentState::Running) {
                    journal.pin_from_vault(&record.id)?;
                }
                Some(journal)
            }
        };
        Ok(AgentSystem {
            shared: Arc::new(Shared {
                wasm,
                journal,
                modules: RwLock::new(HashMap::new()),
                tools: self.tools,
                natives: self.natives,
                mailbox: self.mailbox.unwrap_or(DEFAULT_MAILBOX),
                directory: RwLock::new(HashMap::new()),
                shut_down: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

impl AgentSystem {
    /// A builder.
    pub fn builder() -> AgentSystemBuilder {
        AgentSystemBuilder::default()
    }

    /// Whether [`shutdown`](Self::shutdown) has been called (agents may still be recovered
    /// or spawned after it, but nothing waits for the stopped ones to come back by themselves).
    pub fn is_shut_down(&self) -> bool {
        self.shared
            .shut_down
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The shared Wasm host.
    pub fn wasm_host(&self) -> &WasmHost {
        &self.shared.wasm
    }

    /// The journal's WAL, if the system journals.
    pub fn wal(&self) -> Option<&Wal> {
        self.shared.journal.as_ref().map(|j| &j.wal)
    }

    /// The vault, if the system journals.
    pub fn vault(&self) -> Option<&Vault> {
        self.shared.journal.as_ref().map(|j| &j.vault)
    }

    /// Checks and compiles a Wasm module (ABI v1) and stores it in the vault (when journaling;
    /// without a journal the system keeps the bytes in memory); returns its content hash, which
    /// names it in [`AgentSpec::wasm`] and [`swap_module`](AgentSystem::swap_module).
    ///
    /// The compiled module stays in the Wasm host while anything uses it and a while after (see
    /// [`EngineConfig::idle_modules`]); an agent started on it later compiles it again from the
    /// stored bytes if the host has released it.
    pub fn add_module(&self, name: &str, bytes: &[u8]) -> Result<ModuleHash, AgentError> {
        let loaded = self.shared.wasm.load(bytes);
        let outcome = if loaded.is_ok() { "loaded" } else { "refused" };
        metrics::counter!(arbor_metrics::MODULE_LOADS, "outcome" => outcome).increment(1);
        let module = loaded.map_err(|e| AgentError::Start {
            agent: "*".into(),
            reason: format!("module `{name}`: {e}"),
        })?;
        if let Some(journal) = &self.shared.journal {
            journal
                .vault
                .put_module(
                    bytes,
                    &ModuleInfo {
                        name: name.into(),
                        version_label: String::new(),
                        abi_version: 1,
                        origin: "AgentSystem::add_module".into(),
                    },
                )
                .and_then(|put| {
                    if put.added {
                        journal.vault.sync()
                    } else {
                        Ok(())
                    }
                })
                .map_err(|e| AgentError::Vault(e.to_string()))?;
        } else {
            self.shared
                .modules
                .write()
                .entry(module.hash())
                .or_insert_with(|| Arc::from(bytes));
        }
        metrics::gauge!(arbor_metrics::WASM_MODULES_LOADED)
            .set(self.shared.wasm.cached_modules() as f64);
        Ok(module.hash())
    }

    /// The running agent named `name`.
    pub fn lookup(&self, name: &str) -> Option<AgentRef> {
        self.shared.lookup(name)
    }

    /// The names of the running agents, sorted.
    pub fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .shared
            .directory
            .read()
            .iter()
            .filter(|(_, agent)| !agent.has_exited())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Creates and starts a new agent: instantiates its behaviour, runs `init(config)`, and when
    /// journaling writes its first checkpoint and registry record (so it survives a restart).
    /// Refuses a name that is running or has state in the vault ([`recover`](Self::recover)
    /// that one).
    pub async fn spawn(&self, spec: AgentSpec) -> Result<AgentRef, AgentError> {
        self.spawn_under(spec, None).await
    }

    /// [`spawn`](Self::spawn), the agent's actor linked to `supervisor` (a ractor actor that
    /// gets its exit events, such as an `arbor-supervisor` supervisor).
    pub async fn spawn_linked(
        &self,
        spec: AgentSpec,
        supervisor: ractor::ActorCell,
    ) -> Result<AgentRef, AgentError> {
        self.spawn_under(spec, Some(supervisor)).await
    }

    /// [`recover`](Self::recover), the agent's actor linked to `supervisor`.
    pub async fn recover_linked(
        &self,
        name: &str,
        supervisor: ractor::ActorCell,
    ) -> Result<(AgentRef, RecoveryReport), AgentError> {
        self.recover_under(name, Some(supervisor)).await
    }

    /// Whether the registry has `name` as a running agent (so it is recovered, not spawned).
    pub fn is_registered(&self, name: &str) -> Result<bool, AgentError> {
        Ok(self.registered_state(name)? == Some(AgentState::Running))
    }

    /// What the registry says of `name`: running (to be recovered), stopped on purpose, or
    /// nothing (never spawned, or the system does not journal).
    pub fn registered_state(&self, name: &str) -> Result<Option<AgentState>, AgentError> {
        let Some(journal) = &self.shared.journal else {
            return Ok(None);
        };
        let id = agent_id(name)?;
        Ok(journal
            .vault
            .agent(&id)
            .map_err(|e| AgentError::Vault(e.to_string()))?
            .map(|record| record.state))
    }

    async fn spawn_under(
        &self,
        spec: AgentSpec,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<AgentRef, AgentError> {
        let id = agent_id(&spec.name)?;
        if self.shared.is_running(&spec.name) {
            return Err(AgentError::AlreadyExists(spec.name));
        }
        let start_error = |reason: String| AgentError::Start {
            agent: spec.name.clone(),
            reason,
        };
        if let Some(journal) = &self.shared.journal {
            let vault_error = |e: arbor_vault::Error| AgentError::Vault(e.to_string());
            if journal.vault.agent(&id).map_err(vault_error)?.is_some()
                || journal
                    .vault
                    .latest_meta(&id)
                    .map_err(vault_error)?
                    .is_some()
            {
                return Err(AgentError::AlreadyExists(spec.name));
            }
        }
        let mut behaviour = self
            .shared
            .instantiate(&spec.behaviour, &spec.limits, &spec.capabilities)
            .map_err(start_error)?;
        behaviour
            .init(&spec.config)
            .map_err(|e| start_error(format!("init: {e}")))?;
        if let Some(journal) = &self.shared.journal {
            // The first checkpoint, then the registry record: a crash between them leaves a
            // checkpoint without a record, which nothing recovers.
            let state = behaviour
                .snapshot()
                .map_err(|e| start_error(format!("snapshot: {e}")))?;
            let lsn = journal.wal.last_lsn();
            super::actor::store_checkpoint(journal, &id, &spec.behaviour, 0, &state, lsn).await?;
            journal
                .vault
                .put_agent(&spec.record(id, AgentState::Running))
                .map_err(|e| AgentError::Vault(e.to_string()))?;
            // sled keeps writes in memory until it flushes: without this a crash soon after the
            // spawn would forget the agent while its inputs sit in the WAL.
            journal
                .vault
                .sync()
                .map_err(|e| AgentError::Vault(e.to_string()))?;
        }
        self.start(spec, behaviour, 0, supervisor).await
    }

    /// Starts the agent `name` from the vault: the registry says what runs it; its state is the
    /// newest valid checkpoint plus the replay of its journal records after it. Use it after a
    /// restart, or after the agent crashed.
    pub async fn recover(&self, name: &str) -> Result<(AgentRef, RecoveryReport), AgentError> {
        self.recover_under(name, None).await
    }

    async fn recover_under(
        &self,
        name: &str,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<(AgentRef, RecoveryReport), AgentError> {
        let id = agent_id(name)?;
        if self.shared.is_running(name) {
            return Err(AgentError::AlreadyExists(name.into()));
        }
        let journal = self
            .shared
            .journal
            .as_ref()
            .ok_or_else(|| AgentError::Recovery {
                agent: name.into(),
                reason: "the system does not journal".into(),
            })?;
        let record = journal
            .vault
            .agent(&id)
            .map_err(|e| AgentError::Vault(e.to_string()))?
            .ok_or_else(|| AgentError::UnknownAgent(name.into()))?;
        let mut spec = AgentSpec::from_record(&record);
        journal.pin_from_vault(&id)?;
        let (behaviour, report) = recovery::recover(&self.shared, journal, &spec)?;
        spec.behaviour = report.behaviour.clone();
        let current = spec.record(id, AgentState::Running);
        if current != record {
            journal
                .vault
                .put_agent(&current)
                .map_err(|e| AgentError::Vault(e.to_string()))?;
        }
        let agent = self.start(spec, behaviour, report.seq, supervisor).await?;
        Ok((agent, report))
    }

    /// Sets `name`'s registry state (and the reason shown to operators) and syncs the vault:
    /// e.g. [`AgentState::Quarantined`] after its recovery failed, [`AgentState::Terminated`]
    /// after a temporary agent exited. Does nothing without a journal or without a record.
    pub fn mark_registered(
        &self,
        name: &str,
        state: AgentState,
        reason: Option<String>,
    ) -> Result<(), AgentError> {
        let Some(journal) = &self.shared.journal else {
            return Ok(());
        };
        let id = agent_id(name)?;
        let vault_error = |e: arbor_vault::Error| AgentError::Vault(e.to_string());
        let Some(mut record) = journal.vault.agent(&id).map_err(vault_error)? else {
            return Ok(());
        };
        record.state = state;
        record.reason = reason;
        journal.vault.put_agent(&record).map_err(vault_error)?;
        journal.vault.sync().map_err(vault_error)
    }

    /// Rebuilds the state of `name`, which is registered but not running (e.g. quarantined
    /// because its newest checkpoint cannot be restored), without starting it: `from` (an
    /// older checkpoint, or exported state) is restored into a fresh instance of the behaviour
    /// that wrote it, the inputs journaled after it are replayed or dropped as `after` says,
    /// and the result is stored as the agent's newest checkpoint with a rebase record, so the
    /// next [`recover`](Self::recover) starts from it. The registry then says running. If any
    /// step before the checkpoint fails nothing changes.
    pub async fn rebuild_registered(
        &self,
        name: &str,
        from: RestoreFrom,
        after: AfterRestore,
    ) -> Result<RebuildReport, AgentError> {
        let started = std::time::Instant::now();
        let id = agent_id(name)?;
        if self.shared.is_running(name) {
            return Err(AgentError::Running(name.into()));
        }
        let refused = |reason: String| AgentError::Recovery {
            agent: name.into(),
            reason,
        };
        let vault_error = |e: arbor_vault::Error| AgentError::Vault(e.to_string());
        let journal = self
            .shared
            .journal
            .as_ref()
            .ok_or_else(|| refused("the system does not journal".into()))?;
        let record = journal
            .vault
            .agent(&id)
            .map_err(vault_error)?
            .ok_or_else(|| AgentError::UnknownAgent(name.into()))?;
        let mut spec = AgentSpec::from_record(&record);
        let to = match &from {
            RestoreFrom::Checkpoint(lsn) => {
                let meta = journal
                    .vault
                    .checkpoint_meta(&id, *lsn)
                    .map_err(vault_error)?
                    .ok_or_else(|| refused(format!("no checkpoint at {lsn}")))?;
                self.shared.behaviour_for(&meta.module, &spec.behaviour)
            }
            RestoreFrom::State { .. } => spec.behaviour.clone(),
        };
        let mut behaviour = self
            .shared
            .instantiate(&to, &spec.limits, &spec.capabilities)
            .map_err(&refused)?;
        let replayed = recovery::rebuild(journal, &id, &from, after, &to, behaviour.as_mut())
            .map_err(&refused)?;
        let state = behaviour
            .snapshot()
            .map_err(|e| refused(format!("{to} cannot snapshot the rebuilt state: {e}")))?;
        let seq = recovery::last_seq(journal, &id)?;
        journal.pin_from_vault(&id)?;
        let lsn = recovery::commit_rebase(journal, &id, &to, seq, &state)
            .await
            .map_err(|failed| match failed {
                recovery::RebaseFailed::Checkpoint(error) => error,
                recovery::RebaseFailed::Afterwards(what, error) => {
                    refused(format!("{what} after the checkpoint: {error}"))
                }
            })?;
        let from_behaviour = std::mem::replace(&mut spec.behaviour, to.clone());
        journal
            .vault
            .put_agent(&spec.record(id, AgentState::Running))
            .and_then(|()| journal.vault.sync())
            .map_err(vault_error)?;
        Ok(RebuildReport {
            pause: started.elapsed(),
            from: from_behaviour,
            to,
            replayed,
            checkpoint_lsn: lsn,
            seq,
        })
    }

    /// Forgets `name`, which must not be running: its registry record and every checkpoint go
    /// (its journal records are released with the WAL's segments), so the name is free again.
    /// Returns whether there was anything to remove.
    pub fn remove_registered(&self, name: &str) -> Result<bool, AgentError> {
        let id = agent_id(name)?;
        if self.shared.is_running(name) {
            return Err(AgentError::Running(name.into()));
        }
        let Some(journal) = &self.shared.journal else {
            return Ok(false);
        };
        let vault_error = |e: arbor_vault::Error| AgentError::Vault(e.to_string());
        let mut removed = journal.vault.remove_agent(&id).map_err(vault_error)?;
        for meta in journal.vault.list_checkpoints(&id).map_err(vault_error)? {
            removed |= journal
                .vault
                .delete_checkpoint(&id, meta.lsn)
                .map_err(vault_error)?;
        }
        journal.vault.sync().map_err(vault_error)?;
        journal.unpin(name);
        Ok(removed)
    }

    /// Recovers every agent the registry says is running; returns them with their reports.
    pub async fn recover_all(&self) -> Result<Vec<(AgentRef, RecoveryReport)>, AgentError> {
        let Some(journal) = &self.shared.journal else {
            return Ok(Vec::new());
        };
        let records = journal
            .vault
            .agents()
            .map_err(|e| AgentError::Vault(e.to_string()))?;
        let mut recovered = Vec::new();
        for record in records.iter().filter(|r| r.state == AgentState::Running) {
            if !self.shared.is_running(record.id.as_str()) {
                recovered.push(self.recover(record.id.as_str()).await?);
            }
        }
        Ok(recovered)
    }

    /// Hot-swaps `agent`'s behaviour to `to`: the new instance is made first (so the agent is not
    /// paused for compilation or instantiation), then the agent pauses its mailbox, snapshots
    /// with the old behaviour, restores into the new one, journals the swap and resumes. The
    /// report gives the pause. If the new behaviour refuses the state the old one keeps running.
    /// Messages sent during the swap wait in the mailbox, in order.
    pub async fn swap_module(
        &self,
        agent: &AgentRef,
        to: BehaviourId,
    ) -> Result<SwapReport, AgentError> {
        let behaviour = self.instance_for_swap(agent, &to)?;
        agent.swap(behaviour, to, false, None).await
    }

    /// [`swap_module`](Self::swap_module) for a promotion: the state before the swap is also
    /// stored as a checkpoint (off the agent, after the swap is durable; its LSN is in the
    /// report) and the WAL and the agent's checkpoints are held from it, so that
    /// [`rollback_module`](Self::rollback_module) can rebuild the old behaviour's state, until
    /// [`release_hold`](Self::release_hold).
    pub async fn promote_module(
        &self,
        agent: &AgentRef,
        to: BehaviourId,
    ) -> Result<SwapReport, AgentError> {
        let behaviour = self.instance_for_swap(agent, &to)?;
        agent.swap(behaviour, to, true, None).await
    }

    /// [`promote_module`](Self::promote_module) that first judges the migration, inside the
    /// swap's pause: `check` gets the state before and `to`'s snapshot after restoring it, and
    /// an `Err` refuses the swap ([`AgentError::SwapRefused`]) — the old behaviour keeps
    /// running. The evolution arbiter checks here that no data production's state holds is
    /// lost. The pause grows by one snapshot of the new behaviour and the check.
    pub async fn promote_module_checked(
        &self,
        agent: &AgentRef,
        to: BehaviourId,
        check: StateCheck,
    ) -> Result<SwapReport, AgentError> {
        let behaviour = self.instance_for_swap(agent, &to)?;
        agent.swap(behaviour, to, true, Some(check)).await
    }

    /// Undoes a promotion: restores `checkpoint_lsn` (the promotion's) into a fresh instance of
    /// `to`, replays every input `agent` applied since through it with the journaled answers,
    /// stores the result as a checkpoint, journals the rebase and runs `to`. No acknowledged
    /// input is lost; inputs sent meanwhile wait in the mailbox. If any step before the
    /// checkpoint fails, the agent goes on as it was.
    pub async fn rollback_module(
        &self,
        agent: &AgentRef,
        to: BehaviourId,
        checkpoint_lsn: arbor_wal::Lsn,
    ) -> Result<RebuildReport, AgentError> {
        let behaviour = self.instance_for_swap(agent, &to)?;
        agent
            .rebuild(
                behaviour,
                to,
                RestoreFrom::Checkpoint(checkpoint_lsn),
                AfterRestore::Replay,
            )
            .await
    }

    /// Restores `agent` to an earlier state while it runs: its mailbox pauses, `from` (one of
    /// its stored checkpoints, or state read from an exported checkpoint file) is restored
    /// into a fresh instance of its current behaviour, the inputs it journaled since are
    /// replayed or dropped as `after` says, the result is stored as a checkpoint, a rebase is
    /// journaled, and the agent resumes with the inputs that waited. If any step before the
    /// checkpoint fails (the checkpoint is gone, the module refuses the state, the WAL no
    /// longer holds the inputs to replay) the agent goes on as it was.
    ///
    /// ```
    /// use arbor_agent::{AfterRestore, AgentSpec, AgentSystem, RestoreFrom};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let system = AgentSystem::builder().journal(dir.path()).build()?;
    /// let counter = system.add_module("counter", arbor_modules::COUNTER)?;
    /// let agent = system.spawn(AgentSpec::wasm("c", counter)).await?;
    /// #[derive(serde::Serialize)]
    /// enum Msg { Inc { by: i64 } }
    /// agent.call_msg::<_, serde::de::IgnoredAny>(&Msg::Inc { by: 5 }).await?;
    /// let saved = agent.checkpoint().await?;
    /// agent.call_msg::<_, serde::de::IgnoredAny>(&Msg::Inc { by: 1 }).await?;
    ///
    /// let report = system
    ///     .restore_checkpoint(&agent, RestoreFrom::Checkpoint(saved), AfterRestore::Discard)
    ///     .await?;
    /// assert_eq!(report.replayed, 0); // the `Inc { by: 1 }` is dropped
    /// # system.shutdown().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn restore_checkpoint(
        &self,
        agent: &AgentRef,
        from: RestoreFrom,
        after: AfterRestore,
    ) -> Result<RebuildReport, AgentError> {
        let (to, _) = agent.running().await?;
        let behaviour = self.instance_for_swap(agent, &to)?;
        agent.rebuild(behaviour, to, from, after).await
    }

    /// Sets the gauges only a reading can give: mailbox depths, the compiled Wasm modules held,
    /// the age of the oldest unsaved input and the WAL's segments (see `arbor-metrics`). A [`Runtime`] calls this
    /// every second; a host that builds an `AgentSystem` itself calls it as often as it wants
    /// fresh gauges.
    ///
    /// [`Runtime`]: https://docs.rs/arbor/latest/arbor/struct.Runtime.html
    pub fn sample_metrics(&self) {
        let (mut total, mut deepest) = (0usize, 0usize);
        for agent in self.shared.directory.read().values() {
            let queued = agent.queued();
            total += queued;
            deepest = deepest.max(queued);
        }
        metrics::gauge!(arbor_metrics::MAILBOX_DEPTH).set(total as f64);
        metrics::gauge!(arbor_metrics::MAILBOX_DEPTH_MAX).set(deepest as f64);
        metrics::gauge!(arbor_metrics::WASM_MODULES_LOADED)
            .set(self.shared.wasm.cached_modules() as f64);
        if let Some(journal) = &self.shared.journal {
            let age = journal.oldest_unsaved().unwrap_or_default();
            metrics::gauge!(arbor_metrics::CHECKPOINT_AGE_SECONDS).set(age.as_secs_f64());
            metrics::gauge!(arbor_metrics::WAL_SEGMENTS)
                .set(journal.wal.segment_first_lsns().len() as f64);
        }
    }

    /// Ends the hold a promotion put on `agent`'s WAL and checkpoints (its watch is over).
    pub fn release_hold(&self, agent: &str) {
        if let Some(journal) = &self.shared.journal {
            journal.unhold(agent);
        }
    }

    /// A fresh, uninitialised instance of `behaviour` with these limits and grants: a module
    /// added to this system (or stored in its vault) or a registered native behaviour.
    pub fn instantiate(
        &self,
        behaviour: &BehaviourId,
        limits: &AgentLimits,
        capabilities: &Capabilities,
    ) -> Result<Box<dyn Behaviour>, AgentError> {
        self.shared
            .instantiate(behaviour, limits, capabilities)
            .map_err(|reason| AgentError::Start {
                agent: "*".into(),
                reason,
            })
    }

    fn instance_for_swap(
        &self,
        agent: &AgentRef,
        to: &BehaviourId,
    ) -> Result<Box<dyn Behaviour>, AgentError> {
        let spec = agent.spec();
        self.shared
            .instantiate(to, &spec.limits, &spec.capabilities)
            .map_err(|reason| AgentError::SwapRefused {
                agent: spec.name.clone(),
                reason,
            })
    }

    /// Stops every running agent after a final checkpoint (they stay registered as running, so
    /// [`recover_all`](Self::recover_all) brings them back), then syncs the WAL and the vault.
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        self.shared
            .shut_down
            .store(true, std::sync::atomic::Ordering::Release);
        let agents: Vec<AgentRef> = self
            .shared
            .directory
            .read()
            .values()
            .filter(|agent| !agent.has_exited())
            .cloned()
            .collect();
        let mut first_error = None;
        for agent in agents {
            if let Err(error) = agent.shut_down(false).await {
                first_error.get_or_insert(error);
            }
        }
        if let Some(journal) = &self.shared.journal {
            if let Err(e) = journal.wal.sync() {
                first_error.get_or_insert(AgentError::Journal(e.to_string()));
            }
            if let Err(e) = journal.vault.sync() {
                first_error.get_or_insert(AgentError::Vault(e.to_string()));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn start(
        &self,
        spec: AgentSpec,
        behaviour: Box<dyn Behaviour>,
        seq: u64,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<AgentRef, AgentError> {
        let name = spec.name.clone();
        let spec = Arc::new(spec);
        let mailbox = Arc::new(Mailbox::new(self.shared.mailbox));
        let start = Start {
            shared: Arc::clone(&self.shared),
            spec: Arc::clone(&spec),
            behaviour,
            seq,
            mailbox: Arc::clone(&mailbox),
        };
        let spawned = match supervisor {
            None => Actor::spawn(None, AgentActor, start).await,
            Some(supervisor) => Actor::spawn_linked(None, AgentActor, start, supervisor).await,
        };
        let (actor, _) = spawned.map_err(|e| AgentError::Start {
            agent: name.clone(),
            reason: e.to_string(),
        })?;
        let agent = AgentRef::new(actor, spec, mailbox);
        let mut directory = self.shared.directory.write();
        if directory
            .get(&name)
            .is_some_and(|other| !other.has_exited())
        {
            drop(directory);
            agent.kill();
            return Err(AgentError::AlreadyExists(name));
        }
        directory.insert(name, agent.clone());
        Ok(agent)
    }

    /// The tools agents may be granted, by name.
    pub fn tool_names(&self) -> BTreeSet<String> {
        self.shared.tools.names().map(str::to_string).collect()
    }
}

impl std::fmt::Debug for AgentSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSystem")
            .field("journaled", &self.shared.journal.is_some())
            .field("running", &self.running())
            .finish()
    }
}

fn agent_id(name: &str) -> Result<AgentId, AgentError> {
    AgentId::new(name).map_err(|e| AgentError::Start {
        agent: name.into(),
        reason: e.to_string(),
    })
}
