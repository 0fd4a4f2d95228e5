//! What an evaluation counts ([`Tally`]): samples per kind and input class, mismatches, state
//! divergences, traps, errors, the A/A pair's disagreements, the journal gaps caught up, and
//! the paired cost samples ([`Pairs`]) the rule compares, and the graded reply differences
//! ([`Graded`]). Everything is bounded: kinds,
//! classes, kept divergences and pairs have caps, so a long evaluation costs fixed memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::objective::Grade;

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

/// Pairs kept per measure; beyond it every other pair is dropped (evenly spaced, so the tests
/// still see the whole evaluation), bounding memory and the cost of publishing progress.
pub(crate) const MAX_PAIRS: usize = 8_192;

/// Pairs kept per message kind for the per-kind cost tests.
pub(crate) const MAX_PAIRS_PER_KIND: usize = 2_048;

/// A bounded, evenly thinned sample of (reference, candidate) measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct Pairs {
    pairs: Vec<(f64, f64)>,
    every: u64,
    seen: u64,
    max: usize,
}

impl Pairs {
    pub(crate) fn new(max: usize) -> Pairs {
        Pairs {
            pairs: Vec::new(),
            every: 1,
            seen: 0,
            max,
        }
    }

    /// Keeps every `every`-th pair; when full, drops every other one and doubles `every`.
    pub(crate) fn push(&mut self, pair: (f64, f64)) {
        self.seen += 1;
        if !self.seen.is_multiple_of(self.every) {
            return;
        }
        self.pairs.push(pair);
        if self.pairs.len() >= self.max {
            let mut index = 0;
            self.pairs.retain(|_| {
                index += 1;
                index % 2 == 0
            });
            self.every *= 2;
        }
    }

    /// The pairs kept.
    pub fn as_slice(&self) -> &[(f64, f64)] {
        &self.pairs
    }
}

/// Message kinds counted separately; further kinds count as `other` (kinds come from the
/// payload, so a sender must not be able to grow the map, or starve the per-kind minimum).
pub(crate) const MAX_KINDS: usize = 64;

/// Input classes counted separately, over all kinds; further ones count as `<kind>{…}`.
pub(crate) const MAX_CLASSES: usize = 256;

/// What a comparison counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tally {
    /// Inputs compared (replayed from the journal and live).
    pub samples: u64,
    /// Of them, inputs compared live (mirrored from production).
    pub live_samples: u64,
    /// Inputs compared, per message kind.
    pub per_kind: BTreeMap<String, u64>,
    /// Inputs compared, per input class.
    pub per_class: BTreeMap<String, u64>,
    /// Inputs seen, per input class: compared, or skipped (production crashed on them).
    pub seen_per_class: BTreeMap<String, u64>,
    /// Failures (mismatches, state divergences, traps, errors) per message kind.
    pub failures_per_kind: BTreeMap<String, u64>,
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
    /// Inputs the shadows missed live and caught up from the journal instead.
    pub caught_up: u64,
    /// Times the shadows were re-seeded from production (after gaps or production restarts).
    pub resyncs: u64,
    /// Inputs the oldest candidate instance had handled when the comparison ended (its age:
    /// bugs that appear only after many inputs need an old instance).
    pub candidate_age: u64,
    /// Examples of mismatches, traps, errors and state divergences (the first few).
    pub divergences: Vec<Divergence>,
    /// Examples of A/A differences.
    pub aa_divergences: Vec<Divergence>,
    /// Fuel per input: (reference, candidate).
    #[serde(skip)]
    pub fuel: Pairs,
    /// Fuel per input by message kind.
    #[serde(skip)]
    pub fuel_by_kind: BTreeMap<String, Pairs>,
    /// Handle time per input in nanoseconds: (reference, candidate).
    #[serde(skip)]
    pub latency: Pairs,
    /// Linear memory after each input in bytes: (reference, candidate).
    #[serde(skip)]
    pub memory: Pairs,
    /// Each judge's scores per input: (reference, candidate), by judge name.
    #[serde(skip)]
    pub scores: BTreeMap<String, Pairs>,
    /// Replies that differed (after the ignore rules), graded per message kind: by the
    /// evaluation's comparator, else every one `wrong`.
    pub grades: BTreeMap<String, Graded>,
}

