//! [`Runtime`]: arbor embedded in a host — one data directory, one WAL and vault, one
//! supervision tree of agents.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arbor_agent::envelope::decode_untrusted;
use arbor_agent::tools::Tools;
use arbor_agent::wasm::{AgentLimits, Capabilities, EngineConfig};
use arbor_agent::{
    AfterRestore, AgentError, AgentRef, AgentSpec, AgentSystem, AgentSystemBuilder, Behaviour,
    BehaviourId, CheckpointPolicy, RebuildReport, RestoreFrom,
};
use arbor_shadow::{Arbiter, ArbiterConfig};
use arbor_supervisor::{
    Backoff, ChildKind, ChildSpec, ChildStarted, ExitReason, Intensity, Restart, Shutdown,
    Strategy, Supervisor, SupervisorRef, SupervisorSpec, SupervisorTree,
};
use arbor_vault::{AgentId, AgentState, ModuleHash};
use arbor_wal::Durability;
use parking_lot::Mutex;
use ractor::ActorCell;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::admin::{AdminConfig, Operator};

/// How one supervisor of the runtime's tree behaves, and how it treats its agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorOptions {
    /// Which children restart together.
    pub strategy: Strategy,
    /// Restarts tolerated before the supervisor gives up and escalates.
    pub intensity: Intensity,
    /// A delay before restarts, if any.
    pub backoff: Option<Backoff>,
    /// The most children (agents and supervisors) it takes.
    pub max_children: Option<usize>,
    /// The restart type of its agents.
    pub agent_restart: Restart,
    /// How its agents are stopped (a graceful stop takes a final checkpoint).
    pub agent_shutdown: Shutdown,
}

impl Default for SupervisorOptions {
    /// `one_for_one`, at most 10 restarts in 10 s (a pool of many agents; OTP's 1 in 5 s suits a
    /// supervisor of a few workers), no backoff, no limit; agents are `transient` (restarted
    /// after a crash or a kill, not after they were stopped on purpose) and stopped with a 5 s
    /// timeout.
    fn default() -> Self {
        SupervisorOptions {
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 10,
                period: Duration::from_secs(10),
            },
            backoff: None,
            max_children: None,
            agent_restart: Restart::Transient,
            agent_shutdown: Shutdown::Timeout(Duration::from_secs(5)),
        }
    }
}

/// What the runtime does with an agent whose state cannot be recovered — its checkpoint's
/// restore traps or runs past its deadline, its journal cannot be replayed, its module is
/// refused — when the host boots or when its supervisor restarts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RecoveryFailure {
    /// The host goes on without it: it is marked quarantined in the registry with the reason
    /// (shown by `arborctl agents`, counted by `arbor_agents{state="quarantined"}` and
    /// `arbor_agent_quarantines_total`, alerted on), its supervisor keeps it as terminated
    /// without counting a restart, and calls get [`Error::Quarantined`]. An operator restores
    /// it from an older checkpoint ([`Runtime::restore_agent`], `arborctl checkpoint restore`)
    /// or removes it ([`Runtime::remove_agent`], `arborctl agent remove`). Its journal is kept
    /// meanwhile: the WAL is not trimmed past its last checkpoint.
    #[default]
    Quarantine,
    /// The start fails: its supervisor counts a failed restart and retries, and gives up past
    /// its intensity — at boot, [`RuntimeBuilder::build`] fails naming the agent. One poisoned
    /// agent can then stop the whole host; choose it only where that is what you want.
    Escalate,
}

/// An agent to start: what runs it, and its name, grants, limits, init config and supervisor.
#[derive(Debug, Clone)]
pub struct Spawn {
    name: String,
    source: Source,
    capabilities: Capabilities,
    limits: Option<AgentLimits>,
    config: Vec<u8>,
    under: Vec<String>,
}

#[derive(Debug, Clone)]
enum Source {
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

fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}

/// Builds a [`Runtime`].
pub struct RuntimeBuilder {
    /// What the agent system takes (journal, engine, tools, natives, mailboxes) is set on its
    /// own builder; the runtime adds the tree, the endpoints and the arbiter.
    system: AgentSystemBuilder,
    data_dir: Option<PathBuf>,
    limits: AgentLimits,
    call_timeout: Duration,
    root: SupervisorOptions,
    supervisors: Vec<(Vec<String>, SupervisorOptions)>,
    metrics: Option<SocketAddr>,
    admin: Option<AdminConfig>,
    evolution: ArbiterConfig,
    recovery_failure: RecoveryFailure,
}

