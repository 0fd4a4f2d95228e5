//! Paired-sample statistics for comparing a candidate against a control.
//!
//! The evolution arbiter measures a candidate Wasm module and the control on the same inputs
//! (fuel or latency) and asks whether the candidate is worse beyond a tolerance. The comparison
//! is distribution-free: a one-sided Wilcoxon signed-rank test on log ratios, with a
//! Hodges-Lehmann estimate of the shift and its Walsh-average confidence interval.
//!
//! Why log ratios: the signed-rank test needs differences symmetric about their median under
//! no effect. Plain relative differences are not: when whichever of two identical runs goes
//! second is three times slower, alternating the order gives +200 % and -67 %, whose median is
//! far above zero. Their logarithms, ±ln 3, cancel.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// Differences smaller than this (in absolute value) count as zero and are dropped.
const ZERO_EPS: f64 = 1e-12;

/// Result of a one-sided paired rank comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    /// Number of pairs used.
    pub n: usize,
    /// Hodges-Lehmann estimate of the typical ratio, as a relative difference: the estimate
    /// of the median of ln(candidate/control), exponentiated, minus 1 (0.12 = 12 % worse).
    pub shift: f64,
    /// Lower bound of the two-sided (1 - alpha) confidence interval of the shift
    /// (distribution-free, from the Walsh averages' order statistics with the normal
    /// approximation of the signed-rank distribution).
    pub ci_low: f64,
    /// Upper bound of the two-sided (1 - alpha) confidence interval of the shift.
    pub ci_high: f64,
    /// One-sided p-value of the Wilcoxon signed-rank test of H0: shift <= tolerance against
    /// H1: shift > tolerance (normal approximation with continuity and tie corrections; zero
    /// differences dropped, Wilcoxon's method). 1.0 when no non-zero differences remain.
    pub p_worse: f64,
    /// The tolerance tested.
    pub tolerance: f64,
    /// Whether the candidate is worse beyond the tolerance at level alpha: `p_worse < alpha`.
    pub worse: bool,
}

/// Compares paired measurements: `pairs` are (control, candidate) values (e.g. fuel or
/// nanoseconds) measured on the same input.
///
/// Each pair becomes a log ratio r = ln(candidate/control) (pairs with a value <= 0 or not
/// finite are skipped). Tests H0: median r <= ln(1 + tolerance) with the Wilcoxon signed-rank
/// test on r - ln(1 + tolerance); estimates the shift with Hodges-Lehmann and its CI, reported
/// as relative differences (e^x - 1).
/// Uses at most `max_pairs` pairs (values below 2 are treated as 2): if more usable pairs are
/// given, an evenly spaced, deterministic subset is taken so the O(n^2) Walsh averages stay
/// bounded. `alpha` is clamped to [0, 1] (NaN counts as 0: never worse, widest interval).
/// Returns `None` when fewer than 2 usable pairs remain.
pub fn compare_paired(
    pairs: &[(f64, f64)],
    tolerance: f64,
    alpha: f64,
    max_pairs: usize,
) -> Option<PairedComparison> {
    let usable: Vec<f64> = pairs
        .iter()
        .filter(|(control, candidate)| {
            control.is_finite() && candidate.is_finite() && *control > 0.0 && *candidate > 0.0
        })
        .map(|(control, candidate)| (candidate / control).ln())
        .filter(|r| r.is_finite())
        .collect();
    rank_compare(
        &usable,
        tolerance.ln_1p(),
        tolerance,
        alpha,
        max_pairs,
        f64::exp_m1,
    )
}

/// [`compare_paired`] on differences instead of ratios, for measures that may be zero or
/// negative (a host's quality score): each pair becomes d = candidate - control; the test is
/// H0: median d <= `tolerance` against H1: median d > `tolerance`, and `shift`, `ci_low` and
/// `ci_high` are the Hodges-Lehmann estimate of the median difference and its interval, in the
/// measure's own units. Pairs with a value that is not finite are skipped.
///
/// ```
/// use arbor_shadow::stats::compare_differences;
/// // The candidate scores one point more on every input but the first.
/// let pairs: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, i as f64 + f64::from(i > 0))).collect();
/// let higher = compare_differences(&pairs, 0.0, 0.05, 1_000).unwrap();
/// assert!(higher.worse && (higher.shift - 1.0).abs() < 1e-9);
/// // Not shown to be higher by more than one point.
/// assert!(!compare_differences(&pairs, 1.0, 0.05, 1_000).unwrap().worse);
/// ```
pub fn compare_differences(
    pairs: &[(f64, f64)],
    tolerance: f64,
    alpha: f64,
    max_pairs: usize,
) -> Option<PairedComparison> {
    let usable: Vec<f64> = pairs
        .iter()
        .map(|(control, candidate)| candidate - control)
        .filter(|d| d.is_finite())
        .collect();
    rank_compare(&usable, tolerance, tolerance, alpha, max_pairs, |d| d)
}