/// The graded reply differences of one message kind, with a few examples of each grade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Graded {
    /// Better than the control's (intended changes).
    pub better: u64,
    /// Different but equivalent.
    pub same: u64,
    /// Correct but worse.
    pub worse: u64,
    /// Wrong.
    pub wrong: u64,
    /// Examples, at most [`KEPT_PER_GRADE`] of each grade; `what` names the grade.
    pub examples: Vec<Divergence>,
}

/// Examples of each grade kept per message kind.
pub const KEPT_PER_GRADE: usize = 3;

impl Graded {
    /// How many had `grade`.
    pub fn count(&self, grade: Grade) -> u64 {
        match grade {
            Grade::Better => self.better,
            Grade::Same => self.same,
            Grade::Worse => self.worse,
            Grade::Wrong => self.wrong,
        }
    }

    fn add(&mut self, grade: Grade, example: &Divergence) {
        let slot = match grade {
            Grade::Better => &mut self.better,
            Grade::Same => &mut self.same,
            Grade::Worse => &mut self.worse,
            Grade::Wrong => &mut self.wrong,
        };
        *slot += 1;
        let kept = self
            .examples
            .iter()
            .filter(|e| e.what == grade.name())
            .count();
        if kept < KEPT_PER_GRADE {
            self.examples.push(Divergence {
                what: grade.name().into(),
                ..example.clone()
            });
        }
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            samples: 0,
            live_samples: 0,
            per_kind: BTreeMap::new(),
            per_class: BTreeMap::new(),
            seen_per_class: BTreeMap::new(),
            failures_per_kind: BTreeMap::new(),
            mismatches: 0,
            state_checks: 0,
            state_divergences: 0,
            traps: 0,
            errors: 0,
            aa_mismatches: 0,
            gaps: 0,
            caught_up: 0,
            resyncs: 0,
            candidate_age: 0,
            divergences: Vec::new(),
            aa_divergences: Vec::new(),
            fuel: Pairs::new(MAX_PAIRS),
            fuel_by_kind: BTreeMap::new(),
            latency: Pairs::new(MAX_PAIRS),
            memory: Pairs::new(MAX_PAIRS),
            scores: BTreeMap::new(),
            grades: BTreeMap::new(),
        }
    }
}

impl Default for Pairs {
    fn default() -> Self {
        Pairs::new(MAX_PAIRS)
    }
}

/// `map[key] += 1`, at most `max` keys (`overflow` takes the rest).
fn count_bounded(map: &mut BTreeMap<String, u64>, key: String, max: usize, overflow: String) {
    let key = if map.len() >= max && !map.contains_key(&key) {
        overflow
    } else {
        key
    };
    *map.entry(key).or_default() += 1;
}

impl Tally {
    /// Counts one compared input; returns its message kind (as counted).
    pub(crate) fn count_input(&mut self, payload: &[u8], live: bool) -> String {
        self.samples += 1;
        if live {
            self.live_samples += 1;
        }
        let kind = self.kind_of(payload);
        *self.per_kind.entry(kind.clone()).or_default() += 1;
        let class = self.class_of(payload, &kind, false);
        count_bounded(
            &mut self.per_class,
            class.clone(),
            MAX_CLASSES,
            format!("{kind}{{…}}"),
        );
        count_bounded(
            &mut self.seen_per_class,
            class,
            MAX_CLASSES,
            format!("{kind}{{…}}"),
        );
        kind
    }

    /// Counts an input seen but not compared (production crashed on it).
    pub(crate) fn count_skipped(&mut self, payload: &[u8]) {
        let kind = self.kind_of(payload);
        let class = self.class_of(payload, &kind, true);
        count_bounded(
            &mut self.seen_per_class,
            class,
            MAX_CLASSES,
            format!("{kind}{{…}}"),
        );
    }

