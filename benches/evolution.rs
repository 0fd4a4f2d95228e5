//! What the evolution arbiter's rule costs (issue 17), each beside its baseline in the same run:
//!
//! - `evolution_verdict`: inputs compared and time from `evaluate` to the verdict for a placebo
//!   (kv-placebo against kv, 2,000 inputs of history, live traffic), at the default bound
//!   (failure rate < 0.1 % at 95 %: 2,995 samples) beside the old rule's 300 samples (< 1 % at
//!   95 %: 299).
//! - `evolution_watch_call`: a call's latency to a promoted agent while its watch runs, plain
//!   and verified (each reply waits for the reverse shadow), beside the same agent with no
//!   watch.
//!
//! Run: `cargo bench --bench evolution`.

use std::time::{Duration, Instant};

use arbor::agent::{AgentRef, AgentSpec, AgentSystem};
use arbor::shadow::{Approval, Arbiter, ArbiterConfig, Policy, ShadowLimits, Stage};
use arbor_modules::kv::{KvMsg, KvReply};
use criterion::{BenchmarkId, Criterion};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn encode(msg: &KvMsg) -> Vec<u8> {
    rmp_serde::to_vec_named(msg).expect("encode")
}

fn traffic(n: u64) -> Vec<u8> {
    let key = format!("k{}", n % 1_000);
    encode(&if n.is_multiple_of(4) {
        KvMsg::Put {
            key,
            value: format!("v{n}"),
        }
    } else {
        KvMsg::Get { key }
    })
}

async fn kv_agent(dir: &std::path::Path, history: u64) -> (AgentSystem, AgentRef) {
    let system = AgentSystem::builder().journal(dir).build().expect("system");
    let kv = system.add_module("kv", arbor_modules::KV).expect("kv");
    let agent = system
        .spawn(AgentSpec::wasm("kv", kv))
        .await
        .expect("spawn");
    for n in 0..history {
        let _: KvReply = agent
            .call_msg(&KvMsg::Put {
                key: format!("k{}", n % 1_000),
                value: "v".into(),
            })
            .await
            .expect("put");
    }
    (system, agent)
}

fn config(target: f64, approval: Approval, verified: bool) -> ArbiterConfig {
    ArbiterConfig {
        approval,
        policy: Policy {
            target_failure_rate: target,
            latency_tolerance: 5.0,
            ..Policy::default()
        },
        limits: ShadowLimits {
            deadline: Duration::from_secs(600),
            ..ShadowLimits::default()
        },
        watch: Duration::from_secs(3_600),
        watch_samples: u64::MAX,
        watch_max: Duration::from_secs(3_600),
        verified_watch: verified,
    }
}

/// One evaluation of a placebo to its verdict; (inputs compared, time).
async fn verdict(target: f64) -> (u64, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (system, agent) = kv_agent(dir.path(), 2_000).await;
    let arbiter =
        Arbiter::new(system.clone(), config(target, Approval::Suggest, false)).expect("arbiter");
    let placebo = arbiter
        .admit("kv", "kv-placebo", arbor_modules::KV_PLACEBO)
        .expect("admit");
    let started = Instant::now();
    arbiter
        .evaluate("kv", placebo, Vec::new())
        .expect("evaluate");
    let mut n = 0;
    let status = loop {
        if let Some(status) = arbiter.status("kv").filter(|s| s.is_settled()) {
            break status;
        }
        agent.call(traffic(n)).await.expect("call");
        n += 1;
    };
    let took = started.elapsed();
    assert_eq!(status.stage, Stage::AwaitingApproval, "{status:?}");
    system.shutdown().await.expect("shutdown");
    (status.shadow.samples, took)
}

fn evolution_verdict(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("evolution_verdict");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    let mut inputs = Vec::new();
    for (label, target) in [("bound_1pct", 0.01), ("default_bound_0.1pct", 0.001)] {
        let mut seen = Vec::new();
        group.bench_function(BenchmarkId::new("placebo", label), |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let (samples, time) = rt.block_on(verdict(target));
                    seen.push(samples);
                    took += time;
                }
                took
            })
        });
        inputs.push((label, seen.iter().copied().max().unwrap_or(0)));
    }
    group.finish();
    for (label, samples) in inputs {
        println!("evolution_verdict/{label}: {samples} inputs compared before the verdict");
    }
}

/// A promoted agent: kv-placebo promoted over kv under `config`'s watch (or none).
async fn promoted(
    dir: &std::path::Path,
    watch: Option<bool>,
) -> (AgentSystem, AgentRef, Option<Arbiter>) {
    let (system, agent) = kv_agent(dir, 500).await;
    let Some(verified) = watch else {
        return (system, agent, None);
    };
    let arbiter =
        Arbiter::new(system.clone(), config(0.05, Approval::Auto, verified)).expect("arbiter");
    let placebo = arbiter
        .admit("kv", "kv-placebo", arbor_modules::KV_PLACEBO)
        .expect("admit");
    arbiter
        .evaluate("kv", placebo, Vec::new())
        .expect("evaluate");
    let mut n = 0;
    loop {
        if let Some(status) = arbiter.status("kv") {
            assert!(!matches!(status.stage, Stage::Done(_)), "{status:?}");
            if status.stage == Stage::Watching {
                break;
            }
        }
        agent.call(traffic(n)).await.expect("call");
        n += 1;
    }
    (system, agent, Some(arbiter))
}

fn evolution_watch_call(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("evolution_watch_call");
    group.measurement_time(Duration::from_secs(4));
    for (label, watch) in [
        ("no_watch", None),
        ("watch", Some(false)),
        ("verified_watch", Some(true)),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (system, agent, _arbiter) = rt.block_on(promoted(dir.path(), watch));
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for n in 0..iters {
                        agent.call(traffic(n)).await.expect("call");
                    }
                    started.elapsed()
                })
            })
        });
        rt.block_on(system.shutdown()).expect("shutdown");
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = runtime();
    evolution_verdict(&mut c, &rt);
    evolution_watch_call(&mut c, &rt);
    c.final_summary();
}
