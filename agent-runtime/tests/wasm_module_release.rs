//! Compiled modules are released once nothing uses them: a host that loads far more distinct
//! modules than it may open files (each compiled module with a data segment holds a memfd for
//! its copy-on-write memory image) keeps loading them, directly and through an `AgentSystem`.
//!
//! Its own test binary: it lowers the process's open-file limit.
#![allow(clippy::unwrap_used)]

use std::sync::Once;

use arbor_agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};
use arbor_agent::{AgentSpec, AgentSystem, Behaviour, Host, HostCalls, HostError};

/// The soft open-file limit the tests run under.
const FD_LIMIT: u64 = 256;
/// Distinct modules loaded, each far more than `FD_LIMIT`.
const MODULES: u32 = 1_500;
const AGENT_MODULES: u32 = 800;
const JOURNALED_MODULES: u32 = 400;
/// The idle modules the hosts here keep.
const IDLE: usize = 32;

const NIL: &[u8] = b"\xc0";

/// Lowers the soft limit once for the whole binary (the tests run in parallel and share it).
fn lower_fd_limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
        rlimit::Resource::NOFILE
            .set(FD_LIMIT.min(hard), hard)
            .unwrap();
    });
}

/// A minimal ABI v1 module whose data segment (so it has a memory image) holds `i` as a
/// MessagePack uint32: its reply to every message and its whole state.
fn module(i: u32) -> Vec<u8> {
    let data: String = i
        .to_be_bytes()
        .iter()
        .map(|b| format!("\\{b:02x}"))
        .collect();
    wat::parse_str(format!(
        r#"(module
  (memory (export "memory") 1)
  (data (i32.const 16) "\ce{data}")
  (global $next (mut i32) (i32.const 1024))
  (func (export "arbor_abi_version") (result i32) (i32.const 1))
  ;; A bump allocator in the first page: messages here are a few bytes.
  (func (export "arbor_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (local.get $ptr) (local.get $len)))
    (local.get $ptr))
  (func (export "arbor_init") (param i32 i32) (result i32) (i32.const 0))
  (func (export "arbor_snapshot") (result i64) (i64.const 0x10_0000_0005))
  (func (export "arbor_restore") (param i32 i32) (result i32) (i32.const 0))
  (func (export "arbor_handle") (param i32 i32) (result i64) (i64.const 0x10_0000_0005)))"#
    ))
    .unwrap()
}

fn reply(i: u32) -> Vec<u8> {
    let mut bytes = vec![0xce];
    bytes.extend_from_slice(&i.to_be_bytes());
    bytes
}

struct NoHost;

impl HostCalls for NoHost {
    fn now(&mut self) -> Result<u64, HostError> {
        Err(HostError::NotGranted("now".into()))
    }
    fn random(&mut self) -> Result<u64, HostError> {
        Err(HostError::NotGranted("random".into()))
    }
    fn send(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
        Err(HostError::NotGranted("send".into()))
    }
    fn call_tool(&mut self, name: &str, _: &[u8]) -> Result<Vec<u8>, HostError> {
        Err(HostError::NotGranted(name.into()))
    }
    fn log(&mut self, _: u8, _: &str) {}
}

fn small_host() -> WasmHost {
    WasmHost::new(EngineConfig {
        max_instances: 8,
        idle_modules: IDLE,
        ..EngineConfig::default()
    })
    .unwrap()
}

#[test]
fn distinct_modules_are_released_when_no_instance_uses_them() {
    lower_fd_limit();
    let host = small_host();
    let mut most_held = 0;
    for i in 0..MODULES {
        let module = host
            .load(&module(i))
            .unwrap_or_else(|e| panic!("loading module {i}: {e}"));
        let mut agent = WasmBehaviour::init(
            &host,
            &module,
            AgentLimits::default(),
            Capabilities::none(),
            b"",
        )
        .unwrap_or_else(|e| panic!("instantiating module {i}: {e}"));
        assert_eq!(
            agent.handle(NIL, &mut Host::custom(NoHost)).unwrap(),
            reply(i)
        );
        drop(agent);
        drop(module);
        most_held = most_held.max(host.cached_modules());
    }
    assert!(most_held <= IDLE, "up to {most_held} modules held");
}