    fn kind_of(&self, payload: &[u8]) -> String {
        let kind = crate::compare::message_kind(payload);
        if self.per_kind.len() >= MAX_KINDS && !self.per_kind.contains_key(&kind) {
            "other".to_string()
        } else {
            kind
        }
    }

    /// The class counted for `payload`: an overflowed class keeps counting as `<kind>{…}`.
    fn class_of(&self, payload: &[u8], kind: &str, seen_only: bool) -> String {
        let class = crate::compare::input_class(payload);
        let map = if seen_only {
            &self.seen_per_class
        } else {
            &self.per_class
        };
        if map.len() >= MAX_CLASSES && !map.contains_key(&class) {
            format!("{kind}{{…}}")
        } else {
            class
        }
    }

    /// Counts one message of `kind` (no class).
    #[cfg(test)]
    pub(crate) fn count_kind(&mut self, kind: String) {
        let kind = if self.per_kind.len() >= MAX_KINDS && !self.per_kind.contains_key(&kind) {
            "other".to_string()
        } else {
            kind
        };
        *self.per_kind.entry(kind).or_default() += 1;
    }

    pub(crate) fn pair_fuel(&mut self, kind: &str, control: f64, candidate: f64) {
        self.fuel.push((control, candidate));
        if !self.fuel_by_kind.contains_key(kind) && self.fuel_by_kind.len() >= MAX_KINDS {
            return;
        }
        self.fuel_by_kind
            .entry(kind.to_string())
            .or_insert_with(|| Pairs::new(MAX_PAIRS_PER_KIND))
            .push((control, candidate));
    }

    pub(crate) fn pair_latency(&mut self, control: f64, candidate: f64) {
        self.latency.push((control, candidate));
    }

    pub(crate) fn pair_memory(&mut self, control: f64, candidate: f64) {
        self.memory.push((control, candidate));
    }

    /// One input's scores by the judge `name` (judges are the evaluation's, a handful).
    pub(crate) fn pair_score(&mut self, name: &str, control: f64, candidate: f64) {
        self.scores
            .entry(name.to_string())
            .or_default()
            .push((control, candidate));
    }

    /// A reply difference graded `grade` (the example is the divergence as found).
    pub(crate) fn graded(&mut self, grade: Grade, example: &Divergence) {
        if !self.grades.contains_key(&example.kind) && self.grades.len() >= MAX_KINDS {
            return;
        }
        self.grades
            .entry(example.kind.clone())
            .or_default()
            .add(grade, example);
    }

    /// The candidate's mean per input of each measure (`fuel`, `latency` in nanoseconds,
    /// `memory` in bytes, `score.<judge>`), and the control's under `<measure>.control`: what
    /// the archive keeps of an evaluation. A measure with no pairs is left out.
    pub fn measured(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let named = [
            ("fuel", &self.fuel),
            ("latency", &self.latency),
            ("memory", &self.memory),
        ]
        .into_iter()
        .map(|(name, pairs)| (name.to_string(), pairs))
        .chain(
            self.scores
                .iter()
                .map(|(n, pairs)| (format!("score.{n}"), pairs)),
        );
        for (name, pairs) in named {
            let pairs = pairs.as_slice();
            if pairs.is_empty() {
                continue;
            }
            let n = pairs.len() as f64;
            let control = pairs.iter().map(|p| p.0).sum::<f64>() / n;
            let candidate = pairs.iter().map(|p| p.1).sum::<f64>() / n;
            if control.is_finite() && candidate.is_finite() {
                out.insert(format!("{name}.control"), control);
                out.insert(name, candidate);
            }
        }
        out
    }

    /// Reply differences graded better (intended changes), over every kind.
    pub fn improvements(&self) -> u64 {
        self.grades.values().map(|graded| graded.better).sum()
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
        if self.failures_per_kind.len() < MAX_KINDS
            || self.failures_per_kind.contains_key(&divergence.kind)
        {
            *self
                .failures_per_kind
                .entry(divergence.kind.clone())
                .or_default() += 1;
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

    /// Every failure the bound counts: mismatches, state divergences, traps, errors.
    pub fn failure_count(&self) -> u64 {
        self.mismatch_count() + self.error_count()
    }
}
