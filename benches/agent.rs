//! Agent benchmarks, each beside its baseline in the same run:
//!
//! - `agent_call_1thread` / `agent_call`: one `call` round trip to a Wasm `counter` agent
//!   (journal off; journal on under group commit) beside a plain ractor actor doing the same in
//!   native Rust, on a current-thread runtime (the CPU cost) and on two worker threads (with the
//!   cross-thread wake-ups a caller sees).
//! - `agent_cast`: 10,000 casts then one call (so all are handled), same three.
//! - `agent_instantiate`: a Wasm `counter` instance from the pre-linked module.
//! - `agent_imports`: what a guest's host import costs (issue 18: the host is moved into the
//!   store for the call, no hand-off). `handle/*`: one `WasmBehaviour::handle` on the bench's
//!   thread, no actor: `counter` answering `Get` (no import) beside `toolbox` answering `Now`
//!   (one `now` import) and `Echo` (one `call_tool`, the echo tool answering in the host).
//!   `call_1thread/*`: the same inputs as `call`s to agents of an ephemeral system on a
//!   current-thread runtime (the whole CPU path of a call).
//! - `agent_metrics`: the cost of recording arbor's metrics on the message path. One `call` to a
//!   Wasm `counter` agent on a current-thread runtime (journal off, and journal on with durability
//!   `Never`) with no recorder (`no_recorder`: the `metrics` macros find none and do nothing,
//!   which is arbor without `RuntimeBuilder::metrics`), with a real
//!   `metrics-exporter-prometheus` recorder built as `src/telemetry.rs` builds it (histogram
//!   buckets for `*_seconds` and `*_bytes`, the catalog described) (`prometheus`), and with the
//!   per-agent `agent` label on as `RuntimeBuilder::agent_metric_labels(true)` sets it
//!   (`prometheus_agent_labels`). The `metrics` facade takes one global recorder per process
//!   and never lets it go, so the recorder is not installed globally: each timed batch runs
//!   inside `metrics::with_local_recorder`, which sets it for the current thread only. That is
//!   exact for the message path because the runtime is current-thread: the caller, the agent
//!   actor and its completion task all run on that thread. After the group the bench renders the
//!   recorder and prints how many inputs (`arbor_messages_in_total`, which must equal the calls
//!   made under it) and WAL records it counted. Under `Never` the WAL write runs on the caller's
//!   task when no write round is under way and otherwise on the WAL's flusher thread, whose
//!   counter increments the local recorder does not see (a third of them in the first run):
//!   they cost the flusher, not the message path's thread.
//! - `agent_throughput`: 64 agents, 32,000 casts per iteration from 4 tokio tasks on the
//!   2-worker runtime (each task casts round-robin over all 64 agents, yielding every 64 casts),
//!   then one call to each agent (so every cast is handled): 64 Wasm `counter` agents with the
//!   journal off and with the journal on under `Never` (journaled to the OS cache, one WAL for
//!   all), beside 64 plain ractor counter actors fed the same way. Throughput in messages/s.
//! - after the criterion groups, printed (criterion gives means; these are percentiles of
//!   individually timed calls, configurations alternating in blocks so drift hits all alike):
//!   - `agent_latency`: p50/p99/p99.9/mean of 6,000 sequential `call`s per configuration on the
//!     2-worker runtime (the caller on the bench's thread, the agent on a worker): ractor
//!     native, Wasm journal off, Wasm journal `Never`;
//!   - `agent_latency_fsync`: the same with an fdatasync per call: Wasm journal `Always`, Wasm
//!     journal `GroupCommit { max_delay: 0 }` (one caller, so nobody shares its fdatasync),
//!     beside a raw loop of one 128-byte `write` + `fdatasync` on a file in the same temporary
//!     directory (the disk's own fdatasync latency); 3,000 each;
//!   - `agent_metrics_latency`: the metrics cases above, journal off, 20,000 calls each;
//!   - resident memory per idle agent with 10,000 Wasm counter agents (each a ractor actor with
//!     its instance), beside 10,000 plain ractor actors.
//!
//! One file per crate benched, as criterion's `[[bench]]` targets are: the groups share their
//! set-up (the engine, runtimes, agents) and are read beside each other's baselines.
//!
//! Run with `cargo bench --bench agent`; `benches/criterion-summary agent_` prints the criterion
//! results with the ratios.

