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
