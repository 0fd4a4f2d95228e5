//! A genetic search over a [`Space`]: a population, tournament selection, uniform crossover,
//! mutation and elitism, seeded so a run can be reproduced exactly.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::EvolveError;
use crate::tunable::{Params, Space};

/// How the search breeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneticConfig {
    /// Configurations per generation.
    pub population: usize,
    /// Contestants per tournament; the fittest of them is a parent.
    pub tournament: usize,
    /// Chance that a child mixes two parents (uniform crossover) rather than copying one.
    pub crossover: f64,
    /// Chance that each parameter of a child is mutated.
    pub mutation: f64,
    /// The fittest configurations carried into the next generation unchanged.
    pub elitism: usize,
    /// The random generator's seed: the same seed, space and fitness give the same search.
    pub seed: u64,
}

impl Default for GeneticConfig {
    fn default() -> GeneticConfig {
        GeneticConfig {
            population: 8,
            tournament: 3,
            crossover: 0.7,
            mutation: 0.3,
            elitism: 2,
            seed: 0,
        }
    }
}

impl GeneticConfig {
    fn check(&self) -> Result<(), EvolveError> {
        let bad = |why: &str| Err(EvolveError::BadConfig(why.into()));
        if self.population < 2 {
            return bad("population must be at least 2");
        }
        if self.tournament == 0 {
            return bad("tournament must be at least 1");
        }
        if self.elitism >= self.population {
            return bad("elitism must be below the population");
        }
        if !(0.0..=1.0).contains(&self.crossover) || !(0.0..=1.0).contains(&self.mutation) {
            return bad("crossover and mutation are chances in 0..=1");
        }
        Ok(())
    }
}

/// A configuration and its fitness: higher is fitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The configuration.
    pub params: Params,
    /// Its fitness.
    pub fitness: f64,
}

/// The search.
///
/// ```
/// use arbor_evolve::{Genetic, GeneticConfig, Scored, Space, Value};
///
/// let space = Space::parse(br#"[{"name": "x", "kind": "int", "min": 0, "max": 100}]"#)?;
/// let config = GeneticConfig { seed: 42, ..GeneticConfig::default() };
/// let mut search = Genetic::new(space, config)?;
/// let mut generation = search.first(&[]);
/// for _ in 0..30 {
///     // Fitness peaks at x = 70.
///     let scored: Vec<Scored> = generation
///         .into_iter()
///         .map(|params| {
///             let Value::Int(x) = params.0["x"] else { unreachable!() };
///             Scored { params, fitness: -((x - 70) as f64).abs() }
///         })
///         .collect();
///     generation = search.next(&scored);
/// }
/// let best = search.best().expect("scored");
/// assert_eq!(best.params.0["x"], Value::Int(70));
/// # Ok::<(), arbor_evolve::EvolveError>(())
/// ```
#[derive(Debug)]
pub struct Genetic {
    space: Space,
    config: GeneticConfig,
    rng: ChaCha8Rng,
    /// Every configuration proposed, encoded, so none is proposed twice while others remain.
    proposed: BTreeSet<Vec<u8>>,
    best: Option<Scored>,
    generation: u32,
}

impl Genetic {
    /// A search over `space`.
    pub fn new(space: Space, config: GeneticConfig) -> Result<Genetic, EvolveError> {
        config.check()?;
        Ok(Genetic {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            space,
            config,
            proposed: BTreeSet::new(),
            best: None,
            generation: 0,
        })
    }

    /// The space searched.
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Generations bred so far (the first is 0).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The fittest configuration scored so far.
    pub fn best(&self) -> Option<&Scored> {
        self.best.as_ref()
    }

    /// The first generation: `seeds` (e.g. production's configuration) that are in the space,
    /// then random configurations up to the population.
    pub fn first(&mut self, seeds: &[Params]) -> Vec<Params> {
        let mut out = Vec::new();
        for seed in seeds {
            if out.len() < self.config.population
                && self.space.check(seed).is_ok()
                && self.proposed.insert(seed.encode())
            {
                out.push(seed.clone());
            }
        }
        let mut attempts = 0;
        while out.len() < self.config.population {
            attempts += 1;
            let params = self.space.random(&mut self.rng);
            // Past the attempts, accept repeats rather than loop forever in a small space.
            if attempts > 64 * self.config.population {
                out.push(params);
            } else if let Some(params) = self.fresh(params) {
                out.push(params);
            }
        }
        out
    }

