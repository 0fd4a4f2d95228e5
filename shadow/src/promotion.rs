//! After an approval: the promotion (a hot swap with a promotion checkpoint), the watch that
//! follows it (the previous module as a reverse shadow), how the watch ends, and the rollback
//! (the promotion checkpoint restored into the previous module, the journal since replayed).
//!
//! The agent system holds the promotion checkpoint and the journal after it (its *hold*) from
//! the swap until the watch ends; a rollback is possible only while it holds them, which is why
//! [`Arbiter::rollback`](crate::Arbiter::rollback) asks for a watched promotion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arbor_agent::BehaviourId;
use arbor_vault::{AgentId, LineageEvent, ModuleHash, Reached, Step};
use tokio::sync::oneshot;

use crate::archive;
use crate::context::Context;
use crate::error::{ShadowError, agent_id};
use crate::evaluation::Evaluation;
use crate::live::{Live, LiveEnd, Progress};
use crate::migration::MigrationLoss;
use crate::report::{Promotion, Rollback};
use crate::stage::{Event, WatchEnd};
use crate::watching::WatchRule;

/// How long a rollback waits for a crashed agent to be restarted by its supervisor.
const ROLLBACK_WAIT: Duration = Duration::from_secs(10);

/// Promotes `agent`'s approved candidate, then watches it in the background. Returns once the
/// swap is done.
pub(crate) async fn promote(ctx: &Arc<Context>, agent: &str) -> Result<Promotion, ShadowError> {
    let evaluation = ctx.evaluation(agent)?;
    if let Err(stage) = evaluation.apply(&Event::PromoteRequested) {
        return Err(ShadowError::NotAwaitingApproval {
            agent: agent.into(),
            stage: format!("{stage:?}"),
        });
    }
    let status = evaluation.recorded();
    let promoted = async {
        let running = ctx.running(agent)?;
        let live = ctx.live(
            ctx.factory(&running, &evaluation.options)?,
            agent,
            ctx.rules(&evaluation.options)?
                .accepting(status.accepted.is_some()),
            Arc::new(Progress::default()),
        );
        swap_and_watch(
            ctx,
            &evaluation,
            live,
            status.current.clone(),
            status.candidate,
        )
        .await
    };
    let result = promoted.await;
    if let Err(error) = &result {
        ctx.fail(&evaluation, agent, status.candidate, error);
    }
    result
}

