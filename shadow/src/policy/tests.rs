//! The decision rule's tests, one per rule and edge (its own file: the rule is long enough).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::tally::{MAX_KINDS, MAX_PAIRS, Pairs};

fn pairs(values: impl IntoIterator<Item = (f64, f64)>) -> Pairs {
    let mut pairs = Pairs::new(MAX_PAIRS);
    for pair in values {
        pairs.push(pair);
    }
    pairs
}

/// `samples` clean inputs, half `Get` and half `Put`, all live, the candidate at half the
/// control's fuel and a little faster.
fn clean(samples: u64) -> Tally {
    let mut tally = Tally {
        samples,
        live_samples: samples,
        per_kind: [
            ("Get".to_string(), samples / 2),
            ("Put".into(), samples - samples / 2),
        ]
        .into(),
        fuel: pairs((0..samples).map(|i| (100.0 + i as f64, 50.0))),
        latency: pairs((0..samples).map(|_| (1_000.0, 900.0))),
        ..Tally::default()
    };
    for kind in ["Get", "Put"] {
        tally.fuel_by_kind.insert(
            kind.into(),
            pairs((0..samples / 2).map(|i| (100.0 + i as f64, 50.0))),
        );
    }
    tally
}

#[test]
fn clean_cheaper_candidate_is_approved_with_the_bound_it_proved() {
    let decision = decide(&clean(3_000), &Policy::default());
    assert_eq!(
        decision.verdict,
        Verdict::Approved,
        "{:?}",
        decision.reasons
    );
    assert!(decision.fuel.unwrap().shift < -0.4);
    let bound = decision.bound.unwrap();
    assert!(bound.proved && bound.upper < 0.001, "{bound:?}");
    assert!(
        bound.to_string().starts_with(
            "failure rate < 0.0998 % at 95 % (0 failures in 3000 inputs; Get < 0.1995 %"
        ),
        "{bound}"
    );
    assert_eq!(Policy::default().target(), "failure rate < 0.1 % at 95 %");
}

/// Issue 17.2: 300 clean samples (the old rule's minimum) bound the failure rate only near
/// 1 %; the default rule asks for the samples that prove 0.1 %.
#[test]
fn three_hundred_clean_samples_do_not_prove_the_default_bound() {
    let decision = decide(&clean(300), &Policy::default());
    assert_eq!(decision.verdict, Verdict::Rejected);
    assert!(
        decision.reasons[0].contains("fewer than the 2995"),
        "{decision:?}"
    );
    let bound = decision.bound.unwrap();
    assert!(!bound.proved && bound.upper > 0.009, "{bound:?}");
    assert!(!enough(&clean(300), &Policy::default()));
    assert!(enough(&clean(2_995), &Policy::default()));
}

