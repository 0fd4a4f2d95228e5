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
//! corrupt value, naming its sequence number). A [`Step`] is stored as its name (`"gate"`,
//! `"watch-passed"`, …), the same string records have held since steps were first written, so a
//! new step needs no format change: a build that does not know a name reads it as
//! [`Step::Other`]. Verdict evidence is deliberately loose ([`Evidence`]: a summary, string
//! fields, opaque MessagePack detail) until the arbiter fixes its structure.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::PoisonError;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
        /// Which step.
        step: Step,
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

/// A step of the arbiter's work on a candidate, as [`LineageEvent::Step`] records it.
///
/// Stored (and shown by `Display`) as its name, the string records held before steps were
/// typed; a name this build does not know — written by a newer build — reads as
/// [`Step::Other`], so the lineage always reads.
///
/// ```
/// use arbor_vault::Step;
///
/// assert_eq!(Step::WatchPassed.to_string(), "watch-passed");
/// assert_eq!(Step::from("rolling-back"), Step::RollingBack);
/// assert_eq!(Step::from("canary"), Step::Other("canary".into()));
/// assert!(Step::WatchCancelled.ends_watch() && !Step::Promoting.ends_watch());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// The replay gate started (`gate`).
    Gate,
    /// The shadows started on mirrored traffic (`shadows`).
    Shadows,
    /// The evaluation was cancelled before a verdict (`cancelled`).
    Cancelled,
    /// The swap to the candidate started (`promoting`).
    Promoting,
    /// The watch after a promotion ended without a regression (`watch-passed`).
    WatchPassed,
    /// The watch ended before it had the samples its rule asks for; the promotion is kept
    /// (`watch-incomplete`).
    WatchIncomplete,
    /// The watch could not go on; the promotion is kept (`watch-ended`).
    WatchEnded,
    /// The watch was cancelled; the promotion is kept (`watch-cancelled`).
    WatchCancelled,
    /// The host stopped during the watch; found when it started again (`watch-interrupted`).
    WatchInterrupted,
    /// A rollback started (`rolling-back`).
    RollingBack,
    /// The arbiter could not go on (`failed`).
    Failed,
    /// A person accepted a rejected candidate, with the reason in the step's detail; it then
    /// waits for promotion (`accepted`).
    Accepted,
    /// Where an admitted candidate came from: submitted (author and description), built from
    /// source, a configuration of parameters, a placebo (`origin`).
    Origin,
    /// A candidate was refused before evaluation (it did not build or load), with the reason
    /// in the detail (`refused`).
    Refused,
    /// A cycle of the evolution loop ended, with its summary in the detail (`cycle`).
    Cycle,
    /// A step this build does not know, by name (a newer build wrote it). Made with a known
    /// name, it reads back as that step.
    Other(String),
}

impl Step {
    /// Every step this build knows by name (all but [`Step::Other`]).
    pub const KNOWN: [Step; 15] = [
        Step::Gate,
        Step::Shadows,
        Step::Cancelled,
        Step::Promoting,
        Step::WatchPassed,
        Step::WatchIncomplete,
        Step::WatchEnded,
        Step::WatchCancelled,
        Step::WatchInterrupted,
        Step::RollingBack,
        Step::Failed,
        Step::Accepted,
        Step::Origin,
        Step::Refused,
        Step::Cycle,
    ];

    /// Its name, as stored.
    pub fn as_str(&self) -> &str {
        match self {
            Step::Gate => "gate",
            Step::Shadows => "shadows",
            Step::Cancelled => "cancelled",
            Step::Promoting => "promoting",
            Step::WatchPassed => "watch-passed",
            Step::WatchIncomplete => "watch-incomplete",
            Step::WatchEnded => "watch-ended",
            Step::WatchCancelled => "watch-cancelled",
            Step::WatchInterrupted => "watch-interrupted",
            Step::RollingBack => "rolling-back",
            Step::Failed => "failed",
            Step::Accepted => "accepted",
            Step::Origin => "origin",
            Step::Refused => "refused",
            Step::Cycle => "cycle",
            Step::Other(name) => name,
        }
    }

