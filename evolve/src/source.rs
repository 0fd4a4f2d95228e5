//! Where candidates come from, behind one interface ([`CandidateSource`]): modules people or
//! programs submit, modules built from source, configurations a genetic search proposes, and
//! placebos that must pass.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arbor_vault::{ModuleHash, Origin};
use parking_lot::Mutex;

use crate::build::{BuildLimits, Built, SourceCode, build, source_hash};
use crate::error::EvolveError;
use crate::genetic::{Genetic, Scored};
use crate::rewrite::{params_of, placebo, space_of, with_params};
use crate::tunable::Params;

/// A candidate module for an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// A name for people (the module store keeps it).
    pub name: String,
    /// The module.
    pub bytes: Vec<u8>,
    /// The modules it derives from.
    pub parents: Vec<ModuleHash>,
    /// Where it came from.
    pub origin: Origin,
}

/// What a source offers: a candidate, or one refused before it became a module (a compile
/// error), with the reason.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// A module to admit and evaluate.
    Candidate(Candidate),
    /// Nothing to evaluate.
    Refused {
        /// A name for people.
        name: String,
        /// BLAKE3 of what was offered (the source), its key in the archive.
        offered: ModuleHash,
        /// The modules it was to derive from.
        parents: Vec<ModuleHash>,
        /// Where it came from.
        origin: Origin,
        /// Why: the compiler's output, a limit.
        reason: String,
    },
}

/// A module the loop chose as a parent (from the archive).
#[derive(Debug, Clone, PartialEq)]
pub struct Parent {
    /// Its hash.
    pub module: ModuleHash,
    /// Its bytes.
    pub bytes: Arc<[u8]>,
}

/// What a source is asked for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Parents chosen from the archive, the first the agent's current module.
    pub parents: &'a [Parent],
    /// Offers wanted at most.
    pub max: usize,
}

/// A source of candidates.
pub trait CandidateSource: Send {
    /// Its name in reports (`submitted`, `built`, `params`, `placebo`).
    fn name(&self) -> &str;

    /// Up to `request.max` offers; none when it has nothing now.
    fn propose(&mut self, request: &Request<'_>) -> Result<Vec<Offer>, EvolveError>;

    /// The fitness the host measured for candidates this source offered, for sources that
    /// learn from it (the genetic search). A candidate that failed has no fitness.
    fn learn(&mut self, _results: &[(ModuleHash, Option<f64>)]) {}
}

/// One submitted module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// A name for people.
    pub name: String,
    /// The module.
    pub bytes: Vec<u8>,
    /// Who submitted it.
    pub author: String,
    /// What it is meant to change.
    pub description: String,
}

/// Modules submitted through the API or `arborctl evolve submit`, offered in order. Clones
/// share the queue, so one clone can be handed to the loop and another to whoever submits.
#[derive(Debug, Clone, Default)]
pub struct Submitted {
    queue: Arc<Mutex<VecDeque<Submission>>>,
}

impl Submitted {
    /// An empty queue.
    pub fn new() -> Submitted {
        Submitted::default()
    }

    /// Queues a module.
    pub fn submit(&self, submission: Submission) {
        self.queue.lock().push_back(submission);
    }

    /// Modules waiting.
    pub fn waiting(&self) -> usize {
        self.queue.lock().len()
    }
}

fn current(request: &Request<'_>) -> Vec<ModuleHash> {
    request
        .parents
        .first()
        .map(|p| p.module)
        .into_iter()
        .collect()
}

impl CandidateSource for Submitted {
    fn name(&self) -> &str {
        "submitted"
    }

    fn propose(&mut self, request: &Request<'_>) -> Result<Vec<Offer>, EvolveError> {
        let mut queue = self.queue.lock();
        let n = request.max.min(queue.len());
        Ok(queue
            .drain(..n)
            .map(|s| {
                Offer::Candidate(Candidate {
                    name: s.name,
                    bytes: s.bytes,
                    parents: current(request),
                    origin: Origin::Submitted {
                        author: s.author,
                        description: s.description,
                    },
                })
            })
            .collect())
    }
}

/// Sources to build, in order, each within the limits.
#[derive(Debug, Clone, Default)]
pub struct FromSource {
    queue: Arc<Mutex<VecDeque<(String, SourceCode)>>>,
    limits: BuildLimits,
}

impl FromSource {
    /// An empty queue building within `limits`.
    pub fn new(limits: BuildLimits) -> FromSource {
        FromSource {
            queue: Arc::default(),
            limits,
        }
    }

    /// Queues a source under a name.
    pub fn add(&self, name: &str, source: SourceCode) {
        self.queue.lock().push_back((name.to_owned(), source));
    }
}

impl CandidateSource for FromSource {
    fn name(&self) -> &str {
        "built"
    }

