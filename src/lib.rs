//! arbor: supervised, journaled, hot-swappable Wasm agents for Rust hosts.
//!
//! The root crate re-exports the pieces a host needs; see `DESIGN.md` for the architecture.

pub use arbor_vault as vault;
pub use arbor_wal as wal;
