//! Loops running in the background, one per agent at most: what `arborctl evolve loop
//! start|stop|status` drives through the admin API. Each runs cycles until stopped, until its
//! cycle count is reached, or until a cycle fails; its last reports are kept for `status`, and
//! each cycle's summary goes into the agent's lineage (step `cycle`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arbor_agent::BehaviourId;
use arbor_shadow::{Arbiter, EvaluationOptions};
use arbor_vault::{ModuleHash, Step};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cycle::{CycleReport, EvolutionLoop, LoopConfig};
use crate::error::EvolveError;
use crate::genetic::{Genetic, GeneticConfig};
use crate::rewrite::space_of;
use crate::select::Direction;
use crate::source::{CandidateSource, ParameterSearch, Placebos};

/// Reports kept per loop.
pub const KEPT_REPORTS: usize = 16;

/// A source a loop started through the API can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A genetic search over the parameters the agent's current module declares.
    Params,
    /// Placebos of the agent's current module.
    Placebo,
}

impl std::str::FromStr for SourceKind {
    type Err = EvolveError;

    fn from_str(s: &str) -> Result<SourceKind, EvolveError> {
        match s {
            "params" => Ok(SourceKind::Params),
            "placebo" => Ok(SourceKind::Placebo),
            other => Err(EvolveError::BadConfig(format!(
                "unknown source `{other}`: params or placebo"
            ))),
        }
    }
}

/// A loop as the API starts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoopSpec {
    /// Where candidates come from, asked in turn.
    pub sources: Vec<SourceKind>,
    /// Candidates per cycle at most.
    pub candidates_per_cycle: usize,
    /// How each candidate is evaluated.
    pub options: EvaluationOptions,
    /// The archive score the search learns from (`fuel`, `latency`, `memory`,
    /// `score.<judge>`).
    pub fitness: String,
    /// Which way it improves.
    pub direction: Direction,
    /// Configurations per generation of the parameter search.
    pub population: usize,
    /// Seeds the search and the choice of parents.
    pub seed: u64,
    /// The pause between cycles.
    pub pause_ms: u64,
    /// Stop after this many cycles (none: until stopped).
    pub cycles: Option<u32>,
    /// The longest one evaluation may take.
    pub evaluation_deadline_ms: u64,
}

impl Default for LoopSpec {
    fn default() -> LoopSpec {
        LoopSpec {
            sources: vec![SourceKind::Params],
            candidates_per_cycle: 4,
            options: EvaluationOptions::default(),
            fitness: "fuel".into(),
            direction: Direction::Lower,
            population: 8,
            seed: 0,
            pause_ms: 1_000,
            cycles: None,
            evaluation_deadline_ms: 600_000,
        }
    }
}

/// A loop's state, as `arborctl evolve loop status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopStatus {
    /// The agent.
    pub agent: String,
    /// Whether it still runs.
    pub running: bool,
    /// Cycles run.
    pub cycles: u32,
    /// How it was started.
    pub spec: LoopSpec,
    /// The last reports, oldest first (at most [`KEPT_REPORTS`]).
    pub reports: Vec<CycleReport>,
    /// Why it stopped, if a cycle failed.
    pub error: Option<String>,
}

struct Running {
    status: Arc<Mutex<LoopStatus>>,
    stop: watch::Sender<bool>,
}

/// The loops of one host, by agent. Clones share them.
#[derive(Clone, Default)]
pub struct Loops {
    loops: Arc<Mutex<BTreeMap<String, Running>>>,
}

