//! Measurements, not checks: instantiation time from a pre-linked module and resident memory
//! per idle instance, with 10,000 counters. Run with
//! `cargo test --release -p arbor-agent --test wasm_scale -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use arbor_agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};
use arbor_agent::{Behaviour, Host, HostCalls, HostError};

/// Resident set size in bytes, from `/proc/self/statm` (Linux).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
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

#[test]
#[ignore = "a measurement; run explicitly"]
fn ten_thousand_counters() {
    const N: usize = 10_000;
    let host = WasmHost::new(EngineConfig {
        max_instances: N as u32 + 8,
        ..EngineConfig::default()
    })
    .unwrap();
    let module = host.load(arbor_modules::COUNTER).unwrap();
    let limits = AgentLimits::default();
    // Warm up the pool and the code.
    drop(WasmBehaviour::instantiate(&host, &module, limits.clone(), Capabilities::none()).unwrap());

    let before = resident_bytes();
    let started = Instant::now();
    let mut agents = Vec::with_capacity(N);
    for _ in 0..N {
        agents.push(
            WasmBehaviour::instantiate(&host, &module, limits.clone(), Capabilities::none())
                .unwrap(),
        );
    }
    let instantiate = started.elapsed();
    let started = Instant::now();
    for agent in &mut agents {
        agent.init_agent(b"").unwrap();
    }
    let init = started.elapsed();
    let inc = b"\x81\xa3Inc\x81\xa2by\x01";
    let started = Instant::now();
    for agent in &mut agents {
        agent.handle(inc, &mut Host::custom(NoHost)).unwrap();
    }
    let handle = started.elapsed();
    let after = resident_bytes();
    let fuel = agents[0].last_cost().fuel.unwrap();
    println!(
        "{N} counters: instantiate {:.1} µs each, init {:.1} µs, first Inc {:.1} µs ({fuel} fuel); \
         resident {:.1} KiB per idle instance ({:.1} MiB total)",
        instantiate.as_secs_f64() * 1e6 / N as f64,
        init.as_secs_f64() * 1e6 / N as f64,
        handle.as_secs_f64() * 1e6 / N as f64,
        (after.saturating_sub(before)) as f64 / 1024.0 / N as f64,
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
    );

    let kv_module = host.load(arbor_modules::KV).unwrap();
    let mut kv =
        WasmBehaviour::init(&host, &kv_module, limits.clone(), Capabilities::none(), b"").unwrap();
    let put = b"\x81\xa3Put\x82\xa3key\xa1k\xa5value\xa1v";
    kv.handle(put, &mut Host::custom(NoHost)).unwrap();
    let put_fuel = kv.last_cost().fuel.unwrap();
    let get = b"\x81\xa3Get\x81\xa3key\xa1k";
    kv.handle(get, &mut Host::custom(NoHost)).unwrap();
    println!(
        "kv with one key: Put {put_fuel} fuel, Get {} fuel",
        kv.last_cost().fuel.unwrap()
    );

    // A module with imports runs each message on a pooled worker thread (see the imports module).
    let toolbox = host.load(arbor_modules::TOOLBOX).unwrap();
    let mut toolbox =
        WasmBehaviour::init(&host, &toolbox, limits, Capabilities::all(["echo"]), b"").unwrap();
    let random = b"\xa6Random";
    toolbox.handle(random, &mut Host::custom(Answers)).unwrap();
    let started = Instant::now();
    for _ in 0..1000 {
        toolbox.handle(random, &mut Host::custom(Answers)).unwrap();
    }
    println!(
        "toolbox Random (one import, worker thread): {:.1} µs per message",
        started.elapsed().as_secs_f64() * 1e6 / 1000.0
    );
    let started = Instant::now();
    for _ in 0..1000 {
        agents[0].handle(inc, &mut Host::custom(NoHost)).unwrap();
    }
    println!(
        "counter Inc (no imports, calling thread): {:.1} µs per message",
        started.elapsed().as_secs_f64() * 1e6 / 1000.0
    );
}

struct Answers;

impl HostCalls for Answers {
    fn now(&mut self) -> Result<u64, HostError> {
        Ok(1)
    }
    fn random(&mut self) -> Result<u64, HostError> {
        Ok(4)
    }
    fn send(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn call_tool(&mut self, _: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        Ok(args.to_vec())
    }
    fn log(&mut self, _: u8, _: &str) {}
}
