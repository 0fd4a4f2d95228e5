//! Issue 20, items 1 and 2: objectives measured by the host, and intended changes.
//!
//! - A candidate cheaper on fuel meets `fuel:better:0.1` and is approved; a placebo (the same
//!   code as a different module) does not, and is rejected for it, while it holds
//!   `fuel:no-worse`.
//! - A bug fix (production answers nil for present `zz` keys, the candidate the value) is
//!   rejected without a declared difference, approved with the host's comparator grading the
//!   fix `better` and its judge's `hits` score shown higher, and its watch does not roll back
//!   on the intended difference. A candidate whose replies are wrong is rejected under the
//!   same comparator.
//! - A rejected fix is accepted by a person with a reason (in the lineage), promoted, and
//!   watched without rolling back on the accepted differences.
//! - A candidate that writes misleading values into its replies raises a judge that trusts
//!   replies, not one that checks them against the state.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arbor_agent::{AgentSpec, AgentSystem};
use arbor_modules::kv::{KvMsg, KvReply};
use arbor_modules::{Hostile, kv_hostile};
use arbor_shadow::objective::{Comparator, Grade, Judge, Measure, Outcome as Run};
use arbor_shadow::{
    Approval, Arbiter, EvaluationOptions, EvaluationStatus, Outcome, ShadowError, Stage, Tally,
};
use arbor_vault::{LineageEvent, Step};
use support::{config, running_module};

/// A journaled system whose `kv` agent runs `module`, with a short history of Puts.
async fn production(dir: &std::path::Path, module: &[u8]) -> AgentSystem {
    let system = AgentSystem::builder().journal(dir).build().unwrap();
    let hash = system.add_module("production", module).unwrap();
    let agent = system.spawn(AgentSpec::wasm("kv", hash)).await.unwrap();
    for i in 0..20 {
        let put = KvMsg::Put {
            key: format!("zz-{i}"),
            value: format!("h{i}"),
        };
        let _: KvReply = agent.call_msg(&put).await.unwrap();
    }
    system
}

/// Sends `traffic(n)` for n = 0, 1, … to `kv` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(system: &AgentSystem, traffic: fn(u64) -> KvMsg) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (system, stopped) = (system.clone(), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !stopped.load(Ordering::Acquire) {
                let Some(agent) = system.lookup("kv") else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                // A call may fail while a promotion swaps the module.
                let _ = agent.call_msg::<_, KvReply>(&traffic(n)).await;
                n += 1;
                if n.is_multiple_of(8) {
                    tokio::task::yield_now().await;
                }
            }
        });
        Load { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
    }
}

/// Mostly Scans (where `CostlyScan` pays 30 % more fuel), some Puts.
fn scans(n: u64) -> KvMsg {
    if n.is_multiple_of(4) {
        KvMsg::Put {
            key: format!("key-{}", n % 100),
            value: format!("v{n}"),
        }
    } else {
        KvMsg::Scan {
            prefix: format!("key-{}", n % 10),
            limit: 5,
        }
    }
}

/// Puts and Gets of `zz` keys (where `RarePrefix` answers nil) and of other keys.
fn zz_gets(n: u64) -> KvMsg {
    let key = if n.is_multiple_of(2) {
        format!("zz-{}", n % 40)
    } else {
        format!("key-{}", n % 40)
    };
    if n % 4 < 2 {
        KvMsg::Put {
            key,
            value: format!("v{n}"),
        }
    } else {
        KvMsg::Get { key }
    }
}

async fn until(arbiter: &Arbiter, done: impl Fn(&EvaluationStatus) -> bool) -> EvaluationStatus {
    tokio::time::timeout(Duration::from_secs(120), arbiter.wait("kv", done))
        .await
        .expect("the evaluation gets there")
        .unwrap()
}

/// Evaluates `candidate` on `system` under `traffic` until it settles (or is done, with
/// `to_the_end`: through the watch).
async fn evaluate(
    system: &AgentSystem,
    arbiter: &Arbiter,
    candidate: &[u8],
    options: EvaluationOptions,
    traffic: fn(u64) -> KvMsg,
    to_the_end: bool,
) -> EvaluationStatus {
    let hash = arbiter.admit("kv", "candidate", candidate).unwrap();
    arbiter.evaluate_with("kv", hash, options).unwrap();
    let load = Load::start(system, traffic);
    let status = if to_the_end {
        until(arbiter, |s| matches!(s.stage, Stage::Done(_))).await
    } else {
        until(arbiter, EvaluationStatus::is_settled).await
    };
    load.stop().await;
    status
}

