//! What the admin API answers, as JSON: the same types serve the HTTP endpoint, `arborctl`'s
//! offline mode and `arborctl --json`, so scripts see one shape whichever way they ask.

use std::collections::BTreeMap;

use arbor_agent::AfterRestore;
use arbor_shadow::EvaluationStatus;
use serde::{Deserialize, Serialize};

/// The host (or the data directory, offline) at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// arbor's version.
    pub version: String,
    /// `online` (a running host answered) or `offline` (read from a stopped host's directory).
    pub mode: String,
    /// The data directory.
    pub data_dir: Option<String>,
    /// Why the runtime stopped, if it has (its root supervisor gave up).
    pub stopped: Option<String>,
    /// Agents by state (`running`, `restarting`, `terminated`; offline: `registered`,
    /// `stopped`).
    pub agents: BTreeMap<String, usize>,
    /// The WAL.
    pub wal: WalStatus,
    /// Modules stored in the vault.
    pub modules: usize,
    /// The vault's size on disk.
    pub vault_bytes: u64,
    /// Evaluations not yet over, by agent: their stage.
    pub evaluations: BTreeMap<String, String>,
}

/// The WAL's extent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalStatus {
    /// The oldest LSN kept.
    pub first_lsn: u64,
    /// The newest LSN written.
    pub last_lsn: u64,
    /// The newest LSN on disk.
    pub durable_lsn: u64,
    /// Segment files.
    pub segments: usize,
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRow {
    /// Its name.
    pub name: String,
    /// The supervisors above it, from the root (`root/pool`); empty offline when unknown.
    pub supervisor: String,
    /// `running`, `restarting`, `terminated`, `quarantined` (online) or `registered` /
    /// `stopped` / `terminated` / `quarantined` (offline).
    pub state: String,
    /// What runs it (`wasm:<hash>` or `native:<name>`).
    pub module: String,
    /// Its last input's number, when it runs.
    pub seq: Option<u64>,
    /// Restarts by its supervisor, online.
    pub restarts: Option<u64>,
    /// Inputs waiting in its mailbox, when it runs.
    pub queued: Option<usize>,
    /// Why it is not running, when the registry says (`quarantined`: its state could not be
    /// recovered; `terminated`: a temporary agent that exited).
    #[serde(default)]
    pub reason: Option<String>,
}

/// An agent removed by `arborctl agent remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The agent.
    pub agent: String,
}

/// One stored checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRow {
    /// The agent.
    pub agent: String,
    /// The WAL position it covers (its name).
    pub lsn: u64,
    /// The agent's last input in it.
    pub seq: u64,
    /// The module that wrote it.
    pub module: String,
    /// When it was stored, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// State size before compression.
    pub bytes: u64,
    /// State size stored (zstd).
    pub compressed_bytes: u64,
    /// BLAKE3 of the state, hex.
    pub checksum: String,
}

/// A checkpoint with its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointShow {
    /// What the vault knows of it.
    pub checkpoint: CheckpointRow,
    /// The state decoded as MessagePack, if it is (most modules' states are).
    pub state: Option<serde_json::Value>,
}

/// Where a restore takes its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreSource {
    /// The agent's checkpoint at this LSN, in the vault.
    Stored {
        /// Its LSN.
        lsn: u64,
    },
    /// An exported checkpoint file (the request carries its bytes).
    File,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreDone {
    /// The agent.
    pub agent: String,
    /// The state restored: the checkpoint's LSN.
    pub from_lsn: u64,
    /// Replay or discard of the inputs after it.
    pub after: AfterRestore,
    /// Inputs replayed.
    pub replayed: u64,
    /// The checkpoint holding the restored state (recovery starts there).
    pub checkpoint_lsn: u64,
    /// How long the agent was paused, in microseconds.
    pub pause_us: u64,
}

/// A WAL check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalVerify {
    /// Whether nothing is wrong.
    pub clean: bool,
    /// Valid records.
    pub records: u64,
    /// The oldest LSN kept.
    pub first_lsn: Option<u64>,
    /// The newest valid LSN.
    pub last_lsn: Option<u64>,
    /// Each segment: file, first LSN, records, bytes.
    pub segments: Vec<WalSegment>,
    /// What is wrong, in log order.
    pub problems: Vec<String>,
}

/// One WAL segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSegment {
    /// Its file name.
    pub file: String,
    /// Its first LSN.
    pub first_lsn: u64,
    /// Valid records in it.
    pub records: u64,
    /// Its size.
    pub bytes: u64,
}

/// One WAL record, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    /// Its LSN.
    pub lsn: u64,
    /// The agent it belongs to.
    pub agent: String,
    /// `input`, `outcome`, `swap`, `rebase`, or `unknown` (not an agent record).
    pub entry: String,
    /// The agent's input number it concerns.
    pub seq: Option<u64>,
    /// The rest, for people (payloads rendered from MessagePack, cut short).
    pub detail: String,
}

/// One stored module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRow {
    /// Its content hash (hex), which names it.
    pub hash: String,
    /// Its label.
    pub name: String,
    /// Size of the Wasm bytes.
    pub bytes: u64,
    /// When it was added, ms since the Unix epoch.
    pub added_at_ms: u64,
    /// Who added it.
    pub origin: String,
}

/// One lineage event of an agent: admissions, verdicts with their evidence, promotions,
/// rollbacks and the arbiter's steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineageRow {
    /// Its position in the vault's lineage.
    pub seq: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// `admitted`, `verdict`, `promoted`, `rolled_back` or `step`.
    pub event: String,
    /// The candidate (or promoted module) it concerns, hex.
    pub module: String,
    /// One line for people.
    pub summary: String,
    /// A verdict's named figures.
    pub fields: BTreeMap<String, String>,
    /// A verdict's full evidence (gate report, shadow tally with diverging inputs, decision).
    pub evidence: Option<serde_json::Value>,
}

/// Who submitted a candidate and why, kept in the lineage and the evolution archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitter {
    /// Who: a person or a program.
    pub author: String,
    /// What the candidate is meant to change.
    pub description: String,
}

/// One candidate in an agent's evolution archive, as `arborctl evolve tree` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveRow {
    /// The module (or, refused, a hash of what was offered), hex.
    pub module: String,
    /// The modules it derives from, hex.
    pub parents: Vec<String>,
    /// `production`, `submitted`, `built`, `params` or `placebo`.
    pub origin: String,
    /// Where it came from, for people.
    pub detail: String,
    /// Its generation (0 for the root).
    pub generation: u32,
    /// What it measured, per objective (the candidate's mean per input; `<name>.control` the
    /// control's).
    pub scores: BTreeMap<String, f64>,
    /// How far it got: `refused`, `admitted`, `gate`, `shadows`, `approved`, `promoted`.
    pub reached: String,
    /// Why it stopped there.
    pub reason: Option<String>,
    /// When the entry was last written, ms since the Unix epoch.
    pub at_ms: u64,
}

/// An evaluation, as `arborctl evolve status` shows it.
pub type Evaluation = EvaluationStatus;

/// The cluster as the answering node sees it, as `arborctl cluster status` shows it: its
/// nodes (live, draining, heartbeat age, agents owned) and every registered agent (state,
/// owner, lease epoch and time left, where placement puts it).
pub type Cluster = crate::ClusterStatus;

/// An error the admin API reports: its kind decides the HTTP status and `arborctl`'s exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// `unauthorized`, `not_found`, `bad_request`, `conflict`, `busy`, `failed` or
    /// `not_clustered`.
    pub kind: String,
    /// What went wrong, for people.
    pub error: String,
}
