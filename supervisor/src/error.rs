//! What supervisor operations can fail with.

/// A supervisor operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// A child's start function failed; during a supervisor's start this fails the start.
    #[error("supervisor `{supervisor}`: child `{child}` failed to start: {reason}")]
    StartFailed {
        /// The supervisor.
        supervisor: String,
        /// The child.
        child: String,
        /// Why, as the start function said.
        reason: String,
    },
    /// The supervisor has no child with this id.
    #[error("supervisor `{supervisor}` has no child `{child}`")]
    UnknownChild {
        /// The supervisor.
        supervisor: String,
        /// The id asked for.
        child: String,
    },
    /// A child with this id already exists.
    #[error("supervisor `{supervisor}` already has a child `{child}`")]
    DuplicateChild {
        /// The supervisor.
        supervisor: String,
        /// The id.
        child: String,
    },
    /// The supervisor already has its maximum number of children.
    #[error("supervisor `{supervisor}` is full ({max} children)")]
    MaxChildren {
        /// The supervisor.
        supervisor: String,
        /// Its limit.
        max: usize,
    },
    /// The child is running (delete or restart needs a terminated child).
    #[error("supervisor `{supervisor}`: child `{child}` is running")]
    Running {
        /// The supervisor.
        supervisor: String,
        /// The child.
        child: String,
    },
    /// The supervisor has stopped (or is stopping).
    #[error("supervisor `{supervisor}` has stopped")]
    Stopped {
        /// The supervisor.
        supervisor: String,
    },
    /// The restart intensity's period is zero. OTP requires a positive period; a window of
    /// zero would forget every restart at once and so never reach the limit.
    #[error(
        "supervisor `{supervisor}`: the restart intensity period must be positive ({max_restarts} restarts in {period:?} is no limit at all)"
    )]
    InvalidIntensity {
        /// The supervisor.
        supervisor: String,
        /// The restarts it asked to allow.
        max_restarts: u32,
        /// The period it gave.
        period: std::time::Duration,
    },
    /// The supervisor actor could not be spawned.
    #[error("supervisor `{supervisor}` could not start: {reason}")]
    Spawn {
        /// The supervisor.
        supervisor: String,
        /// Why.
        reason: String,
    },
}
