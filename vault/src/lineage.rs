//! Lineage and decisions: an append-only record of module lineage (parent → candidate), the
//! arbiter's verdicts with their evidence, promotions and rollbacks.
//!
//! One tree, [`tree::LINEAGE`], keyed by a sequence number (u64 big-endian, from 1, without
//! gaps), so a forward scan reads events in the order they were appended. Appends are serialized
//! by a lock inside the vault: the next number is the last key + 1, written with one insert. The
//! value is a [`LineageRecord`]'s time and event, MessagePack with named fields.
//!
//! Extending it: new fields on an event are added with `#[serde(default)]` so older records still
//! read; a new event kind is a new variant (older builds report a record of an unknown kind as a
//! corrupt value, naming its sequence number). Verdict evidence is deliberately loose
//! ([`Evidence`]: a summary, string fields, opaque MessagePack detail) until the arbiter fixes its
//! structure.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use serde::{Deserialize, Serialize};

use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::ids::{AgentId, ModuleHash};
use crate::vault::{Vault, now_millis, tree};

/// One lineage or decision event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LineageEvent {
    /// A candidate module was admitted for `agent`, derived from `parent` (`None` for an agent's
    /// first module).
    ModuleAdmitted {
        /// The agent.
        agent: AgentId,
        /// The module the candidate derives from.
        parent: Option<ModuleHash>,
        /// The admitted candidate.
        candidate: ModuleHash,
    },
    /// The arbiter decided about a candidate.
    Verdict {
        /// The agent.
        agent: AgentId,
        /// The candidate judged.
        candidate: ModuleHash,
        /// The decision.
        verdict: Verdict,
        /// What it was based on.
        evidence: Evidence,
    },
    /// `to` replaced `from` as the agent's module; `checkpoint_lsn` is the checkpoint taken at
    /// the swap (rollback restores it).
    Promoted {
        /// The agent.
        agent: AgentId,
        /// The module before.
        from: ModuleHash,
        /// The module after.
        to: ModuleHash,
        /// The promotion checkpoint's LSN.
        checkpoint_lsn: u64,
    },
    /// A promotion was undone: the agent went back from `from` to `to`.
    RolledBack {
        /// The agent.
        agent: AgentId,
        /// The module rolled back.
        from: ModuleHash,
        /// The module restored.
        to: ModuleHash,
        /// Why.
        reason: String,
    },
    /// A step of the arbiter's work on a candidate (gate started, shadows started, watch
    /// ended, reconciled after a restart, …), so every step is on record.
    Step {
        /// The agent.
        agent: AgentId,
        /// The candidate (or, for a watch, the promoted module).
        candidate: ModuleHash,
        /// The step's name (`gate`, `shadows`, `promoting`, `watch-passed`, …).
        step: String,
        /// What happened, for people.
        #[serde(default)]
        detail: String,
    },
}

impl LineageEvent {
    /// The agent the event is about.
    pub fn agent(&self) -> &AgentId {
        match self {
            LineageEvent::ModuleAdmitted { agent, .. }
            | LineageEvent::Verdict { agent, .. }
            | LineageEvent::Promoted { agent, .. }
            | LineageEvent::RolledBack { agent, .. }
            | LineageEvent::Step { agent, .. } => agent,
        }
    }
}

/// The arbiter's decision about a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At least as good: may be promoted.
    Approved,
    /// Worse or broken: not promoted.
    Rejected,
    /// Not enough evidence either way.
    Inconclusive,
}

/// The evidence behind a verdict. Every field defaults to empty when absent, so the arbiter can
/// add structure later without breaking old records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// One line for people (`"2,000 samples, 0 mismatches, p99 -3%"`).
    #[serde(default)]
    pub summary: String,
    /// Named figures (`samples`, `mismatch_rate`, `p99_delta`), as text.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Anything else, as opaque MessagePack bytes the arbiter defines.
    #[serde(default, with = "codec::bytes")]
    pub detail: Vec<u8>,
}

