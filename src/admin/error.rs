//! [`AdminError`]: what an admin operation fails with, as the wire and `arborctl` see it.

use arbor_agent::report::chain;
use arbor_agent::{AgentError, SystemError};
use arbor_evolve::EvolveError;
use arbor_shadow::ShadowError;

use super::api::ApiError;

/// What an admin operation can fail with; the kind decides the HTTP status and `arborctl`'s
/// exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No token, or a wrong one.
    #[error("unauthorized")]
    Unauthorized,
    /// No such agent, checkpoint, module or evaluation.
    #[error("{0}")]
    NotFound(String),
    /// The request makes no sense (a bad parameter, a file that is not an export).
    #[error("{0}")]
    BadRequest(String),
    /// Not now: the agent or evaluation is in a state that does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// A running host holds the data directory (offline mode), or the operation needs one.
    #[error("{0}")]
    Busy(String),
    /// The operation was tried and failed.
    #[error("{0}")]
    Failed(String),
    /// A cluster operation asked of a host that runs on its own (not built with
    /// `RuntimeBuilder::cluster`): there is no cluster to show.
    #[error("this host is not in cluster mode (it was not built with RuntimeBuilder::cluster)")]
    NotClustered,
}

impl AdminError {
    /// The kind's name, as the API reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            AdminError::Unauthorized => "unauthorized",
            AdminError::NotFound(_) => "not_found",
            AdminError::BadRequest(_) => "bad_request",
            AdminError::Conflict(_) => "conflict",
            AdminError::Busy(_) => "busy",
            AdminError::Failed(_) => "failed",
            AdminError::NotClustered => "not_clustered",
        }
    }
}

/// An error as the endpoint reported it, back to its kind (an unknown kind is a failure).
impl From<ApiError> for AdminError {
    fn from(error: ApiError) -> Self {
        let ApiError { kind, error } = error;
        match kind.as_str() {
            "unauthorized" => AdminError::Unauthorized,
            "not_found" => AdminError::NotFound(error),
            "bad_request" => AdminError::BadRequest(error),
            "conflict" => AdminError::Conflict(error),
            "busy" => AdminError::Busy(error),
            // The message is the variant's own; the endpoint's text adds nothing.
            "not_clustered" => AdminError::NotClustered,
            _ => AdminError::Failed(error),
        }
    }
}

// The wire carries text; each keeps its whole cause chain (the WAL's segment and offset, the
// vault's tree and key), not only the top layer's message.
impl From<AgentError> for AdminError {
    fn from(error: AgentError) -> Self {
        let text = chain(&error);
        match error {
            AgentError::UnknownAgent(_) => AdminError::NotFound(text),
            AgentError::Stopped(_) => AdminError::Conflict(text),
            AgentError::SwapRefused { .. } | AgentError::Running(_) => AdminError::Conflict(text),
            _ => AdminError::Failed(text),
        }
    }
}

impl From<SystemError> for AdminError {
    fn from(error: SystemError) -> Self {
        AdminError::Failed(chain(&error))
    }
}

impl From<crate::Error> for AdminError {
    fn from(error: crate::Error) -> Self {
        match error {
            crate::Error::Agent(error) => error.into(),
            crate::Error::Quarantined { .. } | crate::Error::Restarting(_) => {
                AdminError::Conflict(chain(&error))
            }
            _ => AdminError::Failed(chain(&error)),
        }
    }
}

impl From<ShadowError> for AdminError {
    fn from(error: ShadowError) -> Self {
        let text = chain(&error);
        match error {
            ShadowError::UnknownAgent(_)
            | ShadowError::InvalidAgent { .. }
            | ShadowError::NoEvaluation(_) => AdminError::NotFound(text),
            ShadowError::Busy(_)
            | ShadowError::TooManyEvaluations(_)
            | ShadowError::NotWatching { .. }
            | ShadowError::NotAwaitingApproval { .. }
            | ShadowError::NotRejected { .. } => AdminError::Conflict(text),
            ShadowError::Config(_) => AdminError::BadRequest(text),
            // The candidate itself: not a module, or importing what the agent lacks.
            error if error.is_refusal() => AdminError::BadRequest(text),
            _ => AdminError::Failed(text),
        }
    }
}

impl From<EvolveError> for AdminError {
    fn from(error: EvolveError) -> Self {
        let text = chain(&error);
        match error {
            EvolveError::Arbiter(error) => error.into(),
            EvolveError::Vault(error) => vault_error(error),
            EvolveError::BadSpace(_)
            | EvolveError::BadParams(_)
            | EvolveError::BadModule(_)
            | EvolveError::BadConfig(_) => AdminError::BadRequest(text),
            _ => AdminError::Failed(text),
        }
    }
}

pub(super) fn vault_error(error: arbor_vault::Error) -> AdminError {
    AdminError::Failed(format!("vault: {}", chain(&error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind survives the wire: what the endpoint reports is what the client returns.
    #[test]
    fn kinds_round_trip_through_the_wire() {
        let errors = [
            AdminError::Unauthorized,
            AdminError::NotFound("no agent".into()),
            AdminError::BadRequest("bad".into()),
            AdminError::Conflict("not now".into()),
            AdminError::Busy("busy".into()),
            AdminError::Failed("failed".into()),
            AdminError::NotClustered,
        ];
        for error in errors {
            let wire = ApiError {
                kind: error.kind().into(),
                error: error.to_string(),
            };
            let back = AdminError::from(wire);
            assert_eq!(back, error);
        }
        assert!(
            AdminError::NotClustered
                .to_string()
                .contains("not in cluster mode")
        );
    }
}