impl std::fmt::Debug for Loops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loops")
            .field("agents", &self.loops.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Loops {
    /// Starts a loop for `agent` on the tokio runtime of the caller. Refused when one runs
    /// for it already, or when a source cannot work with the agent's module (no tunables).
    pub fn start(
        &self,
        arbiter: &Arbiter,
        agent: &str,
        spec: LoopSpec,
    ) -> Result<LoopStatus, EvolveError> {
        let mut loops = self.loops.lock();
        if loops
            .get(agent)
            .is_some_and(|running| running.status.lock().running)
        {
            return Err(EvolveError::BadConfig(format!(
                "a loop already runs for {agent}"
            )));
        }
        let sources = sources(arbiter, agent, &spec)?;
        let config = LoopConfig {
            options: spec.options.clone(),
            candidates_per_cycle: spec.candidates_per_cycle,
            evaluation_deadline: Duration::from_millis(spec.evaluation_deadline_ms),
            fitness: (spec.fitness.clone(), spec.direction),
            seed: spec.seed,
            ..LoopConfig::new(agent)
        };
        let evolution = EvolutionLoop::new(arbiter.clone(), config, sources)?;
        let status = Arc::new(Mutex::new(LoopStatus {
            agent: agent.into(),
            running: true,
            cycles: 0,
            spec: spec.clone(),
            reports: Vec::new(),
            error: None,
        }));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(run(
            evolution,
            arbiter.clone(),
            spec,
            Arc::clone(&status),
            stopped,
        ));
        let current = status.lock().clone();
        loops.insert(agent.into(), Running { status, stop });
        Ok(current)
    }

    /// Stops `agent`'s loop (an evaluation it started goes on to its verdict in the arbiter);
    /// `None` if it has none.
    pub fn stop(&self, agent: &str) -> Option<LoopStatus> {
        let loops = self.loops.lock();
        let running = loops.get(agent)?;
        let _ = running.stop.send(true);
        Some(running.status.lock().clone())
    }

    /// `agent`'s loop, running or ended.
    pub fn status(&self, agent: &str) -> Option<LoopStatus> {
        let loops = self.loops.lock();
        Some(loops.get(agent)?.status.lock().clone())
    }

    /// Stops every loop (a host shutting down).
    pub fn stop_all(&self) {
        for running in self.loops.lock().values() {
            let _ = running.stop.send(true);
        }
    }
}

fn sources(
    arbiter: &Arbiter,
    agent: &str,
    spec: &LoopSpec,
) -> Result<Vec<Box<dyn CandidateSource>>, EvolveError> {
    let BehaviourId::Wasm(current) = arbiter.current_module(agent)? else {
        return Err(EvolveError::BadModule(format!(
            "{agent} runs a native behaviour: there is no module to evolve"
        )));
    };
    let bytes = module_bytes(arbiter, &current)?;
    let mut out: Vec<Box<dyn CandidateSource>> = Vec::new();
    for kind in &spec.sources {
        out.push(match kind {
            SourceKind::Params => {
                let genetic = Genetic::new(
                    space_of(&bytes)?,
                    GeneticConfig {
                        population: spec.population,
                        elitism: (spec.population / 4).max(1).min(spec.population - 1),
                        seed: spec.seed,
                        ..GeneticConfig::default()
                    },
                )?;
                Box::new(ParameterSearch::new(&bytes, genetic)?)
            }
            SourceKind::Placebo => Box::new(Placebos::new()),
        });
    }
    Ok(out)
}

fn module_bytes(arbiter: &Arbiter, module: &ModuleHash) -> Result<Vec<u8>, EvolveError> {
    let vault = arbiter
        .system()
        .vault()
        .ok_or_else(|| EvolveError::BadConfig("evolution needs a journaled host".into()))?;
    vault.module_bytes(module)?.ok_or_else(|| {
        EvolveError::BadModule(format!("module {} is not in the vault", module.short()))
    })
}

async fn run(
    mut evolution: EvolutionLoop,
    arbiter: Arbiter,
    spec: LoopSpec,
    status: Arc<Mutex<LoopStatus>>,
    mut stopped: watch::Receiver<bool>,
) {
    let agent = status.lock().agent.clone();
    let mut kept: VecDeque<CycleReport> = VecDeque::new();
    loop {
        if *stopped.borrow() || spec.cycles.is_some_and(|n| evolution.cycles() >= n) {
            break;
        }
        let cycle = tokio::select! {
            cycle = evolution.cycle() => cycle,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        match cycle {
            Ok(report) => {
                let summary = summary(&report);
                let module = report
                    .production_after
                    .parse()
                    .unwrap_or(ModuleHash::of(b""));
                if let Err(error) = arbiter.record_step(&agent, module, Step::Cycle, &summary) {
                    tracing::warn!(agent, %error, "cycle not recorded in the lineage");
                }
                kept.push_back(report);
                if kept.len() > KEPT_REPORTS {
                    kept.pop_front();
                }
                let mut status = status.lock();
                status.cycles = evolution.cycles();
                status.reports = kept.iter().cloned().collect();
            }
            Err(error) => {
                tracing::warn!(agent, %error, "evolution loop stopped");
                status.lock().error = Some(error.to_string());
                break;
            }
        }
        let pause = Duration::from_millis(spec.pause_ms);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    status.lock().running = false;
}

/// One line for the lineage: what was tried and what came of it.
fn summary(report: &CycleReport) -> String {
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for tried in &report.tried {
        *outcomes.entry(tried.outcome.as_str()).or_default() += 1;
    }
    let outcomes: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
    format!(
        "cycle {}: {} tried ({}); production {}",
        report.cycle,
        report.tried.len(),
        outcomes.join(", "),
        &report.production_after[..report.production_after.len().min(12)]
    )
}