fn objectives(specs: &[&str]) -> EvaluationOptions {
    EvaluationOptions {
        objectives: specs.iter().map(|spec| spec.parse().unwrap()).collect(),
        ..EvaluationOptions::default()
    }
}

/// What the evaluation compared: the shadows' tally, which goes on from the gate's, or the
/// gate's when the gate ended it.
fn compared(status: &EvaluationStatus) -> &Tally {
    if status.shadow.samples > 0 {
        &status.shadow
    } else {
        &status.gate.as_ref().expect("a gate report").tally
    }
}

fn reasons(status: &EvaluationStatus) -> String {
    status.decision.as_ref().unwrap().reasons.join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cheaper_candidate_meets_a_fuel_objective_and_a_placebo_does_not() {
    // Production pays 30 % more fuel per Scan than kv; kv is the improvement.
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path(), &kv_hostile(Hostile::CostlyScan)).await;
    let arbiter = Arbiter::new(system.clone(), config(Approval::Suggest)).unwrap();
    let better = objectives(&["fuel:better:0.1"]);
    let status = evaluate(
        &system,
        &arbiter,
        arbor_modules::KV,
        better.clone(),
        scans,
        false,
    )
    .await;
    assert_eq!(
        status.stage,
        Stage::AwaitingApproval,
        "{}",
        reasons(&status)
    );
    let decision = status.decision.unwrap();
    let fuel = &decision.objectives[0];
    assert!(fuel.met, "{fuel}");
    let change = fuel.change.unwrap();
    assert!((-0.3..-0.1).contains(&change), "{fuel}");
    assert!(fuel.interval.unwrap().1 < -0.09, "{fuel}");
    system.shutdown().await.unwrap();

    // A placebo is not better: rejected for the objective alone, and it holds "no worse".
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path(), arbor_modules::KV).await;
    let arbiter = Arbiter::new(system.clone(), config(Approval::Suggest)).unwrap();
    let placebo = kv_hostile(Hostile::Kv);
    let status = evaluate(&system, &arbiter, &placebo, better, scans, false).await;
    assert_eq!(
        status.stage,
        Stage::Done(Outcome::Rejected),
        "{}",
        reasons(&status)
    );
    let decision = status.decision.unwrap();
    assert_eq!(decision.reasons.len(), 1, "{:?}", decision.reasons);
    assert!(
        decision.reasons[0].starts_with("objective fuel:better:0.1 not met"),
        "{:?}",
        decision.reasons
    );
    assert_eq!(status.shadow.failure_count(), 0);
    let status = evaluate(
        &system,
        &arbiter,
        &placebo,
        objectives(&["fuel:no-worse:0.05"]),
        scans,
        false,
    )
    .await;
    assert_eq!(
        status.stage,
        Stage::AwaitingApproval,
        "{}",
        reasons(&status)
    );
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_objective_or_a_comparator_the_host_did_not_register_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path(), arbor_modules::KV).await;
    let arbiter = Arbiter::new(system.clone(), config(Approval::Suggest)).unwrap();
    let hash = arbiter.admit("kv", "v2", arbor_modules::KV_V2).unwrap();
    let unknown_judge = arbiter.evaluate_with("kv", hash, objectives(&["score.hits:better"]));
    assert!(
        matches!(&unknown_judge, Err(ShadowError::Refused(why)) if why.contains("no judge `hits`")),
        "{unknown_judge:?}"
    );
    let unknown_comparator = arbiter.evaluate_with(
        "kv",
        hash,
        EvaluationOptions {
            comparator: Some("nil-fix".into()),
            ..EvaluationOptions::default()
        },
    );
    assert!(
        matches!(&unknown_comparator, Err(ShadowError::Refused(_))),
        "{unknown_comparator:?}"
    );
    assert!(arbiter.status("kv").is_none(), "nothing started");
    system.shutdown().await.unwrap();
}

/// The host's judge: a Get that finds a value scores 1, nil 0. It reads what the reply says
/// about the key, the effect the host cares about.
struct Hits;

impl Judge for Hits {
    fn score(&self, run: &Run<'_>) -> Option<f64> {
        if run.kind != "Get" {
            return None;
        }
        match rmp_serde::from_slice(run.reply?).ok()? {
            KvReply::Value { value } => Some(f64::from(u8::from(value.is_some()))),
            _ => None,
        }
    }
}

/// The host's comparator for the zz fix: a Get answering a value where production answered
/// nil is the fix; any other difference is wrong.
struct NilFix;