/// An event as stored: its sequence number and time.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LineageRecord {
    /// Position in the lineage, from 1, without gaps.
    pub seq: u64,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The event.
    pub event: LineageEvent,
}

/// The stored value (the sequence number is the key).
#[derive(Serialize, Deserialize)]
struct Stored {
    at_ms: u64,
    event: LineageEvent,
}

fn render(seq: u64) -> String {
    format!("seq {seq}")
}

impl Vault {
    /// Appends an event and returns it as stored. Durable like a checkpoint: after a following
    /// [`Vault::flush`] against a process crash, [`Vault::sync`] against a power loss.
    ///
    /// ```
    /// use arbor_vault::{AgentId, Config, LineageEvent, ModuleHash, Vault};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let vault = Vault::open(dir.path(), Config::default())?;
    /// let agent = AgentId::new("kv")?;
    /// let record = vault.append_lineage(LineageEvent::ModuleAdmitted {
    ///     agent: agent.clone(),
    ///     parent: None,
    ///     candidate: ModuleHash::of(b"v1"),
    /// })?;
    /// assert_eq!(record.seq, 1);
    /// assert_eq!(vault.lineage_for(&agent)?, vec![record]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append_lineage(&self, event: LineageEvent) -> Result<LineageRecord> {
        let inner = &*self.inner;
        let stored = Stored {
            at_ms: now_millis(),
            event,
        };
        let body = codec::to_msgpack("lineage event", &stored)?;
        inner.config.check_size(
            || format!("lineage event for agent {}", stored.event.agent()),
            body.len(),
        )?;
        let _appending = inner
            .lineage_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last = inner
            .lineage
            .last()
            .map_err(Error::sled("last", tree::LINEAGE))?;
        let seq = match last {
            Some((key, _)) => seq_of(&key)? + 1,
            None => 1,
        };
        let key = seq.to_be_bytes();
        let value = codec::encode(&key, Kind::LineageEvent, &body);
        inner
            .lineage
            .insert(key, value)
            .map_err(Error::sled("insert", tree::LINEAGE))?;
        Ok(LineageRecord {
            seq,
            at_ms: stored.at_ms,
            event: stored.event,
        })
    }

    /// Every lineage event, in order.
    pub fn lineage(&self) -> Result<Vec<LineageRecord>> {
        self.lineage_from(1)
    }

    /// Lineage events with sequence number ≥ `seq`, in order (to follow the lineage: pass the
    /// last seen number + 1).
    pub fn lineage_from(&self, seq: u64) -> Result<Vec<LineageRecord>> {
        self.inner
            .lineage
            .range(seq.to_be_bytes()..)
            .map(|item| {
                let (key, value) = item.map_err(Error::sled("scan", tree::LINEAGE))?;
                decode_record(&key, &value)
            })
            .collect()
    }

    /// The lineage events about `agent`, in order.
    pub fn lineage_for(&self, agent: &AgentId) -> Result<Vec<LineageRecord>> {
        let mut out = self.lineage()?;
        out.retain(|r| r.event.agent() == agent);
        Ok(out)
    }
}

fn seq_of(key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| {
            Error::corrupt(
                tree::LINEAGE,
                format!("{:?}", String::from_utf8_lossy(key)),
                "key is not an 8-byte sequence number",
            )
        })
}

fn decode_record(key: &[u8], value: &[u8]) -> Result<LineageRecord> {
    let seq = seq_of(key)?;
    let body = codec::decode(
        tree::LINEAGE,
        key,
        || render(seq),
        Kind::LineageEvent,
        value,
    )?;
    let stored: Stored = codec::from_msgpack(tree::LINEAGE, || render(seq), body)?;
    Ok(LineageRecord {
        seq,
        at_ms: stored.at_ms,
        event: stored.event,
    })
}
