//! An evaluation from start to verdict: the replay gate, the shadows on mirrored traffic, the
//! decision rule, the verdict with its evidence in the vault, and (with
//! [`Approval::Auto`]) the promotion.

use std::collections::BTreeMap;
use std::sync::Arc;

use arbor_agent::BehaviourId;
use arbor_vault::{Evidence, LineageEvent, ModuleHash, Reached, Step, Verdict};
use tokio::sync::oneshot;

use crate::archive;
use crate::config::{Approval, EvaluationOptions};
use crate::context::Context;
use crate::error::{ShadowError, agent_id};
use crate::evaluation::Evaluation;
use crate::gate;
use crate::live::LiveEnd;
use crate::objective::Rules;
use crate::policy::{Decision, apply_objectives, decide};
use crate::promotion;
use crate::report::VerdictDetail;
use crate::shadow::Factory;
use crate::stage::Event;

/// Starts evaluating `candidate` for `agent` in the background (see
/// [`Arbiter::evaluate_with`](crate::Arbiter::evaluate_with)).
pub(crate) fn start(
    ctx: &Arc<Context>,
    agent: &str,
    candidate: ModuleHash,
    options: EvaluationOptions,
) -> Result<(), ShadowError> {
    let running = ctx.running(agent)?;
    let current = ctx.current_module(agent)?;
    let factory = ctx.factory(&running, &options)?;
    let mut evaluations = ctx.evaluations.lock();
    if evaluations.get(agent).is_some_and(|e| !e.is_done()) {
        return Err(ShadowError::Busy(agent.into()));
    }
    let busy = evaluations.values().filter(|e| !e.is_done()).count();
    let max = ctx.config.limits.max_evaluations;
    if busy >= max {
        return Err(ShadowError::TooManyEvaluations(max));
    }
    let rules = ctx.rules(&options)?;
    let shadows_on = factory.node().map(str::to_string);
    let evaluation = Arc::new(Evaluation::new(
        agent,
        candidate,
        current.clone(),
        options,
        shadows_on,
    ));
    evaluations.insert(agent.into(), Arc::clone(&evaluation));
    drop(evaluations);
    let ctx = Arc::clone(ctx);
    let agent = agent.to_string();
    tokio::spawn(async move {
        let run = run(
            &ctx,
            &evaluation,
            factory,
            &agent,
            current,
            candidate,
            rules,
        );
        if let Err(error) = run.await {
            ctx.fail(&evaluation, &agent, candidate, &error);
        }
    });
    Ok(())
}

