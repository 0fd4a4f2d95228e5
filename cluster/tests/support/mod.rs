//! Shared set-up for the cluster tests: a real 3-server NATS cluster and the two stores on it.

#![allow(dead_code)] // each test file uses a different part

use std::time::Duration;

use arbor_cluster::harness::NatsCluster;
use arbor_cluster::{JournalLog, LeaseConfig, Leases, LogConfig};

/// Replicas in every test: the cluster's size.
pub const REPLICAS: usize = 3;

/// A running cluster with the lease bucket and journal stream at R3.
pub struct Setup {
    pub cluster: NatsCluster,
    pub client: async_nats::Client,
    pub leases: Leases,
    pub log: JournalLog,
}

/// Lease settings for tests: short leases so takeovers happen within a test's time.
pub fn lease_config(duration: Duration) -> LeaseConfig {
    LeaseConfig::default()
        .replicas(REPLICAS)
        .duration(duration)
        .max_clock_skew(Duration::from_millis(100))
}

/// Starts the cluster (panicking with the install hint if `nats-server` is missing) and opens
/// both stores.
pub async fn setup(lease: Duration) -> Setup {
    let cluster = NatsCluster::start(REPLICAS)
        .await
        .unwrap_or_else(|e| panic!("cannot start the NATS cluster: {e}"));
    let client = cluster.connect().await.expect("connect");
    let (leases, log) = open(&client, lease).await;
    Setup {
        cluster,
        client,
        leases,
        log,
    }
}

/// Opens the stores over `client` (another node's view of the same cluster).
pub async fn open(client: &async_nats::Client, lease: Duration) -> (Leases, JournalLog) {
    let js = async_nats::jetstream::new(client.clone());
    let leases = Leases::open(js.clone(), lease_config(lease))
        .await
        .expect("lease bucket");
    let log = JournalLog::open(js, LogConfig::default().replicas(REPLICAS))
        .await
        .expect("journal stream");
    (leases, log)
}

/// Claims `agent` for `node`, retrying while another holds it, up to `within`.
pub async fn claim_when_free(
    leases: &Leases,
    agent: &str,
    node: &str,
    within: Duration,
) -> arbor_cluster::Lease {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match leases.claim(agent, node).await {
            Ok(lease) => return lease,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{node} could not claim {agent} within {within:?}: {e}"),
        }
    }
}

/// Rewrites `agent`'s checkpoint index in the bucket `arbor_checkpoints` by compare-and-swap at
/// its latest revision (read from the stream leader: a replica's direct get may lag the
/// writer's last index), as `(epoch, lsns)`: `epoch` given, or the one it holds; the positions
/// kept. A rewrite of what it holds freezes it: a dead writer's index write still in flight
/// fails after it. The agent's own writer may be writing it at the same moment: read again.
/// Returns the epoch and positions it held.
pub async fn rewrite_index(
    client: &async_nats::Client,
    agent: &str,
    epoch: Option<u64>,
) -> (u64, Vec<u64>) {
    let js = async_nats::jetstream::new(client.clone());
    let bucket = js.get_key_value("arbor_checkpoints").await.expect("bucket");
    let stream = js
        .get_stream("KV_arbor_checkpoints")
        .await
        .expect("the bucket's stream");
    let mut last = None;
    for _ in 0..50 {
        let index = stream
            .get_last_raw_message_by_subject(&format!("$KV.arbor_checkpoints.{agent}"))
            .await
            .expect("an index");
        let (held, lsns): (u64, Vec<u64>) = rmp_serde::from_slice(&index.payload).expect("decode");
        let value = rmp_serde::to_vec(&(epoch.unwrap_or(held), &lsns)).expect("encode");
        match bucket.update(agent, value.into(), index.sequence).await {
            Ok(_) => return (held, lsns),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the index kept changing: {last:?}");
}
