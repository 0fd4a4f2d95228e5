//! [`Runtime`]: arbor embedded in a host — one data directory, one WAL and vault, one
//! supervision tree of agents.
//!
//! | file | what |
//! |---|---|
//! | `options` | [`SupervisorOptions`], [`RecoveryFailure`] |
//! | `spawn` | [`Spawn`] |
//! | `builder` | [`RuntimeBuilder`] |
//! | `tree` | the supervision tree's specs |
//! | here | [`Runtime`], the facade |

mod builder;
mod clustered;
mod local;
mod options;
mod spawn;
mod tree;

pub use builder::RuntimeBuilder;
pub use options::{RecoveryFailure, SupervisorOptions};
use spawn::Source;
pub use spawn::{Spawn, Spawned};
use tree::Tree;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arbor_agent::envelope::decode_untrusted;
use arbor_agent::wasm::AgentLimits;
use arbor_agent::{
    AfterRestore, AgentError, AgentRef, AgentSpec, AgentSystem, BehaviourId, RebuildReport,
    RestoreFrom,
};
use arbor_shadow::Arbiter;
use arbor_supervisor::{ChildKind, SupervisorRef, SupervisorTree};
use arbor_vault::{AgentId, AgentState, ModuleHash};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Resolves once the runtime stops (shut down or dropped).
pub(super) async fn stopped(mut stopping: tokio::sync::watch::Receiver<bool>) {
    // An error means the runtime is gone, which is a stop too.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Where the runtime's endpoints listen.
#[derive(Default)]
pub(super) struct Endpoints {
    pub(super) metrics: Option<SocketAddr>,
    pub(super) admin: Option<SocketAddr>,
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
    pub(super) arbiter: Arbiter,
    /// Evolution loops running in the background, by agent.
    pub(super) loops: arbor_evolve::Loops,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) endpoints: Mutex<Endpoints>,
    /// Tells the endpoints and the sampler to stop.
    pub(super) stop: tokio::sync::watch::Sender<bool>,
    pub(super) tree: Arc<Tree>,
    pub(crate) root: SupervisorRef,
    pub(super) limits: AgentLimits,
    pub(super) call_timeout: Duration,
    /// Why the runtime stopped, once it has.
    pub(super) stopped: Mutex<Option<String>>,
    /// One spawn at a time: two spawns of one name must not both write its registry record.
    pub(super) spawning: tokio::sync::Mutex<()>,
    /// Cluster mode: this node's membership, leases, registry and ownership loop.
    pub(crate) cluster: Option<Arc<crate::cluster::Node>>,
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
    /// Checks, compiles and stores a Wasm module; its hash names it in [`Spawn::module`].
    pub fn add_module(&self, name: &str, bytes: &[u8]) -> Result<ModuleHash, Error> {
        Ok(self.inner.system.add_module(name, bytes)?)
    }

    /// Starts a new agent under its supervisor (journaled from its first input when the runtime
    /// has a data directory). The name must be new. In cluster mode the name must be new
    /// cluster-wide, and the agent starts on the node placement picks (see
    /// [`Spawned::node`]).
    pub async fn spawn(&self, spawn: Spawn) -> Result<Spawned, Error> {
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
        if let Some(node) = &self.inner.cluster {
            if self.inner.tree.options(&spawn.under).is_none() {
                return Err(Error::UnknownSupervisor(path));
            }
            return self.spawn_clustered(node, spec).await;
        }
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
        let agent = system
            .lookup(&name)
            .ok_or(Error::Restarting(name.clone()))?;
        Ok(Spawned {
            name,
            node: None,
            agent: Some(agent),
        })
    }

    /// Stops the agent `name` for good: it takes a final checkpoint and is marked stopped in
    /// the registry (so neither its supervisor nor a later runtime brings it back), then its
    /// supervisor forgets it. If the stop fails the agent keeps running, supervised.
    pub async fn stop_agent(&self, name: &str) -> Result<(), Error> {
        if let Some(node) = &self.inner.cluster {
            self.check_running()?;
            return self.stop_clustered(node, name).await;
        }
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
        let payload = encode(agent, message)?;
        let reply = match (self.agent(agent), &self.inner.cluster) {
            (Ok(target), _) => target.call_timeout(payload, timeout).await?,
            (Err(Error::Agent(AgentError::UnknownAgent(_))), Some(node)) => {
                self.call_remote(node, agent, payload, timeout).await?
            }
            (Err(error), _) => return Err(error),
        };
        decode_untrusted(&reply).map_err(|e| Error::Codec {
            agent: agent.into(),
            reason: format!("unexpected reply: {e}"),
        })
    }

    /// Sends `message` to `agent` without waiting for it to be handled.
    ///
    /// In cluster mode, for an agent on another node, use [`cast_to`](Self::cast_to) (this
    /// one does not wait, so it cannot forward; it fails with [`AgentError::UnknownAgent`]).
    pub fn cast<M: Serialize + ?Sized>(&self, agent: &str, message: &M) -> Result<(), Error> {
        let target = self.agent(agent)?;
        target.cast(encode(agent, message)?)?;
        Ok(())
    }

    /// [`cast`](Self::cast) that reaches an agent on any node: waits until the owner has put
    /// the message into the agent's mailbox (not until it is handled).
    pub async fn cast_to<M: Serialize + ?Sized>(
        &self,
        agent: &str,
        message: &M,
    ) -> Result<(), Error> {
        let payload = encode(agent, message)?;
        match (self.agent(agent), &self.inner.cluster) {
            (Ok(target), _) => Ok(target.cast(payload)?),
            (Err(Error::Agent(AgentError::UnknownAgent(_))), Some(node)) => {
                self.cast_remote(node, agent, payload).await
            }
            (Err(error), _) => Err(error),
        }
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

    /// The evolution loops running over this runtime's agents (started through the admin API
    /// or here; [`arbor_evolve::Loops::start`]); they stop when the runtime shuts down.
    pub fn loops(&self) -> &arbor_evolve::Loops {
        &self.inner.loops
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
        if let Some(node) = &self.inner.cluster
            && self.stopped().is_none()
        {
            self.drain(node).await;
        }
        self.inner.loops.stop_all();
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

pub(super) fn root_exited(exit: arbor_supervisor::ExitReason) -> String {
    format!("the root supervisor exited ({exit})")
}

fn encode<M: Serialize + ?Sized>(agent: &str, message: &M) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(message).map_err(|e| Error::Codec {
        agent: agent.into(),
        reason: format!("cannot serialise the message: {e}"),
    })
}
