//! The decision rule: what a candidate must show before it may replace the current module.
//!
//! A candidate is judged on the samples its shadow produced — production inputs handled by the
//! candidate and, beside it, by a control shadow running the current module (Diffy's second
//! copy, the A/A pair). The rule, applied by [`decide`]:
//!
//! 1. **No data means fail** (Kayenta). Fewer than [`Policy::min_samples`] compared inputs, or
//!    fewer than [`Policy::min_per_kind`] of any message kind production received, rejects. The
//!    default `min_samples` is 300: with zero failures in n samples the 95 % upper bound on the
//!    failure rate is about 3/n (the rule of three), so 300 clean samples bound it near 1 %.
//! 2. **Nondeterminism blocks promotion.** Any difference between the control and production
//!    (same code, same state, same recorded answers) means something escaped the journal; the
//!    verdict is *inconclusive* and the candidate is not promoted.
//! 3. **Mismatches.** Replies that differ (after the candidate's ignore rules), sends that
//!    differ and state divergences (the candidate's state against the control's migrated into
//!    the candidate) over the samples must not exceed [`Policy::max_mismatch_rate`] (default 0).
//! 4. **Errors.** Traps, refusals and budget overruns of the candidate where the control
//!    succeeded must not exceed [`Policy::max_error_rate`] (default 0).
//! 5. **Cost and latency.** Fuel and handle time are compared pair by pair (same input, same
//!    thread, order alternated). A one-sided Wilcoxon signed-rank test on log ratios of "the
//!    candidate is worse by more than the tolerance" ([`Policy::fuel_tolerance`] 5 %,
//!    [`Policy::latency_tolerance`] 50 %) rejects when p < [`Policy::alpha`] (1 %); the
//!    Hodges-Lehmann shift and its interval are kept as evidence. Fuel is deterministic, so its
//!    comparison is free of scheduler noise; latency is not — on a shared 2-core machine two
//!    instances of the *same* code measured 30 % apart for hundreds of inputs — hence its much
//!    wider band, and latency is judged only when the control's median handle time reaches
//!    [`Policy::latency_floor`] (100 µs): below it a handle is a few microseconds and instance
//!    memory effects outweigh the code.
//!
//! Otherwise the candidate is approved. Failures reject early: once the allowed number of
//! mismatches or errors at `min_samples` is exceeded, more samples cannot change the verdict.

use std::collections::BTreeMap;
use std::time::Duration;

use arbor_vault::Verdict;
use serde::{Deserialize, Serialize};

use crate::stats::{PairedComparison, compare_paired};

/// The thresholds of the decision rule (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Compared inputs needed before approving.
    pub min_samples: u64,
    /// Compared inputs needed of every message kind production received.
    pub min_per_kind: u64,
    /// Allowed fraction of mismatching inputs (replies, sends, state).
    pub max_mismatch_rate: f64,
    /// Allowed fraction of inputs the candidate failed where the control did not.
    pub max_error_rate: f64,
    /// How much more fuel (relative) the candidate may use.
    pub fuel_tolerance: f64,
    /// How much slower (relative) the candidate may be.
    pub latency_tolerance: f64,
    /// The rank tests' significance level.
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
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_samples: 300,
            min_per_kind: 30,
            max_mismatch_rate: 0.0,
            max_error_rate: 0.0,
            fuel_tolerance: 0.05,
            latency_tolerance: 0.5,
            alpha: 0.01,
            latency_floor: Duration::from_micros(100),
            max_rank_pairs: 2_000,
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

/// One input on which two runs differed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// The input's number.
    pub seq: u64,
    /// Its message kind.
    pub kind: String,
    /// What differed: `reply`, `sends`, `state`, `trap`, `error`, `imports`.
    pub what: String,
    /// The input, rendered.
    pub input: String,
    /// What the reference (control, or production) did.
    pub expected: String,
    /// What the other run did.
    pub got: String,
}

