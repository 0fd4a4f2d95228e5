//! What the arbiter reports when it cannot do what was asked.

/// An arbiter error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShadowError {
    /// No running agent of that name.
    #[error("unknown agent `{0}`")]
    UnknownAgent(String),
    /// The candidate was refused (not a valid module, imports not granted, swap refused).
    #[error("refused: {0}")]
    Refused(String),
    /// The agent already has an evaluation under way.
    #[error("agent `{0}` already has an evaluation under way")]
    Busy(String),
    /// The limit on concurrent evaluations is reached.
    #[error("{0} evaluations are already running (the limit)")]
    TooManyEvaluations(usize),
    /// No evaluation of that agent is known.
    #[error("no evaluation of agent `{0}`")]
    NoEvaluation(String),
    /// Promotion asked for an evaluation not waiting for approval.
    #[error("agent `{agent}`'s evaluation is not awaiting approval (it is {stage})")]
    NotAwaitingApproval {
        /// The agent.
        agent: String,
        /// Where its evaluation is.
        stage: String,
    },
    /// Rollback asked for an agent whose promotion is not being watched (its checkpoint is no
    /// longer held).
    #[error("agent `{agent}` has no promotion under watch (it is {stage})")]
    NotWatching {
        /// The agent.
        agent: String,
        /// Where its evaluation is.
        stage: String,
    },
    /// The WAL could not be read.
    #[error("journal: {0}")]
    Journal(String),
    /// The vault failed.
    #[error("vault: {0}")]
    Vault(String),
    /// The configuration is not usable (a threshold out of range, …).
    #[error("configuration: {0}")]
    Config(String),
    /// A shadow could not be run.
    #[error("shadow: {0}")]
    Shadow(String),
}
