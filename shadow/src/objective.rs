//! What an evaluation asks beyond "no worse": **objectives** the candidate must improve (or
//! hold), measured by the host, and **intended changes**, reply differences a host's
//! comparator grades instead of counting every one as a failure.
//!
//! # Objectives
//!
//! An [`Objective`] is a [`Measure`] with a [`Goal`]. The measures are the arbiter's own —
//! fuel, handle latency, linear memory, taken from the runs — and the host's quality scores:
//! a [`Judge`] the host registers ([`Arbiter::register_judge`](crate::Arbiter::register_judge))
//! scores each run from the input, the reply and, when it asks, the state after it. The score
//! is the host's code on what the candidate *did*; nothing the candidate says about itself is
//! read unless the judge chooses to (a variant of the Darwin Gödel Machine faked the log lines
//! its judge trusted: a judge should decide from effects, not claims).
//!
//! The rule is paired and stated: every input gives a (control, candidate) pair of the same
//! measure, and [`judge`] tests the pairs with a one-sided Wilcoxon signed-rank test at the
//! policy's level divided among the objectives, reporting the Hodges-Lehmann effect and its
//! interval ([`ObjectiveResult`]):
//!
//! - **Fuel, latency and memory** (lower is better) are compared as ratios: [`Goal::Better`]
//!   `{ by: 0.1 }` is met when the control is shown to use more than 1.1 × the candidate's;
//!   [`Goal::NoWorse`] `{ by: 0.05 }` fails when the candidate is shown to use more than
//!   1.05 × the control's.
//! - **Scores** are compared as differences in the judge's units (they may be 0 or negative),
//!   in the direction the judge declares ([`Judge::higher_is_better`]).
//!
//! No pairs means the objective is not met (no data means fail).
//!
//! # Intended changes
//!
//! A [`Comparator`] the host registers
//! ([`Arbiter::register_comparator`](crate::Arbiter::register_comparator)) and an evaluation
//! names grades every pair of replies that differ (after the ignore rules) as
//! [`Grade::Better`], [`Grade::Same`], [`Grade::Worse`] or [`Grade::Wrong`]. *Better* and
//! *same* are not failures: a bug fix is a difference the host declared it expects. *Worse*
//! and *wrong* are. Without a comparator every difference is *wrong*. The verdict's evidence
//! counts the grades per message kind, with examples ([`Tally::grades`](crate::Tally::grades)).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::compare::IgnoreRule;
use crate::stats::{compare_differences, compare_paired};

/// What one run did, as a [`Judge`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// The input's message kind (`Get`, `Put`, …).
    pub kind: &'a str,
    /// The input (MessagePack).
    pub input: &'a [u8],
    /// The reply, when the run replied.
    pub reply: Option<&'a [u8]>,
    /// The instance's state after the input, when the judge asked for it
    /// ([`Judge::needs_state`]) and the instance could give it.
    pub state: Option<&'a [u8]>,
}

/// A quality score the host computes for each run (see the module docs).
///
/// ```
/// use arbor_shadow::objective::{Judge, Outcome};
///
/// /// Scores a kv `Get` 1 when it found a value, 0 when it answered nil.
/// struct Hits;
/// impl Judge for Hits {
///     fn score(&self, outcome: &Outcome<'_>) -> Option<f64> {
///         if outcome.kind != "Get" {
///             return None;
///         }
///         match rmp_serde::from_slice(outcome.reply?).ok()? {
///             Reply::Value { value: Some(_) } => Some(1.0),
///             Reply::Value { value: None } => Some(0.0),
///         }
///     }
/// }
///
/// /// The part of the kv agent's reply this judge reads.
/// #[derive(serde::Deserialize)]
/// enum Reply {
///     Value { value: Option<String> },
/// }
/// # let _ = Hits;
/// ```
pub trait Judge: Send + Sync + 'static {
    /// The score of one run, or `None` when this input is not scored (then neither run of it
    /// is paired).
    fn score(&self, outcome: &Outcome<'_>) -> Option<f64>;

    /// Whether higher scores are better (the default).
    fn higher_is_better(&self) -> bool {
        true
    }

    /// Whether [`score`](Self::score) reads the state after each input. It costs a snapshot
    /// of both shadows per input.
    fn needs_state(&self) -> bool {
        false
    }
}

