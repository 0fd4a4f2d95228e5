//! The decision rule: what a candidate must show before it may replace the current module.
//!
//! A candidate is judged on the samples its shadows produced — production inputs handled by the
//! candidate and, beside it, by a control shadow running the current module (Diffy's second
//! copy, the A/A pair): first the inputs recorded in the journal (the replay gate), then live
//! inputs mirrored from production, through the same pair of instances (so the candidate's
//! instance has aged through all of them). The rule, applied by [`decide`]:
//!
//! 1. **A stated bound, or fail.** A *failure* is an input on which the candidate's reply,
//!    sends or state differ from the control's (after the declared ignore rules), or on which it
//!    trapped or refused where the control did not. The candidate is approved only when the
//!    one-sided [`Policy::confidence`] upper bound on its failure rate (Clopper-Pearson) is below
//!    [`Policy::target_failure_rate`]: by default *failure rate < 0.1 % at 95 %*, which takes at
//!    least 2,995 clean samples ([`Policy::required_samples`]; the old 300 bounded it only near
//!    1 %). Fewer samples reject: no data means fail (Kayenta). The verdict states the bound it
//!    proved, overall and per message kind ([`Decision::bound`]).
//! 2. **Coverage.** Every message kind production received needs [`Policy::min_per_kind`]
//!    samples; every *input class* seen ([`input_class`](crate::compare::input_class): the kind
//!    and a coarse shape of its fields, e.g. the leading letters of a key) needs
//!    `min(`[`Policy::min_per_class`]`, times seen)`; and at least [`Policy::min_live_samples`]
//!    samples must be live, so the candidate met current traffic, not only the journal.
//! 3. **Nondeterminism blocks promotion.** Any difference between the control and production
//!    (same code, same state, same recorded answers) means something escaped the journal; the
//!    verdict is *inconclusive* and the candidate is not promoted.
//! 4. **Observed rates.** Mismatches (replies, sends, states) and candidate errors over the
//!    samples must not exceed [`Policy::max_mismatch_rate`] and [`Policy::max_error_rate`]
//!    (default 0: one failure rejects, and the evaluation stops there).
//! 5. **Cost, per message kind.** Fuel is compared pair by pair (same input, deterministic),
//!    pooled and for every kind with at least `min_per_kind` pairs, three ways: the typical input
//!    (one-sided Wilcoxon signed-rank test on log ratios against [`Policy::fuel_tolerance`],
//!    with the Hodges-Lehmann shift as evidence), the total (mean ratio) and the tail (the
//!    [`Policy::cost_quantile`] ratio), the last two with paired bootstrap intervals. A kind
//!    whose cost is worse beyond the tolerance by any of the three (at level [`Policy::alpha`]
//!    divided among the kinds) rejects: a candidate 30 % costlier on `Scan` alone, or ten times
//!    costlier on one input in ten, is caught even when the pooled median does not move.
//! 6. **Latency** is compared pooled, like fuel's typical input but with the much wider
//!    [`Policy::latency_tolerance`] (50 %): on a shared 2-core machine two instances of the
//!    *same* code measured 30 % apart for hundreds of inputs. It is judged only when the
//!    control's median handle time reaches [`Policy::latency_floor`] (100 µs): below it a handle
//!    is a few microseconds and instance memory effects outweigh the code.
//! 7. **State migration.** The candidate's state after migrating production's must keep every
//!    datum production's state holds ([`migration`](crate::migration)); a candidate that cannot
//!    show it is rejected, at the gate, at the shadows and again at the promotion's swap.
//!
//! 8. **Objectives.** An evaluation may ask more than "no worse": each of its
//!    [`Objective`]s (fuel, latency, memory or a host judge's score, to be better by an
//!    amount or no worse than one) is tested on the paired measurements at [`Policy::alpha`]
//!    divided among them, and one not met rejects ([`objective`](crate::objective)). Reply
//!    differences the evaluation's comparator grades *better* or *same* are not failures
//!    (rules 1 and 4 count only *worse* and *wrong*).
//!
//! After a promotion, the **watch** is part of the rule: the previous module runs as a reverse
//! shadow for at least [`ArbiterConfig::watch`](crate::ArbiterConfig::watch) *and*
//! [`ArbiterConfig::watch_samples`](crate::ArbiterConfig::watch_samples) compared inputs; inputs
//! the reverse shadow missed are caught up from the journal, and a difference rolls back.
//!
//! Failures reject early: once the allowed number of mismatches or errors is exceeded, more
//! samples cannot change the verdict, and the gate and the shadows stop.

