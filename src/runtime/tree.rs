//! The runtime's supervision tree: how each supervisor and agent child is made, every time it
//! (re)starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arbor_agent::{AgentError, AgentSpec, AgentSystem};
use arbor_supervisor::{ChildKind, ChildSpec, ChildStarted, ExitReason, Restart, SupervisorSpec};
use arbor_vault::{AgentId, AgentState};
use parking_lot::Mutex;
use ractor::ActorCell;

use super::options::{RecoveryFailure, SupervisorOptions};

/// The runtime's tree: how each supervisor is made, every time it (re)starts.
pub(crate) struct Tree {
    pub(super) system: AgentSystem,
    pub(super) root: SupervisorOptions,
    pub(super) supervisors: Vec<(Vec<String>, SupervisorOptions)>,
    /// Without a journal there is no registry: the agents spawned and not stopped, so that a
    /// restarted supervisor starts them again (from their init config).
    pub(super) ephemeral_agents: Mutex<BTreeMap<String, AgentSpec>>,
    pub(super) recovery_failure: RecoveryFailure,
    /// Quarantined agents and why (the registry has them too; this serves the gauge and calls
    /// without reading the vault).
    pub(super) quarantined: Mutex<BTreeMap<String, String>>,
    /// The runtime is shutting down (or dropped): agents stopping now stay registered.
    pub(super) shutting_down: AtomicBool,
}

