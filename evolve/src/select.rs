//! Choosing parents from the archive: the Pareto front over the objectives, and the Darwin
//! Gödel Machine's weight (fitness through a sigmoid, divided by one plus the children already
//! bred from it), so the search keeps returning to stepping stones instead of collapsing onto
//! one lineage.

use std::collections::BTreeMap;

use arbor_vault::{ArchiveEntry, ModuleHash, Origin, Reached};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// DGM's sigmoid steepness (λ).
pub const STEEPNESS: f64 = 10.0;

/// Which way an objective improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is better (a quality score).
    Higher,
    /// Lower is better (fuel, latency, memory).
    Lower,
}

/// The indices of the points no other point dominates: none is at least as good on every
/// objective and strictly better on one. A point missing an objective (`NaN`) is dominated by
/// every point that has it.
///
/// ```
/// use arbor_evolve::{Direction, pareto_front};
///
/// // (fuel, memory), both lower-better: the third is worse than the first on both.
/// let points = [vec![100.0, 5.0], vec![80.0, 9.0], vec![120.0, 6.0]];
/// assert_eq!(pareto_front(&points, &[Direction::Lower, Direction::Lower]), vec![0, 1]);
/// ```
pub fn pareto_front(points: &[Vec<f64>], directions: &[Direction]) -> Vec<usize> {
    let better = |a: f64, b: f64, d: Direction| -> std::cmp::Ordering {
        let key = |v: f64| match (v.is_nan(), d) {
            (true, _) => f64::NEG_INFINITY,
            (false, Direction::Higher) => v,
            (false, Direction::Lower) => -v,
        };
        key(a).total_cmp(&key(b))
    };
    let dominates = |a: &[f64], b: &[f64]| {
        let mut strictly = false;
        for (at, d) in directions.iter().enumerate() {
            let (x, y) = (
                a.get(at).copied().unwrap_or(f64::NAN),
                b.get(at).copied().unwrap_or(f64::NAN),
            );
            match better(x, y, *d) {
                std::cmp::Ordering::Less => return false,
                std::cmp::Ordering::Greater => strictly = true,
                std::cmp::Ordering::Equal => {}
            }
        }
        strictly
    };
    (0..points.len())
        .filter(|&i| !(0..points.len()).any(|j| j != i && dominates(&points[j], &points[i])))
        .collect()
}

/// DGM's parent weights: each fitness normalised to 0..=1 over the pool, through
/// `1 / (1 + e^(−λ (f − f₀)))` with f₀ the mean of the three best, times `1 / (1 + children)`.
///
/// ```
/// // Equal fitness: the one with no children yet is four times as likely as the one with three.
/// let w = arbor_evolve::parent_weights(&[(1.0, 0), (1.0, 3)]);
/// assert!((w[0] / w[1] - 4.0).abs() < 1e-9);
/// ```
pub fn parent_weights(pool: &[(f64, u32)]) -> Vec<f64> {
    let finite = pool.iter().map(|(f, _)| *f).filter(|f| f.is_finite());
    let (low, high) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), f| {
        (lo.min(f), hi.max(f))
    });
    let normal = |f: f64| {
        if !f.is_finite() {
            0.0
        } else if high > low {
            (f - low) / (high - low)
        } else {
            1.0
        }
    };
    let mut top: Vec<f64> = pool.iter().map(|(f, _)| normal(*f)).collect();
    top.sort_by(|a, b| b.total_cmp(a));
    let top = &top[..top.len().min(3)];
    let midpoint = if top.is_empty() {
        0.0
    } else {
        top.iter().sum::<f64>() / top.len() as f64
    };
    pool.iter()
        .map(|(f, children)| {
            let sigmoid = 1.0 / (1.0 + (-STEEPNESS * (normal(*f) - midpoint)).exp());
            sigmoid / (1.0 + f64::from(*children))
        })
        .collect()
}

/// An archive entry as a possible parent.
#[derive(Debug, Clone, PartialEq)]
pub struct Contender {
    /// The module.
    pub module: ModuleHash,
    /// Its fitness (higher is fitter), from its scores.
    pub fitness: f64,
    /// Its scores, in the order of the objectives given.
    pub scores: Vec<f64>,
    /// Candidates already bred from it.
    pub children: u32,
    /// Whether it is on the Pareto front.
    pub on_front: bool,
}