use std::collections::BTreeMap;
use std::time::Duration;

use arbor_vault::Verdict;
use serde::{Deserialize, Serialize};

use crate::objective::{Measure, Objective, ObjectiveResult, Rules, judge};
use crate::stats::{PairedComparison, Ratio, Summary, compare_paired};
// What the rule judges; counted by `tally`, re-exported here as the rule's input.
pub use crate::tally::{Divergence, Pairs, Tally};

/// The thresholds of the decision rule (see the module docs). Deserialising fills fields a
/// stored configuration lacks with their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// The failure rate the candidate must be shown to stay below (default 0.001: 0.1 %).
    pub target_failure_rate: f64,
    /// The confidence of that bound (default 0.95).
    pub confidence: f64,
    /// Compared inputs needed in any case, beyond what the bound takes (default 0).
    pub min_samples: u64,
    /// Compared inputs needed of every message kind production received.
    pub min_per_kind: u64,
    /// Compared inputs needed of every input class seen (or all of them, if fewer were seen).
    pub min_per_class: u64,
    /// Compared inputs needed from live traffic (beyond the journal's replay).
    pub min_live_samples: u64,
    /// Allowed fraction of mismatching inputs (replies, sends, state).
    pub max_mismatch_rate: f64,
    /// Allowed fraction of inputs the candidate failed where the control did not.
    pub max_error_rate: f64,
    /// How much more fuel (relative) the candidate may use, typically, in total and in the
    /// tail, per message kind.
    pub fuel_tolerance: f64,
    /// The quantile whose fuel is compared as the tail (default 0.95).
    pub cost_quantile: f64,
    /// How much slower (relative) the candidate may be.
    pub latency_tolerance: f64,
    /// The cost tests' significance level (divided among the message kinds).
    pub alpha: f64,
    /// Latency is judged only when the control's median handle time is at least this: below
    /// it, a handle takes microseconds and instance memory effects (a fresh instance's page
    /// faults, cache placement) outweigh the code; fuel still judges cost.
    pub latency_floor: Duration,
    /// Pairs the rank tests use at most (evenly spaced), bounding their O(n²) cost.
    pub max_rank_pairs: usize,
    /// Compare the candidate's state with the control's every this many inputs (and at the
    /// end).
    pub state_every: u64,
}

/// The most pairs a rank test may use (see [`Policy::max_rank_pairs`]).
pub const MAX_RANK_PAIRS: usize = 5_000;

impl Policy {
    /// Compared inputs an approval needs: the fewest clean samples that bound the failure rate
    /// below [`target_failure_rate`](Self::target_failure_rate) at
    /// [`confidence`](Self::confidence) (2,995 by default), or
    /// [`min_samples`](Self::min_samples) if that is more.
    ///
    /// ```
    /// use arbor_shadow::Policy;
    /// assert_eq!(Policy::default().required_samples(), 2_995);
    /// let quick = Policy { target_failure_rate: 0.05, ..Policy::default() };
    /// assert_eq!(quick.required_samples(), 59);
    /// ```
    pub fn required_samples(&self) -> u64 {
        crate::stats::samples_for_bound(self.target_failure_rate, self.confidence)
            .max(self.min_samples)
            .max(1)
    }

    /// Refuses thresholds the rule cannot work with.
    pub fn validate(&self) -> Result<(), crate::ShadowError> {
        let fail = |what: String| Err(crate::ShadowError::Config(what));
        for (name, rate) in [
            ("max_mismatch_rate", self.max_mismatch_rate),
            ("max_error_rate", self.max_error_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return fail(format!("{name} must be in [0, 1], not {rate}"));
            }
        }
        // Below 1e-6 the bound would ask for millions of samples: a mistake, not a policy.
        if !(self.target_failure_rate >= 1e-6 && self.target_failure_rate < 1.0) {
            return fail(format!(
                "target_failure_rate must be in [1e-6, 1), not {}",
                self.target_failure_rate
            ));
        }
        if !(self.confidence >= 0.5 && self.confidence < 1.0) {
            return fail(format!(
                "confidence must be in [0.5, 1), not {}",
                self.confidence
            ));
        }
        if !(self.cost_quantile > 0.0 && self.cost_quantile < 1.0) {
            return fail(format!(
                "cost_quantile must be in (0, 1), not {}",
                self.cost_quantile
            ));
        }
        for (name, tolerance) in [
            ("fuel_tolerance", self.fuel_tolerance),
            ("latency_tolerance", self.latency_tolerance),
        ] {
            if !(tolerance.is_finite() && tolerance >= 0.0) {
                return fail(format!(
                    "{name} must be finite and not negative, not {tolerance}"
                ));
            }
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return fail(format!("alpha must be in (0, 1), not {}", self.alpha));
        }
        // The rank tests hold n(n+1)/2 Walsh averages: 5,000 pairs is 100 MB of them.
        if !(2..=MAX_RANK_PAIRS).contains(&self.max_rank_pairs) {
            return fail(format!(
                "max_rank_pairs must be in 2..={MAX_RANK_PAIRS}, not {}",
                self.max_rank_pairs
            ));
        }
        if self.state_every == 0 {
            return fail("state_every must be at least 1".into());
        }
        Ok(())
    }

