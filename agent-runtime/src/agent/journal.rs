//! The runtime's one journal: the shared WAL every agent appends to, the vault its checkpoints
//! go to, and the release rule that keeps the WAL bounded.
//!
//! Release rule. Each agent pins the WAL at the older of its two newest checkpoints (the
//! vault's rule: should the newest checkpoint be damaged, recovery falls back to the older one
//! and replays from there). Segments wholly before every agent's pin are deleted, after the
//! vault is synced so the checkpoints behind the pins are on disk. An agent whose pin lies in
//! the oldest segment is asked to checkpoint, so an idle agent never holds the log forever.
//!
//! Holds. A promotion holds the WAL (and the agent's checkpoints) from its checkpoint until its
//! watch window ends, so a rollback can replay everything since; holds are not persistent (a
//! restart ends every watch).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbor_vault::{AgentId, Vault};
use arbor_wal::{Lsn, Wal};
use parking_lot::Mutex;

use super::error::AgentError;

/// When an agent checkpoints on its own: after `every_records` inputs or when `every` has
/// passed since its last checkpoint and it handles an input, whichever comes first. Agents that
/// pin the oldest WAL segment are also asked to checkpoint, busy or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Inputs between checkpoints.
    pub every_records: u64,
    /// Time between checkpoints of an agent that keeps receiving inputs.
    pub every: Duration,
    /// Checkpoints kept per agent (at least 2: the release rule needs the older one).
    pub keep: usize,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_records: 10_000,
            every: Duration::from_secs(60),
            keep: 3,
        }
    }
}

/// Where an agent pins the WAL.
#[derive(Debug, Clone, Copy)]
struct Pin {
    newest: Lsn,
    older: Option<Lsn>,
    /// A checkpoint request is on its way; do not ask again until it is done.
    asked: bool,
}

impl Pin {
    fn lsn(&self) -> Lsn {
        self.older.unwrap_or(self.newest)
    }
}

/// The WAL, the vault and the agents' pins.
pub(crate) struct Journal {
    pub(crate) wal: Wal,
    pub(crate) vault: Vault,
    pub(crate) policy: CheckpointPolicy,
    pins: Mutex<HashMap<String, Pin>>,
    holds: Mutex<HashMap<String, Lsn>>,
    /// When each agent journaled its oldest input no checkpoint holds yet.
    unsaved: Mutex<HashMap<String, Instant>>,
}

impl Journal {
    pub(crate) fn new(wal: Wal, vault: Vault, policy: CheckpointPolicy) -> Journal {
        Journal {
            wal,
            vault,
            policy,
            pins: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            unsaved: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps every record after `lsn` and every checkpoint of `agent` until [`unhold`].
    ///
    /// [`unhold`]: Journal::unhold
    pub(crate) fn hold(&self, agent: &str, lsn: Lsn) {
        self.holds.lock().insert(agent.into(), lsn);
    }

    /// Ends `agent`'s hold.
    pub(crate) fn unhold(&self, agent: &str) {
        self.holds.lock().remove(agent);
    }

    /// Whether `agent` holds the log.
    pub(crate) fn is_held(&self, agent: &str) -> bool {
        self.holds.lock().contains_key(agent)
    }

    /// Pins the WAL for `agent` from its stored checkpoints (at start-up and recovery); an agent
    /// without checkpoints pins everything.
    pub(crate) fn pin_from_vault(&self, agent: &AgentId) -> Result<(), AgentError> {
        let metas = self
            .vault
            .list_checkpoints(agent)
            .map_err(|e| AgentError::Vault(e.to_string()))?;
        let mut lsns: Vec<Lsn> = metas.iter().map(|m| m.lsn).collect();
        lsns.sort_unstable();
        let pin = match lsns.as_slice() {
            [] => Pin {
                newest: 0,
                older: None,
                asked: false,
            },
            [.., older, newest] => Pin {
                newest: *newest,
                older: Some(*older),
                asked: false,
            },
            [only] => Pin {
                newest: *only,
                older: None,
                asked: false,
            },
        };
        self.pins.lock().insert(agent.as_str().into(), pin);
        Ok(())
    }

    /// Notes that `agent` journaled an input its last checkpoint does not hold (the first one
    /// since counts).
    pub(crate) fn unsaved(&self, agent: &str) {
        self.unsaved
            .lock()
            .entry(agent.into())
            .or_insert_with(Instant::now);
    }

    /// How long the oldest input no checkpoint holds has waited, over all agents.
    pub(crate) fn oldest_unsaved(&self) -> Option<Duration> {
        self.unsaved.lock().values().min().map(Instant::elapsed)
    }

    /// Records a new checkpoint of `agent` at `lsn`.
    pub(crate) fn checkpointed(&self, agent: &str, lsn: Lsn) {
        self.unsaved.lock().remove(agent);
        let mut pins = self.pins.lock();
        let pin = pins.entry(agent.into()).or_insert(Pin {
            newest: lsn,
            older: None,
            asked: false,
        });
        // A promotion stores its checkpoint late, possibly after newer ones.
        if lsn > pin.newest {
            pin.older = Some(pin.newest);
            pin.newest = lsn;
        }
        pin.asked = false;
    }

    /// Notes that `agent` had nothing new to checkpoint (it may be asked again later).
    pub(crate) fn checkpoint_unchanged(&self, agent: &str) {
        if let Some(pin) = self.pins.lock().get_mut(agent) {
            pin.asked = false;
        }
    }

    /// Forgets `agent`'s pin (it stopped after a final checkpoint: none of its records is needed).
    pub(crate) fn unpin(&self, agent: &str) {
        self.pins.lock().remove(agent);
        self.unsaved.lock().remove(agent);
    }

    /// Deletes the WAL segments no agent needs and returns the agents that pin the oldest
    /// remaining one (each is returned once until it checkpoints again).
    pub(crate) fn release(&self) -> Result<Vec<String>, AgentError> {
        let firsts = self.wal.segment_first_lsns();
        let Some(&second) = firsts.get(1) else {
            return Ok(Vec::new());
        };
        let held = self.holds.lock().values().min().copied();
        let pinned = self.pins.lock().values().map(Pin::lsn).min();
        let lowest = match (pinned, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // No agents: nothing in the log is needed.
        let release_before = lowest.map_or(self.wal.last_lsn(), |lsn| lsn.saturating_add(1));
        let mut next_boundary = second;
        if release_before >= second {
            // The checkpoints behind the pins must be on disk before the records they replace go.
            self.vault
                .sync()
                .map_err(|e| AgentError::Vault(e.to_string()))?;
            self.wal
                .truncate_before(release_before)
                .map_err(|e| AgentError::Journal(e.to_string()))?;
            match self.wal.segment_first_lsns().get(1) {
                Some(&lsn) => next_boundary = lsn,
                None => return Ok(Vec::new()),
            }
        }
        // Asking an agent whose newest checkpoint is at the log's end would change nothing.
        let last = self.wal.last_lsn();
        let mut pins = self.pins.lock();
        Ok(pins
            .iter_mut()
            .filter(|(_, pin)| !pin.asked && pin.lsn() < next_boundary && pin.newest < last)
            .map(|(agent, pin)| {
                pin.asked = true;
                agent.clone()
            })
            .collect())
    }
}
