//! The evolution arbiter: agent behaviour improves while the system runs, and a bad candidate
//! never reaches production.
//!
//! For a candidate module of an agent, the [`Arbiter`]:
//!
//! 1. **admits** it ([`Arbiter::admit`]): ABI and imports checked against the agent's grants,
//!    stored in the vault by content hash, recorded in the lineage with its parent;
//! 2. runs the **replay gate** ([`gate`]): the agent's journaled inputs since a checkpoint,
//!    through candidate and current module offline, with the journaled host answers;
//! 3. runs **shadows** ([`shadow`], [`live`](crate::live)): the candidate and an A/A control (the
//!    current module), both from production's snapshot, on production's inputs mirrored after
//!    production handled them, isolated (recorded answers; sends captured, never delivered);
//! 4. **compares** each input ([`compare`]): replies with the candidate's ignore rules, sends,
//!    state (control migrated into the candidate, and the migration itself checked against
//!    production's state with the host's decoder: [`migration`]), traps, fuel per message kind
//!    and latency;
//! 5. **decides** with the rule in [`policy`] — approve only with a stated bound on the failure
//!    rate (by default *< 0.1 % at 95 %*, about 3,000 clean samples, gate and live together) —
//!    and writes the verdict, the bound and their evidence to the vault;
//! 6. **promotes** (a person, [`Approval::Suggest`], or itself, [`Approval::Auto`]) by hot swap
//!    with a promotion checkpoint; **watches** with the previous module as a reverse shadow and
//!    **rolls back** on regression, rebuilding the previous module's state from the promotion
//!    checkpoint and the journal since.
//!
//! Every step is appended to the vault's lineage ([`Arbiter::history`]).

mod arbiter;
pub mod compare;
mod error;
pub mod gate;
mod live;
pub mod migration;
pub mod policy;
pub mod shadow;
pub mod stats;

pub use arbiter::{
    Approval, Arbiter, ArbiterConfig, EvaluationOptions, EvaluationStatus, Outcome, Promotion,
    Rollback, Stage, VerdictDetail,
};
pub use compare::IgnoreRule;
pub use error::ShadowError;
pub use gate::GateReport;
pub use migration::MigrationRule;
pub use policy::{Decision, Divergence, FailureBound, KindCost, Policy, ShadowLimits, Tally};
