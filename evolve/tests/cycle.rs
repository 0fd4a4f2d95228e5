//! The continuous loop on the cache agent, started from a poor configuration: each cycle draws
//! parents from the archive, tries the genetic search's configurations and a source that does
//! not build, promotes (approval auto) only candidates the arbiter approved on
//! `fuel:better`, so production's fuel only goes down, and reports every candidate. Under
//! approval suggest, a cycle stops at the first approved candidate and the next waits for a
//! person.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arbor_agent::{AgentSpec, AgentSystem};
use arbor_evolve::{
    BuildLimits, CandidateSource, Direction, EvolutionLoop, FromSource, Genetic, GeneticConfig,
    LoopConfig, ParameterSearch, SourceCode, space_of, with_params,
};
use arbor_modules::CACHE;
use arbor_modules::cache::{CacheMsg, CacheReply};
use arbor_shadow::{Approval, Arbiter, EvaluationOptions, Stage};
use arbor_vault::{ModuleHash, Reached};
use support::{Load, arbiter_config, cache_params, hot_reads};

/// A poor configuration: two entries, FIFO, admitted at the third miss.
fn poor() -> Vec<u8> {
    with_params(CACHE, &cache_params(2, "fifo", 3)).unwrap()
}

async fn production(dir: &std::path::Path) -> AgentSystem {
    let system = AgentSystem::builder().journal(dir).build().unwrap();
    let hash = system.add_module("cache-poor", &poor()).unwrap();
    let agent = system.spawn(AgentSpec::wasm("cache", hash)).await.unwrap();
    for key in 0..40 {
        let put = CacheMsg::Put {
            key,
            value: format!("record {key}"),
        };
        let _: CacheReply = agent.call_msg(&put).await.unwrap();
    }
    system
}

fn search(seed: u64) -> Box<dyn CandidateSource> {
    let genetic = Genetic::new(
        space_of(CACHE).unwrap(),
        GeneticConfig {
            population: 4,
            elitism: 1,
            seed,
            ..GeneticConfig::default()
        },
    )
    .unwrap();
    Box::new(ParameterSearch::new(&poor(), genetic).unwrap())
}

fn loop_config(candidates: usize) -> LoopConfig {
    LoopConfig {
        options: EvaluationOptions {
            objectives: vec!["fuel:better:0.05".parse().unwrap()],
            ..EvaluationOptions::default()
        },
        candidates_per_cycle: candidates,
        evaluation_deadline: Duration::from_secs(120),
        fitness: ("fuel".into(), Direction::Lower),
        ..LoopConfig::new("cache")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_promotes_only_what_the_arbiter_approved_and_reports_every_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path()).await;
    let arbiter = Arbiter::new(system.clone(), arbiter_config(Approval::Auto)).unwrap();
    let broken = FromSource::new(BuildLimits::default());
    broken.add(
        "typo",
        SourceCode::Wat("(module (func (result i32)))".into()),
    );
    let mut evolution = EvolutionLoop::new(
        arbiter.clone(),
        loop_config(3),
        vec![search(5), Box::new(broken)],
    )
    .unwrap();
    let load = Load::start::<_, CacheReply>(&system, "cache", 0, hot_reads);
    let mut reports = Vec::new();
    for _ in 0..3 {
        reports.push(evolution.cycle().await.unwrap());
    }
    load.stop().await;

    let tried: Vec<_> = reports.iter().flat_map(|r| r.tried.iter()).collect();
    assert!(tried.len() >= 6, "{reports:#?}");
    let refused = tried
        .iter()
        .find(|t| t.name == "typo")
        .expect("the broken source was tried");
    assert_eq!(refused.outcome, "refused");
    assert!(
        refused.reason.as_deref().unwrap().contains("type mismatch"),
        "{refused:?}"
    );
    for t in &tried {
        assert!(
            ["refused", "gate", "shadows", "promoted", "rolled back"].contains(&t.outcome.as_str()),
            "{t:?}"
        );
    }

    // Every promotion was approved on `fuel:better:0.05` (a rank test on the per-input log
    // ratios), so each promoted configuration's mean fuel is below its control's.
    let archive = arbiter.archive("cache").unwrap();
    let promoted: Vec<_> = archive
        .iter()
        .filter(|e| e.reached == Reached::Promoted && !e.parents.is_empty())
        .collect();
    assert!(
        !promoted.is_empty(),
        "nothing promoted from a poor start: {reports:#?}"
    );
    for entry in &promoted {
        assert!(
            entry.scores["fuel"] < entry.scores["fuel.control"],
            "{entry:?}"
        );
    }
    let trend: Vec<f64> = reports
        .last()
        .unwrap()
        .trend
        .iter()
        .flatten()
        .copied()
        .collect();
    assert!(trend.windows(2).all(|w| w[1] <= w[0]), "{trend:?}");
    let last = reports.last().unwrap();
    assert_ne!(last.production_after, ModuleHash::of(&poor()).to_string());
    let markdown = last.markdown();
    assert!(
        markdown.contains("| candidate | source | origin | outcome | fuel"),
        "{markdown}"
    );
    assert!(
        markdown.contains(&format!("cycle {}", last.cycle)),
        "{markdown}"
    );
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_suggest_a_cycle_stops_at_the_first_approval_and_waits_for_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path()).await;
    let arbiter = Arbiter::new(system.clone(), arbiter_config(Approval::Suggest)).unwrap();
    // Capacity 16, LRU, admitted at once: holds every hot record, far cheaper than production.
    let good = cache_params(16, "lru", 1);
    let submitted = arbor_evolve::Submitted::new();
    for name in ["good", "also good"] {
        submitted.submit(arbor_evolve::Submission {
            name: name.into(),
            bytes: with_params(&poor(), &good).unwrap(),
            author: "test".into(),
            description: "a bigger cache".into(),
        });
    }
    let mut evolution =
        EvolutionLoop::new(arbiter.clone(), loop_config(4), vec![Box::new(submitted)]).unwrap();
    let load = Load::start::<_, CacheReply>(&system, "cache", 0, hot_reads);
    let first = evolution.cycle().await.unwrap();
    assert_eq!(first.tried.len(), 1, "{first:#?}");
    assert_eq!(first.tried[0].outcome, "awaiting approval");
    assert!(first.waiting.is_some());
    let second = evolution.cycle().await.unwrap();
    assert!(second.tried.is_empty(), "{second:#?}");
    assert!(
        second
            .waiting
            .as_deref()
            .unwrap()
            .contains("AwaitingApproval")
    );
    assert_eq!(
        arbiter.status("cache").unwrap().stage,
        Stage::AwaitingApproval
    );
    load.stop().await;
    system.shutdown().await.unwrap();
}

