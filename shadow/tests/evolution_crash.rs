//! kill -9 in the middle of promotions and rollbacks: a child process writes to a `kv` agent
//! while it promotes it to kv-v2 (hot swap, promotion checkpoint, new state layout) and rolls it
//! back (promotion checkpoint restored into kv, the journal since replayed), over and over. It
//! is SIGKILLed at a random point; the parent reopens the directory and checks that the agent
//! runs exactly one module — kv or kv-v2, the registry agreeing with what recovery rebuilt — and
//! holds every acknowledged write (at most one more, in flight).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arbor_agent::{AgentRef, AgentSpec, AgentSystem, BehaviourId, CheckpointPolicy};
use arbor_modules::kv::{KvMsg, KvReply};
use arbor_testkit::{KillTest, Side, SplitMix64, last_reports};
use arbor_vault::{AgentId, LineageEvent, ModuleHash};

const TEST: &str = "kill_9_during_promotions_and_rollbacks_keeps_one_module_and_every_write";

/// Checkpoints come only from promotions and rollbacks (the agent's own periodic ones would
/// prune a promotion checkpoint once the process that held it is gone; that case is the
/// "rollback refused" branch of the child).
fn open(dir: &Path) -> AgentSystem {
    AgentSystem::builder()
        .journal(dir)
        .wal(
            arbor_wal::Config::default().durability(arbor_wal::Durability::GroupCommit {
                max_delay: Duration::from_micros(200),
            }),
        )
        .checkpoints(CheckpointPolicy {
            every_records: 1_000_000,
            every: Duration::from_secs(3600),
            keep: 2,
            ..CheckpointPolicy::default()
        })
        .build()
        .unwrap()
}

fn modules(system: &AgentSystem) -> (ModuleHash, ModuleHash) {
    let kv = system.add_module("kv", arbor_modules::KV).unwrap();
    let v2 = system.add_module("kv-v2", arbor_modules::KV_V2).unwrap();
    (kv, v2)
}

async fn kv_agent(system: &AgentSystem) -> AgentRef {
    let (kv, _) = modules(system);
    if system.is_registered("kv").unwrap() {
        system.recover("kv").await.unwrap().0
    } else {
        system.spawn(AgentSpec::wasm("kv", kv)).await.unwrap()
    }
}

/// The last promotion's checkpoint, from the lineage the child writes.
fn last_promotion(system: &AgentSystem) -> Option<u64> {
    let id = AgentId::new("kv").unwrap();
    let lineage = system.vault().unwrap().lineage_for(&id).unwrap();
    lineage.iter().rev().find_map(|r| match r.event {
        LineageEvent::Promoted { checkpoint_lsn, .. } => Some(checkpoint_lsn),
        _ => None,
    })
}

async fn child(dir: &Path, round: u64) {
    let system = open(dir);
    let (kv, v2) = modules(&system);
    let agent = kv_agent(&system).await;
    let writer = {
        let agent = agent.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let put = KvMsg::Put {
                    key: format!("r{round}-{i:06}"),
                    value: format!("v{i}"),
                };
                let _: KvReply = agent.call_msg(&put).await.unwrap();
                println!("ACK kv {}", i + 1);
            }
        })
    };
    let mut rng = SplitMix64::new(round);
    let id = AgentId::new("kv").unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
        let running = system
            .vault()
            .unwrap()
            .agent(&id)
            .unwrap()
            .unwrap()
            .behaviour;
        if running == arbor_vault::Behaviour::Wasm(kv) {
            let report = system
                .promote_module(&agent, BehaviourId::Wasm(v2))
                .await
                .unwrap();
            let lsn = report.checkpoint_lsn.unwrap();
            system
                .vault()
                .unwrap()
                .append_lineage(LineageEvent::Promoted {
                    agent: id.clone(),
                    from: kv,
                    to: v2,
                    checkpoint_lsn: lsn,
                })
                .unwrap();
            println!("promoted at {lsn}");
        } else {
            let lsn = last_promotion(&system).unwrap();
            match system
                .rollback_module(&agent, BehaviourId::Wasm(kv), lsn)
                .await
            {
                Ok(report) => {
                    system.release_hold("kv");
                    println!("rolled back, {} replayed", report.replayed);
                }
                Err(error) => {
                    // Holds do not outlive the process: after a restart the promotion
                    // checkpoint may have been pruned. The rollback is refused and the agent
                    // goes on as it was.
                    println!("rollback refused: {error}");
                    writer.await.unwrap();
                    return;
                }
            }
        }
        if writer.is_finished() {
            break;
        }
    }
}

