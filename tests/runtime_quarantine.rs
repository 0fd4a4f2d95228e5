//! One poisoned agent must not stop the host: an agent whose state cannot be recovered — its
//! checkpoint's restore loops past the deadline or traps — is quarantined (the host boots and
//! runs without it, calls say why, the registry keeps the reason) until an operator restores it
//! from an older checkpoint or removes it. Escalating instead stays available as a policy.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use arbor::agent::wasm::AgentLimits;
use arbor::agent::{AfterRestore, AgentError, RestoreFrom};
use arbor::supervisor::{ChildState, Intensity, SupervisorError};
use arbor::vault::{AgentId, AgentState};
use arbor::{Error, RecoveryFailure, Runtime, Spawn, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};
use support::Unlucky;

mod support;

/// A valid ABI v1 module whose `arbor_restore` is poisoned as `restore` says (its body), while
/// everything else works: init, handle (answers nil), snapshot (nil).
fn poisoned_module(restore: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
          (memory (export "memory") 1)
          (data (i32.const 16) "\c0")
          (global $next (mut i32) (i32.const 1024))
          (func (export "arbor_abi_version") (result i32) (i32.const 1))
          (func (export "arbor_alloc") (param $len i32) (result i32)
            (local $ptr i32)
            (local.set $ptr (global.get $next))
            (global.set $next (i32.add (global.get $next) (local.get $len)))
            (local.get $ptr))
          (func (export "arbor_init") (param i32 i32) (result i32) (i32.const 0))
          (func (export "arbor_handle") (param i32 i32) (result i64) (i64.const 0x10_0000_0001))
          (func (export "arbor_snapshot") (result i64) (i64.const 0x10_0000_0001))
          (func (export "arbor_restore") (param i32 i32) (result i32) {restore}))"#
    ))
    .unwrap()
}

const RESTORE_LOOPS: &str = "(loop $forever (br $forever)) (i32.const 0)";
const RESTORE_TRAPS: &str = "unreachable";

fn limits() -> AgentLimits {
    AgentLimits {
        deadline: Duration::from_millis(50),
        ..AgentLimits::default()
    }
}

fn builder(dir: &std::path::Path) -> arbor::RuntimeBuilder {
    Runtime::builder()
        .data_dir(dir)
        .root(SupervisorOptions {
            intensity: Intensity {
                max_restarts: 3,
                period: Duration::from_secs(60),
            },
            ..SupervisorOptions::default()
        })
        .native("unlucky", || Box::new(Unlucky(0)))
}