/// Divergences kept as examples in the evidence.
pub(crate) const KEPT_DIVERGENCES: usize = 25;

/// What a comparison counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Inputs compared.
    pub samples: u64,
    /// Inputs compared, per message kind.
    pub per_kind: BTreeMap<String, u64>,
    /// Inputs whose replies or sends differed.
    pub mismatches: u64,
    /// State comparisons made, and how many differed.
    pub state_checks: u64,
    /// State comparisons that differed.
    pub state_divergences: u64,
    /// Inputs on which the candidate trapped (or ran out of fuel, memory or time) where the
    /// reference did not.
    pub traps: u64,
    /// Inputs the candidate refused where the reference did not.
    pub errors: u64,
    /// Differences between the control and production (A/A): nondeterminism.
    pub aa_mismatches: u64,
    /// Inputs production handled that the shadows never saw (queue full, restarts).
    pub gaps: u64,
    /// Times the shadows were re-seeded from production (after gaps or production restarts).
    pub resyncs: u64,
    /// Examples of mismatches, traps, errors and state divergences (the first few).
    pub divergences: Vec<Divergence>,
    /// Examples of A/A differences.
    pub aa_divergences: Vec<Divergence>,
    /// Fuel per input: (reference, candidate).
    #[serde(skip)]
    pub fuel: Vec<(f64, f64)>,
    /// Handle time per input in nanoseconds: (reference, candidate).
    #[serde(skip)]
    pub latency: Vec<(f64, f64)>,
    #[serde(skip)]
    fuel_every: u64,
    #[serde(skip)]
    fuel_seen: u64,
    #[serde(skip)]
    latency_every: u64,
    #[serde(skip)]
    latency_seen: u64,
}

/// Pairs kept per measure; beyond it every other pair is dropped (evenly spaced, so the rank
/// tests still see the whole evaluation), bounding memory and the cost of publishing progress.
const MAX_PAIRS: usize = 8_192;

fn keep_pair(pairs: &mut Vec<(f64, f64)>, pair: (f64, f64), every: &mut u64, seen: &mut u64) {
    *seen += 1;
    if !(*seen).is_multiple_of((*every).max(1)) {
        return;
    }
    pairs.push(pair);
    if pairs.len() >= MAX_PAIRS {
        let mut index = 0;
        pairs.retain(|_| {
            index += 1;
            index % 2 == 0
        });
        *every = (*every).max(1) * 2;
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            samples: 0,
            per_kind: BTreeMap::new(),
            mismatches: 0,
            state_checks: 0,
            state_divergences: 0,
            traps: 0,
            errors: 0,
            aa_mismatches: 0,
            gaps: 0,
            resyncs: 0,
            divergences: Vec::new(),
            aa_divergences: Vec::new(),
            fuel: Vec::new(),
            latency: Vec::new(),
            fuel_every: 1,
            fuel_seen: 0,
            latency_every: 1,
            latency_seen: 0,
        }
    }
}

/// Message kinds counted separately; further kinds count as `other` (kinds come from the
/// payload, so a sender must not be able to grow the map, or starve the per-kind minimum).
pub(crate) const MAX_KINDS: usize = 64;

impl Tally {
    /// Counts one sample of `kind`.
    pub(crate) fn count_kind(&mut self, kind: String) {
        let kind = if self.per_kind.len() >= MAX_KINDS && !self.per_kind.contains_key(&kind) {
            "other".to_string()
        } else {
            kind
        };
        *self.per_kind.entry(kind).or_default() += 1;
    }

    pub(crate) fn pair_fuel(&mut self, control: f64, candidate: f64) {
        keep_pair(
            &mut self.fuel,
            (control, candidate),
            &mut self.fuel_every,
            &mut self.fuel_seen,
        );
    }

    pub(crate) fn pair_latency(&mut self, control: f64, candidate: f64) {
        keep_pair(
            &mut self.latency,
            (control, candidate),
            &mut self.latency_every,
            &mut self.latency_seen,
        );
    }