/// Recovers the agent and prints what it holds: `module <recovered> <registered>`, then
/// `round <r> <writes>` per round, each write checked for its value, then `done`.
async fn verify(dir: &Path) {
    let system = open(dir);
    let (kv, v2) = modules(&system);
    let name = |id: &BehaviourId| {
        if *id == BehaviourId::Wasm(kv) {
            "kv".to_string()
        } else if *id == BehaviourId::Wasm(v2) {
            "kv-v2".to_string()
        } else {
            format!("{id}")
        }
    };
    let (agent, report) = system.recover("kv").await.unwrap();
    let id = AgentId::new("kv").unwrap();
    let record = system.vault().unwrap().agent(&id).unwrap().unwrap();
    let registered = match record.behaviour {
        arbor_vault::Behaviour::Wasm(hash) => BehaviourId::Wasm(hash),
        arbor_vault::Behaviour::Native(native) => BehaviourId::Native(native),
    };
    println!("module {} {}", name(&report.behaviour), name(&registered));
    let scan = KvMsg::Scan {
        prefix: String::new(),
        limit: u32::MAX,
    };
    let KvReply::Entries { entries } = agent.call_msg(&scan).await.unwrap() else {
        panic!("not entries");
    };
    let mut found: BTreeMap<u64, u64> = BTreeMap::new();
    for entry in &entries {
        let (r, i) = entry.key[1..].split_once('-').unwrap();
        let i: u64 = i.parse().unwrap();
        assert_eq!(entry.value, format!("v{i}"), "{entry:?}");
        *found.entry(r.parse().unwrap()).or_default() += 1;
    }
    for (round, writes) in found {
        println!("round {round} {writes}");
    }
    println!("done");
    std::future::pending::<()>().await;
}

#[test]
fn kill_9_during_promotions_and_rollbacks_keeps_one_module_and_every_write() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut test = match KillTest::start(TEST, Duration::from_secs(300)) {
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
    // Per round: the writes acknowledged (and so required) and those recovered.
    let mut required: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut promotions, mut rollbacks, mut on_v2) = (0, 0, 0);
    for round in 0..5u64 {
        let round_str = round.to_string();
        let child = test.spawn("child", &[("ARBOR_TEST_ROUND", round_str.as_str())]);
        let lines = test.kill_at_random(child, 40, 300, "writing");
        let acked = last_reports::<u64>(&lines, "ACK")
            .get("kv")
            .copied()
            .unwrap_or(0);
        promotions += lines.iter().filter(|l| l.starts_with("promoted")).count();
        rollbacks += lines.iter().filter(|l| l.starts_with("rolled")).count();
        for refused in lines.iter().filter(|l| l.starts_with("rollback refused")) {
            println!("round {round}: {refused}");
        }

        // Recovery runs in a child too, killed once it has reported, so that it takes no
        // final checkpoint: the next round starts from exactly what the kill left.
        let mut verifier = test.spawn("verify", &[("ARBOR_TEST_ROUND", round_str.as_str())]);
        let report = verifier
            .lines_until("done", Duration::from_secs(60))
            .expect("the verifier reports");
        verifier.kill();
        let mut found: BTreeMap<u64, u64> = BTreeMap::new();
        for line in &report {
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["module", recovered, registered] => {
                    assert!(["kv", "kv-v2"].contains(recovered), "{line}");
                    assert_eq!(recovered, registered, "exactly one module");
                    if *recovered == "kv-v2" {
                        on_v2 += 1;
                    }
                }
                ["round", r, n] => {
                    found.insert(r.parse().unwrap(), n.parse().unwrap());
                }
                _ => {}
            }
        }
        let got = found.get(&round).copied().unwrap_or(0);
        assert!(
            got == acked || got == acked + 1,
            "round {round}: {acked} writes acknowledged, {got} recovered"
        );
        required.insert(round, got);
        for (r, n) in &required {
            assert_eq!(found.get(r).copied().unwrap_or(0), *n, "round {r}");
        }
    }
    println!(
        "{promotions} promotions and {rollbacks} rollbacks acknowledged; {on_v2} of 5 kills \
         left the agent on kv-v2"
    );
    assert!(promotions > 0 && rollbacks > 0);
}
