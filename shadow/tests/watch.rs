//! Issue 17.4 and 17.7: the watch after a promotion. It lasts its window *and* its sample count
//! (or says it could not), catches up from the journal when its reverse shadow falls behind
//! instead of giving up and keeping the promotion, and in verified mode no wrong reply leaves.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arbor_agent::{AgentRef, AgentSpec, AgentSystem};
use arbor_modules::kv::{KvMsg, KvReply};
use arbor_modules::{Hostile, kv_hostile};
use arbor_shadow::{
    Approval, Arbiter, ArbiterConfig, EvaluationStatus, Outcome, Policy, ShadowLimits, Stage,
};
use arbor_vault::{LineageEvent, Step};

/// A quick evaluation (< 5 % at 95 %: 59 samples) so the tests get to the watch.
fn quick(queue: usize, verified: bool) -> ArbiterConfig {
    ArbiterConfig {
        approval: Approval::Auto,
        policy: Policy {
            target_failure_rate: 0.05,
            min_per_kind: 5,
            min_live_samples: 20,
            latency_tolerance: 5.0,
            ..Policy::default()
        },
        limits: ShadowLimits {
            queue,
            deadline: Duration::from_secs(60),
            ..ShadowLimits::default()
        },
        watch: Duration::from_millis(100),
        watch_samples: 300,
        watch_max: Duration::from_secs(60),
        verified_watch: verified,
    }
}

/// A journaled `kv` agent running `module`, holding `zz-0..50` and `k0..500`.
async fn agent_running(dir: &std::path::Path, module: &[u8]) -> (AgentSystem, AgentRef) {
    let system = AgentSystem::builder().journal(dir).build().unwrap();
    let hash = system.add_module("kv", module).unwrap();
    let agent = system.spawn(AgentSpec::wasm("kv", hash)).await.unwrap();
    for i in 0..50 {
        put(&agent, &format!("zz-{i}")).await;
    }
    for i in 0..500 {
        put(&agent, &format!("k{i}")).await;
    }
    (system, agent)
}

async fn put(agent: &AgentRef, key: &str) {
    let _: KvReply = agent
        .call_msg(&KvMsg::Put {
            key: key.into(),
            value: "v".into(),
        })
        .await
        .unwrap();
}

/// Puts until `until` holds (the agent looked up each time: a rollback replaces nothing, but
/// calls may wait while it pauses).
async fn puts_until(
    system: &AgentSystem,
    arbiter: &Arbiter,
    until: impl Fn(&EvaluationStatus) -> bool,
) -> EvaluationStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut n = 0u64;
    loop {
        if let Some(status) = arbiter.status("kv").filter(|s| until(s)) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            arbiter.status("kv")
        );
        if let Some(agent) = system.lookup("kv") {
            // A few casts per call: bursts a slow shadow's one-slot mirror cannot hold, at a
            // rate it can follow on average.
            for _ in 0..3 {
                n += 1;
                let put = KvMsg::Put {
                    key: format!("k{}", n % 500),
                    value: format!("v{n}"),
                };
                let _ = agent.cast(rmp_serde::to_vec_named(&put).unwrap());
            }
            let _ = agent
                .call_msg::<_, KvReply>(&KvMsg::Get { key: "k0".into() })
                .await;
        }
        tokio::task::yield_now().await;
    }
}

/// Reads every `zz` key (all present, so a right reply is a value) until the evaluation is
/// over; returns how it ended and how many replies were wrong.
async fn reads_of_the_bug_until_done(
    system: &AgentSystem,
    arbiter: &Arbiter,
) -> (EvaluationStatus, u64) {
    let mut wrong = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = arbiter
            .status("kv")
            .filter(|s| matches!(s.stage, Stage::Done(_)))
        {
            return (status, wrong);
        }
        assert!(tokio::time::Instant::now() < deadline);
        let Some(agent) = system.lookup("kv") else {
            tokio::task::yield_now().await;
            continue;
        };
        for i in 0..50 {
            let get = KvMsg::Get {
                key: format!("zz-{i}"),
            };
            match agent.call_msg::<_, KvReply>(&get).await {
                Ok(KvReply::Value { value: Some(_) }) | Err(_) => {}
                Ok(_) => wrong += 1,
            }
        }
    }
}

fn watching(status: &EvaluationStatus) -> bool {
    matches!(status.stage, Stage::Watching | Stage::Done(_))
}

/// The lineage's steps once the watch's end is in it (it is written just after the stage is
/// published).
async fn steps_after_watch(arbiter: &Arbiter) -> Vec<String> {
    for _ in 0..100 {
        if typed_steps(arbiter).iter().any(Step::ends_watch) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    steps(arbiter)
}

fn steps(arbiter: &Arbiter) -> Vec<String> {
    typed_steps(arbiter).iter().map(Step::to_string).collect()
}

fn typed_steps(arbiter: &Arbiter) -> Vec<Step> {
    arbiter
        .history("kv")
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            LineageEvent::Step { step, .. } => Some(step),
            _ => None,
        })
        .collect()
}

