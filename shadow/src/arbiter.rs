//! The [`Arbiter`]: the public face of the evolution arbiter. It admits candidates and answers
//! people (evaluate, promote, roll back, cancel, status, wait, history); the work itself is in
//! [`pipeline`](crate::pipeline) (gate → shadows → verdict) and
//! [`promotion`](crate::promotion) (swap → watch → rollback).

use std::collections::BTreeMap;
use std::sync::Arc;

use arbor_agent::{AgentSystem, BehaviourId};
use arbor_vault::{ArchiveEntry, LineageEvent, LineageRecord, ModuleHash, Origin, Step};
use parking_lot::Mutex;

use crate::archive;
use crate::compare::IgnoreRule;
use crate::config::{ArbiterConfig, EvaluationOptions};
use crate::context::Context;
use crate::error::{ShadowError, agent_id};
use crate::evaluation::EvaluationStatus;
use crate::instance::ShadowNodes;
use crate::objective::{Comparator, Judge};
use crate::report::{Promotion, Rollback};
use crate::stage::Event;
use crate::{pipeline, promotion};

/// The evolution arbiter of one [`AgentSystem`]: candidates for an agent's module are
/// admitted, replayed against the journal, shadowed on live traffic beside an A/A control,
/// judged by the [`policy`](crate::policy) rule, promoted (by a person or automatically),
/// watched, and rolled back on regression. Every step is appended to the vault's lineage.
///
/// ```
/// use arbor_agent::{AgentSpec, AgentSystem};
/// use arbor_shadow::{Approval, Arbiter, ArbiterConfig, Outcome, Policy, Stage};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let dir = tempfile::tempdir()?;
/// let system = AgentSystem::builder().journal(dir.path()).build()?;
/// let kv = system.add_module("kv", arbor_modules::KV)?;
/// let agent = system.spawn(AgentSpec::wasm("kv", kv)).await?;
///
/// let config = ArbiterConfig {
///     approval: Approval::Auto,
///     // < 5 % at 95 %: 59 clean samples, 20 of them live.
///     policy: Policy { target_failure_rate: 0.05, min_per_kind: 5, min_live_samples: 20, ..Policy::default() },
///     watch: std::time::Duration::from_millis(200),
///     ..ArbiterConfig::default()
/// };
/// let arbiter = Arbiter::new(system.clone(), config)?;
/// let v2 = arbiter.admit("kv", "kv-v2", arbor_modules::KV_V2)?;
/// arbiter.evaluate("kv", v2, Vec::new())?;
///
/// #[derive(serde::Serialize)]
/// enum Kv { Put { key: String, value: String }, Get { key: String } }
/// for i in 0..40 {
///     let put = Kv::Put { key: format!("k{i}"), value: "v".into() };
///     agent.call(rmp_serde::to_vec_named(&put)?).await?;
///     agent.call(rmp_serde::to_vec_named(&Kv::Get { key: format!("k{i}") })?).await?;
/// }
/// let status = arbiter.wait("kv", |s| matches!(s.stage, Stage::Watching | Stage::Done(_))).await?;
/// assert!(status.promotion.is_some(), "{status:?}");
/// system.shutdown().await?; // ends the watch with it
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Arbiter {
    ctx: Arc<Context>,
}

impl Arbiter {
    /// The arbiter of `system`; refuses a configuration the rule cannot work with
    /// ([`ShadowError::Config`]). Reconciles the lineage with what the agents run: a watch the
    /// host did not live to finish ends with its promotion kept (the agents' recovery already
    /// made their module and state consistent), and the lineage says so.
    pub fn new(system: AgentSystem, config: ArbiterConfig) -> Result<Arbiter, ShadowError> {
        config.validate()?;
        let ctx = Arc::new(Context {
            system,
            config,
            evaluations: Mutex::new(BTreeMap::new()),
            nodes: Mutex::new(None),
            judges: Mutex::new(BTreeMap::new()),
            comparators: Mutex::new(BTreeMap::new()),
        });
        promotion::reconcile(&ctx)?;
        Ok(Arbiter { ctx })
    }

