//! What a supervisor supervises and how: child specs, strategies, intensity, backoff.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorCell;

use crate::error::SupervisorError;
use crate::supervisor::{ExitReason, SupervisorRef};

/// When a child that exited is restarted (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only if it exited abnormally (failed or was killed).
    Transient,
    /// Never restarted; removed from the supervisor when it exits.
    Temporary,
}

/// How a supervisor stops a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// Kill it at once (no `post_stop`).
    BrutalKill,
    /// Ask it to stop (reason `shutdown`); kill it if it has not stopped after this long.
    Timeout(Duration),
    /// Ask it to stop and wait as long as it takes (for supervisor children, which stop their
    /// own children first).
    Infinity,
}

/// Whether a child is a worker or a supervisor (a supervisor child's subtree is part of
/// [`SupervisorRef::tree`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    /// An actor doing work.
    Worker,
    /// A supervisor.
    Supervisor,
}

/// Which children restart when one exits and must be restarted (OTP's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// All children: the others are stopped in reverse start order, then all start in order.
    OneForAll,
    /// The child that exited and every child started after it (stopped in reverse order,
    /// restarted in order).
    RestForOne,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        })
    }
}

/// Restart intensity: at most `max_restarts` restarts within any `period`; one more and the
/// supervisor gives up (stops its children and exits with reason `shutdown`).
///
/// `max_restarts` may be 0 (the first restart gives up, as in OTP). `period` must be positive:
/// a supervisor whose period is zero is refused at start with
/// [`SupervisorError::InvalidIntensity`] — OTP requires a positive period, and a zero window
/// would silently mean "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Intensity {
    /// Restarts allowed within `period`.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Intensity {
    /// Refuses a zero period (see [`SupervisorError::InvalidIntensity`]); `supervisor` names
    /// the supervisor in the error.
    pub fn check(&self, supervisor: &str) -> Result<(), SupervisorError> {
        if self.period.is_zero() {
            return Err(SupervisorError::InvalidIntensity {
                supervisor: supervisor.to_string(),
                max_restarts: self.max_restarts,
                period: self.period,
            });
        }
        Ok(())
    }
}