#[path = "support/latency.rs"]
mod latency;
use latency::print_percentiles;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbor::agent::tools::{Echo, Tools};
use arbor::agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};
use arbor::agent::{AgentRef, AgentSpec, AgentSystem, Behaviour, Host, HostCalls, HostError};
use arbor::wal::Durability;
// The guest counter's protocol, as the module defines it.
use arbor_modules::counter::CounterMsg as WasmCounterMsg;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

/// The native baseline: a counter actor.
struct NativeCounter;

enum CounterMsg {
    Inc(i64),
    Get(RpcReplyPort<i64>),
    IncAndGet(i64, RpcReplyPort<i64>),
}

impl Actor for NativeCounter {
    type Msg = CounterMsg;
    type State = i64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<CounterMsg>, _: ()) -> Result<i64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<CounterMsg>,
        message: CounterMsg,
        count: &mut i64,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CounterMsg::Inc(by) => *count += by,
            CounterMsg::Get(reply) => {
                let _ = reply.send(*count);
            }
            CounterMsg::IncAndGet(by, reply) => {
                *count += by;
                let _ = reply.send(*count);
            }
        }
        Ok(())
    }
}

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

/// Resident set size in bytes (Linux).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The mailbox of `subjects`' agents: twice `agent_cast`'s batch.
const CAST_MAILBOX: usize = 20_000;

struct Subjects {
    native: ActorRef<CounterMsg>,
    ephemeral: AgentRef,
    journaled: AgentRef,
    _systems: (AgentSystem, AgentSystem),
    _dir: tempfile::TempDir,
}

fn subjects(rt: &tokio::runtime::Runtime, host: &WasmHost) -> Subjects {
    rt.block_on(async {
        let (native, _) = Actor::spawn(None, NativeCounter, ())
            .await
            .expect("native actor");
        // Room for `agent_cast`'s 10,000 casts and the call after them (the default mailbox
        // holds 10,000, so the call could find it full).
        let ephemeral_system = AgentSystem::builder()
            .wasm_host(host.clone())
            .mailbox(CAST_MAILBOX)
            .build()
            .expect("system");
        let ephemeral = counter_agent(&ephemeral_system).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let journaled_system = AgentSystem::builder()
            .journal(dir.path())
            .wasm_host(host.clone())
            .mailbox(CAST_MAILBOX)
            .wal(
                arbor_wal::Config::default().durability(arbor_wal::Durability::GroupCommit {
                    max_delay: Duration::ZERO,
                }),
            )
            .build()
            .expect("system");
        let journaled = counter_agent(&journaled_system).await;
        Subjects {
            native,
            ephemeral,
            journaled,
            _systems: (ephemeral_system, journaled_system),
            _dir: dir,
        }
    })
}

fn call_group(c: &mut Criterion, group_name: &str, rt: &tokio::runtime::Runtime, host: &WasmHost) {
    let subjects = subjects(rt, host);
    let inc = payload(&WasmCounterMsg::Inc { by: 1 });
    let mut group = c.benchmark_group(group_name);
    group.bench_function("ractor_native", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    // The same reply mechanism `AgentRef::call` uses.
                    let (tx, rx) = ractor::concurrency::oneshot();
                    subjects
                        .native
                        .send_message(CounterMsg::IncAndGet(1, tx.into()))
                        .expect("send");
                    rx.await.expect("reply");
                }
                start.elapsed()
            })
        })
    });
    for (label, agent) in [
        ("wasm_journal_off", &subjects.ephemeral),
        ("wasm_group_commit", &subjects.journaled),
    ] {
        group.bench_function(label, |b| {
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

fn calls(c: &mut Criterion) {
    // Room for the throughput group's 128 agents beside the others.
    let host = WasmHost::new(EngineConfig {
        max_instances: 400,
        ..EngineConfig::default()
    })
    .expect("engine");
    // One thread: the CPU cost of a call. Two workers: what a caller on another thread sees,
    // wake-ups included.
    let one_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    call_group(c, "agent_call_1thread", &one_thread, &host);
    let rt = runtime();
    call_group(c, "agent_call", &rt, &host);
    let subjects = subjects(&rt, &host);
    let inc = payload(&WasmCounterMsg::Inc { by: 1 });

    const CASTS: u64 = 10_000;
    let mut group = c.benchmark_group("agent_cast");
    group.throughput(Throughput::Elements(CASTS));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("ractor_native", CASTS), |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..CASTS {
                    subjects.native.cast(CounterMsg::Inc(1)).expect("cast");
                }
                ractor::call!(subjects.native, CounterMsg::Get).expect("call")
            })
        })
    });
    let get = payload(&WasmCounterMsg::Get);
    for (label, agent) in [
        ("wasm_journal_off", &subjects.ephemeral),
        ("wasm_group_commit", &subjects.journaled),
    ] {
        group.bench_function(BenchmarkId::new(label, CASTS), |b| {
            b.iter(|| {
                rt.block_on(async {
                    for _ in 0..CASTS {
                        agent.cast(inc.clone()).expect("cast");
                    }
                    agent.call(get.clone()).await.expect("call")
                })
            })
        });
    }
    group.finish();

    let module = host.load(arbor_modules::COUNTER).expect("module");
    let mut group = c.benchmark_group("agent_instantiate");
    group.bench_function("wasm_counter", |b| {
        b.iter(|| {
            WasmBehaviour::instantiate(&host, &module, AgentLimits::default(), Capabilities::none())
                .expect("instance")
        })
    });
    group.finish();

    imports(c, &host, &one_thread);
    metrics_overhead(c, &host);
    throughput(c, &rt, &host);
}

