//! [`AgentSystem`]: the facade a host holds — spawn, recover, look up, swap, promote, roll
//! back, shut down. It delegates each concern to its own part of the [`Context`]; the registry
//! operations are in `registry.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use arbor_vault::{AgentState, ModuleHash, Vault};
use arbor_wal::{Lsn, Wal};
use ractor::Actor;

use super::actor::{AgentActor, Start, store_first_checkpoint};
use super::agent_ref::{AgentRef, Mailbox};
use super::context::Context;
use super::error::{AgentError, StartError, SwapError, SystemError};
use super::journal::JournalStore;
use super::msg::{AfterRestore, RebuildReport, RestoreFrom, StateCheck, SwapReport};
use super::recovery::{self, RecoveryReport};
use super::spec::{AgentSpec, agent_id};
use super::steps::{Steps, steps};
use crate::behaviour::Behaviour;
use crate::envelope::BehaviourId;
use crate::tools::Tools;
use crate::wasm::{AgentLimits, Capabilities, WasmHost};

/// The agents of one host and what they share: one Wasm engine, one journal (WAL + vault, or
/// another [`JournalStore`]), the host's tools and native behaviours.
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
    pub(super) context: Arc<Context>,
}

impl AgentSystem {
    pub(super) fn from_context(context: Arc<Context>) -> AgentSystem {
        AgentSystem { context }
    }

    /// Whether [`shutdown`](Self::shutdown) has been called (agents may still be recovered
    /// or spawned after it, but nothing waits for the stopped ones to come back by themselves).
    pub fn is_shut_down(&self) -> bool {
        self.context.is_shut_down()
    }

    /// The shared Wasm host.
    pub fn wasm_host(&self) -> &WasmHost {
        &self.context.services.wasm
    }

    /// The journal's store (the seam every journal operation goes through).
    pub fn journal_store(&self) -> &dyn JournalStore {
        self.context.journal.store()
    }

    /// The journal's WAL, if the system journals into a local data directory.
    pub fn wal(&self) -> Option<&Wal> {
        self.context.journal.wal()
    }

    /// The vault (registry, modules, checkpoints, lineage), if the system has one.
    pub fn vault(&self) -> Option<&Vault> {
        self.context.journal.vault()
    }

    /// The steps of `agent`'s journal from position `from` on (see [`steps()`](super::steps())):
    /// what recovery, rollbacks and the evolution arbiter's gate read.
    pub fn steps(&self, agent: &str, from: Lsn) -> Result<Steps, AgentError> {
        let records = self.context.journal.store().read(agent, from)?;
        Ok(steps(records, agent))
    }

    /// Checks and compiles a Wasm module (ABI v1) and stores it in the vault (when journaling;
    /// without a journal the system keeps the bytes in memory); returns its content hash, which
    /// names it in [`AgentSpec::wasm`] and [`swap_module`](AgentSystem::swap_module).
    ///
    /// The compiled module stays in the Wasm host while anything uses it and a while after (see
    /// [`EngineConfig::idle_modules`](crate::wasm::EngineConfig::idle_modules)); an agent
    /// started on it later compiles it again from the stored bytes if the host has released it.
    pub fn add_module(&self, name: &str, bytes: &[u8]) -> Result<ModuleHash, SystemError> {
        self.context.services.add_module(name, bytes)
    }

    /// Where agents' sends to names that do not run in this system go (a cluster node's other
    /// nodes); without it such a send is refused as an unknown agent. Set once; `false` if it
    /// was set already.
    pub fn send_elsewhere(&self, elsewhere: std::sync::Arc<dyn super::Elsewhere>) -> bool {
        self.context.directory.set_elsewhere(elsewhere)
    }

    /// The running agent named `name`.
    pub fn lookup(&self, name: &str) -> Option<AgentRef> {
        self.context.directory.lookup(name)
    }