    /// The bound this policy asks for, in words (`failure rate < 0.1 % at 95 %`).
    pub fn target(&self) -> String {
        format!(
            "failure rate < {} at {}",
            percent(self.target_failure_rate),
            percent(self.confidence)
        )
    }
}

/// A rate as a percentage, without trailing zeros (`0.1 %`, `95 %`, `0.012 %`).
fn percent(rate: f64) -> String {
    let text = format!("{:.4}", rate * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} %")
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            target_failure_rate: 0.001,
            confidence: 0.95,
            min_samples: 0,
            min_per_kind: 30,
            min_per_class: 3,
            min_live_samples: 100,
            max_mismatch_rate: 0.0,
            max_error_rate: 0.0,
            fuel_tolerance: 0.05,
            cost_quantile: 0.95,
            latency_tolerance: 0.5,
            alpha: 0.01,
            latency_floor: Duration::from_micros(100),
            max_rank_pairs: 1_000,
            state_every: 1_024,
        }
    }
}

/// Bounds on what evaluations may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowLimits {
    /// Evaluations running at once (each runs two shadows: candidate and control).
    pub max_evaluations: usize,
    /// Linear memory cap of each shadow instance (the agent's own cap if lower).
    pub memory_bytes: u64,
    /// Fuel per input for each shadow instance.
    pub fuel: u64,
    /// An evaluation decides with what it has after this long (no data means fail).
    pub deadline: Duration,
    /// Mirrored inputs waiting for the shadows; beyond it production records a gap instead of
    /// waiting.
    pub queue: usize,
    /// Journal records the replay gate reads at most.
    pub gate_max_records: u64,
}

/// The longest deadline or watch window accepted (a year): longer ones are a mistake, and
/// would overflow the clock arithmetic.
pub const MAX_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

impl ShadowLimits {
    /// Refuses limits nothing could run under.
    pub fn validate(&self) -> Result<(), crate::ShadowError> {
        let fail = |what: &str| Err(crate::ShadowError::Config(what.into()));
        if self.max_evaluations == 0 {
            return fail("max_evaluations must be at least 1");
        }
        if self.queue == 0 {
            return fail("queue must be at least 1");
        }
        if self.memory_bytes == 0 || self.fuel == 0 {
            return fail("memory_bytes and fuel must be above 0");
        }
        if self.deadline > MAX_WINDOW {
            return fail("deadline must be at most a year");
        }
        Ok(())
    }
}

impl Default for ShadowLimits {
    fn default() -> Self {
        ShadowLimits {
            max_evaluations: 2,
            memory_bytes: 64 << 20,
            fuel: 1_000_000_000,
            deadline: Duration::from_secs(600),
            queue: 4_096,
            gate_max_records: 100_000,
        }
    }
}

/// The bound on the failure rate an evaluation proved (or failed to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureBound {
    /// Failures counted.
    pub failures: u64,
    /// Inputs compared.
    pub samples: u64,
    /// The one-sided upper bound on the failure rate at `confidence`.
    pub upper: f64,
    /// The confidence.
    pub confidence: f64,
    /// The rate it had to be below.
    pub target: f64,
    /// Whether `upper < target`.
    pub proved: bool,
    /// The same, per message kind: (failures, samples, upper bound).
    pub per_kind: BTreeMap<String, (u64, u64, f64)>,
}

