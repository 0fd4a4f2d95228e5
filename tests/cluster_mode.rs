//! Cluster mode on a real 3-server NATS JetStream cluster, three runtimes in this process:
//! agents spread over the nodes, calls from any node reach the owner, a node that dies has its
//! agents recovered elsewhere with every acknowledged write, a graceful shutdown drains.
//! (Killing host processes with signals is `tests/cluster_faults.rs`.)

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arbor::{ClusterOptions, Error, Runtime, Spawn};
use arbor_cluster::harness::NatsCluster;
use arbor_protocols::kv::{KvMsg, KvReply};

const LEASE: Duration = Duration::from_millis(1500);

async fn node(cluster: &NatsCluster, name: &str, dir: &std::path::Path) -> Runtime {
    let options = ClusterOptions::new(cluster.urls(), name)
        .replicas(3)
        .lease(LEASE)
        .max_clock_skew(Duration::from_millis(100))
        .tick(Duration::from_millis(200));
    Runtime::builder()
        .data_dir(dir)
        .call_timeout(Duration::from_secs(10))
        .cluster(options)
        .build()
        .await
        .unwrap_or_else(|e| panic!("node {name}: {}", arbor::agent::report::chain(&e)))
}

async fn put(rt: &Runtime, agent: &str, key: &str, value: &str) -> Result<(), Error> {
    let msg = KvMsg::Put {
        key: key.into(),
        value: value.into(),
    };
    let _: KvReply = rt.call(agent, &msg).await?;
    Ok(())
}

async fn get(rt: &Runtime, agent: &str, key: &str) -> Result<Option<String>, Error> {
    let reply: KvReply = rt.call(agent, &KvMsg::Get { key: key.into() }).await?;
    match reply {
        KvReply::Value { value } => Ok(value),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Retries `op` while it fails retryably, up to `within`.
async fn retrying<T, F, Fut>(rt: &Runtime, within: Duration, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let until = Instant::now() + within;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(error) if error.is_retryable() && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => {
                let status = rt.cluster_status().await;
                panic!(
                    "{}; the cluster: {status:?}; this node runs {:?}, its tree {:?}",
                    arbor::agent::report::chain(&error),
                    rt.agents(),
                    rt.tree()
                )
            }
        }
    }
}

async fn owners(rt: &Runtime) -> BTreeMap<String, Option<String>> {
    let status = rt
        .cluster_status()
        .await
        .expect("cluster mode")
        .expect("status");
    status
        .agents
        .into_iter()
        .map(|a| (a.name, a.owner))
        .collect()
}

