//! [`RuntimeBuilder`]: how a [`Runtime`] is put together. What the agent system takes is set on
//! its own builder, which this one holds; the runtime adds the tree, the endpoints and the arbiter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arbor_agent::tools::Tools;
use arbor_agent::wasm::{AgentLimits, EngineConfig};
use arbor_agent::{AgentSystem, AgentSystemBuilder, Behaviour, CheckpointPolicy};
use arbor_shadow::{Arbiter, ArbiterConfig};
use arbor_supervisor::Supervisor;
use arbor_wal::Durability;
use parking_lot::Mutex;

use crate::Error;
use crate::admin::{AdminConfig, Operator};
use crate::cluster::{ClusterOptions, Local, Node, Owner};

use super::options::{RecoveryFailure, SupervisorOptions};
use super::spawn::split_path;
use super::tree::Tree;
use super::{Endpoints, Inner, Runtime, root_exited, stopped};

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
            cluster: None,
        }
    }
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
    cluster: Option<ClusterOptions>,
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

    /// Runs this node in a cluster (see [`ClusterOptions`] and the crate docs' "Cluster mode"):
    /// agents' journals and checkpoints go to NATS JetStream, each agent runs on exactly one
    /// node, and `call`, `cast`, `spawn` and `stop_agent` work from every node. Needs a
    /// [`data_dir`](Self::data_dir) for the node's local vault (its modules and lineage; no
    /// journal is kept there).
    pub fn cluster(mut self, options: ClusterOptions) -> Self {
        self.cluster = Some(options);
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
        let node_label = self.cluster.as_ref().map(|c| c.node.clone());
        let prometheus = match self.metrics {
            Some(_) => Some(crate::telemetry::prometheus(node_label.as_deref())?),
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
        let mut system = self.system;
        let node = match self.cluster {
            Some(options) => {
                let dir = self
                    .data_dir
                    .as_deref()
                    .ok_or_else(|| Error::cluster(crate::cluster::ClusterError::NoDataDir))?;
                let (node, store) = Node::join(options, dir).await.map_err(Error::cluster)?;
                system = system.journal_store(Arc::new(store));
                Some(Arc::new(node))
            }
            None => None,
        };
        let system = system.build()?;
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
            loops: arbor_evolve::Loops::default(),
            data_dir: self.data_dir.clone(),
            endpoints: Mutex::new(Endpoints::default()),
            stop,
            tree,
            root: root.clone(),
            limits: self.limits,
            call_timeout: self.call_timeout,
            stopped: Mutex::new(None),
            spawning: tokio::sync::Mutex::new(()),
            cluster: node.clone(),
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
        if let Some(node) = &node {
            let local: Weak<dyn Local> = Arc::downgrade(&inner) as Weak<dyn Local>;
            crate::cluster::serve(node.client.clone(), node.name().to_string(), local.clone())
                .await
                .map_err(|e| {
                    Error::cluster(crate::cluster::ClusterError::Bucket {
                        what: format!("subscribing to {}", node.name()),
                        source: e.into(),
                    })
                })?;
            inner
                .system
                .send_elsewhere(Arc::new(crate::cluster::RemoteSends {
                    node: Arc::downgrade(node),
                    local: local.clone(),
                    timeout: inner.call_timeout,
                }));
            crate::cluster::serve_shadows(node, local.clone())
                .await
                .map_err(|e| {
                    Error::cluster(crate::cluster::ClusterError::Bucket {
                        what: format!("subscribing to {}'s shadow subject", node.name()),
                        source: e.into(),
                    })
                })?;
            inner
                .arbiter
                .place_shadows_on(Arc::new(crate::cluster::Shadows {
                    node: Arc::downgrade(node),
                    local: local.clone(),
                    handle: tokio::runtime::Handle::current(),
                }));
            Owner::start(Arc::downgrade(node), local);
        }
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