/// How a [`Comparator`] grades a pair of differing replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// The candidate's reply is better (an intended change: a bug fix).
    Better,
    /// Different but equivalent.
    Same,
    /// Correct but worse.
    Worse,
    /// Wrong.
    Wrong,
}

impl Grade {
    /// Whether this grade counts as a failure of the candidate.
    pub fn is_failure(self) -> bool {
        matches!(self, Grade::Worse | Grade::Wrong)
    }

    /// Its name in reports: `better`, `same`, `worse`, `wrong`.
    pub fn name(self) -> &'static str {
        match self {
            Grade::Better => "better",
            Grade::Same => "same",
            Grade::Worse => "worse",
            Grade::Wrong => "wrong",
        }
    }
}

/// Grades pairs of replies that differ (see the module docs).
///
/// ```
/// use arbor_shadow::objective::{Comparator, Grade};
///
/// /// A fix of a `Get` that wrongly answered nil: a value where production had nil is better.
/// struct NilFix;
/// impl Comparator for NilFix {
///     fn grade(&self, kind: &str, _input: &[u8], control: &[u8], candidate: &[u8]) -> Grade {
///         let nil = |reply: &[u8]| match rmp_serde::from_slice(reply) {
///             Ok(Reply::Value { value }) => Some(value.is_none()),
///             Err(_) => None,
///         };
///         match (kind, nil(control), nil(candidate)) {
///             ("Get", Some(true), Some(false)) => Grade::Better,
///             _ => Grade::Wrong,
///         }
///     }
/// }
///
/// /// The part of the kv agent's reply this comparator reads.
/// #[derive(serde::Deserialize)]
/// enum Reply {
///     Value { value: Option<String> },
/// }
/// # let _ = NilFix;
/// ```
pub trait Comparator: Send + Sync + 'static {
    /// The grade of the candidate's reply against the control's (the current module's) to
    /// the same input of message kind `kind`. Called only when they differ after the ignore
    /// rules.
    fn grade(&self, kind: &str, input: &[u8], control: &[u8], candidate: &[u8]) -> Grade;
}

/// What an objective measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Wasm fuel per input (deterministic).
    Fuel,
    /// Handle time per input.
    Latency,
    /// Linear memory after each input.
    Memory,
    /// The score of the host's judge of this name.
    Score(String),
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measure::Fuel => f.write_str("fuel"),
            Measure::Latency => f.write_str("latency"),
            Measure::Memory => f.write_str("memory"),
            Measure::Score(name) => write!(f, "score.{name}"),
        }
    }
}

/// What an objective asks of the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Shown better by more than `by`: a fraction for fuel, latency and memory (0.1: the
    /// control uses more than 1.1 × the candidate's), the judge's units for a score.
    Better {
        /// The least improvement.
        by: f64,
    },
    /// Not shown worse by more than `by` (same units): a hard constraint.
    NoWorse {
        /// The largest tolerated loss.
        by: f64,
    },
}

/// A measure and its goal.
///
/// Parsed from `MEASURE:GOAL[:BY]` (as `arborctl evolve start --objective` takes it): the
/// measure `fuel`, `latency`, `memory` or `score.NAME`, the goal `better` or `no-worse`, the
/// amount 0 when left out.
///
/// ```
/// use arbor_shadow::objective::{Goal, Measure, Objective};
/// let fuel: Objective = "fuel:better:0.1".parse()?;
/// assert_eq!(fuel, Objective { measure: Measure::Fuel, goal: Goal::Better { by: 0.1 } });
/// let hits: Objective = "score.hits:no-worse".parse()?;
/// assert_eq!(hits.goal, Goal::NoWorse { by: 0.0 });
/// assert_eq!(hits.to_string(), "score.hits:no-worse:0");
/// assert!("fuel:faster".parse::<Objective>().is_err());
/// # Ok::<(), arbor_shadow::ShadowError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// What is measured.
    pub measure: Measure,
    /// What the candidate must show.
    pub goal: Goal,
}

