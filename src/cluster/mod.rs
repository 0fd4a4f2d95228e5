//! Cluster mode: one [`Runtime`](crate::Runtime) per host, all hosts on one NATS JetStream
//! cluster, each agent active on exactly one of them.
//!
//! | file | what |
//! |---|---|
//! | `options` | [`ClusterOptions`]: servers, node name, credentials, replicas, lease |
//! | `registry` | the cluster-wide registry (KV `arbor_agents`) and module store (object store `arbor_modules`) |
//! | `follow` | a KV bucket's keys followed into a view (registry, membership) |
//! | `members` | the live nodes (KV `arbor_nodes`, a heartbeat per node) |
//! | `placement` | rendezvous hashing: which node an agent belongs on |
//! | `owner` | the ownership loop: claim, renew, hand off, step down (a decision table) |
//! | `rpc` | calls and casts from any node to the owner (NATS request/reply) |
//! | `shadows` | evaluations' shadow instances run on another node than production's |
//! | `status` | [`ClusterStatus`], what `arborctl cluster status` shows |
//! | here | [`Node`], what the runtime holds in cluster mode, and [`ClusterError`] |
//!
//! # How an agent lives in the cluster
//!
//! 1. `spawn` on any node writes the agent's spec to the registry (a KV create: a name is
//!    taken once cluster-wide) and its module to the module store.
//! 2. Every node's ownership loop sees the registry and the membership; the node the
//!    placement names claims the agent's **lease** (KV compare-and-swap, epoch + 1),
//!    **takes over its journal** at that epoch (which fences every former owner at the
//!    stream), recovers it (newest checkpoint + journal after it) and starts it under its
//!    supervisor. It renews the lease while it runs the agent.
//! 3. A `call` on a node that does not run the agent goes to the owner (the lease names it)
//!    over NATS request/reply; the reply comes after the owner's journal append was
//!    acknowledged by the stream's quorum.
//! 4. When placement moves the agent (a node joined or is draining), the owner stops it (final
//!    checkpoint), flushes its journal and releases the lease; the new node claims at once.
//!    When the owner dies its leases expire and the agent is claimed by the node placement
//!    now names. A paused or partitioned former owner cannot append again (the stream refuses
//!    its epoch) and steps down when it notices.
//!
//! The embedded single-node mode (local WAL + sled vault) is the default and does not use any
//! of this.

mod follow;
mod members;
mod options;
mod owner;
mod placement;
mod registry;
mod rpc;
mod shadows;
mod status;

pub use options::ClusterOptions;
pub use rpc::RemoteFailure;
pub use status::{AgentPlacement, ClusterStatus, NodeStatus};

pub(crate) use members::Members;
pub(crate) use owner::{Owner, SpawnOutcome, upload_modules};
pub(crate) use registry::Registry;
pub(crate) use rpc::{RemoteSends, Request, forward, serve};
pub(crate) use shadows::{Shadows, serve as serve_shadows};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arbor_agent::{AgentRef, AgentSpec, AgentSystem};
use arbor_cluster::{JetStreamStore, Leases};
use arbor_vault::Vault;

/// A boxed future (the [`Local`] trait is used as a trait object).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the cluster layer needs of the runtime on this node: its running agents, its local
/// vault and its supervision tree. (The runtime implements it; the cluster layer does not
/// import the runtime, so dependencies point one way.)
pub(crate) trait Local: Send + Sync + 'static {
    /// The agent running here.
    fn lookup(&self, name: &str) -> Option<AgentRef>;
    /// The node's local vault.
    fn vault(&self) -> Option<&Vault>;
    /// The node's agent system (shadows run on it for other nodes' arbiters).
    fn system(&self) -> &AgentSystem;
    /// Adds a module (checked and compiled) to the local system.
    fn add_module(&self, bytes: &[u8]) -> Result<(), crate::Error>;
    /// Starts `name` under the supervisor at `path`: recovered from the journal when `spec`
    /// is `None`, spawned from `spec` otherwise. `Ok(false)` if its start declined
    /// (quarantined).
    fn start<'a>(
        &'a self,
        name: &'a str,
        spec: Option<AgentSpec>,
        path: &'a [String],
    ) -> BoxFuture<'a, Result<bool, String>>;
    /// Stops `name` here (a final checkpoint) and removes it from its supervisor;
    /// `deregister` marks it stopped (a stop for good, not a move).
    fn stop<'a>(&'a self, name: &'a str, path: &'a [String], deregister: bool)
    -> BoxFuture<'a, ()>;
    /// Whether the runtime has stopped.
    fn is_stopped(&self) -> bool;
}

