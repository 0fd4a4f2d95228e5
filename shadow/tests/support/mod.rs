//! What the arbiter tests share: a journaled `kv` agent with history, traffic that keeps a model
//! of the acknowledged writes, a test configuration, and waits.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arbor_agent::{AgentRef, AgentSpec, AgentSystem};
use arbor_modules::kv::{KvMsg, KvReply};
use arbor_shadow::{
    Approval, Arbiter, ArbiterConfig, EvaluationStatus, Policy, ShadowLimits, Stage, VerdictDetail,
};
use arbor_testkit::SplitMix64;
use arbor_vault::{LineageEvent, Verdict};
use parking_lot::Mutex;

pub const KEYS: u64 = 1_000;

pub fn key(i: u64) -> String {
    format!("key-{i}")
}

pub async fn call(agent: &AgentRef, msg: &KvMsg) -> KvReply {
    agent.call_msg(msg).await.unwrap()
}

/// What `history` Puts leave in the store.
pub fn history_store(history: u64) -> BTreeMap<String, String> {
    (0..history)
        .map(|i| (key(i % KEYS), format!("h{i}")))
        .collect()
}

/// A journaled system with a `kv` agent that has `history` Puts in its journal.
pub async fn kv_system(dir: &std::path::Path, history: u64) -> (AgentSystem, AgentRef) {
    let system = AgentSystem::builder().journal(dir).build().unwrap();
    let kv = system.add_module("kv", arbor_modules::KV).unwrap();
    let agent = system.spawn(AgentSpec::wasm("kv", kv)).await.unwrap();
    for i in 0..history {
        let put = KvMsg::Put {
            key: key(i % KEYS),
            value: format!("h{i}"),
        };
        call(&agent, &put).await;
    }
    (system, agent)
}

/// A journaled `kv` agent with `history` Puts, an arbiter with `config`, and `bytes` admitted
/// as `name` and under evaluation.
pub async fn evaluating(
    dir: &std::path::Path,
    history: u64,
    config: ArbiterConfig,
    name: &str,
    bytes: &[u8],
) -> (AgentSystem, Arbiter, arbor_vault::ModuleHash) {
    let (system, _agent) = kv_system(dir, history).await;
    let arbiter = Arbiter::new(system.clone(), config).unwrap();
    let candidate = arbiter.admit("kv", name, bytes).unwrap();
    arbiter.evaluate("kv", candidate, Vec::new()).unwrap();
    (system, arbiter, candidate)
}

/// What the traffic sends.
#[derive(Clone, Copy, PartialEq)]
pub enum Mix {
    /// Gets, Puts, Deletes and Scans over every key.
    Everything,
    /// Puts only.
    Puts,
}

/// Sends traffic to the agent (looked up by name each time, so it follows restarts) until
/// stopped, keeping a model of the acknowledged writes.
pub struct Traffic {
    pub stop: Arc<AtomicBool>,
    pub mix: Arc<Mutex<Mix>>,
    pub model: Arc<Mutex<BTreeMap<String, String>>>,
    pub sent: Arc<AtomicU64>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// `initial` is the store the traffic starts from.
    pub fn start(
        system: &AgentSystem,
        mix: Mix,
        seed: u64,
        initial: BTreeMap<String, String>,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mix = Arc::new(Mutex::new(mix));
        let model = Arc::new(Mutex::new(initial));
        let sent = Arc::new(AtomicU64::new(0));
        let (system, stop2, mix2, model2, sent2) = (
            system.clone(),
            Arc::clone(&stop),
            Arc::clone(&mix),
            Arc::clone(&model),
            Arc::clone(&sent),
        );
        let task = tokio::spawn(async move {
            let mut rng = SplitMix64::new(seed);
            let mut n = 0u64;
            while !stop2.load(Ordering::Acquire) {
                let Some(agent) = system.lookup("kv") else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                n += 1;
                let k = key(rng.below(KEYS));
                let roll = rng.below(100);
                let mix = *mix2.lock();
                let msg = match mix {
                    Mix::Puts => KvMsg::Put {
                        key: k,
                        value: format!("v{n}"),
                    },
                    Mix::Everything if roll < 40 => KvMsg::Get { key: k },
                    Mix::Everything if roll < 75 => KvMsg::Put {
                        key: k,
                        value: format!("v{n}"),
                    },
                    Mix::Everything if roll < 85 => KvMsg::Delete { key: k },
                    Mix::Everything => KvMsg::Scan {
                        prefix: format!("key-{}", rng.below(10)),
                        limit: 5,
                    },
                };
                // The call can fail while a rollback pauses or a restart replaces the agent.
                let Ok(reply) = agent.call_msg::<_, KvReply>(&msg).await else {
                    continue;
                };
                sent2.fetch_add(1, Ordering::Relaxed);
                {
                    let mut model = model2.lock();
                    match (msg, reply) {
                        (KvMsg::Put { key, value }, KvReply::Stored { .. }) => {
                            model.insert(key, value);
                        }
                        (KvMsg::Delete { key }, KvReply::Deleted { .. }) => {
                            model.remove(&key);
                        }
                        _ => {}
                    }
                }
                // Leave the shadows a little room: this is a test, not a load test.
                if n.is_multiple_of(8) {
                    tokio::task::yield_now().await;
                }
            }
        });
        Traffic {
            stop,
            mix,
            model,
            sent,
            task,
        }
    }

