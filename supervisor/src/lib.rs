//! OTP-style supervision trees on ractor.
//!
//! ractor delivers supervision events (a linked child started, stopped or failed) but has no
//! restart strategies; this crate brings Erlang/OTP's `supervisor` semantics on top of it:
//!
//! - **Child specs** ([`ChildSpec`]): an id, how to (re)start the child (a closure, since
//!   ractor arguments are not `Clone`), a [`Restart`] type (`permanent` / `transient` /
//!   `temporary`) and a [`Shutdown`] (`brutal_kill` / timeout then kill / infinity).
//! - **Strategies** ([`Strategy`]): `one_for_one`, `one_for_all`, `rest_for_one`. Children can
//!   be added and removed at run time ([`SupervisorRef::start_child`],
//!   [`SupervisorRef::terminate_child`]), up to an optional [`SupervisorSpec::max_children`] —
//!   a supervisor with no static children is the dynamic supervisor of an agent pool.
//! - **Restart intensity** ([`Intensity`], OTP's default 1 restart in 5 s): when exceeded the
//!   supervisor stops all its children (reverse start order) and exits with reason
//!   `shutdown: …`; its parent sees the exit and applies its own strategy, so failures escalate
//!   up the tree. The root's exit is visible through [`SupervisorRef::wait_exit`].
//! - **Order**: children start in spec order and stop in reverse order; a child that fails to
//!   start fails its supervisor's start with the reason. A restart that fails is retried and
//!   counts against the intensity (OTP's `try_again_restart`). Optional [`Backoff`].
//! - **Introspection**: [`SupervisorRef::tree`] gives the whole tree below a supervisor with
//!   every child's state and restart count, without messaging the actors.
//!
//! Exit reasons follow OTP: a child that stops normally (ractor `stop` with no reason,
//! `"normal"`, or a reason starting with `"shutdown"`) exited normally, and a `transient` child
//! is then not restarted; a child that failed (an error or panic in a handler) or was killed
//! exited abnormally.
//!
//! ## The rules, exactly
//!
//! - **Shutdown timeout.** [`Shutdown::Timeout`]`(T)`: the child is asked to stop (reason
//!   `shutdown`) and, if it has not exited `T` after that request — busy in a handler, or slow
//!   in its `post_stop` — it is killed then (OTP's `shutdown => T`). One deadline, not one per
//!   wait. A kill lands at the child's next await point; a child stuck in blocking code is
//!   abandoned (logged) after a further 10 s so the supervisor itself is never stuck.
//! - **Intensity period.** [`Intensity`]`{ max_restarts, period }`: more than `max_restarts`
//!   restarts within any sliding window of `period` and the supervisor gives up. `max_restarts`
//!   may be 0 (the first restart gives up). `period` must be positive: a zero period is refused
//!   when the supervisor starts ([`SupervisorError::InvalidIntensity`]), never read as "no
//!   limit". A restart that fails to start counts as a restart.
//! - **Temporary children** are never restarted, whoever restarts: when a temporary child
//!   exits (normally or not) or is stopped by its supervisor — by the strategy (a sibling's
//!   `one_for_all` / `rest_for_one` restart) or because the supervisor itself stops or gives up
//!   — its spec is dropped, the hook set with [`ChildSpec::on_exit`] is told, and a later
//!   restart of the supervisor by its parent does not bring it back (OTP drops the spec).
//! - **Group restarts.** Under `one_for_all`, if a child fails to start while the group
//!   restarts, the children already restarted are stopped again (reverse order) and the whole
//!   group is retried, counting against the intensity (OTP's `try_again_restart`); under
//!   `rest_for_one` the retry starts from the failed child.
//!
//! ```
//! use std::time::Duration;
//! use arbor_supervisor::{ChildSpec, Restart, Strategy, Supervisor, SupervisorSpec};
//! use ractor::{Actor, ActorProcessingErr, ActorRef};
//!
//! struct Worker;
//! impl Actor for Worker {
//!     type Msg = ();
//!     type State = ();
//!     type Arguments = ();
//!     async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let spec = SupervisorSpec::new("root")
//!     .strategy(Strategy::OneForOne)
//!     .intensity(3, Duration::from_secs(5))
//!     .child(ChildSpec::worker("a", |sup| async move {
//!         Actor::spawn_linked(None, Worker, (), sup).await.map(|(actor, _)| actor.get_cell())
//!     }));
//! let root = Supervisor::start(spec).await?;
//! let tree = root.tree();
//! assert_eq!(tree.children[0].id, "a");
//! assert_eq!(tree.children[0].restart, Restart::Permanent);
//! root.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod spec;
mod supervisor;
mod tree;

pub use error::SupervisorError;
pub use spec::{
    Backoff, ChildKind, ChildSpec, ChildStarted, ExitHook, Intensity, Restart, Shutdown,
    StartFuture, Strategy, SupervisorSpec,
};
pub use supervisor::{ExitReason, Supervisor, SupervisorRef};
pub use tree::{ChildInfo, ChildState, SupervisorTree};