impl Objective {
    /// Refuses an objective the rule cannot test: an amount that is not finite or is
    /// negative, a score without a judge's name.
    pub fn validate(&self) -> Result<(), crate::ShadowError> {
        let by = match self.goal {
            Goal::Better { by } | Goal::NoWorse { by } => by,
        };
        if !(by.is_finite() && by >= 0.0) {
            return Err(crate::ShadowError::Config(format!(
                "objective {self}: the amount must be finite and not negative"
            )));
        }
        if let Measure::Score(name) = &self.measure
            && name.is_empty()
        {
            return Err(crate::ShadowError::Config(
                "objective score: the judge needs a name (score.NAME)".into(),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.goal {
            Goal::Better { by } => write!(f, "{}:better:{by}", self.measure),
            Goal::NoWorse { by } => write!(f, "{}:no-worse:{by}", self.measure),
        }
    }
}

impl FromStr for Objective {
    type Err = crate::ShadowError;

    fn from_str(text: &str) -> Result<Objective, crate::ShadowError> {
        let fail = |why: &str| {
            Err(crate::ShadowError::Config(format!(
                "objective `{text}`: {why} (MEASURE:GOAL[:BY], e.g. fuel:better:0.1)"
            )))
        };
        let mut parts = text.split(':');
        let measure = match parts.next() {
            Some("fuel") => Measure::Fuel,
            Some("latency") => Measure::Latency,
            Some("memory") => Measure::Memory,
            Some(other) => match other.strip_prefix("score.") {
                Some(name) => Measure::Score(name.to_string()),
                None => return fail("the measure is fuel, latency, memory or score.NAME"),
            },
            None => return fail("empty"),
        };
        let by = match parts.clone().nth(1) {
            Some(by) => match by.parse::<f64>() {
                Ok(by) => by,
                Err(_) => return fail("the amount is not a number"),
            },
            None => 0.0,
        };
        let goal = match parts.next() {
            Some("better") => Goal::Better { by },
            Some("no-worse") => Goal::NoWorse { by },
            _ => return fail("the goal is better or no-worse"),
        };
        if parts.nth(1).is_some() {
            return fail("too many parts");
        }
        let objective = Objective { measure, goal };
        objective.validate()?;
        Ok(objective)
    }
}

/// How an objective fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveResult {
    /// The objective.
    pub objective: Objective,
    /// Pairs compared.
    pub n: usize,
    /// The candidate against the control: a relative change for fuel, latency and memory
    /// (-0.2 = 20 % less), a difference in the judge's units for a score (candidate minus
    /// control). `None` without pairs.
    pub change: Option<f64>,
    /// The interval of `change` at the objective's level.
    pub interval: Option<(f64, f64)>,
    /// The one-sided p-value of the test the goal asks for (better: that it is better by
    /// more than the amount; no worse: that it is worse by more than the amount).
    pub p: f64,
    /// The level the test was held to (the policy's alpha divided among the objectives).
    pub alpha: f64,
    /// Whether the goal is met.
    pub met: bool,
}

impl fmt::Display for ObjectiveResult {
    /// `fuel:better:0.1 met: -23.4% (CI -25.0%..-21.9%, p = 1.2e-9, n = 400)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let met = if self.met { "met" } else { "not met" };
        write!(f, "{} {met}", self.objective)?;
        let ratio = !matches!(self.objective.measure, Measure::Score(_));
        let show = |x: f64| {
            if ratio {
                format!("{:+.1}%", x * 100.0)
            } else {
                format!("{x:+.4}")
            }
        };
        match (self.change, self.interval) {
            (Some(change), Some((low, high))) => write!(
                f,
                ": {} (CI {}..{}, p = {:.2e}, n = {})",
                show(change),
                show(low),
                show(high),
                self.p,
                self.n
            ),
            _ => write!(f, ": {} pairs (no data means fail)", self.n),
        }
    }
}

/// Tests `objective` on (control, candidate) `pairs` at level `alpha` (see the module docs);
/// `higher_is_better` is the judge's direction for a score (ignored for the other measures,
/// where lower is better).
///
/// ```
/// use arbor_shadow::objective::{Goal, Measure, Objective, judge};
/// // The candidate uses 20 % less fuel on every input.
/// let pairs: Vec<(f64, f64)> = (1..200).map(|i| (1000.0 + i as f64, (1000.0 + i as f64) * 0.8)).collect();
/// let better = Objective { measure: Measure::Fuel, goal: Goal::Better { by: 0.1 } };
/// let result = judge(&better, &pairs, true, 0.01, 1_000);
/// assert!(result.met, "{result}");
/// assert!((result.change.unwrap() + 0.2).abs() < 1e-9);
/// let much_better = Objective { measure: Measure::Fuel, goal: Goal::Better { by: 0.5 } };
/// assert!(!judge(&much_better, &pairs, true, 0.01, 1_000).met);
/// ```
pub fn judge(
    objective: &Objective,
    pairs: &[(f64, f64)],
    higher_is_better: bool,
    alpha: f64,
    max_pairs: usize,
) -> ObjectiveResult {
    let ratio = !matches!(objective.measure, Measure::Score(_));
    let lower_is_better = ratio || !higher_is_better;
    // Each test asks whether the second of a pair is above the first by more than the
    // amount: "better" puts the candidate first when lower is better, "no worse" when higher
    // is better (then it asks whether the control is above the candidate).
    let (by, better) = match objective.goal {
        Goal::Better { by } => (by, true),
        Goal::NoWorse { by } => (by, false),
    };
    let swap = if better {
        lower_is_better
    } else {
        !lower_is_better
    };
    let swapped: Vec<(f64, f64)>;
    let oriented = if swap {
        swapped = pairs.iter().map(|&(a, b)| (b, a)).collect();
        swapped.as_slice()
    } else {
        pairs
    };
    let comparison = if ratio {
        compare_paired(oriented, by, alpha, max_pairs)
    } else {
        compare_differences(oriented, by, alpha, max_pairs)
    };
    let Some(c) = comparison else {
        return ObjectiveResult {
            objective: objective.clone(),
            n: 0,
            change: None,
            interval: None,
            p: 1.0,
            alpha,
            met: false,
        };
    };
    let met = if better { c.worse } else { !c.worse };
    // Back to "the candidate against the control": a swapped ratio r (control over
    // candidate) is a change of 1/(1+r) - 1, a swapped difference d is -d; both flip the
    // interval's ends.
    let back = |x: f64| if ratio { 1.0 / (1.0 + x) - 1.0 } else { -x };
    let (change, interval) = if swap {
        (back(c.shift), (back(c.ci_high), back(c.ci_low)))
    } else {
        (c.shift, (c.ci_low, c.ci_high))
    };
    ObjectiveResult {
        objective: objective.clone(),
        n: c.n,
        change: Some(change),
        interval: Some(interval),
        p: c.p_worse,
        alpha,
        met,
    }
}

/// The comparator of an accepted candidate: its reply differences were accepted by a person.
struct Accepted;

impl Comparator for Accepted {
    fn grade(&self, _: &str, _: &[u8], _: &[u8], _: &[u8]) -> Grade {
        Grade::Same
    }
}

/// Judges known by name.
pub(crate) type Judges = Vec<(String, Arc<dyn Judge>)>;

/// What a comparison of two runs applies: the ignore rules, the comparator that grades reply
/// differences, and the judges whose scores are paired.
#[derive(Clone, Default)]
pub(crate) struct Rules {
    pub(crate) ignore: Vec<IgnoreRule>,
    pub(crate) comparator: Option<Arc<dyn Comparator>>,
    pub(crate) judges: Judges,
}

impl Rules {
    /// With every reply difference graded the same when `accepted`: a person accepted the
    /// candidate's differences ([`Arbiter::accept`](crate::Arbiter::accept)), so the watch
    /// after its promotion rolls back only on what else differs (traps, refusals, sends,
    /// state).
    pub(crate) fn accepting(mut self, accepted: bool) -> Rules {
        if accepted {
            self.comparator = Some(Arc::new(Accepted));
        }
        self
    }

