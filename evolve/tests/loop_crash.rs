//! kill -9 in the middle of the evolution loop: a child process runs the loop on the cache
//! agent (a genetic search over its parameters, approval auto) under traffic, and is SIGKILLed
//! at a random point, over several rounds on one directory. After each kill a verifier reopens
//! the directory and checks that the agent runs exactly one module, that it is production's
//! root or a candidate the arbiter approved, that every promotion the loop reported in the round
//! is in the archive as promoted, and that nothing leaves the archive (each entry intact).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use arbor_agent::{AgentRef, AgentSpec, AgentSystem, BehaviourId};
use arbor_evolve::{
    Direction, EvolutionLoop, Genetic, GeneticConfig, LoopConfig, ParameterSearch, space_of,
    with_params,
};
use arbor_modules::CACHE;
use arbor_modules::cache::{CacheMsg, CacheReply};
use arbor_shadow::{Approval, Arbiter, EvaluationOptions};
use arbor_testkit::{KillTest, Side};
use arbor_vault::{AgentId, Reached};
use support::{arbiter_config, cache_params};

const TEST: &str = "kill_9_mid_cycle_keeps_the_archive_and_one_module";

fn poor() -> Vec<u8> {
    with_params(CACHE, &cache_params(200, "lru", 1)).unwrap()
}

fn arbiter(system: &AgentSystem) -> Arbiter {
    Arbiter::new(system.clone(), arbiter_config(Approval::Auto)).unwrap()
}

async fn cache_agent(system: &AgentSystem) -> AgentRef {
    let hash = system.add_module("cache-poor", &poor()).unwrap();
    if system.is_registered("cache").unwrap() {
        system.recover("cache").await.unwrap().0
    } else {
        let agent = system.spawn(AgentSpec::wasm("cache", hash)).await.unwrap();
        for key in 0..50 {
            let put = CacheMsg::Put {
                key,
                value: format!("record {key}"),
            };
            let _: CacheReply = agent.call_msg(&put).await.unwrap();
        }
        agent
    }
}

async fn child(dir: &Path, round: u64) {
    let system = AgentSystem::builder().journal(dir).build().unwrap();
    cache_agent(&system).await;
    let arbiter = arbiter(&system);
    let genetic = Genetic::new(
        space_of(CACHE).unwrap(),
        GeneticConfig {
            population: 4,
            elitism: 1,
            seed: round,
            ..GeneticConfig::default()
        },
    )
    .unwrap();
    let config = LoopConfig {
        options: EvaluationOptions {
            objectives: vec!["fuel:better:0.02".parse().unwrap()],
            ..EvaluationOptions::default()
        },
        candidates_per_cycle: 2,
        evaluation_deadline: Duration::from_secs(120),
        fitness: ("fuel".into(), Direction::Lower),
        seed: round,
        ..LoopConfig::new("cache")
    };
    let base = poor();
    let search = ParameterSearch::new(&base, genetic).unwrap();
    let mut evolution = EvolutionLoop::new(arbiter, config, vec![Box::new(search)]).unwrap();
    let traffic = {
        let system = system.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                let key = if n.is_multiple_of(4) {
                    10 + (n % 40)
                } else {
                    n % 5
                } as u32;
                let msg = CacheMsg::Get { key };
                if let Some(agent) = system.lookup("cache")
                    && agent.call_msg::<_, CacheReply>(&msg).await.is_ok()
                {
                    println!("ACK cache {}", n + 1);
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    loop {
        let report = evolution.cycle().await.unwrap();
        for tried in &report.tried {
            if tried.outcome == "promoted" {
                println!("PROMOTED {}", tried.module);
            }
        }
        if traffic.is_finished() {
            break;
        }
    }
}

/// Reopens the directory: `module <hash> <registered hash>`, `entry <hash> <reached>` per
/// archive entry, then `done`.
async fn verify(dir: &Path) {
    let system = AgentSystem::builder().journal(dir).build().unwrap();
    let (_, report) = system.recover("cache").await.unwrap();
    // An arbiter over the reopened system reconciles what a kill interrupted.
    let arbiter = arbiter(&system);
    let record = system
        .vault()
        .unwrap()
        .agent(&AgentId::new("cache").unwrap())
        .unwrap()
        .unwrap();
    let (BehaviourId::Wasm(recovered), arbor_vault::Behaviour::Wasm(registered)) =
        (&report.behaviour, &record.behaviour)
    else {
        panic!("not a module");
    };
    println!("module {recovered} {registered}");
    for entry in arbiter.archive("cache").unwrap() {
        println!("entry {} {}", entry.module, entry.reached.name());
    }
    println!("done");
    std::future::pending::<()>().await;
}

#[test]
fn kill_9_mid_cycle_keeps_the_archive_and_one_module() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut test = match KillTest::start(TEST, Duration::from_secs(400)) {
        Side::Parent(test) => test,
        Side::Child(side) => {
            let round = side.var("ARBOR_TEST_ROUND");
            match side.role() {
                "verify" => tokio.block_on(verify(side.dir())),
                _ => tokio.block_on(child(side.dir(), round)),
            }
            return;
        }
    };
    let mut archived: BTreeMap<String, String> = BTreeMap::new();
    let mut promoted_total = 0;
    for round in 0..4u64 {
        let round_str = round.to_string();
        let child = test.spawn("child", &[("ARBOR_TEST_ROUND", round_str.as_str())]);
        let lines = test.kill_at_random(child, 2_000, 20_000, "evolving");
        let promoted: BTreeSet<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("PROMOTED ").map(str::to_string))
            .collect();
        promoted_total += promoted.len();
        let mut verifier = test.spawn("verify", &[("ARBOR_TEST_ROUND", round_str.as_str())]);
        let report = verifier
            .lines_until("done", Duration::from_secs(60))
            .expect("the verifier reports");
        verifier.kill();
        let mut module = None;
        let mut entries: BTreeMap<String, String> = BTreeMap::new();
        for line in &report {
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["module", recovered, registered] => {
                    assert_eq!(recovered, registered, "exactly one module");
                    module = Some(recovered.to_string());
                }
                ["entry", hash, reached] => {
                    entries.insert(hash.to_string(), reached.to_string());
                }
                _ => {}
            }
        }
        let module = module.expect("the verifier names the module");
        // Production is the root or a candidate the arbiter approved (a kill between the
        // swap and the archive's write leaves it approved, not yet promoted).
        if !entries.is_empty() {
            let reached = entries.get(&module).unwrap_or_else(|| {
                panic!("round {round}: production {module} is not in the archive: {entries:?}")
            });
            assert!(
                reached == Reached::Promoted.name() || reached == Reached::Approved.name(),
                "round {round}: production {module} only reached {reached}"
            );
        }
        for hash in &promoted {
            assert_eq!(
                entries.get(hash).map(String::as_str),
                Some("promoted"),
                "round {round}: a reported promotion of {hash}"
            );
        }
        // Nothing leaves the archive (a candidate proposed again is evaluated again, so how
        // far it got may change).
        for hash in archived.keys() {
            assert!(
                entries.contains_key(hash),
                "round {round}: {hash} left the archive"
            );
        }
        println!(
            "round {round}: killed after {} lines, {} promotions reported, {} archived",
            lines.len(),
            promoted.len(),
            entries.len()
        );
        archived = entries;
    }
    println!("{promoted_total} promotions reported over 4 rounds");
    assert!(!archived.is_empty(), "the loop archived nothing");
}
