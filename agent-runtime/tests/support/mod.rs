//! Helpers shared by the Wasm host's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::OnceLock;

use arbor_agent::wasm::{EngineConfig, WasmHost};

/// The test binary's one engine, with a pool of `max_instances` slots (fixed by the first call).
pub fn shared_host(max_instances: u32) -> &'static WasmHost {
    static HOST: OnceLock<WasmHost> = OnceLock::new();
    HOST.get_or_init(|| {
        WasmHost::new(EngineConfig {
            max_instances,
            ..EngineConfig::default()
        })
        .unwrap()
    })
}