/// The signed-rank test and Hodges-Lehmann interval of `values` (already transformed: log
/// ratios or differences) against `threshold` (in the same transform); `back` maps estimates
/// back to the reported scale, and `tolerance` is reported as given.
fn rank_compare(
    values: &[f64],
    threshold: f64,
    tolerance: f64,
    alpha: f64,
    max_pairs: usize,
    back: fn(f64) -> f64,
) -> Option<PairedComparison> {
    let rel = evenly_spaced(values, max_pairs.max(2));
    let n = rel.len();
    if n < 2 {
        return None;
    }
    let alpha = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    };
    let normal = Normal::standard();

    let mut walsh = Vec::with_capacity(n * (n + 1) / 2);
    for (i, &a) in rel.iter().enumerate() {
        walsh.extend(rel[i..].iter().map(|&b| f64::midpoint(a, b)));
    }
    // Three order statistics are needed (the median and the interval's ends): selection, not
    // a full sort of the n(n+1)/2 averages.
    let mut nth = |k: usize| *walsh.select_nth_unstable_by(k, f64::total_cmp).1;
    let total = n * (n + 1) / 2;
    let median = if total % 2 == 1 {
        nth(total / 2)
    } else {
        f64::midpoint(nth(total / 2 - 1), nth(total / 2))
    };
    let shift = back(median);

    let z_crit = if alpha <= 0.0 {
        f64::INFINITY
    } else if alpha >= 1.0 {
        0.0
    } else {
        normal.inverse_cdf(1.0 - alpha / 2.0)
    };
    let nf = n as f64;
    let sd_walsh = (nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0).sqrt();
    let c_raw = (total as f64 / 2.0 - z_crit * sd_walsh).floor();
    let c_max = (total - 1) / 2;
    // A negative (or NaN) float saturates to 0 on the cast; the `min` keeps low <= high.
    let c = if c_raw > 0.0 {
        (c_raw as usize).min(c_max)
    } else {
        0
    };
    let ci_low = back(nth(c));
    let ci_high = back(nth(total - 1 - c));

    let p_worse = signed_rank_p_upper(&rel, threshold, &normal);
    Some(PairedComparison {
        n,
        shift,
        ci_low,
        ci_high,
        p_worse,
        tolerance,
        worse: p_worse < alpha,
    })
}

/// Median of a slice (average of the two middle values for an even length); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    median_of_sorted(&sorted)
}

/// Nearest-rank quantile of a slice (on a sorted copy), `q` in [0, 1] (clamped; NaN counts as
/// 0). `None` if empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// The one-sided `confidence` upper bound on a failure rate after `failures` in `samples`
/// (Clopper-Pearson: exact, from the beta distribution; with no failure it is
/// `1 - (1 - confidence)^(1/samples)`, about `3/samples` at 95 %, the rule of three). 1.0 with
/// no samples; `confidence` is clamped to [0, 1).
///
/// ```
/// use arbor_shadow::stats::failure_rate_bound;
/// let bound = failure_rate_bound(0, 2_995, 0.95);
/// assert!(bound < 0.001 && bound > 0.000_99);
/// assert!(failure_rate_bound(1, 2_995, 0.95) > 0.001);
/// ```
pub fn failure_rate_bound(failures: u64, samples: u64, confidence: f64) -> f64 {
    if samples == 0 || failures >= samples {
        return 1.0;
    }
    let confidence = if confidence.is_nan() {
        0.0
    } else {
        confidence.clamp(0.0, 1.0 - 1e-12)
    };
    if failures == 0 {
        return 1.0 - (1.0 - confidence).powf(1.0 / samples as f64);
    }
    match statrs::distribution::Beta::new(failures as f64 + 1.0, (samples - failures) as f64) {
        Ok(beta) => beta.inverse_cdf(confidence),
        Err(_) => 1.0,
    }
}

