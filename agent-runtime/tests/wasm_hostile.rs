//! The hostile fixtures: each is stopped or refused with an error naming what it did, and the
//! host process carries on.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use arbor_agent::wasm::{
    AgentLimits, Capabilities, LoadError, LoadedModule, SpawnError, WasmBehaviour, WasmHost,
};
use arbor_agent::{Behaviour, BehaviourError, Host, HostCalls, HostError};
use arbor_modules::fixtures;

fn host() -> &'static WasmHost {
    support::shared_host(32)
}

fn load(wat: &str) -> Result<LoadedModule, LoadError> {
    host().load(&wat::parse_str(wat).unwrap())
}

fn spawn(wat: &str, limits: AgentLimits, caps: Capabilities) -> Result<WasmBehaviour, SpawnError> {
    WasmBehaviour::init(host(), &load(wat)?, limits, caps, b"")
}

/// Echoes tool arguments; everything else is unexpected here.
struct EchoHost;

impl HostCalls for EchoHost {
    fn now(&mut self) -> Result<u64, HostError> {
        Err(HostError::Refused("unexpected".into()))
    }
    fn random(&mut self) -> Result<u64, HostError> {
        Err(HostError::Refused("unexpected".into()))
    }
    fn send(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
        Err(HostError::Refused("unexpected".into()))
    }
    fn call_tool(&mut self, _: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        Ok(args.to_vec())
    }
    fn log(&mut self, _: u8, _: &str) {}
}

const NIL: &[u8] = b"\xc0";

