//! [`ClusterStatus`]: the nodes, the leases and where every agent runs, as one node sees them
//! (what `arborctl cluster status` prints).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{ClusterError, Node, placement};

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node: String,
    /// Every node in the membership.
    pub nodes: Vec<NodeStatus>,
    /// Every registered agent.
    pub agents: Vec<AgentPlacement>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// Whether its heartbeat is younger than a lease.
    pub live: bool,
    /// Whether it takes no agents: it is shutting down, or it hosts none
    /// ([`ClusterOptions::hosts_agents`](crate::ClusterOptions::hosts_agents)).
    pub draining: bool,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// How many agents' live leases name it.
    pub agents: usize,
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPlacement {
    /// Its name.
    pub name: String,
    /// The registry's state (`running`, `stopped`, `quarantined`, …).
    pub state: String,
    /// The node holding its live lease, if any.
    pub owner: Option<String>,
    /// The epoch of its last lease (grows with every claim).
    pub epoch: u64,
    /// Milliseconds left on the lease (0 if ended).
    pub lease_left_ms: u64,
    /// Where placement puts it now.
    pub placed: Option<String>,
}

impl ClusterStatus {
    pub(crate) async fn read(node: &Node) -> Result<ClusterStatus, ClusterError> {
        let now = SystemTime::now();
        let placeable = node.members.placeable();
        let mut agents = Vec::new();
        for registered in node.registry.all() {
            let name = registered.name().to_string();
            let lease = node.leases.get(&name).await?;
            let (owner, epoch, left) = match lease {
                Some(lease) => {
                    let left = lease.until.duration_since(now).unwrap_or_default();
                    let owner = (!left.is_zero()).then_some(lease.node);
                    (owner, lease.epoch, left)
                }
                None => (None, 0, Default::default()),
            };
            agents.push(AgentPlacement {
                placed: placement::place(&name, &placeable).map(str::to_string),
                name,
                state: format!("{:?}", registered.record.state).to_lowercase(),
                owner,
                epoch,
                lease_left_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            });
        }
        let now_ms = super::members::now_ms();
        let nodes = node
            .members
            .all()
            .into_iter()
            .map(|(beat, live)| NodeStatus {
                agents: agents
                    .iter()
                    .filter(|a| a.owner.as_deref() == Some(beat.node.as_str()))
                    .count(),
                heartbeat_age_ms: now_ms.saturating_sub(beat.at_ms),
                name: beat.node,
                live,
                draining: beat.draining,
            })
            .collect();
        Ok(ClusterStatus {
            node: node.name().to_string(),
            nodes,
            agents,
        })
    }
}
