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
//!
//! Engine choices, and why:
//! - **Pooling allocator** sized by [`EngineConfig`] (default 10,000 instances, memories up to
//!   64 MiB): instantiation takes a pre-reserved slot instead of mapping fresh memory, and the
//!   pool bounds how many agents can exist. Each slot reserves only the largest allowed memory
//!   plus a 64 KiB guard, not 4 GiB, so ten thousand slots fit in the address space; compiled
//!   code does explicit bounds checks in exchange.
//! - **Copy-on-write memory images**: a module's initial memory is mapped from one shared image,
//!   so an idle instance costs only the pages it has written.
//! - **`InstancePre`**: imports are resolved once per module, at load.
//! - **Modules are released when unused**: a compiled module holds a file descriptor (its
//!   memory image) and memory mappings, so a host that kept every module it ever loaded would
//!   exhaust them. The cache shares a module while any [`LoadedModule`] clone or
//!   [`WasmBehaviour`] of it exists, keeps the [`EngineConfig::idle_modules`] most recently
//!   released ones (default 32) so that restarting an agent does not recompile, and drops the
//!   rest; loading a dropped module again compiles it again. An
//!   [`AgentSystem`](crate::AgentSystem) keeps the bytes of the modules added to it (in its
//!   vault, or in memory without a journal) for that.
//! - **Fuel** on every call, reported by [`Behaviour::last_cost`](crate::Behaviour::last_cost)
//!   (deterministic for a given instance state and input) and optionally limited.
//! - **Epoch interruption** for per-call wall-clock deadlines, cheaper than fuel for that job:
//!   the ticker only bumps a counter. The ticker advances the epoch by the ticks real time says
//!   have passed (a late wakeup catches up), and when a store's epoch deadline comes the call's
//!   own clock decides whether to stop it or let it run the time left, so deadlines hold on a
//!   loaded machine (the bound is on [`AgentLimits::deadline`]).
//! - NaN canonicalisation and deterministic relaxed SIMD, because replay compares snapshots.
//!
//! Guest calls run inline on the calling thread (the agent actor's task): the agent's
//! [`Host`](crate::Host) is an owned value that moves into the store's data for the call and
//! comes back after, so imports reach it through `Caller::data_mut` with no thread hand-off
//! (wasmtime's model). A guest call is bounded by its deadline; see the agent module's docs
//! for how long calls are kept from starving other agents.

mod abi;
mod engine;
mod error;
mod imports;
mod instance;

pub use abi::{PARAMS_SECTION, TUNABLES_SECTION};
pub use engine::{EngineConfig, LoadedModule, WasmHost, custom_sections};
pub use error::LoadError;
pub use instance::{AgentLimits, Capabilities, SpawnError, WasmBehaviour};
