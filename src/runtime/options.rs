//! How a supervisor of the runtime's tree behaves ([`SupervisorOptions`]) and what happens to an
//! agent that cannot be recovered ([`RecoveryFailure`]).

// Named by the docs' links only.
#[cfg(doc)]
use crate::{Error, Runtime, RuntimeBuilder};

use std::time::Duration;

use arbor_supervisor::{Backoff, Intensity, Restart, Shutdown, Strategy};

/// How one supervisor of the runtime's tree behaves, and how it treats its agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorOptions {
    /// Which children restart together.
    pub strategy: Strategy,
    /// Restarts tolerated before the supervisor gives up and escalates.
    pub intensity: Intensity,
    /// A delay before restarts, if any.
    pub backoff: Option<Backoff>,
    /// The most children (agents and supervisors) it takes.
    pub max_children: Option<usize>,
    /// The restart type of its agents.
    pub agent_restart: Restart,
    /// How its agents are stopped (a graceful stop takes a final checkpoint).
    pub agent_shutdown: Shutdown,
}

impl Default for SupervisorOptions {
    /// `one_for_one`, at most 10 restarts in 10 s (a pool of many agents; OTP's 1 in 5 s suits a
    /// supervisor of a few workers), no backoff, no limit; agents are `transient` (restarted
    /// after a crash or a kill, not after they were stopped on purpose) and stopped with a 5 s
    /// timeout.
    fn default() -> Self {
        SupervisorOptions {
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 10,
                period: Duration::from_secs(10),
            },
            backoff: None,
            max_children: None,
            agent_restart: Restart::Transient,
            agent_shutdown: Shutdown::Timeout(Duration::from_secs(5)),
        }
    }
}

/// What the runtime does with an agent whose state cannot be recovered — its checkpoint's
/// restore traps or runs past its deadline, its journal cannot be replayed, its module is
/// refused — when the host boots or when its supervisor restarts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RecoveryFailure {
    /// The host goes on without it: it is marked quarantined in the registry with the reason
    /// (shown by `arborctl agents`, counted by `arbor_agents{state="quarantined"}` and
    /// `arbor_agent_quarantines_total`, alerted on), its supervisor keeps it as terminated
    /// without counting a restart, and calls get [`Error::Quarantined`]. An operator restores
    /// it from an older checkpoint ([`Runtime::restore_agent`], `arborctl checkpoint restore`)
    /// or removes it ([`Runtime::remove_agent`], `arborctl agent remove`). Its journal is kept
    /// meanwhile: the WAL is not trimmed past its last checkpoint.
    #[default]
    Quarantine,
    /// The start fails: its supervisor counts a failed restart and retries, and gives up past
    /// its intensity — at boot, [`RuntimeBuilder::build`] fails naming the agent. One poisoned
    /// agent can then stop the whole host; choose it only where that is what you want.
    Escalate,
}
