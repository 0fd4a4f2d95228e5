//! arbor: supervised, journaled, hot-swappable Wasm agents for Rust hosts.
//!
//! A host embeds a [`Runtime`]: one data directory (a WAL and a vault), one supervision tree of
//! agents, each a Wasm module or a native behaviour, reachable by name. See
//! `docs/architecture.md` for the architecture (the crates and what each owns, the path of a
//! message, the journal seam, recovery's and the arbiter's tables) and the [`Runtime`] docs for
//! a complete example.
//!
//! The pieces underneath are re-exported:
//!
//! - [`agent`]: agents as ractor actors running Wasm modules or native behaviours, journaled
//!   into one WAL, checkpointed into the vault, recovered and hot-swapped
//!   ([`agent::AgentSystem`]).
//! - [`shadow`]: the evolution arbiter — candidates for an agent's module replayed against the
//!   journal, shadowed on mirrored traffic beside an A/A control, judged by a stated rule,
//!   promoted, watched and rolled back ([`shadow::Arbiter`], over [`Runtime::system`]).
//! - [`supervisor`]: OTP supervision trees on ractor.
//! - [`wal`]: the segmented write-ahead log.
//! - [`vault`]: checkpoints, modules, lineage and the agent registry.

pub mod admin;
mod cluster;
mod error;
mod runtime;
mod telemetry;

pub use arbor_agent as agent;
pub use arbor_evolve as evolve;
pub use arbor_metrics as metrics;
pub use arbor_shadow as shadow;
pub use arbor_supervisor as supervisor;
pub use arbor_vault as vault;
pub use arbor_wal as wal;

pub use cluster::{
    AgentPlacement, ClusterError, ClusterOptions, ClusterStatus, NodeStatus, RemoteFailure,
};
pub use error::Error;
pub use runtime::{RecoveryFailure, Runtime, RuntimeBuilder, Spawn, Spawned, SupervisorOptions};
