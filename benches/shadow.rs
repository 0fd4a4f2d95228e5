//! Evolution-arbiter benchmarks (`arbor-shadow`), each beside its baseline in the same run:
//!
//! - `shadow_production_call`: one `call` round trip to a journaled `kv` agent (WAL group commit
//!   with `max_delay` 0, the "journal on" setting of `agent_call/wasm_group_commit`; 1,000 keys
//!   loaded; three `Get`s to one `Put`). `alone` is an agent nobody shadows; `two_shadows` is an
//!   identical agent of the same system while an arbiter evaluation of `kv-placebo` shadows it
//!   (candidate and A/A control, both fed production's mirrored inputs on the arbiter's shadow
//!   thread); `two_shadows_no_state_checks` is the same without the periodic state comparison
//!   (`Policy::state_every` = `u64::MAX`), to show what that comparison costs. Goal:
//!   production's p99 with two shadows less than 5 % above alone (original target 15 %).
//! - `shadow_spawn`: starting the shadows with a copy of production's state, as the arbiter
//!   does: `AgentRef::tap` (a snapshot taken in the agent's mailbox turn) plus two `kv`
//!   instances made by `AgentSystem::instantiate` and restored from the tapped state; for 1,000
//!   entries and ~1 MiB (8,000 entries with 128-byte values). Baselines: spawning a plain
//!   ractor actor, and a raw `snapshot` + `restore` between two existing instances (no tap, no
//!   instantiation); the tap alone and the raw snapshot alone are given for the breakdown.
//!   Goal: < 1 ms (original target 500 ms).
//! - `shadow_promotion_pause`: `AgentSystem::promote_module` with ~1 MiB of `kv` state,
//!   alternating between `kv` and `kv-placebo` (same state layout): the mailbox pause
//!   (`SwapReport::pause`) and the whole call (instantiation, pause, durable swap record,
//!   promotion checkpoint in the vault); baseline `swap_module` (no checkpoint), pause and call,
//!   and `shadow_spawn/raw_snapshot_restore/1MiB` (the guest's own share of any pause). Goal:
//!   pause < 1 ms for 1 MiB.
//! - `shadow_gate`: the replay gate over 10,000 journaled `Put`s (`Arbiter::evaluate` of
//!   `kv-placebo` until the evaluation leaves `Stage::Gate`; the time is `GateReport::took`),
//!   with the default policy and without periodic state comparisons, beside
//!   `AgentSystem::recover` replaying the same 10,000 inputs through one module
//!   (`RecoveryReport::took`) on a copy of the same journal; throughput in inputs/s.
//! - after the criterion groups: production call latency (p50, p99, p99.9, mean) over 20,000
//!   sequential calls per configuration, the configurations alternating in blocks of 2,000 so
//!   drift hits all, with the shadows' tally (samples, gaps); the promotion pauses'
//!   distribution; the gate's and recovery's inputs/s and records/s.
//!
//! Run with `cargo bench --bench shadow`; `benches/criterion-summary shadow_` prints the
//! criterion results.
//!
//! One file per crate benched, as criterion's `[[bench]]` targets are: the groups share their
//! set-up (modules, loaded agents, the arbiter) and are read beside each other's baselines.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arbor::agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmHost};
use arbor::agent::{
    AgentRef, AgentSpec, AgentSystem, BehaviourId, CheckpointPolicy, MirrorTap, RecoveryReport,
};
use arbor::wal::Durability;
use arbor_shadow::{
    Arbiter, ArbiterConfig, EvaluationStatus, GateReport, Policy, ShadowLimits, Stage, Tally,
};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;

/// The `kv` messages this bench sends (`arbor_modules::KV`'s protocol, MessagePack with named
/// fields).
#[derive(Serialize)]
enum KvMsg {
    Get { key: String },
    Put { key: String, value: String },
}

fn encode(message: &KvMsg) -> Vec<u8> {
    rmp_serde::to_vec_named(message).expect("serialisable")
}

fn key(i: usize) -> String {
    format!("key-{i:05}")
}

fn get(i: usize) -> Vec<u8> {
    encode(&KvMsg::Get { key: key(i) })
}

