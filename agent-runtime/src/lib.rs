//! Agents: what an agent does ([`Behaviour`]), the world it reaches through ([`Host`]), and the
//! Wasm host that runs agents written as core Wasm modules ([`wasm`]).
//!
//! - [`Behaviour`] is the one contract every agent implements, Wasm or native: handle a
//!   MessagePack input and return a MessagePack reply; snapshot and restore state as bytes. Its
//!   errors say whether the input was refused (the agent lives on) or the behaviour crashed (its
//!   instance is discarded and the agent is recovered from checkpoint and journal).
//! - [`Host`] is everything a behaviour may learn from outside itself while handling an input —
//!   time, randomness, tool results, whether a send was accepted. The agent records these answers
//!   while live and plays them back during replay, which is what makes replay deterministic.
//! - [`wasm::WasmHost`] holds one shared wasmtime engine for the process and loads modules
//!   (checked against ABI v1, `modules/ABI.md`); [`wasm::WasmBehaviour`] is one agent's instance,
//!   with its own memory cap, deadline, fuel meter and granted capabilities.
//!
//! The agent actor (journal before apply, checkpoints, recovery, hot swap) builds on these; see
//! `DESIGN.md`, "The path of one message".

pub mod behaviour;
pub mod wasm;

pub use behaviour::{Behaviour, BehaviourError, Cost, Host, HostError};
