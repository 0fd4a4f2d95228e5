//! The arbiter over a supervised `Runtime`: production crashes during an evaluation (the
//! supervisor restarts the agent from its journal) and the shadows re-seed from the restarted
//! agent, so the comparison stays exact; then a promotion of a supervised agent survives a
//! runtime restart.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use arbor::shadow::{
    Approval, Arbiter, ArbiterConfig, EvaluationStatus, Outcome, Policy, ShadowLimits, Stage,
};
use arbor::supervisor::Intensity;
use arbor::{Error, Runtime, Spawn, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};

async fn runtime(dir: &std::path::Path) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .root(SupervisorOptions {
            intensity: Intensity {
                max_restarts: 1_000,
                period: Duration::from_secs(60),
            },
            ..SupervisorOptions::default()
        })
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_resync_after_production_restarts_and_a_promotion_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path()).await;
    runtime
        .spawn(Spawn::wasm_bytes("counter", arbor_modules::COUNTER))
        .await
        .unwrap();
    let config = ArbiterConfig {
        approval: Approval::Suggest,
        policy: Policy {
            // < 1.5 % at 95 %: 199 clean samples.
            target_failure_rate: 0.015,
            min_per_kind: 3,
            ..Policy::default()
        },
        limits: ShadowLimits {
            deadline: Duration::from_secs(30),
            ..ShadowLimits::default()
        },
        watch: Duration::from_millis(300),
        // The watch is the window alone here: no traffic follows the promotion.
        watch_samples: 0,
        ..ArbiterConfig::default()
    };
    let arbiter = Arbiter::new(runtime.system().clone(), config.clone()).unwrap();
    // The current module against itself: every difference would be the arbiter's fault.
    let candidate = arbiter
        .admit("counter", "counter", arbor_modules::COUNTER)
        .unwrap();
    arbiter.evaluate("counter", candidate, Vec::new()).unwrap();
    arbiter
        .wait("counter", |s| s.stage != Stage::Gate)
        .await
        .unwrap();

    let mut acknowledged = 0;
    let mut traps = 0;
    for i in 1..=400 {
        if i % 50 == 0 {
            // Production traps; the supervisor restarts it from its journal.
            let failed = runtime
                .call::<_, CounterReply>("counter", &CounterMsg::Fail)
                .await;
            assert!(failed.is_err());
            traps += 1;
            // Give the shadows a moment to mirror the restarted agent (inputs before that are
            // not compared, and the test wants every message kind compared).
            while runtime.system().lookup("counter").is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        loop {
            match runtime
                .call::<_, CounterReply>("counter", &CounterMsg::Inc { by: 1 })
                .await
            {
                Ok(reply) => {
                    acknowledged += 1;
                    assert_eq!(reply.count, acknowledged);
                    break;
                }
                Err(Error::Restarting(_) | Error::Agent(_)) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(error) => panic!("{error}"),
            }
        }
    }
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        arbiter.wait("counter", EvaluationStatus::is_settled),
    )
    .await
    .unwrap_or_else(|_| panic!("{:#?}", arbiter.status("counter")))
    .unwrap();
    assert_eq!(status.stage, Stage::AwaitingApproval, "{status:#?}");
    assert!(status.shadow.resyncs > 0, "{:#?}", status.shadow);
    assert_eq!(status.shadow.mismatch_count(), 0, "{:#?}", status.shadow);
    assert_eq!(status.shadow.aa_mismatches, 0, "{:#?}", status.shadow);
    assert!(traps >= 7);

    let promotion = arbiter.promote("counter").await.unwrap();
    assert!(promotion.checkpoint_lsn.is_some());
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        arbiter.wait("counter", |s| matches!(s.stage, Stage::Done(_))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status.stage, Stage::Done(Outcome::Promoted), "{status:#?}");

    runtime.shutdown().await.unwrap();
    drop(arbiter);
    drop(runtime);
    let runtime = runtime_again(dir.path()).await;
    let reply: CounterReply = runtime.call("counter", &CounterMsg::Get).await.unwrap();
    assert_eq!(reply.count, acknowledged);
    let arbiter = Arbiter::new(runtime.system().clone(), config).unwrap();
    let steps: Vec<String> = arbiter
        .history("counter")
        .unwrap()
        .iter()
        .filter_map(|r| match &r.event {
            arbor::vault::LineageEvent::Step { step, .. } => Some(step.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["gate", "shadows", "promoting", "watch-passed"]);
}

async fn runtime_again(dir: &std::path::Path) -> Runtime {
    runtime(dir).await
}