/// A `Put` of key `i` with a value of `value_bytes` digits spelling `version`.
fn put(i: usize, value_bytes: usize, version: usize) -> Vec<u8> {
    encode(&KvMsg::Put {
        key: key(i),
        value: format!("{version:0value_bytes$}"),
    })
}

/// Keys of the production agents.
const KEYS: usize = 1_000;
/// Value size of the production agents.
const VALUE_BYTES: usize = 16;
/// The ~1 MiB state: this many entries of `BIG_VALUE_BYTES`-byte values.
const BIG_ENTRIES: usize = 8_000;
const BIG_VALUE_BYTES: usize = 128;
/// `Put`s journaled for the gate.
const GATE_INPUTS: usize = 10_000;

/// The "journal on" durability of `benches/agent.rs`: group commit, no added delay (each call
/// waits for an fdatasync).
const GROUP_COMMIT: Durability = Durability::GroupCommit {
    max_delay: Duration::ZERO,
};

/// Checkpoints only when asked (spawn, stop, promotion), so a journal keeps every input since
/// the agent's first checkpoint.
fn manual_checkpoints() -> CheckpointPolicy {
    CheckpointPolicy {
        every_records: u64::MAX,
        every: Duration::from_secs(24 * 3600),
        keep: 3,
        ..CheckpointPolicy::default()
    }
}

/// `puts` `Put`s over `keys` keys: casts, with every 1,000th (and the last) a call, so all are
/// handled when it returns and the mailbox never fills.
async fn load(agent: &AgentRef, puts: usize, keys: usize, value_bytes: usize) {
    for i in 0..puts {
        let message = put(i % keys, value_bytes, i / keys);
        if i % 1_000 == 999 || i + 1 == puts {
            agent.call(message).await.expect("put");
        } else {
            agent.cast(message).expect("put");
        }
    }
}

