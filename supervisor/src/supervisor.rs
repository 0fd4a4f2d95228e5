//! The supervisor actor: starts children in order, applies its strategy when one exits,
//! counts restarts against its intensity, stops children in reverse order.
//!
//! One file, like OTP's `supervisor.erl`: the actor's message handling is one state machine
//! (start, exit, restart, shutdown) whose arms share the child list and the restart window.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};

use crate::error::SupervisorError;
use crate::spec::{
    Backoff, ChildSpec, ChildStarted, Intensity, Restart, Shutdown, Strategy, SupervisorSpec,
};
use crate::tree::{ChildInfo, ChildState, SupervisorTree};

/// Why an actor in the tree exited, in OTP's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It stopped by itself with no reason or `"normal"`.
    Normal,
    /// It was shut down (reason `"shutdown"` or `"shutdown: <detail>"`); normal for
    /// `transient` children. A supervisor that gives up exits with this and a detail.
    Shutdown(String),
    /// It was killed.
    Killed,
    /// It failed: an error or a panic in a handler, or a stop with another reason.
    Failed(String),
}

impl ExitReason {
    /// The reason a ractor `ActorTerminated` event carries, read the OTP way.
    pub fn from_stop_reason(reason: Option<&str>) -> ExitReason {
        match reason {
            None | Some("normal") => ExitReason::Normal,
            Some("killed") => ExitReason::Killed,
            Some("shutdown") => ExitReason::Shutdown(String::new()),
            Some(reason) => match reason.strip_prefix("shutdown:") {
                Some(detail) => ExitReason::Shutdown(detail.trim().to_string()),
                None => ExitReason::Failed(reason.to_string()),
            },
        }
    }

