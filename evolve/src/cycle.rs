//! The continuous loop: each cycle chooses parents from the archive, asks the sources for
//! candidates, takes each through the arbiter (gate, shadows, verdict, and the promotion the
//! agent's approval mode allows), tells the sources what each measured, and writes a report.
//!
//! The loop adds no way around the arbiter: a candidate reaches production only by the
//! arbiter's verdict and promotion. With [`Approval::Suggest`] the first approved candidate of a
//! cycle waits for a person, and the loop tries nothing more for the agent until that
//! evaluation is over (the arbiter runs one evaluation per agent).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbor_agent::BehaviourId;
use arbor_shadow::{Approval, Arbiter, EvaluationOptions, EvaluationStatus, Outcome, Stage};
use arbor_vault::{ArchiveEntry, ModuleHash, Reached};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::EvolveError;
use crate::select::{Direction, choose_parents, contenders};
use crate::source::{CandidateSource, Offer, Parent, Request};

/// How the loop runs for one agent.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// The agent evolved.
    pub agent: String,
    /// How each candidate is evaluated: objectives, ignore rules, comparator, shadows' place.
    pub options: EvaluationOptions,
    /// Candidates tried per cycle at most (the cycle's budget).
    pub candidates_per_cycle: usize,
    /// The longest one evaluation may take, watch included; past it the evaluation is
    /// cancelled and counts as failed.
    pub evaluation_deadline: Duration,
    /// The score the sources learn from and parents are ranked by (an archive score name such
    /// as `fuel` or `score.hits`), and which way is better.
    pub fitness: (String, Direction),
    /// Parents drawn from the archive per cycle, besides the agent's current module.
    pub parents: usize,
    /// Seeds the choice of parents.
    pub seed: u64,
}

impl LoopConfig {
    /// A loop for `agent` judging candidates on `fitness` (lower fuel, by default).
    pub fn new(agent: &str) -> LoopConfig {
        LoopConfig {
            agent: agent.into(),
            options: EvaluationOptions::default(),
            candidates_per_cycle: 4,
            evaluation_deadline: Duration::from_secs(600),
            fitness: ("fuel".into(), Direction::Lower),
            parents: 2,
            seed: 0,
        }
    }
}

/// What became of one candidate in a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    /// The module (a refused source: a hash of what was offered), hex.
    pub module: String,
    /// Its name.
    pub name: String,
    /// The source that offered it.
    pub source: String,
    /// Where it came from, for people.
    pub origin: String,
    /// How far it got: `refused`, `gate`, `shadows`, `promoted`, `awaiting approval`,
    /// `rolled back`, `cancelled`, `failed`, or `production` (the module production runs,
    /// proposed again: not evaluated).
    pub outcome: String,
    /// Why it stopped there.
    pub reason: Option<String>,
    /// Its fitness as measured, if it got that far.
    pub fitness: Option<f64>,
    /// The candidate's mean per input of each measure, as the arbiter measured it.
    pub scores: BTreeMap<String, f64>,
}

/// One cycle's report (also as Markdown: [`CycleReport::markdown`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleReport {
    /// The agent.
    pub agent: String,
    /// The cycle's number, from 1.
    pub cycle: u32,
    /// When it began, ms since the Unix epoch.
    pub started_ms: u64,
    /// How long it took, ms.
    pub took_ms: u64,
    /// The module production ran when the cycle began, hex.
    pub production_before: String,
    /// The module production runs after it, hex.
    pub production_after: String,
    /// The candidates tried, in order.
    pub tried: Vec<Tried>,
    /// The fitness measure and direction.
    pub fitness: (String, Direction),
    /// The best fitness of any promoted candidate so far, after each cycle: the objective's
    /// trend.
    pub trend: Vec<Option<f64>>,
    /// Set when the cycle stopped early: an approved candidate waits for a person, or the
    /// agent is busy with an evaluation the loop did not start.
    pub waiting: Option<String>,
}