impl Comparator for NilFix {
    fn grade(&self, kind: &str, _input: &[u8], control: &[u8], candidate: &[u8]) -> Grade {
        let value = |reply: &[u8]| match rmp_serde::from_slice(reply) {
            Ok(KvReply::Value { value }) => Some(value),
            _ => None,
        };
        match (kind, value(control), value(candidate)) {
            ("Get", Some(None), Some(Some(_))) => Grade::Better,
            _ => Grade::Wrong,
        }
    }
}

fn host_rules(arbiter: &Arbiter) {
    arbiter.register_judge("hits", Arc::new(Hits));
    arbiter.register_comparator("nil-fix", Arc::new(NilFix));
}

fn fix_options() -> EvaluationOptions {
    EvaluationOptions {
        comparator: Some("nil-fix".into()),
        ..objectives(&["score.hits:better", "memory:no-worse:0"])
    }
}

/// The fix costs about 30 % more fuel per Get than the bug (it looks the zz keys up where the
/// bug answered nil at once): these arbiters tolerate that, the default 5 % would not.
fn fix_config(approval: Approval) -> arbor_shadow::ArbiterConfig {
    let mut config = config(approval);
    config.policy.fuel_tolerance = 0.5;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intended_fix_is_approved_only_with_its_declared_difference() {
    let buggy = kv_hostile(Hostile::RarePrefix);

    // Without a declared difference the fix is a divergence: rejected, graded wrong.
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path(), &buggy).await;
    let arbiter = Arbiter::new(system.clone(), fix_config(Approval::Auto)).unwrap();
    host_rules(&arbiter);
    let plain = EvaluationOptions::default();
    let status = evaluate(&system, &arbiter, arbor_modules::KV, plain, zz_gets, false).await;
    assert_eq!(
        status.stage,
        Stage::Done(Outcome::Rejected),
        "{}",
        reasons(&status)
    );
    let gets = &compared(&status).grades["Get"];
    assert!(gets.wrong > 0 && gets.better == 0, "{gets:?}");
    assert!(
        gets.examples
            .iter()
            .any(|e| e.what == "wrong" && e.input.contains("zz")),
        "{gets:?}"
    );
    system.shutdown().await.unwrap();

    // With the comparator the fix is better, the judge's score is higher, and the watch
    // (the previous module as a reverse shadow) does not roll the intended change back.
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path(), &buggy).await;
    let arbiter = Arbiter::new(system.clone(), fix_config(Approval::Auto)).unwrap();
    host_rules(&arbiter);
    let status = evaluate(
        &system,
        &arbiter,
        arbor_modules::KV,
        fix_options(),
        zz_gets,
        true,
    )
    .await;
    assert_eq!(status.stage, Stage::Done(Outcome::Promoted), "{status:#?}");
    let decision = status.decision.clone().unwrap();
    assert!(
        decision.objectives.iter().all(|o| o.met),
        "{:?}",
        decision.objectives
    );
    let hits = &decision.objectives[0];
    assert!(hits.change.unwrap() >= 0.0 && hits.p < hits.alpha, "{hits}");
    let gets = &compared(&status).grades["Get"];
    assert!(gets.better > 0 && gets.wrong == 0, "{gets:?}");
    assert!(status.watch.samples >= 100, "{:?}", status.watch.samples);
    assert_eq!(
        running_module(&system),
        arbor_vault::Behaviour::Wasm(arbor_vault::ModuleHash::of(arbor_modules::KV))
    );
    system.shutdown().await.unwrap();

    // The same comparator does not excuse wrong answers.
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path(), &buggy).await;
    let arbiter = Arbiter::new(system.clone(), fix_config(Approval::Auto)).unwrap();
    host_rules(&arbiter);
    let wrong = kv_hostile(Hostile::AllWrong);
    let status = evaluate(&system, &arbiter, &wrong, fix_options(), zz_gets, false).await;
    assert_eq!(
        status.stage,
        Stage::Done(Outcome::Rejected),
        "{}",
        reasons(&status)
    );
    let graded: u64 = compared(&status).grades.values().map(|g| g.wrong).sum();
    assert!(graded > 0, "{:?}", compared(&status).grades);
    system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_accepts_a_rejected_fix_with_a_reason_and_its_watch_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path(), &kv_hostile(Hostile::RarePrefix)).await;
    let arbiter = Arbiter::new(system.clone(), fix_config(Approval::Suggest)).unwrap();
    let plain = EvaluationOptions::default();
    let status = evaluate(&system, &arbiter, arbor_modules::KV, plain, zz_gets, false).await;
    assert_eq!(status.stage, Stage::Done(Outcome::Rejected));
    let candidate = status.candidate;

    // Not without a reason; and only a rejection can be accepted.
    assert!(matches!(
        arbiter.accept("kv", "  "),
        Err(ShadowError::Refused(_))
    ));
    let reason = "kv answers present zz keys: the differences are the fix";
    arbiter.accept("kv", reason).unwrap();
    assert!(matches!(
        arbiter.accept("kv", reason),
        Err(ShadowError::NotRejected { .. })
    ));
    let status = arbiter.status("kv").unwrap();
    assert_eq!(status.stage, Stage::AwaitingApproval);
    assert_eq!(status.accepted.as_deref(), Some(reason));
    let accepted = arbiter.history("kv").unwrap().into_iter().any(|record| {
        matches!(
            &record.event,
            LineageEvent::Step { step: Step::Accepted, detail, candidate: c, .. }
                if detail == reason && *c == candidate
        )
    });
    assert!(
        accepted,
        "the lineage records the acceptance and its reason"
    );

    // Promoted and watched under the same traffic: the accepted differences do not roll it
    // back.
    let load = Load::start(&system, zz_gets);
    arbiter.promote("kv").await.unwrap();
    let status = until(&arbiter, |s| matches!(s.stage, Stage::Done(_))).await;
    load.stop().await;
    assert_eq!(status.stage, Stage::Done(Outcome::Promoted), "{status:#?}");
    assert!(status.watch.samples >= 100);
    system.shutdown().await.unwrap();
}