    /// Normal or shutdown: a `transient` child that exits so is not restarted.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown(_))
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown(detail) if detail.is_empty() => f.write_str("shutdown"),
            ExitReason::Shutdown(detail) => write!(f, "shutdown: {detail}"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

type Reply<T> = RpcReplyPort<Result<T, SupervisorError>>;

/// What a supervisor actor receives (besides supervision events).
pub enum SupervisorMsg {
    /// Start a new child (appended after the others).
    StartChild(ChildSpec, Reply<Option<ChildStarted>>),
    /// Stop a child per its shutdown; a child added at run time is removed, a static one stays
    /// as terminated.
    TerminateChild(String, Reply<()>),
    /// Start a terminated static child again.
    RestartChild(String, Reply<Option<ChildStarted>>),
    /// Remove a terminated static child.
    DeleteChild(String, Reply<()>),
    /// Stop supervising a child without stopping it (it is unlinked and forgotten).
    ReleaseChild(String, Reply<ActorCell>),
    /// A delayed restart is due (backoff, or retrying a restart that failed).
    RestartDue {
        /// Which scheduled restart (older ones are stale).
        epoch: u64,
    },
}

/// The supervisor actor. Start one with [`Supervisor::start`] (a root) or as a child with
/// [`ChildSpec::supervisor`].
pub struct Supervisor;

/// A handle on a running supervisor; cheap to clone.
#[derive(Clone)]
pub struct SupervisorRef {
    actor: ActorRef<SupervisorMsg>,
    node: Arc<Mutex<Node>>,
}

/// What a supervisor publishes for introspection (read without messaging it).
struct Node {
    name: String,
    strategy: Strategy,
    intensity: Intensity,
    restarts: u64,
    /// Restart times, for the restarts within the intensity period at the time of reading.
    recent: VecDeque<Instant>,
    exit: Option<ExitReason>,
    children: Vec<NodeChild>,
}

struct NodeChild {
    info: ChildInfo,
    supervisor: Option<SupervisorRef>,
}

/// How a supervisor starts.
pub struct Start {
    spec: SupervisorSpec,
    node: Arc<Mutex<Node>>,
}

struct Child {
    spec: ChildSpec,
    running: Option<ChildStarted>,
    /// Added with `start_child` (removed when terminated) rather than in the spec.
    dynamic: bool,
    restarts: u64,
    state: ChildState,
}

/// The supervisor's state.
pub struct State {
    name: String,
    strategy: Strategy,
    intensity: Intensity,
    max_children: Option<usize>,
    backoff: Option<Backoff>,
    children: Vec<Child>,
    /// Restart times within the intensity period.
    recent: VecDeque<Instant>,
    restarts: u64,
    /// Children waiting for a delayed restart, and the epoch of that schedule.
    pending: Option<(u64, Vec<String>)>,
    epoch: u64,
    /// Set when the supervisor gave up (intensity) or is stopping: exits are not acted on.
    exit: Option<ExitReason>,
    node: Arc<Mutex<Node>>,
}

impl Supervisor {
    /// Starts a supervisor with no parent (a root) and its children, in order. Fails if a
    /// child fails to start (the ones started before it are stopped first).
    pub async fn start(spec: SupervisorSpec) -> Result<SupervisorRef, SupervisorError> {
        Self::spawn(spec, None).await
    }

    /// Starts a supervisor linked to `parent` (used by [`ChildSpec::supervisor`]).
    pub async fn start_linked(
        spec: SupervisorSpec,
        parent: ActorCell,
    ) -> Result<SupervisorRef, SupervisorError> {
        Self::spawn(spec, Some(parent)).await
    }

    async fn spawn(
        spec: SupervisorSpec,
        parent: Option<ActorCell>,
    ) -> Result<SupervisorRef, SupervisorError> {
        let name = spec.name.clone();
        spec.intensity.check(&name)?;
        let node = Arc::new(Mutex::new(Node {
            name: name.clone(),
            strategy: spec.strategy,
            intensity: spec.intensity,
            restarts: 0,
            recent: VecDeque::new(),
            exit: None,
            children: Vec::new(),
        }));
        let start = Start {
            spec,
            node: Arc::clone(&node),
        };
        let spawned = match parent {
            None => Actor::spawn(None, Supervisor, start).await,
            Some(parent) => Actor::spawn_linked(None, Supervisor, start, parent).await,
        };
        match spawned {
            Ok((actor, _)) => Ok(SupervisorRef { actor, node }),
            Err(SpawnErr::StartupFailed(error)) => Err(match error.downcast::<SupervisorError>() {
                Ok(error) => *error,
                Err(error) => SupervisorError::Spawn {
                    supervisor: name,
                    reason: error.to_string(),
                },
            }),
            Err(error) => Err(SupervisorError::Spawn {
                supervisor: name,
                reason: error.to_string(),
            }),
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = State;
    type Arguments = Start;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        start: Start,
    ) -> Result<State, ActorProcessingErr> {
        let Start { spec, node } = start;
        let mut state = State {
            name: spec.name,
            strategy: spec.strategy,
            intensity: spec.intensity,
            max_children: spec.max_children,
            backoff: spec.backoff,
            children: Vec::new(),
            recent: VecDeque::new(),
            restarts: 0,
            pending: None,
            epoch: 0,
            exit: None,
            node,
        };
        for child in spec.children {
            if let Err(error) = state.check_new(&child.id) {
                state.stop_all().await;
                return Err(Box::new(error));
            }
            match run_start(&child, myself.get_cell()).await {
                Ok(Some(started)) => state.children.push(Child::running(child, started, false)),
                Ok(None) => state.children.push(Child::ignored(child, false)),
                Err(reason) => {
                    let error = SupervisorError::StartFailed {
                        supervisor: state.name.clone(),
                        child: child.id,
                        reason,
                    };
                    tracing::error!(%error, "supervisor start failed");
                    state.stop_all().await;
                    return Err(Box::new(error));
                }
            }
        }
        state.publish();
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        state
            .exit
            .get_or_insert(ExitReason::Shutdown(String::new()));
        state.stop_all().await;
        state.publish();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        // Each reply goes out after the tree is published, so a caller that reads the tree
        // next sees its change.
        match message {
            SupervisorMsg::StartChild(spec, reply) => {
                let result = state.start_child(&myself, spec).await;
                state.answer(reply, result);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let result = state.terminate_child(&id).await;
                state.answer(reply, result);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let result = state.restart_child(&myself, &id).await;
                state.answer(reply, result);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let result = state.delete_child(&id);
                state.answer(reply, result);
            }
            SupervisorMsg::ReleaseChild(id, reply) => {
                let result = state.release_child(&myself, &id);
                state.answer(reply, result);
            }
            SupervisorMsg::RestartDue { epoch } => {
                if let Some((pending, ids)) = state.pending.take() {
                    if pending == epoch {
                        state.restart_children(&myself, ids).await;
                    } else {
                        state.pending = Some((pending, ids));
                    }
                }
                state.publish();
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, ExitReason::from_stop_reason(reason.as_deref()))
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                (cell, ExitReason::Failed(error.to_string()))
            }
            _ => return Ok(()),
        };
        state.child_exited(&myself, cell.get_id(), exit).await;
        state.publish();
        Ok(())
    }
}

impl Child {
    fn ignored(spec: ChildSpec, dynamic: bool) -> Child {
        Child {
            spec,
            running: None,
            dynamic,
            restarts: 0,
            state: ChildState::Terminated {
                reason: ExitReason::Normal,
            },
        }
    }

    fn running(spec: ChildSpec, started: ChildStarted, dynamic: bool) -> Child {
        Child {
            spec,
            running: Some(started),
            dynamic,
            restarts: 0,
            state: ChildState::Running,
        }
    }
}

impl State {
    fn index_of(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    fn unknown(&self, id: &str) -> SupervisorError {
        SupervisorError::UnknownChild {
            supervisor: self.name.clone(),
            child: id.to_string(),
        }
    }

    fn check_new(&self, id: &str) -> Result<(), SupervisorError> {
        if self.index_of(id).is_some() {
            return Err(SupervisorError::DuplicateChild {
                supervisor: self.name.clone(),
                child: id.to_string(),
            });
        }
        match self.max_children {
            Some(max) if self.children.len() >= max => Err(SupervisorError::MaxChildren {
                supervisor: self.name.clone(),
                max,
            }),
            _ => Ok(()),
        }
    }

    async fn start_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<Option<ChildStarted>, SupervisorError> {
        if self.exit.is_some() {
            return Err(SupervisorError::Stopped {
                supervisor: self.name.clone(),
            });
        }
        self.check_new(&spec.id)?;
        match run_start(&spec, myself.get_cell()).await {
            Ok(Some(started)) => {
                self.children
                    .push(Child::running(spec, started.clone(), true));
                Ok(Some(started))
            }
            // A dynamic child that declines to start is not kept.
            Ok(None) => Ok(None),
            Err(reason) => Err(SupervisorError::StartFailed {
                supervisor: self.name.clone(),
                child: spec.id,
                reason,
            }),
        }
    }

    async fn terminate_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let index = self.index_of(id).ok_or_else(|| self.unknown(id))?;
        self.unschedule(id);
        let child = &mut self.children[index];
        stop_child(child).await;
        if child.dynamic || child.spec.restart == Restart::Temporary {
            self.children.remove(index);
        } else {
            child.state = ChildState::Terminated {
                reason: ExitReason::Shutdown(String::new()),
            };
        }
        Ok(())
    }

    async fn restart_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
    ) -> Result<Option<ChildStarted>, SupervisorError> {
        let index = self.index_of(id).ok_or_else(|| self.unknown(id))?;
        if self.children[index].running.is_some() {
            return Err(SupervisorError::Running {
                supervisor: self.name.clone(),
                child: id.to_string(),
            });
        }
        self.unschedule(id);
        let child = &mut self.children[index];
        match run_start(&child.spec, myself.get_cell()).await {
            Ok(Some(started)) => {
                child.running = Some(started.clone());
                child.state = ChildState::Running;
                Ok(Some(started))
            }
            Ok(None) => {
                child.state = ChildState::Terminated {
                    reason: ExitReason::Normal,
                };
                Ok(None)
            }
            Err(reason) => Err(SupervisorError::StartFailed {
                supervisor: self.name.clone(),
                child: id.to_string(),
                reason,
            }),
        }
    }

    fn delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let index = self.index_of(id).ok_or_else(|| self.unknown(id))?;
        if self.children[index].running.is_some() {
            return Err(SupervisorError::Running {
                supervisor: self.name.clone(),
                child: id.to_string(),
            });
        }
        self.unschedule(id);
        self.children.remove(index);
        Ok(())
    }

