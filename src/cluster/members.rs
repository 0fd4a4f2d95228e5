//! The live nodes: each node puts a heartbeat in the KV bucket `arbor_nodes` every third of
//! the lease, and every node watches the bucket. A node is live while its last heartbeat is
//! younger than a lease; a draining node (shutting down) is live but takes no agents; a node
//! that leaves gracefully deletes its entry.
//!
//! Membership only steers placement. It is not what keeps two nodes from running one agent
//! (the lease and the journal's fencing are), so a wrong view costs a wasted claim or a slower
//! failover, never safety.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::ClusterError;

const NODES: &str = "arbor_nodes";

/// A node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    pub(crate) node: String,
    /// Wall clock of the heartbeat, ms since the Unix epoch.
    pub(crate) at_ms: u64,
    /// Shutting down: live, but takes no agents.
    pub(crate) draining: bool,
    /// When the node started, ms since the Unix epoch.
    pub(crate) started_ms: u64,
}

/// This node's view of the membership, and its own heartbeat.
#[derive(Clone)]
pub(crate) struct Members {
    bucket: kv::Store,
    node: String,
    ttl: Duration,
    started_ms: u64,
    view: Arc<RwLock<BTreeMap<String, Heartbeat>>>,
    /// Wakes the ownership loop when a node joins, leaves or starts draining.
    pub(crate) changed: Arc<Notify>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Members {
    pub(crate) async fn open(
        js: &jetstream::Context,
        node: &str,
        replicas: usize,
        ttl: Duration,
        draining: bool,
    ) -> Result<Members, ClusterError> {
        let bucket = match js.get_key_value(NODES).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: NODES.into(),
                    description: "arbor: live nodes (heartbeats)".into(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| ClusterError::Bucket {
                    what: "creating KV arbor_nodes".into(),
                    source: e.into(),
                })?,
        };
        let members = Members {
            bucket,
            node: node.to_string(),
            ttl,
            started_ms: now_ms(),
            view: Arc::default(),
            changed: Arc::new(Notify::new()),
        };
        // A node that hosts no agents is draining from its first heartbeat, so no other node
        // ever places an agent on it.
        super::while_new(|| members.beat(draining)).await?;
        let feed = members.clone();
        let view = Arc::downgrade(&members.view);
        let mut ready_rx = super::follow::follow(
            members.bucket.clone(),
            "arbor_nodes",
            move |entry| feed.apply(entry),
            // The task's own clone is the last one once the node is gone.
            move || view.strong_count() > 1,
        )
        .await
        .map_err(|e| ClusterError::Bucket {
            what: "watching arbor_nodes".into(),
            source: e.into(),
        })?;
        // Our own heartbeat is in the bucket, so the watch delivers at least one entry.
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| *r)).await;
        Ok(members)
    }

    fn apply(&self, entry: kv::Entry) {
        let mut view = self.view.write();
        let before: Vec<(String, bool)> = view
            .values()
            .map(|h| (h.node.clone(), h.draining))
            .collect();
        match entry.operation {
            kv::Operation::Put => match rmp_serde::from_slice::<Heartbeat>(&entry.value) {
                Ok(beat) => {
                    view.insert(beat.node.clone(), beat);
                }
                Err(error) => tracing::error!(key = entry.key, %error, "heartbeat does not decode"),
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                view.remove(&entry.key);
            }
        }
        let after: Vec<(String, bool)> = view
            .values()
            .map(|h| (h.node.clone(), h.draining))
            .collect();
        drop(view);
        if before != after {
            self.changed.notify_waiters();
        }
    }

    /// Puts this node's heartbeat.
    pub(crate) async fn beat(&self, draining: bool) -> Result<(), ClusterError> {
        let beat = Heartbeat {
            node: self.node.clone(),
            at_ms: now_ms(),
            draining,
            started_ms: self.started_ms,
        };
        let value = rmp_serde::to_vec_named(&beat).map_err(|e| ClusterError::Corrupt {
            what: "heartbeat".into(),
            reason: e.to_string(),
        })?;
        self.bucket
            .put(&self.node, value.into())
            .await
            .map_err(|e| ClusterError::Bucket {
                what: "putting the heartbeat".into(),
                source: e.into(),
            })?;
        Ok(())
    }

    /// Leaves the membership (a graceful shutdown, after draining).
    pub(crate) async fn leave(&self) -> Result<(), ClusterError> {
        self.bucket
            .delete(&self.node)
            .await
            .map_err(|e| ClusterError::Bucket {
                what: "leaving arbor_nodes".into(),
                source: e.into(),
            })
    }

    /// The nodes that take agents now (live and not draining), sorted.
    pub(crate) fn placeable(&self) -> Vec<String> {
        let now = now_ms();
        self.view
            .read()
            .values()
            .filter(|beat| self.beat_is_live(beat, now) && !beat.draining)
            .map(|beat| beat.node.clone())
            .collect()
    }

    /// Whether `node` is live in the view (a node never seen is not).
    pub(crate) fn is_live(&self, node: &str) -> bool {
        let now = now_ms();
        self.view
            .read()
            .get(node)
            .is_some_and(|beat| self.beat_is_live(beat, now))
    }

    /// Every node in the view, live or not, with whether it is live.
    pub(crate) fn all(&self) -> Vec<(Heartbeat, bool)> {
        let now = now_ms();
        self.view
            .read()
            .values()
            .map(|beat| (beat.clone(), self.beat_is_live(beat, now)))
            .collect()
    }

    fn beat_is_live(&self, beat: &Heartbeat, now: u64) -> bool {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(beat.at_ms) < ttl
    }
}