/// What cluster mode failed on: connecting, the server's version or settings, a bucket, a
/// lease or the journal.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No connection to any of the servers.
    #[error("connecting to NATS at {urls}")]
    Connect {
        /// The servers tried.
        urls: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The server is older than arbor requires or lacks a required setting.
    #[error(transparent)]
    Server(#[from] arbor_cluster::ServerError),
    /// A lease operation.
    #[error(transparent)]
    Lease(#[from] arbor_cluster::LeaseError),
    /// The replicated journal or checkpoints.
    #[error(transparent)]
    Store(#[from] arbor_cluster::StoreError),
    /// A bucket (registry, members, modules) could not be opened or used.
    #[error("{what}")]
    Bucket {
        /// Which bucket and what was done.
        what: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// The node's local vault (its cache of modules and owned agents' records).
    #[error("the node's local vault")]
    Vault(#[source] arbor_vault::Error),
    /// The node name is not usable (empty, or not a subject token).
    #[error("node name `{0}`: use letters, digits, `-` and `_`")]
    NodeName(String),
    /// Cluster mode needs a data directory (the node's local vault lives there).
    #[error("cluster mode needs a data directory for the node's local vault (modules, lineage)")]
    NoDataDir,
    /// Stored data arbor did not write (a registry or member value that does not decode).
    #[error("{what}: {reason}")]
    Corrupt {
        /// What was read.
        what: String,
        /// Why it does not decode.
        reason: String,
    },
}

/// What a runtime holds in cluster mode.
pub(crate) struct Node {
    pub(crate) options: ClusterOptions,
    pub(crate) client: async_nats::Client,
    pub(crate) leases: Leases,
    pub(crate) store: JetStreamStore,
    pub(crate) registry: Registry,
    pub(crate) members: Members,
    pub(crate) owner: Arc<Owner>,
}

impl Node {
    /// This node's name.
    pub(crate) fn name(&self) -> &str {
        &self.options.node
    }
}

impl Node {
    /// Joins the cluster: connects, checks the server, opens the lease and checkpoint buckets,
    /// the journal stream, the registry and the membership, and the node's local vault in
    /// `data_dir`. Returns the node and the journal store its agent system runs on.
    pub(crate) async fn join(
        options: ClusterOptions,
        data_dir: &std::path::Path,
    ) -> Result<(Node, JetStreamStore), ClusterError> {
        let client = options.connect().await?;
        arbor_cluster::check_server(&client)?;
        let js = async_nats::jetstream::new(client.clone());
        // Creating the buckets and the stream is retried: nodes joining a fresh cluster
        // together race to create them, and on a loaded machine a creation request can time
        // out while another node's succeeds (seen in CI: "jetstream request timed out").
        let leases = while_new(|| {
            Leases::open(
                js.clone(),
                arbor_cluster::LeaseConfig::default()
                    .replicas(options.replicas)
                    .duration(options.lease)
                    .max_clock_skew(options.max_clock_skew),
            )
        })
        .await?;
        let vault = Vault::open(data_dir.join("vault"), arbor_vault::Config::default())
            .map_err(ClusterError::Vault)?;
        // The local registry is a cache of the agents this node owns; after a restart it owns
        // nothing until it claims again, so what an earlier run left there goes.
        for record in vault.agents().map_err(ClusterError::Vault)? {
            vault
                .remove_agent(&record.id)
                .map_err(ClusterError::Vault)?;
        }
        vault.sync().map_err(ClusterError::Vault)?;
        let store = while_new(|| {
            JetStreamStore::open_with_vault(
                js.clone(),
                &options.node,
                arbor_cluster::StoreConfig::default()
                    .replicas(options.replicas)
                    .append_timeout(options.append_timeout),
                vault.clone(),
            )
        })
        .await?;
        let registry = while_new(|| Registry::open(&js, options.replicas)).await?;
        let draining = !options.hosts_agents;
        let members = Members::open(
            &js,
            &options.node,
            options.replicas,
            options.lease,
            draining,
        )
        .await?;
        let owner = Arc::new(Owner::new(&options.node, draining));
        let journal = store.clone();
        Ok((
            Node {
                options,
                client,
                leases,
                store,
                registry,
                members,
                owner,
            },
            journal,
        ))
    }

    /// The cluster as this node sees it.
    pub(crate) async fn status(&self) -> Result<ClusterStatus, ClusterError> {
        ClusterStatus::read(self).await
    }
}

impl Node {
    /// Where placement puts `agent` now, as this node sees the membership.
    pub(crate) fn placed(&self, agent: &str) -> Option<String> {
        placement::place(agent, &self.members.placeable()).map(str::to_string)
    }
}

/// Runs `op` until it succeeds or 30 s have passed: on a fresh cluster, a bucket another node
/// is creating at this moment exists for a lookup before its stream answers writes and
/// consumers ("no stream found"), and creations racing on a loaded machine time out, so nodes
/// that join together retry their first operations.
pub(crate) async fn while_new<T, E, F, Fut>(mut op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut backoff = std::time::Duration::from_millis(50);
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) if std::time::Instant::now() >= until => return Err(error),
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
            }
        }
    }
}