/// The fewest samples that, all clean, bound the failure rate below `target` at `confidence`:
/// the smallest n with `(1 - target)^n <= 1 - confidence` (2,995 for 0.1 % at 95 %).
/// `u64::MAX` when no number can (a target of 0 or below).
///
/// ```
/// use arbor_shadow::stats::samples_for_bound;
/// assert_eq!(samples_for_bound(0.001, 0.95), 2_995);
/// assert_eq!(samples_for_bound(0.01, 0.95), 299);
/// ```
pub fn samples_for_bound(target: f64, confidence: f64) -> u64 {
    if target.is_nan() || target <= 0.0 {
        return u64::MAX;
    }
    if target >= 1.0 {
        return 1;
    }
    let confidence = if confidence.is_nan() {
        0.0
    } else {
        confidence.clamp(0.0, 1.0 - 1e-12)
    };
    let n = ((1.0 - confidence).ln() / (1.0 - target).ln()).ceil();
    if n.is_finite() && n >= 1.0 {
        // The float may land a hair above an integer: take the smallest n that really works.
        let n = n as u64;
        if n > 1 && (1.0 - target).powf((n - 1) as f64) <= 1.0 - confidence {
            n - 1
        } else {
            n
        }
    } else {
        1
    }
}

/// A ratio between the candidate's and the control's measurements as a relative difference
/// (0.3 = the candidate is 30 % higher), with a bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// The estimate on all pairs.
    pub estimate: f64,
    /// The lower bound of the interval.
    pub low: f64,
    /// The upper bound.
    pub high: f64,
}

/// What a paired statistic summarises: the mean (total cost) or a quantile (the tail).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Summary {
    /// Sum of the candidate's values over sum of the control's.
    Mean,
    /// The candidate's `q`-quantile over the control's.
    Quantile(f64),
}

/// Resamples of the paired bootstrap.
const BOOTSTRAP_RESAMPLES: usize = 200;

/// Pairs a bootstrap uses at most (evenly spaced), bounding its cost.
const BOOTSTRAP_PAIRS: usize = 1_024;

/// The paired bootstrap (percentile) interval, at level `1 - 2 * alpha`, of the candidate's
/// `summary` relative to the control's, over (control, candidate) `pairs` (unusable pairs
/// skipped as in [`compare_paired`]). Deterministic: the resamples come from a fixed seed, so a
/// verdict reproduces. `None` with fewer than 2 usable pairs or a control summary of 0.
///
/// Why this beside the rank test: the signed-rank test judges the typical (median) input, so a
/// candidate ten times costlier on one input in ten — mean +90 % — passes it. The mean and a
/// high quantile catch that.
pub fn paired_ratio(pairs: &[(f64, f64)], summary: Summary, alpha: f64) -> Option<Ratio> {
    let usable: Vec<(f64, f64)> = pairs
        .iter()
        .copied()
        .filter(|(control, candidate)| {
            control.is_finite() && candidate.is_finite() && *control >= 0.0 && *candidate >= 0.0
        })
        .collect();
    if usable.len() < 2 {
        return None;
    }
    let ratio = |sample: &mut dyn Iterator<Item = (f64, f64)>| -> Option<f64> {
        match summary {
            Summary::Mean => {
                let (control, candidate) = sample.fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d));
                (control > 0.0).then(|| candidate / control - 1.0)
            }
            Summary::Quantile(q) => {
                let (mut controls, mut candidates): (Vec<f64>, Vec<f64>) = sample.unzip();
                let control = select_quantile(&mut controls, q)?;
                let candidate = select_quantile(&mut candidates, q)?;
                (control > 0.0).then(|| candidate / control - 1.0)
            }
        }
    };
    let estimate = ratio(&mut usable.iter().copied())?;
    let usable: Vec<(f64, f64)> = if usable.len() > BOOTSTRAP_PAIRS {
        (0..BOOTSTRAP_PAIRS)
            .map(|i| usable[i * usable.len() / BOOTSTRAP_PAIRS])
            .collect()
    } else {
        usable
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ usable.len() as u64;
    let mut next = || {
        // SplitMix64: a fixed, well-mixed sequence.
        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let n = usable.len() as u64;
    let mut resampled: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .filter_map(|_| {
            let mut sample = (0..n).map(|_| usable[(next() % n) as usize]);
            ratio(&mut sample)
        })
        .collect();
    if resampled.is_empty() {
        return None;
    }
    resampled.sort_by(f64::total_cmp);
    let alpha = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 0.5)
    };
    let at = |p: f64| {
        let index = (p * (resampled.len() - 1) as f64).round() as usize;
        resampled[index.min(resampled.len() - 1)]
    };
    Some(Ratio {
        estimate,
        low: at(alpha),
        high: at(1.0 - alpha),
    })
}

