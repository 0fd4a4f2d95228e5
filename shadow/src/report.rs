//! What an evaluation did, as the arbiter reports it: a [`Promotion`], a [`Rollback`], and the
//! [`VerdictDetail`] it keeps in the vault with a verdict.

use std::time::Duration;

use arbor_agent::BehaviourId;
use serde::{Deserialize, Serialize};

use crate::error::ShadowError;
use crate::gate::GateReport;
use crate::policy::{Decision, Tally};

/// A promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// The module replaced.
    pub from: BehaviourId,
    /// How long the agent's mailbox was paused.
    pub pause: Duration,
    /// The state carried over, in bytes.
    pub state_bytes: usize,
    /// The last input the previous module handled.
    pub seq: u64,
    /// The promotion checkpoint (the previous module's state), which a rollback restores.
    pub checkpoint_lsn: Option<u64>,
}

/// A rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// Why.
    pub reason: String,
    /// How long the agent's mailbox was paused.
    pub pause: Duration,
    /// Inputs replayed through the previous module since the promotion checkpoint.
    pub replayed: u64,
}

/// What the vault keeps as a verdict's [`Evidence::detail`](arbor_vault::Evidence::detail)
/// (MessagePack, named fields): decode it with [`VerdictDetail::decode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictDetail {
    /// The replay gate's report.
    pub gate: Option<GateReport>,
    /// The live comparison (empty if the gate failed).
    pub shadow: Tally,
    /// The verdict and the rules that decided it.
    pub decision: Decision,
}

impl VerdictDetail {
    /// Decodes a verdict's evidence detail.
    pub fn decode(detail: &[u8]) -> Result<VerdictDetail, ShadowError> {
        rmp_serde::from_slice(detail).map_err(ShadowError::VerdictDetail)
    }
}