/// Production (kv) far faster than its reverse shadow (kv-slow, ~50x the fuel) behind a
/// one-slot mirror: the shadow misses inputs, reads them back from the journal, and the watch
/// passes on its full rule — where it used to end early, "promotion kept".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_falls_behind_catches_up_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (system, _agent) = agent_running(dir.path(), arbor_modules::KV_SLOW).await;
    let arbiter = Arbiter::new(system.clone(), quick(1, false)).unwrap();
    let kv = arbiter.admit("kv", "kv", arbor_modules::KV).unwrap();
    arbiter.evaluate("kv", kv, Vec::new()).unwrap();
    let status = puts_until(&system, &arbiter, |s| matches!(s.stage, Stage::Done(_))).await;
    assert_eq!(status.stage, Stage::Done(Outcome::Promoted), "{status:#?}");
    assert!(status.watch.samples >= 300, "{:#?}", status.watch);
    assert!(
        status.watch.gaps > 0,
        "the shadow kept up: {:#?}",
        status.watch
    );
    assert!(
        status.watch.caught_up >= status.watch.gaps,
        "{:#?}",
        status.watch
    );
    let steps = steps_after_watch(&arbiter).await;
    assert!(steps.contains(&"watch-passed".to_string()), "{steps:?}");
    assert!(!steps.iter().any(|s| s == "watch-ended"), "{steps:?}");
}

/// A regression that shows after the reverse shadow has fallen behind is still caught, and
/// rolled back (the watch used to end at the first gap and keep the promotion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_after_the_watch_fell_behind_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (system, _agent) = agent_running(dir.path(), arbor_modules::KV_SLOW).await;
    let mut config = quick(1, false);
    // The watch must still be on when the bug's inputs come.
    config.watch_samples = 1_000_000;
    let arbiter = Arbiter::new(system.clone(), config).unwrap();
    let buggy = arbiter
        .admit("kv", "rare-prefix", &kv_hostile(Hostile::RarePrefix))
        .unwrap();
    arbiter.evaluate("kv", buggy, Vec::new()).unwrap();
    // Puts only while it is judged, and into the watch until the shadow has fallen behind.
    let status = puts_until(&system, &arbiter, |s| {
        watching(s) && s.watch.gaps > 0 || matches!(s.stage, Stage::Done(_))
    })
    .await;
    assert_eq!(status.stage, Stage::Watching, "{status:#?}");
    // Then the bug's inputs.
    let (status, _) = reads_of_the_bug_until_done(&system, &arbiter).await;
    assert_eq!(
        status.stage,
        Stage::Done(Outcome::RolledBack),
        "{status:#?}"
    );
    assert_eq!(
        support::running_module(&system),
        arbor_vault::Behaviour::Wasm(
            system
                .add_module("kv-slow", arbor_modules::KV_SLOW)
                .unwrap()
        )
    );
}

/// A verified watch holds every reply until the reverse shadow agrees, and answers with the
/// previous module's reply when it does not: callers never see the regression, which is rolled
/// back. The same scenario unverified lets the wrong reply that revealed it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_watch_releases_no_wrong_reply() {
    for verified in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (system, _agent) = agent_running(dir.path(), arbor_modules::KV).await;
        let arbiter = Arbiter::new(system.clone(), quick(4_096, verified)).unwrap();
        let buggy = arbiter
            .admit("kv", "rare-prefix", &kv_hostile(Hostile::RarePrefix))
            .unwrap();
        arbiter.evaluate("kv", buggy, Vec::new()).unwrap();
        let status = puts_until(&system, &arbiter, watching).await;
        assert_eq!(status.stage, Stage::Watching, "{status:#?}");
        let (status, wrong) = reads_of_the_bug_until_done(&system, &arbiter).await;
        assert_eq!(
            status.stage,
            Stage::Done(Outcome::RolledBack),
            "{status:#?}"
        );
        if verified {
            assert_eq!(wrong, 0, "a verified watch let {wrong} wrong replies out");
        } else {
            assert!(
                wrong >= 1,
                "the unverified watch's regression was never seen"
            );
        }
    }
}

/// The watch's rule: at least its window and its samples. With traffic it runs past the window
/// until it has the samples; without, it ends at its longest time saying it was incomplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_lasts_its_samples_and_says_when_it_could_not() {
    for traffic_after in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (system, _agent) = agent_running(dir.path(), arbor_modules::KV).await;
        let mut config = quick(4_096, false);
        config.watch_max = Duration::from_secs(3);
        let arbiter = Arbiter::new(system.clone(), config).unwrap();
        let placebo = arbiter
            .admit("kv", "placebo", arbor_modules::KV_PLACEBO)
            .unwrap();
        arbiter.evaluate("kv", placebo, Vec::new()).unwrap();
        let status = puts_until(&system, &arbiter, watching).await;
        assert_eq!(status.stage, Stage::Watching, "{status:#?}");
        let status = if traffic_after {
            puts_until(&system, &arbiter, |s| matches!(s.stage, Stage::Done(_))).await
        } else {
            tokio::time::timeout(
                Duration::from_secs(30),
                arbiter.wait("kv", |s| matches!(s.stage, Stage::Done(_))),
            )
            .await
            .unwrap()
            .unwrap()
        };
        assert_eq!(status.stage, Stage::Done(Outcome::Promoted), "{status:#?}");
        let steps = steps_after_watch(&arbiter).await;
        if traffic_after {
            assert!(status.watch.samples >= 300, "{:#?}", status.watch);
            assert!(steps.contains(&"watch-passed".to_string()), "{steps:?}");
        } else {
            assert!(status.watch.samples < 300, "{:#?}", status.watch);
            assert!(steps.contains(&"watch-incomplete".to_string()), "{steps:?}");
        }
    }
}
