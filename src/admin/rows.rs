//! The rows the admin API answers with, made from the runtime's, the WAL's and the vault's
//! own types, and the small checks the operations share (a stopped host, an agent name).

use super::error::AdminError;
use std::fs::{File, TryLockError};
use std::path::Path;

use arbor_agent::envelope::Entry;
use arbor_shadow::compare::render;
use arbor_supervisor::ChildState;
use arbor_vault::{AgentId, AgentState, ArchiveEntry, Behaviour as Registered, CheckpointMeta};

use super::api::{ArchiveRow, CheckpointRow, WalRecord, WalSegment, WalVerify};

/// Refuses a directory that is not arbor's, or that a running host holds (its WAL lock).
pub(super) fn check_stopped_host(dir: &Path) -> Result<(), AdminError> {
    if !dir.join("wal").is_dir() || !dir.join("vault").is_dir() {
        return Err(AdminError::NotFound(format!(
            "{} is not an arbor data directory (no wal/ and vault/ in it)",
            dir.display()
        )));
    }
    let lock = dir.join("wal").join("LOCK");
    let Ok(file) = File::open(&lock) else {
        return Ok(());
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(AdminError::Busy(format!(
            "a running host holds {}; ask it through its admin endpoint (arborctl --admin ADDR \
             ...) or stop it first",
            dir.display()
        ))),
        Err(TryLockError::Error(error)) => {
            Err(AdminError::Failed(format!("{}: {error}", lock.display())))
        }
    }
}

pub(super) fn verified(report: &arbor_wal::VerifyReport) -> WalVerify {
    WalVerify {
        clean: report.is_clean(),
        records: report.records,
        first_lsn: report.first_lsn,
        last_lsn: report.last_lsn,
        segments: report
            .segments
            .iter()
            .map(|s| WalSegment {
                file: s
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                first_lsn: s.first_lsn,
                records: s.records,
                bytes: s.bytes,
            })
            .collect(),
        problems: report.problems.iter().map(|p| format!("{p:?}")).collect(),
    }
}

pub(super) fn agent_id(agent: &str) -> Result<AgentId, AdminError> {
    AgentId::new(agent).map_err(|e| AdminError::BadRequest(e.to_string()))
}

pub(super) fn no_checkpoint(agent: &str, lsn: u64) -> AdminError {
    AdminError::NotFound(format!("no checkpoint of `{agent}` at LSN {lsn}"))
}

pub(super) fn checkpoint_row(meta: &CheckpointMeta) -> CheckpointRow {
    CheckpointRow {
        agent: meta.agent.as_str().into(),
        lsn: meta.lsn,
        seq: meta.seq,
        module: meta.module.to_string(),
        created_at_ms: meta.created_at_ms,
        bytes: meta.uncompressed_bytes,
        compressed_bytes: meta.compressed_bytes,
        checksum: meta
            .state_checksum
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

pub(super) fn state_name(state: &ChildState) -> &'static str {
    match state {
        ChildState::Running => "running",
        ChildState::Restarting => "restarting",
        ChildState::Terminated { .. } => "terminated",
    }
}

pub(super) fn registry_state(state: AgentState) -> &'static str {
    match state {
        AgentState::Running => "registered",
        AgentState::Stopped => "stopped",
        AgentState::Terminated => "terminated",
        AgentState::Quarantined => "quarantined",
    }
}

pub(super) fn registered_behaviour(behaviour: &Registered) -> String {
    match behaviour {
        Registered::Wasm(hash) => format!("wasm:{}", hash.short()),
        Registered::Native(name) => format!("native:{name}"),
    }
}

pub(super) fn stage_name(stage: &arbor_shadow::Stage) -> String {
    serde_json::to_value(stage).ok().map_or_else(
        || format!("{stage:?}"),
        |v| v.to_string().trim_matches('"').to_string(),
    )
}

/// A WAL record for people.
pub(super) fn wal_record(lsn: u64, payload: &[u8]) -> WalRecord {
    let Ok(entry) = Entry::decode(payload) else {
        return WalRecord {
            lsn,
            agent: String::new(),
            entry: "unknown".into(),
            seq: None,
            detail: format!("{} bytes, not an agent record", payload.len()),
        };
    };
    let agent = entry.agent().to_string();
    let (name, seq, detail) = match entry {
        Entry::Input(envelope) => (
            "input",
            envelope.seq,
            format!(
                "{:?} from {}: {}",
                envelope.kind,
                envelope.from.as_deref().unwrap_or("host"),
                render(&envelope.payload, 160)
            ),
        ),
        Entry::Outcome {
            seq,
            status,
            answers,
            ..
        } => (
            "outcome",
            seq,
            format!("{status:?}, {} host answers", answers.len()),
        ),
        Entry::Swap { seq, behaviour, .. } => ("swap", seq, format!("now {behaviour}")),
        Entry::Rebase {
            seq,
            behaviour,
            checkpoint_lsn,
            ..
        } => (
            "rebase",
            seq,
            format!("now {behaviour} from the checkpoint at LSN {checkpoint_lsn}"),
        ),
    };
    WalRecord {
        lsn,
        agent,
        entry: name.into(),
        seq: Some(seq),
        detail,
    }
}

/// A temporary copy of an uploaded export file, for the vault to read and verify.
pub(crate) fn scratch_file(bytes: &[u8]) -> Result<tempfile::NamedTempFile, AdminError> {
    let mut file = tempfile::NamedTempFile::new()
        .map_err(|e| AdminError::Failed(format!("temporary file: {e}")))?;
    std::io::Write::write_all(&mut file, bytes)
        .map_err(|e| AdminError::Failed(format!("temporary file: {e}")))?;
    Ok(file)
}

/// An archive entry as the admin API shows it.
pub(crate) fn archive_row(entry: ArchiveEntry) -> ArchiveRow {
    ArchiveRow {
        module: entry.module.to_string(),
        parents: entry.parents.iter().map(ToString::to_string).collect(),
        origin: entry.origin.kind().into(),
        detail: entry.origin.to_string(),
        generation: entry.generation,
        scores: entry.scores,
        reached: entry.reached.name().into(),
        reason: entry.reason,
        at_ms: entry.at_ms,
    }
}
