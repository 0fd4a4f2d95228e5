//! Temporary agents (OTP's `temporary` restart type) are never restarted, whoever restarts:
//! a crashed one is gone — callers get "no such agent", not "restarting" forever — and it does
//! not come back when its supervisor is restarted by its parent. Each test body runs ephemeral
//! and journaled.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use arbor::agent::AgentError;
use arbor::supervisor::{Intensity, Restart, Strategy};
use arbor::vault::AgentState;
use arbor::{Error, Runtime, Spawn, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};

fn options(max_restarts: u32, agent_restart: Restart) -> SupervisorOptions {
    SupervisorOptions {
        intensity: Intensity {
            max_restarts,
            period: Duration::from_secs(60),
        },
        agent_restart,
        ..SupervisorOptions::default()
    }
}

async fn start(dir: Option<&Path>, build: arbor::RuntimeBuilder) -> Runtime {
    match dir {
        Some(dir) => build.data_dir(dir),
        None => build,
    }
    .build()
    .await
    .unwrap()
}

async fn spawn_counter(runtime: &Runtime, name: &str, under: &str, by: i64) {
    runtime
        .spawn(Spawn::wasm_bytes(name, arbor_modules::COUNTER).under(under))
        .await
        .unwrap();
    runtime
        .call::<_, CounterReply>(name, &CounterMsg::Inc { by })
        .await
        .unwrap();
}

async fn call(runtime: &Runtime, name: &str) -> Result<CounterReply, Error> {
    runtime.call(name, &CounterMsg::Get).await
}