async fn run(
    ctx: &Arc<Context>,
    evaluation: &Arc<Evaluation>,
    factory: Factory,
    agent: &str,
    current: BehaviourId,
    candidate: ModuleHash,
    rules: Rules,
) -> Result<(), ShadowError> {
    let config = &ctx.config;
    let on = match factory.node() {
        Some(node) => format!(", shadows on node `{node}`"),
        None => String::new(),
    };
    ctx.step(
        agent,
        candidate,
        Step::Gate,
        &format!("against {current}{on}"),
    )?;
    // A lost shadow node is no verdict on the candidate: the evaluation fails instead.
    let lost = factory.lost();
    let node_lost = || {
        lost.take()
            .map_or(Ok(()), |e| Err(ShadowError::ShadowNode(e)))
    };
    let (gate, resume) = {
        let (factory, agent, current, rules) = (
            factory.clone(),
            agent.to_string(),
            current.clone(),
            rules.clone(),
        );
        let (policy, limits) = (config.policy.clone(), config.limits.clone());
        tokio::task::spawn_blocking(move || {
            let candidate = BehaviourId::Wasm(candidate);
            gate::run(
                &factory, &agent, &current, &candidate, rules, &policy, &limits,
            )
        })
        .await
        .map_err(|source| ShadowError::Panicked {
            task: "gate",
            source,
        })??
    };
    node_lost()?;
    evaluation.set_gate(gate.clone());
    if !gate.passed {
        let decision = Decision {
            verdict: Verdict::Rejected,
            reasons: gate.reasons.iter().map(|r| format!("gate: {r}")).collect(),
            fuel: gate.fuel,
            fuel_by_kind: BTreeMap::new(),
            latency: None,
            bound: None,
            objectives: Vec::new(),
        };
        record_verdict(ctx, evaluation, agent, candidate, decision)?;
        let _ = evaluation.apply(&Event::GateFailed);
        return Ok(());
    }
    let _ = evaluation.apply(&Event::GatePassed);

    ctx.step(
        agent,
        candidate,
        Step::Shadows,
        "candidate and A/A control on mirrored traffic",
    )?;
    let progress = evaluation.progress();
    let live = ctx.live(factory, agent, rules.clone(), Arc::clone(&progress));
    let control = current.clone();
    let (mirroring, mirrored) = oneshot::channel();
    let shadows = tokio::task::spawn_blocking(move || {
        let end = live.evaluate(&control, &BehaviourId::Wasm(candidate), resume, mirroring);
        (end, live)
    });
    // Shadowing from the moment production's inputs reach the shadows (an error drops the
    // sender and ends the wait).
    if mirrored.await.is_ok() {
        let _ = evaluation.apply(&Event::MirroringStarted);
    }
    let (end, live) = shadows.await.map_err(|source| ShadowError::Panicked {
        task: "shadows",
        source,
    })?;
    let tally = progress.tally.lock().clone();
    evaluation.set_shadow(tally.clone());
    node_lost()?;
    let mut decision = decide(&tally, &config.policy);
    apply_objectives(
        &mut decision,
        &tally,
        &evaluation.options.objectives,
        &rules,
        &config.policy,
    );
    match end {
        LiveEnd::Cancelled => {
            let _ = evaluation.apply(&Event::ShadowsCancelled);
            return ctx.step(agent, candidate, Step::Cancelled, "");
        }
        LiveEnd::Failed(reason) => {
            decision.verdict = Verdict::Rejected;
            decision.reasons.insert(0, reason);
        }
        LiveEnd::Complete | LiveEnd::TimeUp | LiveEnd::Regression(_) | LiveEnd::Incomplete(_) => {}
    }
    let verdict = decision.verdict;
    record_verdict(ctx, evaluation, agent, candidate, decision)?;
    let event = match verdict {
        Verdict::Rejected => Event::Rejected,
        Verdict::Inconclusive => Event::Inconclusive,
        Verdict::Approved => Event::Approved(config.approval),
    };
    if evaluation.apply(&event).is_ok() && event == Event::Approved(Approval::Auto) {
        promotion::swap_and_watch(ctx, evaluation, live, current, candidate).await?;
    }
    Ok(())
}

/// Writes the verdict, its summary, its figures and its [`VerdictDetail`] to the lineage, and
/// into the status.
fn record_verdict(
    ctx: &Context,
    evaluation: &Evaluation,
    agent: &str,
    candidate: ModuleHash,
    decision: Decision,
) -> Result<(), ShadowError> {
    let status = evaluation.recorded();
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
    .map_err(ShadowError::Evidence)?;
    let verdict = match decision.verdict {
        Verdict::Approved => "approved",
        Verdict::Rejected => "rejected",
        Verdict::Inconclusive => "inconclusive",
    };
    metrics::counter!(arbor_metrics::VERDICTS, "verdict" => verdict).increment(1);
    ctx.record(LineageEvent::Verdict {
        agent: agent_id(agent)?,
        candidate,
        verdict: decision.verdict,
        evidence: Evidence {
            summary,
            fields,
            detail,
        },
    })?;
    let gate_failed = status.gate.as_ref().is_some_and(|gate| !gate.passed);
    let reached = match (gate_failed, decision.verdict) {
        (true, _) => Reached::Gate,
        (false, Verdict::Approved) => Reached::Approved,
        (false, _) => Reached::Shadows,
    };
    let scores = match &status.gate {
        Some(gate) if tally.samples == 0 => gate.tally.measured(),
        _ => tally.measured(),
    };
    let reasons = (!decision.reasons.is_empty()).then(|| decision.reasons.join("; "));
    archive::reached(ctx, agent, candidate, reached, reasons, Some(scores))?;
    evaluation.set_decision(decision);
    Ok(())
}
