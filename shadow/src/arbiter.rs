//! The [`Arbiter`]: admits candidates, runs the replay gate and the shadows, decides, promotes,
//! watches and rolls back, and records every step in the vault's lineage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arbor_agent::{AgentSystem, BehaviourId};
use arbor_vault::{AgentId, Evidence, LineageEvent, LineageRecord, ModuleHash, Verdict};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::ShadowError;
use crate::compare::IgnoreRule;
use crate::gate::{self, GateReport};
use crate::live::{Live, LiveEnd, Progress, WatchRule};
use crate::migration::MigrationRule;
use crate::policy::{Decision, Policy, ShadowLimits, Tally, decide};
use crate::shadow::Factory;

/// How long a rollback waits for a crashed agent to be restarted by its supervisor.
const ROLLBACK_WAIT: Duration = Duration::from_secs(10);

/// Who promotes an approved candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// The verdict waits for a person ([`Arbiter::promote`], `arborctl evolve promote`).
    Suggest,
    /// The arbiter promotes an approved candidate itself.
    Auto,
}

/// How the arbiter works. Deserialising fills fields a stored configuration lacks with their
/// defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArbiterConfig {
    /// Suggest or auto.
    pub approval: Approval,
    /// The decision rule's thresholds.
    pub policy: Policy,
    /// Budgets and limits of shadows.
    pub limits: ShadowLimits,
    /// The watch after a promotion lasts at least this long (the previous module runs as a
    /// reverse shadow)…
    pub watch: Duration,
    /// … and until it has compared at least this many inputs (default 3,000: the promoted
    /// module shows in production the bound the evaluation proved, and an instance old enough
    /// to show a bug that needs thousands of inputs).
    pub watch_samples: u64,
    /// A watch that has not its samples after this long ends, keeping the promotion and saying
    /// so in the lineage (`watch-incomplete`): the journal it holds cannot grow for ever.
    pub watch_max: Duration,
    /// Hold each of production's replies (and sends) during the watch until the reverse shadow
    /// agrees, and answer with the previous module's reply when it does not (then roll back):
    /// no wrong reply leaves, at the cost of the shadow's time on every reply and production
    /// waiting when the shadow falls behind.
    pub verified_watch: bool,
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        ArbiterConfig {
            approval: Approval::Suggest,
            policy: Policy::default(),
            limits: ShadowLimits::default(),
            watch: Duration::from_secs(60),
            watch_samples: 3_000,
            watch_max: Duration::from_secs(3_600),
            verified_watch: false,
        }
    }
}

/// What an evaluation compares and how, beyond the arbiter's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvaluationOptions {
    /// Parts of replies that may differ by design (GitHub Scientist's ignore rules).
    pub ignore: Vec<IgnoreRule>,
    /// How the candidate's migration of production's state is judged.
    pub migration: MigrationRule,
}

/// Where an evaluation is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Replaying the journal through candidate and current module, then starting the shadows.
    Gate,
    /// Shadows on mirrored traffic (from the moment production's inputs reach them).
    Shadowing,
    /// Approved; waiting for a person to promote.
    AwaitingApproval,
    /// Swapping.
    Promoting,
    /// Promoted; the previous module runs as a reverse shadow.
    Watching,
    /// Rolling back (a regression in the watch, or asked for).
    RollingBack,
    /// Over.
    Done(Outcome),
}

/// How an evaluation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Failed the gate or the decision rule.
    Rejected,
    /// Not promoted: the evidence could not tell (nondeterminism).
    Inconclusive,
    /// Promoted, and the watch found no regression.
    Promoted,
    /// Promoted, then rolled back.
    RolledBack,
    /// The arbiter could not go on.
    Failed(String),
    /// Cancelled.
    Cancelled,
}

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

/// Everything known about one agent's current (or last) evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationStatus {
    /// The agent.
    pub agent: String,
    /// The candidate.
    pub candidate: ModuleHash,
    /// The module the agent ran when the evaluation started.
    pub current: BehaviourId,
    /// Where it is.
    pub stage: Stage,
    /// The replay gate's report.
    pub gate: Option<GateReport>,
    /// The live comparison so far.
    pub shadow: Tally,
    /// The verdict.
    pub decision: Option<Decision>,
    /// The promotion, if any.
    pub promotion: Option<Promotion>,
    /// The watch's comparison so far.
    pub watch: Tally,
    /// The rollback, if any.
    pub rollback: Option<Rollback>,
}

