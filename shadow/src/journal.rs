//! The agent's journal as the gate and the shadows' catch-up read it: the agent system's one
//! step reader with its decision table's gate column
//! ([`Purpose::Gate`](arbor_agent::agent::Purpose::Gate)), so the arbiter passes over exactly
//! the steps recovery and rollback pass over, by construction.

use arbor_agent::agent::{Action, Purpose, Step, decide};
use arbor_agent::envelope::{Answer, Envelope, Status};
use arbor_agent::{AgentError, AgentSystem};
use arbor_wal::Lsn;

use crate::error::ShadowError;

/// One journaled input as the arbiter uses it.
#[derive(Debug)]
pub(crate) enum Read {
    /// An input production handled: compared when applied or refused, counted and passed over
    /// when it crashed (the table's `Compare` and `Skip` rows; both move the position).
    Handled {
        input: Envelope,
        status: Status,
        answers: Vec<Answer>,
    },
    /// What follows is not this module's history (a swap, a rebase, an orphan outcome).
    Stop(String),
}

/// `agent`'s inputs journaled after `from`, each with its position. Inputs never
/// acknowledged are passed over without moving the position (their numbers were given again).
pub(crate) fn read(
    system: &AgentSystem,
    agent: &str,
    from: Lsn,
) -> Result<impl Iterator<Item = Result<(Lsn, Read), ShadowError>>, ShadowError> {
    let steps = system.steps(agent, from).map_err(ShadowError::Journal)?;
    Ok(steps.filter_map(|next| {
        let (lsn, step) = match next {
            Ok(next) => next,
            Err(error) => return Some(Err(ShadowError::Journal(AgentError::Journal(error)))),
        };
        let action = decide(&step, Purpose::Gate);
        let read = match (action, step) {
            (
                Action::Compare | Action::Skip,
                Step::Handled {
                    input,
                    status,
                    answers,
                },
            ) => Read::Handled {
                input,
                status,
                answers,
            },
            (Action::Skip | Action::SkipUnacknowledged, Step::Unacknowledged(_)) => return None,
            (_, step) => Read::Stop(format!("the agent's history changes there ({step:?})")),
        };
        Some(Ok((lsn, read)))
    }))
}