/// Waits (up to 10 s) until `name` is unknown; a moment of `Restarting` between the crash
/// and its supervisor handling the exit is fine, forever is the defect.
async fn gone(runtime: &Runtime, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call(runtime, name).await {
            Err(Error::Agent(AgentError::UnknownAgent(_))) => return,
            Err(Error::Restarting(_)) | Err(Error::Agent(AgentError::Stopped(_))) => {
                assert!(
                    Instant::now() < deadline,
                    "`{name}` still reported restarting 10 s after it exited"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("`{name}`: {other:?}"),
        }
    }
}

/// Waits (up to 10 s) until `name` answers again; returns its count.
async fn back(runtime: &Runtime, name: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call(runtime, name).await {
            Ok(reply) => return reply.count,
            Err(Error::Restarting(_)) | Err(Error::Agent(AgentError::Stopped(_))) => {
                assert!(Instant::now() < deadline, "{name} did not come back");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => panic!("{name}: {error}"),
        }
    }
}

fn in_tree(runtime: &Runtime, name: &str) -> bool {
    runtime
        .tree()
        .walk()
        .iter()
        .any(|(_, child)| child.id == name)
}

fn registry(runtime: &Runtime, name: &str) -> Option<AgentState> {
    runtime.system().registered_state(name).unwrap()
}

async fn a_crashed_temporary_agent_is_gone(dir: Option<&Path>) {
    let runtime = start(
        dir,
        Runtime::builder().supervisor("temps", options(10, Restart::Temporary)),
    )
    .await;
    spawn_counter(&runtime, "temp", "temps", 3).await;
    spawn_counter(&runtime, "other", "temps", 4).await;
    let crash = runtime
        .call::<_, CounterReply>("temp", &CounterMsg::Fail)
        .await;
    assert!(
        matches!(crash, Err(Error::Agent(AgentError::Crashed { .. }))),
        "{crash:?}"
    );
    gone(&runtime, "temp").await;
    // It stays gone, and nothing else is disturbed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(
        call(&runtime, "temp").await,
        Err(Error::Agent(AgentError::UnknownAgent(_)))
    ));
    assert!(!in_tree(&runtime, "temp"));
    assert_eq!(call(&runtime, "other").await.unwrap().count, 4);
    assert_eq!(runtime.agents(), ["other"]);
    if dir.is_some() {
        assert_eq!(registry(&runtime, "temp"), Some(AgentState::Terminated));
        let id = arbor::vault::AgentId::new("temp").unwrap();
        let record = runtime
            .system()
            .vault()
            .unwrap()
            .agent(&id)
            .unwrap()
            .unwrap();
        assert!(record.reason.is_some());
        assert_eq!(registry(&runtime, "other"), Some(AgentState::Running));
    }
    runtime.shutdown().await.unwrap();
    drop(runtime);
    if let Some(dir) = dir {
        // A new runtime on the directory does not bring it back either.
        let runtime = start(
            Some(dir),
            Runtime::builder().supervisor("temps", options(10, Restart::Temporary)),
        )
        .await;
        assert_eq!(runtime.agents(), ["other"]);
        assert_eq!(back(&runtime, "other").await, 4);
        runtime.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_temporary_agent_is_gone_ephemeral() {
    a_crashed_temporary_agent_is_gone(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_temporary_agent_is_gone_journaled() {
    let dir = tempfile::tempdir().unwrap();
    a_crashed_temporary_agent_is_gone(Some(dir.path())).await;
}

/// `temps` holds temporary agents and the supervisor `temps/inner`; both tolerate no restart.
/// `w` crashing makes `inner` give up, `temps` restarting it is one restart too many, so `temps`
/// gives up and the root restarts it — with `inner` and `w`, but neither the temporary agent
/// that crashed earlier nor the one that was running when `temps` stopped.
async fn temporary_agents_do_not_come_back_with_their_supervisor(dir: Option<&Path>) {
    let runtime = start(
        dir,
        Runtime::builder()
            .root(options(5, Restart::Transient))
            .supervisor(
                "temps",
                SupervisorOptions {
                    strategy: Strategy::OneForOne,
                    ..options(0, Restart::Temporary)
                },
            )
            .supervisor("temps/inner", options(0, Restart::Transient)),
    )
    .await;
    spawn_counter(&runtime, "crashed", "temps", 1).await;
    spawn_counter(&runtime, "running", "temps", 2).await;
    spawn_counter(&runtime, "w", "temps/inner", 3).await;
    let _ = runtime
        .call::<_, CounterReply>("crashed", &CounterMsg::Fail)
        .await;
    gone(&runtime, "crashed").await;
    let _ = runtime
        .call::<_, CounterReply>("w", &CounterMsg::Fail)
        .await;
    let expected = if dir.is_some() { 3 } else { 0 };
    assert_eq!(back(&runtime, "w").await, expected);
    let temps = runtime
        .tree()
        .children
        .into_iter()
        .find(|c| c.id == "temps")
        .unwrap();
    assert_eq!(temps.restarts, 1, "temps was not restarted by the root");
    gone(&runtime, "crashed").await;
    gone(&runtime, "running").await;
    assert_eq!(runtime.agents(), ["w"]);
    if dir.is_some() {
        assert_eq!(registry(&runtime, "crashed"), Some(AgentState::Terminated));
        assert_eq!(registry(&runtime, "running"), Some(AgentState::Terminated));
    }
    assert!(runtime.stopped().is_none());
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_agents_do_not_come_back_with_their_supervisor_ephemeral() {
    temporary_agents_do_not_come_back_with_their_supervisor(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_agents_do_not_come_back_with_their_supervisor_journaled() {
    let dir = tempfile::tempdir().unwrap();
    temporary_agents_do_not_come_back_with_their_supervisor(Some(dir.path())).await;
}

/// A graceful shutdown is not an exit: a running temporary agent comes back with the next
/// runtime on the directory (it never exited), with its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_temporary_agent_survives_a_host_restart() {
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        Runtime::builder()
            .data_dir(dir.path())
            .supervisor("temps", options(10, Restart::Temporary))
            .build()
    };
    let runtime = build().await.unwrap();
    spawn_counter(&runtime, "temp", "temps", 7).await;
    runtime.shutdown().await.unwrap();
    drop(runtime);
    let runtime = build().await.unwrap();
    assert_eq!(back(&runtime, "temp").await, 7);
    // Dropped without shutdown: the same.
    drop(runtime);
    let deadline = Instant::now() + Duration::from_secs(10);
    let runtime = loop {
        match build().await {
            Ok(runtime) => break runtime,
            // The dropped runtime releases the directory in the background.
            Err(error) => {
                assert!(Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(back(&runtime, "temp").await, 7);
    runtime.shutdown().await.unwrap();
}

/// A zero intensity period is refused when the runtime is built, for the root and for every
/// declared supervisor (it used to mean "no restart limit").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_intensity_period_is_refused_at_build() {
    let zero = SupervisorOptions {
        intensity: Intensity {
            max_restarts: 1,
            period: Duration::ZERO,
        },
        ..SupervisorOptions::default()
    };
    for builder in [
        Runtime::builder().root(zero.clone()),
        Runtime::builder().supervisor("pool", zero.clone()),
    ] {
        match builder.build().await {
            Err(Error::Supervisor(arbor::supervisor::SupervisorError::InvalidIntensity {
                period,
                ..
            })) => assert_eq!(period, Duration::ZERO),
            other => panic!("a zero period was not refused: {other:?}"),
        }
    }
}