    pub async fn stop(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        self.model.lock().clone()
    }
}

pub fn config(approval: Approval) -> ArbiterConfig {
    ArbiterConfig {
        approval,
        policy: Policy {
            // The bound these tests prove: < 1 % at 95 %, 299 clean samples (the default,
            // 0.1 %, takes 2,995; `tests/evolution_bound.rs` runs at the default).
            target_failure_rate: 0.01,
            min_per_kind: 30,
            // These tests judge answers, state and fuel; the tests run in parallel on two
            // cores, where latency says more about the neighbours than about the module.
            latency_tolerance: 2.0,
            ..Policy::default()
        },
        limits: ShadowLimits {
            deadline: Duration::from_secs(60),
            ..ShadowLimits::default()
        },
        watch: Duration::from_millis(500),
        watch_samples: 100,
        watch_max: Duration::from_secs(60),
        ..ArbiterConfig::default()
    }
}

/// Waits until the gate is over and the shadows mirror production, so the gate sees only the
/// history and the shadows all the traffic.
pub async fn past_the_gate(arbiter: &Arbiter) {
    tokio::time::timeout(
        Duration::from_secs(60),
        arbiter.wait("kv", |s| s.stage != Stage::Gate),
    )
    .await
    .unwrap()
    .unwrap();
}

pub async fn settled(arbiter: &Arbiter) -> EvaluationStatus {
    tokio::time::timeout(
        Duration::from_secs(120),
        arbiter.wait("kv", EvaluationStatus::is_settled),
    )
    .await
    .expect("the evaluation settles")
    .unwrap()
}

/// The agent's whole store, read through the agent.
pub async fn store(system: &AgentSystem) -> BTreeMap<String, String> {
    let agent = system.lookup("kv").unwrap();
    let scan = KvMsg::Scan {
        prefix: String::new(),
        limit: u32::MAX,
    };
    match call(&agent, &scan).await {
        KvReply::Entries { entries } => entries.into_iter().map(|e| (e.key, e.value)).collect(),
        other => panic!("{other:?}"),
    }
}

pub fn running_module(system: &AgentSystem) -> arbor_vault::Behaviour {
    let id = arbor_vault::AgentId::new("kv").unwrap();
    system
        .vault()
        .unwrap()
        .agent(&id)
        .unwrap()
        .unwrap()
        .behaviour
}

pub fn verdict_detail(arbiter: &Arbiter) -> (Verdict, VerdictDetail) {
    let history = arbiter.history("kv").unwrap();
    let (verdict, evidence) = history
        .iter()
        .rev()
        .find_map(|r| match &r.event {
            LineageEvent::Verdict {
                verdict, evidence, ..
            } => Some((*verdict, evidence.clone())),
            _ => None,
        })
        .expect("a verdict in the lineage");
    (verdict, VerdictDetail::decode(&evidence.detail).unwrap())
}

pub fn arbor_modules_kv() -> arbor_vault::ModuleHash {
    arbor_vault::ModuleHash::of(arbor_modules::KV)
}
