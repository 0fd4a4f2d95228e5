//! The runtime's error type.

use arbor_agent::{AgentError, SystemError};
use arbor_shadow::ShadowError;
use arbor_supervisor::SupervisorError;

/// What a [`Runtime`](crate::Runtime) operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// From an agent: unknown agent, full mailbox, timeout, refused or malformed input, crash,
    /// journal or vault failure, …
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// From the agent system as a whole (opening the journal, the engine, a module refused).
    #[error(transparent)]
    System(#[from] SystemError),
    /// From the supervision tree.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The agent exists but is between a crash and its restart; try again.
    #[error("agent `{0}` is restarting")]
    Restarting(String),
    /// The agent's state could not be recovered, so the host runs without it until an
    /// operator restores it from a checkpoint or removes it (see
    /// [`RecoveryFailure::Quarantine`](crate::RecoveryFailure::Quarantine)); retrying does not
    /// help.
    #[error("agent `{agent}` is quarantined: {reason}")]
    Quarantined {
        /// The agent.
        agent: String,
        /// Why its recovery failed.
        reason: String,
    },
    /// No supervisor at this path in the tree.
    #[error("no supervisor `{0}` in the tree")]
    UnknownSupervisor(String),
    /// A message or reply could not be (de)serialised.
    #[error("agent `{agent}`: {reason}")]
    Codec {
        /// The agent.
        agent: String,
        /// What failed.
        reason: String,
    },
    /// The metrics exporter could not start (another recorder is installed, or the address
    /// could not be bound).
    #[error("metrics: {0}")]
    Metrics(String),
    /// The admin endpoint could not start.
    #[error("admin endpoint: {0}")]
    Admin(String),
    /// The evolution arbiter could not start (its configuration, or its lineage).
    #[error("evolution")]
    Evolution(#[source] std::sync::Arc<ShadowError>),
    /// Cluster mode: joining the cluster, or the cluster's storage (leases, journal stream,
    /// registry) failed.
    #[error("cluster")]
    Cluster(#[source] std::sync::Arc<crate::cluster::ClusterError>),
    /// Cluster mode: the agent exists but has no reachable owner right now (it is moving
    /// between nodes, or its node died and its lease has not expired yet). Retrying later
    /// succeeds once it runs again; nothing was lost.
    #[error("agent `{agent}` is unavailable: {reason}")]
    Unavailable {
        /// The agent.
        agent: String,
        /// What the last attempt found.
        reason: String,
    },
    /// Cluster mode: the agent's owner on another node answered with an error.
    #[error("agent `{agent}` on `{node}`: {message}")]
    Remote {
        /// The agent.
        agent: String,
        /// The node that runs it.
        node: String,
        /// What kind of failure.
        kind: crate::cluster::RemoteFailure,
        /// The owner's error with its sources.
        message: String,
    },
    /// The runtime has stopped: shut down, or its root supervisor gave up.
    #[error("the runtime has stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn cluster(error: crate::cluster::ClusterError) -> Error {
        Error::Cluster(std::sync::Arc::new(error))
    }

    /// Whether retrying the same operation later may succeed: the agent is restarting, moving
    /// between nodes, or its mailbox was full. (A journal fenced by another owner refused the
    /// input before it was recorded; the agent is moving. A replicated store's failed append
    /// is not retryable: its outcome is unknown.)
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Restarting(_) | Error::Unavailable { .. } => true,
            Error::Remote { kind, .. } => kind.is_retryable(),
            Error::Agent(AgentError::MailboxFull { .. }) => true,
            Error::Agent(AgentError::Journal(arbor_agent::JournalError::Fenced { .. })) => true,
            _ => false,
        }
    }
}