impl RuntimeBuilder {
    /// What happens to an agent whose state cannot be recovered (default
    /// [`RecoveryFailure::Quarantine`]: the host boots without it).
    pub fn recovery_failure(mut self, policy: RecoveryFailure) -> Self {
        self.recovery_failure = policy;
        self
    }

    /// Serves Prometheus metrics (the `arbor_*` catalog of `arbor-metrics`) at `/metrics` on
    /// `addr` (port 0 picks a free one: see [`Runtime::metrics_addr`]). The recorder is
    /// process-wide: later runtimes of the process share it; a host that installed its own
    /// `metrics` recorder leaves this unset and gets arbor's metrics in its recorder.
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }

    /// Adds an `agent` label to the per-agent metrics (messages in, handle time). Off by
    /// default: each agent then costs series in Prometheus, so enable it for tens of agents,
    /// not for thousands.
    pub fn agent_metric_labels(self, enabled: bool) -> Self {
        arbor_metrics::set_agent_labels(enabled);
        self
    }

    /// Serves the admin API (what `arborctl` talks to) on a loopback address, requiring the
    /// token. See [`crate::admin`].
    pub fn admin(mut self, config: AdminConfig) -> Self {
        self.admin = Some(config);
        self
    }

    /// The evolution arbiter's configuration (approval mode, decision rule, shadow limits);
    /// default: [`ArbiterConfig::default`] (a person approves promotions).
    pub fn evolution(mut self, config: ArbiterConfig) -> Self {
        self.evolution = config;
        self
    }

    /// Keep the WAL and the vault in `dir` (created if missing). Without one the runtime is
    /// ephemeral: nothing is journaled, and a restarted agent starts from its init config.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.system = self.system.journal(&dir);
        self.data_dir = Some(dir);
        self
    }

    /// When a call is acknowledged (default: group commit, no added delay).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.system = self.system.durability(durability);
        self
    }

    /// The WAL's whole configuration (segment size, record limit, durability).
    pub fn wal(mut self, config: arbor_wal::Config) -> Self {
        self.system = self.system.wal(config);
        self
    }

    /// When agents checkpoint.
    pub fn checkpoints(mut self, policy: CheckpointPolicy) -> Self {
        self.system = self.system.checkpoints(policy);
        self
    }

    /// The Wasm engine's configuration (instance pool, memory caps).
    pub fn engine(mut self, config: EngineConfig) -> Self {
        self.system = self.system.engine(config);
        self
    }

    /// Limits for agents spawned without their own.
    pub fn limits(mut self, limits: AgentLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Each agent's mailbox holds at most `capacity` inputs (default
    /// [`DEFAULT_MAILBOX`](arbor_agent::DEFAULT_MAILBOX)).
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.system = self.system.mailbox(capacity);
        self
    }

    /// How long [`Runtime::call`] waits (default 5 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The root supervisor's options.
    pub fn root(mut self, options: SupervisorOptions) -> Self {
        self.root = options;
        self
    }

    /// Declares a supervisor at `path` (`"pool"` under the root, `"pools/fast"` under
    /// `"pools"`, which must be declared first). Declared supervisors start before the agents of
    /// their parent, in declaration order.
    pub fn supervisor(mut self, path: &str, options: SupervisorOptions) -> Self {
        self.supervisors.push((split_path(path), options));
        self
    }

    /// The tools agents may be granted.
    pub fn tools(mut self, tools: Tools) -> Self {
        self.system = self.system.tools(tools);
        self
    }

    /// Where agents' behaviours run while they handle inputs (default
    /// [`GuestCalls::Inline`](arbor_agent::GuestCalls::Inline)).
    pub fn guest_calls(mut self, guest_calls: arbor_agent::GuestCalls) -> Self {
        self.system = self.system.guest_calls(guest_calls);
        self
    }

    /// Registers a native behaviour under `name`.
    pub fn native(
        mut self,
        name: impl Into<String>,
        factory: impl Fn() -> Box<dyn Behaviour> + Send + Sync + 'static,
    ) -> Self {
        self.system = self.system.native(name, factory);
        self
    }

    /// Opens the WAL and the vault (recovering the WAL), starts the supervision tree and in it
    /// recovers every agent the registry says was running (checkpoint + WAL replay), each under
    /// its supervisor. Fails, naming the agent, if one cannot be recovered.
    pub async fn build(self) -> Result<Runtime, Error> {
        if let Some(admin) = &self.admin
            && !admin.addr.ip().is_loopback()
        {
            return Err(Error::Admin(format!(
                "the admin endpoint listens on loopback only, not on {}",
                admin.addr
            )));
        }
        let prometheus = match self.metrics {
            Some(_) => Some(crate::telemetry::prometheus()?),
            None => None,
        };
        self.root.intensity.check("root")?;
        for (path, options) in &self.supervisors {
            options.intensity.check(&path.join("/"))?;
        }
        for (path, _) in &self.supervisors {
            let Some((_, parent)) = path.split_last() else {
                return Err(Error::UnknownSupervisor(String::new()));
            };
            let declared = parent.is_empty() || self.supervisors.iter().any(|(p, _)| p == parent);
            if !declared {
                return Err(Error::UnknownSupervisor(parent.join("/")));
            }
        }
        let system = self.system.build()?;
        let arbiter = Arbiter::new(system.clone(), self.evolution)
            .map_err(|e| Error::Evolution(Arc::new(e)))?;
        let tree = Arc::new(Tree {
            system: system.clone(),
            root: self.root,
            supervisors: self.supervisors,
            ephemeral_agents: Mutex::new(BTreeMap::new()),
            recovery_failure: self.recovery_failure,
            quarantined: Mutex::new(BTreeMap::new()),
            shutting_down: AtomicBool::new(false),
        });
        let root =
            Supervisor::start(tree.spec(&[]).map_err(|reason| Error::Stopped { reason })?).await?;
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            system,
            arbiter,
            data_dir: self.data_dir.clone(),
            endpoints: Mutex::new(Endpoints::default()),
            stop,
            tree,
            root: root.clone(),
            limits: self.limits,
            call_timeout: self.call_timeout,
            stopped: Mutex::new(None),
            spawning: tokio::sync::Mutex::new(()),
        });
        // The root giving up (its restart intensity reached) stops the runtime.
        let watcher = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let exit = root.wait_exit().await;
            let Some(watcher) = Weak::upgrade(&watcher) else {
                return;
            };
            if !watcher.is_shut_down() {
                let reason = root_exited(exit);
                tracing::error!(reason, "runtime stopped");
                watcher.stopped.lock().get_or_insert(reason);
                if let Some(Err(error)) = watcher.system.wal().map(|wal| wal.sync()) {
                    tracing::error!(%error, "WAL sync after the root exited failed");
                }
            }
        });
        let runtime = Runtime { inner };
        crate::telemetry::sample_every_second(Arc::downgrade(&runtime.inner), prometheus.clone());
        if let (Some(addr), Some(handle)) = (self.metrics, prometheus) {
            let bound = crate::telemetry::serve(addr, handle, stopped(stopping.clone())).await?;
            tracing::info!(%bound, "metrics at /metrics");
            runtime.inner.endpoints.lock().metrics = Some(bound);
        }
        if let Some(admin) = self.admin {
            let operator = Operator::online(&runtime);
            let bound = crate::admin::serve(admin.addr, admin.token, operator, stopped(stopping))
                .await
                .map_err(|e| Error::Admin(format!("binding {}: {e}", admin.addr)))?;
            tracing::info!(%bound, "admin endpoint");
            runtime.inner.endpoints.lock().admin = Some(bound);
        }
        Ok(runtime)
    }
}