impl FailureBound {
    fn of(tally: &Tally, policy: &Policy) -> FailureBound {
        let upper = crate::stats::failure_rate_bound(
            tally.failure_count(),
            tally.samples,
            policy.confidence,
        );
        let per_kind = tally
            .per_kind
            .iter()
            .map(|(kind, &samples)| {
                let failures = tally.failures_per_kind.get(kind).copied().unwrap_or(0);
                let upper = crate::stats::failure_rate_bound(failures, samples, policy.confidence);
                (kind.clone(), (failures, samples, upper))
            })
            .collect();
        FailureBound {
            failures: tally.failure_count(),
            samples: tally.samples,
            upper,
            confidence: policy.confidence,
            target: policy.target_failure_rate,
            proved: upper < policy.target_failure_rate,
            per_kind,
        }
    }
}

impl std::fmt::Display for FailureBound {
    /// `failure rate < 0.1 % at 95 % (0 failures in 3,012 inputs; Get < 0.25 %, Put < 0.3 %)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "failure rate < {} at {} ({} failures in {} inputs",
            percent(self.upper),
            percent(self.confidence),
            self.failures,
            self.samples
        )?;
        for (i, (kind, (_, _, upper))) in self.per_kind.iter().enumerate() {
            let sep = if i == 0 { "; " } else { ", " };
            write!(f, "{sep}{kind} < {}", percent(*upper))?;
        }
        f.write_str(")")
    }
}

/// The cost comparison of one message kind (or of all of them pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindCost {
    /// Pairs compared.
    pub n: usize,
    /// The typical input: signed-rank test and Hodges-Lehmann shift.
    pub median: Option<PairedComparison>,
    /// The total: mean ratio with its interval.
    pub mean: Option<Ratio>,
    /// The tail: the policy's quantile ratio with its interval.
    pub tail: Option<Ratio>,
    /// Whether the kind is worse beyond the tolerance by any of the three.
    pub worse: bool,
}

impl KindCost {
    fn of(pairs: &[(f64, f64)], policy: &Policy, alpha: f64) -> KindCost {
        let median = compare_paired(pairs, policy.fuel_tolerance, alpha, policy.max_rank_pairs);
        let mean = crate::stats::paired_ratio(pairs, Summary::Mean, alpha);
        let tail =
            crate::stats::paired_ratio(pairs, Summary::Quantile(policy.cost_quantile), alpha);
        let beyond = |ratio: &Option<Ratio>| ratio.is_some_and(|r| r.low > policy.fuel_tolerance);
        KindCost {
            n: pairs.len(),
            worse: median.is_some_and(|m| m.worse) || beyond(&mean) || beyond(&tail),
            median,
            mean,
            tail,
        }
    }

    /// What makes it worse, for a verdict's reasons: `fuel +30.0% (…)` for all inputs, `fuel of
    /// \`Scan\` +30.0% (…)` for a kind; the typical input first, then the total and the tail.
    fn why(&self, kind: Option<&str>, policy: &Policy) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.median.filter(|m| m.worse) {
            parts.push(format!(
                "{:+.1}% (95% CI {:+.1}%..{:+.1}%, p = {:.2e})",
                m.shift * 100.0,
                m.ci_low * 100.0,
                m.ci_high * 100.0,
                m.p_worse
            ));
        }
        for (name, ratio) in [("mean", &self.mean), ("tail", &self.tail)] {
            if let Some(r) = ratio.filter(|r| r.low > policy.fuel_tolerance) {
                parts.push(format!(
                    "{name} {:+.1}% (CI {:+.1}%..{:+.1}%)",
                    r.estimate * 100.0,
                    r.low * 100.0,
                    r.high * 100.0
                ));
            }
        }
        let what = kind.map_or_else(|| "fuel".to_string(), |kind| format!("fuel of `{kind}`"));
        format!(
            "{what} {}, worse than the {:.0}% tolerance",
            parts.join(", "),
            policy.fuel_tolerance * 100.0
        )
    }
}

