//! The agents' journal: one [`JournalStore`] (the seam: the local WAL + vault, or nothing for
//! an ephemeral system, or a replicated log) and the rules that keep it bounded.
//!
//! Release rule. Each agent pins the journal at the older of its two newest checkpoints (the
//! vault's rule: should the newest checkpoint be damaged, recovery falls back to the older one
//! and replays from there). Records wholly before every agent's pin are released, after the
//! checkpoints behind the pins are durable. An agent whose pin lies before the first release
//! point is asked to checkpoint, so an idle agent never holds the log forever.
//!
//! History rule. Each agent also keeps the records of its last
//! [`CheckpointPolicy::history`] inputs behind a checkpoint, for the evolution arbiter's replay
//! gate — within [`CheckpointPolicy::history_max_bytes`] of log over all agents.
//!
//! Per-agent positions. A store whose positions are each agent's own (the cluster's,
//! [`JournalStore::positions_per_agent`]) has no shared log to cut: the release rule applies
//! to each agent alone — its records before the lowest of its pin, its hold and its history
//! checkpoint go ([`JournalStore::release_agent_before`]). Nobody is asked to checkpoint (an
//! idle agent holds back only its own few records). The history budget is shared equally:
//! each agent keeps history within [`CheckpointPolicy::history_max_bytes`] divided by the
//! number of pinned agents ([`JournalStore::history_floor`]), so all agents together stay
//! within it, as in the shared log.
//!
//! Holds. A promotion holds the journal (and the agent's checkpoints) from its checkpoint until
//! its watch window ends, so a rollback can replay everything since; holds are not persistent
//! (a restart ends every watch).

mod ephemeral;
mod local;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbor_vault::{AgentId, CheckpointMeta, NewCheckpoint, Vault};
use arbor_wal::{Lsn, Wal};
use parking_lot::Mutex;

pub(crate) use ephemeral::Ephemeral;
pub(crate) use local::LocalStore;
pub use store::{Ack, JournalStore, Pending, Records};

use super::error::JournalError;

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
    /// Inputs of each agent the journal keeps behind its newest checkpoint, with a checkpoint
    /// to replay them from, for the evolution arbiter's replay gate (a candidate is compared on
    /// this much recorded history before it meets live traffic). 0 keeps only what recovery
    /// needs.
    pub history: u64,
    /// The most log kept for history, all agents together (rounded up to whole segments): older
    /// segments go once recovery does not need them, so agents that go idle do not hold the
    /// log for ever.
    pub history_max_bytes: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_records: 10_000,
            every: Duration::from_secs(60),
            keep: 3,
            history: 5_000,
            history_max_bytes: 256 << 20,
        }
    }
}

/// Where an agent pins the journal.
#[derive(Debug, Clone, Copy)]
struct Pin {
    newest: Lsn,
    older: Option<Lsn>,
    /// The checkpoint its kept history starts from ([`CheckpointPolicy::history`]).
    history: Option<Lsn>,
    /// A checkpoint request is on its way; do not ask again until it is done.
    asked: bool,
}

impl Pin {
    /// Where recovery may need the log from (the older of the two newest checkpoints).
    fn lsn(&self) -> Lsn {
        self.older.unwrap_or(self.newest)
    }
}

/// The store and the agents' pins, holds and unsaved inputs.
pub(crate) struct Journal {
    store: Arc<dyn JournalStore>,
    pub(crate) policy: CheckpointPolicy,
    pins: Mutex<HashMap<String, Pin>>,
    holds: Mutex<HashMap<String, Lsn>>,
    /// When each agent journaled its oldest input no checkpoint holds yet.
    unsaved: Mutex<HashMap<String, Instant>>,
}

impl Journal {
    pub(crate) fn new(store: Arc<dyn JournalStore>, policy: CheckpointPolicy) -> Journal {
        Journal {
            store,
            policy,
            pins: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            unsaved: Mutex::new(HashMap::new()),
        }
    }

    /// The store underneath.
    pub(crate) fn store(&self) -> &dyn JournalStore {
        &*self.store
    }

    /// Whether records and checkpoints outlive the process.
    pub(crate) fn is_durable(&self) -> bool {
        self.store.is_durable()
    }

    /// The local WAL, if that is the store.
    pub(crate) fn wal(&self) -> Option<&Wal> {
        self.store.wal()
    }

    /// The local vault (registry, modules, lineage), if the system has one.
    pub(crate) fn vault(&self) -> Option<&Vault> {
        self.store.vault()
    }

    /// Appends `agent`'s records in order, in one durability wait.
    pub(crate) fn append(&self, agent: &str, records: &[&[u8]]) -> Result<Ack, JournalError> {
        self.store.append(agent, records)
    }

    /// The last position written that may hold a record of `agent` (where a checkpoint of
    /// its current state goes).
    pub(crate) fn last_of(&self, agent: &str) -> Lsn {
        self.store.last_of(agent)
    }