#[test]
fn infinite_loop_is_stopped_by_the_deadline() {
    let limits = AgentLimits {
        deadline: Duration::from_millis(50),
        ..AgentLimits::default()
    };
    let mut agent = spawn(fixtures::INFINITE_LOOP, limits, Capabilities::none()).unwrap();
    let started = Instant::now();
    let result = agent.handle(NIL, &mut Host::custom(EchoHost));
    let took = started.elapsed();
    match result {
        Err(BehaviourError::DeadlineExceeded { limit, elapsed }) => {
            assert_eq!(limit, Duration::from_millis(50));
            assert!(
                elapsed >= limit && elapsed <= took,
                "{elapsed:?}, took {took:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(took >= Duration::from_millis(45), "stopped early: {took:?}");
    assert!(took < Duration::from_secs(2), "stopped late: {took:?}");
    // The instance is discarded.
    assert!(matches!(
        agent.handle(NIL, &mut Host::custom(EchoHost)),
        Err(BehaviourError::Contract(_))
    ));
}

#[test]
fn infinite_loop_under_a_fuel_limit_runs_out_of_fuel() {
    let limits = AgentLimits {
        fuel: Some(1_000_000),
        ..AgentLimits::default()
    };
    let mut agent = spawn(fixtures::INFINITE_LOOP, limits, Capabilities::none()).unwrap();
    assert_eq!(
        agent.handle(NIL, &mut Host::custom(EchoHost)),
        Err(BehaviourError::OutOfFuel)
    );
    assert!(agent.last_cost().fuel.unwrap() >= 1_000_000);
}

#[test]
fn memory_bomb_is_stopped_at_the_cap() {
    let limits = AgentLimits {
        memory_bytes: 8 << 20,
        ..AgentLimits::default()
    };
    let mut agent = spawn(fixtures::MEMORY_BOMB, limits, Capabilities::none()).unwrap();
    assert_eq!(
        agent.handle(NIL, &mut Host::custom(EchoHost)),
        Err(BehaviourError::MemoryCap { cap_bytes: 8 << 20 })
    );
    assert!(agent.memory_bytes() <= 8 << 20);
}

#[test]
fn trap_is_a_trap() {
    let mut agent = spawn(fixtures::TRAP, AgentLimits::default(), Capabilities::none()).unwrap();
    match agent.handle(NIL, &mut Host::custom(EchoHost)) {
        Err(e @ BehaviourError::Trap(_)) => assert!(e.is_crash(), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_export_is_refused_by_name() {
    assert_eq!(
        load(fixtures::MISSING_EXPORT).unwrap_err(),
        LoadError::MissingExport {
            name: "arbor_handle".into()
        }
    );
}

#[test]
fn bad_signature_is_refused_by_name() {
    assert_eq!(
        load(fixtures::BAD_SIGNATURE).unwrap_err(),
        LoadError::WrongSignature {
            name: "arbor_handle".into(),
            expected: "(i32, i32) -> i64".into(),
            found: "(i32, i32) -> i32".into(),
        }
    );
}

#[test]
fn wrong_abi_version_is_refused() {
    assert!(matches!(
        spawn(
            fixtures::WRONG_ABI,
            AgentLimits::default(),
            Capabilities::none()
        ),
        Err(SpawnError::Load(LoadError::UnsupportedAbi { found: 99 }))
    ));
}

#[test]
fn ungranted_import_is_refused_by_name_and_works_when_granted() {
    assert!(matches!(
        spawn(fixtures::UNGRANTED_IMPORT, AgentLimits::default(), Capabilities::none()),
        Err(SpawnError::Load(LoadError::UngrantedImport { name })) if name == "arbor.call_tool"
    ));
    let caps = Capabilities {
        tools: ["echo".to_string()].into(),
        ..Capabilities::none()
    };
    let mut agent = spawn(fixtures::UNGRANTED_IMPORT, AgentLimits::default(), caps).unwrap();
    assert_eq!(
        agent.handle(b"\x2a", &mut Host::custom(EchoHost)).unwrap(),
        b"\x2a"
    );
    // Granted call_tool, but not this tool: the guest sees -1 and this fixture replies nil.
    let caps = Capabilities {
        tools: ["other".to_string()].into(),
        ..Capabilities::none()
    };
    let mut agent = spawn(fixtures::UNGRANTED_IMPORT, AgentLimits::default(), caps).unwrap();
    assert_eq!(
        agent.handle(b"\x2a", &mut Host::custom(EchoHost)).unwrap(),
        NIL
    );
}

#[test]
fn foreign_and_unknown_imports_are_refused_by_name() {
    let foreign = fixtures::TRAP.replacen(
        "(module",
        r#"(module (import "env" "now" (func (result i64)))"#,
        1,
    );
    assert_eq!(
        load(&foreign).unwrap_err(),
        LoadError::ForeignImport {
            name: "env.now".into()
        }
    );
    let unknown = fixtures::TRAP.replacen(
        "(module",
        r#"(module (import "arbor" "exec" (func (result i64)))"#,
        1,
    );
    assert_eq!(
        load(&unknown).unwrap_err(),
        LoadError::UnknownImport {
            name: "arbor.exec".into()
        }
    );
    let mistyped = fixtures::TRAP.replacen(
        "(module",
        r#"(module (import "arbor" "now" (func (result i32)))"#,
        1,
    );
    assert!(matches!(
        load(&mistyped).unwrap_err(),
        LoadError::WrongSignature { name, .. } if name == "arbor.now"
    ));
}

#[test]
fn non_wasm_is_invalid() {
    assert!(matches!(
        host().load(b"not wasm at all"),
        Err(LoadError::Invalid(_))
    ));
    assert!(matches!(host().load(b""), Err(LoadError::Invalid(_))));
}

#[test]
fn a_cap_below_the_initial_memory_refuses_instantiation() {
    let module = host().load(arbor_modules::COUNTER).unwrap();
    let limits = AgentLimits {
        memory_bytes: 64 << 10,
        ..AgentLimits::default()
    };
    assert!(matches!(
        WasmBehaviour::init(host(), &module, limits, Capabilities::none(), b""),
        Err(SpawnError::Load(LoadError::Instantiate(_)))
    ));
}

#[test]
fn a_crashed_instance_stays_dead() {
    let mut agent = spawn(fixtures::TRAP, AgentLimits::default(), Capabilities::none()).unwrap();
    assert!(matches!(
        agent.handle(NIL, &mut Host::custom(EchoHost)),
        Err(BehaviourError::Trap(_))
    ));
    for _ in 0..3 {
        match agent.snapshot() {
            Err(BehaviourError::Contract(why)) => assert!(why.contains("earlier crash"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(agent.restore(NIL).is_err());
}
