#![deny(missing_docs)]

//! The Wasm host: agents as core Wasm modules speaking ABI v1 (`modules/ABI.md`), run by
//! wasmtime.
//!
//! One [`WasmHost`] per process holds the shared engine (pooling allocator, copy-on-write
//! memory images, fuel metering, epoch interruption driven by a 1 ms ticker thread), the linker
//! with the five `arbor` imports, and a cache of checked, pre-linked modules keyed by content
//! hash. [`WasmHost::load`] checks a module against the ABI and compiles it once;
//! [`WasmBehaviour`] is one agent's instance of it, with its own memory cap, per-call deadline,
//! fuel meter and granted [`Capabilities`], and implements [`Behaviour`](crate::Behaviour).

mod abi;
mod engine;
mod error;
mod imports;
mod instance;

pub use engine::{EngineConfig, LoadedModule, WasmHost};
pub use error::LoadError;
pub use instance::{AgentLimits, Capabilities, SpawnError, WasmBehaviour};
