//! What the evolution tests share: the arbiter's test configuration, cache configurations, and
//! traffic that runs until stopped.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arbor_agent::AgentSystem;
use arbor_evolve::{Params, Value};
use arbor_shadow::{Approval, ArbiterConfig, Policy, ShadowLimits};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The arbiter as these tests run it: a bound of < 1 % at 95 % (299 clean samples), latency
/// left to the neighbours of a shared 2-core machine, a short watch.
///
/// `fuel_tolerance` is 0.25: a bigger cache makes a write a little dearer (its record leaves
/// the cache) while reads get much cheaper, and the per-kind rule's default 5 % would refuse
/// that trade.
pub fn arbiter_config(approval: Approval) -> ArbiterConfig {
    ArbiterConfig {
        approval,
        policy: Policy {
            target_failure_rate: 0.01,
            min_per_kind: 30,
            latency_tolerance: 2.0,
            fuel_tolerance: 0.25,
            ..Policy::default()
        },
        limits: ShadowLimits {
            deadline: Duration::from_secs(60),
            ..ShadowLimits::default()
        },
        watch: Duration::from_millis(300),
        watch_samples: 100,
        watch_max: Duration::from_secs(30),
        ..ArbiterConfig::default()
    }
}

/// A configuration of the cache agent.
pub fn cache_params(capacity: i64, policy: &str, admit_after: i64) -> Params {
    let mut params = Params::default();
    params.0.insert("capacity".into(), Value::Int(capacity));
    params
        .0
        .insert("policy".into(), Value::Choice(policy.into()));
    params
        .0
        .insert("admit_after".into(), Value::Int(admit_after));
    params
}

/// The cache agent's traffic: reads mostly of six hot records, a few of 30 cold ones, a write
/// in 50.
pub fn hot_reads(n: u64) -> arbor_modules::cache::CacheMsg {
    use arbor_modules::cache::CacheMsg;
    let key = if n.is_multiple_of(5) {
        10 + (n % 30) as u32
    } else {
        (n % 6) as u32
    };
    if n.is_multiple_of(50) {
        CacheMsg::Put {
            key,
            value: format!("v{n}"),
        }
    } else {
        CacheMsg::Get { key }
    }
}

/// Calls `agent` with `traffic(n)` for n = `from`, `from` + 1, … until stopped; a call that
/// fails (while a promotion swaps the module) is skipped.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start<M, R>(
        system: &AgentSystem,
        agent: &'static str,
        from: u64,
        traffic: fn(u64) -> M,
    ) -> Load
    where
        M: Serialize + Send + Sync + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (system, stopped) = (system.clone(), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut n = from;
            while !stopped.load(Ordering::Acquire) {
                match system.lookup(agent) {
                    Some(found) => {
                        let _ = found.call_msg::<_, R>(&traffic(n)).await;
                    }
                    None => tokio::time::sleep(Duration::from_millis(2)).await,
                }
                n += 1;
                if n.is_multiple_of(8) {
                    tokio::task::yield_now().await;
                }
            }
        });
        Load { stop, task }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
    }
}