    fn release_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
    ) -> Result<ActorCell, SupervisorError> {
        // Only a running child can be released; anything else is left as it is.
        let index = self
            .children
            .iter()
            .position(|c| c.spec.id == id && c.running.is_some())
            .ok_or_else(|| self.unknown(id))?;
        self.unschedule(id);
        let child = self.children.remove(index);
        let cell = child
            .running
            .map(|started| started.cell)
            .ok_or_else(|| self.unknown(id))?;
        cell.unlink(myself.get_cell());
        Ok(cell)
    }

    fn unschedule(&mut self, id: &str) {
        if let Some((_, ids)) = &mut self.pending {
            ids.retain(|pending| pending != id);
        }
    }

    /// A linked actor exited: if it is one of ours, apply the restart type and the strategy.
    async fn child_exited(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        actor: ActorId,
        exit: ExitReason,
    ) {
        let Some(index) = self.children.iter().position(|c| {
            c.running
                .as_ref()
                .is_some_and(|running| running.cell.get_id() == actor)
        }) else {
            // One we stopped ourselves, or a released child.
            return;
        };
        let child = &mut self.children[index];
        child.running = None;
        if self.exit.is_some() {
            return;
        }
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !exit.is_normal(),
            Restart::Temporary => false,
        };
        if !restart {
            tracing::info!(supervisor = self.name, child = child.spec.id, %exit, "child exited");
            child.spec.exited_for_good(&exit);
            if child.dynamic || child.spec.restart == Restart::Temporary {
                self.children.remove(index);
            } else {
                child.state = ChildState::Terminated { reason: exit };
            }
            return;
        }
        tracing::warn!(supervisor = self.name, child = child.spec.id, %exit, "child exited; restarting");
        let id = child.spec.id.clone();
        if !self.note_restart() {
            let detail = format!(
                "reached max restart intensity ({} in {:?}); last: child `{id}` exited ({exit})",
                self.intensity.max_restarts, self.intensity.period
            );
            self.give_up(myself, detail).await;
            return;
        }
        let affected: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (index..self.children.len()).collect(),
        };
        for &other in affected.iter().rev() {
            if other != index {
                let child = &mut self.children[other];
                let was_running = child.running.is_some();
                stop_child(child).await;
                if was_running && child.spec.restart == Restart::Temporary {
                    child
                        .spec
                        .exited_for_good(&ExitReason::Shutdown(String::new()));
                }
            }
        }
        let mut ids = Vec::new();
        for &i in &affected {
            let child = &mut self.children[i];
            child.state = ChildState::Restarting;
            if child.spec.restart != Restart::Temporary || i == index {
                ids.push(child.spec.id.clone());
            }
        }
        // Temporary children stopped by the strategy are not restarted (OTP removes them).
        let failed = id;
        self.children.retain(|c| {
            c.spec.restart != Restart::Temporary || c.running.is_some() || c.spec.id == failed
        });
        self.schedule(myself, ids).await;
    }

    /// Records a restart; `false` if it exceeds the intensity.
    fn note_restart(&mut self) -> bool {
        let now = Instant::now();
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.intensity.period)
        {
            self.recent.pop_front();
        }
        self.node.lock().recent = self.recent.clone();
        self.recent.len() <= self.intensity.max_restarts as usize
    }

    /// Restarts `ids` now, or after the backoff.
    async fn schedule(&mut self, myself: &ActorRef<SupervisorMsg>, ids: Vec<String>) {
        if self.restart_delay().is_zero() && self.pending.is_none() {
            self.restart_children(myself, ids).await;
        } else {
            self.defer(myself, ids);
        }
    }

    fn restart_delay(&self) -> Duration {
        self.backoff
            .map_or(Duration::ZERO, |b| b.delay(self.recent.len()))
    }

    /// Restarts `ids`, with any restart already waiting, through the mailbox after the backoff
    /// (so exits and requests in between are handled).
    fn defer(&mut self, myself: &ActorRef<SupervisorMsg>, mut ids: Vec<String>) {
        if let Some((_, earlier)) = self.pending.take() {
            for id in earlier {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        // Restart in start order.
        ids.sort_by_key(|id| self.index_of(id).unwrap_or(usize::MAX));
        self.epoch += 1;
        let epoch = self.epoch;
        self.pending = Some((epoch, ids));
        let delay = self.restart_delay();
        let actor = myself.clone();
        if delay.is_zero() {
            let _ = actor.send_message(SupervisorMsg::RestartDue { epoch });
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = actor.send_message(SupervisorMsg::RestartDue { epoch });
            });
        }
    }

    /// Starts `ids` (in this order) that are not running. A start that fails counts as a
    /// restart and is retried unless that exceeds the intensity: under `one_for_all` the whole
    /// group again (the ones started meanwhile are stopped first), otherwise from the failed
    /// child on.
    async fn restart_children(&mut self, myself: &ActorRef<SupervisorMsg>, ids: Vec<String>) {
        for (n, id) in ids.iter().enumerate() {
            let Some(index) = self.index_of(id) else {
                continue;
            };
            let child = &mut self.children[index];
            if child.running.is_some() {
                continue;
            }
            match run_start(&child.spec, myself.get_cell()).await {
                Ok(Some(started)) => {
                    child.running = Some(started);
                    child.state = ChildState::Running;
                    child.restarts += 1;
                    self.restarts += 1;
                    metrics::counter!(arbor_metrics::RESTARTS, "supervisor" => self.name.clone())
                        .increment(1);
                }
                // It declined (OTP's `ignore`): kept as terminated, not an error.
                Ok(None) => {
                    child.state = ChildState::Terminated {
                        reason: ExitReason::Normal,
                    };
                }
                Err(reason) => {
                    tracing::warn!(supervisor = self.name, child = id, reason, "restart failed");
                    child.state = ChildState::Restarting;
                    if !self.note_restart() {
                        let detail = format!(
                            "reached max restart intensity ({} in {:?}); last: child `{id}` failed to restart: {reason}",
                            self.intensity.max_restarts, self.intensity.period
                        );
                        self.give_up(myself, detail).await;
                        return;
                    }
                    // OTP's try_again: one_for_all restarts the group as one, so the siblings
                    // just started are stopped again (reverse order) and the whole group is
                    // retried; rest_for_one and one_for_one retry from the failed child on.
                    let retry = if self.strategy == Strategy::OneForAll {
                        for started in ids[..n].iter().rev() {
                            if let Some(i) = self.index_of(started) {
                                stop_child(&mut self.children[i]).await;
                                self.children[i].state = ChildState::Restarting;
                            }
                        }
                        ids.clone()
                    } else {
                        ids[n..].to_vec()
                    };
                    self.defer(myself, retry);
                    return;
                }
            }
        }
    }

    /// Intensity exceeded: stop every child and exit with reason `shutdown`, for the parent.
    async fn give_up(&mut self, myself: &ActorRef<SupervisorMsg>, detail: String) {
        tracing::error!(supervisor = self.name, detail, "supervisor giving up");
        metrics::counter!(arbor_metrics::SUPERVISOR_GIVEUPS, "supervisor" => self.name.clone())
            .increment(1);
        self.exit = Some(ExitReason::Shutdown(detail.clone()));
        self.pending = None;
        self.stop_all().await;
        myself.stop(Some(format!("shutdown: {detail}")));
    }

    /// Stops every running child, last started first. Temporary children are gone for good
    /// (OTP drops a temporary child's spec when it exits, whoever restarts the supervisor).
    async fn stop_all(&mut self) {
        for child in self.children.iter_mut().rev() {
            let was_running = child.running.is_some();
            stop_child(child).await;
            if was_running && child.spec.restart == Restart::Temporary {
                child
                    .spec
                    .exited_for_good(&ExitReason::Shutdown(String::new()));
            }
        }
        self.children
            .retain(|c| c.spec.restart != Restart::Temporary || c.running.is_some());
    }

    fn answer<T>(&self, reply: Reply<T>, result: Result<T, SupervisorError>) {
        self.publish();
        // The caller may have given up waiting.
        let _ = reply.send(result);
    }

    fn publish(&self) {
        let children = self
            .children
            .iter()
            .map(|child| NodeChild {
                info: ChildInfo {
                    id: child.spec.id.clone(),
                    kind: child.spec.kind,
                    restart: child.spec.restart,
                    state: child.state.clone(),
                    restarts: child.restarts,
                    supervisor: None,
                },
                supervisor: child.running.as_ref().and_then(|r| r.supervisor.clone()),
            })
            .collect();
        let mut node = self.node.lock();
        node.restarts = self.restarts;
        node.exit = self.exit.clone();
        node.children = children;
    }
}