/// The archive's possible parents: the root (production's module when evolution began) and
/// every candidate that was approved or promoted, each with its fitness (`fitness` of its
/// scores), its children and whether it is on the Pareto front over `objectives`.
pub fn contenders(
    archive: &[ArchiveEntry],
    objectives: &[(String, Direction)],
    fitness: impl Fn(&BTreeMap<String, f64>) -> f64,
) -> Vec<Contender> {
    let mut children: BTreeMap<ModuleHash, u32> = BTreeMap::new();
    for entry in archive {
        for parent in &entry.parents {
            *children.entry(*parent).or_default() += 1;
        }
    }
    let eligible: Vec<&ArchiveEntry> = archive
        .iter()
        .filter(|e| e.origin == Origin::Production || e.reached >= Reached::Approved)
        .collect();
    let points: Vec<Vec<f64>> = eligible
        .iter()
        .map(|e| {
            objectives
                .iter()
                .map(|(name, _)| e.scores.get(name).copied().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    let directions: Vec<Direction> = objectives.iter().map(|(_, d)| *d).collect();
    let front = pareto_front(&points, &directions);
    eligible
        .iter()
        .zip(points)
        .enumerate()
        .map(|(at, (entry, scores))| Contender {
            module: entry.module,
            fitness: fitness(&entry.scores),
            scores,
            children: children.get(&entry.module).copied().unwrap_or(0),
            on_front: front.contains(&at),
        })
        .collect()
}

/// Draws `n` parents (indices into `pool`, repeats allowed): half the draws uniformly from the
/// Pareto front, the other half by [`parent_weights`]. Empty if the pool is.
pub fn choose_parents(pool: &[Contender], n: usize, rng: &mut impl Rng) -> Vec<usize> {
    if pool.is_empty() {
        return Vec::new();
    }
    let front: Vec<usize> = (0..pool.len()).filter(|&i| pool[i].on_front).collect();
    let weights = parent_weights(
        &pool
            .iter()
            .map(|c| (c.fitness, c.children))
            .collect::<Vec<_>>(),
    );
    let total: f64 = weights.iter().sum();
    (0..n)
        .map(|draw| {
            if draw % 2 == 0 && !front.is_empty() {
                return front[rng.random_range(0..front.len())];
            }
            if total.is_nan() || total <= 0.0 {
                return rng.random_range(0..pool.len());
            }
            let mut at = rng.random_range(0.0..total);
            for (i, w) in weights.iter().enumerate() {
                if at < *w {
                    return i;
                }
                at -= w;
            }
            pool.len() - 1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arbor_vault::AgentId;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn entry(n: u8, parents: &[u8], reached: Reached, fuel: f64, hits: f64) -> ArchiveEntry {
        ArchiveEntry {
            agent: AgentId::new("a").unwrap(),
            module: ModuleHash::of(&[n]),
            parents: parents.iter().map(|p| ModuleHash::of(&[*p])).collect(),
            origin: if n == 0 {
                Origin::Production
            } else {
                Origin::Placebo { how: "test".into() }
            },
            generation: 0,
            scores: [("fuel".to_string(), fuel), ("hits".to_string(), hits)].into(),
            reached,
            reason: None,
            at_ms: 0,
        }
    }

    #[test]
    fn the_front_keeps_every_trade_off_and_drops_the_dominated() {
        let lower = [Direction::Lower, Direction::Lower];
        let points = [
            vec![1.0, 9.0],
            vec![5.0, 5.0],
            vec![9.0, 1.0],
            vec![6.0, 6.0],
            vec![1.0, 9.0],
            vec![f64::NAN, 9.0],
        ];
        // Equal points do not dominate each other; 3 is dominated by 1; NaN loses.
        assert_eq!(pareto_front(&points, &lower), vec![0, 1, 2, 4]);
        assert_eq!(
            pareto_front(&points[..3], &[Direction::Higher, Direction::Higher]),
            vec![0, 1, 2]
        );
        assert_eq!(pareto_front(&[], &lower), Vec::<usize>::new());
    }

    #[test]
    fn weights_favour_fitness_and_few_children() {
        let w = parent_weights(&[(0.0, 0), (10.0, 0), (10.0, 9), (f64::NAN, 0)]);
        assert!(w[1] > w[0] && w[1] > w[2] && w[0] > w[3] - 1e-12, "{w:?}");
        assert!((w[1] / w[2] - 10.0).abs() < 1e-9);
    }

    #[test]
    fn only_the_root_and_approved_candidates_are_contenders() {
        let archive = [
            entry(0, &[], Reached::Promoted, 100.0, 0.5),
            entry(1, &[0], Reached::Approved, 80.0, 0.4),
            entry(2, &[0], Reached::Shadows, 10.0, 0.9),
            entry(3, &[1], Reached::Promoted, 90.0, 0.7),
            entry(4, &[1], Reached::Gate, 1.0, 1.0),
        ];
        let objectives = [
            ("fuel".to_string(), Direction::Lower),
            ("hits".to_string(), Direction::Higher),
        ];
        let pool = contenders(&archive, &objectives, |s| -s["fuel"]);
        let modules: Vec<ModuleHash> = pool.iter().map(|c| c.module).collect();
        assert_eq!(modules, [0u8, 1, 3].map(|n| ModuleHash::of(&[n])).to_vec());
        assert_eq!(
            pool.iter().map(|c| c.children).collect::<Vec<_>>(),
            vec![2, 2, 0]
        );
        // 0 (100, 0.5) is dominated by 3 (90, 0.7); 1 and 3 trade fuel for hits.
        assert_eq!(
            pool.iter().map(|c| c.on_front).collect::<Vec<_>>(),
            vec![false, true, true]
        );
    }

    #[test]
    fn choosing_is_seeded_and_reaches_stepping_stones() {
        let pool: Vec<Contender> = (0..4)
            .map(|n| Contender {
                module: ModuleHash::of(&[n]),
                fitness: f64::from(n),
                scores: vec![],
                children: 0,
                on_front: n == 0,
            })
            .collect();
        let draw = |seed| choose_parents(&pool, 200, &mut ChaCha8Rng::seed_from_u64(seed));
        assert_eq!(draw(5), draw(5));
        let drawn = draw(5);
        // The front's weakest member is drawn half the time; the fittest most of the rest.
        let zeros = drawn.iter().filter(|&&i| i == 0).count();
        assert!((90..=120).contains(&zeros), "{zeros}");
        assert!(drawn.iter().filter(|&&i| i == 3).count() > 50);
        assert!(choose_parents(&[], 3, &mut ChaCha8Rng::seed_from_u64(1)).is_empty());
    }
}