/// Judges fuel (see the module docs, rule 5): pooled and per kind with at least
/// `min_per_kind` pairs, the level divided among them. Returns the pooled comparison, the
/// per-kind ones and the reasons to reject.
pub(crate) fn judge_cost(
    tally: &Tally,
    policy: &Policy,
) -> (
    Option<PairedComparison>,
    BTreeMap<String, KindCost>,
    Vec<String>,
) {
    let mut reasons = Vec::new();
    let judged: Vec<(&String, &Pairs)> = tally
        .fuel_by_kind
        .iter()
        .filter(|(_, pairs)| pairs.as_slice().len() as u64 >= policy.min_per_kind.max(2))
        .collect();
    // Bonferroni over the pooled test and each kind's.
    let alpha = policy.alpha / (judged.len() + 1) as f64;
    let all = KindCost::of(tally.fuel.as_slice(), policy, alpha);
    if all.worse {
        reasons.push(all.why(None, policy));
    }
    let pooled = all.median;
    let mut per_kind = BTreeMap::new();
    for (kind, pairs) in judged {
        let cost = KindCost::of(pairs.as_slice(), policy, alpha);
        if cost.worse {
            reasons.push(cost.why(Some(kind), policy));
        }
        per_kind.insert(kind.clone(), cost);
    }
    (pooled, per_kind, reasons)
}

/// A verdict and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Approved, rejected or inconclusive.
    pub verdict: Verdict,
    /// Each rule that failed, for people; empty when approved.
    pub reasons: Vec<String>,
    /// The fuel comparison (candidate against reference), pooled.
    pub fuel: Option<PairedComparison>,
    /// The fuel comparison of each message kind with enough pairs.
    #[serde(default)]
    pub fuel_by_kind: BTreeMap<String, KindCost>,
    /// The latency comparison.
    pub latency: Option<PairedComparison>,
    /// The bound on the failure rate the samples prove (`None` without samples).
    #[serde(default)]
    pub bound: Option<FailureBound>,
    /// How each of the evaluation's objectives fared
    /// ([`objective`](crate::objective)).
    #[serde(default)]
    pub objectives: Vec<ObjectiveResult>,
}

/// Applies the rule (see the module docs) to what has been counted.
///
/// ```
/// use arbor_shadow::policy::{Policy, Tally, decide};
/// use arbor_vault::Verdict;
///
/// // No data means fail.
/// let decision = decide(&Tally::default(), &Policy::default());
/// assert_eq!(decision.verdict, Verdict::Rejected);
/// assert!(decision.reasons[0].contains("no data means fail"));
/// ```
pub fn decide(tally: &Tally, policy: &Policy) -> Decision {
    let mut reasons = Vec::new();
    let mut inconclusive = Vec::new();
    let n = tally.samples;
    let required = policy.required_samples();
    if n < required {
        reasons.push(format!(
            "{n} samples, fewer than the {required} that {} needs (no data means fail)",
            policy.target()
        ));
    }
    if tally.live_samples < policy.min_live_samples {
        reasons.push(format!(
            "{} live samples, fewer than the {} required",
            tally.live_samples, policy.min_live_samples
        ));
    }
    for (kind, &count) in &tally.per_kind {
        if count < policy.min_per_kind {
            reasons.push(format!(
                "{count} samples of `{kind}`, fewer than the {} required per kind",
                policy.min_per_kind
            ));
        }
    }
    let thin: Vec<String> = thin_classes(tally, policy)
        .map(|(class, compared, seen)| format!("`{class}` ({compared} of {seen})"))
        .collect();
    if !thin.is_empty() {
        reasons.push(format!(
            "input classes compared fewer than min({}, times seen) times: {}",
            policy.min_per_class,
            thin.join(", ")
        ));
    }
    if tally.aa_mismatches > 0 {
        inconclusive.push(format!(
            "{} A/A differences between the control and production: nondeterminism escaped the \
             journal, so differences cannot be blamed on the candidate",
            tally.aa_mismatches
        ));
    }
    let rate = |count: u64| if n == 0 { 0.0 } else { count as f64 / n as f64 };
    if rate(tally.mismatch_count()) > policy.max_mismatch_rate {
        reasons.push(format!(
            "{} mismatches ({} replies/sends, {} states) in {n} samples, above the allowed rate {}",
            tally.mismatch_count(),
            tally.mismatches,
            tally.state_divergences,
            policy.max_mismatch_rate
        ));
    }
    if rate(tally.error_count()) > policy.max_error_rate {
        reasons.push(format!(
            "{} candidate failures ({} traps, {} refusals) in {n} samples, above the allowed rate {}",
            tally.error_count(),
            tally.traps,
            tally.errors,
            policy.max_error_rate
        ));
    }
    let bound = (n > 0).then(|| FailureBound::of(tally, policy));
    if let Some(bound) = bound.as_ref().filter(|b| !b.proved && n >= required) {
        reasons.push(format!(
            "the {} bound on the failure rate is {} ({} failures in {n}), not below the target {}",
            percent(bound.confidence),
            percent(bound.upper),
            bound.failures,
            percent(bound.target)
        ));
    }
    let (fuel, fuel_by_kind, cost_reasons) = judge_cost(tally, policy);
    reasons.extend(cost_reasons);
    let latency = compare_paired(
        tally.latency.as_slice(),
        policy.latency_tolerance,
        policy.alpha,
        policy.max_rank_pairs,
    );
    let control_median = crate::stats::median(
        &tally
            .latency
            .as_slice()
            .iter()
            .map(|(control, _)| *control)
            .collect::<Vec<_>>(),
    );
    let measurable =
        control_median.is_some_and(|nanos| nanos >= policy.latency_floor.as_nanos() as f64);
    if let Some(latency) = latency.filter(|c| c.worse && measurable) {
        reasons.push(format!(
            "latency {:+.1}% (95% CI {:+.1}%..{:+.1}%), worse than the {:.0}% tolerance (p = {:.2e})",
            latency.shift * 100.0,
            latency.ci_low * 100.0,
            latency.ci_high * 100.0,
            policy.latency_tolerance * 100.0,
            latency.p_worse
        ));
    }
    let verdict = if !reasons.is_empty() {
        Verdict::Rejected
    } else if !inconclusive.is_empty() {
        reasons = inconclusive;
        Verdict::Inconclusive
    } else {
        Verdict::Approved
    };
    Decision {
        verdict,
        reasons,
        fuel,
        fuel_by_kind,
        latency,
        bound,
        objectives: Vec::new(),
    }
}