/// Resolves once the runtime stops (shut down or dropped).
async fn stopped(mut stopping: tokio::sync::watch::Receiver<bool>) {
    // An error means the runtime is gone, which is a stop too.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Where the runtime's endpoints listen.
#[derive(Default)]
struct Endpoints {
    metrics: Option<SocketAddr>,
    admin: Option<SocketAddr>,
}

/// A handle that does not keep the runtime alive (the admin endpoint's).
#[derive(Clone)]
pub(crate) struct WeakRuntime(Weak<Inner>);

impl WeakRuntime {
    pub(crate) fn upgrade(&self) -> Option<Runtime> {
        self.0.upgrade().map(|inner| Runtime { inner })
    }
}

/// arbor embedded in a host: agents under a supervision tree, journaled into one data
/// directory, reachable by name.
///
/// ```
/// use arbor::{Runtime, Spawn};
///
/// #[derive(serde::Serialize)]
/// enum Counter { Inc { by: i64 } }
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Count { count: i64 }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let dir = tempfile::tempdir()?;
/// let runtime = Runtime::builder().data_dir(dir.path()).build().await?;
/// runtime.spawn(Spawn::wasm_bytes("counter", arbor_modules::COUNTER)).await?;
/// let reply: Count = runtime.call("counter", &Counter::Inc { by: 2 }).await?;
/// assert_eq!(reply, Count { count: 2 });
/// runtime.shutdown().await?;
/// drop(runtime); // releases the data directory
///
/// // Same directory, new runtime: the agent is back with its state.
/// let runtime = Runtime::builder().data_dir(dir.path()).build().await?;
/// let reply: Count = runtime.call("counter", &Counter::Inc { by: 1 }).await?;
/// assert_eq!(reply, Count { count: 3 });
/// runtime.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) system: AgentSystem,
    arbiter: Arbiter,
    data_dir: Option<PathBuf>,
    endpoints: Mutex<Endpoints>,
    /// Tells the endpoints and the sampler to stop.
    stop: tokio::sync::watch::Sender<bool>,
    tree: Arc<Tree>,
    pub(crate) root: SupervisorRef,
    limits: AgentLimits,
    call_timeout: Duration,
    /// Why the runtime stopped, once it has.
    stopped: Mutex<Option<String>>,
    /// One spawn at a time: two spawns of one name must not both write its registry record.
    spawning: tokio::sync::Mutex<()>,
}

