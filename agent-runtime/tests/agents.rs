//! The agent actor: journaled calls and casts, bad input, crashes and recovery, hot swap under
//! concurrent senders, native and Wasm agents exchanging messages, capability refusal, and the
//! WAL staying bounded with idle agents. The behaviour tests run twice, ephemeral and journaled
//! (`in_both_modes!`).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arbor_agent::tools::{Calculator, Echo, Tools};
use arbor_agent::wasm::{AgentLimits, Capabilities, LoadError};
use arbor_agent::{
    AgentError, AgentSpec, AgentSystem, Behaviour, BehaviourError, BehaviourId, CheckpointPolicy,
    Host, RecoveryError, StartError, SwapError,
};
use serde::{Deserialize, Serialize};
use support::{CounterMsg, KvMsg, KvReply, Tally, count, kv_entries, shared_host};

fn system(dir: &std::path::Path, policy: CheckpointPolicy) -> AgentSystem {
    builder().journal(dir).checkpoints(policy).build().unwrap()
}

/// No journal: nothing is kept.
fn ephemeral_system() -> AgentSystem {
    builder().build().unwrap()
}

fn builder() -> arbor_agent::AgentSystemBuilder {
    AgentSystem::builder()
        .wasm_host(shared_host(2_000).clone())
        .tools(
            Tools::new()
                .with("echo", Echo)
                .with("calculator", Calculator),
        )
        .native("tally", || Box::new(Tally::default()))
        .native("relay", || Box::new(Relay))
        .native("panicky", || Box::new(Panicky))
}

fn rarely() -> CheckpointPolicy {
    CheckpointPolicy {
        every_records: 1_000_000,
        every: Duration::from_secs(3600),
        keep: 3,
        ..CheckpointPolicy::default()
    }
}

fn msg<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap()
}

/// A native behaviour that forwards `{"to": .., "by": ..}` to `to` as counter's `Inc`.
struct Relay;

#[derive(Deserialize)]
struct RelayMsg {
    to: String,
    by: i64,
}

impl Behaviour for Relay {
    fn handle(&mut self, input: &[u8], host: &mut Host) -> Result<Vec<u8>, BehaviourError> {
        let RelayMsg { to, by } =
            rmp_serde::from_slice(input).map_err(|e| BehaviourError::BadInput(e.to_string()))?;
        let sent = host.send(&to, &msg(&CounterMsg::Inc { by }));
        Ok(msg(&sent.map_err(|e| e.to_string())))
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
        Ok(vec![0xc0])
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), BehaviourError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "native:relay".into()
    }
}

/// A native behaviour that panics on every input.
struct Panicky;

impl Behaviour for Panicky {
    fn handle(&mut self, _: &[u8], _: &mut Host) -> Result<Vec<u8>, BehaviourError> {
        panic!("native code bug")
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
        Ok(vec![0xc0])
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), BehaviourError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "native:panicky".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_casts_are_journaled_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let system = system(dir.path(), rarely());
    let counter = system
        .add_module("counter", arbor_modules::COUNTER)
        .unwrap();
    let agent = system
        .spawn(AgentSpec::wasm("counter-1", counter))
        .await
        .unwrap();
    for by in 1..=10 {
        agent.cast(msg(&CounterMsg::Inc { by })).unwrap();
    }
    assert_eq!(count(&agent).await, 55);
    let tally = system
        .spawn(AgentSpec::native("tally-1", "tally"))
        .await
        .unwrap();
    tally.call(msg(&CounterMsg::Inc { by: 7 })).await.unwrap();
    let state = agent.snapshot().await.unwrap();
    let wal_records = system.wal().unwrap().last_lsn();
    assert!(wal_records >= 2 * 12, "input and outcome per message");