#[test]
fn each_rule_rejects() {
    let policy = Policy::default();
    let few = clean(2_994);
    assert_eq!(decide(&few, &policy).verdict, Verdict::Rejected);

    let mut thin_kind = clean(3_000);
    thin_kind.per_kind.insert("Scan".into(), 29);
    let decision = decide(&thin_kind, &policy);
    assert!(decision.reasons[0].contains("`Scan`"), "{decision:?}");

    let mut offline = clean(3_000);
    offline.live_samples = 99;
    let decision = decide(&offline, &policy);
    assert!(decision.reasons[0].contains("live"), "{decision:?}");

    let mut mismatch = clean(3_000);
    mismatch.mismatches = 1;
    assert_eq!(decide(&mismatch, &policy).verdict, Verdict::Rejected);
    assert!(already_failed(&mismatch, &policy));

    let mut costly = clean(3_000);
    costly.fuel = pairs((0..3_000).map(|_| (100.0, 5_000.0)));
    let decision = decide(&costly, &policy);
    assert_eq!(decision.verdict, Verdict::Rejected);
    assert!(
        decision.reasons[0].starts_with("fuel +4900.0%"),
        "{decision:?}"
    );

    let mut nondeterministic = clean(3_000);
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

/// Issue 17.2: a rare class of inputs must be compared as often as it was seen, up to
/// `min_per_class`.
#[test]
fn every_class_seen_must_be_covered() {
    let policy = Policy::default();
    let mut tally = clean(3_000);
    tally.per_class.insert("Get{key=user}".into(), 1_500);
    tally.seen_per_class.insert("Get{key=user}".into(), 1_500);
    // Seen twice, compared twice: covered (fewer than min_per_class were seen).
    tally.per_class.insert("Get{key=zz}".into(), 2);
    tally.seen_per_class.insert("Get{key=zz}".into(), 2);
    assert_eq!(decide(&tally, &policy).verdict, Verdict::Approved);
    // Seen five times, compared twice: not covered.
    tally.seen_per_class.insert("Get{key=zz}".into(), 5);
    let decision = decide(&tally, &policy);
    assert_eq!(decision.verdict, Verdict::Rejected);
    assert!(
        decision.reasons[0].contains("`Get{key=zz}` (2 of 5)"),
        "{decision:?}"
    );
    assert!(!enough(&tally, &policy));
}

/// Issue 17.3: a candidate ~30 % costlier on `Scan` alone (a tenth of the traffic) moves the
/// pooled median nowhere but is rejected on `Scan`'s own comparison.
#[test]
fn a_kind_costlier_alone_is_rejected_by_its_own_comparison() {
    let policy = Policy::default();
    let mut tally = clean(3_000);
    let mut all = Vec::new();
    for i in 0..3_000u64 {
        let (kind, control) = match i % 10 {
            0 => ("Scan", 2_000.0 + (i % 7) as f64),
            1..=5 => ("Get", 300.0 + (i % 5) as f64),
            _ => ("Put", 500.0 + (i % 3) as f64),
        };
        let candidate = if kind == "Scan" {
            control * 1.3
        } else {
            control
        };
        all.push((kind, control, candidate));
    }
    tally.fuel = pairs(all.iter().map(|(_, a, b)| (*a, *b)));
    tally.fuel_by_kind.clear();
    for kind in ["Get", "Put", "Scan"] {
        tally.fuel_by_kind.insert(
            kind.into(),
            pairs(
                all.iter()
                    .filter(|(k, ..)| *k == kind)
                    .map(|(_, a, b)| (*a, *b)),
            ),
        );
    }
    let pooled = compare_paired(tally.fuel.as_slice(), 0.05, 0.01, 2_000).unwrap();
    assert!(!pooled.worse, "the pooled median alone sees it: {pooled:?}");
    let decision = decide(&tally, &policy);
    assert_eq!(decision.verdict, Verdict::Rejected);
    assert!(
        decision
            .reasons
            .iter()
            .any(|r| r.starts_with("fuel of `Scan`")),
        "{decision:?}"
    );
    assert!(decision.fuel_by_kind["Scan"].worse);
    assert!(!decision.fuel_by_kind["Get"].worse);
}

/// Issue 17.3: one input in ten at ten times the fuel (mean +90 %) is rejected on the mean
/// and the tail though the median is unchanged.
#[test]
fn a_costly_tenth_of_inputs_is_rejected_on_the_mean_and_tail() {
    let policy = Policy::default();
    let mut tally = clean(3_000);
    let spiky: Vec<(f64, f64)> = (0..3_000)
        .map(|i| (100.0, if i % 10 == 0 { 1_000.0 } else { 100.0 }))
        .collect();
    tally.fuel = pairs(spiky.iter().copied());
    tally.fuel_by_kind.clear();
    tally
        .fuel_by_kind
        .insert("Get".into(), pairs(spiky.iter().copied()));
    let decision = decide(&tally, &policy);
    assert_eq!(decision.verdict, Verdict::Rejected, "{decision:?}");
    assert!(
        decision.reasons.iter().any(|r| r.contains("mean +90.0%")),
        "{decision:?}"
    );
    let get = &decision.fuel_by_kind["Get"];
    assert!(!get.median.unwrap().worse);
    assert!(get.tail.unwrap().estimate > 5.0);
}

#[test]
fn latency_is_judged_above_the_floor_only() {
    let mut slow = clean(3_000);
    slow.latency = pairs((0..3_000).map(|_| (1_000.0, 3_000.0)));
    assert_eq!(decide(&slow, &Policy::default()).verdict, Verdict::Approved);
    slow.latency = pairs((0..3_000).map(|_| (200_000.0, 600_000.0)));
    let decision = decide(&slow, &Policy::default());
    assert_eq!(decision.verdict, Verdict::Rejected);
    assert!(
        decision.reasons[0].starts_with("latency +200.0%"),
        "{decision:?}"
    );
}

#[test]
fn tolerated_rates_allow_some_failures_within_the_bound() {
    let policy = Policy {
        max_mismatch_rate: 0.01,
        target_failure_rate: 0.01,
        ..Policy::default()
    };
    let mut tally = clean(4_000);
    tally.mismatches = 3;
    assert!(!already_failed(&tally, &policy));
    assert_eq!(decide(&tally, &policy).verdict, Verdict::Approved);
    // Within the tolerated rate, but the bound on 30 failures in 4,000 is above 1 %? No:
    // ~1 %, just above: rejected by the bound.
    tally.mismatches = 35;
    let decision = decide(&tally, &policy);
    assert_eq!(decision.verdict, Verdict::Rejected, "{decision:?}");
    assert!(
        decision.reasons[0].contains("bound on the failure rate"),
        "{decision:?}"
    );
    tally.mismatches = 41;
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
        Policy {
            target_failure_rate: 0.0,
            ..Policy::default()
        },
        Policy {
            confidence: 1.0,
            ..Policy::default()
        },
        Policy {
            cost_quantile: 1.0,
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

#[test]
fn a_policy_stored_before_the_bound_reads_with_its_defaults() {
    #[derive(Serialize)]
    struct Old {
        min_samples: u64,
        min_per_kind: u64,
    }
    let old = rmp_serde::to_vec_named(&Old {
        min_samples: 300,
        min_per_kind: 30,
    })
    .unwrap();
    let policy: Policy = rmp_serde::from_slice(&old).unwrap();
    assert_eq!(policy.min_samples, 300);
    assert_eq!(policy.required_samples(), 2_995);
}
