//! The evolution arbiter: agent behaviour improves while the system runs, and a bad candidate
//! never reaches production.
//!
//! For a candidate module of an agent, the [`Arbiter`]:
//!
//! 1. **admits** it ([`Arbiter::admit`]): ABI and imports checked against the agent's grants,
//!    stored in the vault by content hash, recorded in the lineage with its parent;
//! 2. runs the **replay gate** ([`gate`]): the agent's journaled inputs since a checkpoint,
//!    through candidate and current module offline, with the journaled host answers;
//! 3. runs **shadows** ([`shadow`], `live`): the candidate and an A/A control (the
//!    current module), both from production's snapshot, on production's inputs mirrored after
//!    production handled them, isolated (recorded answers; sends captured, never delivered);
//! 4. **compares** each input ([`compare`]): replies with the candidate's ignore rules, sends,
//!    state (control migrated into the candidate, and the migration itself checked against
//!    production's state with the host's decoder: [`migration`]), traps, fuel per message kind
//!    and latency;
//! 5. **decides** with the rule in [`policy`] — approve only with a stated bound on the failure
//!    rate (by default *< 0.1 % at 95 %*, about 3,000 clean samples, gate and live together) —
//!    and writes the verdict, the bound and their evidence to the vault;
//! 6. **promotes** (a person, [`Approval::Suggest`], or itself, [`Approval::Auto`]) by hot swap
//!    with a promotion checkpoint; **watches** with the previous module as a reverse shadow and
//!    **rolls back** on regression, rebuilding the previous module's state from the promotion
//!    checkpoint and the journal since.
//!
//! Every step is appended to the vault's lineage ([`Arbiter::history`]).
//!
//! # Stages
//!
//! An evaluation's [`Stage`] moves only by this decision table, (stage, event) → next stage,
//! applied in one place; several parties may try to move the same evaluation at once (the
//! pipeline, the watch, a person through `arborctl`), and of two racing to end a stage exactly
//! one wins. A test holds the same table as data and checks every pair of stage and event
//! against it, each pair covered by exactly one row.
//!
//! ```text
//! stage                 event                                          next
//! --------------------- ---------------------------------------------- ------------------
//! gate                  gate passed                                    gate (shadows start)
//! gate                  gate failed                                    done(rejected)
//! gate                  mirroring started                              shadowing
//! gate, shadowing       verdict rejected                               done(rejected)
//! gate, shadowing       verdict inconclusive                           done(inconclusive)
//! gate, shadowing       shadows cancelled                              done(cancelled)
//! shadowing             verdict approved, approval suggest             awaiting approval
//! shadowing             verdict approved, approval auto                promoting
//! awaiting approval     promote requested                              promoting
//! awaiting approval     cancel requested                               done(cancelled)
//! promoting             promotion done                                 watching
//! watching              regression                                     rolling back
//! watching              rollback requested                             rolling back
//! watching              watch ended: passed, incomplete, ended early,  done(promoted)
//!                       cancelled
//! rolling back          rollback done                                  done(rolled back)
//! any but done          failed                                         done(failed)
//! done(rejected)        accepted (a person, with a reason)             awaiting approval
//! done(any)             any other                                      refused
//! any other pair                                                       refused
//! ```
//!
//! Done is final but for that one row: a person who has read a rejected candidate's graded
//! differences may accept them ([`Arbiter::accept`], with the reason in the lineage); the
//! candidate then waits for promotion like an approved one, and the swap still checks its
//! migration of production's state.
//!
//! A refused move changes nothing, and the party that asked learns the stage it found: a
//! person gets [`ShadowError::NotAwaitingApproval`] or [`ShadowError::NotWatching`]; a watch
//! that finds a rollback under way leaves it alone. A cancel requested while work runs (gate,
//! shadows, watch) is refused as a move and stops the work instead, which then reports how it
//! ended (`shadows cancelled`, `watch ended: cancelled`), so the lineage says what it stopped.
//! A failed swap or rollback is `failed`: the evaluation is over, and the agent runs the
//! module it ran before the attempt.
//!
//! # Modules
//!
//! One concern each, listed in dependency order: a module uses only modules above it (a test
//! checks it), so there is no import circle.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`stats`] | paired comparisons, rank tests, the failure-rate bound |
//! | [`compare`] | reply comparison with ignore rules, message kinds and input classes |
//! | [`migration`] | a state migration checked against production's state |
//! | [`instance`] | one isolated instance, here or on another node ([`ShadowNodes`]) |
//! | `error` | [`ShadowError`] |
//! | [`objective`] | objectives ([`Objective`]) and the host's [`Judge`]s and [`Comparator`]s |
//! | `tally` | what an evaluation counts ([`Tally`], [`Divergence`]), bounded |
//! | [`policy`] | the decision rule ([`Policy`], [`decide`](policy::decide)) |
//! | `journal` | the agent's journal as the gate reads it: the agent system's steps and its table's gate column |
//! | [`shadow`] | shadows where the evaluation placed them, and the candidate/control pair |
//! | [`gate`] | the replay gate |
//! | `live` | following production's mirror: the loop the live evaluation and the watch share |
//! | `evaluating` | the live evaluation: candidate and control on mirrored inputs |
//! | `watching` | the watch: the previous module as a reverse shadow after a promotion |
//! | `config` | [`ArbiterConfig`], [`Approval`], [`EvaluationOptions`] |
//! | `report` | [`Promotion`], [`Rollback`], [`VerdictDetail`] |
//! | `stage` | [`Stage`], [`Outcome`], the events and the table `next` |
//! | `evaluation` | [`EvaluationStatus`] and the one writer of the stage |
//! | `context` | the arbiter's shared state and its lineage writes |
//! | `archive` | its writes to the evolution archive: admitted, refused, how far each got |
//! | `promotion` | swap → watch → rollback, and the lineage reconciled after a restart |
//! | `pipeline` | gate → shadows → verdict (→ promotion with [`Approval::Auto`]) |
//! | `arbiter` | [`Arbiter`], the facade |
//!
//! `policy` is the one file over 600 lines (about 900, and 300 of tests beside them): the
//! rule's thresholds, what it counts and how it decides are read together, and its module docs
//! state the rule the code follows point by point.

