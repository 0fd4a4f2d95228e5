//! Cluster benchmarks (issue 19): what journaling into NATS JetStream costs a call, each
//! configuration beside the local WAL in the same run.
//!
//! Every configuration is an `AgentSystem` of Wasm `counter` agents (`arbor_modules::COUNTER`,
//! called with `Inc { by: 1 }`) on a 2-worker tokio runtime; a call is answered only once its
//! input and outcome are durable:
//!
//! - `local_wal` (the baseline): the system journals into a local data directory (WAL and
//!   vault in a temporary directory) with group commit, `GroupCommit { max_delay: 0 }`, as the
//!   journaled rows of `benches/agent.rs` do: one fdatasync per call for one caller, shared by
//!   every record written while it runs for many.
//! - `jetstream_r1`: `arbor_cluster::JetStreamStore` on one standalone nats-server with
//!   JetStream, the journal stream, checkpoint bucket and lease bucket at one replica.
//! - `jetstream_r3`: the same on a 3-server cluster, everything at three replicas.
//!
//! The servers are `arbor_cluster::harness::NatsCluster`'s: on this machine, on loopback, each
//! with `jetstream { sync_interval: always }` (the setting arbor requires, see
//! `cluster/src/server.rs`), so an acknowledged append has been fsynced by a quorum of
//! replicas (R3: by 2 of the 3 servers, all on this machine's one disk). Each agent is set up
//! as a node would: its lease claimed in the lease bucket, `JetStreamStore::acquire` at the
//! lease's epoch, then `AgentSystem::spawn`. The client is connected to every server of its
//! cluster (the stream's leader may be another server than the one it talks to: a hop a real
//! node has too). All configurations keep arbor's default checkpoint policy.
//!
//! Groups, one per measurement:
//!
//! - `cluster_call`: one `call` round trip, sequential calls to one agent (criterion's mean).
//! - `cluster_throughput`: 64 agents per configuration, one caller task per agent making
//!   `CALLS_PER_CALLER` sequential calls, all 64 callers at once (64 calls in flight, one per
//!   agent: an agent's calls are sequential). Throughput in calls/s (criterion's elements/s).
//!   `jetstream_r1` is there too, to tell replication from the server's own fsync per write.
//! - printed after the criterion groups, `cluster_latency`: p50/p99/p99.9/mean/max of
//!   individually timed sequential calls, one agent per configuration, the configurations
//!   alternating in blocks so that drift in the machine's load hits all alike (as
//!   `agent_latency_fsync` does), with each one's p50 and p99 as a ratio of `local_wal`'s.
//!
//! - printed, `cluster_nodes`: the same 64 kv agents and 64 callers (each calling through the
//!   agent's owner) on 1 node and on 3 nodes of one 3-server R3 cluster, in calls/s, and the
//!   ratio.
//! - printed, `shadow_placement`: production's call latency on the owner (R3) with no
//!   evaluation, with an evaluation's shadows on the same node, and with them on the other
//!   node (`ShadowPlace::Elsewhere`), in alternating blocks, each as a ratio of the first.
//! - printed last, `cluster_failover`: two runtimes in cluster mode (`RuntimeBuilder::cluster`,
//!   R3, a 3 s lease) share `FAILOVER_AGENTS` kv agents by placement; one of them stops
//!   without draining or releasing its leases (dropped, as a crash leaves them), and the
//!   survivor's callers (64 at a time) call each of the dead node's agents until it answers:
//!   the time from the drop to the first and to the last answer, against the lease.
//!
//! Run with `cargo bench --bench cluster` (`nats-server` ≥ 2.10.23 on PATH or at
//! `$NATS_SERVER_BIN`; without it the bench stops with the install hint);
//! `benches/criterion-summary cluster_` prints the criterion results.

#[path = "support/latency.rs"]
mod latency;
use latency::{fmt_duration, print_percentiles};

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbor::agent::wasm::{EngineConfig, WasmHost};
use arbor::agent::{AgentRef, AgentSpec, AgentSystem};
use arbor::vault::ModuleHash;
use arbor::wal::Durability;
use arbor_cluster::harness::{NatsCluster, find_server, server_version};
use arbor_cluster::{JetStreamStore, LeaseConfig, Leases, StoreConfig};
// The guest counter's protocol (arbor-protocols' types, re-exported by the module catalog).
use arbor_modules::counter::CounterMsg;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use serde::Serialize;

