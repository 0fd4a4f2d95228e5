//! Candidates of every origin reach the vault's archive with their parents, origin, how far they
//! got and what they measured, and parents are chosen from it: a configuration of the cache
//! agent that holds the hot records is approved on `fuel:better:0.1`, one without a cache
//! (which saves less than that) is rejected, a source that does not build and bytes that are not a module are archived as
//! refused with the reason, and the archive survives a restart.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arbor_agent::{AgentSpec, AgentSystem};
use arbor_evolve::{Direction, contenders, with_params};
use arbor_modules::CACHE;
use arbor_modules::cache::{CacheMsg, CacheReply};
use arbor_shadow::{Approval, Arbiter, EvaluationOptions, EvaluationStatus, ShadowError, Stage};
use arbor_vault::{LineageEvent, ModuleHash, Origin, Reached, Step};
use support::{Load, arbiter_config, cache_params, hot_reads};

async fn settle(system: &AgentSystem, arbiter: &Arbiter) -> EvaluationStatus {
    let load = Load::start::<_, CacheReply>(system, "cache", 0, hot_reads);
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        arbiter.wait("cache", EvaluationStatus::is_settled),
    )
    .await
    .expect("the evaluation settles")
    .unwrap();
    load.stop().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_candidate_is_archived_with_how_far_it_got_and_parents_come_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = ModuleHash::of(CACHE);
    {
        let system = AgentSystem::builder().journal(dir.path()).build().unwrap();
        let hash = system.add_module("cache", CACHE).unwrap();
        let agent = system.spawn(AgentSpec::wasm("cache", hash)).await.unwrap();
        for key in 0..40 {
            let put = CacheMsg::Put {
                key,
                value: format!("record {key}"),
            };
            let _: CacheReply = agent.call_msg(&put).await.unwrap();
        }
        let arbiter = Arbiter::new(system.clone(), arbiter_config(Approval::Suggest)).unwrap();
        let options = EvaluationOptions {
            objectives: vec!["fuel:better:0.1".parse().unwrap()],
            ..EvaluationOptions::default()
        };
        let mut outcomes = Vec::new();
        for capacity in [16, 0] {
            let p = cache_params(capacity, "lru", 1);
            let bytes = with_params(CACHE, &p).unwrap();
            let origin = Origin::Params { params: p.render() };
            let candidate = arbiter
                .admit_from("cache", "params", &bytes, origin, Some(vec![root]))
                .unwrap();
            arbiter
                .evaluate_with("cache", candidate, options.clone())
                .unwrap();
            let status = settle(&system, &arbiter).await;
            // An approved candidate waits for a person; the next needs the agent free.
            if status.stage == Stage::AwaitingApproval {
                arbiter.cancel("cache").unwrap();
            }
            outcomes.push((capacity, candidate, status));
        }

        // A source that did not build, and bytes that are not a module.
        let built = Origin::Built {
            language: "rust".into(),
            source: "00".repeat(32),
        };
        arbiter
            .refuse(
                "cache",
                ModuleHash::of(b"source"),
                built,
                vec![root],
                "error[E0308]: mismatched types",
            )
            .unwrap();
        let junk = Origin::Submitted {
            author: "mallory".into(),
            description: "not wasm".into(),
        };
        assert!(matches!(
            arbiter.admit_from("cache", "junk", b"junk", junk, None),
            Err(ShadowError::Refused(_))
        ));

        let archive = arbiter.archive("cache").unwrap();
        let entry = |module: ModuleHash| {
            archive
                .iter()
                .find(|e| e.module == module)
                .unwrap_or_else(|| panic!("{module} not archived: {archive:#?}"))
        };
        let production = entry(root);
        assert_eq!(
            (
                production.origin.clone(),
                production.reached,
                production.generation
            ),
            (Origin::Production, Reached::Promoted, 0)
        );
        let (_, hot, status) = &outcomes[0];
        let hot = entry(*hot);
        assert_eq!(hot.reached, Reached::Approved, "{status:#?}");
        assert_eq!((hot.parents.clone(), hot.generation), (vec![root], 1));
        assert!(
            hot.scores["fuel"] < 0.9 * hot.scores["fuel.control"],
            "{hot:?}"
        );
        assert!(hot.scores.contains_key("memory"));
        let (_, cold, _) = &outcomes[1];
        let cold = entry(*cold);
        assert!(
            matches!(cold.reached, Reached::Gate | Reached::Shadows),
            "{cold:?}"
        );
        assert!(cold.reason.as_deref().unwrap().contains("fuel"), "{cold:?}");
        // Without a cache it saves less than the 10 % asked (the default's misses walk it).
        assert!(
            cold.scores["fuel"] > 0.9 * cold.scores["fuel.control"],
            "{cold:?}"
        );
        let refused: Vec<_> = archive
            .iter()
            .filter(|e| e.reached == Reached::Refused)
            .collect();
        assert_eq!(refused.len(), 2, "{refused:#?}");
        assert!(
            refused
                .iter()
                .any(|e| e.module == ModuleHash::of(b"junk") && e.origin.kind() == "submitted")
        );
        assert!(refused.iter().any(|e| e.module == ModuleHash::of(b"source")
            && e.reason.as_deref() == Some("error[E0308]: mismatched types")));

        // The lineage says where each came from.
        let steps: Vec<(Step, String)> = arbiter
            .history("cache")
            .unwrap()
            .into_iter()
            .filter_map(|r| match r.event {
                LineageEvent::Step { step, detail, .. } => Some((step, detail)),
                _ => None,
            })
            .collect();
        assert!(steps.iter().any(|(step, detail)| *step == Step::Origin
            && detail.starts_with("parameters admit_after=1 capacity=16 policy=lru")));
        assert!(steps.iter().any(
            |(step, detail)| *step == Step::Refused && detail.contains("submitted by mallory")
        ));

        // Parents: the root and the approved configuration; it is the better on fuel.
        let objectives = [("fuel".to_string(), Direction::Lower)];
        let pool = contenders(&archive, &objectives, |s| {
            s.get("fuel").map_or(f64::NEG_INFINITY, |f| -f)
        });
        assert_eq!(pool.len(), 2, "{pool:?}");
        let best = pool.iter().find(|c| c.module == hot.module).unwrap();
        assert!(best.on_front);
        system.shutdown().await.unwrap();
    }
    // The archive is in the vault: a restarted host has it all.
    let system = AgentSystem::builder().journal(dir.path()).build().unwrap();
    let arbiter = Arbiter::new(system.clone(), arbiter_config(Approval::Suggest)).unwrap();
    assert_eq!(arbiter.archive("cache").unwrap().len(), 5);
    system.shutdown().await.unwrap();
}