/// Production traffic: three `Get`s to one `Put`, spread over the loaded keys.
fn traffic() -> Vec<Vec<u8>> {
    (0..4_096)
        .map(|i| {
            let k = (i * 7_919) % KEYS;
            if i % 4 == 3 {
                put(k, VALUE_BYTES, i + 1)
            } else {
                get(k)
            }
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// One engine for every system of the bench (modules compile once).
fn wasm_host() -> WasmHost {
    WasmHost::new(EngineConfig {
        max_instances: 200,
        ..EngineConfig::default()
    })
    .expect("engine")
}

/// The default WAL configuration with this durability.
fn wal(durability: Durability) -> arbor::wal::Config {
    arbor::wal::Config::default().durability(durability)
}

fn journaled(
    host: &WasmHost,
    dir: &Path,
    wal: arbor::wal::Config,
    checkpoints: CheckpointPolicy,
) -> AgentSystem {
    AgentSystem::builder()
        .journal(dir)
        .wasm_host(host.clone())
        .wal(wal)
        .checkpoints(checkpoints)
        .build()
        .expect("system")
}

/// The arbiter's configuration for benches that must keep an evaluation going: it never has
/// enough samples to decide, and its deadline is far away.
fn endless_evaluation() -> ArbiterConfig {
    ArbiterConfig {
        policy: Policy {
            min_samples: 10_000_000,
            ..Policy::default()
        },
        limits: ShadowLimits {
            deadline: Duration::from_secs(3_600),
            ..ShadowLimits::default()
        },
        ..ArbiterConfig::default()
    }
}

/// [`endless_evaluation`] without the periodic state comparisons (`Policy::state_every` at
/// `u64::MAX`: the candidate's state is compared with the control's only at the end of a gate),
/// to show what they cost.
fn no_state_checks() -> ArbiterConfig {
    let config = endless_evaluation();
    ArbiterConfig {
        policy: Policy {
            state_every: u64::MAX,
            ..config.policy.clone()
        },
        ..config
    }
}

/// The limits the arbiter gives a shadow of an agent with default limits (its `Factory`: the
/// agent's limits, memory capped and fuel set by the `ShadowLimits` budgets).
fn shadow_limits() -> AgentLimits {
    let budget = ShadowLimits::default();
    let agent = AgentLimits::default();
    AgentLimits {
        memory_bytes: agent.memory_bytes.min(budget.memory_bytes),
        fuel: Some(budget.fuel),
        ..agent
    }
}

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

fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// The value at quantile `q` of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / samples.len().max(1) as u32
}

fn tally_line(tally: &Tally) -> String {
    format!(
        "samples {}, gaps {}, resyncs {}, A/A mismatches {}, mismatches {}, candidate errors {}",
        tally.samples,
        tally.gaps,
        tally.resyncs,
        tally.aa_mismatches,
        tally.mismatch_count(),
        tally.error_count()
    )
}

// ---------------------------------------------------------------------------------------------
// shadow_production_call

const ALONE: &str = "kv-alone";

/// A production agent under an arbiter evaluation of `kv-placebo` that lasts the whole bench.
struct Shadowed {
    /// The criterion row and printed label.
    label: &'static str,
    agent: AgentRef,
    arbiter: Arbiter,
    /// Inputs sent to the agent since its evaluation started.
    sent: AtomicU64,
}

impl Shadowed {
    /// Starts the evaluation of `agent` under `config` and waits until its shadows compare.
    async fn start(
        label: &'static str,
        system: &AgentSystem,
        agent: AgentRef,
        config: ArbiterConfig,
        traffic: &[Vec<u8>],
    ) -> Shadowed {
        let name = agent.name().to_string();
        let arbiter = Arbiter::new(system.clone(), config).expect("arbiter");
        let placebo = arbiter
            .admit(&name, "kv-placebo", arbor_modules::KV_PLACEBO)
            .expect("admit");
        arbiter
            .evaluate(&name, placebo, Vec::new())
            .expect("evaluate");
        let status = arbiter
            .wait(&name, |s| s.stage != Stage::Gate)
            .await
            .expect("wait");
        assert_eq!(
            status.stage,
            Stage::Shadowing,
            "the evaluation of {name} did not reach Shadowing: {status:?}"
        );
        // The shadow thread installs the mirror and seeds the shadows after the stage changes:
        // send inputs until the shadows report compared samples (published every 16).
        let started = Instant::now();
        let mut sent = 0u64;
        loop {
            let payload = traffic[sent as usize % traffic.len()].clone();
            agent.call(payload).await.expect("call");
            sent += 1;
            let status = arbiter.status(&name).expect("status");
            if status.shadow.samples >= 16 {
                break;
            }
            assert!(
                status.stage == Stage::Shadowing && started.elapsed() < Duration::from_secs(60),
                "the shadows of {name} did not start comparing: {status:?}"
            );
        }
        Shadowed {
            label,
            agent,
            arbiter,
            sent: AtomicU64::new(sent),
        }
    }

    /// The evaluation's status once the shadows have caught up (or stopped progressing).
    async fn settled_status(&self) -> EvaluationStatus {
        let name = self.agent.name();
        let mut last = self.arbiter.status(name).expect("status");
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.arbiter.status(name).expect("status");
            if now.shadow.samples == last.shadow.samples {
                return now;
            }
            last = now;
        }
        last
    }
}

/// The production agents of `shadow_production_call`: identical `kv` agents in one journaled
/// system (group commit, default checkpoint policy), one alone and two each under an arbiter
/// evaluation of `kv-placebo` for the whole bench: one with the default policy (the candidate's
/// state compared with the control's every 64 inputs) and, to show what those comparisons
/// cost, one with `Policy::state_every` set to `u64::MAX`.
struct Production {
    system: AgentSystem,
    alone: AgentRef,
    shadowed: [Shadowed; 2],
    traffic: Vec<Vec<u8>>,
    _dir: tempfile::TempDir,
}

impl Production {
    fn start(rt: &tokio::runtime::Runtime, host: &WasmHost) -> Production {
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let system = journaled(
                host,
                dir.path(),
                wal(GROUP_COMMIT),
                CheckpointPolicy::default(),
            );
            let kv = system.add_module("kv", arbor_modules::KV).expect("kv");
            let mut agents = Vec::new();
            for name in [ALONE, "kv-shadowed", "kv-shadowed-no-state-checks"] {
                let agent = system
                    .spawn(AgentSpec::wasm(name, kv))
                    .await
                    .expect("spawn");
                load(&agent, KEYS, KEYS, VALUE_BYTES).await;
                agents.push(agent);
            }
            let [alone, shadowed, unchecked] = <[AgentRef; 3]>::try_from(agents).expect("3");
            let traffic = traffic();
            let shadowed = [
                Shadowed::start(
                    "two_shadows",
                    &system,
                    shadowed,
                    endless_evaluation(),
                    &traffic,
                )
                .await,
                Shadowed::start(
                    "two_shadows_no_state_checks",
                    &system,
                    unchecked,
                    no_state_checks(),
                    &traffic,
                )
                .await,
            ];
            Production {
                system,
                alone,
                shadowed,
                traffic,
                _dir: dir,
            }
        })
    }

    fn payload(&self, i: u64) -> Vec<u8> {
        self.traffic[i as usize % self.traffic.len()].clone()
    }

    /// Counts `n` inputs sent to `agent` if it is shadowed.
    fn sent(&self, agent: &AgentRef, n: u64) {
        for shadowed in &self.shadowed {
            if shadowed.agent.name() == agent.name() {
                shadowed.sent.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// `n` sequential calls to `agent` from input `first` of the traffic; each call's latency.
    async fn calls(&self, agent: &AgentRef, first: u64, n: u64) -> Vec<Duration> {
        let mut latencies = Vec::with_capacity(n as usize);
        for i in first..first + n {
            let payload = self.payload(i);
            let started = Instant::now();
            agent.call(payload).await.expect("call");
            latencies.push(started.elapsed());
        }
        self.sent(agent, n);
        latencies
    }

    /// Latency percentiles, alone and with shadows, in alternating blocks; printed.
    fn percentiles(&self, rt: &tokio::runtime::Runtime) {
        const N: u64 = 20_000;
        const BLOCK: u64 = 2_000;
        rt.block_on(async {
            let mut before = Vec::new();
            for shadowed in &self.shadowed {
                before.push(shadowed.settled_status().await.shadow);
            }
            let configurations: Vec<(&str, &AgentRef)> = std::iter::once(("alone", &self.alone))
                .chain(self.shadowed.iter().map(|s| (s.label, &s.agent)))
                .collect();
            let mut latencies = vec![Vec::with_capacity(N as usize); configurations.len()];
            for block in 0..N / BLOCK {
                for ((_, agent), latencies) in configurations.iter().zip(&mut latencies) {
                    latencies.extend(self.calls(agent, block * BLOCK, BLOCK).await);
                }
            }
            for latencies in &mut latencies {
                latencies.sort();
            }
            println!(
                "\nshadow_production_call latency: {N} sequential calls per configuration, \
                 alternating blocks of {BLOCK} (journaled kv, 1,000 keys, 3 Get : 1 Put, \
                 group commit):"
            );
            for ((label, _), sorted) in configurations.iter().zip(&latencies) {
                println!(
                    "  {label:<28} p50 {:>10}  p99 {:>10}  p99.9 {:>10}  mean {:>10}  max {:>10}",
                    fmt_duration(percentile(sorted, 0.50)),
                    fmt_duration(percentile(sorted, 0.99)),
                    fmt_duration(percentile(sorted, 0.999)),
                    fmt_duration(mean(sorted)),
                    fmt_duration(percentile(sorted, 1.0)),
                );
            }
            let alone = &latencies[0];
            for ((label, _), sorted) in configurations.iter().zip(&latencies).skip(1) {
                let ratio = |q: f64| {
                    percentile(sorted, q).as_secs_f64() / percentile(alone, q).as_secs_f64()
                };
                println!(
                    "  {label} / alone: p50 {:.3}x, p99 {:.3}x ({:+.1} %), p99.9 {:.3}x, \
                     mean {:.3}x",
                    ratio(0.50),
                    ratio(0.99),
                    (ratio(0.99) - 1.0) * 100.0,
                    ratio(0.999),
                    mean(sorted).as_secs_f64() / mean(alone).as_secs_f64(),
                );
            }
            for (shadowed, before) in self.shadowed.iter().zip(&before) {
                let status = shadowed.settled_status().await;
                println!(
                    "  {} shadows: {} compared of the {N} inputs above, {} new gaps; over the \
                     whole bench ({} inputs sent since the evaluation started, the first few \
                     before the mirror): {}",
                    shadowed.label,
                    status.shadow.samples.saturating_sub(before.samples),
                    status.shadow.gaps.saturating_sub(before.gaps),
                    shadowed.sent.load(Ordering::Relaxed),
                    tally_line(&status.shadow)
                );
            }
        });
    }

    /// Cancels the evaluations and stops the agents.
    fn finish(self, rt: &tokio::runtime::Runtime) {
        rt.block_on(async {
            for shadowed in &self.shadowed {
                let name = shadowed.agent.name();
                shadowed.arbiter.cancel(name).expect("cancel");
                let status = shadowed
                    .arbiter
                    .wait(name, |s| matches!(s.stage, Stage::Done(_)))
                    .await
                    .expect("wait");
                println!(
                    "  {} evaluation after cancel: {:?}; state checks {}",
                    shadowed.label, status.stage, status.shadow.state_checks
                );
            }
            self.system.shutdown().await.expect("shutdown");
        });
    }
}

fn production_call(c: &mut Criterion, rt: &tokio::runtime::Runtime, production: &Production) {
    let mut group = c.benchmark_group("shadow_production_call");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    let configurations = std::iter::once(("alone", &production.alone))
        .chain(production.shadowed.iter().map(|s| (s.label, &s.agent)));
    for (label, agent) in configurations {
        group.bench_function(label, |b| {
            b.iter_custom(on(rt, |iters| async move {
                let started = Instant::now();
                for i in 0..iters {
                    agent.call(production.payload(i)).await.expect("call");
                }
                let took = started.elapsed();
                production.sent(agent, iters);
                took
            }))
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// shadow_spawn

/// The plain actor `shadow_spawn/ractor_actor` spawns.
struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

fn shadow_spawn(c: &mut Criterion, rt: &tokio::runtime::Runtime, host: &WasmHost) {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = journaled(host, dir.path(), wal(GROUP_COMMIT), manual_checkpoints());
    let kv_hash = system.add_module("kv", arbor_modules::KV).expect("kv");
    let kv = BehaviourId::Wasm(kv_hash);
    let (limits, capabilities) = (shadow_limits(), Capabilities::none());
    let queue = ShadowLimits::default().queue;
    let sizes = [
        ("1000_entries", KEYS, VALUE_BYTES),
        ("1MiB", BIG_ENTRIES, BIG_VALUE_BYTES),
    ];
    let agents: Vec<(&str, AgentRef, Vec<u8>)> = rt.block_on(async {
        let mut agents = Vec::new();
        for (label, entries, value_bytes) in sizes {
            let spec = AgentSpec::wasm(format!("kv-{label}"), kv_hash);
            let agent = system.spawn(spec).await.expect("spawn");
            load(&agent, entries, entries, value_bytes).await;
            let state = agent.snapshot().await.expect("snapshot");
            println!(
                "shadow_spawn/{label}: {entries} entries, state {} bytes",
                state.len()
            );
            agents.push((label, agent, state));
        }
        agents
    });

    let mut group = c.benchmark_group("shadow_spawn");
    group.sample_size(50);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("ractor_actor", |b| {
        b.iter_custom(on(rt, |iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let (actor, _) = Actor::spawn(None, Idle, ()).await.expect("spawn");
                total += started.elapsed();
                actor.stop_and_wait(None, None).await.ok();
            }
            total
        }))
    });
    for (label, agent, state) in &agents {
        // Baseline: the state copied between two existing instances, no tap, no instantiation.
        let mut source = system
            .instantiate(&kv, &limits, &capabilities)
            .expect("instance");
        source.restore(state).expect("restore");
        let mut target = system
            .instantiate(&kv, &limits, &capabilities)
            .expect("instance");
        // For the breakdown: the snapshot half alone.
        group.bench_function(BenchmarkId::new("raw_snapshot", label), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(source.snapshot().expect("snapshot"));
                }
                started.elapsed()
            })
        });
        group.bench_function(BenchmarkId::new("raw_snapshot_restore", label), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    let state = source.snapshot().expect("snapshot");
                    target.restore(&state).expect("restore");
                }
                started.elapsed()
            })
        });
        drop((source, target));
        // The tap alone: the snapshot in the agent's mailbox turn and its way back.
        group.bench_function(BenchmarkId::new("tap", label), |b| {
            b.iter_custom(on(rt, |iters| async move {
                let started = Instant::now();
                for _ in 0..iters {
                    let (tap, mirror) = MirrorTap::bounded(queue);
                    let tapped = agent.tap(Some(tap)).await.expect("tap");
                    std::hint::black_box((tapped, mirror));
                }
                started.elapsed()
            }))
        });
        // What the arbiter does to start an evaluation's shadows: tap, then candidate and
        // control instantiated and restored from the tapped state (here both `kv`). Dropping
        // them afterwards is not timed.
        let (system, kv, limits, capabilities) = (&system, &kv, &limits, &capabilities);
        group.bench_function(BenchmarkId::new("tap_and_two_shadows", label), |b| {
            b.iter_custom(on(rt, |iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let (tap, mirror) = MirrorTap::bounded(queue);
                    let tapped = agent.tap(Some(tap)).await.expect("tap");
                    let mut shadows = Vec::with_capacity(2);
                    for _ in 0..2 {
                        let mut shadow = system
                            .instantiate(kv, limits, capabilities)
                            .expect("instance");
                        shadow.restore(&tapped.state).expect("restore");
                        shadows.push(shadow);
                    }
                    total += started.elapsed();
                    drop((shadows, mirror, tapped));
                }
                total
            }))
        });
    }
    group.finish();
    rt.block_on(async {
        for (_, agent, _) in &agents {
            agent.tap(None).await.expect("untap");
        }
        system.shutdown().await.expect("shutdown");
    });
}