    /// The next generation bred from `scored` (the last generation with its fitness; any
    /// others the host measured may be included): the [`elitism`](GeneticConfig::elitism)
    /// fittest unchanged, then children of tournament-selected parents, crossed over and
    /// mutated. A child equal to a configuration proposed before is mutated again (a few
    /// times), so the search does not pay twice for one point.
    pub fn next(&mut self, scored: &[Scored]) -> Vec<Params> {
        self.generation += 1;
        let mut ranked: Vec<&Scored> = scored
            .iter()
            .filter(|s| s.fitness.is_finite() && self.space.check(&s.params).is_ok())
            .collect();
        // Stable: ties keep their order, so the same input breeds the same way.
        ranked.sort_by(|a, b| b.fitness.total_cmp(&a.fitness));
        if let Some(top) = ranked.first()
            && self
                .best
                .as_ref()
                .is_none_or(|best| top.fitness > best.fitness)
        {
            self.best = Some((*top).clone());
        }
        if ranked.is_empty() {
            return self.first(&[]);
        }
        let mut out: Vec<Params> = ranked
            .iter()
            .take(self.config.elitism)
            .map(|s| s.params.clone())
            .collect();
        let mut attempts = 0;
        while out.len() < self.config.population {
            attempts += 1;
            let first = self.tournament(&ranked);
            let child = if self.rng.random_bool(self.config.crossover) {
                let second = self.tournament(&ranked);
                self.crossover(first, second)
            } else {
                first.clone()
            };
            let child = self.mutate(child);
            // Past the attempts, accept repeats rather than loop forever in a small space.
            if attempts > 64 * self.config.population {
                out.push(child);
            } else if let Some(child) = self.fresh(child) {
                out.push(child);
            }
        }
        out
    }

