//! The agent actor and the system it runs in.
//!
//! # The path of an input
//!
//! An agent is a ractor actor owning one [`Behaviour`](crate::Behaviour) and one live
//! [`Host`](crate::Host). For each input it:
//!
//! 1. refuses it, unjournaled, if it is larger than the agent's limit or not well-formed
//!    MessagePack;
//! 2. handles it: the behaviour gets the agent's host, which answers `now`, `random`, tools and
//!    sends and records each answer (sends are only queued);
//! 3. computes the outcome once — applied, refused or crashed;
//! 4. appends the input and its outcome (with the recorded answers) to the journal in **one**
//!    append, so an input costs one durability wait (group commit makes one fdatasync cover
//!    many agents' records);
//! 5. once that append is durable, answers the caller and performs the sends — in input order,
//!    while the actor already handles the next inputs.
//!
//! Nothing is answered or sent before the input and its outcome are durable, so a crash can
//! lose only inputs nobody was told about. (Before the records were appended together the
//! input went first, on its own; those data directories read the same, see
//! [`envelope`](crate::envelope).)
//!
//! # The owned host, and who may touch what
//!
//! Like wasmtime's `Store<T>`, which owns the embedder's data while a guest runs and hands it
//! back afterwards, the agent **owns** its [`Host`](crate::Host). A Wasm behaviour moves it into
//! its store's data for one `arbor_handle` call; the guest's imports reach it through
//! `Caller::data_mut`; it comes back when the call returns. No thread, channel or borrow sits
//! between a guest and its host, and the crate has no `unsafe`.
//!
//! - The **actor** alone touches its behaviour, its host, its sequence numbers and its
//!   checkpoint bookkeeping (they live in its state; messages are handled one at a time).
//! - The **completer** task of each agent only runs deliveries (replies and sends) once their
//!   records are durable, in order.
//! - The [`Journal`](journal) and the directory are shared by all agents and take their own
//!   locks, briefly (no lock is held across an await or a guest call).
//! - The [`JournalStore`] behind the journal is the seam to storage: the local WAL + vault
//!   today, a replicated log tomorrow; the actor, recovery, rollbacks and the arbiter's gate
//!   use nothing else (see its contract).
//!
//! # Where guest code runs
//!
//! A guest call runs on the agent actor's tokio task ([`GuestCalls::Inline`], the default):
//! no hand-off, so a call costs what the guest does. Every call is bounded by the agent's
//! deadline (epoch interruption), fuel and memory cap; a call that runs long holds its tokio
//! worker thread until it returns, which delays other agents' tasks on that worker. A host whose
//! agents have long calls by design chooses [`GuestCalls::BlockInPlace`]: the worker's other
//! tasks move to a fresh thread while the guest runs.
//!
//! # Checkpoints and recovery
//!
//! Every [`CheckpointPolicy`] interval the agent's snapshot goes to the checkpoint store,
//! zstd-compressed, with the journal position it covers; journal records before every agent's
//! pin are released, and agents that pin the oldest release point are asked to checkpoint
//! (see [`journal`]).
//!
//! Recovery ([`AgentSystem::recover`]) restores the newest valid checkpoint and reads the
//! agent's journal after it as [`steps()`]; one table, [`decide`], says what recovery, a rollback
//! or restore, and the evolution arbiter's replay gate each do with every kind of step, so they
//! agree by construction. Applied inputs are handled again with the recorded answers (no clock,
//! RNG, tool or send is touched); refused and crashed ones are skipped; an input without an
//! outcome was never acknowledged and is not applied; swaps replay as swaps.
//!
//! # Layout
//!
//! Dependencies point one way, from the leaves to the facade: `error` → `spec`, `journal`,
//! `mirror` → `steps`, `msg` → `agent_ref` → `directory`, `services` → `context` →
//! `recovery` → `actor` → `builder`, `system`, `registry`.

mod actor;
mod agent_ref;
mod builder;
mod context;
mod directory;
mod error;
pub mod journal;
#[cfg(test)]
mod layering;
mod mirror;
mod msg;
mod recovery;
mod registry;
mod services;
mod spec;
pub mod steps;
mod system;

pub use agent_ref::AgentRef;
pub use builder::{AgentSystemBuilder, DEFAULT_MAILBOX};
pub use directory::Elsewhere;
pub use error::{
    AgentError, JournalError, RecoveryError, ReplayError, StartError, SwapError, SystemError,
};
pub use journal::{Ack, CheckpointPolicy, JournalStore, Pending, Records};
pub use mirror::{Mirror, MirrorTap, Mirrored, MirroredStatus, Tapped, Verdict, Verification};
pub use msg::{AfterRestore, RebuildReport, RestoreFrom, StateCheck, SwapReport};
pub use recovery::RecoveryReport;
pub use services::{GuestCalls, NativeFactory};
pub use spec::AgentSpec;
pub use steps::{Action, Purpose, Step, StepKind, Steps, decide, steps};
pub use system::AgentSystem;