    /// Whether the step ends the watch of a promotion (the promotion is then no longer open).
    pub fn ends_watch(&self) -> bool {
        matches!(
            self,
            Step::WatchPassed
                | Step::WatchIncomplete
                | Step::WatchEnded
                | Step::WatchCancelled
                | Step::WatchInterrupted
        )
    }
}

impl From<&str> for Step {
    fn from(name: &str) -> Step {
        Step::KNOWN
            .into_iter()
            .find(|step| step.as_str() == name)
            .unwrap_or_else(|| Step::Other(name.to_string()))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Step, D::Error> {
        // Owned: a record's name may not be borrowable from the decoder's input.
        String::deserialize(deserializer).map(|name| Step::from(name.as_str()))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::Config;

    #[test]
    fn every_known_step_reads_back_from_its_name() {
        for step in Step::KNOWN {
            assert_eq!(Step::from(step.as_str()), step);
            assert_eq!(step.to_string(), step.as_str());
            let bytes = rmp_serde::to_vec_named(&step).unwrap();
            assert_eq!(rmp_serde::from_slice::<Step>(&bytes).unwrap(), step);
        }
        let other = Step::Other("canary-ramp".into());
        let bytes = rmp_serde::to_vec_named(&other).unwrap();
        assert_eq!(rmp_serde::from_slice::<Step>(&bytes).unwrap(), other);
    }

    /// `LineageEvent::Step` as it was while steps were strings.
    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum OldEvent {
        Step {
            agent: AgentId,
            candidate: ModuleHash,
            step: String,
            detail: String,
        },
    }

    #[derive(Serialize)]
    struct OldStored {
        at_ms: u64,
        event: OldEvent,
    }

    /// Records written while steps were strings read as typed steps; a name this build does not
    /// know reads as `Step::Other`.
    #[test]
    fn records_written_with_string_steps_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), Config::default()).unwrap();
        let agent = AgentId::new("kv").unwrap();
        let candidate = ModuleHash::of(b"v2");
        let names = ["gate", "watch-passed", "watch-interrupted", "canary-ramp"];
        for (seq, name) in (1u64..).zip(names) {
            let old = OldStored {
                at_ms: 7,
                event: OldEvent::Step {
                    agent: agent.clone(),
                    candidate,
                    step: name.into(),
                    detail: format!("{name} detail"),
                },
            };
            let body = rmp_serde::to_vec_named(&old).unwrap();
            let key = seq.to_be_bytes();
            let value = codec::encode(&key, Kind::LineageEvent, &body);
            vault.inner.lineage.insert(key, value).unwrap();
        }
        let steps: Vec<(Step, String)> = vault
            .lineage()
            .unwrap()
            .into_iter()
            .map(|record| match record.event {
                LineageEvent::Step { step, detail, .. } => (step, detail),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            steps,
            [
                (Step::Gate, "gate detail".to_string()),
                (Step::WatchPassed, "watch-passed detail".to_string()),
                (
                    Step::WatchInterrupted,
                    "watch-interrupted detail".to_string()
                ),
                (
                    Step::Other("canary-ramp".into()),
                    "canary-ramp detail".to_string()
                ),
            ]
        );
        // New appends write the same bytes an old build wrote.
        let record = vault
            .append_lineage(LineageEvent::Step {
                agent: agent.clone(),
                candidate,
                step: Step::WatchPassed,
                detail: "watch-passed detail".into(),
            })
            .unwrap();
        let stored = vault
            .inner
            .lineage
            .get(record.seq.to_be_bytes())
            .unwrap()
            .unwrap();
        let old = OldStored {
            at_ms: record.at_ms,
            event: OldEvent::Step {
                agent,
                candidate,
                step: "watch-passed".into(),
                detail: "watch-passed detail".into(),
            },
        };
        let old = rmp_serde::to_vec_named(&old).unwrap();
        assert_eq!(
            &stored[..],
            &codec::encode(&record.seq.to_be_bytes(), Kind::LineageEvent, &old)[..]
        );
    }
}