impl Inner {
    pub(crate) fn is_shut_down(&self) -> bool {
        self.tree.shutting_down.load(Ordering::Acquire)
    }

    /// The names of the quarantined agents.
    pub(crate) fn quarantined(&self) -> std::collections::BTreeSet<String> {
        self.tree.quarantined.lock().keys().cloned().collect()
    }
}

impl Drop for Inner {
    /// The last handle is gone without `shutdown`: ask the tree to stop (agents take their
    /// final checkpoints in the background). `shutdown` is the way to wait for it.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // A stop like `shutdown`'s: temporary agents stay registered for the next runtime.
        if !self.tree.shutting_down.swap(true, Ordering::AcqRel) {
            self.root.cell().stop(Some("shutdown".into()));
        }
    }
}

impl Runtime {
    /// A builder with defaults: ephemeral, group commit, default limits, `one_for_one` root.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            system: AgentSystem::builder(),
            data_dir: None,
            limits: AgentLimits::default(),
            call_timeout: Duration::from_secs(5),
            root: SupervisorOptions::default(),
            supervisors: Vec::new(),
            metrics: None,
            admin: None,
            evolution: ArbiterConfig::default(),
            recovery_failure: RecoveryFailure::default(),
        }
    }

    /// Checks, compiles and stores a Wasm module; its hash names it in [`Spawn::module`].
    pub fn add_module(&self, name: &str, bytes: &[u8]) -> Result<ModuleHash, Error> {
        Ok(self.inner.system.add_module(name, bytes)?)
    }

    /// Starts a new agent under its supervisor (journaled from its first input when the runtime
    /// has a data directory). The name must be new.
    pub async fn spawn(&self, spawn: Spawn) -> Result<AgentRef, Error> {
        self.check_running()?;
        let _one_at_a_time = self.inner.spawning.lock().await;
        let system = &self.inner.system;
        let name = spawn.name.clone();
        // A name stays taken after its agent was stopped (its checkpoints are still there).
        if system.lookup(&name).is_some() || system.registered_state(&name)?.is_some() {
            return Err(AgentError::AlreadyExists(name).into());
        }
        let behaviour = match spawn.source {
            Source::Bytes { label, bytes } => BehaviourId::Wasm(system.add_module(&label, &bytes)?),
            Source::Module(hash) => BehaviourId::Wasm(hash),
            Source::Native(native) => BehaviourId::Native(native),
        };
        let mut spec = match behaviour {
            BehaviourId::Wasm(hash) => AgentSpec::wasm(&name, hash),
            BehaviourId::Native(native) => AgentSpec::native(&name, native),
        }
        .limits(spawn.limits.unwrap_or_else(|| self.inner.limits.clone()))
        .capabilities(spawn.capabilities)
        .config(spawn.config);
        spec.supervisor = spawn.under.clone();
        let path = spawn.under.join("/");
        let options = self
            .inner
            .tree
            .options(&spawn.under)
            .ok_or_else(|| Error::UnknownSupervisor(path.clone()))?;
        let supervisor = self
            .inner
            .root
            .find(&spawn.under)
            .ok_or(Error::UnknownSupervisor(path))?;
        if system.wal().is_none() {
            self.inner
                .tree
                .ephemeral_agents
                .lock()
                .insert(name.clone(), spec.clone());
        }
        let started = supervisor
            .start_child(self.inner.tree.agent_child(&name, Some(spec), options))
            .await;
        if !matches!(started, Ok(Some(_))) {
            self.inner.tree.ephemeral_agents.lock().remove(&name);
        }
        started?;
        system.lookup(&name).ok_or(Error::Restarting(name))
    }

    /// Stops the agent `name` for good: it takes a final checkpoint and is marked stopped in
    /// the registry (so neither its supervisor nor a later runtime brings it back), then its
    /// supervisor forgets it. If the stop fails the agent keeps running, supervised.
    pub async fn stop_agent(&self, name: &str) -> Result<(), Error> {
        let agent = self.agent(name)?;
        self.inner.tree.ephemeral_agents.lock().remove(name);
        agent.stop().await?;
        // The agent exited normally: a transient child is gone already; a permanent one was
        // restarted and declined to start (the registry says stopped). Forget either.
        if let Some(supervisor) = self.inner.root.find(&agent.spec().supervisor) {
            let _ = supervisor.terminate_child(name).await;
            let _ = supervisor.delete_child(name).await;
        }
        Ok(())
    }

    /// Brings back an agent that could not be recovered ([`RecoveryFailure::Quarantine`]), or
    /// restores a running one to an earlier state: `from` (one of its stored checkpoints, or
    /// exported state) is restored and the inputs journaled after it are replayed or dropped as
    /// `after` says. A running agent pauses and resumes
    /// ([`AgentSystem::restore_checkpoint`]); a quarantined one is rebuilt without running
    /// ([`AgentSystem::rebuild_registered`]) and its supervisor starts it again. If it still
    /// cannot be recovered it stays quarantined ([`Error::Quarantined`]).
    pub async fn restore_agent(
        &self,
        name: &str,
        from: RestoreFrom,
        after: AfterRestore,
    ) -> Result<RebuildReport, Error> {
        self.check_running()?;
        let system = &self.inner.system;
        if let Some(agent) = system.lookup(name) {
            return Ok(system.restore_checkpoint(&agent, from, after).await?);
        }
        let _one_at_a_time = self.inner.spawning.lock().await;
        if system.registered_state(name)? != Some(AgentState::Quarantined) {
            return Err(AgentError::UnknownAgent(name.into()).into());
        }
        let report = system.rebuild_registered(name, from, after).await?;
        self.inner.tree.quarantined.lock().remove(name);
        let (path, supervisor) = self.registered_supervisor(name)?;
        let restarted = match supervisor.restart_child(name).await {
            Err(arbor_supervisor::SupervisorError::UnknownChild { .. }) => {
                let options = self.inner.tree.options(&path).unwrap_or_default();
                let child = self.inner.tree.agent_child(name, None, options);
                supervisor.start_child(child).await
            }
            other => other,
        };
        if restarted?.is_none() {
            // Its start declined: recovery failed again and quarantined it anew.
            let reason = self.inner.tree.quarantined.lock().get(name).cloned();
            return Err(Error::Quarantined {
                agent: name.into(),
                reason: reason.unwrap_or_default(),
            });
        }
        Ok(report)
    }

    /// Forgets an agent that is not running (quarantined, terminated or stopped): its
    /// supervisor drops it, and its registry record and checkpoints are deleted, so the name is
    /// free again. Refused while it runs ([`AgentError::Running`]: stop it first).
    pub async fn remove_agent(&self, name: &str) -> Result<(), Error> {
        self.check_running()?;
        let _one_at_a_time = self.inner.spawning.lock().await;
        if self.inner.system.lookup(name).is_some() {
            return Err(AgentError::Running(name.into()).into());
        }
        if let Ok((_, supervisor)) = self.registered_supervisor(name) {
            match supervisor.delete_child(name).await {
                Ok(()) | Err(arbor_supervisor::SupervisorError::UnknownChild { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.inner.tree.ephemeral_agents.lock().remove(name);
        let removed = self.inner.system.remove_registered(name)?;
        let quarantined = self.inner.tree.quarantined.lock().remove(name).is_some();
        if removed || quarantined {
            Ok(())
        } else {
            Err(AgentError::UnknownAgent(name.into()).into())
        }
    }

    /// The supervisor the registry places `name` under (the root if that one is not declared).
    fn registered_supervisor(&self, name: &str) -> Result<(Vec<String>, SupervisorRef), Error> {
        let record = AgentId::new(name)
            .ok()
            .and_then(|id| self.inner.system.vault()?.agent(&id).ok().flatten())
            .ok_or_else(|| AgentError::UnknownAgent(name.into()))?;
        let path = if self.inner.tree.options(&record.supervisor).is_some() {
            record.supervisor
        } else {
            Vec::new()
        };
        let supervisor = self
            .inner
            .root
            .find(&path)
            .ok_or_else(|| Error::UnknownSupervisor(path.join("/")))?;
        Ok((path, supervisor))
    }

    /// The agents that could not be recovered, with why ([`RecoveryFailure::Quarantine`]).
    pub fn quarantined(&self) -> BTreeMap<String, String> {
        self.inner.tree.quarantined.lock().clone()
    }

    /// Sends `message` (MessagePack, named fields) to `agent` and waits for its reply, at most
    /// the runtime's call timeout. The reply comes once the input is durable.
    pub async fn call<M, R>(&self, agent: &str, message: &M) -> Result<R, Error>
    where
        M: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_timeout(agent, message, self.inner.call_timeout)
            .await
    }

    /// [`call`](Self::call) with its own timeout.
    pub async fn call_timeout<M, R>(
        &self,
        agent: &str,
        message: &M,
        timeout: Duration,
    ) -> Result<R, Error>
    where
        M: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let target = self.agent(agent)?;
        let payload = encode(agent, message)?;
        let reply = target.call_timeout(payload, timeout).await?;
        decode_untrusted(&reply).map_err(|e| Error::Codec {
            agent: agent.into(),
            reason: format!("unexpected reply: {e}"),
        })
    }

    /// Sends `message` to `agent` without waiting for it to be handled.
    pub fn cast<M: Serialize + ?Sized>(&self, agent: &str, message: &M) -> Result<(), Error> {
        let target = self.agent(agent)?;
        target.cast(encode(agent, message)?)?;
        Ok(())
    }

    /// The running agent `name`.
    pub fn lookup(&self, name: &str) -> Option<AgentRef> {
        self.inner.system.lookup(name)
    }

    /// The running agents' names, sorted.
    pub fn agents(&self) -> Vec<String> {
        self.inner.system.running()
    }

    /// The supervision tree, with each child's state and restart count.
    pub fn tree(&self) -> SupervisorTree {
        self.inner.root.tree()
    }

    /// The agent system underneath (hot swap, checkpoints, the WAL and the vault).
    pub fn system(&self) -> &AgentSystem {
        &self.inner.system
    }

    /// The evolution arbiter over this runtime's agents (admit a candidate module, replay
    /// gate, shadows, promotion, rollback); the admin endpoint uses the same one.
    pub fn arbiter(&self) -> &Arbiter {
        &self.inner.arbiter
    }

    /// The data directory, if the runtime has one.
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.data_dir.as_deref()
    }

    /// Where `/metrics` is served, if [`RuntimeBuilder::metrics`] asked for it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.inner.endpoints.lock().metrics
    }

    /// Where the admin endpoint listens, if [`RuntimeBuilder::admin`] asked for it.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.endpoints.lock().admin
    }

    pub(crate) fn downgrade(&self) -> WeakRuntime {
        WeakRuntime(Arc::downgrade(&self.inner))
    }

    /// Why the runtime stopped, if it has (its root supervisor gave up, or it was shut down).
    pub fn stopped(&self) -> Option<String> {
        let recorded = self.inner.stopped.lock().clone();
        recorded.or_else(|| self.inner.root.exit().map(root_exited))
    }

    /// Waits until the runtime stops and says why.
    pub async fn wait(&self) -> String {
        let exit = self.inner.root.wait_exit().await;
        self.stopped().unwrap_or_else(|| root_exited(exit))
    }

    /// Stops the tree in reverse start order (agents take final checkpoints), then syncs the WAL
    /// and the vault. Agents stay registered as running: the next runtime on this directory
    /// recovers them. The directory itself is released when the last clone of the runtime is
    /// dropped.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.tree.shutting_down.store(true, Ordering::Release);
        let _ = self.inner.stop.send(true);
        self.inner.root.shutdown().await;
        let result = self.inner.system.shutdown().await;
        self.inner
            .stopped
            .lock()
            .get_or_insert_with(|| "shut down".into());
        Ok(result?)
    }

    fn check_running(&self) -> Result<(), Error> {
        match self.stopped() {
            Some(reason) => Err(Error::Stopped { reason }),
            None => Ok(()),
        }
    }

    /// The running agent `name`, or why there is none.
    fn agent(&self, name: &str) -> Result<AgentRef, Error> {
        self.check_running()?;
        if let Some(agent) = self.inner.system.lookup(name) {
            return Ok(agent);
        }
        if let Some(reason) = self.inner.tree.quarantined.lock().get(name) {
            return Err(Error::Quarantined {
                agent: name.into(),
                reason: reason.clone(),
            });
        }
        let in_tree = self.tree().walk().iter().any(|(_, child)| {
            child.id == name
                && child.kind == ChildKind::Worker
                && !matches!(child.state, arbor_supervisor::ChildState::Terminated { .. })
        });
        // Between a supervisor giving up and its restart, its agents are in no tree: the
        // registry (journaled) or the ephemeral specs (not journaled) still know them.
        let ephemeral = self.inner.tree.ephemeral_agents.lock().contains_key(name);
        if in_tree || ephemeral || self.inner.system.is_registered(name)? {
            Err(Error::Restarting(name.into()))
        } else {
            Err(AgentError::UnknownAgent(name.into()).into())
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("agents", &self.agents())
            .field("stopped", &self.stopped())
            .finish()
    }
}