impl CycleReport {
    /// The report for people.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {} — evolution cycle {}\n", self.agent, self.cycle);
        let _ = writeln!(
            out,
            "Took {:.1} s. Production before: `{}`, after: `{}`.\n",
            self.took_ms as f64 / 1000.0,
            short(&self.production_before),
            short(&self.production_after),
        );
        let (name, direction) = &self.fitness;
        let _ = writeln!(
            out,
            "| candidate | source | origin | outcome | {name} ({}) | reason |",
            match direction {
                Direction::Lower => "lower is better",
                Direction::Higher => "higher is better",
            }
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for tried in &self.tried {
            let _ = writeln!(
                out,
                "| `{}` {} | {} | {} | {} | {} | {} |",
                short(&tried.module),
                tried.name,
                tried.source,
                tried.origin,
                tried.outcome,
                tried
                    .fitness
                    .map_or_else(|| "—".into(), |f| format!("{f:.1}")),
                tried
                    .reason
                    .as_deref()
                    .map_or_else(String::new, |r| one_line(r, 120)),
            );
        }
        let trend: Vec<String> = self
            .trend
            .iter()
            .map(|t| t.map_or_else(|| "—".into(), |f| format!("{f:.1}")))
            .collect();
        let _ = writeln!(
            out,
            "\nBest promoted {name} by cycle: {}",
            trend.join(" → ")
        );
        if let Some(waiting) = &self.waiting {
            let _ = writeln!(out, "\nStopped early: {waiting}");
        }
        out
    }
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default().replace('|', "/");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The loop for one agent: its sources, its state between cycles.
pub struct EvolutionLoop {
    arbiter: Arbiter,
    config: LoopConfig,
    sources: Vec<Box<dyn CandidateSource>>,
    rng: ChaCha8Rng,
    cycles: u32,
    trend: Vec<Option<f64>>,
    /// Production's fitness on a scale that is the same across evaluations: each evaluation
    /// measures candidate and control on the same inputs, so the candidate's level is
    /// production's level times (lower is better) or plus (higher) that paired comparison,
    /// and a promotion makes it production's. Means alone would move with each evaluation's
    /// inputs (how many came from the journal, how warm the traffic found the module).
    level: f64,
}

impl std::fmt::Debug for EvolutionLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvolutionLoop")
            .field("agent", &self.config.agent)
            .field("cycles", &self.cycles)
            .finish()
    }
}

impl EvolutionLoop {
    /// A loop over `sources`, asked in turn each cycle.
    pub fn new(
        arbiter: Arbiter,
        config: LoopConfig,
        sources: Vec<Box<dyn CandidateSource>>,
    ) -> Result<EvolutionLoop, EvolveError> {
        if config.candidates_per_cycle == 0 {
            return Err(EvolveError::BadConfig(
                "candidates_per_cycle must be at least 1".into(),
            ));
        }
        if sources.is_empty() {
            return Err(EvolveError::BadConfig("no candidate sources".into()));
        }
        let level = match config.fitness.1 {
            Direction::Lower => 1.0,
            Direction::Higher => 0.0,
        };
        Ok(EvolutionLoop {
            level,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            arbiter,
            config,
            sources,
            cycles: 0,
            trend: Vec::new(),
        })
    }

    /// Cycles run so far.
    pub fn cycles(&self) -> u32 {
        self.cycles
    }

    /// Runs one cycle (see the module docs).
    pub async fn cycle(&mut self) -> Result<CycleReport, EvolveError> {
        let started = std::time::Instant::now();
        let started_ms = now_ms();
        self.cycles += 1;
        let agent = self.config.agent.clone();
        let before = self.current(&agent)?;
        let mut report = CycleReport {
            agent: agent.clone(),
            cycle: self.cycles,
            started_ms,
            took_ms: 0,
            production_before: before.to_string(),
            production_after: before.to_string(),
            tried: Vec::new(),
            fitness: self.config.fitness.clone(),
            trend: Vec::new(),
            waiting: None,
        };
        if let Some(status) = self.arbiter.status(&agent)
            && !matches!(status.stage, Stage::Done(_))
        {
            report.waiting = Some(format!(
                "{agent} is in an evaluation of {} ({:?})",
                status.candidate.short(),
                status.stage
            ));
            return Ok(self.finish(report, started));
        }
        let parents = self.parents(&agent, before)?;
        let mut budget = self.config.candidates_per_cycle;
        let mut source_at = 0;
        let mut idle = 0;
        while budget > 0 && idle < self.sources.len() {
            let at = source_at % self.sources.len();
            source_at += 1;
            let offers = self.sources[at].propose(&Request {
                parents: &parents,
                max: budget.min(2),
            })?;
            if offers.is_empty() {
                idle += 1;
                continue;
            }
            idle = 0;
            for offer in offers {
                budget = budget.saturating_sub(1);
                let tried = self.try_offer(at, offer).await?;
                let waiting = tried.outcome == "awaiting approval";
                report.tried.push(tried);
                if waiting {
                    report.waiting =
                        Some("an approved candidate awaits a person (approval: suggest)".into());
                    return Ok(self.finish(report, started));
                }
            }
        }
        Ok(self.finish(report, started))
    }