    pub(crate) fn diverged(&mut self, divergence: Divergence) {
        metrics::counter!(arbor_metrics::SHADOW_MISMATCHES, "what" => divergence.what.clone())
            .increment(1);
        match divergence.what.as_str() {
            "trap" => self.traps += 1,
            "error" => self.errors += 1,
            "state" => self.state_divergences += 1,
            _ => self.mismatches += 1,
        }
        if self.divergences.len() < KEPT_DIVERGENCES {
            self.divergences.push(divergence);
        }
    }

    pub(crate) fn aa_diverged(&mut self, divergence: Divergence) {
        self.aa_mismatches += 1;
        if self.aa_divergences.len() < KEPT_DIVERGENCES {
            self.aa_divergences.push(divergence);
        }
    }

    /// Mismatching inputs and state divergences.
    pub fn mismatch_count(&self) -> u64 {
        self.mismatches + self.state_divergences
    }

    /// Candidate failures.
    pub fn error_count(&self) -> u64 {
        self.traps + self.errors
    }
}

/// A verdict and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Approved, rejected or inconclusive.
    pub verdict: Verdict,
    /// Each rule that failed, for people; empty when approved.
    pub reasons: Vec<String>,
    /// The fuel comparison (candidate against reference).
    pub fuel: Option<PairedComparison>,
    /// The latency comparison.
    pub latency: Option<PairedComparison>,
}