/// Answers the toolbox's imports in the host, as an agent's live host would, minus the journal.
struct BenchHost;

impl HostCalls for BenchHost {
    fn now(&mut self) -> Result<u64, HostError> {
        Ok(1_700_000_000_000_000_000)
    }
    fn random(&mut self) -> Result<u64, HostError> {
        Ok(4)
    }
    fn send(&mut self, _to: &str, _message: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn call_tool(&mut self, _name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        Ok(args.to_vec())
    }
    fn log(&mut self, _level: u8, _line: &str) {}
}

fn imports(c: &mut Criterion, host: &WasmHost, rt: &tokio::runtime::Runtime) {
    use arbor_modules::toolbox::ToolboxMsg;
    let get = payload(&WasmCounterMsg::Get);
    let now = payload(&ToolboxMsg::Now);
    let echo = payload(&ToolboxMsg::Echo { text: "hi".into() });
    let counter = host.load(arbor_modules::COUNTER).expect("counter");
    let toolbox = host.load(arbor_modules::TOOLBOX).expect("toolbox");
    let instance = |module, capabilities| {
        WasmBehaviour::init(host, module, AgentLimits::default(), capabilities, b"")
            .expect("instance")
    };
    let mut group = c.benchmark_group("agent_imports");
    let mut wasm_host = Host::custom(BenchHost);
    for (label, mut behaviour, input) in [
        (
            "handle/counter_no_import",
            instance(&counter, Capabilities::none()),
            &get,
        ),
        (
            "handle/toolbox_now",
            instance(&toolbox, Capabilities::all(["echo"])),
            &now,
        ),
        (
            "handle/toolbox_echo_tool",
            instance(&toolbox, Capabilities::all(["echo"])),
            &echo,
        ),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| behaviour.handle(input, &mut wasm_host).expect("handle"))
        });
    }
    let system = AgentSystem::builder()
        .wasm_host(host.clone())
        .tools(Tools::new().with("echo", Echo))
        .build()
        .expect("system");
    let (counter_agent, toolbox_agent) = rt.block_on(async {
        let counter_hash = system
            .add_module("counter", arbor_modules::COUNTER)
            .expect("add");
        let toolbox_hash = system
            .add_module("toolbox", arbor_modules::TOOLBOX)
            .expect("add");
        let counter = system
            .spawn(AgentSpec::wasm("imports-counter", counter_hash))
            .await
            .expect("spawn");
        let toolbox = system
            .spawn(
                AgentSpec::wasm("imports-toolbox", toolbox_hash)
                    .capabilities(Capabilities::all(["echo"])),
            )
            .await
            .expect("spawn");
        (counter, toolbox)
    });
    for (label, agent, input) in [
        ("call_1thread/counter_no_import", &counter_agent, &get),
        ("call_1thread/toolbox_now", &toolbox_agent, &now),
        ("call_1thread/toolbox_echo_tool", &toolbox_agent, &echo),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        agent.call(input.clone()).await.expect("call");
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    rt.block_on(async {
        counter_agent.stop().await.ok();
        toolbox_agent.stop().await.ok();
    });
}