    /// Stores `state` as `agent`'s checkpoint at `lsn` (at or before the journal's end, after
    /// every record of the agent the state holds), once the journal is durable up to there: a
    /// checkpoint must never claim records a crash could still lose (their positions would be
    /// reused, and replay would skip the new records).
    pub(crate) async fn store_checkpoint(
        &self,
        checkpoint: &NewCheckpoint<'_>,
    ) -> Result<Lsn, JournalError> {
        let started = Instant::now();
        self.store.sync().await?;
        self.store.put_checkpoint(checkpoint)?;
        self.checkpointed(checkpoint.agent.as_str(), checkpoint.lsn);
        metrics::counter!(arbor_metrics::CHECKPOINTS).increment(1);
        metrics::histogram!(arbor_metrics::CHECKPOINT_BYTES).record(checkpoint.state.len() as f64);
        metrics::histogram!(arbor_metrics::CHECKPOINT_SECONDS).record(started.elapsed());
        Ok(checkpoint.lsn)
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

    /// Pins the journal for `agent` from its stored checkpoints (at start-up and recovery); an
    /// agent without checkpoints pins everything.
    pub(crate) fn pin_from_store(&self, agent: &AgentId) -> Result<(), JournalError> {
        let metas = self.store.list_checkpoints(agent)?;
        let mut lsns: Vec<Lsn> = metas.iter().map(|m| m.lsn).collect();
        lsns.sort_unstable();
        let history = metas
            .iter()
            .max_by_key(|m| m.lsn)
            .and_then(|newest| self.history_from(&metas, newest.seq));
        let (newest, older) = match lsns.as_slice() {
            [] => (0, None),
            [.., older, newest] => (*newest, Some(*older)),
            [only] => (*only, None),
        };
        self.pins.lock().insert(
            agent.as_str().into(),
            Pin {
                newest,
                older,
                history,
                asked: false,
            },
        );
        Ok(())
    }

    /// The checkpoint an agent at input `seq` keeps its history from: the newest with at
    /// least [`CheckpointPolicy::history`] of its inputs after it, or its oldest while it has
    /// fewer.
    pub(crate) fn history_from(&self, metas: &[CheckpointMeta], seq: u64) -> Option<Lsn> {
        if self.policy.history == 0 {
            return None;
        }
        let enough = seq.saturating_sub(self.policy.history);
        metas
            .iter()
            .filter(|m| m.seq <= enough)
            .max_by_key(|m| m.lsn)
            .or_else(|| metas.iter().min_by_key(|m| m.lsn))
            .map(|m| m.lsn)
    }

    /// Keeps `agent`'s newest checkpoints and the one its history starts from (which it then
    /// pins); a held agent keeps everything.
    pub(crate) fn retain(&self, agent: &AgentId, seq: u64) -> Result<(), JournalError> {
        if self.is_held(agent.as_str()) {
            return Ok(());
        }
        let metas = self.store.list_checkpoints(agent)?;
        let history = self.history_from(&metas, seq);
        self.store
            .retain_checkpoints(agent, self.policy.keep.max(2), history)?;
        if let Some(pin) = self.pins.lock().get_mut(agent.as_str()) {
            pin.history = history;
        }
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
            history: None,
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

    /// Forgets `agent`'s pin (it stopped after a final checkpoint: none of its records is
    /// needed).
    pub(crate) fn unpin(&self, agent: &str) {
        self.pins.lock().remove(agent);
        self.unsaved.lock().remove(agent);
    }

    /// The release rule for a store with per-agent positions (see the module docs): each
    /// agent's records up to the lowest of its pin, its hold and its history checkpoint go.
    fn release_per_agent(&self) -> Result<(), JournalError> {
        let holds = self.holds.lock().clone();
        let pins: Vec<(String, Pin)> = self
            .pins
            .lock()
            .iter()
            .map(|(agent, pin)| (agent.clone(), *pin))
            .collect();
        let share = self.policy.history_max_bytes / (pins.len().max(1) as u64);
        for (agent, pin) in pins {
            // History is kept within the agent's share of the budget only (the floor is the
            // first position kept, so the bound is the one before it).
            let history = pin
                .history
                .map(|lsn| lsn.max(self.store.history_floor(&agent, share).saturating_sub(1)));
            let lowest = [Some(pin.lsn()), holds.get(&agent).copied(), history]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(0);
            self.store
                .release_agent_before(&agent, lowest.saturating_add(1))?;
        }
        Ok(())
    }

    /// Releases what no agent needs and returns the agents that pin the oldest remaining
    /// release point (each is returned once until it checkpoints again).
    pub(crate) fn release(&self) -> Result<Vec<String>, JournalError> {
        if self.store.positions_per_agent() {
            self.release_per_agent()?;
            return Ok(Vec::new());
        }
        let points = self.store.release_points();
        let Some(&second) = points.get(1) else {
            return Ok(Vec::new());
        };
        let held = self.holds.lock().values().min().copied();
        let (pinned, history) = {
            let pins = self.pins.lock();
            let pinned = pins.values().map(Pin::lsn).min();
            let history = pins.values().filter_map(|pin| pin.history).min();
            (pinned, history)
        };
        // History is kept within its budget of the newest release points only.
        let budget = self
            .policy
            .history_max_bytes
            .div_ceil(self.store.release_point_bytes().max(1))
            .max(1);
        let floor = usize::try_from(budget)
            .ok()
            .and_then(|budget| points.len().checked_sub(budget))
            .map_or(0, |oldest_kept| points[oldest_kept]);
        let history = history.map(|lsn| lsn.max(floor));
        let lowest = [pinned, held, history].into_iter().flatten().min();
        // No agents: nothing in the log is needed.
        let release_before = lowest.map_or(self.store.last(), |lsn| lsn.saturating_add(1));
        let mut next_boundary = second;
        if release_before >= second {
            // The checkpoints behind the pins must be durable before the records they replace
            // go.
            self.store.sync_checkpoints()?;
            self.store.release_before(release_before)?;
            match self.store.release_points().get(1) {
                Some(&lsn) => next_boundary = lsn,
                None => return Ok(Vec::new()),
            }
        }
        // Asking an agent whose newest checkpoint is at the log's end would change nothing.
        let last = self.store.last();
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