/// Tests the evaluation's `objectives` on what was counted (rule 8 of the module docs) and
/// adds them to `decision`: an objective not met rejects.
pub(crate) fn apply_objectives(
    decision: &mut Decision,
    tally: &Tally,
    objectives: &[Objective],
    rules: &Rules,
    policy: &Policy,
) {
    if objectives.is_empty() {
        return;
    }
    let alpha = policy.alpha / objectives.len() as f64;
    let none = Pairs::default();
    let mut unmet = Vec::new();
    for objective in objectives {
        let (pairs, higher_is_better) = match &objective.measure {
            Measure::Fuel => (&tally.fuel, false),
            Measure::Latency => (&tally.latency, false),
            Measure::Memory => (&tally.memory, false),
            Measure::Score(name) => (
                tally.scores.get(name).unwrap_or(&none),
                rules
                    .judges
                    .iter()
                    .find(|(judge, _)| judge == name)
                    .is_none_or(|(_, judge)| judge.higher_is_better()),
            ),
        };
        let result = judge(
            objective,
            pairs.as_slice(),
            higher_is_better,
            alpha,
            policy.max_rank_pairs,
        );
        if !result.met {
            unmet.push(format!("objective {result}"));
        }
        decision.objectives.push(result);
    }
    if unmet.is_empty() {
        return;
    }
    if decision.verdict != Verdict::Rejected {
        // Rejection outranks inconclusive, as in `decide`.
        decision.reasons.clear();
        decision.verdict = Verdict::Rejected;
    }
    decision.reasons.extend(unmet);
}

/// Classes compared fewer than `min(min_per_class, seen)` times: (class, compared, seen).
fn thin_classes<'a>(
    tally: &'a Tally,
    policy: &'a Policy,
) -> impl Iterator<Item = (&'a String, u64, u64)> + 'a {
    tally.seen_per_class.iter().filter_map(|(class, &seen)| {
        let compared = tally.per_class.get(class).copied().unwrap_or(0);
        (compared < policy.min_per_class.min(seen)).then_some((class, compared, seen))
    })
}

/// Whether the failures counted so far already exceed what the rule allows at the samples it
/// needs, so the evaluation can stop and reject.
pub(crate) fn already_failed(tally: &Tally, policy: &Policy) -> bool {
    let allowed =
        |rate: f64| (rate * policy.required_samples().max(tally.samples) as f64).floor() as u64;
    tally.mismatch_count() > allowed(policy.max_mismatch_rate)
        || tally.error_count() > allowed(policy.max_error_rate)
}

/// Whether the samples satisfy the minimums (the bound's count, live, per kind, per class).
pub(crate) fn enough(tally: &Tally, policy: &Policy) -> bool {
    tally.samples >= policy.required_samples()
        && tally.live_samples >= policy.min_live_samples
        && tally.per_kind.values().all(|&n| n >= policy.min_per_kind)
        && thin_classes(tally, policy).next().is_none()
}

#[cfg(test)]
mod tests;
