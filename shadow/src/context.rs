//! What every part of the arbiter works with: the agent system, the configuration, the
//! evaluations by agent, and the lineage it writes to.

use std::collections::BTreeMap;
use std::sync::Arc;

use arbor_agent::{AgentRef, AgentSystem, BehaviourId};
use arbor_vault::{LineageEvent, ModuleHash, Step, Vault};
use parking_lot::Mutex;

use crate::config::{ArbiterConfig, EvaluationOptions, ShadowPlace};
use crate::error::{ShadowError, agent_id};
use crate::evaluation::Evaluation;
use crate::instance::ShadowNodes;
use crate::live::{Live, Progress};
use crate::objective::{Comparator, Judge, Measure, Rules};
use crate::shadow::{Factory, Place};
use crate::stage::Event;

/// The arbiter's shared state (an [`Arbiter`](crate::Arbiter) is an `Arc` of it).
pub(crate) struct Context {
    pub(crate) system: AgentSystem,
    pub(crate) config: ArbiterConfig,
    /// Each agent's current or last evaluation.
    pub(crate) evaluations: Mutex<BTreeMap<String, Arc<Evaluation>>>,
    /// The cluster's other nodes, where evaluations may place their shadows.
    pub(crate) nodes: Mutex<Option<Arc<dyn ShadowNodes>>>,
    /// The host's judges, by name.
    pub(crate) judges: Mutex<BTreeMap<String, Arc<dyn Judge>>>,
    /// The host's comparators, by name.
    pub(crate) comparators: Mutex<BTreeMap<String, Arc<dyn Comparator>>>,
}

impl Context {
    /// `agent`'s current or last evaluation.
    pub(crate) fn evaluation(&self, agent: &str) -> Result<Arc<Evaluation>, ShadowError> {
        self.evaluations
            .lock()
            .get(agent)
            .cloned()
            .ok_or_else(|| ShadowError::NoEvaluation(agent.into()))
    }

    /// The running agent.
    pub(crate) fn running(&self, agent: &str) -> Result<AgentRef, ShadowError> {
        self.system
            .lookup(agent)
            .ok_or_else(|| ShadowError::UnknownAgent(agent.into()))
    }

    /// The module `agent` runs: the registry's record when journaling, else its spec.
    pub(crate) fn current_module(&self, agent: &str) -> Result<BehaviourId, ShadowError> {
        if let Some(vault) = self.system.vault()
            && let Some(record) = vault.agent(&agent_id(agent)?).map_err(ShadowError::Vault)?
        {
            return Ok(match record.behaviour {
                arbor_vault::Behaviour::Wasm(hash) => BehaviourId::Wasm(hash),
                arbor_vault::Behaviour::Native(name) => BehaviourId::Native(name),
            });
        }
        Ok(self.running(agent)?.spec().behaviour.clone())
    }

    /// What an evaluation with `options` compares with: its ignore rules, its comparator and
    /// the judges its objectives name, or why not (an objective that cannot be tested, a
    /// name the host did not register).
    pub(crate) fn rules(&self, options: &EvaluationOptions) -> Result<Rules, ShadowError> {
        let mut judges = Vec::new();
        for objective in &options.objectives {
            objective.validate()?;
            if let Measure::Score(name) = &objective.measure
                && !judges.iter().any(|(known, _)| known == name)
            {
                let judge = self.judges.lock().get(name).cloned().ok_or_else(|| {
                    ShadowError::Refused(format!(
                        "objective {objective}: no judge `{name}` is registered \
                         (Arbiter::register_judge)"
                    ))
                })?;
                judges.push((name.clone(), judge));
            }
        }
        let comparator = match &options.comparator {
            None => None,
            Some(name) => Some(self.comparators.lock().get(name).cloned().ok_or_else(|| {
                ShadowError::Refused(format!(
                    "no comparator `{name}` is registered (Arbiter::register_comparator)"
                ))
            })?),
        };
        Ok(Rules {
            ignore: options.ignore.clone(),
            comparator,
            judges,
        })
    }

    /// Shadow instances for `running`: its grants and its exact limits, where `options`
    /// place them, or why they cannot run under them or there.
    pub(crate) fn factory(
        &self,
        running: &AgentRef,
        options: &EvaluationOptions,
    ) -> Result<Factory, ShadowError> {
        let spec = running.spec();
        let place = match &options.shadows {
            ShadowPlace::Here => Place::Here,
            elsewhere => {
                let Some(nodes) = self.nodes.lock().clone() else {
                    return Err(ShadowError::Refused(
                        "shadows on another node need a cluster: this arbiter has no other \
                         nodes (Arbiter::place_shadows_on)"
                            .into(),
                    ));
                };
                let node = match elsewhere {
                    ShadowPlace::Node(node) => node.clone(),
                    _ => nodes.choose(running.name()).map_err(ShadowError::Refused)?,
                };
                if node == nodes.this_node() {
                    Place::Here
                } else {
                    Place::On {
                        nodes,
                        node,
                        lost: Default::default(),
                    }
                }
            }
        };
        Factory::new(
            self.system.clone(),
            &spec.limits,
            spec.capabilities.clone(),
            &self.config.limits,
            options.migration.clone(),
            place,
        )
    }

    /// A live run (evaluation or watch) of `agent`'s shadows.
    pub(crate) fn live(
        &self,
        factory: Factory,
        agent: &str,
        rules: Rules,
        progress: Arc<Progress>,
    ) -> Live {
        Live {
            factory,
            agent: agent.into(),
            rules,
            policy: self.config.policy.clone(),
            limits: self.config.limits.clone(),
            progress,
            handle: tokio::runtime::Handle::current(),
        }
    }

    /// The vault, which a system that journals has.
    pub(crate) fn vault(&self) -> Result<&Vault, ShadowError> {
        self.system.vault().ok_or(ShadowError::NotJournaled)
    }

    /// Appends `event` to the lineage and flushes it (nothing without a vault).
    pub(crate) fn record(&self, event: LineageEvent) -> Result<(), ShadowError> {
        let Some(vault) = self.system.vault() else {
            return Ok(());
        };
        vault.append_lineage(event).map_err(ShadowError::Vault)?;
        vault.flush().map(drop).map_err(ShadowError::Vault)
    }

    /// Records a step of the work on `candidate` for `agent`.
    pub(crate) fn step(
        &self,
        agent: &str,
        candidate: ModuleHash,
        step: Step,
        detail: &str,
    ) -> Result<(), ShadowError> {
        self.record(LineageEvent::Step {
            agent: agent_id(agent)?,
            candidate,
            step,
            detail: detail.into(),
        })
    }

    /// Ends an evaluation that could not go on: its work stopped, the hold (if any) released,
    /// the failure recorded. An evaluation already over keeps its outcome.
    pub(crate) fn fail(
        &self,
        evaluation: &Evaluation,
        agent: &str,
        candidate: ModuleHash,
        error: &ShadowError,
    ) {
        tracing::warn!(agent, %error, "evaluation failed");
        evaluation.cancel_work();
        self.system.release_hold(agent);
        let _ = self.step(agent, candidate, Step::Failed, &error.to_string());
        let _ = evaluation.apply(&Event::Failed(error.to_string()));
    }
}