    /// Whether a judge reads the state after each input.
    pub(crate) fn needs_state(&self) -> bool {
        self.judges.iter().any(|(_, judge)| judge.needs_state())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pairs(
        n: usize,
        control: impl Fn(usize) -> f64,
        candidate: impl Fn(usize) -> f64,
    ) -> Vec<(f64, f64)> {
        (0..n).map(|i| (control(i), candidate(i))).collect()
    }

    fn objective(measure: Measure, goal: Goal) -> Objective {
        Objective { measure, goal }
    }

    /// Every (measure direction, goal, candidate) combination: whether it is met, and the
    /// sign of the change reported (the candidate against the control).
    #[test]
    fn the_goal_table() {
        let noise = |i: usize| ((i * 7919) % 13) as f64;
        let base = |i: usize| 1_000.0 + noise(i);
        let (fuel, score) = (|| Measure::Fuel, || Measure::Score("q".into()));
        let (better, hold) = (|by| Goal::Better { by }, |by| Goal::NoWorse { by });
        // (measure, higher is better, goal, candidate = base * scale + shift, met, change sign)
        type Row = (Measure, bool, Goal, (f64, f64), bool, f64);
        let rows: Vec<Row> = vec![
            (fuel(), true, better(0.1), (0.7, 0.0), true, -1.0),
            (fuel(), true, better(0.1), (0.95, 0.0), false, -1.0),
            (fuel(), true, better(0.1), (1.3, 0.0), false, 1.0),
            (fuel(), true, hold(0.05), (1.3, 0.0), false, 1.0),
            (fuel(), true, hold(0.05), (1.02, 0.0), true, 1.0),
            (fuel(), true, hold(0.05), (0.7, 0.0), true, -1.0),
            (score(), true, better(1.0), (1.0, 5.0), true, 1.0),
            (score(), true, better(1.0), (1.0, -5.0), false, -1.0),
            (score(), true, hold(1.0), (1.0, -5.0), false, -1.0),
            (score(), true, hold(1.0), (1.0, 5.0), true, 1.0),
            (score(), false, better(1.0), (1.0, -5.0), true, -1.0),
            (score(), false, better(1.0), (1.0, 5.0), false, 1.0),
            (score(), false, hold(1.0), (1.0, 5.0), false, 1.0),
            (score(), false, hold(1.0), (1.0, -5.0), true, -1.0),
        ];
        for (measure, higher, goal, (scale, shift), met, sign) in rows {
            let o = objective(measure, goal);
            let candidate = |i| base(i) * scale + shift;
            let result = judge(&o, &pairs(200, base, candidate), higher, 0.01, 1_000);
            assert_eq!(
                result.met, met,
                "{o} (higher is better: {higher}): {result}"
            );
            let change = result.change.unwrap();
            assert_eq!(change.signum(), sign, "{o}: {result}");
            let (low, high) = result.interval.unwrap();
            assert!(low <= change && change <= high, "{o}: {result}");
        }
    }

    #[test]
    fn no_pairs_means_not_met() {
        for goal in [Goal::Better { by: 0.0 }, Goal::NoWorse { by: 0.0 }] {
            let result = judge(&objective(Measure::Memory, goal), &[], true, 0.01, 1_000);
            assert!(!result.met);
            assert!(
                result.to_string().contains("no data means fail"),
                "{result}"
            );
        }
    }

    #[test]
    fn the_same_code_is_not_better() {
        let same = pairs(500, |i| 100.0 + i as f64, |i| 100.0 + i as f64);
        let better = objective(Measure::Fuel, Goal::Better { by: 0.0 });
        assert!(!judge(&better, &same, true, 0.01, 1_000).met);
        let hold = objective(Measure::Fuel, Goal::NoWorse { by: 0.0 });
        assert!(judge(&hold, &same, true, 0.01, 1_000).met);
    }

    #[test]
    fn objectives_parse_and_print() {
        for text in [
            "fuel:better:0.1",
            "latency:no-worse:0.5",
            "memory:better:0",
            "score.hits:better:1.5",
        ] {
            let objective: Objective = text.parse().unwrap();
            assert_eq!(objective.to_string(), text);
        }
        for bad in [
            "",
            "fuel",
            "fuel:better:x",
            "fuel:better:-1",
            "fuel:better:1:2",
            "speed:better",
            "score.:better",
        ] {
            assert!(bad.parse::<Objective>().is_err(), "{bad}");
        }
    }
}
