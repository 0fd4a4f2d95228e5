//! The [`Runtime`] operations that differ in cluster mode: a spawn registers the agent
//! cluster-wide and the placed node starts it; calls and casts for an agent that runs on
//! another node go to its owner; a stop is the registry's; a shutdown drains first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbor_agent::{AgentError, AgentSpec};
use arbor_vault::{AgentId, AgentState};

use super::{Runtime, Spawned};
use crate::Error;
use crate::cluster::{ClusterStatus, Local, Node, Request, SpawnOutcome, forward};

impl Runtime {
    /// The cluster as this node sees it: nodes, leases, where every agent runs. `None` when the
    /// runtime is not in cluster mode.
    pub async fn cluster_status(&self) -> Option<Result<ClusterStatus, Error>> {
        let node = self.inner.cluster.as_ref()?;
        Some(node.status().await.map_err(Error::cluster))
    }

    /// This node's name, in cluster mode.
    pub fn node(&self) -> Option<&str> {
        self.inner.cluster.as_deref().map(Node::name)
    }

    /// The cluster's other nodes as places for an arbiter's shadows (in cluster mode): the
    /// runtime's own [`arbiter`](Self::arbiter) has them already; give them to another with
    /// [`Arbiter::place_shadows_on`](arbor_shadow::Arbiter::place_shadows_on), then evaluate
    /// with [`ShadowPlace::Elsewhere`](arbor_shadow::ShadowPlace::Elsewhere). `None` in
    /// single-node mode or outside the async runtime.
    pub fn shadow_nodes(&self) -> Option<Arc<dyn arbor_shadow::ShadowNodes>> {
        let node = self.inner.cluster.as_ref()?;
        Some(Arc::new(crate::cluster::Shadows {
            node: Arc::downgrade(node),
            local: Arc::downgrade(&self.local()),
            handle: tokio::runtime::Handle::try_current().ok()?,
        }))
    }

    fn local(&self) -> Arc<dyn Local> {
        Arc::clone(&self.inner) as Arc<dyn Local>
    }

    /// Registers `spec` cluster-wide and has the placed node start it (this one, or another:
    /// then waits until its owner runs it, at most the call timeout).
    pub(super) async fn spawn_clustered(
        &self,
        node: &Arc<Node>,
        spec: AgentSpec,
    ) -> Result<Spawned, Error> {
        let name = spec.name.clone();
        let id = AgentId::new(&name).map_err(|e| AgentError::InvalidName {
            name: name.clone(),
            source: Arc::new(e),
        })?;
        // Every node must be able to fetch the module before anyone claims the agent.
        crate::cluster::upload_modules(node, self.local().as_ref())
            .await
            .map_err(Error::cluster)?;
        if !node
            .registry
            .create(&spec, id)
            .await
            .map_err(Error::cluster)?
        {
            return Err(AgentError::AlreadyExists(name).into());
        }
        let placed = node.placed(&name);
        if placed.as_deref() == Some(node.name()) {
            match node.owner.claim_spawned(node, &self.local(), &name).await {
                SpawnOutcome::Started => {
                    return Ok(Spawned {
                        name: name.clone(),
                        node: Some(node.name().to_string()),
                        agent: self.inner.system.lookup(&name),
                    });
                }
                SpawnOutcome::Failed(reason) => {
                    let _ = node.registry.remove(&name).await;
                    return Err(Error::Remote {
                        agent: name,
                        node: node.name().to_string(),
                        kind: crate::cluster::RemoteFailure::Other,
                        message: reason,
                    });
                }
                SpawnOutcome::Elsewhere => {}
            }
        }
        // Another node starts it: wait for a live lease (or for its start to fail).
        let deadline = Instant::now() + self.inner.call_timeout;
        loop {
            if let Ok(Some(lease)) = node.leases.get(&name).await
                && lease.until > std::time::SystemTime::now()
            {
                return Ok(Spawned {
                    name,
                    agent: None,
                    node: Some(lease.node),
                });
            }
            if let Some(registered) = node.registry.get(&name)
                && registered.record.state != AgentState::Running
            {
                let _ = node.registry.remove(&name).await;
                return Err(Error::Remote {
                    agent: name,
                    node: placed.unwrap_or_default(),
                    kind: crate::cluster::RemoteFailure::Other,
                    message: registered.record.reason.unwrap_or_default(),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    agent: name,
                    reason: "registered; no node has started it yet".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A call to an agent that does not run here: to its owner.
    pub(super) async fn call_remote(
        &self,
        node: &Node,
        agent: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        if node.registry.get(agent).is_none() {
            return Err(AgentError::UnknownAgent(agent.into()).into());
        }
        let request = Request::Call {
            agent: agent.into(),
            payload,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        forward(
            node,
            self.local().as_ref(),
            agent,
            request,
            Instant::now() + timeout,
        )
        .await
    }

    /// A cast to an agent that does not run here: to its owner (waits for the owner to take
    /// it into the mailbox, at most the call timeout).
    pub(super) async fn cast_remote(
        &self,
        node: &Node,
        agent: &str,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        if node.registry.get(agent).is_none() {
            return Err(AgentError::UnknownAgent(agent.into()).into());
        }
        let request = Request::Cast {
            agent: agent.into(),
            payload,
            from: None,
        };
        forward(
            node,
            self.local().as_ref(),
            agent,
            request,
            Instant::now() + self.inner.call_timeout,
        )
        .await
        .map(|_| ())
    }

    /// Stops `name` for good, wherever it runs: the registry says stopped, and its owner stops
    /// it (final checkpoint) and releases it; waits for that, at most the call timeout.
    pub(super) async fn stop_clustered(&self, node: &Arc<Node>, name: &str) -> Result<(), Error> {
        if node.registry.get(name).is_none() {
            return Err(AgentError::UnknownAgent(name.into()).into());
        }
        node.registry
            .set_state(name, AgentState::Stopped, None)
            .await
            .map_err(Error::cluster)?;
        node.owner.nudge();
        let deadline = Instant::now() + self.inner.call_timeout;
        loop {
            let held = match node.leases.get(name).await {
                Ok(Some(lease)) => lease.until > std::time::SystemTime::now(),
                Ok(None) => false,
                Err(error) => return Err(Error::cluster(error.into())),
            };
            if !held {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    agent: name.into(),
                    reason: "marked stopped; its owner has not released it yet".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A graceful shutdown in cluster mode: hand every agent to other nodes, then leave.
    pub(super) async fn drain(&self, node: &Arc<Node>) {
        node.owner.drain(node, &self.local()).await;
        if let Err(error) = node.members.leave().await {
            tracing::warn!(%error, "leaving the membership");
        }
    }
}