    system.shutdown().await.unwrap();
    drop(system);
    let system = self::system(dir.path(), rarely());
    let recovered = system.recover_all().await.unwrap();
    assert_eq!(recovered.len(), 2);
    let agent = system.lookup("counter-1").unwrap();
    assert_eq!(agent.snapshot().await.unwrap(), state);
    assert_eq!(count(&agent).await, 55);
    assert_eq!(count(&system.lookup("tally-1").unwrap()).await, 7);
    // A name with state in the vault is recovered, not spawned again.
    let again = system.spawn(AgentSpec::wasm("counter-1", counter)).await;
    assert!(matches!(again, Err(AgentError::AlreadyExists(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_agent_recovers_its_acknowledged_state() {
    let dir = tempfile::tempdir().unwrap();
    let system = system(dir.path(), rarely());
    let kv = system.add_module("kv", arbor_modules::KV).unwrap();
    let buggy_limits = AgentLimits {
        fuel: Some(2_000_000),
        ..AgentLimits::default()
    };
    let agent = system
        .spawn(AgentSpec::wasm("kv-1", kv).limits(buggy_limits))
        .await
        .unwrap();
    let put_numbered = async |keys: std::ops::Range<u32>| {
        for i in keys {
            let put = KvMsg::put(format!("k{i:02}"), i.to_string());
            agent.call(msg(&put)).await.unwrap();
        }
    };
    put_numbered(0..50).await;
    agent.checkpoint().await.unwrap();
    put_numbered(50..80).await;
    let before = agent.snapshot().await.unwrap();
    // A value large enough to run the agent out of fuel while it copies it.
    let error = agent
        .call(msg(&KvMsg::put("huge", "y".repeat(900_000))))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, AgentError::Crashed { seq: 81, .. }),
        "{error}"
    );
    assert!(agent.wait_stopped(Duration::from_secs(5)).await);
    let (agent, report) = system.recover("kv-1").await.unwrap();
    assert_eq!(report.replayed, 30, "{report:?}");
    assert_eq!(report.refused_or_crashed, 1);
    assert_eq!(report.seq, 81);
    assert_eq!(agent.snapshot().await.unwrap(), before);
    assert_eq!(kv_entries(&agent).await.len(), 80);
    // Numbering goes on after the crashed input (82 was the scan).
    let error = agent.call(msg(&"Nope")).await.unwrap_err();
    assert!(
        matches!(error, AgentError::Refused { seq: 83, .. }),
        "{error}"
    );
}

/// Four tasks send to one kv agent while it is swapped from kv to kv-v2, then to fresh kv-v2
/// instances, and once (refused) to kv-badmigrate: nothing is lost or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_under_concurrent_senders_loses_and_reorders_nothing() {
    const TASKS: usize = 4;
    const PER_TASK: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let system = system(dir.path(), rarely());
    let v1 = system.add_module("kv", arbor_modules::KV).unwrap();
    let v2 = system.add_module("kv-v2", arbor_modules::KV_V2).unwrap();
    let bad = system
        .add_module("kv-badmigrate", arbor_modules::KV_BADMIGRATE)
        .unwrap();
    let agent = system.spawn(AgentSpec::wasm("kv", v1)).await.unwrap();

    let mut senders = Vec::new();
    for task in 0..TASKS {
        let agent = agent.clone();
        senders.push(tokio::spawn(async move {
            for j in 0..PER_TASK {
                let unique = KvMsg::put(format!("t{task}-{j:04}"), j.to_string());
                let last = KvMsg::put(format!("t{task}"), j.to_string());
                if j % 2 == 0 {
                    agent.cast(msg(&unique)).unwrap();
                } else {
                    agent.call(msg(&unique)).await.unwrap();
                }
                let reply: KvReply = agent.call_msg(&last).await.unwrap();
                assert_eq!(reply, KvReply::Stored { replaced: j > 0 });
            }
        }));
    }
    let mut pauses = Vec::new();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // kv-v2 reads kv's state (and its own), kv does not read kv-v2's: one upgrade, then
        // swaps to fresh instances of the same module.
        let to = v2;
        let report = system
            .swap_module(&agent, BehaviourId::Wasm(to))
            .await
            .unwrap();
        assert_eq!(report.to, BehaviourId::Wasm(to));
        pauses.push(report.pause);
        if round == 2 {
            let refused = system.swap_module(&agent, BehaviourId::Wasm(bad)).await;
            assert!(
                matches!(
                    &refused,
                    Err(AgentError::SwapRefused {
                        reason: SwapError::StateRefused { .. },
                        ..
                    })
                ),
                "{refused:?}"
            );
        }
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let entries = kv_entries(&agent).await;
    for task in 0..TASKS {
        assert_eq!(
            entries.get(&format!("t{task}")),
            Some(&(PER_TASK - 1).to_string())
        );
        for j in 0..PER_TASK {
            assert_eq!(
                entries.get(&format!("t{task}-{j:04}")),
                Some(&j.to_string())
            );
        }
    }
    println!("swap pauses: {pauses:?}");
    // After a restart the agent runs the module it was swapped to, with the same state (swap
    // replay from the journal is exercised by the kill -9 test).
    let state = agent.snapshot().await.unwrap();
    system.shutdown().await.unwrap();
    drop(system);
    let system = self::system(dir.path(), rarely());
    let (agent, report) = system.recover("kv").await.unwrap();
    assert_eq!(report.behaviour, BehaviourId::Wasm(v2));
    assert_eq!(agent.snapshot().await.unwrap(), state);
}

#[derive(Serialize)]
struct RelayArgs<'a> {
    to: &'a str,
    by: i64,
}

#[derive(Serialize)]
enum ToolboxSend {
    Send { to: String, by: i64 },
}

/// One busy agent and twenty idle ones on a WAL of 32 KiB segments: idle agents are asked to
/// checkpoint when they pin the oldest segment, so the log stays a few segments long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_agents_do_not_pin_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let system = AgentSystem::builder()
        .journal(dir.path())
        .wasm_host(shared_host(2_000).clone())
        .wal(
            arbor_wal::Config::default()
                .segment_bytes(32 << 10)
                .max_record_bytes(4 << 10),
        )
        .checkpoints(CheckpointPolicy {
            every_records: 100,
            every: Duration::from_secs(3600),
            keep: 2,
            // History for the replay gate, within four segments of the log.
            history: 5_000,
            history_max_bytes: 128 << 10,
        })
        .build()
        .unwrap();
    let counter = system
        .add_module("counter", arbor_modules::COUNTER)
        .unwrap();
    let mut idle = Vec::new();
    for i in 0..20 {
        let agent = system
            .spawn(AgentSpec::wasm(format!("idle-{i}"), counter))
            .await
            .unwrap();
        agent.call(msg(&CounterMsg::Inc { by: i })).await.unwrap();
        idle.push(agent);
    }
    let busy = system
        .spawn(AgentSpec::wasm("busy", counter))
        .await
        .unwrap();
    let wal = system.wal().unwrap();
    let mut most_segments = 0;
    for n in 0..20_000 {
        busy.cast(msg(&CounterMsg::Inc { by: 1 })).unwrap();
        if n % 500 == 0 {
            count(&busy).await;
            most_segments = most_segments.max(wal.segment_first_lsns().len());
        }
    }
    assert_eq!(count(&busy).await, 20_000);
    let records = wal.last_lsn();
    let segments = wal.segment_first_lsns();
    // 20,000 inputs make about 40,000 records, well over a hundred segments' worth.
    assert!(records > 40_000, "{records}");
    assert!(
        most_segments <= 8 && segments.len() <= 8,
        "the log grew to {most_segments} segments (now {segments:?})"
    );
    for (i, agent) in idle.iter().enumerate() {
        assert_eq!(count(agent).await, i as i64);
    }
    // Idle agents still recover from what the log kept.
    system.shutdown().await.unwrap();
    drop(system);
    let system = self::system(dir.path(), rarely());
    let recovered = system.recover_all().await.unwrap();
    assert_eq!(recovered.len(), 21);
    for i in 0..20 {
        assert_eq!(
            count(&system.lookup(&format!("idle-{i}")).unwrap()).await,
            i
        );
    }
}