/// Stops a running child per its shutdown spec and waits until it is gone.
async fn stop_child(child: &mut Child) {
    let Some(started) = child.running.take() else {
        return;
    };
    child.state = ChildState::Terminated {
        reason: ExitReason::Shutdown(String::new()),
    };
    let cell = started.cell;
    let reason = Some("shutdown".to_string());
    let gone = |cell: &ActorCell| cell.get_status() == ractor::ActorStatus::Stopped;
    match child.spec.shutdown {
        Shutdown::BrutalKill => kill(&cell, &child.spec.id).await,
        Shutdown::Timeout(timeout) => {
            // OTP: killed `timeout` after the shutdown request, not later. An error is a timeout
            // or a stop already under way elsewhere; either way the child has until the same
            // deadline, then it is killed.
            let deadline = tokio::time::Instant::now() + timeout;
            if cell.stop_and_wait(reason, Some(timeout)).await.is_err() && !gone(&cell) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let _ = cell.wait(Some(left)).await;
                if !gone(&cell) {
                    tracing::warn!(
                        child = child.spec.id,
                        ?timeout,
                        "child ignored shutdown; killing it"
                    );
                    kill(&cell, &child.spec.id).await;
                }
            }
        }
        Shutdown::Infinity => {
            let _ = cell.stop_and_wait(reason, None).await;
            let _ = cell.wait(None).await;
        }
    }
}