/// [`quantile`] in place, without sorting (selection: linear time).
fn select_quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let rank = (q * values.len() as f64).ceil() as usize;
    let index = rank.saturating_sub(1).min(values.len() - 1);
    let (_, nth, _) = values.select_nth_unstable_by(index, f64::total_cmp);
    Some(*nth)
}

/// Median of an already sorted slice; `None` if empty.
fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let len = sorted.len();
    if len == 0 {
        return None;
    }
    let hi = sorted[len / 2];
    if len % 2 == 1 {
        Some(hi)
    } else {
        Some(f64::midpoint(sorted[len / 2 - 1], hi))
    }
}

/// At most `max` values, evenly spaced over `values` (all of them if there are few enough).
fn evenly_spaced(values: &[f64], max: usize) -> Vec<f64> {
    let len = values.len();
    if len <= max {
        return values.to_vec();
    }
    (0..max)
        .map(|i| values[(i as u128 * len as u128 / max as u128) as usize])
        .collect()
}

/// One-sided upper p-value of the Wilcoxon signed-rank statistic of `rel - tolerance`.
fn signed_rank_p_upper(rel: &[f64], tolerance: f64, normal: &Normal) -> f64 {
    let mut diffs: Vec<f64> = rel
        .iter()
        .map(|r| r - tolerance)
        .filter(|d| d.abs() >= ZERO_EPS || d.is_nan())
        .collect();
    let m = diffs.len();
    if m == 0 {
        return 1.0;
    }
    diffs.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    let mut w_plus = 0.0;
    let mut tie_sum = 0.0;
    let mut start = 0;
    while start < m {
        let mut end = start + 1;
        while end < m && diffs[end].abs().total_cmp(&diffs[start].abs()).is_eq() {
            end += 1;
        }
        // Ranks start+1 ..= end share their average.
        let avg_rank = (start + 1 + end) as f64 / 2.0;
        let t = (end - start) as f64;
        tie_sum += t * t * t - t;
        w_plus += avg_rank * diffs[start..end].iter().filter(|d| **d > 0.0).count() as f64;
        start = end;
    }
    let mf = m as f64;
    let mean = mf * (mf + 1.0) / 4.0;
    let var = mf * (mf + 1.0) * (2.0 * mf + 1.0) / 24.0 - tie_sum / 48.0;
    let sd = var.max(0.0).sqrt();
    if !(sd > 0.0 && sd.is_finite()) {
        return if w_plus <= mean { 1.0 } else { 0.0 };
    }
    normal.sf((w_plus - mean - 0.5) / sd)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Deterministic pseudo-random values uniform in [-1, 1) from a 64-bit LCG.
    fn lcg_noise(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn noisy_pairs(n: usize, true_shift: f64) -> Vec<(f64, f64)> {
        let noise = lcg_noise(2 * n, 42);
        (0..n)
            .map(|i| {
                let control = 1000.0 * (1.0 + 0.05 * noise[2 * i]);
                (
                    control,
                    control * (1.0 + true_shift) * (1.0 + 0.05 * noise[2 * i + 1]),
                )
            })
            .collect()
    }

    #[test]
    fn identical_pairs_are_not_worse() {
        let pairs: Vec<_> = (1..=50).map(|i| (i as f64, i as f64)).collect();
        let c = compare_paired(&pairs, 0.0, 0.05, 1000).unwrap();
        assert_eq!((c.n, c.shift, c.ci_low, c.ci_high), (50, 0.0, 0.0, 0.0));
        assert_eq!(c.p_worse, 1.0);
        assert!(!c.worse);
        let c = compare_paired(&pairs, 0.05, 0.05, 1000).unwrap();
        assert!(!c.worse && c.p_worse > 0.99);
    }

    #[test]
    fn much_costlier_candidate_is_worse() {
        let pairs: Vec<_> = (1..=30).map(|i| (i as f64, 50.0 * i as f64)).collect();
        let c = compare_paired(&pairs, 0.1, 0.05, 1000).unwrap();
        assert!(c.worse, "{c:?}");
        assert!((c.shift - 49.0).abs() < 1e-9);
        assert!(c.p_worse < 1e-4);
    }

    #[test]
    fn cheaper_candidate_is_not_worse() {
        let pairs: Vec<_> = (1..=30).map(|i| (i as f64, 0.5 * i as f64)).collect();
        let c = compare_paired(&pairs, 0.0, 0.05, 1000).unwrap();
        assert!(!c.worse);
        assert!((c.shift + 0.5).abs() < 1e-9);
        assert!(c.p_worse > 0.99);
    }

    #[test]
    fn noise_within_tolerance_is_not_worse() {
        let c = compare_paired(&noisy_pairs(500, 0.0), 0.2, 0.05, 1000).unwrap();
        assert_eq!(c.n, 500);
        assert!(!c.worse, "{c:?}");
        assert!(c.shift.abs() < 0.02, "{c:?}");
        assert!(c.ci_low <= 0.0 && 0.0 <= c.ci_high, "{c:?}");
    }

    #[test]
    fn real_shift_beyond_tolerance_is_worse() {
        let c = compare_paired(&noisy_pairs(500, 0.3), 0.1, 0.05, 1000).unwrap();
        assert!(c.worse, "{c:?}");
        assert!((c.shift - 0.3).abs() < 0.02, "{c:?}");
        assert!(c.ci_low <= 0.31 && 0.29 <= c.ci_high, "{c:?}");
        assert!(c.ci_high - c.ci_low < 0.05, "{c:?}");
    }

    #[test]
    fn hand_computed_example() {
        // Log ratios r = [-0.5, 0, 0.25, 0.5, 1]; the 15 sorted Walsh averages are
        // -0.5 -0.25 -0.125 0 0 0.125 0.25 0.25 0.25 0.375 0.5 0.5 0.625 0.75 1.
        let e = f64::exp;
        let pairs = [
            (1.0, e(-0.5)),
            (2.0, 2.0),
            (1.0, e(0.25)),
            (1.0, e(0.5)),
            (1.0, e(1.0)),
        ];
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let c = compare_paired(&pairs, 0.0, 0.2, 10).unwrap();
        assert_eq!(c.n, 5);
        assert!(close(c.shift, 0.25f64.exp_m1()), "{c:?}");
        // C = floor(7.5 - 1.2816 * sqrt(13.75)) = 2.
        assert!(close(c.ci_low, (-0.125f64).exp_m1()), "{c:?}");
        assert!(close(c.ci_high, 0.625f64.exp_m1()), "{c:?}");
        // Zero dropped; |d| = 0.25, 0.5, 0.5, 1 -> ranks 1, 2.5, 2.5, 4; W+ = 7.5, mean 5,
        // var = 7.5 - 6/48 = 7.375; z = 2 / sqrt(7.375).
        assert!((c.p_worse - 0.230_725_493_9).abs() < 1e-6, "{c:?}");
        assert!(!c.worse);
        let wide = compare_paired(&pairs, 0.0, 0.05, 10).unwrap();
        assert!(close(wide.ci_low, (-0.5f64).exp_m1()), "{wide:?}");
        assert!(close(wide.ci_high, 1f64.exp_m1()), "{wide:?}");
    }

    #[test]
    fn an_order_effect_cancels_when_the_order_alternates() {
        // Identical code, whichever runs second is 3x slower, order alternating: no shift.
        let pairs: Vec<(f64, f64)> = (0..400)
            .map(|i| {
                if i % 2 == 0 {
                    (1_000.0, 3_000.0)
                } else {
                    (3_000.0, 1_000.0)
                }
            })
            .collect();
        let c = compare_paired(&pairs, 0.25, 0.01, 1_000).unwrap();
        assert!(c.shift.abs() < 1e-9, "{c:?}");
        assert!(!c.worse, "{c:?}");
    }

    #[test]
    fn skips_unusable_pairs_and_subsamples() {
        let bad = [
            (0.0, 1.0),
            (-1.0, 1.0),
            (f64::NAN, 1.0),
            (1.0, f64::INFINITY),
        ];
        assert_eq!(compare_paired(&bad, 0.0, 0.05, 100), None);
        assert_eq!(compare_paired(&[(1.0, 1.0)], 0.0, 0.05, 100), None);
        let mut pairs = bad.to_vec();
        pairs.extend([(1.0, 2.0), (2.0, 4.0)]);
        assert_eq!(compare_paired(&pairs, 0.0, 0.05, 100).unwrap().n, 2);
        let big = noisy_pairs(500, 0.3);
        let c = compare_paired(&big, 0.1, 0.05, 200).unwrap();
        assert_eq!(c.n, 200);
        assert!(c.worse);
        assert_eq!(compare_paired(&big, 0.1, 0.05, 200), Some(c));
    }

    #[test]
    fn failure_bounds_follow_clopper_pearson() {
        assert_eq!(failure_rate_bound(0, 0, 0.95), 1.0);
        // Rule of three: about 3/n with no failure.
        let b = failure_rate_bound(0, 300, 0.95);
        assert!((b - 0.009_936).abs() < 1e-5, "{b}");
        // One failure in 4,744: the 95 % bound is just under 0.1 % (tables: n = 4,744).
        assert!(failure_rate_bound(1, 4_744, 0.95) < 0.001);
        assert!(failure_rate_bound(1, 4_700, 0.95) > 0.001);
        assert!(failure_rate_bound(3, 10, 0.95) > 0.3);
        assert_eq!(failure_rate_bound(5, 5, 0.95), 1.0);
        assert_eq!(samples_for_bound(0.001, 0.95), 2_995);
        assert_eq!(samples_for_bound(0.0001, 0.95), 29_956);
        assert_eq!(samples_for_bound(0.0, 0.95), u64::MAX);
        for (target, confidence) in [(0.001, 0.95), (0.01, 0.99), (0.05, 0.9)] {
            let n = samples_for_bound(target, confidence);
            assert!(failure_rate_bound(0, n, confidence) <= target);
            assert!(failure_rate_bound(0, n - 1, confidence) > target);
        }
    }

    #[test]
    fn mean_and_tail_ratios_see_what_the_median_does_not() {
        // One input in ten costs ten times more: the median is unchanged, the mean +90 %.
        let pairs: Vec<(f64, f64)> = (0..500)
            .map(|i| (100.0, if i % 10 == 0 { 1_000.0 } else { 100.0 }))
            .collect();
        let median = compare_paired(&pairs, 0.05, 0.01, 2_000).unwrap();
        assert!(!median.worse, "{median:?}");
        let mean = paired_ratio(&pairs, Summary::Mean, 0.01).unwrap();
        assert!((mean.estimate - 0.9).abs() < 1e-9, "{mean:?}");
        assert!(mean.low > 0.5 && mean.high < 1.3, "{mean:?}");
        let tail = paired_ratio(&pairs, Summary::Quantile(0.95), 0.01).unwrap();
        assert!((tail.estimate - 9.0).abs() < 1e-9, "{tail:?}");
        // Identical pairs: exactly 0, interval included.
        let same: Vec<(f64, f64)> = (1..=50).map(|i| (i as f64, i as f64)).collect();
        let mean = paired_ratio(&same, Summary::Mean, 0.01).unwrap();
        assert_eq!((mean.estimate, mean.low, mean.high), (0.0, 0.0, 0.0));
        assert_eq!(paired_ratio(&[(1.0, 1.0)], Summary::Mean, 0.01), None);
        assert_eq!(
            paired_ratio(&[(0.0, 1.0), (0.0, 2.0)], Summary::Mean, 0.01),
            None
        );
        // Deterministic.
        assert_eq!(
            paired_ratio(&pairs, Summary::Mean, 0.01),
            paired_ratio(&pairs, Summary::Mean, 0.01)
        );
    }

    #[test]
    fn median_and_quantile() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 0.9), Some(5.0));
        assert_eq!(quantile(&v, 1.0), Some(5.0));
        assert_eq!(quantile(&v, 0.4), Some(2.0));
    }
}
