//! Ownership leases: which node owns an agent, until when, under which epoch.
//!
//! # Layout
//!
//! One JetStream KV bucket (history 1, file storage, replicas configurable; R3 in the tests);
//! the key is the agent's encoded name ([`encode_agent`](crate::encode_agent)), the value
//! `arbor-lease/1 <epoch> <until_ms> <node>`: the owner's epoch, the lease's end in
//! milliseconds since the Unix epoch on the claimer's clock, and the owner's node name.
//!
//! # The rules
//!
//! - **Claim** succeeds only if no entry exists (KV `update` at revision 0) or the entry's
//!   lease has ended (KV `update` at the revision read). Either write is a compare-and-swap on the bucket's
//!   revision: of two nodes racing for one agent exactly one write lands and the other gets
//!   [`LeaseError::LostRace`]. Every claim writes epoch = previous epoch + 1, so epochs only
//!   grow (a released lease keeps its epoch; see [`Leases::release`]).
//! - **Renew** updates at the revision the owner last wrote; if anything else wrote since
//!   (another node took over after the lease ended) it fails with [`LeaseError::Lost`].
//! - **Release** writes the same epoch with an ended lease, so the next claim need not wait.
//!
//! # Clocks
//!
//! Expiry compares the deadline in the value (the owner's wall clock at the last renew plus
//! the lease duration) with the claimer's wall clock, so leases assume the nodes' clocks
//! differ by less than [`LeaseConfig::max_clock_skew`]: a claimer waits that much longer
//! before it takes over, and an owner should stop work `max_clock_skew` before its deadline.
//! **Safety does not rest on clocks**: if a paused or skewed former owner still believes it
//! owns the agent, its journal appends are refused by the log's expected-sequence check once
//! the new owner has fenced the log ([`JournalLog::take_over`](crate::JournalLog::take_over)).
//! Clocks only decide *when* a takeover may happen, never whether two owners can both write.
//!
//! Why not the server's per-key TTL (NATS ≥ 2.11): a key removed by TTL takes its epoch with
//! it, and the next claim could not tell which epoch to write; the deadline in the value keeps
//! the epoch for ever and needs no server feature beyond revision CAS.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::conflict::{CasError, latest_entry, update_checked};
use crate::names::encode_agent;

const VALUE_PREFIX: &str = "arbor-lease/1 ";

/// Settings of the lease bucket.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The KV bucket's name.
    pub bucket: String,
    /// Replicas of the bucket (3 in a 3-server cluster; 1 only for development).
    pub replicas: usize,
    /// How long a claim or renew holds the agent.
    pub duration: Duration,
    /// The largest difference between two nodes' wall clocks the deployment tolerates.
    pub max_clock_skew: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            bucket: "arbor_owners".to_string(),
            replicas: 3,
            duration: Duration::from_secs(10),
            max_clock_skew: Duration::from_millis(500),
        }
    }
}

impl LeaseConfig {
    /// Sets the number of replicas.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets the lease duration.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Sets the tolerated clock skew.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }
}

/// What a lease operation failed on.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The agent is owned by a live lease.
    #[error("agent `{agent}` is held by `{owner}` (epoch {epoch}) for {remaining:?} more")]
    Held {
        /// The agent.
        agent: String,
        /// Its owner.
        owner: String,
        /// The owner's epoch.
        epoch: u64,
        /// How long until the lease (plus the tolerated skew) ends, on this node's clock.
        remaining: Duration,
    },
    /// Another node's claim landed between this node's read and its write.
    #[error("another node claimed agent `{agent}` first")]
    LostRace {
        /// The agent.
        agent: String,
    },
    /// The lease was taken over (or changed) since this node last wrote it: the node no
    /// longer owns the agent and must stop work for it.
    #[error("lease on agent `{agent}` at epoch {epoch} was lost")]
    Lost {
        /// The agent.
        agent: String,
        /// The epoch this node held.
        epoch: u64,
    },
    /// The bucket holds a value arbor did not write.
    #[error("lease of agent `{agent}` is unreadable: {value:?}")]
    Corrupt {
        /// The agent.
        agent: String,
        /// The value found (lossy UTF-8).
        value: String,
    },
    /// The bucket could not be created or opened.
    #[error("lease bucket `{bucket}`")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A read or write could not be completed (timeout, connection); its outcome is unknown
    /// for a write, so the caller re-reads before trusting anything.
    #[error("lease {op} for agent `{agent}`")]
    Nats {
        /// What was tried: "read", "claim", "renew", "release".
        op: &'static str,
        /// The agent.
        agent: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
}

