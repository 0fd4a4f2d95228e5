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

/// The tests run one at a time: each holds several runtimes, and sled 0.34's concurrency
/// control is one lock for the whole process, so a runtime dropped (its databases flushed)
/// while another test's runtime writes a transaction can deadlock the process (seen with
/// gdb: a drop's flush waiting on stability while a transaction waits for the write lock).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Waits until every agent has a live owner among `nodes`, the one placement names (a node
/// that looked dead for a moment on a loaded machine gets its agents back by rebalancing).
async fn settled(rt: &Runtime, nodes: &[&str], within: Duration) -> BTreeMap<String, String> {
    let until = Instant::now() + within;
    loop {
        let status = rt
            .cluster_status()
            .await
            .expect("cluster mode")
            .expect("status");
        let placed: BTreeMap<String, String> = status
            .agents
            .iter()
            .filter(|a| a.owner.is_some() && a.owner == a.placed)
            .filter_map(|a| Some((a.name.clone(), a.owner.clone()?)))
            .filter(|(_, o)| nodes.contains(&o.as_str()))
            .collect();
        if placed.len() == status.agents.len() {
            return placed;
        }
        assert!(Instant::now() < until, "not settled: {:?}", status.agents);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_spread_answer_from_every_node_and_survive_a_dead_node() {
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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

/// The owner of `agent` among `nodes`, by the cluster's leases.
async fn owner_of<'a>(nodes: &'a [Runtime], agent: &str) -> &'a Runtime {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let owners = owners(&nodes[0]).await;
        if let Some(Some(owner)) = owners.get(agent)
            && let Some(rt) = nodes.iter().find(|rt| rt.node() == Some(owner.as_str()))
            && rt.lookup(agent).is_some()
        {
            return rt;
        }
        assert!(Instant::now() < until, "{agent} has no owner: {owners:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agents_send_reaches_an_agent_on_another_node() {
    let _serial = SERIAL.lock().await;
    use arbor_protocols::counter::{CounterMsg, CounterReply};
    use arbor_protocols::toolbox::{ToolboxMsg, ToolboxReply};
    let cluster = NatsCluster::start(3).await.expect("nats cluster");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = vec![
        node(&cluster, "node-a", dirs[0].path()).await,
        node(&cluster, "node-b", dirs[1].path()).await,
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The toolbox imports every host function (and calls the `echo` tool).
    let grants = arbor::agent::wasm::Capabilities::all(["echo"]);
    nodes[0]
        .spawn(Spawn::wasm_bytes("sender", arbor_modules::TOOLBOX).capabilities(grants))
        .await
        .expect("spawn the sender");
    let sender_node = owner_of(&nodes, "sender").await.node().map(str::to_string);
    // Counters until one lands on the other node.
    let mut target = None;
    for i in 0..16 {
        let name = format!("counter-{i}");
        nodes[0]
            .spawn(Spawn::wasm_bytes(name.clone(), arbor_modules::COUNTER))
            .await
            .expect("spawn a counter");
        if owner_of(&nodes, &name).await.node().map(str::to_string) != sender_node {
            target = Some(name);
            break;
        }
    }
    let target = target.expect("16 counters all on the sender's node");
    for rt in &nodes {
        let reply: ToolboxReply = rt
            .call(
                "sender",
                &ToolboxMsg::Send {
                    to: target.clone(),
                    by: 5,
                },
            )
            .await
            .expect("send");
        assert_eq!(reply, ToolboxReply::Sent);
    }
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let count: CounterReply = nodes[1].call(&target, &CounterMsg::Get).await.expect("get");
        if count.count == 10 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the sends did not arrive: {count:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A send to a name no node knows is refused at once, as on one node.
    let refused: ToolboxReply = nodes[1]
        .call(
            "sender",
            &ToolboxMsg::Send {
                to: "nobody".into(),
                by: 1,
            },
        )
        .await
        .expect("call");
    assert!(
        matches!(refused, ToolboxReply::Failed { .. }),
        "{refused:?}"
    );
    for rt in &nodes {
        rt.shutdown().await.unwrap();
    }
}

/// Traffic from every node (most of it crosses to the owner) to `agents`, every message kind,
/// until `stop`. kv-buggy answers a `Get` of an "unlucky" key (~1 % of keys) wrongly: every
/// other round of four (put, get, scan, delete) uses one.
fn kv_load(
    nodes: &[Runtime],
    agents: &[&str],
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let unlucky = (0..)
        .map(|n| format!("u{n}"))
        .find(|key| arbor_protocols::kv::is_unlucky(key))
        .unwrap();
    let agents: Vec<String> = agents.iter().map(|a| a.to_string()).collect();
    let mut load = Vec::new();
    for rt in nodes {
        let (rt, stop, unlucky, agents) =
            (rt.clone(), stop.clone(), unlucky.clone(), agents.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                for agent in &agents {
                    let key = if (i / 4).is_multiple_of(2) {
                        unlucky.clone()
                    } else {
                        format!("k{}", i % 7)
                    };
                    let msg = match i % 4 {
                        0 => KvMsg::Put {
                            key,
                            value: i.to_string(),
                        },
                        1 => KvMsg::Get { key },
                        2 => KvMsg::Scan {
                            prefix: "k".into(),
                            limit: 3,
                        },
                        _ => KvMsg::Delete { key },
                    };
                    let _ = rt.call::<_, KvReply>(agent, &msg).await;
                }
            }
        }));
    }
    load
}

/// Two nodes, `node-a` and `node-b`, and the kv agents `orders` and `profiles` spawned
/// through the first (for the evolution tests).
async fn orders_and_profiles(cluster: &NatsCluster, dirs: &[tempfile::TempDir]) -> Vec<Runtime> {
    let nodes = vec![
        node(cluster, "node-a", dirs[0].path()).await,
        node(cluster, "node-b", dirs[1].path()).await,
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    for agent in ["orders", "profiles"] {
        nodes[0]
            .spawn(Spawn::wasm_bytes(agent, arbor_modules::KV))
            .await
            .expect("spawn");
    }
    nodes
}

/// An arbiter configuration that decides on a few hundred samples (< 3 % at 95 %).
fn quick_evolution(watch: Duration) -> arbor::shadow::ArbiterConfig {
    use arbor::shadow::{Approval, ArbiterConfig, Policy, ShadowLimits};
    ArbiterConfig {
        approval: Approval::Suggest,
        policy: Policy {
            target_failure_rate: 0.03,
            min_per_kind: 3,
            ..Policy::default()
        },
        limits: ShadowLimits {
            deadline: Duration::from_secs(60),
            ..ShadowLimits::default()
        },
        watch,
        watch_samples: 0,
        ..ArbiterConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evolution_on_the_owner_promotes_kv_v2_rejects_kv_buggy_and_survives_a_failover() {
    let _serial = SERIAL.lock().await;
    use arbor::shadow::{Arbiter, Outcome, Stage};
    let cluster = NatsCluster::start(3).await.expect("nats cluster");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = orders_and_profiles(&cluster, &dirs).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = kv_load(&nodes, &["orders", "profiles"], &stop);
    let config = quick_evolution(Duration::from_millis(300));
    let plans = [
        ("orders", arbor_modules::KV_V2, "kv-v2"),
        ("profiles", arbor_modules::KV_BUGGY, "kv-buggy"),
    ];
    let mut arbiters = BTreeMap::new();
    for (agent, bytes, name) in plans {
        let owner = owner_of(&nodes, agent).await;
        let arbiter = Arbiter::new(owner.system().clone(), config.clone()).expect("arbiter");
        let candidate = arbiter.admit(agent, name, bytes).expect("admit");
        arbiter
            .evaluate(agent, candidate, Vec::new())
            .expect("evaluate");
        arbiters.insert(agent, (arbiter, candidate));
    }
    for (agent, (arbiter, _)) in &arbiters {
        let status = tokio::time::timeout(
            Duration::from_secs(120),
            arbiter.wait(agent, |s| s.is_settled()),
        )
        .await
        .expect("settled in time")
        .expect("status");
        match *agent {
            "orders" => assert_eq!(status.stage, Stage::AwaitingApproval, "{status:?}"),
            _ => assert_eq!(status.stage, Stage::Done(Outcome::Rejected), "{status:?}"),
        }
    }
    let (orders_arbiter, kv_v2) = &arbiters["orders"];
    let kv_v2 = *kv_v2;
    orders_arbiter.promote("orders").await.expect("promote");
    put(&nodes[1], "orders", "after", "promotion")
        .await
        .expect("put");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    drop(arbiters);

    // The owner dies: the survivor recovers orders running kv-v2, with its state.
    let owner_name = owner_of(&nodes, "orders").await.node().unwrap().to_string();
    let index = nodes
        .iter()
        .position(|rt| rt.node() == Some(owner_name.as_str()))
        .unwrap();
    drop(nodes.remove(index));
    let survivor = &nodes[0];
    let value = retrying(survivor, Duration::from_secs(20), || {
        get(survivor, "orders", "after")
    })
    .await;
    assert_eq!(value.as_deref(), Some("promotion"));
    let running = owner_of(&nodes, "orders")
        .await
        .lookup("orders")
        .unwrap()
        .running()
        .await
        .unwrap()
        .0;
    assert_eq!(running, arbor::agent::BehaviourId::Wasm(kv_v2));
    survivor.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evolution_with_shadows_on_another_node_promotes_kv_v2_rejects_kv_buggy_and_rolls_back() {
    let _serial = SERIAL.lock().await;
    use arbor::shadow::{Arbiter, EvaluationOptions, Outcome, ShadowPlace, Stage};
    let cluster = NatsCluster::start(3).await.expect("nats cluster");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = orders_and_profiles(&cluster, &dirs).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = kv_load(&nodes, &["orders", "profiles"], &stop);
    // Every node sees the other live (where the shadows go).
    for rt in &nodes {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let status = rt.cluster_status().await.expect("cluster").expect("status");
            if status.nodes.iter().filter(|n| n.live).count() == nodes.len() {
                break;
            }
            assert!(Instant::now() < until, "nodes not all live: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A long watch: the rollback is asked for while it runs.
    let config = quick_evolution(Duration::from_secs(300));
    let plans = [
        ("orders", arbor_modules::KV_V2, "kv-v2"),
        ("profiles", arbor_modules::KV_BUGGY, "kv-buggy"),
    ];
    let mut arbiters = BTreeMap::new();
    for (agent, bytes, name) in plans {
        let owner = owner_of(&nodes, agent).await;
        let arbiter = Arbiter::new(owner.system().clone(), config.clone()).expect("arbiter");
        arbiter.place_shadows_on(owner.shadow_nodes().expect("clustered"));
        let candidate = arbiter.admit(agent, name, bytes).expect("admit");
        let options = EvaluationOptions {
            shadows: ShadowPlace::Elsewhere,
            ..EvaluationOptions::default()
        };
        arbiter
            .evaluate_with(agent, candidate, options)
            .expect("evaluate");
        let other = nodes
            .iter()
            .find_map(|rt| rt.node().filter(|n| Some(*n) != owner.node()))
            .unwrap()
            .to_string();
        arbiters.insert(agent, (arbiter, other));
    }
    for (agent, (arbiter, other)) in &arbiters {
        let status = tokio::time::timeout(
            Duration::from_secs(120),
            arbiter.wait(agent, |s| s.is_settled()),
        )
        .await
        .expect("settled in time")
        .expect("status");
        // The shadows ran on the node that does not own the agent.
        assert_eq!(status.shadows_on.as_ref(), Some(other), "{status:?}");
        match *agent {
            "orders" => {
                assert_eq!(status.stage, Stage::AwaitingApproval, "{status:?}");
                assert!(status.shadow.samples > 0, "{status:?}");
            }
            _ => assert_eq!(status.stage, Stage::Done(Outcome::Rejected), "{status:?}"),
        }
        let history = arbiter.history(agent).expect("history");
        let placed = format!("shadows on node `{other}`");
        assert!(
            history
                .iter()
                .any(|r| format!("{:?}", r.event).contains(&placed)),
            "the lineage says where the shadows ran: {history:?}"
        );
    }

    // Promoted, watched by the previous module on the other node, rolled back by an operator.
    let (orders, _) = &arbiters["orders"];
    orders.promote("orders").await.expect("promote");
    // The watch's tally is published every 64 samples (read, not waited on).
    let within = Instant::now() + Duration::from_secs(60);
    let watching = loop {
        let status = orders.status("orders").expect("status");
        if status.watch.samples >= 64 {
            break status;
        }
        assert!(
            Instant::now() < within,
            "the watch compares no inputs: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(watching.stage, Stage::Watching, "{watching:?}");
    put(&nodes[1], "orders", "before", "rollback")
        .await
        .expect("put");
    orders
        .rollback("orders", "operator test")
        .await
        .expect("rollback");
    let status = orders.status("orders").expect("status");
    assert_eq!(status.stage, Stage::Done(Outcome::RolledBack), "{status:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let owner = owner_of(&nodes, "orders").await;
    let running = owner.lookup("orders").unwrap().running().await.unwrap().0;
    assert_eq!(
        running, watching.current,
        "back on the module it ran before"
    );
    assert_eq!(
        get(&nodes[0], "orders", "before")
            .await
            .expect("get")
            .as_deref(),
        Some("rollback")
    );
    drop(arbiters);
    for rt in nodes {
        rt.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_shadow_node_fails_the_evaluation_and_production_goes_on() {
    let _serial = SERIAL.lock().await;
    use arbor::shadow::{Arbiter, EvaluationOptions, Outcome, Policy, ShadowPlace, Stage};
    let cluster = NatsCluster::start(3).await.expect("nats cluster");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = node(&cluster, "node-a", dirs[0].path()).await;
    let b = node(&cluster, "node-b", dirs[1].path()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // An agent node-a owns.
    let mut agent = String::new();
    for i in 0.. {
        agent = format!("kv-{i}");
        let spawned = a
            .spawn(Spawn::wasm_bytes(&agent, arbor_modules::KV))
            .await
            .expect("spawn");
        if spawned.node() == Some("node-a") {
            break;
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = kv_load(std::slice::from_ref(&a), &[agent.as_str()], &stop);
    let config = arbor::shadow::ArbiterConfig {
        // Far more samples than the test lets it see: the shadows are still running when
        // their node goes.
        policy: Policy {
            target_failure_rate: 0.000_1,
            ..Policy::default()
        },
        ..quick_evolution(Duration::from_secs(1))
    };
    let arbiter = Arbiter::new(a.system().clone(), config).expect("arbiter");
    arbiter.place_shadows_on(a.shadow_nodes().expect("clustered"));
    let candidate = arbiter
        .admit(&agent, "kv-v2", arbor_modules::KV_V2)
        .expect("admit");
    let options = EvaluationOptions {
        shadows: ShadowPlace::Node("node-b".into()),
        ..EvaluationOptions::default()
    };
    arbiter
        .evaluate_with(&agent, candidate, options)
        .expect("evaluate");
    let shadowing = tokio::time::timeout(
        Duration::from_secs(60),
        arbiter.wait(&agent, |s| s.stage != Stage::Gate),
    )
    .await
    .expect("past the gate in time")
    .expect("status");
    assert_eq!(shadowing.stage, Stage::Shadowing, "{shadowing:?}");
    assert_eq!(shadowing.shadows_on.as_deref(), Some("node-b"));
    drop(b);
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        arbiter.wait(&agent, |s| s.is_settled()),
    )
    .await
    .expect("the evaluation ends")
    .expect("status");
    match &status.stage {
        Stage::Done(Outcome::Failed(reason)) => {
            assert!(
                reason.contains("node-b"),
                "the reason names the node: {reason}"
            )
        }
        other => panic!("expected a failed evaluation, got {other:?}: {status:?}"),
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    // Production never noticed: it answers, and runs the module it ran.
    put(&a, &agent, "after", "lost shadows").await.expect("put");
    assert_eq!(
        get(&a, &agent, "after").await.expect("get").as_deref(),
        Some("lost shadows")
    );
    assert_eq!(
        a.lookup(&agent).unwrap().running().await.unwrap().0,
        shadowing.current
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_that_join_a_fresh_cluster_together_all_join() {
    let _serial = SERIAL.lock().await;
    let cluster = NatsCluster::start(3).await.expect("nats cluster");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // No bucket exists yet: all three create them at once.
    let (a, b, c) = tokio::join!(
        node(&cluster, "node-a", dirs[0].path()),
        node(&cluster, "node-b", dirs[1].path()),
        node(&cluster, "node-c", dirs[2].path()),
    );
    a.spawn(Spawn::wasm_bytes("kv", arbor_modules::KV))
        .await
        .expect("spawn");
    put(&b, "kv", "k", "v").await.expect("put");
    assert_eq!(get(&c, "kv", "k").await.expect("get").as_deref(), Some("v"));
    for rt in [a, b, c] {
        rt.shutdown().await.unwrap();
    }
}

// An agent whose journal stopped taking its records on this node (another writer fenced it)
// used to crash on every input: its restarts re-used the fenced journal, so a burst of calls
// reached the root supervisor's restart intensity, and the root gave up — every agent of the
// node gone, the runtime stopped. It now stops here as `shutdown` (not restarted), the owner
// steps down and claims it again with a fresh takeover, and it serves with its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_journal_moves_the_agent_instead_of_crashing_the_node() {
    let _serial = SERIAL.lock().await;
    let cluster = NatsCluster::start(3).await.expect("nats cluster");
    let dir = tempfile::tempdir().unwrap();
    let a = node(&cluster, "node-a", dir.path()).await;
    a.spawn(Spawn::wasm_bytes("fenced", arbor_modules::KV))
        .await
        .expect("spawn");
    a.spawn(Spawn::wasm_bytes("bystander", arbor_modules::KV))
        .await
        .expect("spawn");
    put(&a, "fenced", "x", "1").await.expect("put");
    put(&a, "bystander", "y", "1").await.expect("put");

    // Another writer takes the journal over at the next epoch (as a node that claimed the
    // agent would), without touching the lease.
    let client = cluster.connect().await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let log = arbor_cluster::JournalLog::open(js, arbor_cluster::LogConfig::default().replicas(3))
        .await
        .expect("journal stream");
    let last = log.last("fenced").await.expect("read").expect("an entry");
    log.take_over("fenced", last.epoch + 1, "elsewhere")
        .await
        .expect("take over");

    // A burst of inputs into the fenced journal: more than the root's restart intensity.
    let mut failed = 0;
    for i in 0..30 {
        if put(&a, "fenced", "burst", &i.to_string()).await.is_err() {
            failed += 1;
        }
    }
    assert!(failed > 0, "the fenced journal refused nothing");
    retrying(&a, Duration::from_secs(30), || put(&a, "fenced", "x", "2")).await;
    assert_eq!(get(&a, "fenced", "x").await.expect("get"), Some("2".into()));
    assert_eq!(
        get(&a, "bystander", "y")
            .await
            .expect("the rest of the node lives"),
        Some("1".into())
    );
    a.shutdown().await.expect("shutdown");
}