impl EvaluationStatus {
    /// Whether the evaluation waits for nothing more (done, or waiting for a person).
    pub fn is_settled(&self) -> bool {
        matches!(self.stage, Stage::Done(_) | Stage::AwaitingApproval)
    }
}

/// What the vault keeps as a verdict's [`Evidence::detail`] (MessagePack, named fields):
/// decode it with [`VerdictDetail::decode`].
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
        rmp_serde::from_slice(detail)
            .map_err(|e| ShadowError::Vault(format!("verdict detail: {e}")))
    }
}

struct Evaluation {
    status: watch::Sender<EvaluationStatus>,
    progress: Mutex<Arc<Progress>>,
    options: EvaluationOptions,
}

impl Evaluation {
    fn update(&self, change: impl FnOnce(&mut EvaluationStatus)) {
        self.status.send_modify(change);
    }

    /// Moves to `to` if the stage is one `from` accepts; whether it did. Every party that may
    /// end a stage (the pipeline, the watch, a person) goes through this, so exactly one does.
    fn transition(&self, from: impl Fn(&Stage) -> bool, to: Stage) -> bool {
        self.status.send_if_modified(|status| {
            if from(&status.stage) {
                status.stage = to;
                true
            } else {
                false
            }
        })
    }

    fn get(&self) -> EvaluationStatus {
        let mut status = self.status.borrow().clone();
        let progress = self.progress.lock().tally.lock().clone();
        match status.stage {
            Stage::Shadowing => status.shadow = progress,
            Stage::Watching => status.watch = progress,
            _ => {}
        }
        status
    }
}

struct Inner {
    system: AgentSystem,
    config: ArbiterConfig,
    evaluations: Mutex<BTreeMap<String, Arc<Evaluation>>>,
}

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
    inner: Arc<Inner>,
}

impl Arbiter {
    /// The arbiter of `system`; refuses a configuration the rule cannot work with
    /// ([`ShadowError::Config`]). Reconciles the lineage with what the agents run: a watch the
    /// host did not live to finish ends with its promotion kept (the agents' recovery already
    /// made their module and state consistent), and the lineage says so.
    pub fn new(system: AgentSystem, config: ArbiterConfig) -> Result<Arbiter, ShadowError> {
        config.policy.validate()?;
        config.limits.validate()?;
        if config.watch > crate::policy::MAX_WINDOW {
            return Err(ShadowError::Config("watch must be at most a year".into()));
        }
        let arbiter = Arbiter {
            inner: Arc::new(Inner {
                system,
                config,
                evaluations: Mutex::new(BTreeMap::new()),
            }),
        };
        arbiter.reconcile()?;
        Ok(arbiter)
    }

    /// The system it works on.
    pub fn system(&self) -> &AgentSystem {
        &self.inner.system
    }

    /// The configuration.
    pub fn config(&self) -> &ArbiterConfig {
        &self.inner.config
    }

    fn reconcile(&self) -> Result<(), ShadowError> {
        let Some(vault) = self.inner.system.vault() else {
            return Ok(());
        };
        let lineage = vault.lineage().map_err(vault_error)?;
        let mut open: BTreeMap<AgentId, ModuleHash> = BTreeMap::new();
        for record in &lineage {
            match &record.event {
                LineageEvent::Promoted { agent, to, .. } => {
                    open.insert(agent.clone(), *to);
                }
                LineageEvent::RolledBack { agent, .. } => {
                    open.remove(agent);
                }
                LineageEvent::Step { agent, step, .. } if step.starts_with("watch-") => {
                    open.remove(agent);
                }
                _ => {}
            }
        }
        for (agent, promoted) in open {
            let running = vault
                .agent(&agent)
                .map_err(vault_error)?
                .map(|r| format!("{:?}", r.behaviour))
                .unwrap_or_else(|| "nothing".into());
            vault
                .append_lineage(LineageEvent::Step {
                    agent,
                    candidate: promoted,
                    step: "watch-interrupted".into(),
                    detail: format!(
                        "the host stopped during the watch; the agent runs {running} after recovery"
                    ),
                })
                .map_err(vault_error)?;
        }
        vault.sync().map_err(vault_error)
    }