/// A Wasm counter agent in its own journaled system (`dir/wal`, `dir/vault`) with `durability`.
struct Journaled {
    agent: AgentRef,
    _system: AgentSystem,
    _dir: tempfile::TempDir,
}

fn journaled(rt: &tokio::runtime::Runtime, host: &WasmHost, durability: Durability) -> Journaled {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let system = AgentSystem::builder()
            .journal(dir.path())
            .wasm_host(host.clone())
            .wal(arbor_wal::Config::default().durability(durability))
            .build()
            .expect("system");
        let agent = counter_agent(&system).await;
        Journaled {
            agent,
            _system: system,
            _dir: dir,
        }
    })
}

/// A Wasm `counter` agent named `counter` in `system`.
async fn counter_agent(system: &AgentSystem) -> AgentRef {
    let counter = system
        .add_module("counter", arbor_modules::COUNTER)
        .expect("module");
    system
        .spawn(AgentSpec::wasm("counter", counter))
        .await
        .expect("agent")
}

fn ephemeral_system(host: &WasmHost) -> AgentSystem {
    AgentSystem::builder()
        .wasm_host(host.clone())
        .build()
        .expect("system")
}

// ---------------------------------------------------------------------------------------------
// Metrics recording overhead.

/// A Prometheus recorder configured as arbor's exporter configures its own, with the catalog
/// described (which also creates the fixed-label counters at zero).
fn prometheus_recorder() -> PrometheusRecorder {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            arbor::metrics::SECONDS_BUCKETS,
        )
        .expect("seconds buckets")
        .set_buckets_for_metric(
            Matcher::Suffix("_bytes".into()),
            arbor::metrics::BYTES_BUCKETS,
        )
        .expect("bytes buckets")
        .build_recorder();
    metrics::with_local_recorder(&recorder, arbor::metrics::describe);
    recorder
}

