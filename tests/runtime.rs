//! The embeddable `Runtime`: placement in the tree, clear errors (unknown agent, full mailbox,
//! timeout, restarting), restarts that recover agents under load, escalation through a declared
//! supervisor, and the root's intensity stopping the runtime.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arbor::agent::{AgentError, Behaviour, BehaviourError, CheckpointPolicy, Host};
use arbor::supervisor::{ChildKind, ChildState, Intensity, Strategy};
use arbor::{Error, Runtime, Spawn, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};
use arbor_testkit::{SplitMix64, watchdog};

fn lenient(max_restarts: u32) -> SupervisorOptions {
    SupervisorOptions {
        intensity: Intensity {
            max_restarts,
            period: Duration::from_secs(60),
        },
        ..SupervisorOptions::default()
    }
}

/// Waits (up to 10 s) until `agent` answers again after a crash; returns its count.
async fn count_when_back(runtime: &Runtime, agent: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match runtime
            .call::<_, CounterReply>(agent, &CounterMsg::Get)
            .await
        {
            Ok(reply) => return reply.count,
            Err(Error::Restarting(_)) | Err(Error::Agent(AgentError::Stopped(_))) => {
                assert!(Instant::now() < deadline, "{agent} did not come back");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => panic!("{agent}: {error}"),
        }
    }
}

/// Spawns a Wasm counter per name under `under` (`""`: the root), each incremented by its
/// amount (if not zero).
async fn spawn_counters(runtime: &Runtime, under: &str, counters: &[(&str, i64)]) {
    for &(name, by) in counters {
        runtime
            .spawn(Spawn::wasm_bytes(name, arbor_modules::COUNTER).under(under))
            .await
            .unwrap();
        if by != 0 {
            runtime
                .call::<_, CounterReply>(name, &CounterMsg::Inc { by })
                .await
                .unwrap();
        }
    }
}

/// A native behaviour that takes `millis` (from its input) to handle each input.
struct Sleepy;