/// Waits until every agent has a live owner among `nodes`.
async fn settled(rt: &Runtime, nodes: &[&str], within: Duration) -> BTreeMap<String, String> {
    let until = Instant::now() + within;
    loop {
        let owners = owners(rt).await;
        let placed: BTreeMap<String, String> = owners
            .iter()
            .filter_map(|(a, o)| Some((a.clone(), o.clone()?)))
            .filter(|(_, o)| nodes.contains(&o.as_str()))
            .collect();
        if placed.len() == owners.len() {
            return placed;
        }
        assert!(Instant::now() < until, "not settled: {owners:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_spread_answer_from_every_node_and_survive_a_dead_node() {
    let cluster = NatsCluster::start(3).await.expect("nats cluster");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let names = ["node-a", "node-b", "node-c"];
    let mut nodes = Vec::new();
    for (name, dir) in names.iter().zip(&dirs) {
        nodes.push(node(&cluster, name, dir.path()).await);
    }
    // Every node sees the whole membership before the spawns, so placement spreads them.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let agents: Vec<String> = (0..12).map(|i| format!("kv-{i}")).collect();
    for agent in &agents {
        nodes[0]
            .spawn(Spawn::wasm_bytes(agent.clone(), arbor_modules::KV))
            .await
            .unwrap_or_else(|e| panic!("spawn {agent}: {}", arbor::agent::report::chain(&e)));
    }
    let placed = settled(&nodes[0], &names, Duration::from_secs(10)).await;
    let used: std::collections::BTreeSet<&String> = placed.values().collect();
    assert_eq!(
        used.len(),
        3,
        "12 agents on 3 nodes use all three: {placed:?}"
    );

    // Writes from every node, reads from every other: the owner answers wherever asked.
    let mut acked: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, agent) in agents.iter().enumerate() {
        for round in 0..3 {
            let from = &nodes[(i + round) % 3];
            let (key, value) = (format!("k{round}"), format!("{agent}-{round}"));
            put(from, agent, &key, &value).await.expect("put");
            acked.insert((agent.clone(), key), value);
        }
    }
    for ((agent, key), value) in &acked {
        for rt in &nodes {
            assert_eq!(
                get(rt, agent, key).await.expect("get").as_ref(),
                Some(value)
            );
        }
    }

    // node-c dies (no drain, no release): its agents come back on the others after the lease.
    let dead = nodes.pop().expect("node-c");
    let lost: Vec<String> = placed
        .iter()
        .filter(|(_, o)| o.as_str() == "node-c")
        .map(|(a, _)| a.clone())
        .collect();
    assert!(!lost.is_empty());
    drop(dead);
    for agent in &lost {
        let key = "k0".to_string();
        let value = retrying(&nodes[0], Duration::from_secs(20), || {
            get(&nodes[0], agent, &key)
        })
        .await;
        assert_eq!(value.as_ref(), acked.get(&(agent.clone(), key.clone())));
    }
    let placed = settled(&nodes[1], &names[..2], Duration::from_secs(20)).await;
    assert_eq!(placed.len(), agents.len());
    for ((agent, key), value) in &acked {
        let got = retrying(&nodes[1], Duration::from_secs(10), || {
            get(&nodes[1], agent, key)
        })
        .await;
        assert_eq!(
            got.as_ref(),
            Some(value),
            "{agent}/{key} after the failover"
        );
    }

    // A graceful shutdown hands node-b's agents to node-a before it leaves.
    let b = nodes.pop().expect("node-b");
    b.shutdown().await.expect("shutdown");
    drop(b);
    let placed = settled(&nodes[0], &names[..1], Duration::from_secs(10)).await;
    assert_eq!(placed.len(), agents.len());
    for ((agent, key), value) in &acked {
        let got = retrying(&nodes[0], Duration::from_secs(10), || {
            get(&nodes[0], agent, key)
        })
        .await;
        assert_eq!(got.as_ref(), Some(value), "{agent}/{key} after the drain");
    }
    // Every epoch grew with every move: no two owners ever shared one.
    let status = nodes[0].cluster_status().await.unwrap().unwrap();
    assert!(status.agents.iter().all(|a| a.epoch >= 1));
    nodes[0].shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_are_cluster_wide_and_a_stop_from_any_node_stops_the_agent() {
    let cluster = NatsCluster::start(3).await.expect("nats cluster");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = node(&cluster, "node-a", dirs[0].path()).await;
    let b = node(&cluster, "node-b", dirs[1].path()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    a.spawn(Spawn::wasm_bytes("shared", arbor_modules::KV))
        .await
        .expect("spawn");
    let again = b
        .spawn(Spawn::wasm_bytes("shared", arbor_modules::KV))
        .await;
    assert!(
        matches!(
            again,
            Err(Error::Agent(arbor::agent::AgentError::AlreadyExists(_)))
        ),
        "{again:?}"
    );
    put(&b, "shared", "x", "1").await.expect("put");
    let unknown = get(&a, "nobody", "x").await;
    assert!(
        matches!(
            unknown,
            Err(Error::Agent(arbor::agent::AgentError::UnknownAgent(_)))
        ),
        "{unknown:?}"
    );

    b.stop_agent("shared").await.expect("stop");
    let status = a.cluster_status().await.unwrap().unwrap();
    let shared = status.agents.iter().find(|x| x.name == "shared").unwrap();
    assert_eq!(shared.state, "stopped");
    assert_eq!(shared.owner, None);
    assert!(a.lookup("shared").is_none() && b.lookup("shared").is_none());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
