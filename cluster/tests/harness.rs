//! The harness itself: `NatsCluster::start(1)` runs one standalone server (nats-server refuses
//! clustered JetStream without routes) on which R1 assets work — the cluster bench's R1 row.

use arbor_cluster::harness::NatsCluster;
use arbor_cluster::{JournalLog, LogConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_serves_r1_appends() {
    let cluster = NatsCluster::start(1)
        .await
        .unwrap_or_else(|e| panic!("cannot start the NATS server: {e}"));
    let client = cluster.connect().await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let log = JournalLog::open(js, LogConfig::default().replicas(1))
        .await
        .expect("R1 journal stream");
    let mut writer = log.take_over("solo", 1, "node-a").await.expect("take over");
    writer
        .append(&[b"input", b"outcome"])
        .await
        .expect("append");
    let entries = log.read("solo", 1).await.expect("read");
    assert!(entries.iter().any(|e| e.records.len() == 2));
}
