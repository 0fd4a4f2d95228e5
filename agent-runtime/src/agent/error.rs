//! What can go wrong talking to, starting or recovering an agent.

use std::time::Duration;

use crate::behaviour::BehaviourError;

/// An agent operation's error. Every variant says which agent or input it is about where that
/// is known; none of them means the host process is in trouble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No running agent has this name.
    #[error("no agent named `{0}`")]
    UnknownAgent(String),
    /// An agent with this name is running or has state in the vault (recover it instead).
    #[error("agent `{0}` already exists")]
    AlreadyExists(String),
    /// The message is larger than the agent accepts; it was refused before being journaled.
    #[error("message of {len} bytes exceeds agent `{agent}`'s maximum of {max}")]
    TooLarge {
        /// The agent.
        agent: String,
        /// The message's size.
        len: usize,
        /// The agent's maximum.
        max: usize,
    },
    /// The message is not one well-formed MessagePack value; it was refused before being
    /// journaled.
    #[error("malformed MessagePack for agent `{agent}`: {reason}")]
    Malformed {
        /// The agent.
        agent: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The behaviour refused the input (a message it does not understand); the agent is
    /// unchanged and lives on.
    #[error("agent `{agent}` refused input {seq}: {reason}")]
    Refused {
        /// The agent.
        agent: String,
        /// The input's number.
        seq: u64,
        /// The behaviour's reason.
        reason: String,
    },
    /// The behaviour crashed on this input (trap, deadline, fuel, memory cap); the agent has
    /// stopped and is recovered from its checkpoint and journal, without this input, when it is
    /// restarted.
    #[error("agent `{agent}` crashed on input {seq} from {from}: {reason}")]
    Crashed {
        /// The agent.
        agent: String,
        /// The offending input's number (its journal record names it too).
        seq: u64,
        /// Who sent it (`host` for the embedding host).
        from: String,
        /// What happened.
        reason: BehaviourError,
    },
    /// Writing or syncing the journal failed; the input was not acknowledged.
    #[error("journal: {0}")]
    Journal(String),
    /// The vault failed (checkpoint, registry or module store).
    #[error("vault: {0}")]
    Vault(String),
    /// The agent could not be started: its module or native behaviour, its limits or its
    /// config were refused.
    #[error("cannot start agent `{agent}`: {reason}")]
    Start {
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The agent's state could not be rebuilt from its checkpoint and journal.
    #[error("cannot recover agent `{agent}`: {reason}")]
    Recovery {
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The new behaviour refused the old one's state (or could not be made); the old behaviour
    /// keeps running, unchanged.
    #[error("swap refused for agent `{agent}`, the old behaviour keeps running: {reason}")]
    SwapRefused {
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The agent's mailbox holds as many inputs as it may; nothing was queued.
    #[error("agent `{agent}` has a full mailbox ({capacity} inputs waiting)")]
    MailboxFull {
        /// The agent.
        agent: String,
        /// Its mailbox capacity.
        capacity: usize,
    },
    /// The operation needs the agent not to be running (removing it, rebuilding it offline).
    #[error("agent `{0}` is running; stop it first")]
    Running(String),
    /// The agent stopped (or crashed) before answering.
    #[error("agent `{0}` stopped before answering")]
    Stopped(String),
    /// No answer within the caller's timeout (the input may still be handled).
    #[error("agent `{agent}` did not answer within {timeout:?}")]
    Timeout {
        /// The agent.
        agent: String,
        /// The timeout.
        timeout: Duration,
    },
}
