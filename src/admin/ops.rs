//! [`Admin`] in-process: [`Operator`] runs each operation over a running [`Runtime`] (what
//! the admin endpoint serves) or over a stopped host's data directory (`arborctl --data-dir`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arbor_agent::report::chain;
use arbor_agent::{AfterRestore, AgentSystem, RestoreFrom};
use arbor_evolve::{LoopSpec, LoopStatus};
use arbor_shadow::{Arbiter, EvaluationOptions, VerdictDetail};
use arbor_vault::{AgentId, Behaviour as Registered, LineageEvent, ModuleHash, Origin, Vault};
use arbor_wal::Wal;

use super::Admin;
use super::api::{
    AgentRow, ArchiveRow, CheckpointRow, CheckpointShow, Cluster, Evaluation, LineageRow,
    ModuleRow, Removed, RestoreDone, RestoreSource, Status, Submitter, WalRecord, WalStatus,
    WalVerify,
};
use super::error::{AdminError, vault_error};
use super::rows::{
    agent_id, archive_row, check_stopped_host, checkpoint_row, no_checkpoint, registered_behaviour,
    registry_state, stage_name, state_name, verified, wal_record,
};
use crate::Runtime;
use crate::runtime::WeakRuntime;

/// A module for `evolve start`: one already stored, or new bytes.
#[derive(Debug, Clone)]
pub enum Candidate {
    /// A module in the vault, by hash.
    Stored(ModuleHash),
    /// New Wasm bytes, labelled.
    Bytes {
        /// Its label.
        name: String,
        /// The module.
        bytes: Vec<u8>,
    },
}

impl Candidate {
    /// The stored module named by `hash` (hex), as `arborctl` and the endpoint take it.
    pub fn stored(hash: &str) -> Result<Candidate, AdminError> {
        hash.parse()
            .map(Candidate::Stored)
            .map_err(|e| AdminError::BadRequest(format!("module hash `{hash}`: {e}")))
    }
}

/// What `cluster status` answers without a running node (`arborctl` says it too, before
/// opening a directory).
pub const NEEDS_RUNNING_NODE: &str = "`cluster status` needs a running node (the cluster's \
     state is in NATS, not in a data directory): use --admin ADDR of any node, not --data-dir";

/// The operations, online or offline.
pub struct Operator {
    system: AgentSystem,
    /// The runtime (not kept alive by its own endpoint) and its arbiter.
    online: Option<(WeakRuntime, Arbiter)>,
    data_dir: Option<PathBuf>,
}

impl Operator {
    /// Operations on a running runtime.
    pub fn online(runtime: &Runtime) -> Operator {
        Operator {
            system: runtime.system().clone(),
            online: Some((runtime.downgrade(), runtime.arbiter().clone())),
            data_dir: runtime.data_dir().map(Path::to_path_buf),
        }
    }

    /// Operations on a stopped host's data directory: [`AdminError::Busy`] if a running host
    /// holds it (its WAL lock), [`AdminError::NotFound`] if it is not an arbor directory.
    pub fn offline(dir: &Path) -> Result<Operator, AdminError> {
        check_stopped_host(dir)?;
        let system = AgentSystem::builder()
            .journal(dir)
            .build()
            .map_err(|error| match error.wal_error() {
                Some(arbor_wal::Error::Locked { .. }) => AdminError::Busy(format!(
                    "a running host holds {}: {}",
                    dir.display(),
                    chain(&error)
                )),
                _ => error.into(),
            })?;
        Ok(Operator {
            system,
            online: None,
            data_dir: Some(dir.to_path_buf()),
        })
    }

    /// The agent system operated on.
    pub fn system(&self) -> &AgentSystem {
        &self.system
    }

    fn vault(&self) -> Result<&Vault, AdminError> {
        self.system.vault().ok_or_else(|| {
            AdminError::Conflict("the runtime is ephemeral (no data directory)".into())
        })
    }

    fn wal(&self) -> Result<&Wal, AdminError> {
        self.system.wal().ok_or_else(|| {
            AdminError::Conflict("the runtime is ephemeral (no data directory)".into())
        })
    }

    /// The running runtime, online.
    fn runtime(&self) -> Result<Option<Runtime>, AdminError> {
        match &self.online {
            None => Ok(None),
            Some((runtime, _)) => runtime
                .upgrade()
                .map(Some)
                .ok_or_else(|| AdminError::Conflict("the runtime has stopped".into())),
        }
    }

