//! What can go wrong talking to, starting, recovering or swapping an agent.
//!
//! Every error keeps its cause as a typed [`source`](std::error::Error::source): the WAL's
//! segment and offset, the vault's tree and key, the behaviour's own error. Callers match on
//! variants, never on text. Causes that are not `Clone` are shared (`Arc`), so an error can
//! be both returned and logged.

use std::sync::Arc;
use std::time::Duration;

use arbor_vault::ModuleHash;
use arbor_wal::Lsn;

use crate::behaviour::BehaviourError;
use crate::envelope::{BehaviourId, MsgpackError};
use crate::wasm::LoadError;

/// An agent operation's error. Every variant says which agent or input it is about where that
/// is known; none of them means the host process is in trouble.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No running agent has this name.
    #[error("no agent named `{0}`")]
    UnknownAgent(String),
    /// An agent with this name is running or has state in the vault (recover it instead).
    #[error("agent `{0}` already exists")]
    AlreadyExists(String),
    /// The name cannot name an agent (see `AgentId::new`).
    #[error("`{name}` cannot name an agent")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why not.
        #[source]
        source: Arc<arbor_vault::Error>,
    },
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
    #[error("malformed MessagePack for agent `{agent}`")]
    Malformed {
        /// The agent.
        agent: String,
        /// What is wrong with it.
        #[source]
        source: MsgpackError,
    },
    /// A message could not be serialised for the agent.
    #[error("agent `{agent}`: cannot serialise the message")]
    Encode {
        /// The agent.
        agent: String,
        /// Why.
        #[source]
        source: Arc<rmp_serde::encode::Error>,
    },
    /// The agent's reply is not what the caller expected.
    #[error("agent `{agent}`: unexpected reply")]
    Decode {
        /// The agent.
        agent: String,
        /// Why.
        #[source]
        source: Arc<rmp_serde::decode::Error>,
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
        #[source]
        reason: BehaviourError,
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
        #[source]
        reason: BehaviourError,
    },
    /// Writing, syncing or reading the journal failed; an input was not acknowledged.
    #[error("journal")]
    Journal(#[source] JournalError),
    /// The vault failed (checkpoint, registry or module store).
    #[error("vault")]
    Vault(#[source] Arc<arbor_vault::Error>),
    /// A failure of the system, not of one agent (the engine, opening the journal, adding a
    /// module).
    #[error(transparent)]
    System(#[from] SystemError),
    /// The agent could not be started: its module or native behaviour, its limits or its
    /// config were refused.
    #[error("cannot start agent `{agent}`")]
    Start {
        /// The agent.
        agent: String,
        /// Why.
        #[source]
        source: StartError,
    },
    /// The agent's state could not be rebuilt from its checkpoint and journal.
    #[error("cannot recover agent `{agent}`")]
    Recovery {
        /// The agent.
        agent: String,
        /// Why.
        #[source]
        source: RecoveryError,
    },
    /// The new behaviour refused the old one's state (or could not be made); the old behaviour
    /// keeps running, unchanged.
    #[error("swap refused for agent `{agent}`, the old behaviour keeps running")]
    SwapRefused {
        /// The agent.
        agent: String,
        /// Why.
        #[source]
        reason: SwapError,
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

impl From<arbor_vault::Error> for AgentError {
    fn from(error: arbor_vault::Error) -> Self {
        AgentError::Vault(Arc::new(error))
    }
}

impl From<JournalError> for AgentError {
    fn from(error: JournalError) -> Self {
        AgentError::Journal(error)
    }
}

impl AgentError {
    /// The WAL error underneath, if the journal failed there (e.g. to tell a data directory
    /// another process holds: [`arbor_wal::Error::Locked`]).
    pub fn wal_error(&self) -> Option<&arbor_wal::Error> {
        match self {
            AgentError::Journal(error) => error.wal_error(),
            AgentError::System(error) => error.wal_error(),
            _ => None,
        }
    }
}

/// A failure of an agent system as a whole, not tied to one agent.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SystemError {
    /// The Wasm engine could not be built.
    #[error("the Wasm engine cannot start")]
    Engine(#[source] LoadError),
    /// The journal (WAL and vault) in this directory could not be opened.
    #[error("cannot open the journal in {}", dir.display())]
    OpenJournal {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: JournalError,
    },
    /// A module was refused when it was added (ABI v1 checks, compilation).
    #[error("module `{name}` refused")]
    Module {
        /// The label it was added under.
        name: String,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// The journal failed outside any one agent's operation (syncing at shutdown, pinning at
    /// start-up).
    #[error("journal")]
    Journal(#[source] JournalError),
    /// The module or registry store failed.
    #[error("vault")]
    Vault(#[source] Arc<arbor_vault::Error>),
}

impl SystemError {
    /// The WAL error underneath, if the journal failed there (e.g. a data directory another
    /// process holds: [`arbor_wal::Error::Locked`]).
    pub fn wal_error(&self) -> Option<&arbor_wal::Error> {
        match self {
            SystemError::OpenJournal { source, .. } | SystemError::Journal(source) => {
                source.wal_error()
            }
            _ => None,
        }
    }
}

impl From<JournalError> for SystemError {
    fn from(error: JournalError) -> Self {
        SystemError::Journal(error)
    }
}

impl From<arbor_vault::Error> for SystemError {
    fn from(error: arbor_vault::Error) -> Self {
        SystemError::Vault(Arc::new(error))
    }
}

/// Why the journal failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The write-ahead log failed (its error names the segment and offset).
    #[error("write-ahead log")]
    Wal(#[source] Arc<arbor_wal::Error>),
    /// The checkpoint store failed.
    #[error("checkpoint store")]
    Vault(#[source] Arc<arbor_vault::Error>),
    /// A record is not a journal entry of this format.
    #[error("record {lsn} is not a journal entry")]
    NotAnEntry {
        /// Where it is.
        lsn: Lsn,
        /// Why it does not decode.
        #[source]
        source: Arc<rmp_serde::decode::Error>,
    },
    /// The records asked for have been released (a checkpoint holds them).
    #[error("the journal before {first} has been released (asked from {asked})")]
    Released {
        /// The first position kept.
        first: Lsn,
        /// The position asked for.
        asked: Lsn,
    },
    /// The store does not let this node append for the agent any more (another owns it).
    #[error("fenced: this node no longer owns agent `{agent}`")]
    Fenced {
        /// The agent.
        agent: String,
    },
    /// The agent's delivery task has stopped, so acknowledgements cannot be delivered.
    #[error("the delivery task stopped")]
    DeliveryStopped,
    /// A store other than the local WAL and vault failed (a replicated log, its checkpoint
    /// bucket): `what` says which operation, `source` why. The outcome of an append that
    /// failed so is unknown; it was not acknowledged.
    #[error("journal store: {what}")]
    Store {
        /// The operation and the agent.
        what: String,
        /// Why.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl JournalError {
    /// Whether the journal stopped taking this agent's records from this node until the node
    /// takes the agent over again: another node owns it ([`Fenced`](Self::Fenced)), or a
    /// replicated store's writer halted ([`Store`](Self::Store): an append whose outcome is
    /// unknown). Not the behaviour's fault: the agent stops here instead of crashing, and
    /// the cluster's owner re-acquires it (or another node does) rather than a supervisor
    /// restarting it into the same refusal until its restart intensity gives up.
    ///
    /// ```
    /// use arbor_agent::JournalError;
    /// let fenced = JournalError::Fenced { agent: "counter-7".into() };
    /// assert!(fenced.needs_takeover());
    /// assert!(!JournalError::DeliveryStopped.needs_takeover());
    /// ```
    pub fn needs_takeover(&self) -> bool {
        matches!(
            self,
            JournalError::Fenced { .. } | JournalError::Store { .. }
        )
    }

    /// The WAL error underneath, if the WAL failed.
    pub fn wal_error(&self) -> Option<&arbor_wal::Error> {
        match self {
            JournalError::Wal(error) => Some(error),
            _ => None,
        }
    }
}

impl From<arbor_wal::Error> for JournalError {
    fn from(error: arbor_wal::Error) -> Self {
        JournalError::Wal(Arc::new(error))
    }
}

impl From<arbor_vault::Error> for JournalError {
    fn from(error: arbor_vault::Error) -> Self {
        JournalError::Vault(Arc::new(error))
    }
}

/// Why an instance of a behaviour could not be made and initialised.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The module was refused or could not be instantiated.
    #[error("module")]
    Load(#[from] LoadError),
    /// No module with this hash is loaded or stored.
    #[error("no module {}", .0.short())]
    NoModule(ModuleHash),
    /// No native behaviour is registered under this name.
    #[error("no native behaviour `{0}`")]
    NoNative(String),
    /// The module's bytes could not be read from the vault.
    #[error("reading the module from the vault")]
    Vault(#[source] Arc<arbor_vault::Error>),
    /// `init` refused the config or crashed.
    #[error("init")]
    Init(#[source] BehaviourError),
    /// The first snapshot (for the first checkpoint) failed.
    #[error("snapshot")]
    Snapshot(#[source] BehaviourError),
    /// The actor could not be spawned.
    #[error("actor: {0}")]
    Actor(String),
}

/// Why an agent's state could not be rebuilt.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The system keeps no journal, so there is nothing to recover from.
    #[error("the system does not journal")]
    NoJournal,
    /// The agent has no checkpoint.
    #[error("no checkpoint")]
    NoCheckpoint,
    /// Every checkpoint failed verification.
    #[error("every checkpoint failed verification (at {0:?})")]
    NoValidCheckpoint(Vec<Lsn>),
    /// The checkpoint asked for is not stored (any more).
    #[error("no checkpoint at {0}")]
    CheckpointGone(Lsn),
    /// A behaviour could not be instantiated.
    #[error("instantiating {behaviour}")]
    Instantiate {
        /// What it was to run.
        behaviour: BehaviourId,
        /// Why not.
        #[source]
        source: StartError,
    },
    /// A behaviour refused (or crashed on) a checkpoint's or a swap's state.
    #[error("{behaviour} refused the state of {at}")]
    StateRefused {
        /// The behaviour.
        behaviour: BehaviourId,
        /// Which state (`checkpoint 42`, `the swap after input 7`, `the given state`).
        at: String,
        /// Its error.
        #[source]
        source: BehaviourError,
    },
    /// A snapshot (at a swap, or of the rebuilt state) failed.
    #[error("{behaviour} cannot snapshot")]
    Snapshot {
        /// The behaviour.
        behaviour: BehaviourId,
        /// Its error.
        #[source]
        source: BehaviourError,
    },
    /// An input applied live fails, or asks the host something else, when replayed.
    #[error("replay of input {seq}")]
    Replay {
        /// The input.
        seq: u64,
        /// What went wrong.
        #[source]
        source: ReplayError,
    },
    /// The journal holds an outcome whose input is missing: the records cannot be trusted.
    #[error("journal record {lsn}: outcome of input {seq} without the input")]
    Orphan {
        /// Where the outcome is.
        lsn: Lsn,
        /// Its input's number.
        seq: u64,
    },
    /// Reading the journal or the checkpoints failed.
    #[error("journal")]
    Journal(#[source] JournalError),
}

impl From<JournalError> for RecoveryError {
    fn from(error: JournalError) -> Self {
        RecoveryError::Journal(error)
    }
}

impl From<arbor_vault::Error> for RecoveryError {
    fn from(error: arbor_vault::Error) -> Self {
        RecoveryError::Journal(error.into())
    }
}

/// How replaying an input diverged from its journal record.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The behaviour asked the host other questions than it did live.
    #[error("diverged from the journal: {0}")]
    Diverged(String),
    /// It was applied live but fails now.
    #[error("applied live, fails in replay")]
    Failed(#[source] BehaviourError),
}

/// Why a swap, a rollback or a restore was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SwapError {
    /// The new behaviour could not be made.
    #[error("instantiating {behaviour}")]
    Instantiate {
        /// What was to run.
        behaviour: BehaviourId,
        /// Why not.
        #[source]
        source: StartError,
    },
    /// The new behaviour refused the state.
    #[error("{behaviour} refused the state")]
    StateRefused {
        /// The new behaviour.
        behaviour: BehaviourId,
        /// Its error.
        #[source]
        source: BehaviourError,
    },
    /// The swap's state check (e.g. the evolution arbiter's migration check) refused it.
    #[error("the migration check refused it: {0}")]
    Check(String),
    /// Rebuilding the state (rollback, restore) failed before anything changed.
    #[error("rebuilding the state")]
    Rebuild(#[source] RecoveryError),
    /// It needs a journal and the system keeps none.
    #[error("it needs a journal")]
    NoJournal,
    /// The journal refused the swap record.
    #[error("journal")]
    Journal(#[source] JournalError),
}