fn root_exited(exit: arbor_supervisor::ExitReason) -> String {
    format!("the root supervisor exited ({exit})")
}

fn encode<M: Serialize + ?Sized>(agent: &str, message: &M) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(message).map_err(|e| Error::Codec {
        agent: agent.into(),
        reason: format!("cannot serialise the message: {e}"),
    })
}

/// The runtime's tree: how each supervisor is made, every time it (re)starts.
struct Tree {
    system: AgentSystem,
    root: SupervisorOptions,
    supervisors: Vec<(Vec<String>, SupervisorOptions)>,
    /// Without a journal there is no registry: the agents spawned and not stopped, so that a
    /// restarted supervisor starts them again (from their init config).
    ephemeral_agents: Mutex<BTreeMap<String, AgentSpec>>,
    recovery_failure: RecoveryFailure,
    /// Quarantined agents and why (the registry has them too; this serves the gauge and calls
    /// without reading the vault).
    quarantined: Mutex<BTreeMap<String, String>>,
    /// The runtime is shutting down (or dropped): agents stopping now stay registered.
    shutting_down: AtomicBool,
}

impl Tree {
    fn options(&self, path: &[String]) -> Option<SupervisorOptions> {
        if path.is_empty() {
            return Some(self.root.clone());
        }
        self.supervisors
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, options)| options.clone())
    }

    /// The supervisor at `path` as it should start now: its declared sub-supervisors, then
    /// every agent the registry has running under it (by name) — so a supervisor restarted
    /// by its parent, or started by a new runtime, brings its agents back recovered. Agents
    /// whose supervisor is no longer declared go under the root.
    fn spec(self: &Arc<Self>, path: &[String]) -> Result<SupervisorSpec, String> {
        let options = self
            .options(path)
            .ok_or_else(|| format!("no supervisor `{}`", path.join("/")))?;
        let name = path.last().map_or("root", String::as_str);
        let mut spec = SupervisorSpec::new(name)
            .strategy(options.strategy)
            .intensity(options.intensity.max_restarts, options.intensity.period);
        spec.backoff = options.backoff;
        spec.max_children = options.max_children;
        for (sub, _) in &self.supervisors {
            if sub.len() == path.len() + 1 && sub.starts_with(path) {
                spec = spec.child(self.supervisor_child(sub.clone()));
            }
        }
        if self.system.vault().is_none() {
            for (name, agent) in self.ephemeral_agents.lock().iter() {
                if agent.supervisor == path {
                    spec = spec.child(self.agent_child(name, Some(agent.clone()), options.clone()));
                }
            }
        }
        if let Some(vault) = self.system.vault() {
            let records = vault.agents().map_err(|e| format!("vault: {e}"))?;
            // Quarantined agents are children too (their start declines), so the tree shows
            // them and a restore restarts them in place.
            let listed = |r: &&arbor_vault::AgentRecord| {
                matches!(r.state, AgentState::Running | AgentState::Quarantined)
            };
            for record in records.iter().filter(listed) {
                let declared = self.options(&record.supervisor).is_some();
                if record.supervisor == path || (path.is_empty() && !declared) {
                    if !declared {
                        tracing::warn!(
                            agent = record.id.as_str(),
                            supervisor = record.supervisor.join("/"),
                            "the agent's supervisor is not declared; starting it under the root"
                        );
                    }
                    spec = spec.child(self.agent_child(record.id.as_str(), None, options.clone()));
                }
            }
        }
        Ok(spec)
    }

    fn supervisor_child(self: &Arc<Self>, path: Vec<String>) -> ChildSpec {
        let id = path.last().cloned().unwrap_or_default();
        let tree = Arc::clone(self);
        ChildSpec::supervisor_from(id, move || tree.spec(&path))
    }

    /// An agent as a supervisor child: every start recovers it if the registry has it running
    /// (checkpoint + WAL replay), declines if the registry has it stopped on purpose,
    /// terminated or quarantined (OTP's `ignore`: not an error, not restarted), and spawns it
    /// from `spec` otherwise (its first start, or any start in an ephemeral runtime). When it is
    /// gone for good (a temporary agent that exited) the registry says so.
    fn agent_child(
        self: &Arc<Self>,
        name: &str,
        spec: Option<AgentSpec>,
        options: SupervisorOptions,
    ) -> ChildSpec {
        let tree = Arc::downgrade(self);
        let name = name.to_string();
        let exited = {
            let (tree, name) = (tree.clone(), name.clone());
            let restart = options.agent_restart;
            move |exit: &ExitReason| {
                if let Some(tree) = tree.upgrade() {
                    tree.agent_exited(&name, restart, exit);
                }
            }
        };
        ChildSpec::from_fn(name.clone(), ChildKind::Worker, move |supervisor| {
            let (tree, name, spec) = (tree.clone(), name.clone(), spec.clone());
            Box::pin(async move {
                match tree.upgrade() {
                    Some(tree) => tree.start_agent(&name, spec, supervisor).await,
                    None => Err("the runtime is gone".into()),
                }
            })
        })
        .restart(options.agent_restart)
        .shutdown(options.agent_shutdown)
        .on_exit(exited)
    }

    async fn start_agent(
        &self,
        name: &str,
        spec: Option<AgentSpec>,
        supervisor: ActorCell,
    ) -> Result<Option<ChildStarted>, String> {
        let system = &self.system;
        let agent = match (system.registered_state(name), spec) {
            (Ok(Some(AgentState::Running)), _) => {
                match system.recover_linked(name, supervisor).await {
                    Ok((agent, _)) => Ok(agent),
                    Err(error)
                        if self.recovery_failure == RecoveryFailure::Quarantine
                            && matches!(
                                error,
                                AgentError::Recovery { .. } | AgentError::Start { .. }
                            ) =>
                    {
                        self.quarantine(name, &error)?;
                        return Ok(None);
                    }
                    Err(error) => Err(error),
                }
            }
            (Ok(Some(AgentState::Quarantined)), _) => {
                self.note_quarantined(name);
                return Ok(None);
            }
            (Ok(Some(AgentState::Stopped | AgentState::Terminated)), _) => return Ok(None),
            (Ok(None), Some(spec)) => system.spawn_linked(spec, supervisor).await,
            (Ok(None), None) => Err(AgentError::UnknownAgent(name.into())),
            (Err(error), _) => Err(error),
        }
        .map_err(|e| e.to_string())?;
        Ok(Some(ChildStarted::from(agent.cell())))
    }

    /// `name` could not be recovered: the host goes on without it (see
    /// [`RecoveryFailure::Quarantine`]).
    fn quarantine(&self, name: &str, error: &AgentError) -> Result<(), String> {
        let reason = error.to_string();
        tracing::error!(agent = name, %reason, "agent quarantined: its state cannot be recovered");
        self.system
            .mark_registered(name, AgentState::Quarantined, Some(reason.clone()))
            .map_err(|e| format!("cannot quarantine `{name}` ({reason}): {e}"))?;
        metrics::counter!(arbor_metrics::AGENT_QUARANTINES).increment(1);
        self.quarantined.lock().insert(name.into(), reason);
        Ok(())
    }

    /// A quarantined agent of an earlier run: remember why, for calls and the gauge.
    fn note_quarantined(&self, name: &str) {
        let reason = AgentId::new(name)
            .ok()
            .and_then(|id| self.system.vault()?.agent(&id).ok().flatten())
            .and_then(|record| record.reason)
            .unwrap_or_default();
        self.quarantined.lock().insert(name.into(), reason);
    }

    /// A child's exit hook: the agent is gone for good unless the runtime is shutting down
    /// (agents stopping with it stay registered and come back with the next runtime).
    fn agent_exited(&self, name: &str, restart: Restart, exit: &ExitReason) {
        if self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        self.ephemeral_agents.lock().remove(name);
        if restart != Restart::Temporary {
            return;
        }
        if let Ok(Some(AgentState::Running)) = self.system.registered_state(name) {
            let reason = format!("temporary, exited ({exit}): never restarted");
            if let Err(error) =
                self.system
                    .mark_registered(name, AgentState::Terminated, Some(reason))
            {
                tracing::error!(agent = name, %error, "a temporary agent exited but its registry record still says running");
            }
        }
    }
}