/// Spawns an agent on each of `count` distinct modules, calls it and stops it; then spawns one
/// on the first module again (released by then, so compiled again from its bytes).
async fn agents_on_distinct_modules(system: &AgentSystem, count: u32) {
    let mut hashes = Vec::new();
    let mut most_held = 0;
    for i in 0..count {
        let hash = system
            .add_module(&format!("m{i}"), &module(i))
            .unwrap_or_else(|e| panic!("adding module {i}: {e}"));
        let agent = system
            .spawn(AgentSpec::wasm(format!("agent-{i}"), hash))
            .await
            .unwrap_or_else(|e| panic!("spawning on module {i}: {e}"));
        assert_eq!(agent.call(NIL.to_vec()).await.unwrap(), reply(i));
        agent.stop().await.unwrap();
        hashes.push(hash);
        most_held = most_held.max(system.wasm_host().cached_modules());
    }
    // The stopped actor may drop its instance just after `stop` returns.
    assert!(most_held <= IDLE + 1, "up to {most_held} modules held");
    let again = system
        .spawn(AgentSpec::wasm("again", hashes[0]))
        .await
        .unwrap();
    assert_eq!(again.call(NIL.to_vec()).await.unwrap(), reply(0));
    again.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_system_releases_modules_of_stopped_agents() {
    lower_fd_limit();
    let system = AgentSystem::builder()
        .wasm_host(small_host())
        .build()
        .unwrap();
    agents_on_distinct_modules(&system, AGENT_MODULES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_system_releases_modules_of_stopped_agents() {
    lower_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let system = AgentSystem::builder()
        .journal(dir.path())
        .wasm_host(small_host())
        .build()
        .unwrap();
    agents_on_distinct_modules(&system, JOURNALED_MODULES).await;
    system.shutdown().await.unwrap();
}

#[test]
fn modules_in_use_and_the_most_recently_released_stay_loaded() {
    let host = WasmHost::new(EngineConfig {
        max_instances: 4,
        idle_modules: 4,
        ..EngineConfig::default()
    })
    .unwrap();
    let hashes: Vec<_> = (0..10)
        .map(|i| arbor_vault::ModuleHash::of(&module(i)))
        .collect();
    // Module 0 stays in use by an instance.
    let first = host.load(&module(0)).unwrap();
    let mut agent = WasmBehaviour::init(
        &host,
        &first,
        AgentLimits::default(),
        Capabilities::none(),
        b"",
    )
    .unwrap();
    drop(first);
    for i in 1..10 {
        host.load(&module(i)).unwrap();
    }
    assert_eq!(host.cached_modules(), 5);
    for hash in &hashes[1..6] {
        assert!(host.cached(hash).is_none(), "{hash:?} was released");
    }
    // Finding an idle module does not change which ones are kept.
    for hash in &hashes[6..10] {
        assert!(host.cached(hash).is_some(), "{hash:?} was kept idle");
    }
    assert_eq!(
        host.load(&module(0)).unwrap().hash(),
        hashes[0],
        "in use, so shared"
    );
    assert_eq!(
        agent.handle(NIL, &mut Host::custom(NoHost)).unwrap(),
        reply(0)
    );

    // Its last user gone, module 0 is the most recently released: module 6 makes room.
    drop(agent);
    assert_eq!(host.cached_modules(), 4);
    assert!(host.cached(&hashes[0]).is_some());
    assert!(host.cached(&hashes[6]).is_none());

    let eager = WasmHost::new(EngineConfig {
        max_instances: 1,
        idle_modules: 0,
        ..EngineConfig::default()
    })
    .unwrap();
    let loaded = eager.load(&module(0)).unwrap();
    assert_eq!(eager.cached_modules(), 1);
    drop(loaded);
    assert_eq!(eager.cached_modules(), 0);
    assert!(eager.cached(&hashes[0]).is_none());
}