// ---------------------------------------------------------------------------------------------
// shadow_promotion_pause

/// The pauses of every promotion and plain swap `shadow_promotion_pause` made.
#[derive(Default)]
struct Pauses {
    promote: Mutex<Vec<Duration>>,
    swap: Mutex<Vec<Duration>>,
    state_bytes: AtomicUsize,
}

/// Swaps `agent` to whichever of `modules` it does not run (`running` is the index of the one
/// it runs); through `promote_module` (then releasing the promotion's hold) or `swap_module`.
/// Returns the pause and the whole call's time.
async fn swap_other(
    system: &AgentSystem,
    agent: &AgentRef,
    modules: &[BehaviourId; 2],
    running: &AtomicUsize,
    promote: bool,
    pauses: &Pauses,
) -> (Duration, Duration) {
    let next = 1 - running.load(Ordering::Relaxed);
    let to = modules[next].clone();
    let started = Instant::now();
    let report = if promote {
        system.promote_module(agent, to).await
    } else {
        system.swap_module(agent, to).await
    }
    .expect("swap");
    let took = started.elapsed();
    running.store(next, Ordering::Relaxed);
    if promote {
        assert!(
            report.checkpoint_lsn.is_some(),
            "no promotion checkpoint: {report:?}"
        );
        system.release_hold(agent.name());
        pauses.promote.lock().push(report.pause);
    } else {
        pauses.swap.lock().push(report.pause);
    }
    pauses
        .state_bytes
        .store(report.state_bytes, Ordering::Relaxed);
    (report.pause, took)
}