impl Behaviour for Sleepy {
    fn handle(&mut self, input: &[u8], _host: &mut Host) -> Result<Vec<u8>, BehaviourError> {
        let millis: u64 = rmp_serde::from_slice(input).unwrap_or(0);
        std::thread::sleep(Duration::from_millis(millis));
        Ok(input.to_vec())
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
        Ok(rmp_serde::to_vec(&()).unwrap())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<(), BehaviourError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "sleepy".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_by_name_in_their_place_in_the_tree_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .mailbox(4)
        .supervisor("pool", lenient(5))
        .supervisor("pool/inner", lenient(5))
        .native("sleepy", || Box::new(Sleepy))
        .build()
        .await
        .unwrap();
    let counter = runtime
        .add_module("counter", arbor_modules::COUNTER)
        .unwrap();
    runtime.spawn(Spawn::module("top", counter)).await.unwrap();
    runtime
        .spawn(Spawn::wasm_bytes("pooled", arbor_modules::COUNTER).under("pool/inner"))
        .await
        .unwrap();
    runtime
        .spawn(Spawn::native("sleepy", "sleepy").under("pool"))
        .await
        .unwrap();
    let placed: Vec<(String, String)> = runtime
        .tree()
        .walk()
        .into_iter()
        .map(|(path, child)| (path.join("/"), child.id.clone()))
        .collect();
    assert_eq!(
        placed,
        [
            ("root", "pool"),
            ("root/pool", "inner"),
            ("root/pool/inner", "pooled"),
            ("root/pool", "sleepy"),
            ("root", "top"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(runtime.agents(), ["pooled", "sleepy", "top"]);
    let reply: CounterReply = runtime
        .call("pooled", &CounterMsg::Inc { by: 7 })
        .await
        .unwrap();
    assert_eq!(reply.count, 7);

    // Unknown agents, names in use, unknown supervisors.
    assert!(matches!(
        runtime.call::<_, CounterReply>("nobody", &CounterMsg::Get).await,
        Err(Error::Agent(AgentError::UnknownAgent(name))) if name == "nobody"
    ));
    assert!(matches!(
        runtime.spawn(Spawn::module("top", counter)).await,
        Err(Error::Agent(AgentError::AlreadyExists(_)))
    ));
    assert!(matches!(
        runtime.spawn(Spawn::module("x", counter).under("nowhere")).await,
        Err(Error::UnknownSupervisor(path)) if path == "nowhere"
    ));
    // Not a Wasm module: refused with the reason, nothing started.
    let error = runtime
        .spawn(Spawn::wasm_bytes("junk", b"not wasm".to_vec()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("junk"), "{error}");
    assert!(runtime.lookup("junk").is_none());

    // A timeout, then a full mailbox (capacity 4) while the agent is busy.
    assert!(matches!(
        runtime
            .call_timeout::<_, u64>("sleepy", &300u64, Duration::from_millis(20))
            .await,
        Err(Error::Agent(AgentError::Timeout { .. }))
    ));
    let mut full = 0;
    for _ in 0..10 {
        match runtime.cast("sleepy", &1u64) {
            Ok(()) => {}
            Err(Error::Agent(AgentError::MailboxFull { capacity: 4, .. })) => full += 1,
            Err(error) => panic!("{error}"),
        }
    }
    assert!(full >= 5, "only {full} casts refused");

    // Stopping an agent for good: gone from the tree, not restarted, not recovered.
    runtime.stop_agent("top").await.unwrap();
    assert!(runtime.tree().children.iter().all(|c| c.id != "top"));
    runtime.shutdown().await.unwrap();
    assert!(matches!(
        runtime
            .call::<_, CounterReply>("pooled", &CounterMsg::Get)
            .await,
        Err(Error::Stopped { .. })
    ));

    // Dropping the runtime releases the data directory.
    drop(runtime);
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .supervisor("pool", lenient(5))
        .supervisor("pool/inner", lenient(5))
        .native("sleepy", || Box::new(Sleepy))
        .build()
        .await
        .unwrap();
    assert_eq!(runtime.agents(), ["pooled", "sleepy"]);
    let reply: CounterReply = runtime.call("pooled", &CounterMsg::Get).await.unwrap();
    assert_eq!(reply.count, 7);
    runtime.shutdown().await.unwrap();
}

/// A Wasm agent that traps every few hundred messages keeps serving; its state always equals
/// the sum of the increments that were acknowledged (a crashed input is never applied, an input
/// lost in the crashed agent's mailbox was never acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_agent_that_keeps_trapping_keeps_serving_with_exactly_its_acknowledged_state() {
    let _watchdog = watchdog("restart_under_load", Duration::from_secs(120));
    let seed = SplitMix64::seed_from_env();
    println!("seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .durability(arbor::wal::Durability::GroupCommit {
            max_delay: Duration::ZERO,
        })
        .checkpoints(CheckpointPolicy {
            every_records: 97,
            every: Duration::from_secs(3600),
            keep: 2,
            ..CheckpointPolicy::default()
        })
        .root(lenient(10_000))
        .build()
        .await
        .unwrap();
    runtime
        .spawn(Spawn::wasm_bytes("flaky", arbor_modules::COUNTER))
        .await
        .unwrap();
    runtime
        .spawn(Spawn::wasm_bytes("bystander", arbor_modules::COUNTER))
        .await
        .unwrap();
    let acked = Arc::new(AtomicI64::new(0));
    let acked_inputs = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let (runtime, acked, acked_inputs, refused) = (
            runtime.clone(),
            Arc::clone(&acked),
            Arc::clone(&acked_inputs),
            Arc::clone(&refused),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(seed ^ task);
            for _ in 0..1_500 {
                let by = 1 + rng.below(9) as i64;
                match runtime
                    .call::<_, CounterReply>("flaky", &CounterMsg::Inc { by })
                    .await
                {
                    Ok(_) => {
                        acked.fetch_add(by, Ordering::AcqRel);
                        acked_inputs.fetch_add(1, Ordering::AcqRel);
                    }
                    // Queued behind a trap (dropped with the crashed actor) or sent while it
                    // restarts: not applied, not acknowledged.
                    Err(Error::Agent(AgentError::Stopped(_))) | Err(Error::Restarting(_)) => {
                        refused.fetch_add(1, Ordering::AcqRel);
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    Err(error) => panic!("unexpected: {error:?}"),
                }
                runtime
                    .call::<_, CounterReply>("bystander", &CounterMsg::Inc { by: 1 })
                    .await
                    .unwrap();
            }
        }));
    }
    // The saboteur: a trapping input every ~300 acknowledged ones.
    let mut traps = 0;
    let mut next = 300;
    while !tasks.iter().all(|t| t.is_finished()) {
        if acked_inputs.load(Ordering::Acquire) >= next {
            match runtime
                .call::<_, CounterReply>("flaky", &CounterMsg::Fail)
                .await
            {
                Err(Error::Agent(AgentError::Crashed { reason, .. })) => {
                    // The guest panics (panic = abort): an `unreachable` trap.
                    assert!(reason.to_string().contains("unreachable"), "{reason}");
                    traps += 1;
                    next += 300;
                }
                Err(Error::Restarting(_)) | Err(Error::Agent(AgentError::Stopped(_))) => {}
                other => panic!("a trapping input answered {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let count = count_when_back(&runtime, "flaky").await;
    println!(
        "{traps} traps, {} acknowledged inputs, {} refused while restarting",
        acked_inputs.load(Ordering::Acquire),
        refused.load(Ordering::Acquire)
    );
    assert!(traps >= 10, "only {traps} traps");
    assert_eq!(count, acked.load(Ordering::Acquire));
    let flaky = runtime
        .tree()
        .children
        .into_iter()
        .find(|c| c.id == "flaky")
        .unwrap();
    assert_eq!(flaky.restarts, traps);
    assert_eq!(count_when_back(&runtime, "bystander").await, 6_000);
    // And after a clean restart of the whole runtime.
    runtime.shutdown().await.unwrap();
    drop(runtime);
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .build()
        .await
        .unwrap();
    assert_eq!(
        count_when_back(&runtime, "flaky").await,
        acked.load(Ordering::Acquire)
    );
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_that_gives_up_is_restarted_by_the_root_with_its_agents_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .root(lenient(5))
        .supervisor(
            "pool",
            SupervisorOptions {
                strategy: Strategy::OneForAll,
                ..lenient(0)
            },
        )
        .build()
        .await
        .unwrap();
    spawn_counters(&runtime, "pool", &[("a", 5), ("b", 5)]).await;
    // pool tolerates no restart: a's trap makes it stop b and exit; the root restarts it, and
    // it recovers both agents from the journal.
    let error = runtime
        .call::<_, CounterReply>("a", &CounterMsg::Fail)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Agent(AgentError::Crashed { .. })),
        "{error}"
    );
    assert_eq!(count_when_back(&runtime, "a").await, 5);
    assert_eq!(count_when_back(&runtime, "b").await, 5);
    let tree = runtime.tree();
    let pool = tree.children.iter().find(|c| c.id == "pool").unwrap();
    assert_eq!((pool.kind, pool.restarts), (ChildKind::Supervisor, 1));
    assert!(
        pool.supervisor
            .as_ref()
            .unwrap()
            .children
            .iter()
            .all(|c| c.state == ChildState::Running)
    );
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_reaching_its_intensity_stops_the_runtime_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .root(lenient(1))
        .build()
        .await
        .unwrap();
    spawn_counters(&runtime, "", &[("fragile", 3)]).await;
    let _ = runtime
        .call::<_, CounterReply>("fragile", &CounterMsg::Fail)
        .await;
    assert_eq!(count_when_back(&runtime, "fragile").await, 3);
    let _ = runtime
        .call::<_, CounterReply>("fragile", &CounterMsg::Fail)
        .await;
    let reason = tokio::time::timeout(Duration::from_secs(10), runtime.wait())
        .await
        .unwrap();
    assert!(
        reason.contains("max restart intensity (1 in 60s)") && reason.contains("fragile"),
        "{reason}"
    );
    let error = runtime
        .call::<_, CounterReply>("fragile", &CounterMsg::Get)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Stopped { reason } if reason.contains("root supervisor")),
        "{error}"
    );
    // Nothing acknowledged is lost: a new runtime on the directory recovers the agent.
    drop(runtime);
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .build()
        .await
        .unwrap();
    assert_eq!(count_when_back(&runtime, "fragile").await, 3);
    runtime.shutdown().await.unwrap();
}

/// Children killed by their supervisor (brutal kill: no final checkpoint, no clean-up) come back
/// recovered; the dead actors do not block their names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brutally_killed_agents_are_recovered_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .root(lenient(5))
        .supervisor(
            "pool",
            SupervisorOptions {
                strategy: Strategy::OneForAll,
                agent_shutdown: arbor::supervisor::Shutdown::BrutalKill,
                ..lenient(5)
            },
        )
        .build()
        .await
        .unwrap();
    spawn_counters(&runtime, "pool", &[("a", 1), ("b", 2), ("c", 3)]).await;
    for round in 1..=3 {
        // a traps; b and c are killed by the one_for_all restart; all three recover.
        let _ = runtime
            .call::<_, CounterReply>("a", &CounterMsg::Fail)
            .await;
        for (name, by) in [("a", 1), ("b", 2), ("c", 3)] {
            assert_eq!(count_when_back(&runtime, name).await, by, "round {round}");
        }
    }
    // Killed during shutdown too: the next runtime recovers them from the journal.
    runtime.shutdown().await.unwrap();
    drop(runtime);
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .supervisor("pool", lenient(5))
        .build()
        .await
        .unwrap();
    for (name, by) in [("a", 1), ("b", 2), ("c", 3)] {
        assert_eq!(count_when_back(&runtime, name).await, by);
    }
    runtime.shutdown().await.unwrap();
}