    /// Admits `bytes` as a candidate module for `agent`: checks it against the ABI, compiles
    /// it, stores it in the vault by content hash, checks the agent's grants cover its imports,
    /// and records it in the lineage with the agent's current module as its parent.
    pub fn admit(&self, agent: &str, name: &str, bytes: &[u8]) -> Result<ModuleHash, ShadowError> {
        let system = &self.inner.system;
        let running = system
            .lookup(agent)
            .ok_or_else(|| ShadowError::UnknownAgent(agent.into()))?;
        let current = self.current_module(agent)?;
        let candidate = system
            .add_module(name, bytes)
            .map_err(|e| ShadowError::Refused(e.to_string()))?;
        let spec = running.spec();
        system
            .instantiate(
                &BehaviourId::Wasm(candidate),
                &spec.limits,
                &spec.capabilities,
            )
            .map_err(|e| ShadowError::Refused(format!("with {agent}'s grants: {e}")))?;
        self.record(LineageEvent::ModuleAdmitted {
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
    /// [`Approval::Auto`] an approved candidate is promoted and watched. Returns at once;
    /// follow it with [`status`](Self::status) or [`wait`](Self::wait).
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
        let system = &self.inner.system;
        let running = system
            .lookup(agent)
            .ok_or_else(|| ShadowError::UnknownAgent(agent.into()))?;
        let current = self.current_module(agent)?;
        let factory = self.factory(&running, &options.migration)?;
        let mut evaluations = self.inner.evaluations.lock();
        let busy = evaluations
            .values()
            .filter(|e| !matches!(e.status.borrow().stage, Stage::Done(_)))
            .count();
        if let Some(existing) = evaluations.get(agent)
            && !matches!(existing.status.borrow().stage, Stage::Done(_))
        {
            return Err(ShadowError::Busy(agent.into()));
        }
        if busy >= self.inner.config.limits.max_evaluations {
            return Err(ShadowError::TooManyEvaluations(
                self.inner.config.limits.max_evaluations,
            ));
        }
        let status = EvaluationStatus {
            agent: agent.into(),
            candidate,
            current: current.clone(),
            stage: Stage::Gate,
            gate: None,
            shadow: Tally::default(),
            decision: None,
            promotion: None,
            watch: Tally::default(),
            rollback: None,
        };
        let ignore = options.ignore.clone();
        let evaluation = Arc::new(Evaluation {
            status: watch::Sender::new(status),
            progress: Mutex::new(Arc::new(Progress::default())),
            options,
        });
        evaluations.insert(agent.into(), Arc::clone(&evaluation));
        drop(evaluations);
        let arbiter = self.clone();
        let agent = agent.to_string();
        tokio::spawn(async move {
            let pipeline =
                arbiter.pipeline(&evaluation, factory, &agent, current, candidate, ignore);
            if let Err(error) = pipeline.await {
                arbiter.failed(&evaluation, &agent, candidate, &error);
            }
        });
        Ok(())
    }

    async fn pipeline(
        &self,
        evaluation: &Arc<Evaluation>,
        factory: Factory,
        agent: &str,
        current: BehaviourId,
        candidate: ModuleHash,
        ignore: Vec<IgnoreRule>,
    ) -> Result<(), ShadowError> {
        let config = &self.inner.config;
        let candidate_id = BehaviourId::Wasm(candidate);
        self.step(agent, candidate, "gate", &format!("against {current}"))?;
        let gate = {
            let (factory, agent, current, candidate_id, ignore) = (
                factory.clone(),
                agent.to_string(),
                current.clone(),
                candidate_id.clone(),
                ignore.clone(),
            );
            let (policy, limits) = (config.policy.clone(), config.limits.clone());
            tokio::task::spawn_blocking(move || {
                gate::run(
                    &factory,
                    &agent,
                    &current,
                    &candidate_id,
                    ignore,
                    &policy,
                    &limits,
                )
            })
            .await
            .map_err(|e| ShadowError::Shadow(format!("the gate panicked: {e}")))??
        };
        let (gate, resume) = gate;
        evaluation.update(|s| s.gate = Some(gate.clone()));
        if !gate.passed {
            let decision = Decision {
                verdict: Verdict::Rejected,
                reasons: gate.reasons.iter().map(|r| format!("gate: {r}")).collect(),
                fuel: gate.fuel,
                fuel_by_kind: BTreeMap::new(),
                latency: None,
                bound: None,
            };
            self.verdict(evaluation, agent, candidate, decision)?;
            evaluation.update(|s| s.stage = Stage::Done(Outcome::Rejected));
            return Ok(());
        }

        self.step(
            agent,
            candidate,
            "shadows",
            "candidate and A/A control on mirrored traffic",
        )?;
        let progress = Arc::clone(&evaluation.progress.lock());
        let live = self.live(factory, agent, ignore, Arc::clone(&progress));
        let control = current.clone();
        let (mirroring, mirrored) = oneshot::channel();
        let shadows = tokio::task::spawn_blocking(move || {
            let end = live.evaluate(&control, &BehaviourId::Wasm(candidate), resume, mirroring);
            (end, live)
        });
        // Shadowing from the moment production's inputs reach the shadows (an error drops the
        // sender and ends the wait).
        if mirrored.await.is_ok() {
            evaluation.transition(|s| *s == Stage::Gate, Stage::Shadowing);
        }
        let (end, live) = shadows
            .await
            .map_err(|e| ShadowError::Shadow(format!("the shadows panicked: {e}")))?;
        let tally = progress.tally.lock().clone();
        evaluation.update(|s| s.shadow = tally.clone());
        let mut decision = decide(&tally, &config.policy);
        match end {
            LiveEnd::Cancelled => {
                evaluation.update(|s| s.stage = Stage::Done(Outcome::Cancelled));
                return self.step(agent, candidate, "cancelled", "");
            }
            LiveEnd::Failed(reason) => {
                decision.verdict = Verdict::Rejected;
                decision.reasons.insert(0, reason);
            }
            LiveEnd::Complete
            | LiveEnd::TimeUp
            | LiveEnd::Regression(_)
            | LiveEnd::Incomplete(_) => {}
        }
        let verdict = decision.verdict;
        self.verdict(evaluation, agent, candidate, decision)?;
        match verdict {
            Verdict::Rejected => evaluation.update(|s| s.stage = Stage::Done(Outcome::Rejected)),
            Verdict::Inconclusive => {
                evaluation.update(|s| s.stage = Stage::Done(Outcome::Inconclusive));
            }
            Verdict::Approved => match config.approval {
                Approval::Suggest => {
                    evaluation.transition(|s| *s == Stage::Shadowing, Stage::AwaitingApproval);
                }
                Approval::Auto => {
                    if evaluation.transition(|s| *s == Stage::Shadowing, Stage::Promoting) {
                        self.promote_evaluated(evaluation, live, current, candidate)
                            .await?;
                    }
                }
            },
        }
        Ok(())
    }

    fn verdict(
        &self,
        evaluation: &Evaluation,
        agent: &str,
        candidate: ModuleHash,
        decision: Decision,
    ) -> Result<(), ShadowError> {
        let status = evaluation.status.borrow().clone();
        let tally = &status.shadow;
        let mut fields = BTreeMap::new();
        let mut field = |name: &str, value: String| fields.insert(name.to_string(), value);
        if let Some(gate) = &status.gate {
            field("gate_inputs", gate.tally.samples.to_string());
            field("gate_passed", gate.passed.to_string());
        }
        field("samples", tally.samples.to_string());
        field("live_samples", tally.live_samples.to_string());
        field("candidate_age", tally.candidate_age.to_string());
        if let Some(bound) = &decision.bound {
            field("failure_rate_bound", format!("{:.6}", bound.upper));
            field("bound_confidence", format!("{}", bound.confidence));
        }
        field("mismatches", tally.mismatch_count().to_string());
        field("candidate_errors", tally.error_count().to_string());
        field("aa_mismatches", tally.aa_mismatches.to_string());
        field("gaps", tally.gaps.to_string());
        if let Some(fuel) = &decision.fuel {
            field("fuel_shift", format!("{:+.4}", fuel.shift));
        }
        if let Some(latency) = &decision.latency {
            field("latency_shift", format!("{:+.4}", latency.shift));
        }
        let summary = if decision.reasons.is_empty() {
            format!(
                "{:?}: {}, fuel {}",
                decision.verdict,
                decision
                    .bound
                    .as_ref()
                    .map_or_else(|| format!("{} samples", tally.samples), |b| b.to_string()),
                decision
                    .fuel
                    .map_or("n/a".into(), |f| format!("{:+.1}%", f.shift * 100.0))
            )
        } else {
            format!("{:?}: {}", decision.verdict, decision.reasons.join("; "))
        };
        let detail = rmp_serde::to_vec_named(&VerdictDetail {
            gate: status.gate.clone(),
            shadow: tally.clone(),
            decision: decision.clone(),
        })
        .map_err(|e| ShadowError::Shadow(e.to_string()))?;
        let verdict = match decision.verdict {
            Verdict::Approved => "approved",
            Verdict::Rejected => "rejected",
            Verdict::Inconclusive => "inconclusive",
        };
        metrics::counter!(arbor_metrics::VERDICTS, "verdict" => verdict).increment(1);
        self.record(LineageEvent::Verdict {
            agent: agent_id(agent)?,
            candidate,
            verdict: decision.verdict,
            evidence: Evidence {
                summary,
                fields,
                detail,
            },
        })?;
        evaluation.update(|s| s.decision = Some(decision));
        Ok(())
    }

    /// Promotes `agent`'s approved candidate (the verdict of [`Approval::Suggest`] waits for
    /// this), then watches it in the background. Returns once the swap is done.
    pub async fn promote(&self, agent: &str) -> Result<Promotion, ShadowError> {
        let evaluation = self.evaluation(agent)?;
        if !evaluation.transition(|s| *s == Stage::AwaitingApproval, Stage::Promoting) {
            return Err(ShadowError::NotAwaitingApproval {
                agent: agent.into(),
                stage: format!("{:?}", evaluation.status.borrow().stage),
            });
        }
        let status = evaluation.status.borrow().clone();
        let result = self.promote_approved(&evaluation, agent, &status).await;
        if let Err(error) = &result {
            self.failed(&evaluation, agent, status.candidate, error);
        }
        result
    }

    async fn promote_approved(
        &self,
        evaluation: &Arc<Evaluation>,
        agent: &str,
        status: &EvaluationStatus,
    ) -> Result<Promotion, ShadowError> {
        let running = self
            .inner
            .system
            .lookup(agent)
            .ok_or_else(|| ShadowError::UnknownAgent(agent.into()))?;
        let live = self.live(
            self.factory(&running, &evaluation.options.migration)?,
            agent,
            evaluation.options.ignore.clone(),
            Arc::new(Progress::default()),
        );
        self.promote_evaluated(evaluation, live, status.current.clone(), status.candidate)
            .await?;
        evaluation
            .get()
            .promotion
            .ok_or_else(|| ShadowError::Shadow("promotion not recorded".into()))
    }

    /// The swap, then the watch in the background. The reverse shadow's mirror goes in before
    /// the swap, so it sees every input from the previous module's last state on.
    async fn promote_evaluated(
        &self,
        evaluation: &Arc<Evaluation>,
        mut live: Live,
        current: BehaviourId,
        candidate: ModuleHash,
    ) -> Result<(), ShadowError> {
        let agent = live.agent.clone();
        let promoted = BehaviourId::Wasm(candidate);
        self.step(&agent, candidate, "promoting", &format!("from {current}"))?;
        let progress = Arc::new(Progress::default());
        live.progress = Arc::clone(&progress);
        *evaluation.progress.lock() = Arc::clone(&progress);
        let (ready, tapped) = oneshot::channel();
        let (regressed, regression) = oneshot::channel();
        let config = &self.inner.config;
        let rule = WatchRule {
            window: config.watch,
            samples: config.watch_samples,
            max: config.watch_max.max(config.watch),
            verified: config.verified_watch,
        };
        let migration = live.factory.migration.clone();
        let (previous, next) = (current.clone(), promoted.clone());
        let mut watcher = tokio::task::spawn_blocking(move || {
            live.watch(&previous, &next, rule, ready, regressed)
        });
        let tapped = tapped
            .await
            .map_err(|_| ShadowError::Shadow("the watch did not start".into()))?;
        if let Err(reason) = tapped {
            progress.cancel.store(true, Ordering::Release);
            return Err(ShadowError::Shadow(format!(
                "the watch could not start: {reason}"
            )));
        }
        let system = &self.inner.system;
        let running = system
            .lookup(&agent)
            .ok_or_else(|| ShadowError::UnknownAgent(agent.clone()))?;
        // The swap itself checks the migration of the state it carries over, the latest
        // production has (issue 17.1: the state evaluated earlier is only a sample of it).
        let check: arbor_agent::StateCheck = Box::new(move |state, migrated| {
            crate::migration::check(&migration, state, migrated).map_err(|loss| loss.to_string())
        });
        let report = match system
            .promote_module_checked(&running, promoted.clone(), check)
            .await
        {
            Ok(report) => report,
            Err(error) => {
                progress.cancel.store(true, Ordering::Release);
                return Err(ShadowError::Refused(format!("promotion failed: {error}")));
            }
        };
        metrics::counter!(arbor_metrics::PROMOTIONS).increment(1);
        metrics::histogram!(arbor_metrics::PROMOTION_PAUSE_SECONDS).record(report.pause);
        let promotion = Promotion {
            from: current.clone(),
            pause: report.pause,
            state_bytes: report.state_bytes,
            seq: report.seq,
            checkpoint_lsn: report.checkpoint_lsn,
        };
        // The swap is done: from here a failure to record it must not undo the promotion.
        if let BehaviourId::Wasm(from) = &current {
            let promoted = agent_id(&agent).and_then(|agent| {
                self.record(LineageEvent::Promoted {
                    agent,
                    from: *from,
                    to: candidate,
                    checkpoint_lsn: report.checkpoint_lsn.unwrap_or(0),
                })
            });
            if let Err(error) = promoted {
                tracing::warn!(agent, %error, "promotion not recorded in the lineage");
            }
        }
        evaluation.update(|s| {
            s.promotion = Some(promotion);
            s.stage = Stage::Watching;
        });
        let arbiter = self.clone();
        let evaluation = Arc::clone(evaluation);
        tokio::spawn(async move {
            // A verified watch reports a regression and goes on answering until the rollback
            // is done; a plain one ends with it.
            let end = tokio::select! {
                end = &mut watcher => end,
                Ok(reason) = regression => {
                    if evaluation.transition(|s| *s == Stage::Watching, Stage::RollingBack)
                        && let Err(error) = arbiter
                            .roll_back(&evaluation, &agent, candidate, reason, "watch")
                            .await
                    {
                        tracing::warn!(agent, %error, "the verified watch's rollback failed");
                    }
                    progress.cancel.store(true, Ordering::Release);
                    let _ = (&mut watcher).await;
                    let tally = progress.tally.lock().clone();
                    evaluation.update(|s| s.watch = tally);
                    return;
                }
            };
            let end = end.unwrap_or_else(|e| LiveEnd::Failed(format!("the watch panicked: {e}")));
            let tally = progress.tally.lock().clone();
            evaluation.update(|s| s.watch = tally);
            if let Err(error) = arbiter.end_watch(&evaluation, &agent, candidate, end).await {
                tracing::warn!(agent, %error, "the watch failed to end");
                evaluation.update(|s| s.stage = Stage::Done(Outcome::Failed(error.to_string())));
            }
        });
        Ok(())
    }

    async fn end_watch(
        &self,
        evaluation: &Arc<Evaluation>,
        agent: &str,
        candidate: ModuleHash,
        end: LiveEnd,
    ) -> Result<(), ShadowError> {
        let watching = |s: &Stage| *s == Stage::Watching;
        let (step, detail) = match end {
            LiveEnd::Regression(reason) => {
                if evaluation.transition(watching, Stage::RollingBack) {
                    return self
                        .roll_back(evaluation, agent, candidate, reason, "watch")
                        .await;
                }
                // A person is already rolling back.
                return Ok(());
            }
            LiveEnd::Cancelled => ("watch-cancelled", "cancelled; promotion kept".to_string()),
            LiveEnd::TimeUp | LiveEnd::Complete => {
                ("watch-passed", "no regression in the window".to_string())
            }
            LiveEnd::Incomplete(reason) => (
                "watch-incomplete",
                format!(
                    "the watch ended without the samples its rule asks for, promotion kept: {reason}"
                ),
            ),
            LiveEnd::Failed(reason) => (
                "watch-ended",
                format!("watch ended early, promotion kept: {reason}"),
            ),
        };
        if !evaluation.transition(watching, Stage::Done(Outcome::Promoted)) {
            // A rollback took over.
            return Ok(());
        }
        self.inner.system.release_hold(agent);
        self.step(agent, candidate, step, &detail)
    }

    /// Ends an evaluation that could not go on: the hold (if any) released, the failure
    /// recorded.
    fn failed(
        &self,
        evaluation: &Evaluation,
        agent: &str,
        candidate: ModuleHash,
        error: &ShadowError,
    ) {
        tracing::warn!(agent, %error, "evaluation failed");
        evaluation
            .progress
            .lock()
            .cancel
            .store(true, Ordering::Release);
        self.inner.system.release_hold(agent);
        let _ = self.step(agent, candidate, "failed", &error.to_string());
        evaluation.update(|s| s.stage = Stage::Done(Outcome::Failed(error.to_string())));
    }

    /// Rolls `agent` back to the module before its promotion, while the promotion is being
    /// watched (its checkpoint and journal are held until then): the promotion checkpoint is
    /// restored into the previous module and every input since is replayed through it.
    pub async fn rollback(&self, agent: &str, reason: &str) -> Result<Rollback, ShadowError> {
        let evaluation = self.evaluation(agent)?;
        if !evaluation.transition(|s| *s == Stage::Watching, Stage::RollingBack) {
            return Err(ShadowError::NotWatching {
                agent: agent.into(),
                stage: format!("{:?}", evaluation.status.borrow().stage),
            });
        }
        let status = evaluation.status.borrow().clone();
        evaluation
            .progress
            .lock()
            .cancel
            .store(true, Ordering::Release);
        self.roll_back(
            &evaluation,
            agent,
            status.candidate,
            reason.into(),
            "operator",
        )
        .await?;
        evaluation
            .get()
            .rollback
            .ok_or_else(|| ShadowError::Shadow("rollback not recorded".into()))
    }

    async fn roll_back(
        &self,
        evaluation: &Arc<Evaluation>,
        agent: &str,
        candidate: ModuleHash,
        reason: String,
        trigger: &'static str,
    ) -> Result<(), ShadowError> {
        let result = self
            .roll_back_inner(evaluation, agent, candidate, reason)
            .await;
        if result.is_ok() {
            metrics::counter!(arbor_metrics::ROLLBACKS, "trigger" => trigger).increment(1);
        }
        if let Err(error) = &result {
            self.failed(evaluation, agent, candidate, error);
        }
        result
    }

    async fn roll_back_inner(
        &self,
        evaluation: &Arc<Evaluation>,
        agent: &str,
        candidate: ModuleHash,
        reason: String,
    ) -> Result<(), ShadowError> {
        let status = evaluation.status.borrow().clone();
        let promotion = status
            .promotion
            .ok_or_else(|| ShadowError::Shadow("no promotion to roll back".into()))?;
        let lsn = promotion
            .checkpoint_lsn
            .ok_or_else(|| ShadowError::Shadow("the promotion checkpoint was not stored".into()))?;
        self.step(agent, candidate, "rolling-back", &reason)?;
        let system = &self.inner.system;
        // A promoted module that crashed is being restarted by its supervisor: wait for it.
        let deadline = tokio::time::Instant::now() + ROLLBACK_WAIT;
        let running = loop {
            if let Some(running) = system.lookup(agent) {
                break running;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ShadowError::UnknownAgent(agent.into()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let report = system
            .rollback_module(&running, promotion.from.clone(), lsn)
            .await
            .map_err(|e| ShadowError::Refused(format!("rollback failed: {e}")))?;
        metrics::histogram!(arbor_metrics::PROMOTION_PAUSE_SECONDS).record(report.pause);
        if let BehaviourId::Wasm(to) = &promotion.from {
            self.record(LineageEvent::RolledBack {
                agent: agent_id(agent)?,
                from: candidate,
                to: *to,
                reason: reason.clone(),
            })?;
        }
        let rollback = Rollback {
            reason,
            pause: report.pause,
            replayed: report.replayed,
        };
        evaluation.update(|s| {
            s.rollback = Some(rollback);
            s.stage = Stage::Done(Outcome::RolledBack);
        });
        Ok(())
    }

    /// Stops `agent`'s evaluation (before promotion) or its watch (the promotion is kept).
    pub fn cancel(&self, agent: &str) -> Result<(), ShadowError> {
        let evaluation = self.evaluation(agent)?;
        if !evaluation.transition(
            |s| *s == Stage::AwaitingApproval,
            Stage::Done(Outcome::Cancelled),
        ) {
            evaluation
                .progress
                .lock()
                .cancel
                .store(true, Ordering::Release);
        }
        Ok(())
    }

    /// `agent`'s current or last evaluation.
    pub fn status(&self, agent: &str) -> Option<EvaluationStatus> {
        self.inner
            .evaluations
            .lock()
            .get(agent)
            .map(|evaluation| evaluation.get())
    }

    /// Waits until `agent`'s evaluation satisfies `until` (e.g.
    /// [`EvaluationStatus::is_settled`]).
    pub async fn wait(
        &self,
        agent: &str,
        until: impl Fn(&EvaluationStatus) -> bool,
    ) -> Result<EvaluationStatus, ShadowError> {
        let evaluation = self.evaluation(agent)?;
        let mut changes = evaluation.status.subscribe();
        changes
            .wait_for(|status| until(status))
            .await
            .map_err(|_| ShadowError::Shadow("the evaluation is gone".into()))?;
        Ok(evaluation.get())
    }

    /// The lineage of `agent`: admissions, steps, verdicts with evidence, promotions,
    /// rollbacks, oldest first.
    pub fn history(&self, agent: &str) -> Result<Vec<LineageRecord>, ShadowError> {
        let vault = self.vault()?;
        vault.lineage_for(&agent_id(agent)?).map_err(vault_error)
    }

    /// Shadow instances for `running`: its grants and its exact limits, or why they cannot
    /// run under them.
    fn factory(
        &self,
        running: &arbor_agent::AgentRef,
        migration: &MigrationRule,
    ) -> Result<Factory, ShadowError> {
        let spec = running.spec();
        Factory::new(
            self.inner.system.clone(),
            &spec.limits,
            spec.capabilities.clone(),
            &self.inner.config.limits,
            migration.clone(),
        )
    }

    /// A live run (evaluation or watch) of `agent`'s shadows.
    fn live(
        &self,
        factory: Factory,
        agent: &str,
        ignore: Vec<IgnoreRule>,
        progress: Arc<Progress>,
    ) -> Live {
        Live {
            factory,
            agent: agent.into(),
            ignore,
            policy: self.inner.config.policy.clone(),
            limits: self.inner.config.limits.clone(),
            progress,
            handle: tokio::runtime::Handle::current(),
        }
    }

    fn evaluation(&self, agent: &str) -> Result<Arc<Evaluation>, ShadowError> {
        self.inner
            .evaluations
            .lock()
            .get(agent)
            .cloned()
            .ok_or_else(|| ShadowError::NoEvaluation(agent.into()))
    }

    /// The module `agent` runs: the registry's record when journaling, else its spec.
    fn current_module(&self, agent: &str) -> Result<BehaviourId, ShadowError> {
        let system = &self.inner.system;
        if let Some(vault) = system.vault()
            && let Some(record) = vault.agent(&agent_id(agent)?).map_err(vault_error)?
        {
            return Ok(match record.behaviour {
                arbor_vault::Behaviour::Wasm(hash) => BehaviourId::Wasm(hash),
                arbor_vault::Behaviour::Native(name) => BehaviourId::Native(name),
            });
        }
        system
            .lookup(agent)
            .map(|agent| agent.spec().behaviour.clone())
            .ok_or_else(|| ShadowError::UnknownAgent(agent.into()))
    }

    fn vault(&self) -> Result<&arbor_vault::Vault, ShadowError> {
        self.inner
            .system
            .vault()
            .ok_or_else(|| ShadowError::Vault("the system does not journal".into()))
    }

    fn record(&self, event: LineageEvent) -> Result<(), ShadowError> {
        let Some(vault) = self.inner.system.vault() else {
            return Ok(());
        };
        vault.append_lineage(event).map_err(vault_error)?;
        vault.flush().map(drop).map_err(vault_error)
    }

    fn step(
        &self,
        agent: &str,
        candidate: ModuleHash,
        step: &str,
        detail: &str,
    ) -> Result<(), ShadowError> {
        self.record(LineageEvent::Step {
            agent: agent_id(agent)?,
            candidate,
            step: step.into(),
            detail: detail.into(),
        })
    }
}

fn agent_id(agent: &str) -> Result<AgentId, ShadowError> {
    AgentId::new(agent).map_err(|e| ShadowError::UnknownAgent(format!("{agent}: {e}")))
}

fn vault_error(error: arbor_vault::Error) -> ShadowError {
    ShadowError::Vault(error.to_string())
}
