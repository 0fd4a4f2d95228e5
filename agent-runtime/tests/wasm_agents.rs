//! The example agents through the Wasm host: MessagePack round trips, refused input,
//! snapshot/restore, migration, fuel.
#![allow(clippy::unwrap_used)]

mod support;

use arbor_agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};
use arbor_agent::{Behaviour, BehaviourError, Host, HostCalls, HostError};
use serde::{Deserialize, Serialize};

fn host() -> &'static WasmHost {
    support::shared_host(64)
}

fn agent(bytes: &[u8]) -> WasmBehaviour {
    let module = host().load(bytes).unwrap();
    WasmBehaviour::init(
        host(),
        &module,
        AgentLimits::default(),
        Capabilities::none(),
        b"",
    )
    .unwrap()
}

/// A host for agents that import nothing: any call is a test failure.
struct NoHost;

impl HostCalls for NoHost {
    fn now(&mut self) -> Result<u64, HostError> {
        panic!("now called")
    }
    fn random(&mut self) -> Result<u64, HostError> {
        panic!("random called")
    }
    fn send(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
        panic!("send called")
    }
    fn call_tool(&mut self, _: &str, _: &[u8]) -> Result<Vec<u8>, HostError> {
        panic!("call_tool called")
    }
    fn log(&mut self, _: u8, _: &str) {
        panic!("log called")
    }
}

fn call<M: Serialize, R: for<'de> Deserialize<'de>>(agent: &mut WasmBehaviour, msg: &M) -> R {
    let reply = agent
        .handle(
            &rmp_serde::to_vec_named(msg).unwrap(),
            &mut Host::custom(NoHost),
        )
        .unwrap();
    rmp_serde::from_slice(&reply).unwrap()
}

#[derive(Serialize)]
enum CounterMsg {
    Inc { by: i64 },
    Get,
    Reset,
}

#[derive(Deserialize, Debug, PartialEq)]
struct CounterReply {
    count: i64,
}