/// The node name the JetStream configurations claim their agents for.
const NODE: &str = "bench-node";

/// Agents of the throughput group, one caller each.
const FLEET: usize = 64;
/// Sequential calls each caller makes per iteration of the throughput group.
const CALLS_PER_CALLER: usize = 8;
const FLEET_CALLS: u64 = (FLEET * CALLS_PER_CALLER) as u64;

fn payload<T: Serialize>(message: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(message).expect("serialisable")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Where a configuration's system journals.
enum Journal {
    /// A local data directory (kept until the bench ends).
    Local { _dir: tempfile::TempDir },
    /// A JetStream store on its own servers (boxed: far larger than a temporary directory).
    JetStream(Box<Remote>),
}

/// A JetStream store, the lease bucket beside it, and the servers they are on.
struct Remote {
    store: JetStreamStore,
    leases: Leases,
    // Dropped last (field order): the servers stop when it goes.
    _cluster: NatsCluster,
}

/// One configuration: an agent system, its counter module and where it journals.
struct Backend {
    label: &'static str,
    system: AgentSystem,
    counter: ModuleHash,
    journal: Journal,
}

impl Backend {
    /// The baseline: a local WAL with group commit.
    fn local_wal(host: &WasmHost) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let system = AgentSystem::builder()
            .journal(dir.path())
            .wasm_host(host.clone())
            .wal(
                arbor::wal::Config::default().durability(Durability::GroupCommit {
                    max_delay: Duration::ZERO,
                }),
            )
            .build()
            .expect("local WAL system");
        Self::with_system("local_wal", system, Journal::Local { _dir: dir })
    }

    /// A JetStream store on `servers` new nats-servers, every asset at `servers` replicas.
    /// Must run on the bench's runtime: the store's writer tasks are spawned on it.
    async fn jetstream(label: &'static str, host: &WasmHost, servers: usize) -> Self {
        let cluster = NatsCluster::start(servers)
            .await
            .unwrap_or_else(|e| panic!("cannot start {servers} nats-server(s): {e}"));
        let client = cluster.connect().await.expect("connect to the servers");
        let js = async_nats::jetstream::new(client);
        let leases = Leases::open(js.clone(), LeaseConfig::default().replicas(servers))
            .await
            .expect("lease bucket");
        let store = JetStreamStore::open(js, NODE, StoreConfig::default().replicas(servers))
            .await
            .expect("journal stream and checkpoint bucket");
        let system = AgentSystem::builder()
            .journal_store(Arc::new(store.clone()))
            .wasm_host(host.clone())
            .build()
            .expect("JetStream system");
        Self::with_system(
            label,
            system,
            Journal::JetStream(Box::new(Remote {
                store,
                leases,
                _cluster: cluster,
            })),
        )
    }

    fn with_system(label: &'static str, system: AgentSystem, journal: Journal) -> Self {
        let counter = system
            .add_module("counter", arbor_modules::COUNTER)
            .expect("counter module");
        Self {
            label,
            system,
            counter,
            journal,
        }
    }

    /// A counter agent named `name`, owned as a cluster node owns one (lease, acquire) when
    /// the journal is JetStream.
    async fn agent(&self, name: &str) -> AgentRef {
        if let Journal::JetStream(remote) = &self.journal {
            let lease = remote
                .leases
                .claim(name, NODE)
                .await
                .expect("claim the lease");
            remote
                .store
                .acquire(name, lease.epoch())
                .await
                .expect("acquire the agent's log");
        }
        self.system
            .spawn(AgentSpec::wasm(name, self.counter))
            .await
            .expect("spawn")
    }

    async fn fleet(&self) -> Arc<Vec<AgentRef>> {
        let mut agents = Vec::with_capacity(FLEET);
        for i in 0..FLEET {
            agents.push(self.agent(&format!("fleet-{i}")).await);
        }
        Arc::new(agents)
    }
}

/// The configurations in the order every table gives them (the baseline first).
struct Backends {
    local: Backend,
    r1: Backend,
    r3: Backend,
}