    fn propose(&mut self, request: &Request<'_>) -> Result<Vec<Offer>, EvolveError> {
        let mut offers = Vec::new();
        while offers.len() < request.max {
            let Some((name, source)) = self.queue.lock().pop_front() else {
                break;
            };
            let hash = source_hash(&source)?;
            let origin = Origin::Built {
                language: source.language().into(),
                source: hash.clone(),
            };
            offers.push(match build(&source, &self.limits)? {
                Built::Module(bytes) => Offer::Candidate(Candidate {
                    name,
                    bytes,
                    parents: current(request),
                    origin,
                }),
                Built::Failed { output } => Offer::Refused {
                    name,
                    offered: ModuleHash::of(hash.as_bytes()),
                    parents: current(request),
                    origin,
                    reason: output,
                },
            });
        }
        Ok(offers)
    }
}

/// Configurations of one module's code proposed by a [`Genetic`] search over the space the
/// module declares; each configuration is the module with that `arbor:params` section.
#[derive(Debug)]
pub struct ParameterSearch {
    base: Vec<u8>,
    base_hash: ModuleHash,
    search: Genetic,
    /// Configurations bred and not yet offered.
    queue: VecDeque<Params>,
    /// Offered and not yet scored, by module.
    offered: BTreeMap<ModuleHash, Params>,
    /// Scored since the last generation was bred.
    scored: Vec<Scored>,
    /// Every configuration measured, encoded, with its fitness.
    known: BTreeMap<Vec<u8>, f64>,
}

impl ParameterSearch {
    /// A search over the parameters of `base` (the module whose code is tuned; its own
    /// parameters, if any, seed the first generation).
    pub fn new(base: &[u8], search: Genetic) -> Result<ParameterSearch, EvolveError> {
        let space = space_of(base)?;
        if space != *search.space() {
            return Err(EvolveError::BadConfig(
                "the search's space is not the one the module declares".into(),
            ));
        }
        Ok(ParameterSearch {
            base: base.to_vec(),
            base_hash: ModuleHash::of(base),
            search,
            queue: VecDeque::new(),
            offered: BTreeMap::new(),
            scored: Vec::new(),
            known: BTreeMap::new(),
        })
    }

    /// The search.
    pub fn search(&self) -> &Genetic {
        &self.search
    }

    fn breed(&mut self) -> Result<(), EvolveError> {
        let next = if self.search.generation() == 0 && self.scored.is_empty() {
            let own = params_of(&self.base)?;
            let seeds: Vec<Params> = own.into_iter().collect();
            self.search.first(&seeds)
        } else {
            let scored = std::mem::take(&mut self.scored);
            self.search.next(&scored)
        };
        self.queue.extend(next);
        Ok(())
    }
}

impl CandidateSource for ParameterSearch {
    fn name(&self) -> &str {
        "params"
    }

    fn propose(&mut self, request: &Request<'_>) -> Result<Vec<Offer>, EvolveError> {
        let mut offers = Vec::new();
        let mut bred = 0;
        while offers.len() < request.max {
            // A generation is bred once the last one is all offered and scored. A few at most
            // per call: a generation of elites alone offers nothing new.
            if self.queue.is_empty() {
                if !self.offered.is_empty() || bred == 4 {
                    break;
                }
                self.breed()?;
                bred += 1;
            }
            let Some(params) = self.queue.pop_front() else {
                break;
            };
            let bytes = with_params(&self.base, &params)?;
            let hash = ModuleHash::of(&bytes);
            // The base's own configuration (a seed) runs already: nothing to compare.
            if hash == self.base_hash {
                continue;
            }
            // An elite carried into the next generation is already measured.
            if let Some(fitness) = self.known.get(&params.encode()) {
                self.scored.push(Scored {
                    params,
                    fitness: *fitness,
                });
                continue;
            }
            self.offered.insert(hash, params.clone());
            offers.push(Offer::Candidate(Candidate {
                name: format!("params {params}"),
                bytes,
                parents: vec![self.base_hash],
                origin: Origin::Params {
                    params: params.render(),
                },
            }));
        }
        Ok(offers)
    }

    fn learn(&mut self, results: &[(ModuleHash, Option<f64>)]) {
        for (module, fitness) in results {
            if let Some(params) = self.offered.remove(module) {
                // A candidate that failed is as unfit as can be, but still bred from rarely.
                let fitness = fitness.unwrap_or(f64::MIN);
                self.known.insert(params.encode(), fitness);
                self.scored.push(Scored { params, fitness });
            }
        }
    }
}

/// Placebos of the agent's current module: same code and data, a new hash. Every one must
/// pass; one that does not is a false rejection by the arbiter.
#[derive(Debug, Clone, Default)]
pub struct Placebos {
    made: u64,
}

impl Placebos {
    /// A source of placebos.
    pub fn new() -> Placebos {
        Placebos::default()
    }
}

impl CandidateSource for Placebos {
    fn name(&self) -> &str {
        "placebo"
    }

    fn propose(&mut self, request: &Request<'_>) -> Result<Vec<Offer>, EvolveError> {
        let Some(parent) = request.parents.first() else {
            return Ok(Vec::new());
        };
        (0..request.max)
            .map(|_| {
                self.made += 1;
                Ok(Offer::Candidate(Candidate {
                    name: format!("placebo {}", self.made),
                    bytes: placebo(&parent.bytes, self.made)?,
                    parents: vec![parent.module],
                    origin: Origin::Placebo {
                        how: "arbor:placebo section".into(),
                    },
                }))
            })
            .collect()
    }
}
