//! How the arbiter works ([`ArbiterConfig`], [`Approval`]) and what one evaluation adds to it
//! ([`EvaluationOptions`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::compare::IgnoreRule;
use crate::error::ShadowError;
use crate::migration::MigrationRule;
use crate::objective::Objective;
use crate::policy::{MAX_WINDOW, Policy, ShadowLimits};

/// Who promotes an approved candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// The verdict waits for a person ([`Arbiter::promote`](crate::Arbiter::promote),
    /// `arborctl evolve promote`).
    Suggest,
    /// The arbiter promotes an approved candidate itself.
    Auto,
}

/// How the arbiter works. Deserialising fills fields a stored configuration lacks with their
/// defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArbiterConfig {
    /// Suggest or auto.
    pub approval: Approval,
    /// The decision rule's thresholds.
    pub policy: Policy,
    /// Budgets and limits of shadows.
    pub limits: ShadowLimits,
    /// The watch after a promotion lasts at least this long (the previous module runs as a
    /// reverse shadow)…
    pub watch: Duration,
    /// … and until it has compared at least this many inputs (default 3,000: the promoted
    /// module shows in production the bound the evaluation proved, and an instance old enough
    /// to show a bug that needs thousands of inputs).
    pub watch_samples: u64,
    /// A watch that has not its samples after this long ends, keeping the promotion and saying
    /// so in the lineage (`watch-incomplete`): the journal it holds cannot grow for ever.
    pub watch_max: Duration,
    /// Hold each of production's replies (and sends) during the watch until the reverse shadow
    /// agrees, and answer with the previous module's reply when it does not (then roll back):
    /// no wrong reply leaves, at the cost of the shadow's time on every reply and production
    /// waiting when the shadow falls behind.
    pub verified_watch: bool,
}

impl ArbiterConfig {
    /// Refuses a configuration the rule cannot work with ([`ShadowError::Config`]).
    pub fn validate(&self) -> Result<(), ShadowError> {
        self.policy.validate()?;
        self.limits.validate()?;
        if self.watch > MAX_WINDOW {
            return Err(ShadowError::Config("watch must be at most a year".into()));
        }
        Ok(())
    }
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        ArbiterConfig {
            approval: Approval::Suggest,
            policy: Policy::default(),
            limits: ShadowLimits::default(),
            watch: Duration::from_secs(60),
            watch_samples: 3_000,
            watch_max: Duration::from_secs(3_600),
            verified_watch: false,
        }
    }
}

/// What an evaluation compares and how, beyond the arbiter's configuration.
///
/// ```
/// use arbor_shadow::{EvaluationOptions, IgnoreRule};
/// let options = EvaluationOptions {
///     ignore: vec![IgnoreRule::path("*.generated_at")],
///     // Cheaper by more than 10 %, and the host's `hits` judge no lower.
///     objectives: vec!["fuel:better:0.1".parse()?, "score.hits:no-worse".parse()?],
///     // Reply differences graded by the comparator the host registered as `nil-fix`.
///     comparator: Some("nil-fix".into()),
///     ..EvaluationOptions::default()
/// };
/// # let _ = options;
/// # Ok::<(), arbor_shadow::ShadowError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvaluationOptions {
    /// Parts of replies that may differ by design (GitHub Scientist's ignore rules).
    pub ignore: Vec<IgnoreRule>,
    /// How the candidate's migration of production's state is judged.
    pub migration: MigrationRule,
    /// Where the shadows (the gate's, the live evaluation's and the watch's) run.
    pub shadows: ShadowPlace,
    /// What the candidate must improve or hold beyond "no worse"
    /// ([`objective`](crate::objective)); scores name judges registered with
    /// [`Arbiter::register_judge`](crate::Arbiter::register_judge).
    pub objectives: Vec<Objective>,
    /// The comparator (registered with
    /// [`Arbiter::register_comparator`](crate::Arbiter::register_comparator)) that grades reply
    /// differences: the changes the candidate is meant to make. Without one every
    /// difference is wrong.
    pub comparator: Option<String>,
}

/// Where an evaluation's shadows run. On another node, production's inputs are mirrored to it
/// over the network and what each shadow did comes back: the Wasm work, the shadows' memory
/// and their compile cache are that node's, not production's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowPlace {
    /// In the arbiter's process, beside production.
    #[default]
    Here,
    /// On the named node of the cluster.
    Node(String),
    /// On a live node of the cluster other than the arbiter's (chosen per agent).
    Elsewhere,
}
