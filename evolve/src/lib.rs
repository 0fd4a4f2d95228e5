//! Evolution that searches: where candidates come from and which parents they are bred from.
//!
//! The arbiter (`arbor-shadow`) decides whether one candidate may
//! replace production. This crate supplies candidates and remembers them:
//!
//! - **Candidate sources** behind one interface, [`CandidateSource`]: [`Submitted`] modules
//!   (with author and description), modules built [`FromSource`] (WAT, or a guest crate compiled
//!   by cargo within [`BuildLimits`]; a compile error is a refused candidate with the
//!   compiler's output), a [`ParameterSearch`] (a seeded [`Genetic`] search over the parameters
//!   a module declares), and [`Placebos`] that must pass.
//! - **Parameters** ([`Space`], [`Params`]): a module declares its tunables in an
//!   `arbor:tunables` section ([`space_of`]); a configuration is the module with an
//!   `arbor:params` section ([`with_params`]), which the host hands the guest before
//!   `arbor_init`/`arbor_restore` (`modules/ABI.md`). The content hash then names code and
//!   configuration together, so a configuration is admitted, evaluated, promoted and rolled
//!   back like any module.
//! - **Selection** from the vault's archive ([`arbor_vault::ArchiveEntry`]): [`contenders`]
//!   (the root and every approved candidate, with their children and the [`pareto_front`]),
//!   and [`choose_parents`] (half from the front, half by the Darwin Gödel Machine's
//!   [`parent_weights`]).
//! - **The loop** ([`EvolutionLoop`]): each cycle draws parents, asks the sources, takes every
//!   candidate through the arbiter (promotion as the agent's approval mode allows), tells the
//!   sources what each measured, and reports ([`CycleReport`], JSON and Markdown).
//!
//! # Modules
//!
//! In dependency order; a module uses only those above it.
//!
//! | module | what it holds |
//! | --- | --- |
//! | `error` | [`EvolveError`] |
//! | `tunable` | [`Space`], [`Tunable`], [`Params`] |
//! | `rewrite` | [`with_params`], [`placebo`], [`space_of`], [`params_of`] |
//! | `genetic` | [`Genetic`], [`GeneticConfig`] |
//! | `select` | [`pareto_front`], [`parent_weights`], [`contenders`], [`choose_parents`] |
//! | `build` | [`build`], [`SourceCode`], [`BuildLimits`] |
//! | `source` | [`CandidateSource`] and the four sources |
//! | `cycle` | [`EvolutionLoop`]: parents, sources, the arbiter, [`CycleReport`] |
//! | `loops` | [`Loops`]: loops in the background, started from a [`LoopSpec`] |

#![deny(missing_docs)]

mod build;
mod cycle;
mod error;
mod genetic;
mod loops;
mod rewrite;
mod select;
mod source;
mod tunable;

pub use build::{BuildLimits, Built, SourceCode, build, source_hash};
pub use cycle::{CycleReport, EvolutionLoop, LoopConfig, Tried};
pub use error::EvolveError;
pub use genetic::{Genetic, GeneticConfig, Scored};
pub use loops::{KEPT_REPORTS, LoopSpec, LoopStatus, Loops, SourceKind};
pub use rewrite::{PLACEBO_SECTION, params_of, placebo, space_of, with_params};
pub use select::{
    Contender, Direction, STEEPNESS, choose_parents, contenders, parent_weights, pareto_front,
};
pub use source::{
    Candidate, CandidateSource, FromSource, Offer, ParameterSearch, Parent, Placebos, Request,
    Submission, Submitted,
};
pub use tunable::{Kind, MAX_OPTIONS, MAX_TUNABLES, Params, Space, Tunable, Value};