fn promotion_pause(c: &mut Criterion, rt: &tokio::runtime::Runtime, host: &WasmHost) -> Pauses {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = journaled(host, dir.path(), wal(GROUP_COMMIT), manual_checkpoints());
    let kv = system.add_module("kv", arbor_modules::KV).expect("kv");
    let placebo = system
        .add_module("kv-placebo", arbor_modules::KV_PLACEBO)
        .expect("kv-placebo");
    let modules = [BehaviourId::Wasm(kv), BehaviourId::Wasm(placebo)];
    let running = AtomicUsize::new(0);
    let agent = rt.block_on(async {
        let agent = system
            .spawn(AgentSpec::wasm("kv-promoted", kv))
            .await
            .expect("spawn");
        load(&agent, BIG_ENTRIES, BIG_ENTRIES, BIG_VALUE_BYTES).await;
        agent
    });
    let pauses = Pauses::default();

    let mut group = c.benchmark_group("shadow_promotion_pause");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    for (label, promote) in [("promote_module", true), ("swap_module", false)] {
        // Criterion sizes its runs by the time returned (the pause, or the whole call), not
        // by wall time.
        for (measure, whole_call) in [("pause", false), ("call", true)] {
            group.warm_up_time(Duration::from_millis(300));
            group.measurement_time(Duration::from_secs(2));
            let id = BenchmarkId::new(format!("{label}_{measure}"), "1MiB");
            group.bench_function(id, |b| {
                b.iter_custom(on(rt, |iters| {
                    let (system, agent, modules, running, pauses) =
                        (&system, &agent, &modules, &running, &pauses);
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let (pause, call) =
                                swap_other(system, agent, modules, running, promote, pauses).await;
                            total += if whole_call { call } else { pause };
                        }
                        total
                    }
                }))
            });
        }
    }
    group.finish();
    rt.block_on(system.shutdown()).expect("shutdown");
    pauses
}