/// An agent stopped on purpose stays stopped, whichever way it was stopped and whatever its
/// restart type, through restarts of its supervisor and of the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_stopped_on_purpose_stay_stopped() {
    let dir = tempfile::tempdir().unwrap();
    // A permanent child's normal exit is restarted, and counts against the intensity (OTP): the
    // two stops below are two restarts (both declined), and kept's trap is the third, one too
    // many.
    let permanent = SupervisorOptions {
        agent_restart: arbor::supervisor::Restart::Permanent,
        ..lenient(2)
    };
    let build = || {
        Runtime::builder()
            .data_dir(dir.path())
            .root(lenient(5))
            .supervisor("pool", permanent.clone())
            .build()
    };
    let runtime = build().await.unwrap();
    let names = ["kept", "stopped-by-ref", "stopped-by-runtime"];
    spawn_counters(&runtime, "pool", &names.map(|name| (name, 0))).await;
    // Stopped through its AgentRef: a permanent child exits normally, is restarted, and its
    // start declines because the registry says stopped.
    runtime
        .lookup("stopped-by-ref")
        .unwrap()
        .stop()
        .await
        .unwrap();
    runtime.stop_agent("stopped-by-runtime").await.unwrap();
    runtime
        .call::<_, CounterReply>("kept", &CounterMsg::Inc { by: 4 })
        .await
        .unwrap();
    // The pool gives up at kept's trap; the root restarts it.
    let _ = runtime
        .call::<_, CounterReply>("kept", &CounterMsg::Fail)
        .await;
    assert_eq!(count_when_back(&runtime, "kept").await, 4);
    assert_eq!(runtime.agents(), ["kept"]);
    for name in ["stopped-by-ref", "stopped-by-runtime"] {
        assert!(
            matches!(
                runtime
                    .call::<_, CounterReply>(name, &CounterMsg::Get)
                    .await,
                Err(Error::Agent(AgentError::UnknownAgent(_)))
            ),
            "{name}"
        );
    }
    assert!(runtime.stopped().is_none());
    // Their names stay taken.
    assert!(matches!(
        runtime
            .spawn(Spawn::wasm_bytes("stopped-by-ref", arbor_modules::COUNTER))
            .await,
        Err(Error::Agent(AgentError::AlreadyExists(_)))
    ));
    runtime.shutdown().await.unwrap();
    drop(runtime);
    let runtime = build().await.unwrap();
    assert_eq!(runtime.agents(), ["kept"]);
    runtime.shutdown().await.unwrap();
}

/// Without a data directory a restarted supervisor starts its agents again (from their init
/// config: there is no journal), except those stopped on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_runtime_restarts_a_supervisors_agents_fresh() {
    let runtime = Runtime::builder()
        .root(lenient(5))
        .supervisor("pool", lenient(0))
        .build()
        .await
        .unwrap();
    spawn_counters(&runtime, "pool", &[("x", 9), ("y", 9), ("gone", 9)]).await;
    runtime.stop_agent("gone").await.unwrap();
    let _ = runtime
        .call::<_, CounterReply>("x", &CounterMsg::Fail)
        .await;
    assert_eq!(count_when_back(&runtime, "x").await, 0);
    assert_eq!(count_when_back(&runtime, "y").await, 0);
    assert_eq!(runtime.agents(), ["x", "y"]);
    runtime.shutdown().await.unwrap();
}
