//! What the arbiter reports when it cannot do what was asked.
//!
//! A failure beneath the arbiter keeps its type as the variant's `source` (the vault's
//! [`arbor_vault::Error`], the agent system's [`AgentError`], a panicked task's
//! [`JoinError`]); callers match on the variant, never on the text. The message still carries
//! the cause's own (`"vault: corrupt value in tree lineage at key seq 7: …"`), as `arbor_wal`'s
//! errors do, since `arborctl` and the admin API show the message alone.
//!
//! [`ShadowError::Refused`] is the one variant with a reason rather than a cause: the arbiter
//! refusing a candidate is a decision, and the reason it states is what a person reads.

use arbor_agent::AgentError;
use arbor_vault::AgentId;
use tokio::task::JoinError;

/// An arbiter error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShadowError {
    /// No running agent of that name.
    #[error("unknown agent `{0}`")]
    UnknownAgent(String),
    /// The name is not a valid agent id, so no agent has it.
    #[error("unknown agent `{agent}`: {source}")]
    InvalidAgent {
        /// The name given.
        agent: String,
        /// Why it is not an agent id.
        #[source]
        source: arbor_vault::Error,
    },
    /// The arbiter refused the candidate, for the reason it states: not a module the system
    /// can run, shadows that cannot run under the agent's limits, a swap that would lose data
    /// of production's state.
    #[error("refused: {0}")]
    Refused(String),
    /// The candidate imports what the agent was never granted.
    #[error("refused: the candidate's imports are not within `{agent}`'s grants: {source}")]
    NotGranted {
        /// The agent.
        agent: String,
        /// What instantiating it under the agent's grants said.
        #[source]
        source: arbor_agent::StartError,
    },
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
    /// Acceptance asked for an evaluation whose verdict is not a rejection.
    #[error(
        "agent `{agent}`'s evaluation is not rejected (it is {stage}): only a rejected candidate can be accepted"
    )]
    NotRejected {
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
    /// The journal could not be read.
    #[error("journal")]
    Journal(#[source] arbor_agent::AgentError),
    /// The system keeps no journal and no vault, so it has no lineage to show.
    #[error("the system does not journal, so it keeps no lineage")]
    NotJournaled,
    /// The vault failed.
    #[error("vault: {0}")]
    Vault(#[source] arbor_vault::Error),
    /// The configuration is not usable (a threshold out of range, …).
    #[error("configuration: {0}")]
    Config(String),
    /// The node running the evaluation's shadows was lost: no verdict on the candidate.
    #[error("the shadows' node was lost: {0}")]
    ShadowNode(#[source] crate::instance::InstanceError),
    /// The control shadow could not give its state for the gate's last state check.
    #[error("the control shadow cannot give its state: {0}")]
    Snapshot(#[source] crate::instance::InstanceError),
    /// The watch could not start, so the promotion was not attempted (production runs the
    /// module it ran).
    #[error("the watch could not start: {0}")]
    WatchNotStarted(String),
    /// The swap failed for another reason than the candidate's migration (refused, with
    /// [`ShadowError::Refused`]); production runs the module it ran.
    #[error("promotion failed: {0}")]
    Promotion(#[source] AgentError),
    /// The promotion kept no checkpoint, so there is nothing to roll back to.
    #[error("the promotion of `{0}` kept no checkpoint to roll back to")]
    NoCheckpoint(String),
    /// The rollback failed.
    #[error("rollback failed: {0}")]
    Rollback(#[source] AgentError),
    /// A verdict's evidence could not be encoded for the vault.
    #[error("the verdict's evidence cannot be encoded: {0}")]
    Evidence(#[source] rmp_serde::encode::Error),
    /// A verdict's stored detail does not decode as a
    /// [`VerdictDetail`](crate::VerdictDetail).
    #[error("verdict detail: {0}")]
    VerdictDetail(#[source] rmp_serde::decode::Error),
    /// A part of the arbiter's work panicked (a bug: it is reported, not propagated).
    #[error("the {task} panicked: {source}")]
    Panicked {
        /// Which part: `gate`, `shadows`.
        task: &'static str,
        /// The task's end.
        #[source]
        source: JoinError,
    },
}

impl ShadowError {
    /// Whether the candidate itself was refused (not a module, not under ABI v1, importing
    /// what the agent was not granted), rather than the arbiter being unable to go on.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ShadowError::Refused(_) | ShadowError::NotGranted { .. }
        )
    }
}

/// `agent` as the vault's id; a name no agent can have is [`ShadowError::InvalidAgent`].
pub(crate) fn agent_id(agent: &str) -> Result<AgentId, ShadowError> {
    AgentId::new(agent).map_err(|source| ShadowError::InvalidAgent {
        agent: agent.into(),
        source,
    })
}