/// A lease this node holds: the agent, its epoch, and the revision to write at next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    agent: String,
    node: String,
    epoch: u64,
    revision: u64,
    until: SystemTime,
}

impl Lease {
    /// The agent.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The owning node (this one).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The owner's epoch: stamped on every journal append while this lease is held.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The bucket revision of the last write of this lease.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When the lease ends (this node's clock, at the last claim or renew).
    pub fn until(&self) -> SystemTime {
        self.until
    }
}

/// A lease entry as read from the bucket (anyone's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The owner named in the entry.
    pub node: String,
    /// Its epoch.
    pub epoch: u64,
    /// Its deadline.
    pub until: SystemTime,
    /// The entry's bucket revision.
    pub revision: u64,
}

/// The lease bucket (cheap to clone; every clone uses the same connection).
#[derive(Clone)]
pub struct Leases {
    store: kv::Store,
    config: LeaseConfig,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("config", &self.config)
            .finish()
    }
}

impl Leases {
    /// Opens the lease bucket, creating it if it does not exist.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use arbor_cluster::{LeaseConfig, Leases};
    /// let client = async_nats::connect("127.0.0.1:4222").await?;
    /// let leases = Leases::open(async_nats::jetstream::new(client), LeaseConfig::default()).await?;
    /// let lease = leases.claim("counter-7", "node-a").await?;
    /// println!("own counter-7 at epoch {}", lease.epoch());
    /// # Ok(()) }
    /// ```
    pub async fn open(js: jetstream::Context, config: LeaseConfig) -> Result<Self, LeaseError> {
        let bucket_err = |source: async_nats::Error| LeaseError::Bucket {
            bucket: config.bucket.clone(),
            source,
        };
        let store = match js.get_key_value(config.bucket.clone()).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: config.bucket.clone(),
                    description: "arbor: agent ownership leases".to_string(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| bucket_err(e.into()))?,
        };
        Ok(Self { store, config })
    }

    /// The settings.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The current entry for `agent`, if any, read from the bucket's stream leader.
    pub async fn get(&self, agent: &str) -> Result<Option<LeaseRecord>, LeaseError> {
        match self.latest(agent).await? {
            Some(latest) if !latest.deleted => {
                Ok(Some(parse(agent, &latest.value, latest.revision)?))
            }
            _ => Ok(None),
        }
    }

    /// The key's last write, from the stream leader. Not `Store::entry`: that is a direct get,
    /// which a lagging replica may answer with an older entry (a claim would then lose its
    /// CAS for nothing, and `get` would show a former owner).
    async fn latest(&self, agent: &str) -> Result<Option<Latest>, LeaseError> {
        let latest = latest_entry(&self.store, &encode_agent(agent))
            .await
            .map_err(|e| nats("read", agent, e))?;
        Ok(latest.map(|(revision, value)| Latest {
            deleted: value.is_none(),
            value: value.unwrap_or_default(),
            revision,
        }))
    }

    /// Claims `agent` for `node` (see the module docs for when it succeeds).
    pub async fn claim(&self, agent: &str, node: &str) -> Result<Lease, LeaseError> {
        let latest = self.latest(agent).await?;
        let now = SystemTime::now();
        let until = now + self.config.duration;
        let lost_race = || LeaseError::LostRace {
            agent: agent.to_string(),
        };
        // Revision 0 demands that the key has no entry at all. (Not `Store::create`: on a
        // conflict it re-reads with a direct get to tell "exists" from other failures, and a
        // lagging replica can miss the winner's entry.)
        let (epoch, expected) = match latest {
            None => (1, 0),
            // Deleted or purged by an operator: the epoch is gone, but every epoch was written
            // at a revision at least as large, so one past this revision exceeds all before.
            Some(latest) if latest.deleted => (latest.revision + 1, latest.revision),
            Some(latest) => {
                let current = parse(agent, &latest.value, latest.revision)?;
                // The deadline is the owner's clock; ours may be behind by the skew.
                let ends = current.until + self.config.max_clock_skew;
                if let Ok(remaining) = ends.duration_since(now) {
                    return Err(LeaseError::Held {
                        agent: agent.to_string(),
                        owner: current.node,
                        epoch: current.epoch,
                        remaining,
                    });
                }
                (current.epoch + 1, latest.revision)
            }
        };
        // No newer entry counts as ours: two claims from one node at once write the same
        // bytes, and both must not believe they won. (A claim whose reply was lost reads as
        // a lost race; the entry runs out and the agent is claimed again.)
        let revision = self
            .write(agent, encode(epoch, until, node), expected, "claim", |_| {
                false
            })
            .await
            .map_err(|e| e.unwrap_or_else(lost_race))?;
        Ok(Lease {
            agent: agent.to_string(),
            node: node.to_string(),
            epoch,
            revision,
            until,
        })
    }

    /// Extends `lease` by the lease duration from now; [`LeaseError::Lost`] if anyone wrote
    /// the entry since this node did.
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), LeaseError> {
        let until = SystemTime::now() + self.config.duration;
        let value = encode(lease.epoch, until, &lease.node);
        lease.revision = self.write_at(lease, value, "renew").await?;
        lease.until = until;
        Ok(())
    }

    /// Gives the agent up: the entry keeps the epoch and ends now, so the next claim succeeds
    /// at once. [`LeaseError::Lost`] if someone else wrote it since.
    pub async fn release(&self, lease: Lease) -> Result<(), LeaseError> {
        let value = encode(lease.epoch, UNIX_EPOCH, &lease.node);
        self.write_at(&lease, value, "release").await.map(|_| ())
    }

    async fn write_at(
        &self,
        lease: &Lease,
        value: Bytes,
        op: &'static str,
    ) -> Result<u64, LeaseError> {
        let (agent, epoch, node) = (&lease.agent, lease.epoch, &lease.node);
        // The holder's earlier renewals carry its epoch and node (a new claim has a new epoch).
        let ours = |value: &[u8]| {
            parse(agent, value, 0).is_ok_and(|record| record.epoch == epoch && &record.node == node)
        };
        self.write(agent, value, lease.revision, op, ours)
            .await
            .map_err(|e| {
                e.unwrap_or_else(|| LeaseError::Lost {
                    agent: agent.clone(),
                    epoch,
                })
            })
    }

    /// Writes the agent's entry at `revision`. `Err(None)`: someone else wrote it since (the
    /// caller's lost-race error). A refusal is judged by the entry (see [`crate::conflict`]):
    /// one that `ours` recognises is this writer's own earlier write whose reply was lost.
    /// Gives up after a third of the lease: the next renewal tries again, and a lease that
    /// runs out is given up anyway.
    async fn write(
        &self,
        agent: &str,
        value: Bytes,
        revision: u64,
        op: &'static str,
        ours: impl Fn(&[u8]) -> bool,
    ) -> Result<u64, Option<LeaseError>> {
        let deadline = Instant::now() + self.config.duration / 3;
        update_checked(
            &self.store,
            &encode_agent(agent),
            value,
            revision,
            deadline,
            ours,
        )
        .await
        .map_err(|e| match e {
            CasError::Lost => None,
            CasError::Failed(e) => Some(nats(op, agent, e)),
        })
    }
}