/// Applies the rule (see the module docs) to what has been counted. `complete` says the
/// evaluation has ended (deadline or enough samples): before that only a rejection is final.
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
    if n == 0 || n < policy.min_samples {
        reasons.push(format!(
            "{n} samples, fewer than the {} required (no data means fail)",
            policy.min_samples
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
    let fuel = compare_paired(
        &tally.fuel,
        policy.fuel_tolerance,
        policy.alpha,
        policy.max_rank_pairs,
    );
    if let Some(fuel) = fuel.filter(|c| c.worse) {
        reasons.push(format!(
            "fuel {:+.1}% (95% CI {:+.1}%..{:+.1}%), worse than the {:.0}% tolerance (p = {:.2e})",
            fuel.shift * 100.0,
            fuel.ci_low * 100.0,
            fuel.ci_high * 100.0,
            policy.fuel_tolerance * 100.0,
            fuel.p_worse
        ));
    }
    let latency = compare_paired(
        &tally.latency,
        policy.latency_tolerance,
        policy.alpha,
        policy.max_rank_pairs,
    );
    let control_median = crate::stats::median(
        &tally
            .latency
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
        latency,
    }
}

/// Whether the failures counted so far already exceed what the rule allows at `min_samples`,
/// so the evaluation can stop and reject.
pub(crate) fn already_failed(tally: &Tally, policy: &Policy) -> bool {
    let allowed = |rate: f64| (rate * policy.min_samples.max(tally.samples) as f64).floor() as u64;
    tally.mismatch_count() > allowed(policy.max_mismatch_rate)
        || tally.error_count() > allowed(policy.max_error_rate)
}

/// Whether the samples satisfy the minimums (overall and per kind).
pub(crate) fn enough(tally: &Tally, policy: &Policy) -> bool {
    tally.samples >= policy.min_samples
        && tally.per_kind.values().all(|&n| n >= policy.min_per_kind)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn clean(samples: u64) -> Tally {
        Tally {
            samples,
            per_kind: [
                ("Get".to_string(), samples / 2),
                ("Put".into(), samples / 2),
            ]
            .into(),
            fuel: (0..samples).map(|i| (100.0 + i as f64, 50.0)).collect(),
            latency: (0..samples).map(|_| (1_000.0, 900.0)).collect(),
            ..Tally::default()
        }
    }

    #[test]
    fn clean_cheaper_candidate_is_approved() {
        let decision = decide(&clean(400), &Policy::default());
        assert_eq!(
            decision.verdict,
            Verdict::Approved,
            "{:?}",
            decision.reasons
        );
        assert!(decision.fuel.unwrap().shift < -0.4);
    }

    #[test]
    fn each_rule_rejects() {
        let policy = Policy::default();
        let few = clean(299);
        assert_eq!(decide(&few, &policy).verdict, Verdict::Rejected);

        let mut thin_kind = clean(400);
        thin_kind.per_kind.insert("Scan".into(), 29);
        let decision = decide(&thin_kind, &policy);
        assert!(decision.reasons[0].contains("`Scan`"), "{decision:?}");

        let mut mismatch = clean(400);
        mismatch.mismatches = 1;
        assert_eq!(decide(&mismatch, &policy).verdict, Verdict::Rejected);
        assert!(already_failed(&mismatch, &policy));

        let mut costly = clean(400);
        costly.fuel = (0..400).map(|_| (100.0, 5_000.0)).collect();
        let decision = decide(&costly, &policy);
        assert_eq!(decision.verdict, Verdict::Rejected);
        assert!(
            decision.reasons[0].starts_with("fuel +4900.0%"),
            "{decision:?}"
        );

        let mut nondeterministic = clean(400);
        nondeterministic.aa_mismatches = 1;
        assert_eq!(
            decide(&nondeterministic, &policy).verdict,
            Verdict::Inconclusive
        );
        nondeterministic.traps = 1;
        assert_eq!(
            decide(&nondeterministic, &policy).verdict,
            Verdict::Rejected
        );
    }

    #[test]
    fn latency_is_judged_above_the_floor_only() {
        let mut slow = clean(400);
        slow.latency = (0..400).map(|_| (1_000.0, 3_000.0)).collect();
        assert_eq!(decide(&slow, &Policy::default()).verdict, Verdict::Approved);
        slow.latency = (0..400).map(|_| (200_000.0, 600_000.0)).collect();
        let decision = decide(&slow, &Policy::default());
        assert_eq!(decision.verdict, Verdict::Rejected);
        assert!(
            decision.reasons[0].starts_with("latency +200.0%"),
            "{decision:?}"
        );
    }

    #[test]
    fn tolerated_rates_allow_some_failures() {
        let policy = Policy {
            max_mismatch_rate: 0.01,
            ..Policy::default()
        };
        let mut tally = clean(400);
        tally.mismatches = 3;
        assert!(!already_failed(&tally, &policy));
        assert_eq!(decide(&tally, &policy).verdict, Verdict::Approved);
        tally.mismatches = 5;
        assert!(already_failed(&tally, &policy));
        assert!(enough(&tally, &policy));
    }

    #[test]
    fn unusable_thresholds_are_refused_and_kinds_are_capped() {
        assert!(Policy::default().validate().is_ok());
        assert!(ShadowLimits::default().validate().is_ok());
        for bad in [
            Policy {
                max_mismatch_rate: f64::NAN,
                ..Policy::default()
            },
            Policy {
                max_error_rate: -0.1,
                ..Policy::default()
            },
            Policy {
                latency_tolerance: f64::INFINITY,
                ..Policy::default()
            },
            Policy {
                alpha: 0.0,
                ..Policy::default()
            },
            Policy {
                max_rank_pairs: usize::MAX,
                ..Policy::default()
            },
            Policy {
                state_every: 0,
                ..Policy::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let forever = ShadowLimits {
            deadline: Duration::MAX,
            ..ShadowLimits::default()
        };
        assert!(forever.validate().is_err());

        let mut tally = Tally::default();
        for i in 0..1_000 {
            tally.count_kind(format!("kind-{i}"));
        }
        assert_eq!(tally.per_kind.len(), MAX_KINDS + 1);
        assert_eq!(tally.per_kind["other"], 1_000 - MAX_KINDS as u64);
    }
}