    /// The names of the running agents, sorted.
    pub fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .context
            .directory
            .live()
            .iter()
            .map(|agent| agent.name().to_string())
            .collect();
        names.sort();
        names
    }

    /// The tools agents may be granted, by name.
    pub fn tool_names(&self) -> BTreeSet<String> {
        self.context
            .services
            .tools
            .names()
            .map(str::to_string)
            .collect()
    }

    /// The host's tools (the shadows of an evaluation run the pure ones: [`Tools`]).
    pub fn tools(&self) -> Tools {
        self.context.services.tools.clone()
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

    async fn spawn_under(
        &self,
        spec: AgentSpec,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<AgentRef, AgentError> {
        let id = agent_id(&spec.name)?;
        if self.context.directory.is_running(&spec.name) {
            return Err(AgentError::AlreadyExists(spec.name));
        }
        let journal = &self.context.journal;
        let known = match journal.vault() {
            Some(vault) => vault.agent(&id)?.is_some(),
            None => false,
        };
        if known || journal.store().latest_meta(&id)?.is_some() {
            return Err(AgentError::AlreadyExists(spec.name));
        }
        let start_error = |source: StartError| AgentError::Start {
            agent: spec.name.clone(),
            source,
        };
        let mut behaviour = self
            .context
            .services
            .instantiate(&spec.behaviour, &spec.limits, &spec.capabilities)
            .map_err(start_error)?;
        behaviour
            .init(&spec.config)
            .map_err(|e| start_error(StartError::Init(e)))?;
        if journal.is_durable() {
            // The first checkpoint, then the registry record: a crash between them leaves a
            // checkpoint without a record, which nothing recovers.
            let state = behaviour
                .snapshot()
                .map_err(|e| start_error(StartError::Snapshot(e)))?;
            store_first_checkpoint(journal, &id, &spec.behaviour, &state).await?;
            if let Some(vault) = journal.vault() {
                vault.put_agent(&spec.record(id.clone(), AgentState::Running))?;
                // sled keeps writes in memory until it flushes: without this a crash soon
                // after the spawn would forget the agent while its inputs sit in the WAL.
                vault.sync()?;
            }
        }
        self.start(spec, id, behaviour, 0, supervisor).await
    }

    /// Starts the agent `name` from the vault: the registry says what runs it; its state is the
    /// newest valid checkpoint plus the replay of its journal records after it. Use it after a
    /// restart, or after the agent crashed.
    pub async fn recover(&self, name: &str) -> Result<(AgentRef, RecoveryReport), AgentError> {
        self.recover_under(name, None).await
    }

    /// [`recover`](Self::recover), the agent's actor linked to `supervisor`.
    pub async fn recover_linked(
        &self,
        name: &str,
        supervisor: ractor::ActorCell,
    ) -> Result<(AgentRef, RecoveryReport), AgentError> {
        self.recover_under(name, Some(supervisor)).await
    }

    async fn recover_under(
        &self,
        name: &str,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<(AgentRef, RecoveryReport), AgentError> {
        let id = agent_id(name)?;
        if self.context.directory.is_running(name) {
            return Err(AgentError::AlreadyExists(name.into()));
        }
        let journal = &self.context.journal;
        let failed = |source| AgentError::Recovery {
            agent: name.into(),
            source,
        };
        let Some(vault) = journal.vault().filter(|_| journal.is_durable()) else {
            return Err(failed(super::error::RecoveryError::NoJournal));
        };
        let record = vault
            .agent(&id)?
            .ok_or_else(|| AgentError::UnknownAgent(name.into()))?;
        let mut spec = AgentSpec::from_record(&record);
        journal.pin_from_store(&id)?;
        let (behaviour, report) =
            recovery::recover(&self.context.services, journal, &spec, &id).map_err(failed)?;
        spec.behaviour = report.behaviour.clone();
        let current = spec.record(id.clone(), AgentState::Running);
        if current != record {
            vault.put_agent(&current)?;
        }
        let agent = self
            .start(spec, id, behaviour, report.seq, supervisor)
            .await?;
        Ok((agent, report))
    }

    /// Starts `spec.name` from the journal store alone, with the spec the caller gives: for a
    /// store without a registry (a cluster's, whose placement carries each agent's spec), where
    /// [`recover`](Self::recover) has no record to read. The state is the newest valid
    /// checkpoint plus the replay of the records after it, as for `recover`; the behaviour is
    /// the checkpoint's (and any journaled swap's after it), `spec.behaviour` where the
    /// checkpoint names a native behaviour.
    pub async fn recover_as(
        &self,
        spec: AgentSpec,
    ) -> Result<(AgentRef, RecoveryReport), AgentError> {
        let name = spec.name.clone();
        let id = agent_id(&name)?;
        if self.context.directory.is_running(&name) {
            return Err(AgentError::AlreadyExists(name));
        }
        let journal = &self.context.journal;
        let failed = |source| AgentError::Recovery {
            agent: name.clone(),
            source,
        };
        if !journal.is_durable() {
            return Err(failed(super::error::RecoveryError::NoJournal));
        }
        let mut spec = spec;
        journal.pin_from_store(&id)?;
        let (behaviour, report) =
            recovery::recover(&self.context.services, journal, &spec, &id).map_err(failed)?;
        spec.behaviour = report.behaviour.clone();
        if let Some(vault) = journal.vault() {
            vault.put_agent(&spec.record(id.clone(), AgentState::Running))?;
        }
        let agent = self.start(spec, id, behaviour, report.seq, None).await?;
        Ok((agent, report))
    }

    /// Recovers every agent the registry says is running; returns them with their reports.
    pub async fn recover_all(&self) -> Result<Vec<(AgentRef, RecoveryReport)>, AgentError> {
        let Some(vault) = self.context.journal.vault() else {
            return Ok(Vec::new());
        };
        let mut recovered = Vec::new();
        for record in vault.agents()? {
            if record.state == AgentState::Running
                && !self.context.directory.is_running(record.id.as_str())
            {
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
    /// report) and the journal and the agent's checkpoints are held from it, so that
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
        checkpoint_lsn: Lsn,
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
    /// checkpoint fails (the checkpoint is gone, the module refuses the state, the journal no
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

    /// Ends the hold a promotion put on `agent`'s journal and checkpoints (its watch is over).
    pub fn release_hold(&self, agent: &str) {
        self.context.journal.unhold(agent);
    }

    /// Sets the gauges only a reading can give: mailbox depths, the compiled Wasm modules held,
    /// the age of the oldest unsaved input and the WAL's segments (see `arbor-metrics`). A
    /// [`Runtime`] calls this every second; a host that builds an `AgentSystem` itself calls it
    /// as often as it wants fresh gauges.
    ///
    /// [`Runtime`]: https://docs.rs/arbor/latest/arbor/struct.Runtime.html
    pub fn sample_metrics(&self) {
        let (mut total, mut deepest) = (0usize, 0usize);
        for agent in self.context.directory.live() {
            let queued = agent.queued();
            total += queued;
            deepest = deepest.max(queued);
        }
        metrics::gauge!(arbor_metrics::MAILBOX_DEPTH).set(total as f64);
        metrics::gauge!(arbor_metrics::MAILBOX_DEPTH_MAX).set(deepest as f64);
        metrics::gauge!(arbor_metrics::WASM_MODULES_LOADED)
            .set(self.context.services.wasm.cached_modules() as f64);
        let journal = &self.context.journal;
        if journal.is_durable() {
            let age = journal.oldest_unsaved().unwrap_or_default();
            metrics::gauge!(arbor_metrics::CHECKPOINT_AGE_SECONDS).set(age.as_secs_f64());
            metrics::gauge!(arbor_metrics::WAL_SEGMENTS)
                .set(journal.store().release_points().len() as f64);
        }
    }

    /// A fresh, uninitialised instance of `behaviour` with these limits and grants: a module
    /// added to this system (or stored in its vault) or a registered native behaviour.
    pub fn instantiate(
        &self,
        behaviour: &BehaviourId,
        limits: &AgentLimits,
        capabilities: &Capabilities,
    ) -> Result<Box<dyn Behaviour>, StartError> {
        self.context
            .services
            .instantiate(behaviour, limits, capabilities)
    }

    fn instance_for_swap(
        &self,
        agent: &AgentRef,
        to: &BehaviourId,
    ) -> Result<Box<dyn Behaviour>, AgentError> {
        let spec = agent.spec();
        self.context
            .services
            .instantiate(to, &spec.limits, &spec.capabilities)
            .map_err(|source| AgentError::SwapRefused {
                agent: spec.name.clone(),
                reason: SwapError::Instantiate {
                    behaviour: to.clone(),
                    source,
                },
            })
    }

    /// Stops every running agent after a final checkpoint (they stay registered as running, so
    /// [`recover_all`](Self::recover_all) brings them back), then syncs the journal and the
    /// vault.
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        self.context.shut_down();
        let mut first_error = None;
        for agent in self.context.directory.live() {
            if let Err(error) = agent.shut_down(false).await {
                first_error.get_or_insert(error);
            }
        }
        // The async syncs: a store whose writes run on this runtime could not finish them
        // while a blocking sync held a current-thread runtime's only thread.
        let journal = &self.context.journal;
        if let Err(error) = journal.store().sync().await {
            first_error.get_or_insert(SystemError::Journal(error).into());
        }
        if let Err(error) = journal.store().sync_checkpoints_async().await {
            first_error.get_or_insert(SystemError::Journal(error).into());
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn start(
        &self,
        spec: AgentSpec,
        id: arbor_vault::AgentId,
        behaviour: Box<dyn Behaviour>,
        seq: u64,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<AgentRef, AgentError> {
        let name = spec.name.clone();
        let spec = Arc::new(spec);
        let mailbox = Arc::new(Mailbox::new(self.context.mailbox));
        let start = Start {
            context: Arc::clone(&self.context),
            spec: Arc::clone(&spec),
            id,
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
            source: StartError::Actor(e.to_string()),
        })?;
        let agent = AgentRef::new(actor, spec, mailbox);
        self.context.directory.insert(agent).map_err(|refused| {
            refused.kill();
            AgentError::AlreadyExists(name)
        })
    }
}

impl std::fmt::Debug for AgentSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSystem")
            .field("journaled", &self.context.journal.is_durable())
            .field("running", &self.running())
            .finish()
    }
}