/// A key's last write as the stream holds it.
struct Latest {
    deleted: bool,
    value: Bytes,
    revision: u64,
}

fn nats(op: &'static str, agent: &str, e: impl Into<async_nats::Error>) -> LeaseError {
    LeaseError::Nats {
        op,
        agent: agent.to_string(),
        source: e.into(),
    }
}

fn encode(epoch: u64, until: SystemTime, node: &str) -> Bytes {
    let ms = until
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Bytes::from(format!("{VALUE_PREFIX}{epoch} {ms} {node}"))
}

fn parse(agent: &str, value: &[u8], revision: u64) -> Result<LeaseRecord, LeaseError> {
    let corrupt = || LeaseError::Corrupt {
        agent: agent.to_string(),
        value: String::from_utf8_lossy(value).into_owned(),
    };
    let text = std::str::from_utf8(value).map_err(|_| corrupt())?;
    let rest = text.strip_prefix(VALUE_PREFIX).ok_or_else(corrupt)?;
    let mut parts = rest.splitn(3, ' ');
    let epoch = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(corrupt)?;
    let ms: u64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(corrupt)?;
    let node = parts.next().ok_or_else(corrupt)?;
    Ok(LeaseRecord {
        node: node.to_string(),
        epoch,
        until: UNIX_EPOCH + Duration::from_millis(ms),
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let until = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let record = parse("k", &encode(42, until, "node a"), 7).expect("parses");
        assert_eq!(record.epoch, 42);
        assert_eq!(record.until, until);
        assert_eq!(record.node, "node a");
        assert_eq!(record.revision, 7);
        assert!(matches!(
            parse("k", b"arbor-lease/1 x 1 n", 1),
            Err(LeaseError::Corrupt { .. })
        ));
        assert!(matches!(
            parse("k", b"hello", 1),
            Err(LeaseError::Corrupt { .. })
        ));
    }
}