impl Pauses {
    fn print(&self) {
        println!(
            "\nshadow_promotion_pause: mailbox pause per swap, state {} bytes, kv <-> kv-placebo:",
            self.state_bytes.load(Ordering::Relaxed)
        );
        for (label, pauses) in [
            ("promote_module", &self.promote),
            ("swap_module", &self.swap),
        ] {
            let mut pauses = pauses.lock().clone();
            if pauses.is_empty() {
                continue;
            }
            pauses.sort();
            println!(
                "  {label:<15} {} swaps: p50 {:>10}  p99 {:>10}  max {:>10}  mean {:>10}",
                pauses.len(),
                fmt_duration(percentile(&pauses, 0.5)),
                fmt_duration(percentile(&pauses, 0.99)),
                fmt_duration(percentile(&pauses, 1.0)),
                fmt_duration(mean(&pauses)),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// shadow_gate

/// What the gate and the recoveries of `shadow_gate` reported.
#[derive(Default)]
struct Replays {
    /// By criterion row.
    gates: Mutex<BTreeMap<&'static str, Vec<GateReport>>>,
    recoveries: Mutex<Vec<RecoveryReport>>,
}

/// Copies the directory tree `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn gate(c: &mut Criterion, rt: &tokio::runtime::Runtime, host: &WasmHost) -> Replays {
    // WAL durability `Never` (loading speed only: neither the gate nor recovery appends), and
    // 8 MiB segments (the journal, ~2 MB, fits one) so that copying the journal is quick.
    let gate_wal = || {
        wal(Durability::Never)
            .max_record_bytes(4 << 20)
            .segment_bytes(8 << 20)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let system = journaled(host, dir.path(), gate_wal(), manual_checkpoints());
    let kv = system.add_module("kv", arbor_modules::KV).expect("kv");
    const AGENT: &str = "kv-gate";
    rt.block_on(async {
        let agent = system
            .spawn(AgentSpec::wasm(AGENT, kv))
            .await
            .expect("spawn");
        load(&agent, GATE_INPUTS, KEYS, VALUE_BYTES).await;
    });
    // The journal as it is now (the agent's spawn checkpoint, then 10,000 inputs), for the
    // recoveries: a copy recovers as after a crash, replaying every input since the checkpoint.
    system.wal().expect("wal").sync().expect("wal sync");
    system.vault().expect("vault").sync().expect("vault sync");
    let template = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), template.path());

    let replays = Replays::default();
    let mut group = c.benchmark_group("shadow_gate");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(GATE_INPUTS as u64));
    for (label, config) in [
        ("arbiter_gate", endless_evaluation()),
        ("arbiter_gate_no_state_checks", no_state_checks()),
    ] {
        let arbiter = Arbiter::new(system.clone(), config).expect("arbiter");
        let placebo = arbiter
            .admit(AGENT, "kv-placebo", arbor_modules::KV_PLACEBO)
            .expect("admit");
        group.measurement_time(Duration::from_secs(5));
        group.bench_function(BenchmarkId::new(label, GATE_INPUTS), |b| {
            b.iter_custom(on(rt, |iters| {
                let (arbiter, replays) = (&arbiter, &replays);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        arbiter
                            .evaluate(AGENT, placebo, Vec::new())
                            .expect("evaluate");
                        let status = arbiter
                            .wait(AGENT, |s| s.stage != Stage::Gate)
                            .await
                            .expect("wait");
                        let report = status.gate.clone().expect("gate report");
                        assert!(
                            report.passed && status.stage == Stage::Shadowing,
                            "the gate did not pass: {status:?}"
                        );
                        total += report.took;
                        replays.gates.lock().entry(label).or_default().push(report);
                        // One evaluation per agent at a time: end this one before the next.
                        arbiter.cancel(AGENT).expect("cancel");
                        arbiter
                            .wait(AGENT, |s| matches!(s.stage, Stage::Done(_)))
                            .await
                            .expect("wait");
                    }
                    total
                }
            }))
        });
    }
    // Copying, opening and shutting down each copy is not timed, but takes wall time.
    group.measurement_time(Duration::from_secs(2));
    group.bench_function(BenchmarkId::new("recover", GATE_INPUTS), |b| {
        b.iter_custom(on(rt, |iters| {
            let (template, replays) = (&template, &replays);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let copy = tempfile::tempdir().expect("tempdir");
                    copy_dir(template.path(), copy.path());
                    let system = journaled(host, copy.path(), gate_wal(), manual_checkpoints());
                    let (_agent, report) = system.recover(AGENT).await.expect("recover");
                    assert_eq!(report.replayed, GATE_INPUTS as u64, "{report:?}");
                    total += report.took;
                    replays.recoveries.lock().push(report);
                    system.shutdown().await.expect("shutdown");
                }
                total
            }
        }))
    });
    group.finish();
    rt.block_on(system.shutdown()).expect("shutdown");
    replays
}