/// An agent that handles one input and then nothing: its checkpoint still comes within the
/// policy's time (a timer armed at the first unsaved input), so the input does not wait in the
/// WAL alone until the next one arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_checkpoints_its_last_input_within_the_policy_time() {
    let dir = tempfile::tempdir().unwrap();
    let system = self::system(
        dir.path(),
        CheckpointPolicy {
            every_records: 1_000_000,
            every: Duration::from_millis(300),
            keep: 3,
            ..CheckpointPolicy::default()
        },
    );
    let counter = system
        .add_module("counter", arbor_modules::COUNTER)
        .unwrap();
    let agent = system
        .spawn(AgentSpec::wasm("lonely", counter))
        .await
        .unwrap();
    agent.call(msg(&CounterMsg::Inc { by: 7 })).await.unwrap();
    let handled = system.wal().unwrap().last_lsn();
    let id = arbor_vault::AgentId::new("lonely").unwrap();
    let vault = system.vault().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let newest = vault.latest_meta(&id).unwrap().map(|m| m.lsn);
        if newest.is_some_and(|lsn| lsn >= handled) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint covers the input (newest: {newest:?}, input at {handled})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    system.shutdown().await.unwrap();
}

/// Runs each body twice, on an ephemeral system and on a journaled one (tokio's `rt_common`
/// pattern): an agent behaves the same whether or not a journal is there. `journaled` guards
/// only what exists with a journal (recovery, the WAL's positions).
macro_rules! in_both_modes {
    ($($(#[$meta:meta])* async fn $name:ident($system:ident, $journaled:ident) $body:block)*) => {
        mod ephemeral {
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $system = super::ephemeral_system();
                    #[allow(unused_variables)]
                    let $journaled = false;
                    $body
                }
            )*
        }
        mod journaled {
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let $system = super::system(dir.path(), rarely());
                    #[allow(unused_variables)]
                    let $journaled = true;
                    $body
                }
            )*
        }
    };
}