impl Tree {
    pub(super) fn options(&self, path: &[String]) -> Option<SupervisorOptions> {
        if path.is_empty() {
            return Some(self.root.clone());
        }
        self.supervisors
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, options)| options.clone())
    }

    /// The supervisor at `path` as it should start now: its declared sub-supervisors, then
    /// every agent the registry has running under it (by name) — so a supervisor restarted
    /// by its parent, or started by a new runtime, brings its agents back recovered. Agents
    /// whose supervisor is no longer declared go under the root.
    pub(super) fn spec(self: &Arc<Self>, path: &[String]) -> Result<SupervisorSpec, String> {
        let options = self
            .options(path)
            .ok_or_else(|| format!("no supervisor `{}`", path.join("/")))?;
        let name = path.last().map_or("root", String::as_str);
        let mut spec = SupervisorSpec::new(name)
            .strategy(options.strategy)
            .intensity(options.intensity.max_restarts, options.intensity.period);
        spec.backoff = options.backoff;
        spec.max_children = options.max_children;
        for (sub, _) in &self.supervisors {
            if sub.len() == path.len() + 1 && sub.starts_with(path) {
                spec = spec.child(self.supervisor_child(sub.clone()));
            }
        }
        if self.system.vault().is_none() {
            for (name, agent) in self.ephemeral_agents.lock().iter() {
                if agent.supervisor == path {
                    spec = spec.child(self.agent_child(name, Some(agent.clone()), options.clone()));
                }
            }
        }
        if let Some(vault) = self.system.vault() {
            let records = vault.agents().map_err(|e| format!("vault: {e}"))?;
            // Quarantined agents are children too (their start declines), so the tree shows
            // them and a restore restarts them in place.
            let listed = |r: &&arbor_vault::AgentRecord| {
                matches!(r.state, AgentState::Running | AgentState::Quarantined)
            };
            for record in records.iter().filter(listed) {
                let declared = self.options(&record.supervisor).is_some();
                if record.supervisor == path || (path.is_empty() && !declared) {
                    if !declared {
                        tracing::warn!(
                            agent = record.id.as_str(),
                            supervisor = record.supervisor.join("/"),
                            "the agent's supervisor is not declared; starting it under the root"
                        );
                    }
                    spec = spec.child(self.agent_child(record.id.as_str(), None, options.clone()));
                }
            }
        }
        Ok(spec)
    }

    pub(super) fn supervisor_child(self: &Arc<Self>, path: Vec<String>) -> ChildSpec {
        let id = path.last().cloned().unwrap_or_default();
        let tree = Arc::clone(self);
        ChildSpec::supervisor_from(id, move || tree.spec(&path))
    }

    /// An agent as a supervisor child: every start recovers it if the registry has it running
    /// (checkpoint + WAL replay), declines if the registry has it stopped on purpose,
    /// terminated or quarantined (OTP's `ignore`: not an error, not restarted), and spawns it
    /// from `spec` otherwise (its first start, or any start in an ephemeral runtime). When it is
    /// gone for good (a temporary agent that exited) the registry says so.
    pub(super) fn agent_child(
        self: &Arc<Self>,
        name: &str,
        spec: Option<AgentSpec>,
        options: SupervisorOptions,
    ) -> ChildSpec {
        let tree = Arc::downgrade(self);
        let name = name.to_string();
        let exited = {
            let (tree, name) = (tree.clone(), name.clone());
            let restart = options.agent_restart;
            move |exit: &ExitReason| {
                if let Some(tree) = tree.upgrade() {
                    tree.agent_exited(&name, restart, exit);
                }
            }
        };
        ChildSpec::from_fn(name.clone(), ChildKind::Worker, move |supervisor| {
            let (tree, name, spec) = (tree.clone(), name.clone(), spec.clone());
            Box::pin(async move {
                match tree.upgrade() {
                    Some(tree) => tree.start_agent(&name, spec, supervisor).await,
                    None => Err("the runtime is gone".into()),
                }
            })
        })
        .restart(options.agent_restart)
        .shutdown(options.agent_shutdown)
        .on_exit(exited)
    }

    pub(super) async fn start_agent(
        &self,
        name: &str,
        spec: Option<AgentSpec>,
        supervisor: ActorCell,
    ) -> Result<Option<ChildStarted>, String> {
        let system = &self.system;
        let agent = match (system.registered_state(name), spec) {
            (Ok(Some(AgentState::Running)), _) => {
                match system.recover_linked(name, supervisor).await {
                    Ok((agent, _)) => Ok(agent),
                    Err(error)
                        if self.recovery_failure == RecoveryFailure::Quarantine
                            && matches!(
                                error,
                                AgentError::Recovery { .. } | AgentError::Start { .. }
                            ) =>
                    {
                        self.quarantine(name, &error)?;
                        return Ok(None);
                    }
                    Err(error) => Err(error),
                }
            }
            (Ok(Some(AgentState::Quarantined)), _) => {
                self.note_quarantined(name);
                return Ok(None);
            }
            (Ok(Some(AgentState::Stopped | AgentState::Terminated)), _) => return Ok(None),
            (Ok(None), Some(spec)) => system.spawn_linked(spec, supervisor).await,
            (Ok(None), None) => Err(AgentError::UnknownAgent(name.into())),
            (Err(error), _) => Err(error),
        }
        .map_err(|e| e.to_string())?;
        Ok(Some(ChildStarted::from(agent.cell())))
    }

    /// `name` could not be recovered: the host goes on without it (see
    /// [`RecoveryFailure::Quarantine`]).
    pub(super) fn quarantine(&self, name: &str, error: &AgentError) -> Result<(), String> {
        let reason = error.to_string();
        tracing::error!(agent = name, %reason, "agent quarantined: its state cannot be recovered");
        self.system
            .mark_registered(name, AgentState::Quarantined, Some(reason.clone()))
            .map_err(|e| format!("cannot quarantine `{name}` ({reason}): {e}"))?;
        metrics::counter!(arbor_metrics::AGENT_QUARANTINES).increment(1);
        self.quarantined.lock().insert(name.into(), reason);
        Ok(())
    }

    /// A quarantined agent of an earlier run: remember why, for calls and the gauge.
    pub(super) fn note_quarantined(&self, name: &str) {
        let reason = AgentId::new(name)
            .ok()
            .and_then(|id| self.system.vault()?.agent(&id).ok().flatten())
            .and_then(|record| record.reason)
            .unwrap_or_default();
        self.quarantined.lock().insert(name.into(), reason);
    }

    /// A child's exit hook: the agent is gone for good unless the runtime is shutting down
    /// (agents stopping with it stay registered and come back with the next runtime).
    pub(super) fn agent_exited(&self, name: &str, restart: Restart, exit: &ExitReason) {
        if self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        self.ephemeral_agents.lock().remove(name);
        if restart != Restart::Temporary {
            return;
        }
        if let Ok(Some(AgentState::Running)) = self.system.registered_state(name) {
            let reason = format!("temporary, exited ({exit}): never restarted");
            if let Err(error) =
                self.system
                    .mark_registered(name, AgentState::Terminated, Some(reason))
            {
                tracing::error!(agent = name, %error, "a temporary agent exited but its registry record still says running");
            }
        }
    }
}
