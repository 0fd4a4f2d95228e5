//! Whole host, kill -9: a child process runs a `Runtime` (group commit, checkpoints during the
//! run, agents at the root and under a declared supervisor, one agent trapping now and then so
//! restarts happen under load too) with three tasks calling counters and printing every
//! acknowledged count. The parent SIGKILLs it at a random point and starts a new child on the
//! same data directory, which recovers every agent in `Runtime::build` and prints what it has:
//! each agent must hold exactly its last acknowledged count, or that plus the one input in
//! flight. Six children, five kills.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use arbor::agent::{AgentError, CheckpointPolicy};
use arbor::supervisor::Intensity;
use arbor::{Error, Runtime, Spawn, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};
use arbor_testkit::{ChildProcess, KillTest, Side, last_reports};

const TEST: &str = "kill_9_of_the_host_keeps_every_agents_acknowledged_state";
const AGENTS: [(&str, &str); 3] = [("top", ""), ("pooled", "pool"), ("crashy", "pool")];

async fn runtime(dir: &Path) -> Runtime {
    let lenient = SupervisorOptions {
        intensity: Intensity {
            max_restarts: 1_000,
            period: Duration::from_secs(10),
        },
        ..SupervisorOptions::default()
    };
    Runtime::builder()
        .data_dir(dir)
        .durability(arbor::wal::Durability::GroupCommit {
            max_delay: Duration::from_micros(200),
        })
        .checkpoints(CheckpointPolicy {
            every_records: 41,
            every: Duration::from_secs(3600),
            keep: 2,
            ..CheckpointPolicy::default()
        })
        .root(lenient.clone())
        .supervisor("pool", lenient)
        .build()
        .await
        .unwrap()
}

async fn get(runtime: &Runtime, agent: &str) -> i64 {
    loop {
        match runtime
            .call::<_, CounterReply>(agent, &CounterMsg::Get)
            .await
        {
            Ok(reply) => return reply.count,
            Err(Error::Restarting(_)) | Err(Error::Agent(AgentError::Stopped(_))) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => panic!("{agent}: {error}"),
        }
    }
}

async fn child(dir: &Path) {
    let runtime = runtime(dir).await;
    if runtime.agents().is_empty() {
        let counter = runtime
            .add_module("counter", arbor_modules::COUNTER)
            .unwrap();
        for (name, under) in AGENTS {
            runtime
                .spawn(Spawn::module(name, counter).under(under))
                .await
                .unwrap();
        }
    }
    for (name, _) in AGENTS {
        println!("STATE {name} {}", get(&runtime, name).await);
    }
    println!("READY");
    let mut tasks = Vec::new();
    for (name, _) in AGENTS {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            for n in 1u64.. {
                if name == "crashy" && n % 150 == 0 {
                    let _ = runtime
                        .call::<_, CounterReply>(name, &CounterMsg::Fail)
                        .await;
                    get(&runtime, name).await;
                }
                match runtime
                    .call::<_, CounterReply>(name, &CounterMsg::Inc { by: 1 })
                    .await
                {
                    Ok(reply) => println!("ACK {name} {}", reply.count),
                    Err(Error::Restarting(_)) | Err(Error::Agent(AgentError::Stopped(_))) => {}
                    Err(error) => panic!("{name}: {error}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// The `STATE` lines the child prints before `READY`.
fn recovered_states(child: &mut ChildProcess, round: usize) -> BTreeMap<String, i64> {
    let lines = child
        .lines_until("READY", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("round {round}: the child did not start"));
    last_reports(&lines, "STATE")
}

#[test]
fn kill_9_of_the_host_keeps_every_agents_acknowledged_state() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut test = match KillTest::start(TEST, Duration::from_secs(300)) {
        Side::Parent(test) => test,
        Side::Child(side) => return tokio.block_on(child(side.dir())),
    };
    // What each agent must hold: its last acknowledged count, and whether one more input may
    // have been in flight.
    let mut expected: HashMap<String, i64> = HashMap::new();
    let (mut exact, mut in_flight) = (0, 0);
    for round in 0..6 {
        let mut child = test.spawn("child", &[]);
        let states = recovered_states(&mut child, round);
        for (name, _) in AGENTS {
            let recovered = states[name];
            let acked = expected.get(name).copied().unwrap_or(0);
            assert!(
                recovered == acked || recovered == acked + 1,
                "round {round}: {name} acknowledged count {acked}, recovered {recovered}"
            );
            if recovered == acked {
                exact += 1;
            } else {
                in_flight += 1;
            }
            expected.insert(name.to_string(), recovered);
        }
        if round == 5 {
            child.kill();
            break;
        }
        let lines = test.kill_at_random(child, 20, 400, "acknowledging");
        expected.extend(last_reports::<i64>(&lines, "ACK"));
    }
    println!(
        "recovered exactly at the last acknowledged input {exact}, one in flight kept {in_flight}"
    );
    assert!(expected.values().all(|count| *count > 0));
}