in_both_modes! {
    async fn a_panicking_native_behaviour_crashes_its_agent_only(system, journaled) {
        let agent = system
            .spawn(AgentSpec::native("panicky", "panicky"))
            .await
            .unwrap();
        let error = agent.call(msg(&"Go")).await.unwrap_err();
        assert!(
            matches!(&error, AgentError::Crashed { seq: 1, .. })
                && error.to_string().contains("native code bug"),
            "{error}"
        );
        assert!(agent.wait_stopped(Duration::from_secs(5)).await);
        if journaled {
            let (_agent, report) = system.recover("panicky").await.unwrap();
            assert_eq!(report.refused_or_crashed, 1);
        }
    }
    async fn bad_input_gets_an_error_and_the_agent_lives(system, journaled) {
        let kv = system.add_module("kv", arbor_modules::KV).unwrap();
        let limits = AgentLimits {
            max_message_bytes: 1024,
            ..AgentLimits::default()
        };
        let agent = system
            .spawn(AgentSpec::wasm("kv-1", kv).limits(limits))
            .await
            .unwrap();
        let put = |key: &str, value: &str| msg(&KvMsg::put(key, value));
        agent.call(put("a", "1")).await.unwrap();
        let lsn = system.wal().map(|wal| wal.last_lsn());

        // Not MessagePack at all, truncated, trailing bytes, a nesting bomb: refused before the
        // journal.
        let bomb = vec![0x91; 1000];
        for bad in [
            vec![0xc1],
            vec![0x92, 0x01],
            vec![0x01, 0x02],
            Vec::new(),
            bomb,
        ] {
            let error = agent.call(bad).await.unwrap_err();
            assert!(matches!(error, AgentError::Malformed { .. }), "{error}");
        }
        // Oversized: refused before the journal.
        let error = agent.call(put("big", &"x".repeat(2000))).await.unwrap_err();
        assert!(
            matches!(error, AgentError::TooLarge { len, max: 1024, .. } if len > 2000),
            "{error}"
        );
        assert_eq!(
            system.wal().map(|wal| wal.last_lsn()),
            lsn,
            "nothing journaled"
        );

        // Well-formed but not a kv message: journaled, refused by the behaviour.
        let error = agent.call(msg(&"Frobnicate")).await.unwrap_err();
        assert!(
            matches!(error, AgentError::Refused { seq: 2, .. }),
            "{error}"
        );

        // Still alive and unchanged.
        let reply: KvReply = agent
            .call_msg(&KvMsg::Get { key: "a".into() })
            .await
            .unwrap();
        assert_eq!(
            reply,
            KvReply::Value {
                value: Some("1".into())
            }
        );

        // Unknown agents.
        assert!(system.lookup("nobody").is_none());
        let recovered = system.recover("nobody").await;
        if journaled {
            assert!(matches!(recovered, Err(AgentError::UnknownAgent(_))));
        } else {
            assert!(matches!(
                recovered,
                Err(AgentError::Recovery {
                    source: RecoveryError::NoJournal,
                    ..
                })
            ));
        }
    }
    /// A trap, an infinite loop and a memory bomb each crash their agent with the input named; the
    /// host and the other agents go on; recovery brings the agent back without the input.
    async fn hostile_modules_crash_their_agent_only(system, journaled) {
        let counter = system
            .add_module("counter", arbor_modules::COUNTER)
            .unwrap();
        let bystander = system
            .spawn(AgentSpec::wasm("bystander", counter))
            .await
            .unwrap();
        let limits = AgentLimits {
            deadline: Duration::from_millis(100),
            memory_bytes: 4 << 20,
            ..AgentLimits::default()
        };
        use arbor_modules::fixtures;
        for (name, wat, expect) in [
            ("trap", fixtures::TRAP, "trap"),
            ("loop", fixtures::INFINITE_LOOP, "deadline"),
            ("bomb", fixtures::MEMORY_BOMB, "memory cap"),
        ] {
            let module = system
                .add_module(name, &wat::parse_str(wat).unwrap())
                .unwrap();
            let agent = system
                .spawn(AgentSpec::wasm(name, module).limits(limits.clone()))
                .await
                .unwrap();
            let error = agent.call(msg(&"Go")).await.unwrap_err();
            match &error {
                AgentError::Crashed {
                    agent, seq, from, ..
                } => {
                    assert_eq!((agent.as_str(), *seq, from.as_str()), (name, 1, "host"));
                    assert!(error.to_string().contains(expect), "{error}");
                }
                other => panic!("{name}: {other}"),
            }
            assert!(agent.wait_stopped(Duration::from_secs(5)).await);
            assert!(system.lookup(name).is_none());
            assert!(matches!(
                agent.call(msg(&"Again")).await,
                Err(AgentError::Stopped(_))
            ));
            // Recovery skips the crashing input (its outcome says it crashed): no crash loop.
            if journaled {
                let (_agent, report) = system.recover(name).await.unwrap();
                assert_eq!(report.refused_or_crashed, 1);
                assert_eq!(report.replayed, 0);
            }
            bystander.cast(msg(&CounterMsg::Inc { by: 1 })).unwrap();
        }
        assert_eq!(count(&bystander).await, 3);
    }
    /// A Wasm agent sends to a native one and a native one to a Wasm one; sends are delivered after
    /// the sender's input is durable, as casts from the sender.
    async fn native_and_wasm_agents_exchange_messages(system, journaled) {
        let toolbox = system
            .add_module("toolbox", arbor_modules::TOOLBOX)
            .unwrap();
        let counter = system
            .add_module("counter", arbor_modules::COUNTER)
            .unwrap();
        let wasm_sender = system
            .spawn(AgentSpec::wasm("toolbox", toolbox).capabilities(Capabilities::all(["echo"])))
            .await
            .unwrap();
        let native_counter = system
            .spawn(AgentSpec::native("tally", "tally"))
            .await
            .unwrap();
        let native_sender = system
            .spawn(
                AgentSpec::native("relay", "relay").capabilities(Capabilities {
                    send: true,
                    ..Capabilities::none()
                }),
            )
            .await
            .unwrap();
        let wasm_counter = system
            .spawn(AgentSpec::wasm("counter", counter))
            .await
            .unwrap();

        for by in 1..=20 {
            let reply = wasm_sender
                .call(msg(&ToolboxSend::Send {
                    to: "tally".into(),
                    by,
                }))
                .await
                .unwrap();
            assert_eq!(rmp_serde::from_slice::<String>(&reply).unwrap(), "Sent");
            let reply = native_sender
                .call(msg(&RelayArgs { to: "counter", by }))
                .await
                .unwrap();
            assert_eq!(
                rmp_serde::from_slice::<Result<(), String>>(&reply).unwrap(),
                Ok(())
            );
        }
        // Unknown recipients are refused at the send, and the refusal is the behaviour's answer.
        let reply = native_sender
            .call(msg(&RelayArgs {
                to: "nobody",
                by: 1,
            }))
            .await
            .unwrap();
        let refused = rmp_serde::from_slice::<Result<(), String>>(&reply).unwrap();
        assert!(refused.unwrap_err().contains("nobody"));

        let expected = (1..=20).sum::<i64>();
        for agent in [&native_counter, &wasm_counter] {
            let mut seen = 0;
            for _ in 0..200 {
                seen = count(agent).await;
                if seen == expected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(seen, expected, "{}", agent.name());
        }
    }
    /// Grants are enforced: a module importing an ungranted capability does not start; a tool not
    /// granted is refused; a native behaviour asking for an ungranted import is told so.
    async fn capabilities_are_refused_unless_granted(system, journaled) {
        let toolbox = system
            .add_module("toolbox", arbor_modules::TOOLBOX)
            .unwrap();
        let error = system
            .spawn(AgentSpec::wasm("toolbox", toolbox))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &error,
                AgentError::Start {
                    source: StartError::Load(LoadError::UngrantedImport { .. }),
                    ..
                }
            ),
            "ungranted imports: {error:?}"
        );
        // Every import granted, but not the echo tool.
        let agent = system
            .spawn(AgentSpec::wasm("toolbox", toolbox).capabilities(Capabilities::all(["calculator"])))
            .await
            .unwrap();
        #[derive(Serialize)]
        enum Echo {
            Echo { text: String },
        }
        #[derive(Deserialize, Debug)]
        enum EchoReply {
            Failed {
                #[allow(dead_code)]
                error: String,
            },
            Echoed {
                text: String,
            },
        }
        let reply: EchoReply = agent
            .call_msg(&Echo::Echo { text: "hi".into() })
            .await
            .unwrap();
        assert!(matches!(reply, EchoReply::Failed { .. }), "{reply:?}");
        let granted = system
            .spawn(AgentSpec::wasm("toolbox-2", toolbox).capabilities(Capabilities::all(["echo"])))
            .await
            .unwrap();
        let reply: EchoReply = granted
            .call_msg(&Echo::Echo { text: "hi".into() })
            .await
            .unwrap();
        assert!(
            matches!(reply, EchoReply::Echoed { ref text } if text == "hi"),
            "{reply:?}"
        );

        let relay = system
            .spawn(AgentSpec::native("relay", "relay"))
            .await
            .unwrap();
        system
            .spawn(AgentSpec::native("tally", "tally"))
            .await
            .unwrap();
        let reply = relay
            .call(msg(&RelayArgs { to: "tally", by: 1 }))
            .await
            .unwrap();
        let refused = rmp_serde::from_slice::<Result<(), String>>(&reply).unwrap();
        assert!(refused.unwrap_err().contains("not granted"));
    }
}
