//! Supervision benchmarks, each beside its baseline in the same run:
//!
//! - `restart`: from the failing input to serving again (the first `Get` answered by the new
//!   incarnation), through `arbor::Runtime`:
//!   - a Wasm `counter` agent with a journal, with 0 and with 10,000 WAL records to replay since
//!     its checkpoint (WAL durability `Never`, so fsync latency is not what is measured);
//!   - the same agent in an ephemeral runtime (no journal: restarted from its init config);
//!   - baseline: a plain ractor actor restarted by `arbor-supervisor` (the in-memory restart
//!     that OTP's supervisor restarting a gen_server compares with).
//! - `spawn`: per agent — a plain ractor actor (`Actor::spawn`), a Wasm `counter` agent in an
//!   ephemeral `AgentSystem`, and through a journaled `Runtime` (registry record, first
//!   checkpoint and the vault flush that makes the agent survive a crash).
//! - after the groups, if `escript` is installed (Debian `erlang-base`), the Erlang/OTP side:
//!   `benches/erlang/otp_supervisor.escript` (supervisor restarting a gen_server, process spawn).
//!
//! Run with `cargo bench --bench supervisor`; `benches/criterion-summary restart spawn`
//! prints the results.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arbor::agent::wasm::EngineConfig;
use arbor::agent::{AgentError, AgentSpec, AgentSystem, CheckpointPolicy};
use arbor::supervisor::{ChildSpec, Intensity, Supervisor, SupervisorSpec};
use arbor::{Error, Runtime, Spawn, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};
use criterion::{Criterion, criterion_group};
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn tolerant() -> SupervisorOptions {
    SupervisorOptions {
        intensity: Intensity {
            max_restarts: u32::MAX,
            period: Duration::from_secs(1),
        },
        ..SupervisorOptions::default()
    }
}

/// Fails `agent` with a trapping input and returns how long until it answers again.
async fn fail_and_wait(runtime: &Runtime, agent: &str) -> Duration {
    let started = Instant::now();
    match runtime
        .call::<_, CounterReply>(agent, &CounterMsg::Fail)
        .await
    {
        Err(Error::Agent(AgentError::Crashed { .. })) => {}
        other => panic!("the trapping input answered {:?}", other.map(|_| ())),
    }
    loop {
        match runtime
            .call::<_, CounterReply>(agent, &CounterMsg::Get)
            .await
        {
            Ok(_) => return started.elapsed(),
            Err(Error::Restarting(_)) | Err(Error::Agent(AgentError::Stopped(_))) => {
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

async fn journaled_runtime(dir: &std::path::Path) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .durability(arbor::wal::Durability::Never)
        .checkpoints(CheckpointPolicy {
            every_records: u64::MAX,
            every: Duration::from_secs(24 * 3600),
            keep: 2,
            ..CheckpointPolicy::default()
        })
        .root(tolerant())
        // Room for the 10,000 queued casts of the replay case.
        .mailbox(20_000)
        .build()
        .await
        .expect("runtime")
}

/// A plain ractor worker that records its incarnation and fails on request.
struct Worker;

enum WorkerMsg {
    Fail,
    Ping(RpcReplyPort<()>),
}

type Slot = Arc<Mutex<Option<ActorRef<WorkerMsg>>>>;

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = Slot;

    async fn pre_start(
        &self,
        me: ActorRef<WorkerMsg>,
        slot: Slot,
    ) -> Result<(), ActorProcessingErr> {
        *slot.lock() = Some(me);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Fail => Err("asked to fail".into()),
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(());
                Ok(())
            }
        }
    }
}