/// The host's judge that checks what a reply claims against the state the run left: a Get
/// scores 1 only when it answers the value the store holds for the key. A reply cannot raise
/// it by claiming more.
struct VerifiedHits;

impl Judge for VerifiedHits {
    fn score(&self, run: &Run<'_>) -> Option<f64> {
        let Ok(KvMsg::Get { key }) = rmp_serde::from_slice::<KvMsg>(run.input) else {
            return None;
        };
        let store: std::collections::BTreeMap<String, String> =
            rmp_serde::from_slice(run.state?).ok()?;
        let answered = match rmp_serde::from_slice(run.reply?).ok()? {
            KvReply::Value { value } => value,
            _ => return Some(0.0),
        };
        let held = store.get(&key);
        Some(f64::from(u8::from(
            answered.is_some() && answered.as_ref() == held,
        )))
    }

    fn needs_state(&self) -> bool {
        true
    }
}

/// Grades every reply difference `same`.
struct AnythingGoes;

impl Comparator for AnythingGoes {
    fn grade(&self, _: &str, _: &[u8], _: &[u8], _: &[u8]) -> Grade {
        Grade::Same
    }
}

/// A candidate that writes misleading values into its replies (kv-hostile `AllWrong`: every Get
/// answers "wrong", a value where production often has none), with every reply difference let
/// through, raises the score of a judge that trusts replies, and not the score of one that
/// checks them against the state: it is rejected on that objective, its verified score no
/// higher than production's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misleading_replies_do_not_raise_a_verified_score() {
    let dir = tempfile::tempdir().unwrap();
    let system = production(dir.path(), &kv_hostile(Hostile::RarePrefix)).await;
    let arbiter = Arbiter::new(system.clone(), fix_config(Approval::Suggest)).unwrap();
    arbiter.register_judge("hits", Arc::new(Hits));
    arbiter.register_judge("verified", Arc::new(VerifiedHits));
    // A host that let every reply difference through (graded `same`), so that only the
    // scores decide: the worst case for a judge that believes replies.
    arbiter.register_comparator("anything-goes", Arc::new(AnythingGoes));
    let options = EvaluationOptions {
        comparator: Some("anything-goes".into()),
        ..objectives(&["score.hits:better", "score.verified:better"])
    };
    let status = evaluate(
        &system,
        &arbiter,
        &kv_hostile(Hostile::AllWrong),
        options,
        zz_gets,
        false,
    )
    .await;
    assert_eq!(
        status.stage,
        Stage::Done(Outcome::Rejected),
        "{}",
        reasons(&status)
    );
    let measured = compared(&status).measured();
    assert!(
        measured.contains_key("score.verified") && measured.contains_key("score.hits"),
        "{measured:?}; {}",
        reasons(&status)
    );
    // The lie works on the judge that believes replies…
    assert!(
        measured["score.hits"] > measured["score.hits.control"],
        "{measured:?}"
    );
    // …and not on the one that checks them.
    assert!(
        measured["score.verified"] <= measured["score.verified.control"],
        "{measured:?}"
    );
    let decision = status.decision.as_ref().unwrap();
    let verified = decision
        .objectives
        .iter()
        .find(|o| o.objective.measure == Measure::Score("verified".into()))
        .unwrap();
    assert!(!verified.met, "{verified}");
    system.shutdown().await.unwrap();
}