/// Kills `cell` and waits, boundedly, until it is gone (a kill lands at the actor's next await
/// point; an actor stuck in blocking code never reaches one).
async fn kill(cell: &ActorCell, id: &str) {
    const KILL_WAIT: Duration = Duration::from_secs(10);
    if cell.kill_and_wait(Some(KILL_WAIT)).await.is_err()
        && cell.get_status() != ractor::ActorStatus::Stopped
    {
        tracing::error!(
            child = id,
            "child still running {KILL_WAIT:?} after a kill; abandoned"
        );
    }
}

/// Runs a child's start function; a panic in it is a failed start, not a failed supervisor.
async fn run_start(
    spec: &ChildSpec,
    supervisor: ActorCell,
) -> Result<Option<ChildStarted>, String> {
    let panicked = |what: String| format!("the start function panicked: {what}");
    let start = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (spec.start)(supervisor)))
        .map_err(|panic| {
            panicked(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default(),
            )
        })?;
    tokio::spawn(start)
        .await
        .map_err(|error| panicked(error.to_string()))?
}

impl SupervisorRef {
    /// The supervisor's name.
    pub fn name(&self) -> String {
        self.node.lock().name.clone()
    }

    /// Its actor (to link children to, or to monitor).
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Whether its actor is still running.
    pub fn is_running(&self) -> bool {
        matches!(
            self.actor.get_status(),
            ractor::ActorStatus::Running | ractor::ActorStatus::Starting
        )
    }