    fn tournament<'s>(&mut self, ranked: &[&'s Scored]) -> &'s Params {
        let mut winner = self.rng.random_range(0..ranked.len());
        for _ in 1..self.config.tournament {
            // `ranked` is sorted fittest first, so the lower index wins.
            winner = winner.min(self.rng.random_range(0..ranked.len()));
        }
        &ranked[winner].params
    }

    fn crossover(&mut self, a: &Params, b: &Params) -> Params {
        Params(
            a.0.iter()
                .map(|(name, value)| {
                    let value = match b.0.get(name) {
                        Some(other) if self.rng.random_bool(0.5) => other.clone(),
                        _ => value.clone(),
                    };
                    (name.clone(), value)
                })
                .collect(),
        )
    }

    fn mutate(&mut self, mut params: Params) -> Params {
        for tunable in self.space.tunables() {
            if self.rng.random_bool(self.config.mutation)
                && let Some(value) = params.0.get_mut(&tunable.name)
            {
                *value = tunable.kind.mutate(value, &mut self.rng);
            }
        }
        params
    }

    /// `params` if it was never proposed, else a few mutations of it looking for one that was
    /// not; `None` if none was found.
    fn fresh(&mut self, params: Params) -> Option<Params> {
        let mut params = params;
        for _ in 0..8 {
            if self.proposed.insert(params.encode()) {
                return Some(params);
            }
            let tunables = self.space.tunables();
            let tunable = &tunables[self.rng.random_range(0..tunables.len())];
            if let Some(value) = params.0.get_mut(&tunable.name) {
                *value = tunable.kind.mutate(value, &mut self.rng);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::tunable::Value;

    fn space() -> Space {
        Space::parse(
            br#"[
            {"name": "a", "kind": "int", "min": -50, "max": 50},
            {"name": "b", "kind": "float", "min": 0.0, "max": 10.0},
            {"name": "c", "kind": "choice", "options": ["x", "y", "z"]}
        ]"#,
        )
        .unwrap()
    }

    /// Peak at a = 17, b = 3.0, c = "y".
    fn fitness(params: &Params) -> f64 {
        let (Value::Int(a), Value::Float(b), Value::Choice(c)) =
            (&params.0["a"], &params.0["b"], &params.0["c"])
        else {
            panic!("{params:?}");
        };
        -((a - 17).abs() as f64) - (b - 3.0).abs() * 3.0 - if c == "y" { 0.0 } else { 20.0 }
    }

    fn run(seed: u64, generations: usize) -> (Vec<Vec<Params>>, Scored) {
        let config = GeneticConfig {
            seed,
            population: 10,
            ..GeneticConfig::default()
        };
        let mut search = Genetic::new(space(), config).unwrap();
        let mut generation = search.first(&[]);
        let mut history = vec![generation.clone()];
        for _ in 0..generations {
            let scored: Vec<Scored> = generation
                .into_iter()
                .map(|params| Scored {
                    fitness: fitness(&params),
                    params,
                })
                .collect();
            generation = search.next(&scored);
            history.push(generation.clone());
        }
        (history, search.best().unwrap().clone())
    }

    #[test]
    fn the_same_seed_gives_the_same_search_and_another_seed_another() {
        let (one, best_one) = run(11, 20);
        let (two, best_two) = run(11, 20);
        assert_eq!(one, two);
        assert_eq!(best_one, best_two);
        let (three, _) = run(12, 20);
        assert_ne!(one, three);
    }

    #[test]
    fn it_climbs_to_the_peak_and_keeps_its_elite() {
        for seed in 0..5 {
            let (history, best) = run(seed, 60);
            assert!(best.fitness > -2.0, "seed {seed}: best {best:?}");
            for pair in history.windows(2) {
                // Elitism: the previous generation's fittest is in the next.
                let fittest = pair[0]
                    .iter()
                    .max_by(|a, b| fitness(a).total_cmp(&fitness(b)))
                    .unwrap();
                assert!(pair[1].contains(fittest), "seed {seed}");
            }
        }
    }

    #[test]
    fn every_proposal_is_in_the_space_and_none_repeats_while_others_remain() {
        let (history, _) = run(3, 10);
        let space = space();
        let mut seen = BTreeSet::new();
        for (at, generation) in history.iter().enumerate() {
            for params in generation {
                space.check(params).unwrap();
                // Elites are carried on, not proposed again.
                if at == 0 {
                    assert!(seen.insert(params.encode()));
                }
            }
        }
    }

    #[test]
    fn seeds_come_first_and_bad_configs_are_refused() {
        let mut seed = Params::default();
        seed.0.insert("a".into(), Value::Int(0));
        seed.0.insert("b".into(), Value::Float(1.0));
        seed.0.insert("c".into(), Value::Choice("x".into()));
        let mut search = Genetic::new(space(), GeneticConfig::default()).unwrap();
        let first = search.first(std::slice::from_ref(&seed));
        assert_eq!(first[0], seed);
        assert_eq!(first.len(), GeneticConfig::default().population);
        for bad in [
            GeneticConfig {
                population: 1,
                ..GeneticConfig::default()
            },
            GeneticConfig {
                elitism: 8,
                ..GeneticConfig::default()
            },
            GeneticConfig {
                mutation: 1.5,
                ..GeneticConfig::default()
            },
        ] {
            assert!(matches!(
                Genetic::new(space(), bad),
                Err(EvolveError::BadConfig(_))
            ));
        }
    }

    #[test]
    fn a_space_of_one_point_does_not_loop_forever() {
        let space = Space::parse(br#"[{"name": "a", "kind": "int", "min": 1, "max": 1}]"#).unwrap();
        let mut search = Genetic::new(space, GeneticConfig::default()).unwrap();
        let first = search.first(&[]);
        let scored: Vec<Scored> = first
            .iter()
            .map(|p| Scored {
                params: p.clone(),
                fitness: 0.0,
            })
            .collect();
        assert_eq!(
            search.next(&scored).len(),
            GeneticConfig::default().population
        );
    }
}