/// Sums the samples of counter `name` (every label set) in a Prometheus text rendering.
fn counter_total(rendered: &str, name: &str) -> f64 {
    rendered
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How a batch of calls records metrics.
#[derive(Clone, Copy, PartialEq)]
enum Recording {
    None,
    Prometheus,
    PrometheusAgentLabels,
}

impl Recording {
    const ALL: [(Recording, &'static str); 3] = [
        (Recording::None, "no_recorder"),
        (Recording::Prometheus, "prometheus"),
        (Recording::PrometheusAgentLabels, "prometheus_agent_labels"),
    ];

    /// Runs `batch` under this recording (`recorder` is the thread-local recorder).
    fn run<T>(self, recorder: &PrometheusRecorder, batch: impl FnOnce() -> T) -> T {
        match self {
            Recording::None => batch(),
            Recording::Prometheus | Recording::PrometheusAgentLabels => {
                arbor::metrics::set_agent_labels(self == Recording::PrometheusAgentLabels);
                let out = metrics::with_local_recorder(recorder, batch);
                arbor::metrics::set_agent_labels(false);
                out
            }
        }
    }
}

fn metrics_overhead(c: &mut Criterion, host: &WasmHost) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ephemeral = ephemeral_system(host);
    let agent = rt.block_on(async { counter_agent(&ephemeral).await });
    let never = journaled(&rt, host, Durability::Never);
    let recorder = prometheus_recorder();
    let inc = payload(&WasmCounterMsg::Inc { by: 1 });
    // Calls made under the recorder, to check it saw them all.
    let mut recorded_calls = 0u64;
    let mut journaled_calls = 0u64;

    let mut group = c.benchmark_group("agent_metrics");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (journal, target) in [("journal_off", &agent), ("journal_never", &never.agent)] {
        for (recording, label) in Recording::ALL {
            if journal == "journal_never" && recording == Recording::PrometheusAgentLabels {
                continue;
            }
            group.bench_function(format!("{journal}/{label}"), |b| {
                b.iter_custom(|iters| {
                    if recording != Recording::None {
                        recorded_calls += iters;
                        if journal == "journal_never" {
                            journaled_calls += iters;
                        }
                    }
                    recording.run(&recorder, || {
                        rt.block_on(async {
                            let start = Instant::now();
                            for _ in 0..iters {
                                target.call(inc.clone()).await.expect("call");
                            }
                            start.elapsed()
                        })
                    })
                })
            });
        }
    }
    group.finish();

    let rendered = recorder.handle().render();
    println!(
        "agent_metrics: the local recorder counted {} inputs (arbor_messages_in_total) of the {} \
         calls made under it, and {} WAL records (arbor_wal_records_total) of the {} the \
         journaled calls under it wrote (2 per call)",
        counter_total(&rendered, arbor::metrics::MESSAGES_IN),
        recorded_calls,
        counter_total(&rendered, arbor::metrics::WAL_RECORDS),
        2 * journaled_calls,
    );
    rt.block_on(async {
        agent.stop().await.ok();
        never.agent.stop().await.ok();
    });
}

// ---------------------------------------------------------------------------------------------
// Throughput with many agents.

const FLEET: usize = 64;
const SENDERS: usize = 4;
const CASTS_PER_SENDER_PER_AGENT: usize = 125;
const FLEET_CASTS: u64 = (FLEET * SENDERS * CASTS_PER_SENDER_PER_AGENT) as u64;

/// `SENDERS` tokio tasks each cast `CASTS_PER_SENDER_PER_AGENT` messages to every target,
/// round-robin, yielding every 64 casts; returns when all have sent.
async fn fan_out<T, F>(targets: &Arc<Vec<T>>, cast: F)
where
    T: Send + Sync + 'static,
    F: Fn(&T) + Clone + Send + 'static,
{
    let mut senders = Vec::with_capacity(SENDERS);
    for _ in 0..SENDERS {
        let targets = Arc::clone(targets);
        let cast = cast.clone();
        senders.push(tokio::spawn(async move {
            let mut sent = 0usize;
            for _ in 0..CASTS_PER_SENDER_PER_AGENT {
                for target in targets.iter() {
                    cast(target);
                    sent += 1;
                    if sent.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender task");
    }
}

async fn wasm_fleet(system: &AgentSystem) -> Arc<Vec<AgentRef>> {
    let counter = system
        .add_module("counter", arbor_modules::COUNTER)
        .expect("module");
    let mut agents = Vec::with_capacity(FLEET);
    for i in 0..FLEET {
        agents.push(
            system
                .spawn(AgentSpec::wasm(format!("t{i}"), counter))
                .await
                .expect("agent"),
        );
    }
    Arc::new(agents)
}

fn throughput(c: &mut Criterion, rt: &tokio::runtime::Runtime, host: &WasmHost) {
    let ephemeral = ephemeral_system(host);
    let dir = tempfile::tempdir().expect("tempdir");
    let journaled_system = AgentSystem::builder()
        .journal(dir.path())
        .wasm_host(host.clone())
        .wal(arbor_wal::Config::default().durability(Durability::Never))
        .build()
        .expect("system");
    let (natives, journal_off, journal_never) = rt.block_on(async {
        let mut natives = Vec::with_capacity(FLEET);
        for _ in 0..FLEET {
            natives.push(
                Actor::spawn(None, NativeCounter, ())
                    .await
                    .expect("native actor")
                    .0,
            );
        }
        (
            Arc::new(natives),
            wasm_fleet(&ephemeral).await,
            wasm_fleet(&journaled_system).await,
        )
    });
    let inc: Arc<[u8]> = payload(&WasmCounterMsg::Inc { by: 1 }).into();
    let get = payload(&WasmCounterMsg::Get);

    let mut group = c.benchmark_group("agent_throughput");
    group.throughput(Throughput::Elements(FLEET_CASTS));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    let id = |label: &str| BenchmarkId::new(label, format!("{FLEET}x{SENDERS}"));
    group.bench_function(id("ractor_native"), |b| {
        b.iter(|| {
            rt.block_on(async {
                fan_out(&natives, |actor: &ActorRef<CounterMsg>| {
                    actor.cast(CounterMsg::Inc(1)).expect("cast");
                })
                .await;
                let mut total = 0;
                for actor in natives.iter() {
                    total += ractor::call!(actor, CounterMsg::Get).expect("call");
                }
                total
            })
        })
    });
    for (label, agents) in [
        ("wasm_journal_off", &journal_off),
        ("wasm_journal_never", &journal_never),
    ] {
        group.bench_function(id(label), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let inc = Arc::clone(&inc);
                    fan_out(agents, move |agent: &AgentRef| {
                        agent.cast(inc.to_vec()).expect("cast");
                    })
                    .await;
                    let mut replies = 0;
                    for agent in agents.iter() {
                        replies += agent.call(get.clone()).await.expect("call").len();
                    }
                    replies
                })
            })
        });
    }
    group.finish();
    rt.block_on(async {
        for agent in journal_off.iter().chain(journal_never.iter()) {
            agent.stop().await.ok();
        }
        for native in natives.iter() {
            native.stop(None);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Percentiles, printed: `support/latency.rs`.

/// `configurations` empty vectors with room for `n` latencies each.
fn latency_vecs(configurations: usize, n: usize) -> Vec<Vec<Duration>> {
    (0..configurations).map(|_| Vec::with_capacity(n)).collect()
}

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

async fn timed_native_calls(actor: &ActorRef<CounterMsg>, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (tx, rx) = ractor::concurrency::oneshot();
        actor
            .send_message(CounterMsg::IncAndGet(1, tx.into()))
            .expect("send");
        rx.await.expect("reply");
        out.push(started.elapsed());
    }
    out
}

/// One 128-byte `write` + `fdatasync` per element, appended to `file`.
fn timed_raw_fdatasync(file: &mut std::fs::File, n: usize) -> Vec<Duration> {
    let record = [0x5au8; 128];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        file.write_all(&record).expect("raw write");
        file.sync_data().expect("raw fdatasync");
        out.push(started.elapsed());
    }
    out
}

fn latency_percentiles(host: &WasmHost) {
    let rt = runtime();
    let inc = payload(&WasmCounterMsg::Inc { by: 1 });

    // In process: the caller on this thread, the agents on the 2 workers.
    {
        const N: usize = 6_000;
        const BLOCK: usize = 1_000;
        let ephemeral = ephemeral_system(host);
        let (native, agent) = rt.block_on(async {
            let agent = counter_agent(&ephemeral).await;
            let native = Actor::spawn(None, NativeCounter, ())
                .await
                .expect("native actor")
                .0;
            (native, agent)
        });
        let never = journaled(&rt, host, Durability::Never);
        let mut latencies = latency_vecs(3, N);
        rt.block_on(async {
            // Warm up all three.
            timed_native_calls(&native, 500).await;
            timed_calls(&agent, &inc, 500).await;
            timed_calls(&never.agent, &inc, 500).await;
            for _ in 0..N / BLOCK {
                latencies[0].extend(timed_native_calls(&native, BLOCK).await);
                latencies[1].extend(timed_calls(&agent, &inc, BLOCK).await);
                latencies[2].extend(timed_calls(&never.agent, &inc, BLOCK).await);
            }
        });
        print_percentiles(
            &format!(
                "agent_latency: {N} sequential calls per configuration, alternating blocks of \
                 {BLOCK}, 2-worker runtime (caller on the bench thread):"
            ),
            &["ractor_native", "wasm_journal_off", "wasm_journal_never"],
            &mut latencies,
        );
        rt.block_on(async {
            agent.stop().await.ok();
            never.agent.stop().await.ok();
        });
        native.stop(None);
    }

    // With an fdatasync per call, beside the disk's own write + fdatasync.
    {
        const N: usize = 3_000;
        const BLOCK: usize = 250;
        let always = journaled(&rt, host, Durability::Always);
        let group_commit = journaled(
            &rt,
            host,
            Durability::GroupCommit {
                max_delay: Duration::ZERO,
            },
        );
        let raw_dir = tempfile::tempdir().expect("tempdir");
        let mut raw = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(raw_dir.path().join("raw"))
            .expect("open raw baseline file");
        let mut latencies = latency_vecs(3, N);
        timed_raw_fdatasync(&mut raw, 100);
        rt.block_on(async {
            timed_calls(&always.agent, &inc, 100).await;
            timed_calls(&group_commit.agent, &inc, 100).await;
        });
        for _ in 0..N / BLOCK {
            latencies[0].extend(timed_raw_fdatasync(&mut raw, BLOCK));
            rt.block_on(async {
                latencies[1].extend(timed_calls(&always.agent, &inc, BLOCK).await);
                latencies[2].extend(timed_calls(&group_commit.agent, &inc, BLOCK).await);
            });
        }
        print_percentiles(
            &format!(
                "agent_latency_fsync: {N} sequential calls per configuration, alternating blocks \
                 of {BLOCK}, 2-worker runtime; raw = one 128 B write + fdatasync appended to a \
                 file in the same filesystem:"
            ),
            &[
                "raw_write_fdatasync",
                "wasm_journal_always",
                "wasm_journal_group_commit",
            ],
            &mut latencies,
        );
        rt.block_on(async {
            always.agent.stop().await.ok();
            group_commit.agent.stop().await.ok();
        });
    }

    // The metrics recorder on the message path (CPU cost: current-thread runtime).
    {
        const N: usize = 20_000;
        const BLOCK: usize = 2_000;
        let one_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let ephemeral = ephemeral_system(host);
        let agent = one_thread.block_on(async { counter_agent(&ephemeral).await });
        let recorder = prometheus_recorder();
        let mut latencies = latency_vecs(Recording::ALL.len(), N);
        for (recording, _) in Recording::ALL {
            recording.run(&recorder, || {
                one_thread.block_on(timed_calls(&agent, &inc, 1_000));
            });
        }
        for _ in 0..N / BLOCK {
            for ((recording, _), latencies) in Recording::ALL.iter().zip(&mut latencies) {
                latencies.extend(recording.run(&recorder, || {
                    one_thread.block_on(timed_calls(&agent, &inc, BLOCK))
                }));
            }
        }
        let labels: Vec<&str> = Recording::ALL.iter().map(|(_, label)| *label).collect();
        print_percentiles(
            &format!(
                "agent_metrics_latency: {N} calls per configuration, alternating blocks of \
                 {BLOCK}, current-thread runtime, journal off:"
            ),
            &labels,
            &mut latencies,
        );
        one_thread.block_on(async {
            agent.stop().await.ok();
        });
    }
}

/// Resident memory per idle agent, 10,000 of each kind; printed, not timed.
fn memory_per_idle_agent() {
    const N: usize = 10_000;
    let rt = runtime();
    let host = WasmHost::new(EngineConfig {
        max_instances: N as u32 + 10,
        ..EngineConfig::default()
    })
    .expect("engine");
    rt.block_on(async {
        let before = resident_bytes();
        let mut natives = Vec::with_capacity(N);
        for _ in 0..N {
            natives.push(
                Actor::spawn(None, NativeCounter, ())
                    .await
                    .expect("native")
                    .0,
            );
        }
        let native_bytes = resident_bytes().saturating_sub(before);

        let system = AgentSystem::builder()
            .wasm_host(host.clone())
            .build()
            .expect("system");
        let counter = system
            .add_module("counter", arbor_modules::COUNTER)
            .expect("module");
        let before = resident_bytes();
        let mut agents = Vec::with_capacity(N);
        for i in 0..N {
            let agent = system
                .spawn(AgentSpec::wasm(format!("c{i}"), counter))
                .await
                .expect("agent");
            agent
                .call(payload(&WasmCounterMsg::Inc { by: 1 }))
                .await
                .expect("call");
            agents.push(agent);
        }
        let wasm_bytes = resident_bytes().saturating_sub(before);
        println!(
            "agent_memory: {N} idle Wasm counter agents (each called once): {:.1} KiB each; \
             {N} plain ractor actors: {:.1} KiB each; ratio {:.1}x",
            wasm_bytes as f64 / N as f64 / 1024.0,
            native_bytes as f64 / N as f64 / 1024.0,
            wasm_bytes as f64 / native_bytes.max(1) as f64,
        );
        for agent in &agents {
            agent.stop().await.ok();
        }
        for native in natives {
            native.stop(None);
        }
    });
}

criterion_group!(benches, calls);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let host = WasmHost::new(EngineConfig {
        max_instances: 100,
        ..EngineConfig::default()
    })
    .expect("engine");
    latency_percentiles(&host);
    drop(host);
    // After the timed groups, so tearing 20,000 actors down cannot disturb them.
    memory_per_idle_agent();
}