mod arbiter;
mod archive;
pub mod compare;
mod config;
mod context;
mod error;
mod evaluating;
mod evaluation;
pub mod gate;
pub mod instance;
mod journal;
mod live;
pub mod migration;
pub mod objective;
mod pipeline;
pub mod policy;
mod promotion;
mod report;
pub mod shadow;
mod stage;
pub mod stats;
mod tally;
mod watching;

pub use arbiter::Arbiter;
pub use compare::IgnoreRule;
pub use config::{Approval, ArbiterConfig, EvaluationOptions, ShadowPlace};
pub use error::ShadowError;
pub use evaluation::EvaluationStatus;
pub use gate::GateReport;
pub use instance::{InstanceError, ShadowNodes};
pub use migration::MigrationRule;
pub use objective::{Comparator, Goal, Grade, Judge, Measure, Objective, ObjectiveResult};
pub use policy::{Decision, Divergence, FailureBound, KindCost, Policy, ShadowLimits, Tally};
pub use report::{Promotion, Rollback, VerdictDetail};
pub use stage::{Outcome, Stage};
pub use tally::Graded;

#[cfg(test)]
mod layering {
    /// The modules in the crate docs' dependency order, with their source.
    const ORDER: [(&str, &str); 23] = [
        ("stats", include_str!("stats.rs")),
        ("compare", include_str!("compare.rs")),
        ("migration", include_str!("migration.rs")),
        ("instance", include_str!("instance.rs")),
        ("error", include_str!("error.rs")),
        ("objective", include_str!("objective.rs")),
        ("tally", include_str!("tally.rs")),
        ("policy", include_str!("policy.rs")),
        ("journal", include_str!("journal.rs")),
        ("shadow", include_str!("shadow.rs")),
        ("gate", include_str!("gate.rs")),
        ("live", include_str!("live.rs")),
        ("evaluating", include_str!("evaluating.rs")),
        ("watching", include_str!("watching.rs")),
        ("config", include_str!("config.rs")),
        ("report", include_str!("report.rs")),
        ("stage", include_str!("stage.rs")),
        ("evaluation", include_str!("evaluation.rs")),
        ("context", include_str!("context.rs")),
        ("archive", include_str!("archive.rs")),
        ("promotion", include_str!("promotion.rs")),
        ("pipeline", include_str!("pipeline.rs")),
        ("arbiter", include_str!("arbiter.rs")),
    ];

    /// The modules a line of code names through `crate::` (the first segment of each path;
    /// `crate::ShadowError`, re-exported at the root, is `error`'s).
    fn used(line: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let group = match rest.strip_prefix('{') {
                Some(group) => &group[..group.find('}').unwrap_or(group.len())],
                None => rest,
            };
            for path in group.split(',') {
                let name: String = path
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(match name.as_str() {
                    "ShadowError" => "error".to_string(),
                    _ => name,
                });
                if rest.starts_with(|c: char| c != '{') {
                    break;
                }
            }
        }
        found
    }

    #[test]
    fn every_module_uses_only_modules_above_it() {
        let names: Vec<&str> = ORDER.iter().map(|(name, _)| *name).collect();
        for (at, (name, source)) in ORDER.iter().enumerate() {
            let code = source.lines().filter(|l| !l.trim_start().starts_with("//"));
            for line in code {
                for module in used(line) {
                    let Some(used_at) = names.iter().position(|n| *n == module) else {
                        panic!("{name}: `{line}` names `crate::{module}`, not a module in order");
                    };
                    assert!(used_at <= at, "{name} uses {module}, below it: `{line}`");
                }
            }
        }
    }
}