    /// The running host, for what only it has (loops).
    fn running_host(&self) -> Result<Runtime, AdminError> {
        self.runtime()?.ok_or_else(|| {
            AdminError::Busy(
                "evolution needs a running host: use --admin ADDR, not --data-dir".into(),
            )
        })
    }

    fn arbiter(&self) -> Result<&Arbiter, AdminError> {
        self.online
            .as_ref()
            .map(|(_, arbiter)| arbiter)
            .ok_or_else(|| {
                AdminError::Busy(
                    "evolution needs a running host: use --admin ADDR, not --data-dir".into(),
                )
            })
    }

    fn registered_module(&self, agent: &str) -> String {
        let record = AgentId::new(agent)
            .ok()
            .and_then(|id| self.system.vault()?.agent(&id).ok().flatten());
        record.map_or_else(String::new, |r| registered_behaviour(&r.behaviour))
    }

    /// [`Admin::wal_verify`] on a stopped host's directory without opening the
    /// log, so a damaged log (which opening refuses) is reported rather than refused.
    pub fn wal_verify_offline(dir: &Path) -> Result<WalVerify, AdminError> {
        check_stopped_host(dir)?;
        let report = arbor_wal::verify(dir.join("wal"), &arbor_wal::Config::default())
            .map_err(|e| AdminError::Failed(format!("WAL: {e}")))?;
        Ok(verified(&report))
    }
}

