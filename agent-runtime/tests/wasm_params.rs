//! Module parameters (`arbor:params` → `arbor_configure`, `modules/ABI.md`): delivered before
//! init and before restore, and a module that cannot take them is refused with the reason.
#![allow(clippy::unwrap_used)]

mod support;

use arbor_agent::wasm::{
    AgentLimits, Capabilities, LoadError, SpawnError, WasmBehaviour, WasmHost, custom_sections,
};
use arbor_agent::{Behaviour, Host};

fn host() -> &'static WasmHost {
    support::shared_host(32)
}

/// A module whose `arbor_handle` answers with the parameters it was configured with (nil if
/// none); `configure` is the body of its `arbor_configure`, `sections` extra module fields.
fn module(configure: Option<&str>, sections: &str) -> Vec<u8> {
    let configure = configure
        .map(|body| {
            format!(
                r#"(func (export "arbor_configure") (param $ptr i32) (param $len i32) (result i32)
                     {body})"#
            )
        })
        .unwrap_or_default();
    wat::parse_str(format!(
        r#"(module
          (memory (export "memory") 1)
          (data (i32.const 16) "\c0")
          (global $next (mut i32) (i32.const 1024))
          (global $params (mut i64) (i64.const 0x10_0000_0001))
          (func (export "arbor_abi_version") (result i32) (i32.const 1))
          (func (export "arbor_alloc") (param $len i32) (result i32)
            (local $ptr i32)
            (local.set $ptr (global.get $next))
            (global.set $next (i32.add (local.get $ptr) (local.get $len)))
            (local.get $ptr))
          (func (export "arbor_init") (param i32 i32) (result i32) (i32.const 0))
          (func (export "arbor_snapshot") (result i64) (i64.const 0x10_0000_0001))
          (func (export "arbor_restore") (param i32 i32) (result i32) (i32.const 0))
          (func (export "arbor_handle") (param i32 i32) (result i64) (global.get $params))
          {configure}
          {sections})"#
    ))
    .unwrap()
}

/// Keeps the parameters for `arbor_handle` (or nil when they are empty).
const KEEP: &str = r#"
    (if (i32.gt_s (local.get $len) (i32.const 0))
      (then (global.set $params
        (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                (i64.extend_i32_u (local.get $len))))))
    (i32.const 0)"#;

const PARAMS: &str = r#"(@custom "arbor:params" "\81\a1n\05")"#;

fn ask(agent: &mut WasmBehaviour) -> Vec<u8> {
    agent
        .handle(b"\xc0", &mut Host::replay(Vec::new()))
        .unwrap()
}

#[test]
fn parameters_reach_the_module_before_init_and_before_restore() {
    let bytes = module(Some(KEEP), PARAMS);
    assert_eq!(
        custom_sections(&bytes, "arbor:params").unwrap(),
        vec![b"\x81\xa1n\x05".to_vec()]
    );
    let loaded = host().load(&bytes).unwrap();
    assert_eq!(loaded.params(), Some(&b"\x81\xa1n\x05"[..]));
    let caps = Capabilities::none();
    let mut fresh =
        WasmBehaviour::init(host(), &loaded, AgentLimits::default(), caps.clone(), b"").unwrap();
    assert_eq!(ask(&mut fresh), b"\x81\xa1n\x05");
    let mut restored =
        WasmBehaviour::from_state(host(), &loaded, AgentLimits::default(), caps, b"\xc0").unwrap();
    assert_eq!(ask(&mut restored), b"\x81\xa1n\x05");
}

#[test]
fn a_module_with_configure_and_no_parameters_gets_empty_ones_and_one_without_either_runs() {
    for bytes in [module(Some(KEEP), ""), module(None, "")] {
        let loaded = host().load(&bytes).unwrap();
        let mut agent = WasmBehaviour::init(
            host(),
            &loaded,
            AgentLimits::default(),
            Capabilities::none(),
            b"",
        )
        .unwrap();
        assert_eq!(ask(&mut agent), b"\xc0");
    }
    assert_eq!(
        host().load(&module(Some(KEEP), "")).unwrap().params(),
        Some(&[][..])
    );
    assert_eq!(host().load(&module(None, "")).unwrap().params(), None);
}

#[test]
fn modules_that_cannot_take_their_parameters_are_refused_with_the_reason() {
    // Parameters and nobody to hand them to.
    match host().load(&module(None, PARAMS)) {
        Err(LoadError::MissingExport { name }) => assert!(name.contains("arbor_configure")),
        other => panic!("{other:?}"),
    }
    // Two sets of parameters.
    let twice = format!("{PARAMS} {PARAMS}");
    match host().load(&module(Some(KEEP), &twice)) {
        Err(LoadError::Invalid(why)) => assert!(why.contains("2 `arbor:params`"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The wrong type.
    let wrong = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "arbor_abi_version") (result i32) (i32.const 1))
            (func (export "arbor_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "arbor_init") (param i32 i32) (result i32) (i32.const 0))
            (func (export "arbor_snapshot") (result i64) (i64.const 0))
            (func (export "arbor_restore") (param i32 i32) (result i32) (i32.const 0))
            (func (export "arbor_handle") (param i32 i32) (result i64) (i64.const 0))
            (func (export "arbor_configure") (param i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert!(matches!(
        host().load(&wrong),
        Err(LoadError::WrongSignature { .. })
    ));
    // It refuses them, or crashes taking them: the instance never runs.
    for body in [
        "(i32.const -9)",
        "(unreachable)",
        "(loop $spin (br $spin)) (i32.const 0)",
    ] {
        let loaded = host().load(&module(Some(body), PARAMS)).unwrap();
        let limits = AgentLimits {
            fuel: Some(1_000_000),
            ..AgentLimits::default()
        };
        match WasmBehaviour::init(host(), &loaded, limits, Capabilities::none(), b"") {
            Err(SpawnError::Load(LoadError::Instantiate(why))) => {
                assert!(why.contains("arbor_configure"), "{body}: {why}")
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}