impl Replays {
    fn print(&self) {
        let recoveries = self.recoveries.lock();
        if recoveries.is_empty() {
            return;
        }
        println!(
            "\nshadow_gate: {GATE_INPUTS} journaled Puts over {KEYS} keys, replayed from the \
             agent's spawn checkpoint"
        );
        let recovery_took: Duration = recoveries.iter().map(|r| r.took).sum();
        let recovery_inputs: u64 = recoveries.iter().map(|r| r.replayed).sum();
        let recovery_inputs_per_s = recovery_inputs as f64 / recovery_took.as_secs_f64();
        println!(
            "  {:<30} {:>3} runs, mean took {:>10}, {:>8.0} inputs/s, {:>8.0} records/s \
             (kv alone; {} inputs, 2 WAL records each)",
            "recover",
            recoveries.len(),
            fmt_duration(recovery_took / recoveries.len() as u32),
            recovery_inputs_per_s,
            2.0 * recovery_inputs_per_s,
            recoveries[0].replayed,
        );
        for (label, gates) in self.gates.lock().iter() {
            let took: Duration = gates.iter().map(|g| g.took).sum();
            let inputs: u64 = gates.iter().map(|g| g.tally.samples).sum();
            let records: u64 = gates.iter().map(|g| g.records_read).sum();
            let inputs_per_s = inputs as f64 / took.as_secs_f64();
            let first = &gates[0];
            println!(
                "  {label:<30} {:>3} runs, mean took {:>10}, {:>8.0} inputs/s, {:>8.0} records/s \
                 (kv and kv-placebo; {} inputs, {} WAL records, {} state checks per run; \
                 GateReport::inputs_per_second of the first run {:.0}); gate / recover \
                 inputs/s {:.3}x",
                gates.len(),
                fmt_duration(took / gates.len() as u32),
                inputs_per_s,
                records as f64 / took.as_secs_f64(),
                first.tally.samples,
                first.records_read,
                first.tally.state_checks,
                first.inputs_per_second,
                inputs_per_s / recovery_inputs_per_s,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = runtime();
    let host = wasm_host();
    let production = Production::start(&rt, &host);
    production_call(&mut c, &rt, &production);
    shadow_spawn(&mut c, &rt, &host);
    let pauses = promotion_pause(&mut c, &rt, &host);
    let replays = gate(&mut c, &rt, &host);
    c.final_summary();
    // After the timed groups, outside criterion.
    production.percentiles(&rt);
    production.finish(&rt);
    pauses.print();
    replays.print();
}