fn kv_traffic(n: u64) -> arbor_modules::kv::KvMsg {
    use arbor_modules::kv::KvMsg;
    let key = format!("key-{}", n % 150);
    if n.is_multiple_of(3) {
        KvMsg::Put {
            key,
            value: format!("v{n}"),
        }
    } else {
        KvMsg::Get { key }
    }
}

/// Placebos (kv's code and data, a new hash each) through the loop under the default rule and
/// approval auto: every one must be approved and promoted. A rejection is a false rejection by
/// the arbiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placebos_are_approved_and_promoted_one_after_another() {
    use arbor_modules::kv::{KvMsg, KvReply};
    const PLACEBOS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let system = AgentSystem::builder().journal(dir.path()).build().unwrap();
    let hash = system.add_module("kv", arbor_modules::KV).unwrap();
    let agent = system.spawn(AgentSpec::wasm("kv", hash)).await.unwrap();
    for i in 0..100 {
        let put = KvMsg::Put {
            key: format!("key-{i}"),
            value: format!("h{i}"),
        };
        let _: KvReply = agent.call_msg(&put).await.unwrap();
    }
    let arbiter = Arbiter::new(system.clone(), arbiter_config(Approval::Auto)).unwrap();
    let config = LoopConfig {
        candidates_per_cycle: PLACEBOS,
        evaluation_deadline: Duration::from_secs(120),
        ..LoopConfig::new("kv")
    };
    let mut evolution = EvolutionLoop::new(
        arbiter.clone(),
        config,
        vec![Box::new(arbor_evolve::Placebos::new())],
    )
    .unwrap();
    let load = Load::start::<_, KvReply>(&system, "kv", 0, kv_traffic);
    let report = evolution.cycle().await.unwrap();
    load.stop().await;
    assert_eq!(report.tried.len(), PLACEBOS, "{report:#?}");
    let rejected: Vec<_> = report
        .tried
        .iter()
        .filter(|t| t.outcome != "promoted")
        .collect();
    assert!(rejected.is_empty(), "false rejections: {rejected:#?}");
    assert_ne!(report.production_after, report.production_before);
    system.shutdown().await.unwrap();
}
