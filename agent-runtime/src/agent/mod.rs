//! The agent actor and the system it runs in.
//!
//! An agent is a ractor actor owning one [`Behaviour`](crate::Behaviour). For each input it:
//!
//! 1. refuses it, unjournaled, if it is larger than the agent's limit or not well-formed
//!    MessagePack;
//! 2. appends it to the system's one WAL as [`Entry::Input`](crate::envelope::Entry) — before
//!    handling it;
//! 3. handles it with a [`Host`](crate::Host) that answers `now`, `random`, tools and sends
//!    and records each answer;
//! 4. appends the [`Entry::Outcome`](crate::envelope::Entry): applied, refused or crashed, with
//!    the recorded answers;
//! 5. once the outcome is durable under the WAL's policy, answers the caller and performs the
//!    sends — in input order, while the actor already handles the next inputs (group commit
//!    makes one fdatasync cover many agents' records).
//!
//! Every [`CheckpointPolicy`] interval the agent's snapshot goes to the vault, zstd-compressed,
//! with the WAL position it covers; WAL segments before every agent's pin are deleted, and
//! agents that pin the oldest segment are asked to checkpoint (see [`journal`]).
//!
//! Recovery ([`AgentSystem::recover`]) restores the newest valid checkpoint and replays the
//! agent's records after it: inputs with an `Applied` outcome are handled again with the
//! recorded answers (no clock, RNG, tool or send is touched), refused and crashed ones are
//! skipped, and an input without an outcome (the crash came before it was acknowledged) is not
//! applied. Swaps replay as swaps.

mod actor;
mod agent_ref;
mod error;
mod history;
mod host;
pub(crate) mod journal;
mod mirror;
mod recovery;
mod system;

pub use agent_ref::{AfterRestore, AgentRef, RebuildReport, RestoreFrom, StateCheck, SwapReport};
pub use error::AgentError;
pub use history::{History, Journaled, history};
pub use host::ReplayHost;
pub use journal::CheckpointPolicy;
pub use mirror::{Mirror, MirrorTap, Mirrored, MirroredStatus, Tapped, Verdict, Verification};
pub use recovery::RecoveryReport;
pub use system::{AgentSpec, AgentSystem, AgentSystemBuilder, DEFAULT_MAILBOX, NativeFactory};