/// The swap, then the watch in the background. The reverse shadow's mirror goes in before the
/// swap, so it sees every input from the previous module's last state on.
pub(crate) async fn swap_and_watch(
    ctx: &Arc<Context>,
    evaluation: &Arc<Evaluation>,
    mut live: Live,
    current: BehaviourId,
    candidate: ModuleHash,
) -> Result<Promotion, ShadowError> {
    let agent = live.agent.clone();
    let promoted = BehaviourId::Wasm(candidate);
    ctx.step(
        &agent,
        candidate,
        Step::Promoting,
        &format!("from {current}"),
    )?;
    let progress = Arc::new(Progress::default());
    live.progress = Arc::clone(&progress);
    evaluation.set_progress(Arc::clone(&progress));
    let (ready, tapped) = oneshot::channel();
    let (regressed, regression) = oneshot::channel();
    let config = &ctx.config;
    let rule = WatchRule {
        window: config.watch,
        samples: config.watch_samples,
        max: config.watch_max.max(config.watch),
        verified: config.verified_watch,
    };
    let migration = live.factory.migration.clone();
    let (previous, next) = (current.clone(), promoted.clone());
    let mut watcher =
        tokio::task::spawn_blocking(move || live.watch(&previous, &next, rule, ready, regressed));
    let tapped = match tapped.await {
        Ok(Ok(_seq)) => Ok(()),
        Ok(Err(reason)) => Err(reason),
        // The watch thread ended without answering: it panicked.
        Err(_) => Err("the watch ended before its mirror was in".to_string()),
    };
    if let Err(reason) = tapped {
        progress.cancel.store(true, Ordering::Release);
        return Err(ShadowError::WatchNotStarted(reason));
    }
    let running = ctx.running(&agent)?;
    // The swap itself checks the migration of the state it carries over, the latest production
    // has (issue 17.1: the state evaluated earlier is only a sample of it). The loss is kept
    // typed beside the check, which the agent system only hears as text.
    let loss: Arc<parking_lot::Mutex<Option<MigrationLoss>>> = Arc::default();
    let check: arbor_agent::StateCheck = {
        let loss = Arc::clone(&loss);
        Box::new(move |state, migrated| {
            crate::migration::check(&migration, state, migrated).map_err(|lost| {
                let reason = lost.to_string();
                *loss.lock() = Some(lost);
                reason
            })
        })
    };
    let report = match ctx
        .system
        .promote_module_checked(&running, promoted.clone(), check)
        .await
    {
        Ok(report) => report,
        Err(error) => {
            progress.cancel.store(true, Ordering::Release);
            return Err(match loss.lock().take() {
                Some(lost) => ShadowError::Refused(format!(
                    "promotion refused, production keeps its module: {lost}"
                )),
                None => ShadowError::Promotion(error),
            });
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
            ctx.record(LineageEvent::Promoted {
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
    if let Err(error) = archive::reached(ctx, &agent, candidate, Reached::Promoted, None, None) {
        tracing::warn!(agent, %error, "promotion not recorded in the archive");
    }
    let _ = evaluation.apply(&Event::Promoted(promotion.clone()));
    let ctx = Arc::clone(ctx);
    let evaluation = Arc::clone(evaluation);
    tokio::spawn(async move {
        // A verified watch reports a regression and goes on answering until the rollback is
        // done; a plain one ends with it.
        let end = tokio::select! {
            end = &mut watcher => end,
            Ok(reason) = regression => {
                if evaluation.apply(&Event::Regression).is_ok()
                    && let Err(error) =
                        roll_back(&ctx, &evaluation, &agent, candidate, reason, "watch").await
                {
                    tracing::warn!(agent, %error, "the verified watch's rollback failed");
                }
                progress.cancel.store(true, Ordering::Release);
                let _ = (&mut watcher).await;
                evaluation.set_watch(progress.tally.lock().clone());
                return;
            }
        };
        let end = end.unwrap_or_else(|e| LiveEnd::Failed(format!("the watch panicked: {e}")));
        evaluation.set_watch(progress.tally.lock().clone());
        if let Err(error) = end_watch(&ctx, &evaluation, &agent, candidate, end).await {
            tracing::warn!(agent, %error, "the watch failed to end");
        }
    });
    Ok(promotion)
}

/// Ends the watch of `candidate`'s promotion as the watch itself ended: a regression rolls back
/// (unless a person is already rolling back), anything else keeps the promotion and says why.
async fn end_watch(
    ctx: &Context,
    evaluation: &Evaluation,
    agent: &str,
    candidate: ModuleHash,
    end: LiveEnd,
) -> Result<(), ShadowError> {
    let (ended, detail) = match end {
        LiveEnd::Regression(reason) => {
            if evaluation.apply(&Event::Regression).is_ok() {
                return roll_back(ctx, evaluation, agent, candidate, reason, "watch")
                    .await
                    .map(drop);
            }
            // A person is already rolling back.
            return Ok(());
        }
        LiveEnd::Cancelled => (WatchEnd::Cancelled, "cancelled; promotion kept".to_string()),
        LiveEnd::TimeUp | LiveEnd::Complete => {
            (WatchEnd::Passed, "no regression in the window".to_string())
        }
        LiveEnd::Incomplete(reason) => (
            WatchEnd::Incomplete,
            format!(
                "the watch ended without the samples its rule asks for, promotion kept: {reason}"
            ),
        ),
        LiveEnd::Failed(reason) => (
            WatchEnd::EndedEarly,
            format!("watch ended early, promotion kept: {reason}"),
        ),
    };
    if evaluation.apply(&Event::WatchEnded(ended)).is_err() {
        // A rollback took over.
        return Ok(());
    }
    ctx.system.release_hold(agent);
    ctx.step(agent, candidate, ended.step(), &detail)
}

/// Rolls `agent` back to the module before its promotion, while the promotion is watched.
pub(crate) async fn rollback(
    ctx: &Context,
    agent: &str,
    reason: &str,
) -> Result<Rollback, ShadowError> {
    let evaluation = ctx.evaluation(agent)?;
    if let Err(stage) = evaluation.apply(&Event::RollbackRequested) {
        return Err(ShadowError::NotWatching {
            agent: agent.into(),
            stage: format!("{stage:?}"),
        });
    }
    evaluation.cancel_work();
    let candidate = evaluation.recorded().candidate;
    roll_back(
        ctx,
        &evaluation,
        agent,
        candidate,
        reason.into(),
        "operator",
    )
    .await
}

/// The rollback, once the evaluation is rolling back; a failure ends the evaluation.
async fn roll_back(
    ctx: &Context,
    evaluation: &Evaluation,
    agent: &str,
    candidate: ModuleHash,
    reason: String,
    trigger: &'static str,
) -> Result<Rollback, ShadowError> {
    let result = roll_back_inner(ctx, evaluation, agent, candidate, reason).await;
    match &result {
        Ok(_) => metrics::counter!(arbor_metrics::ROLLBACKS, "trigger" => trigger).increment(1),
        Err(error) => ctx.fail(evaluation, agent, candidate, error),
    }
    result
}

async fn roll_back_inner(
    ctx: &Context,
    evaluation: &Evaluation,
    agent: &str,
    candidate: ModuleHash,
    reason: String,
) -> Result<Rollback, ShadowError> {
    let (from, lsn) = match evaluation.recorded().promotion {
        Some(Promotion {
            from,
            checkpoint_lsn: Some(lsn),
            ..
        }) => (from, lsn),
        _ => return Err(ShadowError::NoCheckpoint(agent.into())),
    };
    ctx.step(agent, candidate, Step::RollingBack, &reason)?;
    // A promoted module that crashed is being restarted by its supervisor: wait for it.
    let deadline = tokio::time::Instant::now() + ROLLBACK_WAIT;
    let running = loop {
        if let Some(running) = ctx.system.lookup(agent) {
            break running;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ShadowError::UnknownAgent(agent.into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let report = ctx
        .system
        .rollback_module(&running, from.clone(), lsn)
        .await
        .map_err(ShadowError::Rollback)?;
    metrics::histogram!(arbor_metrics::PROMOTION_PAUSE_SECONDS).record(report.pause);
    if let BehaviourId::Wasm(to) = &from {
        ctx.record(LineageEvent::RolledBack {
            agent: agent_id(agent)?,
            from: candidate,
            to: *to,
            reason: reason.clone(),
        })?;
    }
    // Approved once, so still a possible parent; the reason says it did not last.
    let rolled_back = Some(format!("rolled back: {reason}"));
    archive::reached(ctx, agent, candidate, Reached::Approved, rolled_back, None)?;
    let rollback = Rollback {
        reason,
        pause: report.pause,
        replayed: report.replayed,
    };
    let _ = evaluation.apply(&Event::RolledBack(rollback.clone()));
    Ok(rollback)
}

/// Reconciles the lineage with what the agents run after a host restart: a promotion whose
/// watch has no end in the lineage was being watched when the host stopped. Its promotion is
/// kept (the agent's recovery already made its module and state consistent), and the lineage
/// says so (`watch-interrupted`).
pub(crate) fn reconcile(ctx: &Context) -> Result<(), ShadowError> {
    let Some(vault) = ctx.system.vault() else {
        return Ok(());
    };
    let mut open: BTreeMap<AgentId, ModuleHash> = BTreeMap::new();
    for record in vault.lineage().map_err(ShadowError::Vault)? {
        match record.event {
            LineageEvent::Promoted { agent, to, .. } => {
                open.insert(agent, to);
            }
            LineageEvent::RolledBack { agent, .. } => {
                open.remove(&agent);
            }
            LineageEvent::Step { agent, step, .. } if step.ends_watch() => {
                open.remove(&agent);
            }
            _ => {}
        }
    }
    for (agent, promoted) in open {
        let running = vault
            .agent(&agent)
            .map_err(ShadowError::Vault)?
            .map(|r| format!("{:?}", r.behaviour))
            .unwrap_or_else(|| "nothing".into());
        vault
            .append_lineage(LineageEvent::Step {
                agent,
                candidate: promoted,
                step: Step::WatchInterrupted,
                detail: format!(
                    "the host stopped during the watch; the agent runs {running} after recovery"
                ),
            })
            .map_err(ShadowError::Vault)?;
    }
    vault.sync().map_err(ShadowError::Vault)
}