/// Builds once the directory is free (a failed or dropped runtime releases it in the
/// background).
async fn build_when_free(builder: impl Fn() -> arbor::RuntimeBuilder) -> Runtime {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match builder().build().await {
            Ok(runtime) => return runtime,
            Err(error) => {
                assert!(Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn registry(runtime: &Runtime, name: &str) -> (AgentState, Option<String>) {
    let id = AgentId::new(name).unwrap();
    let record = runtime
        .system()
        .vault()
        .unwrap()
        .agent(&id)
        .unwrap()
        .unwrap();
    (record.state, record.reason)
}

async fn quarantined(runtime: &Runtime, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match runtime.call::<_, u64>(name, &1u64).await {
            Err(Error::Quarantined { agent, reason }) => {
                assert_eq!(agent, name);
                return reason;
            }
            Err(Error::Restarting(_)) | Err(Error::Agent(AgentError::Stopped(_))) => {
                assert!(Instant::now() < deadline, "{name} was not quarantined");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// The issue's case: a restore that loops until its deadline on every attempt. Escalating (the
/// old behaviour, now a policy) refuses to boot; the default boots without the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_boots_without_an_agent_whose_restore_never_finishes() {
    for (restore, what) in [(RESTORE_LOOPS, "loops"), (RESTORE_TRAPS, "traps")] {
        let dir = tempfile::tempdir().unwrap();
        let runtime = builder(dir.path()).build().await.unwrap();
        runtime
            .spawn(Spawn::wasm_bytes("good", arbor_modules::COUNTER))
            .await
            .unwrap();
        runtime
            .call::<_, CounterReply>("good", &CounterMsg::Inc { by: 5 })
            .await
            .unwrap();
        runtime
            .spawn(Spawn::wasm_bytes("poisoned", poisoned_module(restore)).limits(limits()))
            .await
            .unwrap();
        runtime.call::<_, ()>("poisoned", &"hello").await.unwrap();
        runtime.shutdown().await.unwrap();
        drop(runtime);

        let escalated = builder(dir.path())
            .recovery_failure(RecoveryFailure::Escalate)
            .build()
            .await;
        match escalated {
            Err(Error::Supervisor(SupervisorError::StartFailed { child, .. })) => {
                assert_eq!(child, "poisoned", "{what}");
            }
            other => panic!("restore {what}: escalate built: {:?}", other.map(|_| ())),
        }

        let runtime = build_when_free(|| builder(dir.path())).await;
        let reply: CounterReply = runtime.call("good", &CounterMsg::Get).await.unwrap();
        assert_eq!(reply.count, 5, "{what}");
        let reason = quarantined(&runtime, "poisoned").await;
        assert!(!reason.is_empty());
        assert_eq!(
            registry(&runtime, "poisoned"),
            (AgentState::Quarantined, Some(reason.clone())),
            "{what}"
        );
        assert_eq!(runtime.quarantined().get("poisoned"), Some(&reason));
        let child = runtime
            .tree()
            .children
            .into_iter()
            .find(|c| c.id == "poisoned")
            .unwrap();
        assert!(matches!(child.state, ChildState::Terminated { .. }));
        assert_eq!(child.restarts, 0, "a quarantine is not a restart");
        assert!(runtime.stopped().is_none());
        runtime.shutdown().await.unwrap();
        drop(runtime);
        // Still quarantined, with its reason, on the next boot: no recovery is tried again.
        let runtime = builder(dir.path()).build().await.unwrap();
        assert_eq!(quarantined(&runtime, "poisoned").await, reason);
        runtime.remove_agent("poisoned").await.unwrap();
        assert!(matches!(
            runtime.call::<_, ()>("poisoned", &"hello").await,
            Err(Error::Agent(AgentError::UnknownAgent(_)))
        ));
        assert!(
            runtime
                .tree()
                .walk()
                .iter()
                .all(|(_, child)| child.id != "poisoned")
        );
        assert_eq!(runtime.system().registered_state("poisoned").unwrap(), None);
        // The name is free again.
        runtime
            .spawn(Spawn::wasm_bytes("poisoned", arbor_modules::COUNTER))
            .await
            .unwrap();
        runtime.shutdown().await.unwrap();
    }
}

/// A crash whose restart cannot recover the state quarantines the agent instead of burning the
/// supervisor's intensity up to the root; an operator then restores an older checkpoint — with
/// replay it is poisoned again (and says so), with discard it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_cannot_recover_quarantines_and_an_operator_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = builder(dir.path()).build().await.unwrap();
    runtime
        .spawn(Spawn::native("unlucky", "unlucky"))
        .await
        .unwrap();
    assert_eq!(runtime.call::<_, u64>("unlucky", &5u64).await.unwrap(), 5);
    let at_five = runtime
        .lookup("unlucky")
        .unwrap()
        .checkpoint()
        .await
        .unwrap();
    assert_eq!(runtime.call::<_, u64>("unlucky", &8u64).await.unwrap(), 13);
    runtime
        .lookup("unlucky")
        .unwrap()
        .checkpoint()
        .await
        .unwrap();
    let crash = runtime.call::<_, u64>("unlucky", &0u64).await;
    assert!(
        matches!(crash, Err(Error::Agent(AgentError::Crashed { .. }))),
        "{crash:?}"
    );
    quarantined(&runtime, "unlucky").await;
    assert!(runtime.stopped().is_none(), "the runtime stopped");

    // Replaying brings the poison back: refused, still quarantined.
    let replayed = runtime
        .restore_agent(
            "unlucky",
            RestoreFrom::Checkpoint(at_five),
            AfterRestore::Replay,
        )
        .await;
    assert!(
        matches!(replayed, Err(Error::Quarantined { .. })),
        "{replayed:?}"
    );
    quarantined(&runtime, "unlucky").await;
    // Discarding what came after the older checkpoint brings it back at 5.
    let report = runtime
        .restore_agent(
            "unlucky",
            RestoreFrom::Checkpoint(at_five),
            AfterRestore::Discard,
        )
        .await
        .unwrap();
    assert_eq!(report.replayed, 0);
    assert_eq!(runtime.call::<_, u64>("unlucky", &1u64).await.unwrap(), 6);
    assert_eq!(registry(&runtime, "unlucky"), (AgentState::Running, None));
    assert!(runtime.quarantined().is_empty());
    // It is a normal agent again: a crash is recovered from its journal.
    let _ = runtime.call::<_, u64>("unlucky", &0u64).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let count = loop {
        match runtime.call::<_, u64>("unlucky", &1u64).await {
            Ok(count) => break count,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(count, 7);
    // Removing a running agent is refused.
    assert!(matches!(
        runtime.remove_agent("unlucky").await,
        Err(Error::Agent(AgentError::Running(_)))
    ));
    runtime.shutdown().await.unwrap();
}
