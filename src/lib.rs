//! arbor: supervised, journaled, hot-swappable Wasm agents for Rust hosts.
//!
//! The root crate re-exports the pieces a host needs; see `DESIGN.md` for the architecture.
//!
//! - [`agent`]: agents as ractor actors running Wasm modules or native behaviours, journaled
//!   into one WAL, checkpointed into the vault, recovered and hot-swapped
//!   ([`agent::AgentSystem`]).
//! - [`wal`]: the segmented write-ahead log.
//! - [`vault`]: checkpoints, modules, lineage and the agent registry.

pub use arbor_agent as agent;
pub use arbor_vault as vault;
pub use arbor_wal as wal;