fn restart(c: &mut Criterion) {
    let rt = tokio();
    let mut group = c.benchmark_group("restart");
    group.sample_size(30);

    // Baseline: arbor-supervisor restarting a plain ractor actor.
    let slot: Slot = Arc::default();
    let supervisor = rt.block_on(async {
        let slot = Arc::clone(&slot);
        let spec = SupervisorSpec::new("bench")
            .intensity(u32::MAX, Duration::from_secs(1))
            .child(ChildSpec::worker("worker", move |sup| {
                let slot = Arc::clone(&slot);
                async move {
                    Actor::spawn_linked(None, Worker, slot, sup)
                        .await
                        .map(|(a, _)| a.get_cell())
                }
            }));
        Supervisor::start(spec).await.expect("supervisor")
    });
    group.bench_function("ractor_actor_arbor_supervisor", |b| {
        b.iter_custom(on(&rt, |iters| {
            let slot = Arc::clone(&slot);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let old = slot.lock().clone().expect("worker");
                    let started = Instant::now();
                    old.send_message(WorkerMsg::Fail).ok();
                    loop {
                        let current = slot.lock().clone().expect("worker");
                        if current.get_id() != old.get_id() {
                            let (tx, rx) = ractor::concurrency::oneshot();
                            current.send_message(WorkerMsg::Ping(tx.into())).ok();
                            if rx.await.is_ok() {
                                break;
                            }
                        }
                        tokio::task::yield_now().await;
                    }
                    total += started.elapsed();
                }
                total
            }
        }))
    });
    rt.block_on(supervisor.shutdown());

    // A Wasm agent in an ephemeral runtime: restarted from its init config.
    let ephemeral = rt.block_on(async {
        let runtime = Runtime::builder()
            .root(tolerant())
            .build()
            .await
            .expect("runtime");
        runtime
            .spawn(Spawn::wasm_bytes("counter", arbor_modules::COUNTER))
            .await
            .expect("spawn");
        runtime
    });
    group.bench_function("wasm_agent_ephemeral", |b| {
        b.iter_custom(on(&rt, |iters| {
            let runtime = ephemeral.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += fail_and_wait(&runtime, "counter").await;
                }
                total
            }
        }))
    });
    rt.block_on(ephemeral.shutdown()).expect("shutdown");

    // Journaled: checkpoint, then 0 or 10,000 inputs to replay.
    for replay in [0u64, 10_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = rt.block_on(async {
            let runtime = journaled_runtime(dir.path()).await;
            runtime
                .spawn(Spawn::wasm_bytes("counter", arbor_modules::COUNTER))
                .await
                .expect("spawn");
            runtime
        });
        if replay > 0 {
            group.sample_size(10);
        }
        group.bench_function(format!("wasm_agent_journaled_replay_{replay}"), |b| {
            b.iter_custom(on(&rt, |iters| {
                let runtime = runtime.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let agent = runtime.lookup("counter").expect("counter");
                        agent.checkpoint().await.expect("checkpoint");
                        let inc =
                            rmp_serde::to_vec_named(&CounterMsg::Inc { by: 1 }).expect("encode");
                        for _ in 0..replay {
                            loop {
                                match agent.cast(inc.clone()) {
                                    Ok(()) => break,
                                    Err(AgentError::MailboxFull { .. }) => {
                                        tokio::task::yield_now().await
                                    }
                                    Err(error) => panic!("{error}"),
                                }
                            }
                        }
                        runtime
                            .call::<_, CounterReply>("counter", &CounterMsg::Get)
                            .await
                            .expect("get");
                        total += fail_and_wait(&runtime, "counter").await;
                    }
                    total
                }
            }))
        });
        rt.block_on(runtime.shutdown()).expect("shutdown");
    }
    group.finish();
}

/// Spawns `iters` things, `SPAWN_CHUNK` at a time, timing only the spawns; each chunk is torn
/// down untimed (so the instance pool and memory stay bounded). `spawn_one` gets a number unique
/// in the process, for names.
async fn timed_spawns<T, S, SF, D, DF>(iters: u64, mut spawn_one: S, mut tear_down: D) -> Duration
where
    S: FnMut(u64) -> SF,
    SF: std::future::Future<Output = T>,
    D: FnMut(Vec<T>) -> DF,
    DF: std::future::Future<Output = ()>,
{
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(SPAWN_CHUNK);
        let mut spawned = Vec::with_capacity(n);
        let started = Instant::now();
        for _ in 0..n {
            spawned.push(spawn_one(NEXT.fetch_add(1, Ordering::Relaxed)).await);
        }
        total += started.elapsed();
        tear_down(spawned).await;
        left -= n;
    }
    total
}

