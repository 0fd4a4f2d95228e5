//! Agents: what an agent does ([`Behaviour`]), the world it reaches through ([`Host`]), the Wasm
//! host that runs agents written as core Wasm modules ([`wasm`]), and the agent actor that
//! journals, checkpoints, recovers and hot-swaps them ([`AgentSystem`], [`AgentRef`]).
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
//! - [`AgentSystem`] runs agents as ractor actors over one journal (see the [`agent`] module for
//!   the path of a message, checkpoints and recovery); [`tools`] are the host functions agents
//!   may be granted.

pub mod agent;
pub mod behaviour;
pub mod envelope;
pub mod tools;
pub mod wasm;

pub use agent::{
    AfterRestore, AgentError, AgentRef, AgentSpec, AgentSystem, AgentSystemBuilder,
    CheckpointPolicy, DEFAULT_MAILBOX, Mirror, MirrorTap, Mirrored, MirroredStatus, NativeFactory,
    RebuildReport, RecoveryReport, ReplayHost, RestoreFrom, StateCheck, SwapReport, Tapped,
    Verdict, Verification,
};
pub use behaviour::{Behaviour, BehaviourError, Cost, Host, HostError};
pub use envelope::{BehaviourId, Envelope, Kind};