impl Admin for Operator {
    async fn status(&self) -> Result<Status, AdminError> {
        let mut agents = BTreeMap::new();
        let mut evaluations = BTreeMap::new();
        let stopped = match (self.runtime()?, self.arbiter()) {
            (Some(runtime), Ok(arbiter)) => {
                for (_, child) in runtime.tree().walk() {
                    if child.supervisor.is_none() {
                        *agents.entry(state_name(&child.state).into()).or_default() += 1;
                    }
                }
                for name in runtime.system().running() {
                    if let Some(status) = arbiter.status(&name)
                        && !matches!(status.stage, arbor_shadow::Stage::Done(_))
                    {
                        evaluations.insert(name, stage_name(&status.stage));
                    }
                }
                runtime.stopped()
            }
            _ => {
                for record in self.vault()?.agents().map_err(vault_error)? {
                    *agents
                        .entry(registry_state(record.state).into())
                        .or_default() += 1;
                }
                None
            }
        };
        let (wal, vault) = (self.wal()?, self.vault()?);
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").into(),
            mode: if self.online.is_some() {
                "online"
            } else {
                "offline"
            }
            .into(),
            data_dir: self.data_dir.as_ref().map(|d| d.display().to_string()),
            stopped,
            agents,
            wal: WalStatus {
                first_lsn: wal.first_lsn(),
                last_lsn: wal.last_lsn(),
                durable_lsn: wal.durable_lsn(),
                segments: wal.segment_first_lsns().len(),
            },
            modules: vault.list_modules().map_err(vault_error)?.len(),
            vault_bytes: vault.size_on_disk().map_err(vault_error)?,
            evaluations,
        })
    }

    async fn agents(&self) -> Result<Vec<AgentRow>, AdminError> {
        let mut rows = Vec::new();
        if let Some(runtime) = self.runtime()? {
            let quarantined = runtime.quarantined();
            for (path, child) in runtime.tree().walk() {
                if child.supervisor.is_some() {
                    continue;
                }
                let reason = quarantined.get(&child.id).cloned();
                let running = match runtime.lookup(&child.id) {
                    Some(agent) => agent.running().await.ok().map(|r| (r, agent.queued())),
                    None => None,
                };
                rows.push(AgentRow {
                    name: child.id.clone(),
                    supervisor: path.join("/"),
                    state: match reason {
                        Some(_) => "quarantined".into(),
                        None => state_name(&child.state).into(),
                    },
                    reason,
                    module: match &running {
                        Some(((behaviour, _), _)) => behaviour.to_string(),
                        None => self.registered_module(&child.id),
                    },
                    seq: running.as_ref().map(|((_, seq), _)| *seq),
                    restarts: Some(child.restarts),
                    queued: running.map(|(_, queued)| queued),
                });
            }
            return Ok(rows);
        }
        let Some(vault) = self.system.vault() else {
            return Ok(rows);
        };
        for record in vault.agents().map_err(vault_error)? {
            rows.push(AgentRow {
                name: record.id.as_str().into(),
                supervisor: record.supervisor.join("/"),
                state: registry_state(record.state).into(),
                module: registered_behaviour(&record.behaviour),
                seq: None,
                restarts: None,
                queued: None,
                reason: record.reason,
            });
        }
        Ok(rows)
    }

    async fn checkpoints(&self, agent: &str) -> Result<Vec<CheckpointRow>, AdminError> {
        let id = agent_id(agent)?;
        let vault = self.vault()?;
        let list = vault.list_checkpoints(&id).map_err(vault_error)?;
        if list.is_empty() && vault.agent(&id).map_err(vault_error)?.is_none() {
            return Err(AdminError::NotFound(format!("no agent named `{agent}`")));
        }
        Ok(list.iter().map(checkpoint_row).collect())
    }

    async fn checkpoint_show(&self, agent: &str, lsn: u64) -> Result<CheckpointShow, AdminError> {
        let id = agent_id(agent)?;
        let checkpoint = self
            .vault()?
            .get_checkpoint(&id, lsn)
            .map_err(vault_error)?
            .ok_or_else(|| no_checkpoint(agent, lsn))?;
        let state =
            arbor_agent::envelope::decode_untrusted::<serde_json::Value>(&checkpoint.state).ok();
        Ok(CheckpointShow {
            checkpoint: checkpoint_row(&checkpoint.meta),
            state,
        })
    }

    async fn checkpoint_export(
        &self,
        agent: &str,
        lsn: u64,
        path: &Path,
    ) -> Result<CheckpointRow, AdminError> {
        let id = agent_id(agent)?;
        let meta = self
            .vault()?
            .export_checkpoint(&id, lsn, path)
            .map_err(vault_error)?
            .ok_or_else(|| no_checkpoint(agent, lsn))?;
        Ok(checkpoint_row(&meta))
    }

    async fn restore(
        &self,
        agent: &str,
        source: &RestoreSource,
        file: Option<&Path>,
        after: AfterRestore,
    ) -> Result<RestoreDone, AdminError> {
        let id = agent_id(agent)?;
        let (from, from_lsn) = match (source, file) {
            (RestoreSource::Stored { lsn }, _) => {
                self.vault()?
                    .checkpoint_meta(&id, *lsn)
                    .map_err(vault_error)?
                    .ok_or_else(|| no_checkpoint(agent, *lsn))?;
                (RestoreFrom::Checkpoint(*lsn), *lsn)
            }
            (RestoreSource::File, Some(file)) => {
                let checkpoint = self
                    .vault()?
                    .read_export(file)
                    .map_err(|e| AdminError::BadRequest(e.to_string()))?;
                if checkpoint.meta.agent != id {
                    return Err(AdminError::BadRequest(format!(
                        "the file holds a checkpoint of `{}`, not of `{agent}`",
                        checkpoint.meta.agent
                    )));
                }
                let lsn = checkpoint.meta.lsn;
                (
                    RestoreFrom::State {
                        state: checkpoint.state,
                        lsn,
                    },
                    lsn,
                )
            }
            (RestoreSource::File, None) => {
                return Err(AdminError::BadRequest("no checkpoint file given".into()));
            }
        };
        let (running, offline) = match self.runtime()? {
            Some(runtime) if runtime.quarantined().contains_key(agent) => {
                let report = runtime.restore_agent(agent, from, after).await?;
                return Ok(RestoreDone {
                    agent: agent.into(),
                    from_lsn,
                    after,
                    replayed: report.replayed,
                    checkpoint_lsn: report.checkpoint_lsn,
                    pause_us: u64::try_from(report.pause.as_micros()).unwrap_or(u64::MAX),
                });
            }
            Some(runtime) => (
                runtime.lookup(agent).ok_or_else(|| {
                    AdminError::Conflict(format!("agent `{agent}` is not running"))
                })?,
                false,
            ),
            None => {
                let record = self
                    .vault()?
                    .agent(&id)
                    .map_err(vault_error)?
                    .ok_or_else(|| AdminError::NotFound(format!("no agent named `{agent}`")))?;
                if let Registered::Native(native) = &record.behaviour {
                    return Err(AdminError::Busy(format!(
                        "`{agent}` runs the native behaviour `{native}`, which only its host \
                         has: restore it through the host's admin endpoint"
                    )));
                }
                (self.system.recover(agent).await?.0, true)
            }
        };
        let restored = self.system.restore_checkpoint(&running, from, after).await;
        if offline {
            // Stopped again after a final checkpoint, still registered as it was.
            self.system.shutdown().await?;
        }
        let report = restored?;
        Ok(RestoreDone {
            agent: agent.into(),
            from_lsn,
            after,
            replayed: report.replayed,
            checkpoint_lsn: report.checkpoint_lsn,
            pause_us: u64::try_from(report.pause.as_micros()).unwrap_or(u64::MAX),
        })
    }

    async fn agent_remove(&self, agent: &str) -> Result<Removed, AdminError> {
        let runtime = self.runtime()?.ok_or_else(|| {
            AdminError::Busy(
                "`agent remove` needs a running host (its supervisor drops the agent): use \
                 --admin ADDR, not --data-dir"
                    .into(),
            )
        })?;
        runtime.remove_agent(agent).await?;
        Ok(Removed {
            agent: agent.into(),
        })
    }

    async fn wal_verify(&self) -> Result<WalVerify, AdminError> {
        // Reading every segment is disk work: off the async workers.
        let wal = self.wal()?.clone();
        let report = tokio::task::spawn_blocking(move || wal.verify())
            .await
            .map_err(|e| AdminError::Failed(format!("WAL verify: {e}")))?
            .map_err(|e| AdminError::Failed(format!("WAL: {e}")))?;
        Ok(verified(&report))
    }

    async fn wal_records(
        &self,
        from: u64,
        limit: usize,
        agent: Option<&str>,
    ) -> Result<Vec<WalRecord>, AdminError> {
        let wal = self.wal()?;
        let from = from.max(wal.first_lsn());
        let reader = wal
            .read_from(from)
            .map_err(|e| AdminError::Failed(format!("WAL: {e}")))?;
        let mut records = Vec::new();
        for record in reader {
            if records.len() >= limit {
                break;
            }
            let record = record.map_err(|e| AdminError::Failed(format!("WAL: {e}")))?;
            let row = wal_record(record.lsn, &record.payload);
            if agent.is_none_or(|a| a == row.agent) {
                records.push(row);
            }
        }
        Ok(records)
    }

    async fn modules(&self) -> Result<Vec<ModuleRow>, AdminError> {
        Ok(self
            .vault()?
            .list_modules()
            .map_err(vault_error)?
            .into_iter()
            .map(|m| ModuleRow {
                hash: m.hash.to_string(),
                name: m.name,
                bytes: m.size_bytes,
                added_at_ms: m.added_at_ms,
                origin: m.origin,
            })
            .collect())
    }

    async fn module_add(&self, name: &str, bytes: &[u8]) -> Result<ModuleRow, AdminError> {
        let vault = self.vault()?;
        // Compiling checks it against the ABI; a module that does not load is not stored.
        let hash = self
            .system
            .add_module(name, bytes)
            .map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let meta = vault
            .module_meta(&hash)
            .map_err(vault_error)?
            .ok_or_else(|| AdminError::Failed("the module was not stored".into()))?;
        Ok(ModuleRow {
            hash: meta.hash.to_string(),
            name: meta.name,
            bytes: meta.size_bytes,
            added_at_ms: meta.added_at_ms,
            origin: meta.origin,
        })
    }

    async fn evolve_submit(
        &self,
        agent: &str,
        candidate: Candidate,
        submitter: &Submitter,
        options: EvaluationOptions,
    ) -> Result<Evaluation, AdminError> {
        let arbiter = self.arbiter()?;
        let (name, bytes) = match candidate {
            Candidate::Bytes { name, bytes } => (name, bytes),
            Candidate::Stored(hash) => {
                let vault = self.vault()?;
                let meta = vault
                    .module_meta(&hash)
                    .map_err(vault_error)?
                    .ok_or_else(|| AdminError::NotFound(format!("no module {hash}")))?;
                let bytes = vault
                    .module_bytes(&hash)
                    .map_err(vault_error)?
                    .ok_or_else(|| AdminError::NotFound(format!("no module {hash}")))?;
                (meta.name, bytes)
            }
        };
        let origin = Origin::Submitted {
            author: submitter.author.clone(),
            description: submitter.description.clone(),
        };
        let hash = arbiter.admit_from(agent, &name, &bytes, origin, None)?;
        arbiter.evaluate_with(agent, hash, options)?;
        self.evolve_status(agent).await
    }

    async fn evolve_start(
        &self,
        agent: &str,
        candidate: Candidate,
        options: EvaluationOptions,
    ) -> Result<Evaluation, AdminError> {
        self.evolve_submit(agent, candidate, &Submitter::default(), options)
            .await
    }

    async fn evolve_loop_start(
        &self,
        agent: &str,
        spec: &LoopSpec,
    ) -> Result<LoopStatus, AdminError> {
        let runtime = self.running_host()?;
        Ok(runtime
            .loops()
            .start(runtime.arbiter(), agent, spec.clone())?)
    }

    async fn evolve_loop_stop(&self, agent: &str) -> Result<LoopStatus, AdminError> {
        self.running_host()?
            .loops()
            .stop(agent)
            .ok_or_else(|| AdminError::NotFound(format!("no evolution loop for `{agent}`")))
    }

    async fn evolve_loop_status(&self, agent: &str) -> Result<LoopStatus, AdminError> {
        self.running_host()?
            .loops()
            .status(agent)
            .ok_or_else(|| AdminError::NotFound(format!("no evolution loop for `{agent}`")))
    }

    async fn evolve_archive(&self, agent: &str) -> Result<Vec<ArchiveRow>, AdminError> {
        let id = agent_id(agent)?;
        let entries = self.vault()?.archive(&id).map_err(vault_error)?;
        Ok(entries.into_iter().map(archive_row).collect())
    }

    async fn evolve_accept(&self, agent: &str, reason: &str) -> Result<Evaluation, AdminError> {
        self.arbiter()?.accept(agent, reason)?;
        self.evolve_status(agent).await
    }

    async fn evolve_status(&self, agent: &str) -> Result<Evaluation, AdminError> {
        self.arbiter()?
            .status(agent)
            .ok_or_else(|| AdminError::NotFound(format!("no evaluation of `{agent}`")))
    }

    async fn evolve_promote(&self, agent: &str) -> Result<Evaluation, AdminError> {
        self.arbiter()?.promote(agent).await?;
        self.evolve_status(agent).await
    }

    async fn evolve_rollback(&self, agent: &str, reason: &str) -> Result<Evaluation, AdminError> {
        self.arbiter()?.rollback(agent, reason).await?;
        self.evolve_status(agent).await
    }

    async fn evolve_cancel(&self, agent: &str) -> Result<Evaluation, AdminError> {
        self.arbiter()?.cancel(agent)?;
        self.evolve_status(agent).await
    }

    async fn cluster_status(&self) -> Result<Cluster, AdminError> {
        // Offline there is nothing to read: the leases, the registry and the membership are
        // in NATS, and a node's data directory holds only its cache of the agents it owned.
        let runtime = self
            .runtime()?
            .ok_or_else(|| AdminError::Busy(NEEDS_RUNNING_NODE.into()))?;
        match runtime.cluster_status().await {
            Some(status) => Ok(status?),
            None => Err(AdminError::NotClustered),
        }
    }

    async fn lineage(&self, agent: &str) -> Result<Vec<LineageRow>, AdminError> {
        let id = agent_id(agent)?;
        let records = self.vault()?.lineage_for(&id).map_err(vault_error)?;
        Ok(records
            .into_iter()
            .map(|record| {
                let mut row = LineageRow {
                    seq: record.seq,
                    at_ms: record.at_ms,
                    event: String::new(),
                    module: String::new(),
                    summary: String::new(),
                    fields: BTreeMap::new(),
                    evidence: None,
                };
                match record.event {
                    LineageEvent::ModuleAdmitted {
                        parent, candidate, ..
                    } => {
                        row.event = "admitted".into();
                        row.module = candidate.to_string();
                        row.summary = match parent {
                            Some(parent) => format!("derived from {}", parent.short()),
                            None => "first module".into(),
                        };
                    }
                    LineageEvent::Verdict {
                        candidate,
                        evidence,
                        ..
                    } => {
                        row.event = "verdict".into();
                        row.module = candidate.to_string();
                        // The arbiter writes the verdict into its summary.
                        row.summary = evidence.summary;
                        row.evidence = VerdictDetail::decode(&evidence.detail)
                            .ok()
                            .and_then(|detail| serde_json::to_value(detail).ok());
                        row.fields = evidence.fields;
                    }
                    LineageEvent::Promoted {
                        from,
                        to,
                        checkpoint_lsn,
                        ..
                    } => {
                        row.event = "promoted".into();
                        row.module = to.to_string();
                        row.summary = format!(
                            "replaced {} (promotion checkpoint at LSN {checkpoint_lsn})",
                            from.short()
                        );
                    }
                    LineageEvent::RolledBack {
                        from, to, reason, ..
                    } => {
                        row.event = "rolled_back".into();
                        row.module = from.to_string();
                        row.summary = format!("back to {}: {reason}", to.short());
                    }
                    LineageEvent::Step {
                        candidate,
                        step,
                        detail,
                        ..
                    } => {
                        row.event = "step".into();
                        row.module = candidate.to_string();
                        row.summary = if detail.is_empty() {
                            step.to_string()
                        } else {
                            format!("{step}: {detail}")
                        };
                    }
                    other => {
                        row.event = "other".into();
                        row.summary = format!("{other:?}");
                    }
                }
                row
            })
            .collect())
    }
}
