//! Agent benchmarks, each beside its baseline in the same run:
//!
//! - `agent_call_1thread` / `agent_call`: one `call` round trip to a Wasm `counter` agent
//!   (journal off; journal on under group commit) beside a plain ractor actor doing the same in
//!   native Rust, on a current-thread runtime (the CPU cost) and on two worker threads (with the
//!   cross-thread wake-ups a caller sees).
//! - `agent_cast`: 10,000 casts then one call (so all are handled), same three.
//! - `agent_instantiate`: a Wasm `counter` instance from the pre-linked module.
//! - after the criterion groups: resident memory per idle agent with 10,000 Wasm counter agents
//!   (each a ractor actor with its instance), beside 10,000 plain ractor actors.
//!
//! Run with `cargo bench --bench agent`; `benches/criterion-summary agent_` prints the results
//! with the ratios.

use std::time::{Duration, Instant};

use arbor::agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};
use arbor::agent::{AgentRef, AgentSpec, AgentSystem};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
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

#[derive(Serialize)]
enum WasmCounterMsg {
    Inc { by: i64 },
    Get,
}

fn payload(message: &WasmCounterMsg) -> Vec<u8> {
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
        let ephemeral_system = AgentSystem::builder()
            .wasm_host(host.clone())
            .build()
            .expect("system");
        let counter = ephemeral_system
            .add_module("counter", arbor_modules::COUNTER)
            .expect("module");
        let ephemeral = ephemeral_system
            .spawn(AgentSpec::wasm("counter", counter))
            .await
            .expect("agent");
        let dir = tempfile::tempdir().expect("tempdir");
        let journaled_system = AgentSystem::builder()
            .journal(dir.path())
            .wasm_host(host.clone())
            .wal(
                arbor_wal::Config::default().durability(arbor_wal::Durability::GroupCommit {
                    max_delay: Duration::ZERO,
                }),
            )
            .build()
            .expect("system");
        journaled_system
            .add_module("counter", arbor_modules::COUNTER)
            .expect("module");
        let journaled = journaled_system
            .spawn(AgentSpec::wasm("counter", counter))
            .await
            .expect("agent");
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
    let host = WasmHost::new(EngineConfig {
        max_instances: 100,
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
    // After the timed groups, so tearing 20,000 actors down cannot disturb them.
    memory_per_idle_agent();
}