    /// The system it works on.
    pub fn system(&self) -> &AgentSystem {
        &self.ctx.system
    }

    /// The configuration.
    pub fn config(&self) -> &ArbiterConfig {
        &self.ctx.config
    }

    /// Lets evaluations run their shadows on the cluster's other nodes
    /// ([`ShadowPlace::Node`](crate::ShadowPlace::Node),
    /// [`ShadowPlace::Elsewhere`](crate::ShadowPlace::Elsewhere)). A clustered
    /// `arbor::Runtime` gives its own arbiter its nodes; `Runtime::shadow_nodes` gives them to
    /// another.
    pub fn place_shadows_on(&self, nodes: Arc<dyn ShadowNodes>) {
        *self.ctx.nodes.lock() = Some(nodes);
    }

    /// Registers the host's `judge` as `name`: evaluations whose objectives name
    /// `score.<name>` pair its scores of the control's and the candidate's runs
    /// ([`objective`](crate::objective)). A later registration of the same name replaces it
    /// for evaluations started after.
    pub fn register_judge(&self, name: &str, judge: Arc<dyn Judge>) {
        self.ctx.judges.lock().insert(name.to_string(), judge);
    }

    /// Registers the host's `comparator` as `name`: an evaluation whose
    /// [`EvaluationOptions::comparator`] names it has its reply differences graded by it
    /// (better, same, worse, wrong) instead of every one failing.
    pub fn register_comparator(&self, name: &str, comparator: Arc<dyn Comparator>) {
        self.ctx
            .comparators
            .lock()
            .insert(name.to_string(), comparator);
    }

    /// The names of the registered judges and comparators.
    pub fn registered(&self) -> (Vec<String>, Vec<String>) {
        (
            self.ctx.judges.lock().keys().cloned().collect(),
            self.ctx.comparators.lock().keys().cloned().collect(),
        )
    }

    /// Admits `bytes` as a candidate module for `agent`: checks it against the ABI, compiles
    /// it, stores it in the vault by content hash, checks the agent's grants cover its imports,
    /// and records it in the lineage with the agent's current module as its parent.
    pub fn admit(&self, agent: &str, name: &str, bytes: &[u8]) -> Result<ModuleHash, ShadowError> {
        let origin = Origin::Submitted {
            author: String::new(),
            description: String::new(),
        };
        self.admit_from(agent, name, bytes, origin, None)
    }