impl Default for Intensity {
    /// OTP's default: 1 restart in 5 seconds.
    fn default() -> Self {
        Intensity {
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }
}

/// Waiting before a restart: `initial`, doubled for each further restart within the intensity
/// period, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backoff {
    /// The delay before the first restart in a period.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before a restart when `recent` restarts (this one included) fall in the
    /// intensity period.
    pub fn delay(&self, recent: usize) -> Duration {
        let doublings = u32::try_from(recent.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(20);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

/// What a start function made: the child's actor and, for a supervisor child, its handle.
#[derive(Debug, Clone)]
pub struct ChildStarted {
    /// The child's actor, linked to the supervisor.
    pub cell: ActorCell,
    /// Set when the child is a supervisor.
    pub supervisor: Option<SupervisorRef>,
}

impl From<ActorCell> for ChildStarted {
    fn from(cell: ActorCell) -> Self {
        ChildStarted {
            cell,
            supervisor: None,
        }
    }
}

/// The future a start function returns: the started child, `None` to decline starting it
/// (OTP's `ignore`: no error, the child is kept as terminated and not restarted), or why it
/// failed.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<Option<ChildStarted>, String>> + Send>>;

type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

/// Told that a child is gone for good: see [`ChildSpec::on_exit`].
pub type ExitHook = Arc<dyn Fn(&ExitReason) + Send + Sync>;

/// How a supervisor starts, restarts and stops one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children.
    pub id: String,
    pub(crate) start: StartFn,
    /// When it is restarted.
    pub restart: Restart,
    /// How it is stopped.
    pub shutdown: Shutdown,
    /// Worker or supervisor.
    pub kind: ChildKind,
    pub(crate) on_exit: Option<ExitHook>,
}

impl ChildSpec {
    /// A worker: `start` is given the supervisor's cell and must spawn the child linked to it
    /// (`Actor::spawn_linked(…, supervisor)`), returning the child's cell. It is called again
    /// for every restart. Permanent, stopped with a 5 s timeout (OTP's worker defaults).
    pub fn worker<F, Fut, E>(id: impl Into<String>, start: F) -> ChildSpec
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, E>> + Send + 'static,
        E: fmt::Display,
    {
        let start = Arc::new(start);
        ChildSpec {
            id: id.into(),
            start: Arc::new(move |supervisor| {
                let started = start(supervisor);
                Box::pin(async move {
                    match started.await {
                        Ok(cell) => Ok(Some(ChildStarted::from(cell))),
                        Err(error) => Err(error.to_string()),
                    }
                })
            }),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            kind: ChildKind::Worker,
            on_exit: None,
        }
    }

    /// A supervisor child running `spec` (permanent, shutdown infinity).
    pub fn supervisor(spec: SupervisorSpec) -> ChildSpec {
        let id = spec.name.clone();
        ChildSpec::supervisor_from(id, move || Ok(spec.clone()))
    }

    /// A supervisor child whose spec is made anew by `make` at every (re)start, e.g. from a
    /// registry of what should run under it (permanent, shutdown infinity).
    pub fn supervisor_from(
        id: impl Into<String>,
        make: impl Fn() -> Result<SupervisorSpec, String> + Send + Sync + 'static,
    ) -> ChildSpec {
        let make = Arc::new(make);
        ChildSpec {
            id: id.into(),
            start: Arc::new(move |parent| {
                let make = Arc::clone(&make);
                Box::pin(async move {
                    let supervisor = crate::Supervisor::start_linked(make()?, parent)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Some(ChildStarted {
                        cell: supervisor.cell(),
                        supervisor: Some(supervisor),
                    }))
                })
            }),
            restart: Restart::Permanent,
            shutdown: Shutdown::Infinity,
            kind: ChildKind::Supervisor,
            on_exit: None,
        }
    }

    /// A child started by a raw start function (for children that are neither a plain worker
    /// nor an arbor supervisor).
    pub fn from_fn(
        id: impl Into<String>,
        kind: ChildKind,
        start: impl Fn(ActorCell) -> StartFuture + Send + Sync + 'static,
    ) -> ChildSpec {
        ChildSpec {
            id: id.into(),
            start: Arc::new(start),
            restart: Restart::Permanent,
            shutdown: match kind {
                ChildKind::Worker => Shutdown::Timeout(Duration::from_secs(5)),
                ChildKind::Supervisor => Shutdown::Infinity,
            },
            kind,
            on_exit: None,
        }
    }

    /// With this restart type.
    pub fn restart(mut self, restart: Restart) -> ChildSpec {
        self.restart = restart;
        self
    }

    /// With this shutdown.
    pub fn shutdown(mut self, shutdown: Shutdown) -> ChildSpec {
        self.shutdown = shutdown;
        self
    }

    /// Calls `hook` (on the supervisor, so briefly) when the child is gone for good without
    /// anyone asking: it exited, or the supervisor stopped it, and its restart type says this
    /// supervisor will not start it again — a `temporary` child whenever it exits or is stopped
    /// (by the strategy, or because the supervisor itself stops), a `transient` child after a
    /// normal exit. Not called for [`SupervisorRef::terminate_child`] and friends, whose caller
    /// knows.
    pub fn on_exit(mut self, hook: impl Fn(&ExitReason) + Send + Sync + 'static) -> ChildSpec {
        self.on_exit = Some(Arc::new(hook));
        self
    }

    pub(crate) fn exited_for_good(&self, reason: &ExitReason) {
        if let Some(hook) = &self.on_exit {
            hook(reason);
        }
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A supervisor: its name, strategy, intensity and children (started in this order).
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    /// Its name (also its child id under a parent).
    pub name: String,
    /// Which children restart together.
    pub strategy: Strategy,
    /// How many restarts it tolerates.
    pub intensity: Intensity,
    /// Its static children, in start order.
    pub children: Vec<ChildSpec>,
    /// The most children it accepts (static and dynamic); `None` is unlimited.
    pub max_children: Option<usize>,
    /// A delay before restarts, if any.
    pub backoff: Option<Backoff>,
}

impl SupervisorSpec {
    /// A `one_for_one` supervisor with OTP's default intensity and no children.
    pub fn new(name: impl Into<String>) -> SupervisorSpec {
        SupervisorSpec {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            children: Vec::new(),
            max_children: None,
            backoff: None,
        }
    }

    /// With this strategy.
    pub fn strategy(mut self, strategy: Strategy) -> SupervisorSpec {
        self.strategy = strategy;
        self
    }

    /// At most `max_restarts` in `period`.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> SupervisorSpec {
        self.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Adds a child (started after the ones before it).
    pub fn child(mut self, child: ChildSpec) -> SupervisorSpec {
        self.children.push(child);
        self
    }

    /// At most `max` children.
    pub fn max_children(mut self, max: usize) -> SupervisorSpec {
        self.max_children = Some(max);
        self
    }

    /// Wait before restarts.
    pub fn backoff(mut self, backoff: Backoff) -> SupervisorSpec {
        self.backoff = Some(backoff);
        self
    }
}
