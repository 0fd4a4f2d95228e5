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
    let rel = evenly_spaced(&usable, max_pairs.max(2));
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
    walsh.sort_by(f64::total_cmp);
    let shift = median_of_sorted(&walsh)?.exp_m1();

    let total = walsh.len();
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
    let ci_low = walsh[c].exp_m1();
    let ci_high = walsh[total - 1 - c].exp_m1();

    let p_worse = signed_rank_p_upper(&rel, tolerance.ln_1p(), &normal);
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