impl Backends {
    fn all(&self) -> [&Backend; 3] {
        [&self.local, &self.r1, &self.r3]
    }
}

fn call_latency(c: &mut Criterion, rt: &tokio::runtime::Runtime, agents: &[(&str, &AgentRef)]) {
    let inc = payload(&CounterMsg::Inc { by: 1 });
    let mut group = c.benchmark_group("cluster_call");
    // A call takes up to milliseconds: criterion's default linear sampling (1, 2, … 100
    // iterations per sample) would need far more than the measurement time.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(30);
    for (label, agent) in agents {
        group.bench_function(*label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        agent.call(inc.clone()).await.expect("call");
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// Every agent of `fleet` gets `CALLS_PER_CALLER` sequential calls from a task of its own, all
/// tasks at once; returns when every call is answered.
async fn concurrent_calls(fleet: &Arc<Vec<AgentRef>>, inc: &Arc<[u8]>) {
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..fleet.len() {
        let fleet = Arc::clone(fleet);
        let inc = Arc::clone(inc);
        callers.spawn(async move {
            for _ in 0..CALLS_PER_CALLER {
                fleet[i].call(inc.to_vec()).await.expect("call");
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.expect("caller task");
    }
}

fn throughput(c: &mut Criterion, rt: &tokio::runtime::Runtime, backends: &Backends) {
    let fleets: Vec<(&str, Arc<Vec<AgentRef>>)> = rt.block_on(async {
        let mut fleets = Vec::new();
        for backend in backends.all() {
            fleets.push((backend.label, backend.fleet().await));
        }
        fleets
    });
    let inc: Arc<[u8]> = payload(&CounterMsg::Inc { by: 1 }).into();
    let mut group = c.benchmark_group("cluster_throughput");
    group.throughput(Throughput::Elements(FLEET_CALLS));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for (label, fleet) in &fleets {
        group.bench_function(
            BenchmarkId::new(*label, format!("{FLEET}x{CALLS_PER_CALLER}")),
            |b| b.iter(|| rt.block_on(concurrent_calls(fleet, &inc))),
        );
    }
    group.finish();
    rt.block_on(async {
        for (_, fleet) in &fleets {
            for agent in fleet.iter() {
                agent.stop().await.ok();
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Percentiles, printed: `support/latency.rs`.

/// One timed call per element of the returned vector.
async fn timed_calls(agent: &AgentRef, payload: &[u8], n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        agent.call(payload.to_vec()).await.expect("call");
        out.push(started.elapsed());
    }
    out
}

fn latency_percentiles(rt: &tokio::runtime::Runtime, agents: &[(&str, &AgentRef)]) {
    const N: usize = 4_000;
    const BLOCK: usize = 250;
    let inc = payload(&CounterMsg::Inc { by: 1 });
    let mut latencies: Vec<Vec<Duration>> = agents.iter().map(|_| Vec::with_capacity(N)).collect();
    rt.block_on(async {
        for (_, agent) in agents {
            timed_calls(agent, &inc, 100).await;
        }
        for _ in 0..N / BLOCK {
            for ((_, agent), latencies) in agents.iter().zip(&mut latencies) {
                latencies.extend(timed_calls(agent, &inc, BLOCK).await);
            }
        }
    });
    let labels: Vec<&str> = agents.iter().map(|(label, _)| *label).collect();
    print_percentiles(
        &format!(
            "cluster_latency: {N} sequential calls per configuration, alternating blocks of \
             {BLOCK}, 2-worker runtime (caller on the bench thread); JetStream: nats-server \
             sync_interval always, loopback:"
        ),
        &labels,
        &mut latencies,
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let binary = find_server().unwrap_or_else(|e| panic!("{e}"));
    let version = server_version(&binary).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "cluster bench: {version} ({}), jetstream sync_interval: always",
        binary.display()
    );

    // Room for the latency agents and the three fleets.
    let host = WasmHost::new(EngineConfig {
        max_instances: (3 + 3 * FLEET + 16) as u32,
        ..EngineConfig::default()
    })
    .expect("engine");
    let rt = runtime();
    let backends = rt.block_on(async {
        Backends {
            local: Backend::local_wal(&host),
            r1: Backend::jetstream("jetstream_r1", &host, 1).await,
            r3: Backend::jetstream("jetstream_r3", &host, 3).await,
        }
    });
    let singles: Vec<AgentRef> = rt.block_on(async {
        let mut agents = Vec::new();
        for backend in backends.all() {
            agents.push(backend.agent("latency").await);
        }
        agents
    });
    let agents: Vec<(&str, &AgentRef)> = backends
        .all()
        .iter()
        .map(|b| b.label)
        .zip(singles.iter())
        .collect();

    call_latency(&mut criterion, &rt, &agents);
    throughput(&mut criterion, &rt, &backends);
    criterion.final_summary();
    latency_percentiles(&rt, &agents);
    nodes_throughput(&rt);
    shadow_placement(&rt);
    failover_time(&rt);

    // The systems stop (their writers drained) before their servers do.
    rt.block_on(async {
        for backend in backends.all() {
            backend.system.shutdown().await.ok();
        }
    });
    drop(backends);
}

/// Agents in the failover measurement.
const FAILOVER_AGENTS: usize = 1000;
/// The lease in the failover measurement.
const FAILOVER_LEASE: Duration = Duration::from_secs(3);

/// `cluster_failover` (see the module docs).
fn failover_time(rt: &tokio::runtime::Runtime) {
    use arbor::{ClusterOptions, Runtime, Spawn};
    use arbor_modules::kv::{KvMsg, KvReply};
    use futures_util::StreamExt;

    rt.block_on(async {
        let cluster = NatsCluster::start(3).await.expect("nats cluster");
        let dirs: Vec<tempfile::TempDir> =
            (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut nodes = Vec::new();
        for (name, dir) in ["fo-a", "fo-b"].iter().zip(&dirs) {
            let options = ClusterOptions::new(cluster.urls(), *name)
                .replicas(3)
                .lease(FAILOVER_LEASE)
                .max_clock_skew(Duration::from_millis(100));
            let runtime = Runtime::builder()
                .data_dir(dir.path())
                .call_timeout(Duration::from_secs(30))
                .cluster(options)
                .build()
                .await
                .expect("cluster node");
            nodes.push(runtime);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let module = nodes[0].add_module("kv", arbor_modules::KV).expect("module");
        let started = Instant::now();
        for i in 0..FAILOVER_AGENTS {
            nodes[0]
                .spawn(Spawn::module(format!("fo-{i}"), module))
                .await
                .expect("spawn");
        }
        let spawn_time = started.elapsed();
        let status = nodes[0].cluster_status().await.expect("cluster").expect("status");
        let on_b: Vec<String> = status
            .agents
            .iter()
            .filter(|a| a.owner.as_deref() == Some("fo-b"))
            .map(|a| a.name.clone())
            .collect();
        let put = |key: &str| KvMsg::Put {
            key: key.into(),
            value: "v".into(),
        };
        for agent in &on_b {
            let _: KvReply = nodes[0].call(agent, &put("before")).await.expect("put");
        }
        let survivor = nodes.remove(0);
        let dead = nodes.pop().expect("fo-b");
        let killed = Instant::now();
        drop(dead);
        let answers: Vec<Duration> = futures_util::stream::iter(on_b.iter())
            .map(|agent| {
                let survivor = survivor.clone();
                async move {
                    loop {
                        let get = KvMsg::Get {
                            key: "before".into(),
                        };
                        match survivor.call::<_, KvReply>(agent, &get).await {
                            Ok(KvReply::Value { value: Some(_) }) => return killed.elapsed(),
                            Ok(other) => panic!("{agent}: lost its write: {other:?}"),
                            Err(error) if error.is_retryable() => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(error) => panic!("{agent}: {error}"),
                        }
                    }
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let first = answers.iter().min().copied().unwrap_or_default();
        let last = answers.iter().max().copied().unwrap_or_default();
        println!();
        println!(
            "cluster_failover: {FAILOVER_AGENTS} kv agents on 2 nodes (R3, lease {}), spawned in {}; \
             the node with {} of them dropped without releasing: first answer on the survivor \
             after {}, all {} answering after {} (lease + {})",
            fmt_duration(FAILOVER_LEASE),
            fmt_duration(spawn_time),
            on_b.len(),
            fmt_duration(first),
            on_b.len(),
            fmt_duration(last),
            fmt_duration(last.saturating_sub(FAILOVER_LEASE)),
        );
        survivor.shutdown().await.ok();
    });
}

/// A cluster-mode runtime named `name` on `cluster` (R3), its data in `dir`.
async fn cluster_node(
    cluster: &NatsCluster,
    name: &str,
    dir: &std::path::Path,
    lease: Duration,
) -> arbor::Runtime {
    let options = arbor::ClusterOptions::new(cluster.urls(), name)
        .replicas(3)
        .lease(lease)
        .max_clock_skew(Duration::from_millis(100));
    arbor::Runtime::builder()
        .data_dir(dir)
        .call_timeout(Duration::from_secs(30))
        .cluster(options)
        .build()
        .await
        .expect("cluster node")
}

/// Sequential calls each caller makes in `cluster_nodes`.
const NODE_CALLS: usize = 40;

/// `cluster_nodes`: the same 64 kv agents and 64 callers (one per agent, each calling through
/// the agent's owner) on 1 node and on 3 nodes of one 3-server R3 cluster, all on this machine.
fn nodes_throughput(rt: &tokio::runtime::Runtime) {
    use arbor::Spawn;
    use arbor_modules::kv::{KvMsg, KvReply};

    let mut rates = Vec::new();
    for count in [1usize, 3] {
        let rate = rt.block_on(async {
            let cluster = NatsCluster::start(3).await.expect("nats cluster");
            let dirs: Vec<tempfile::TempDir> = (0..count)
                .map(|_| tempfile::tempdir().expect("dir"))
                .collect();
            let mut nodes = Vec::new();
            for (i, dir) in dirs.iter().enumerate() {
                nodes.push(
                    cluster_node(
                        &cluster,
                        &format!("n{i}"),
                        dir.path(),
                        Duration::from_secs(6),
                    )
                    .await,
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let module = nodes[0]
                .add_module("kv", arbor_modules::KV)
                .expect("module");
            let mut owners = Vec::new();
            for i in 0..FLEET {
                let name = format!("tp-{i}");
                let spawned = nodes[0]
                    .spawn(Spawn::module(name.clone(), module))
                    .await
                    .expect("spawn");
                let owner = nodes
                    .iter()
                    .find(|rt| rt.node() == spawned.node())
                    .expect("owner")
                    .clone();
                owners.push((name, owner));
            }
            // Warm up every agent through its owner.
            for (name, owner) in &owners {
                let _: KvReply = owner
                    .call(name, &KvMsg::Get { key: "k".into() })
                    .await
                    .expect("warm-up");
            }
            let per_node: Vec<usize> = nodes
                .iter()
                .map(|rt| owners.iter().filter(|(_, o)| o.node() == rt.node()).count())
                .collect();
            let started = Instant::now();
            let callers: Vec<_> = owners
                .into_iter()
                .map(|(name, owner)| {
                    tokio::spawn(async move {
                        for i in 0..NODE_CALLS {
                            let put = KvMsg::Put {
                                key: format!("k{i}"),
                                value: "v".into(),
                            };
                            let _: KvReply = owner.call(&name, &put).await.expect("call");
                        }
                    })
                })
                .collect();
            for caller in callers {
                caller.await.expect("caller");
            }
            let rate = (FLEET * NODE_CALLS) as f64 / started.elapsed().as_secs_f64();
            println!(
                "cluster_nodes: {count} node(s), agents per node {per_node:?}: {rate:.0} calls/s"
            );
            for rt in nodes {
                rt.shutdown().await.ok();
            }
            rate
        });
        rates.push(rate);
    }
    println!(
        "cluster_nodes: {FLEET} callers x {NODE_CALLS} kv puts, R3: 3 nodes / 1 node = {:.2}x",
        rates[1] / rates[0]
    );
}

/// Calls timed per block of `shadow_placement`, and the blocks per placement.
const SHADOW_BLOCK: usize = 300;
const SHADOW_BLOCKS: usize = 4;

/// `shadow_placement`: production's call latency on the owner while an evaluation's shadows
/// run nowhere (no evaluation), on the owner, and on the other node.
fn shadow_placement(rt: &tokio::runtime::Runtime) {
    use arbor::Spawn;
    use arbor::shadow::{
        Arbiter, ArbiterConfig, EvaluationOptions, Policy, ShadowLimits, ShadowPlace, Stage,
    };
    use arbor_modules::kv::{KvMsg, KvReply};

    rt.block_on(async {
        let cluster = NatsCluster::start(3).await.expect("nats cluster");
        let dirs: Vec<tempfile::TempDir> =
            (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
        let a = cluster_node(&cluster, "sh-a", dirs[0].path(), Duration::from_secs(6)).await;
        let b = cluster_node(&cluster, "sh-b", dirs[1].path(), Duration::from_secs(6)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // An agent `sh-a` owns (placement decides; spawn until one lands there).
        let mut agent = None;
        for i in 0.. {
            let name = format!("prod-{i}");
            let spawned = a
                .spawn(Spawn::wasm_bytes(&name, arbor_modules::KV))
                .await
                .expect("spawn");
            if spawned.node() == Some("sh-a") {
                agent = Some(name);
                break;
            }
        }
        let agent = agent.expect("an agent on sh-a");
        let config = ArbiterConfig {
            // Tens of thousands of samples: the shadows run for the whole measurement.
            policy: Policy {
                target_failure_rate: 0.000_1,
                ..Policy::default()
            },
            limits: ShadowLimits {
                deadline: Duration::from_secs(3_600),
                ..ShadowLimits::default()
            },
            ..ArbiterConfig::default()
        };
        let arbiter = Arbiter::new(a.system().clone(), config).expect("arbiter");
        arbiter.place_shadows_on(a.shadow_nodes().expect("clustered"));
        let v2 = arbiter
            .admit(&agent, "kv-v2", arbor_modules::KV_V2)
            .expect("admit");
        let mut i = 0u64;
        let mut call = || {
            i += 1;
            match i % 2 {
                0 => KvMsg::Put {
                    key: format!("k{}", i % 50),
                    value: i.to_string(),
                },
                _ => KvMsg::Get {
                    key: format!("k{}", i % 50),
                },
            }
        };
        for _ in 0..200 {
            let _: KvReply = a.call(&agent, &call()).await.expect("warm-up");
        }
        let labels = ["no_shadows", "shadows_same_node", "shadows_other_node"];
        let mut latencies: Vec<Vec<Duration>> = labels.iter().map(|_| Vec::new()).collect();
        for _ in 0..SHADOW_BLOCKS {
            for (at, label) in labels.iter().enumerate() {
                let place = match at {
                    0 => None,
                    1 => Some(ShadowPlace::Here),
                    _ => Some(ShadowPlace::Elsewhere),
                };
                if let Some(shadows) = place {
                    let options = EvaluationOptions {
                        shadows,
                        ..EvaluationOptions::default()
                    };
                    arbiter
                        .evaluate_with(&agent, v2, options)
                        .expect("evaluate");
                    let status = arbiter
                        .wait(&agent, |s| s.stage != Stage::Gate)
                        .await
                        .expect("status");
                    assert_eq!(status.stage, Stage::Shadowing, "{label}: {status:?}");
                }
                for _ in 0..SHADOW_BLOCK {
                    let message = call();
                    let started = Instant::now();
                    let _: KvReply = a.call(&agent, &message).await.expect("call");
                    latencies[at].push(started.elapsed());
                }
                if at > 0 {
                    let status = arbiter.status(&agent).expect("status");
                    assert_eq!(status.stage, Stage::Shadowing, "{label}: {status:?}");
                    arbiter.cancel(&agent).expect("cancel");
                    arbiter
                        .wait(&agent, |s| s.is_settled())
                        .await
                        .expect("cancelled");
                }
            }
        }
        print_percentiles(
            &format!(
                "shadow_placement: production's kv calls on the owner (R3), {SHADOW_BLOCKS} \
                 blocks of {SHADOW_BLOCK} per placement, alternating; the shadows (kv-v2 and \
                 the control) mirror every call; both nodes on this machine:"
            ),
            &labels,
            &mut latencies,
        );
        b.shutdown().await.ok();
        a.shutdown().await.ok();
    });
}