#[derive(Serialize)]
enum KvMsg<'a> {
    Get { key: &'a str },
    Put { key: &'a str, value: &'a str },
    Delete { key: &'a str },
}

#[derive(Deserialize, Debug, PartialEq)]
enum KvReply {
    Value { value: Option<String> },
    Stored { replaced: bool },
    Deleted { existed: bool },
}

#[test]
fn counter_counts() {
    let mut counter = agent(arbor_modules::COUNTER);
    assert_eq!(
        call::<_, CounterReply>(&mut counter, &CounterMsg::Inc { by: 5 }).count,
        5
    );
    assert_eq!(
        call::<_, CounterReply>(&mut counter, &CounterMsg::Inc { by: -2 }).count,
        3
    );
    assert_eq!(
        call::<_, CounterReply>(&mut counter, &CounterMsg::Get).count,
        3
    );
    assert_eq!(
        call::<_, CounterReply>(&mut counter, &CounterMsg::Reset).count,
        0
    );
    assert!(counter.last_cost().fuel.unwrap() > 0);
    assert!(counter.describe().starts_with("wasm:"));
}

#[test]
fn kv_round_trips() {
    let mut kv = agent(arbor_modules::KV);
    let put =
        |kv: &mut WasmBehaviour, key, value| call::<_, KvReply>(kv, &KvMsg::Put { key, value });
    assert_eq!(put(&mut kv, "a", "1"), KvReply::Stored { replaced: false });
    assert_eq!(put(&mut kv, "a", "2"), KvReply::Stored { replaced: true });
    assert_eq!(
        call::<_, KvReply>(&mut kv, &KvMsg::Get { key: "a" }),
        KvReply::Value {
            value: Some("2".into())
        }
    );
    assert_eq!(
        call::<_, KvReply>(&mut kv, &KvMsg::Get { key: "b" }),
        KvReply::Value { value: None }
    );
    assert_eq!(
        call::<_, KvReply>(&mut kv, &KvMsg::Delete { key: "a" }),
        KvReply::Deleted { existed: true }
    );
}

#[test]
fn malformed_input_is_bad_input_and_the_agent_lives_on() {
    let mut counter = agent(arbor_modules::COUNTER);
    call::<_, CounterReply>(&mut counter, &CounterMsg::Inc { by: 7 });
    for junk in [&b"\xc1"[..], b"\x92\x01", b"\xa3Get\x00", b"\"Nope\""] {
        match counter.handle(junk, &mut Host::custom(NoHost)) {
            Err(e @ BehaviourError::BadInput(_)) => assert!(!e.is_crash()),
            other => panic!("{junk:?}: {other:?}"),
        }
    }
    assert_eq!(
        call::<_, CounterReply>(&mut counter, &CounterMsg::Get).count,
        7
    );
}

#[test]
fn oversized_input_is_refused_before_the_guest() {
    let module = host().load(arbor_modules::COUNTER).unwrap();
    let limits = AgentLimits {
        max_message_bytes: 16,
        ..AgentLimits::default()
    };
    let mut counter =
        WasmBehaviour::init(host(), &module, limits, Capabilities::none(), b"").unwrap();
    let before = counter.snapshot().unwrap();
    let big = rmp_serde::to_vec_named(&KvMsg::Put {
        key: "k",
        value: &"x".repeat(64),
    })
    .unwrap();
    match counter.handle(&big, &mut Host::custom(NoHost)) {
        Err(BehaviourError::BadInput(why)) => assert!(why.contains("exceeds"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Never entered: no fuel spent, state unchanged, still usable.
    assert_eq!(counter.last_cost().fuel, None);
    assert_eq!(counter.snapshot().unwrap(), before);
    assert_eq!(
        call::<_, CounterReply>(&mut counter, &CounterMsg::Inc { by: 1 }).count,
        1
    );
}

#[test]
fn oversized_reply_is_a_crash() {
    let module = host().load(arbor_modules::KV).unwrap();
    let limits = AgentLimits {
        max_reply_bytes: 32,
        ..AgentLimits::default()
    };
    let mut kv = WasmBehaviour::init(host(), &module, limits, Capabilities::none(), b"").unwrap();
    let long = "v".repeat(64);
    call::<_, KvReply>(
        &mut kv,
        &KvMsg::Put {
            key: "k",
            value: &long,
        },
    );
    let get = rmp_serde::to_vec_named(&KvMsg::Get { key: "k" }).unwrap();
    assert!(matches!(
        kv.handle(&get, &mut Host::custom(NoHost)),
        Err(BehaviourError::ReplyTooLarge { max: 32, .. })
    ));
    // Dead after a crash.
    assert!(kv.handle(&get, &mut Host::custom(NoHost)).is_err());
    assert!(kv.snapshot().is_err());
}

fn filled_kv(bytes: &[u8], keys: usize) -> WasmBehaviour {
    let mut kv = agent(bytes);
    for i in 0..keys {
        let key = format!("key{i:04}");
        call::<_, KvReply>(
            &mut kv,
            &KvMsg::Put {
                key: &key,
                value: "value",
            },
        );
    }
    kv
}

#[test]
fn snapshot_restores_into_a_fresh_instance() {
    let mut kv = filled_kv(arbor_modules::KV, 20);
    let state = kv.snapshot().unwrap();
    assert_eq!(
        kv.snapshot().unwrap(),
        state,
        "snapshot must not change the state"
    );
    let module = host().load(arbor_modules::KV).unwrap();
    let mut copy = WasmBehaviour::from_state(
        host(),
        &module,
        AgentLimits::default(),
        Capabilities::none(),
        &state,
    )
    .unwrap();
    assert_eq!(copy.snapshot().unwrap(), state);
    assert_eq!(
        call::<_, KvReply>(&mut copy, &KvMsg::Get { key: "key0007" }),
        KvReply::Value {
            value: Some("value".into())
        }
    );
}

#[test]
fn kv_v2_migrates_kv_state_and_badmigrate_refuses_it() {
    let state = filled_kv(arbor_modules::KV, 10).snapshot().unwrap();

    let v2 = host().load(arbor_modules::KV_V2).unwrap();
    let mut migrated = WasmBehaviour::from_state(
        host(),
        &v2,
        AgentLimits::default(),
        Capabilities::none(),
        &state,
    )
    .unwrap();
    assert_eq!(
        call::<_, KvReply>(&mut migrated, &KvMsg::Get { key: "key0003" }),
        KvReply::Value {
            value: Some("value".into())
        }
    );
    assert_ne!(
        migrated.snapshot().unwrap(),
        state,
        "v2 writes its own layout"
    );

    let bad = host().load(arbor_modules::KV_BADMIGRATE).unwrap();
    let mut fresh = agent(arbor_modules::KV_BADMIGRATE);
    call::<_, KvReply>(
        &mut fresh,
        &KvMsg::Put {
            key: "mine",
            value: "kept",
        },
    );
    match fresh.restore(&state) {
        Err(e @ BehaviourError::StateRejected(_)) => assert!(!e.is_crash()),
        other => panic!("{other:?}"),
    }
    // The refused restore kept the agent's own state.
    assert_eq!(
        call::<_, KvReply>(&mut fresh, &KvMsg::Get { key: "mine" }),
        KvReply::Value {
            value: Some("kept".into())
        }
    );
    assert!(matches!(
        WasmBehaviour::from_state(
            host(),
            &bad,
            AgentLimits::default(),
            Capabilities::none(),
            &state
        ),
        Err(arbor_agent::wasm::SpawnError::Start(
            BehaviourError::StateRejected(_)
        ))
    ));
}

fn fuel_of(agent: &mut WasmBehaviour, msg: &[u8]) -> u64 {
    agent.handle(msg, &mut Host::custom(NoHost)).unwrap();
    agent.last_cost().fuel.unwrap()
}

#[test]
fn fuel_is_deterministic_and_tells_slow_from_fast() {
    let get = rmp_serde::to_vec_named(&KvMsg::Get { key: "key0050" }).unwrap();
    let mut kv = filled_kv(arbor_modules::KV, 100);
    let mut slow = filled_kv(arbor_modules::KV_SLOW, 100);
    // Determinism is per whole instance state, allocator included: two instances with the same
    // history pay the same fuel for every message (the same instance asked twice need not,
    // since its heap moved on).
    let mut kv_again = filled_kv(arbor_modules::KV, 100);
    let kv_fuel = fuel_of(&mut kv, &get);
    assert_eq!(
        fuel_of(&mut kv_again, &get),
        kv_fuel,
        "same state, same input, same fuel"
    );
    let second = fuel_of(&mut kv, &get);
    assert_eq!(fuel_of(&mut kv_again, &get), second);
    assert!(
        second.abs_diff(kv_fuel) < kv_fuel / 10,
        "{kv_fuel} then {second}"
    );
    let slow_fuel = fuel_of(&mut slow, &get);
    println!("kv Get over 100 keys: {kv_fuel} fuel; kv-slow: {slow_fuel}");
    assert!(
        slow_fuel > 10 * kv_fuel,
        "kv {kv_fuel}, kv-slow {slow_fuel}"
    );
}

#[test]
fn fuel_limit_stops_the_agent() {
    let module = host().load(arbor_modules::KV_SLOW).unwrap();
    let limits = AgentLimits {
        fuel: Some(100_000),
        ..AgentLimits::default()
    };
    let mut slow = WasmBehaviour::init(host(), &module, limits, Capabilities::none(), b"").unwrap();
    let get = rmp_serde::to_vec_named(&KvMsg::Get { key: "k" }).unwrap();
    assert_eq!(
        slow.handle(&get, &mut Host::custom(NoHost)),
        Err(BehaviourError::OutOfFuel)
    );
}

#[test]
fn modules_are_cached_by_content_hash() {
    let host = WasmHost::new(EngineConfig {
        max_instances: 4,
        ..EngineConfig::default()
    })
    .unwrap();
    let a = host.load(arbor_modules::COUNTER).unwrap();
    let b = host.load(arbor_modules::COUNTER).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(
        a.hash(),
        arbor_vault::ModuleHash::of(arbor_modules::COUNTER)
    );
    assert_eq!(host.cached_modules(), 1);
    host.load(arbor_modules::KV).unwrap();
    assert_eq!(host.cached_modules(), 2);
}

#[test]
fn the_pool_is_bounded() {
    let host = WasmHost::new(EngineConfig {
        max_instances: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let module = host.load(arbor_modules::COUNTER).unwrap();
    let spawn = || {
        WasmBehaviour::init(
            &host,
            &module,
            AgentLimits::default(),
            Capabilities::none(),
            b"",
        )
    };
    let first = spawn().unwrap();
    let _second = spawn().unwrap();
    assert!(matches!(
        spawn(),
        Err(arbor_agent::wasm::SpawnError::Load(
            arbor_agent::wasm::LoadError::Instantiate(_)
        ))
    ));
    drop(first);
    spawn().unwrap();
}