    /// Starts `spec` as a new child after the existing ones (refused beyond `max_children` or
    /// for a duplicate id). `Ok(None)` if its start function declined (OTP's `ignore`); it is
    /// then not kept.
    pub async fn start_child(
        &self,
        spec: ChildSpec,
    ) -> Result<Option<ChildStarted>, SupervisorError> {
        self.ask(|reply| SupervisorMsg::StartChild(spec, reply))
            .await
    }

    /// Stops the child `id` per its shutdown spec. A child added with
    /// [`start_child`](Self::start_child) is removed; a static child stays, terminated.
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        self.ask(|reply| SupervisorMsg::TerminateChild(id, reply))
            .await
    }

    /// Starts the terminated static child `id` again.
    pub async fn restart_child(&self, id: &str) -> Result<Option<ChildStarted>, SupervisorError> {
        let id = id.to_string();
        self.ask(|reply| SupervisorMsg::RestartChild(id, reply))
            .await
    }

    /// Removes the terminated static child `id`.
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_string();
        self.ask(|reply| SupervisorMsg::DeleteChild(id, reply))
            .await
    }

    /// Stops supervising the running child `id` (unlinks and forgets it) and returns its actor;
    /// whatever it does next is the caller's business.
    pub async fn release_child(&self, id: &str) -> Result<ActorCell, SupervisorError> {
        let id = id.to_string();
        self.ask(|reply| SupervisorMsg::ReleaseChild(id, reply))
            .await
    }

    /// The running supervisor child `id`, if there is one.
    pub fn child_supervisor(&self, id: &str) -> Option<SupervisorRef> {
        self.node
            .lock()
            .children
            .iter()
            .find(|c| c.info.id == id)
            .and_then(|c| c.supervisor.clone())
    }

    /// The running supervisor at `path` (child supervisor ids from this one down).
    pub fn find(&self, path: &[String]) -> Option<SupervisorRef> {
        path.iter()
            .try_fold(self.clone(), |sup, id| sup.child_supervisor(id))
    }

    /// The tree below this supervisor, as of now.
    pub fn tree(&self) -> SupervisorTree {
        let (mut tree, subs) = {
            let node = self.node.lock();
            let tree = SupervisorTree {
                name: node.name.clone(),
                strategy: node.strategy,
                intensity: node.intensity,
                restarts: node.restarts,
                recent_restarts: node
                    .recent
                    .iter()
                    .filter(|t| t.elapsed() <= node.intensity.period)
                    .count(),
                exit: node.exit.clone(),
                children: node.children.iter().map(|c| c.info.clone()).collect(),
            };
            let subs: Vec<Option<SupervisorRef>> =
                node.children.iter().map(|c| c.supervisor.clone()).collect();
            (tree, subs)
        };
        for (child, sub) in tree.children.iter_mut().zip(subs) {
            child.supervisor = sub.map(|s| s.tree());
        }
        tree
    }

    /// Stops the supervisor: its children stop in reverse start order (each per its shutdown
    /// spec, subtrees first), then it exits. Returns when it is gone.
    pub async fn shutdown(&self) {
        let _ = self
            .actor
            .stop_and_wait(Some("shutdown".to_string()), None)
            .await;
        let _ = self.actor.wait(None).await;
    }

    /// Waits until the supervisor has exited and says why: `Shutdown` with a detail when it
    /// gave up after too many restarts.
    pub async fn wait_exit(&self) -> ExitReason {
        let _ = self.actor.wait(None).await;
        self.node
            .lock()
            .exit
            .clone()
            .unwrap_or_else(|| ExitReason::Failed("the supervisor actor failed".into()))
    }

    /// Why the supervisor exited, if it has.
    pub fn exit(&self) -> Option<ExitReason> {
        if self.is_running() {
            return None;
        }
        self.node.lock().exit.clone()
    }

    async fn ask<T: Send + 'static>(
        &self,
        message: impl FnOnce(Reply<T>) -> SupervisorMsg,
    ) -> Result<T, SupervisorError> {
        let stopped = || SupervisorError::Stopped {
            supervisor: self.name(),
        };
        let (tx, rx) = ractor::concurrency::oneshot();
        self.actor
            .send_message(message(tx.into()))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl fmt::Debug for SupervisorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorRef")
            .field("name", &self.node.lock().name)
            .field("actor", &self.actor.get_id())
            .finish()
    }
}