    /// [`admit`](Self::admit) with where the candidate came from and what it derives from
    /// (`None`: the agent's current module), both kept in the vault's archive
    /// ([`archive`](Self::archive)); the origin is also a lineage step. A module that is not
    /// admitted is archived as refused, with the reason.
    ///
    /// ```no_run
    /// # async fn example(arbiter: arbor_shadow::Arbiter, bytes: Vec<u8>) -> Result<(), arbor_shadow::ShadowError> {
    /// use arbor_vault::Origin;
    ///
    /// let origin = Origin::Submitted {
    ///     author: "ana@example.com".into(),
    ///     description: "Get by direct lookup".into(),
    /// };
    /// let candidate = arbiter.admit_from("kv", "kv-v2", &bytes, origin, None)?;
    /// arbiter.evaluate("kv", candidate, Vec::new())?;
    /// # Ok(()) }
    /// ```
    pub fn admit_from(
        &self,
        agent: &str,
        name: &str,
        bytes: &[u8],
        origin: Origin,
        parents: Option<Vec<ModuleHash>>,
    ) -> Result<ModuleHash, ShadowError> {
        let parents = match parents {
            Some(parents) => parents,
            None => match self.ctx.current_module(agent)? {
                BehaviourId::Wasm(hash) => vec![hash],
                BehaviourId::Native(_) => Vec::new(),
            },
        };
        match self.admit_module(agent, name, bytes) {
            Ok(candidate) => {
                archive::enter(&self.ctx, agent, candidate, &parents, origin.clone(), None)?;
                let anonymous = matches!(&origin, Origin::Submitted { author, description }
                    if author.is_empty() && description.is_empty());
                if !anonymous {
                    self.ctx
                        .step(agent, candidate, Step::Origin, &origin.to_string())?;
                }
                Ok(candidate)
            }
            Err(error) if error.is_refusal() => {
                self.refuse(
                    agent,
                    ModuleHash::of(bytes),
                    origin,
                    parents,
                    &error.to_string(),
                )?;
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Records a candidate that never became a module (its source did not build): archived
    /// as refused under `offered` (a hash of what was offered), and a lineage step with the
    /// reason.
    pub fn refuse(
        &self,
        agent: &str,
        offered: ModuleHash,
        origin: Origin,
        parents: Vec<ModuleHash>,
        reason: &str,
    ) -> Result<(), ShadowError> {
        let detail = format!("{origin}: {reason}");
        archive::enter(
            &self.ctx,
            agent,
            offered,
            &parents,
            origin,
            Some(reason.into()),
        )?;
        self.ctx.step(agent, offered, Step::Refused, &detail)
    }

    /// Appends a step about `module` to `agent`'s lineage (for the parties that drive the
    /// arbiter, such as an evolution loop recording its cycles).
    pub fn record_step(
        &self,
        agent: &str,
        module: ModuleHash,
        step: Step,
        detail: &str,
    ) -> Result<(), ShadowError> {
        self.ctx.step(agent, module, step, detail)
    }

    /// The module `agent` runs now (its registry record when journaling).
    pub fn current_module(&self, agent: &str) -> Result<BehaviourId, ShadowError> {
        self.ctx.current_module(agent)
    }

    /// `agent`'s evolution archive: every candidate admitted or refused, with its parents,
    /// origin, scores and how far it got (empty without a vault).
    pub fn archive(&self, agent: &str) -> Result<Vec<ArchiveEntry>, ShadowError> {
        let Some(vault) = self.ctx.system.vault() else {
            return Ok(Vec::new());
        };
        vault.archive(&agent_id(agent)?).map_err(ShadowError::Vault)
    }

    fn admit_module(
        &self,
        agent: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<ModuleHash, ShadowError> {
        let ctx = &self.ctx;
        let running = ctx.running(agent)?;
        let current = ctx.current_module(agent)?;
        let candidate = ctx
            .system
            .add_module(name, bytes)
            .map_err(|e| ShadowError::Refused(format!("module `{name}`: {e}")))?;
        let spec = running.spec();
        ctx.system
            .instantiate(
                &BehaviourId::Wasm(candidate),
                &spec.limits,
                &spec.capabilities,
            )
            .map_err(|source| ShadowError::NotGranted {
                agent: agent.into(),
                source,
            })?;
        ctx.record(LineageEvent::ModuleAdmitted {
            agent: agent_id(agent)?,
            parent: match current {
                BehaviourId::Wasm(hash) => Some(hash),
                BehaviourId::Native(_) => None,
            },
            candidate,
        })?;
        Ok(candidate)
    }

    /// Starts evaluating `candidate` (admitted) for `agent`, replies compared with `ignore`
    /// left out: the replay gate, then the shadows, then the verdict; with
    /// [`Approval::Auto`](crate::Approval::Auto) an approved candidate is promoted and watched.
    /// Returns at once; follow it with [`status`](Self::status) or [`wait`](Self::wait).
    pub fn evaluate(
        &self,
        agent: &str,
        candidate: ModuleHash,
        ignore: Vec<IgnoreRule>,
    ) -> Result<(), ShadowError> {
        self.evaluate_with(
            agent,
            candidate,
            EvaluationOptions {
                ignore,
                ..EvaluationOptions::default()
            },
        )
    }

    /// [`evaluate`](Self::evaluate) with every option. Refused at once
    /// ([`ShadowError::Refused`]) when shadows cannot run under the agent's exact limits.
    pub fn evaluate_with(
        &self,
        agent: &str,
        candidate: ModuleHash,
        options: EvaluationOptions,
    ) -> Result<(), ShadowError> {
        pipeline::start(&self.ctx, agent, candidate, options)
    }

    /// Promotes `agent`'s approved candidate (the verdict of
    /// [`Approval::Suggest`](crate::Approval::Suggest) waits for this), then watches it in the
    /// background. Returns once the swap is done.
    pub async fn promote(&self, agent: &str) -> Result<Promotion, ShadowError> {
        promotion::promote(&self.ctx, agent).await
    }

    /// Accepts `agent`'s rejected candidate, for `reason` (recorded in the lineage as the
    /// step `accepted`): a person read the graded differences and declares them intended.
    /// The candidate then awaits approval; [`promote`](Self::promote) swaps it in, checking
    /// its migration of production's state as for any promotion, and the watch follows.
    /// Refused without a reason, or when the evaluation is not rejected
    /// ([`ShadowError::NotRejected`]).
    pub fn accept(&self, agent: &str, reason: &str) -> Result<(), ShadowError> {
        if reason.trim().is_empty() {
            return Err(ShadowError::Refused(
                "accepting a rejected candidate needs a reason".into(),
            ));
        }
        let evaluation = self.ctx.evaluation(agent)?;
        evaluation
            .apply(&Event::Accepted(reason.to_string()))
            .map_err(|stage| ShadowError::NotRejected {
                agent: agent.into(),
                stage: format!("{stage:?}"),
            })?;
        let candidate = evaluation.get().candidate;
        self.ctx.step(agent, candidate, Step::Accepted, reason)
    }

    /// Rolls `agent` back to the module before its promotion, while the promotion is being
    /// watched (its checkpoint and journal are held until then): the promotion checkpoint is
    /// restored into the previous module and every input since is replayed through it.
    pub async fn rollback(&self, agent: &str, reason: &str) -> Result<Rollback, ShadowError> {
        promotion::rollback(&self.ctx, agent, reason).await
    }

    /// Stops `agent`'s evaluation (before promotion) or its watch (the promotion is kept).
    pub fn cancel(&self, agent: &str) -> Result<(), ShadowError> {
        let evaluation = self.ctx.evaluation(agent)?;
        // Waiting for a person, nothing runs: cancelled at once. Otherwise the running work
        // stops and reports how it ended.
        if evaluation.apply(&Event::CancelRequested).is_err() {
            evaluation.cancel_work();
        }
        Ok(())
    }

    /// `agent`'s current or last evaluation.
    pub fn status(&self, agent: &str) -> Option<EvaluationStatus> {
        let evaluation = self.ctx.evaluations.lock().get(agent).cloned();
        evaluation.map(|evaluation| evaluation.get())
    }

    /// Waits until `agent`'s evaluation satisfies `until` (e.g.
    /// [`EvaluationStatus::is_settled`]).
    pub async fn wait(
        &self,
        agent: &str,
        until: impl Fn(&EvaluationStatus) -> bool,
    ) -> Result<EvaluationStatus, ShadowError> {
        let evaluation = self.ctx.evaluation(agent)?;
        let mut changes = evaluation.subscribe();
        changes
            .wait_for(|status| until(status))
            .await
            // Only if the status's sender were dropped, which the evaluation holds.
            .map_err(|_| ShadowError::NoEvaluation(agent.into()))?;
        Ok(evaluation.get())
    }

    /// The lineage of `agent`: admissions, steps, verdicts with evidence, promotions,
    /// rollbacks, oldest first.
    pub fn history(&self, agent: &str) -> Result<Vec<LineageRecord>, ShadowError> {
        let vault = self.ctx.vault()?;
        vault
            .lineage_for(&agent_id(agent)?)
            .map_err(ShadowError::Vault)
    }
}
