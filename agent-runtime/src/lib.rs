//! Agent actors: the Wasm host and native behaviours.
//!
//! This crate is laid out by the workspace issue and filled in by its own issue; see
//! `DESIGN.md` for where it sits in arbor.

pub mod behaviour;
pub mod wasm;

pub use behaviour::{Behaviour, BehaviourError, Cost, Host, HostError};