    fn finish(&mut self, mut report: CycleReport, started: std::time::Instant) -> CycleReport {
        metrics::counter!(arbor_metrics::EVOLUTION_CYCLES).increment(1);
        for tried in &report.tried {
            let outcome = match tried.outcome.as_str() {
                "refused" => "refused",
                "gate" => "gate",
                "shadows" => "shadows",
                "awaiting approval" => "approved",
                "promoted" => "promoted",
                "rolled back" => "rolled_back",
                // Not a candidate: production proposed again.
                "production" => continue,
                _ => "failed",
            };
            metrics::counter!(arbor_metrics::EVOLUTION_CANDIDATES, "outcome" => outcome)
                .increment(1);
        }
        if let Ok(after) = self.current(&report.agent) {
            report.production_after = after.to_string();
        }
        let best = self.best_promoted(&report.agent);
        self.trend.push(best);
        report.trend = self.trend.clone();
        report.took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            agent = report.agent,
            cycle = report.cycle,
            tried = report.tried.len(),
            "evolution cycle done"
        );
        report
    }

    fn current(&self, agent: &str) -> Result<ModuleHash, EvolveError> {
        match self.arbiter.current_module(agent)? {
            BehaviourId::Wasm(hash) => Ok(hash),
            BehaviourId::Native(name) => Err(EvolveError::BadModule(format!(
                "{agent} runs the native behaviour `{name}`, not a module"
            ))),
        }
    }

    fn bytes(&self, module: &ModuleHash) -> Result<Option<Arc<[u8]>>, EvolveError> {
        let Some(vault) = self.arbiter.system().vault() else {
            return Ok(None);
        };
        Ok(vault.module_bytes(module)?.map(Arc::from))
    }

    /// The current module, then parents drawn from the archive.
    fn parents(&mut self, agent: &str, current: ModuleHash) -> Result<Vec<Parent>, EvolveError> {
        let mut parents = Vec::new();
        let bytes = self.bytes(&current)?.ok_or_else(|| {
            EvolveError::BadModule(format!("the module {agent} runs is not in the vault"))
        })?;
        parents.push(Parent {
            module: current,
            bytes,
        });
        let archive = self.arbiter.archive(agent)?;
        let pool = contenders(&archive, std::slice::from_ref(&self.config.fitness), |s| {
            self.fitness_of(s)
        });
        for at in choose_parents(&pool, self.config.parents, &mut self.rng) {
            let module = pool[at].module;
            if parents.iter().any(|p| p.module == module) {
                continue;
            }
            if let Some(bytes) = self.bytes(&module)? {
                parents.push(Parent { module, bytes });
            }
        }
        Ok(parents)
    }

    /// Higher is fitter: the fitness score, negated when lower is better; the least fit
    /// without it.
    fn fitness_of(&self, scores: &BTreeMap<String, f64>) -> f64 {
        let (name, direction) = &self.config.fitness;
        match (scores.get(name), direction) {
            (Some(v), Direction::Higher) => *v,
            (Some(v), Direction::Lower) => -*v,
            (None, _) => f64::NEG_INFINITY,
        }
    }

    /// The candidate's level (see [`EvolutionLoop::level`]) from its paired measurement.
    fn level_of(&self, scores: &BTreeMap<String, f64>) -> Option<f64> {
        let name = &self.config.fitness.0;
        let candidate = *scores.get(name)?;
        let control = *scores.get(&format!("{name}.control"))?;
        match self.config.fitness.1 {
            Direction::Lower if control > 0.0 => Some(self.level * candidate / control),
            Direction::Lower => None,
            Direction::Higher => Some(self.level + (candidate - control)),
        }
    }

    fn best_promoted(&self, agent: &str) -> Option<f64> {
        let archive = self.arbiter.archive(agent).ok()?;
        let (name, direction) = &self.config.fitness;
        let promoted = archive
            .iter()
            .filter(|e| e.reached == Reached::Promoted)
            .filter_map(|e| e.scores.get(name).copied());
        match direction {
            Direction::Lower => promoted.reduce(f64::min),
            Direction::Higher => promoted.reduce(f64::max),
        }
    }

    /// Takes one offer through the arbiter and tells its source what it measured.
    async fn try_offer(&mut self, source_at: usize, offer: Offer) -> Result<Tried, EvolveError> {
        let agent = self.config.agent.clone();
        let source = self.sources[source_at].name().to_owned();
        let candidate = match offer {
            Offer::Refused {
                name,
                offered,
                parents,
                origin,
                reason,
            } => {
                let origin_text = origin.to_string();
                self.arbiter
                    .refuse(&agent, offered, origin, parents, &reason)?;
                self.sources[source_at].learn(&[(offered, None)]);
                return Ok(Tried {
                    module: offered.to_string(),
                    name,
                    source,
                    origin: origin_text,
                    outcome: "refused".into(),
                    reason: Some(reason),
                    fitness: None,
                    scores: BTreeMap::new(),
                });
            }
            Offer::Candidate(candidate) => candidate,
        };
        let origin_text = candidate.origin.to_string();
        let module = ModuleHash::of(&candidate.bytes);
        // Production itself, proposed again (after a restart, the search does not know what
        // it tried): nothing to compare; it is as fit as production.
        if self.current(&agent)? == module {
            let fitness = match self.config.fitness.1 {
                Direction::Lower => -self.level,
                Direction::Higher => self.level,
            };
            self.sources[source_at].learn(&[(module, Some(fitness))]);
            return Ok(Tried {
                module: module.to_string(),
                name: candidate.name,
                source,
                origin: origin_text,
                outcome: "production".into(),
                reason: Some("the module production runs".into()),
                fitness: None,
                scores: BTreeMap::new(),
            });
        }
        let mut tried = Tried {
            module: ModuleHash::of(&candidate.bytes).to_string(),
            name: candidate.name.clone(),
            source,
            origin: origin_text,
            outcome: String::new(),
            reason: None,
            fitness: None,
            scores: BTreeMap::new(),
        };
        let admitted = self.arbiter.admit_from(
            &agent,
            &candidate.name,
            &candidate.bytes,
            candidate.origin,
            Some(candidate.parents),
        );
        let hash = match admitted {
            Ok(hash) => hash,
            Err(error) if error.is_refusal() => {
                self.sources[source_at].learn(&[(ModuleHash::of(&candidate.bytes), None)]);
                tried.outcome = "refused".into();
                tried.reason = Some(error.to_string());
                return Ok(tried);
            }
            Err(error) => return Err(error.into()),
        };
        self.arbiter
            .evaluate_with(&agent, hash, self.config.options.clone())?;
        let status = settle(&self.arbiter, &agent, self.config.evaluation_deadline).await?;
        tried.outcome = outcome(&status);
        tried.reason = status
            .decision
            .as_ref()
            .filter(|d| !d.reasons.is_empty())
            .map(|d| d.reasons.join("; "))
            .or_else(|| match &status.stage {
                Stage::Done(Outcome::Failed(why)) => Some(why.clone()),
                _ => None,
            });
        let entry: Option<ArchiveEntry> = self
            .arbiter
            .archive(&agent)?
            .into_iter()
            .find(|e| e.module == hash);
        let level = entry
            .as_ref()
            .and_then(|entry| self.level_of(&entry.scores));
        if let Some(entry) = entry {
            tried.fitness = entry.scores.get(&self.config.fitness.0).copied();
            tried.scores = entry.scores;
        }
        match level {
            Some(level) => {
                if tried.outcome == "promoted" || tried.outcome == "awaiting approval" {
                    self.level = level;
                }
                // Sources learn "higher is fitter".
                let fitness = match self.config.fitness.1 {
                    Direction::Lower => -level,
                    Direction::Higher => level,
                };
                self.sources[source_at].learn(&[(hash, Some(fitness))]);
            }
            None => self.sources[source_at].learn(&[(hash, None)]),
        }
        Ok(tried)
    }
}

