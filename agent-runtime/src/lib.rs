//! Agents: what an agent does ([`Behaviour`]), the world it reaches through ([`Host`]), the Wasm
//! host that runs agents written as core Wasm modules ([`wasm`]), and the agent actor that
//! journals, checkpoints, recovers and hot-swaps them ([`AgentSystem`], [`AgentRef`]).
//!
//! What this crate owns, and what it guarantees:
//!
//! - [`Behaviour`] is the one contract every agent implements, Wasm or native: handle a
//!   MessagePack input and return a MessagePack reply; snapshot and restore state as bytes. Its
//!   errors say whether the input was refused (the agent lives on) or the behaviour crashed (its
//!   instance is discarded and the agent is recovered from checkpoint and journal).
//! - [`Host`] is everything a behaviour may learn from outside itself while handling an input —
//!   time, randomness, tool results, whether a send was accepted. It is an owned value: the
//!   agent's live host records its answers; a replay host plays a recording back, which is what
//!   makes replay deterministic.
//! - [`wasm::WasmHost`] holds one shared wasmtime engine for the process and loads modules
//!   (checked against ABI v1, `modules/ABI.md`); [`wasm::WasmBehaviour`] is one agent's instance,
//!   with its own memory cap, deadline, fuel meter and granted capabilities. A hostile module
//!   gets an error, never the host's panic.
//! - [`AgentSystem`] runs agents as ractor actors over one journal (see the [`agent`] module for
//!   the path of a message, the owned host, checkpoints and recovery): **nothing is answered
//!   before the input and its outcome are durable**, and recovery restores exactly the
//!   acknowledged inputs. [`JournalStore`] is the seam to storage; [`tools`] are the host
//!   functions agents may be granted.
//!
//! Errors are typed ([`AgentError`], [`SystemError`] and their sources): the WAL's segment and
//! offset and the vault's tree and key survive to the caller.

pub mod agent;
pub mod behaviour;
pub mod envelope;
pub mod host;
pub mod limits;
pub mod report;
pub mod tools;
pub mod wasm;

pub use agent::{
    AfterRestore, AgentError, AgentRef, AgentSpec, AgentSystem, AgentSystemBuilder,
    CheckpointPolicy, DEFAULT_MAILBOX, Elsewhere, GuestCalls, JournalError, JournalStore, Mirror,
    MirrorTap, Mirrored, MirroredStatus, NativeFactory, RebuildReport, RecoveryError,
    RecoveryReport, RestoreFrom, StartError, StateCheck, SwapError, SwapReport, SystemError,
    Tapped, Verdict, Verification,
};
pub use behaviour::{Behaviour, BehaviourError, Cost, HostCalls, HostError};
pub use envelope::{BehaviourId, Envelope, Kind};
pub use host::{Host, ReplayHost};