const SPAWN_CHUNK: usize = 1_000;

fn spawn(c: &mut Criterion) {
    let rt = tokio();
    let mut group = c.benchmark_group("spawn");
    group.sample_size(20);
    let engine = EngineConfig {
        max_instances: SPAWN_CHUNK as u32 + 10,
        ..EngineConfig::default()
    };

    struct Idle;
    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }
    group.bench_function("ractor_actor", |b| {
        b.iter_custom(on(&rt, |iters| {
            timed_spawns(
                iters,
                |_| async { Actor::spawn(None, Idle, ()).await.expect("spawn").0 },
                |actors| async move {
                    for actor in actors {
                        actor.stop_and_wait(None, None).await.ok();
                    }
                },
            )
        }))
    });

    let system = AgentSystem::builder()
        .engine(engine.clone())
        .build()
        .expect("system");
    let counter = system
        .add_module("counter", arbor_modules::COUNTER)
        .expect("module");
    group.bench_function("wasm_agent_ephemeral", |b| {
        b.iter_custom(on(&rt, |iters| {
            timed_spawns(
                iters,
                |n| {
                    let system = system.clone();
                    async move {
                        let spec = AgentSpec::wasm(format!("a{n}"), counter);
                        system.spawn(spec).await.expect("spawn")
                    }
                },
                |agents| async move {
                    for agent in agents {
                        agent.stop().await.expect("stop");
                    }
                },
            )
        }))
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = rt.block_on(async {
        Runtime::builder()
            .data_dir(dir.path())
            .engine(engine)
            .build()
            .await
            .expect("runtime")
    });
    let counter = runtime
        .add_module("counter", arbor_modules::COUNTER)
        .expect("module");
    group.bench_function("wasm_agent_runtime_journaled", |b| {
        b.iter_custom(on(&rt, |iters| {
            timed_spawns(
                iters,
                |n| {
                    let runtime = runtime.clone();
                    async move {
                        let name = format!("j{n}");
                        let spawn = Spawn::module(&name, counter);
                        runtime.spawn(spawn).await.expect("spawn");
                        name
                    }
                },
                |names| {
                    let runtime = runtime.clone();
                    async move {
                        for name in names {
                            runtime.stop_agent(&name).await.expect("stop");
                        }
                    }
                },
            )
        }))
    });
    rt.block_on(runtime.shutdown()).expect("shutdown");
    group.finish();
}

criterion_group!(benches, restart, spawn);

/// Runs an async measurement on `rt` (criterion's async support is not enabled here).
fn on<'a, F, Fut>(
    rt: &'a tokio::runtime::Runtime,
    mut measure: F,
) -> impl FnMut(u64) -> Duration + 'a
where
    F: FnMut(u64) -> Fut + 'a,
    Fut: std::future::Future<Output = Duration>,
{
    move |iters| rt.block_on(measure(iters))
}

/// The Erlang/OTP side, in the same run, when Erlang is installed.
fn erlang_baseline() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/erlang/otp_supervisor.escript"
    );
    match std::process::Command::new("escript").arg(script).output() {
        Ok(output) if output.status.success() => {
            println!("Erlang/OTP baseline ({script}):");
            print!("{}", String::from_utf8_lossy(&output.stdout));
        }
        Ok(output) => println!(
            "Erlang/OTP baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => {
            println!("Erlang/OTP baseline skipped (escript: {error}; apt-get install erlang-base)")
        }
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    erlang_baseline();
}