/// Waits until the evaluation is over, or awaits a person; past the deadline, cancels it.
async fn settle(
    arbiter: &Arbiter,
    agent: &str,
    deadline: Duration,
) -> Result<EvaluationStatus, EvolveError> {
    let suggest = arbiter.config().approval == Approval::Suggest;
    let over = move |s: &EvaluationStatus| {
        matches!(s.stage, Stage::Done(_)) || (suggest && s.stage == Stage::AwaitingApproval)
    };
    match tokio::time::timeout(deadline, arbiter.wait(agent, over)).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            let _ = arbiter.cancel(agent);
            let ended = tokio::time::timeout(
                Duration::from_secs(30),
                arbiter.wait(agent, |s| matches!(s.stage, Stage::Done(_))),
            )
            .await;
            let mut status = match ended {
                Ok(status) => status?,
                Err(_) => arbiter
                    .status(agent)
                    .ok_or_else(|| arbor_shadow::ShadowError::NoEvaluation(agent.into()))?,
            };
            status.stage = Stage::Done(Outcome::Failed(format!(
                "the evaluation took longer than {deadline:?} and was cancelled"
            )));
            Ok(status)
        }
    }
}

fn outcome(status: &EvaluationStatus) -> String {
    let reached = |status: &EvaluationStatus| {
        if status.gate.as_ref().is_some_and(|g| !g.passed) {
            "gate"
        } else {
            "shadows"
        }
    };
    match &status.stage {
        Stage::AwaitingApproval => "awaiting approval".into(),
        Stage::Done(Outcome::Promoted) => "promoted".into(),
        Stage::Done(Outcome::RolledBack) => "rolled back".into(),
        Stage::Done(Outcome::Rejected) | Stage::Done(Outcome::Inconclusive) => {
            reached(status).into()
        }
        Stage::Done(Outcome::Cancelled) => "cancelled".into(),
        Stage::Done(Outcome::Failed(_)) => "failed".into(),
        other => format!("{other:?}"),
    }
}
