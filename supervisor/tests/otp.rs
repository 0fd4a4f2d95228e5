//! OTP supervisor semantics, scenario by scenario (the cases of OTP's own supervisor docs):
//! strategies, restart types, intensity and escalation, shutdown order and timeouts, start
//! failures, dynamic children, backoff. One file so the scenarios read in the order of OTP's
//! supervisor documentation, sharing its test children.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use arbor_supervisor::{
    Backoff, ChildSpec, ChildState, ExitReason, Restart, Shutdown, Strategy, Supervisor,
    SupervisorError, SupervisorRef, SupervisorSpec,
};
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// Everything the test workers did, in order, and how to reach each one.
#[derive(Clone, Default)]
struct Lab {
    log: Arc<Mutex<Vec<String>>>,
    workers: Arc<Mutex<HashMap<String, ActorRef<WorkerMsg>>>>,
}

enum WorkerMsg {
    /// Fail (an error from the handler: an abnormal exit).
    Crash,
    /// Stop normally.
    Exit,
    /// Stay busy in the handler this long (ignoring a stop meanwhile).
    Busy(Duration),
}

struct Worker;

struct WorkerArgs {
    id: String,
    lab: Lab,
    /// Sleep in `post_stop` instead of stopping (ignores shutdown).
    stubborn: bool,
}

struct WorkerState {
    id: String,
    lab: Lab,
    stubborn: bool,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        args.lab.log.lock().push(format!("start {}", args.id));
        args.lab.workers.lock().insert(args.id.clone(), myself);
        Ok(WorkerState {
            id: args.id,
            lab: args.lab,
            stubborn: args.stubborn,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        _state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Crash => Err("boom".into()),
            WorkerMsg::Exit => {
                myself.stop(None);
                Ok(())
            }
            WorkerMsg::Busy(time) => {
                tokio::time::sleep(time).await;
                Ok(())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.stubborn {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        state.lab.log.lock().push(format!("stop {}", state.id));
        Ok(())
    }
}

impl Lab {
    fn worker(&self, id: &str) -> ChildSpec {
        self.worker_with(id, false)
    }

    fn worker_with(&self, id: &str, stubborn: bool) -> ChildSpec {
        let lab = self.clone();
        let child = id.to_string();
        ChildSpec::worker(id, move |supervisor| {
            let args = WorkerArgs {
                id: child.clone(),
                lab: lab.clone(),
                stubborn,
            };
            async move {
                Actor::spawn_linked(None, Worker, args, supervisor)
                    .await
                    .map(|(actor, _)| actor.get_cell())
            }
        })
    }

    fn send(&self, id: &str, message: WorkerMsg) {
        let worker = self.workers.lock().get(id).cloned().unwrap();
        worker.send_message(message).ok().unwrap();
    }

    fn actor_id(&self, id: &str) -> ractor::ActorId {
        self.workers.lock().get(id).unwrap().get_id()
    }

    /// The log from entry `from` on.
    fn since(&self, from: usize) -> Vec<String> {
        self.log.lock()[from..].to_vec()
    }

    fn mark(&self) -> usize {
        self.log.lock().len()
    }
}

/// Waits (up to 10 s) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn lenient(name: &str) -> SupervisorSpec {
    SupervisorSpec::new(name).intensity(100, Duration::from_secs(10))
}

async fn start_abc(lab: &Lab, strategy: Strategy) -> SupervisorRef {
    let spec = lenient("root")
        .strategy(strategy)
        .child(lab.worker("a"))
        .child(lab.worker("b"))
        .child(lab.worker("c"));
    let root = Supervisor::start(spec).await.unwrap();
    assert_eq!(lab.since(0), ["start a", "start b", "start c"]);
    root
}

fn restarts(root: &SupervisorRef) -> Vec<(String, u64)> {
    root.tree()
        .children
        .iter()
        .map(|c| (c.id.clone(), c.restarts))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    let lab = Lab::default();
    let root = start_abc(&lab, Strategy::OneForOne).await;
    let (a, b, c) = (lab.actor_id("a"), lab.actor_id("b"), lab.actor_id("c"));
    let mark = lab.mark();
    lab.send("b", WorkerMsg::Crash);
    eventually("b restarted", || lab.actor_id("b") != b).await;
    eventually("b running", || restarts(&root)[1].1 == 1).await;
    assert_eq!(lab.since(mark), ["start b"]);
    assert_eq!((lab.actor_id("a"), lab.actor_id("c")), (a, c));
    assert_eq!(
        restarts(&root),
        [("a".into(), 0), ("b".into(), 1), ("c".into(), 0)]
    );
    let mark = lab.mark();
    root.shutdown().await;
    assert_eq!(lab.since(mark), ["stop c", "stop b", "stop a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order() {
    let lab = Lab::default();
    let root = start_abc(&lab, Strategy::OneForAll).await;
    let mark = lab.mark();
    lab.send("b", WorkerMsg::Crash);
    eventually("all restarted", || lab.since(mark).len() == 5).await;
    // b failed (no post_stop); c then a are stopped, then a, b, c start in order.
    assert_eq!(
        lab.since(mark),
        ["stop c", "stop a", "start a", "start b", "start c"]
    );
    eventually("tree updated", || {
        root.tree()
            .children
            .iter()
            .all(|c| c.state == ChildState::Running && c.restarts == 1)
    })
    .await;
    assert_eq!(root.tree().restarts, 3);
    root.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let lab = Lab::default();
    let root = start_abc(&lab, Strategy::RestForOne).await;
    let a = lab.actor_id("a");
    let mark = lab.mark();
    lab.send("b", WorkerMsg::Crash);
    eventually("b and c restarted", || lab.since(mark).len() == 3).await;
    assert_eq!(lab.since(mark), ["stop c", "start b", "start c"]);
    assert_eq!(lab.actor_id("a"), a);
    // The last child failing restarts only itself.
    let mark = lab.mark();
    lab.send("c", WorkerMsg::Crash);
    eventually("c restarted", || lab.since(mark).len() == 1).await;
    assert_eq!(lab.since(mark), ["start c"]);
    root.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_and_temporary_children() {
    let lab = Lab::default();
    let spec = lenient("root")
        .child(lab.worker("transient-normal").restart(Restart::Transient))
        .child(lab.worker("transient-crash").restart(Restart::Transient))
        .child(lab.worker("temporary").restart(Restart::Temporary))
        .child(lab.worker("permanent"));
    let root = Supervisor::start(spec).await.unwrap();
    let mark = lab.mark();
    lab.send("transient-normal", WorkerMsg::Exit);
    lab.send("transient-crash", WorkerMsg::Crash);
    lab.send("temporary", WorkerMsg::Crash);
    lab.send("permanent", WorkerMsg::Exit);
    eventually("settled", || {
        let tree = root.tree();
        tree.children.len() == 3 && tree.restarts == 2
    })
    .await;
    let tree = root.tree();
    let state = |id: &str| {
        tree.children
            .iter()
            .find(|c| c.id == id)
            .map(|c| (c.state.clone(), c.restarts))
    };
    // transient + normal exit: not restarted, kept as terminated.
    assert_eq!(
        state("transient-normal"),
        Some((
            ChildState::Terminated {
                reason: ExitReason::Normal
            },
            0
        ))
    );
    // transient + abnormal exit: restarted.
    assert_eq!(state("transient-crash"), Some((ChildState::Running, 1)));
    // temporary: never restarted, removed.
    assert_eq!(state("temporary"), None);
    // permanent: restarted even after a normal exit.
    assert_eq!(state("permanent"), Some((ChildState::Running, 1)));
    let mut started: Vec<String> = lab
        .since(mark)
        .into_iter()
        .filter(|e| e.starts_with("start"))
        .collect();
    started.sort();
    assert_eq!(started, ["start permanent", "start transient-crash"]);
    // A terminated static child can be restarted, then deleted once terminated again.
    root.restart_child("transient-normal").await.unwrap();
    assert!(matches!(
        root.delete_child("transient-normal").await,
        Err(SupervisorError::Running { .. })
    ));
    root.terminate_child("transient-normal").await.unwrap();
    root.delete_child("transient-normal").await.unwrap();
    assert_eq!(root.tree().children.len(), 2);
    root.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_escalates_to_the_parent_which_restarts_the_subtree() {
    let lab = Lab::default();
    let sub = SupervisorSpec::new("sub")
        .intensity(2, Duration::from_secs(30))
        .child(lab.worker("w1"))
        .child(lab.worker("w2"));
    let root = Supervisor::start(
        SupervisorSpec::new("root")
            .intensity(5, Duration::from_secs(30))
            .child(lab.worker("sibling"))
            .child(ChildSpec::supervisor(sub)),
    )
    .await
    .unwrap();
    let sibling = lab.actor_id("sibling");
    for round in 1..=2 {
        let w2 = lab.actor_id("w2");
        lab.send("w2", WorkerMsg::Crash);
        eventually("w2 restarted", || lab.actor_id("w2") != w2).await;
        eventually("tree", || {
            root.tree().find(&["sub".into()]).unwrap().restarts == round
        })
        .await;
    }
    // The third failure in the period is one too many for `sub`: it stops w1 and exits with
    // `shutdown`; root (one_for_one) restarts it, which starts w1 and w2 afresh.
    let mark = lab.mark();
    lab.send("w2", WorkerMsg::Crash);
    eventually("sub restarted", || {
        let tree = root.tree();
        tree.children[1].restarts == 1 && tree.children[1].state == ChildState::Running
    })
    .await;
    eventually("subtree started", || lab.since(mark).len() == 3).await;
    assert_eq!(lab.since(mark), ["stop w1", "start w1", "start w2"]);
    let tree = root.tree();
    assert_eq!(tree.restarts, 1);
    let sub = tree.find(&["sub".into()]).unwrap();
    assert_eq!(sub.restarts, 0, "a fresh incarnation of sub");
    assert!(sub.children.iter().all(|c| c.state == ChildState::Running));
    assert_eq!(
        lab.actor_id("sibling"),
        sibling,
        "one_for_one: the sibling is untouched"
    );
    // The whole tree, flattened.
    let walked: Vec<(Vec<String>, String)> = tree
        .walk()
        .into_iter()
        .map(|(path, child)| (path, child.id.clone()))
        .collect();
    assert_eq!(
        walked,
        [
            (vec!["root".to_string()], "sibling".to_string()),
            (vec!["root".to_string()], "sub".to_string()),
            (
                vec!["root".to_string(), "sub".to_string()],
                "w1".to_string()
            ),
            (
                vec!["root".to_string(), "sub".to_string()],
                "w2".to_string()
            ),
        ]
    );
    root.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_reaching_its_intensity_exits_with_a_clear_reason() {
    let lab = Lab::default();
    // sub tolerates nothing; root tolerates one restart of it.
    let sub = SupervisorSpec::new("sub")
        .intensity(0, Duration::from_secs(30))
        .child(lab.worker("w"));
    let root = Supervisor::start(
        SupervisorSpec::new("root")
            .intensity(1, Duration::from_secs(30))
            .child(lab.worker("other"))
            .child(ChildSpec::supervisor(sub)),
    )
    .await
    .unwrap();
    let w = lab.actor_id("w");
    lab.send("w", WorkerMsg::Crash);
    eventually("sub restarted by root", || {
        lab.actor_id("w") != w && root.tree().restarts == 1
    })
    .await;
    let mark = lab.mark();
    lab.send("w", WorkerMsg::Crash);
    let exit = tokio::time::timeout(Duration::from_secs(10), root.wait_exit())
        .await
        .unwrap();
    let ExitReason::Shutdown(detail) = &exit else {
        panic!("unexpected exit {exit:?}");
    };
    assert!(
        detail.contains("max restart intensity (1 in 30s)") && detail.contains("`sub`"),
        "{detail}"
    );
    assert_eq!(root.exit(), Some(exit));
    // Everything below it was stopped.
    assert_eq!(lab.since(mark), ["stop other"]);
    assert!(matches!(
        root.start_child(lab.worker("late")).await,
        Err(SupervisorError::Stopped { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_shutdown_is_killed_after_its_timeout() {
    let lab = Lab::default();
    let spec = lenient("root")
        .child(lab.worker("a"))
        .child(
            lab.worker_with("stubborn", true)
                .shutdown(Shutdown::Timeout(Duration::from_millis(300))),
        )
        .child(lab.worker("brutal").shutdown(Shutdown::BrutalKill))
        .child(lab.worker("c"));
    let root = Supervisor::start(spec).await.unwrap();
    let stubborn = lab.workers.lock().get("stubborn").cloned().unwrap();
    let mark = lab.mark();
    let started = Instant::now();
    root.shutdown().await;
    let took = started.elapsed();
    // Reverse order; the brutally killed child runs no post_stop, the stubborn one never
    // finishes its own.
    assert_eq!(lab.since(mark), ["stop c", "stop a"]);
    assert!(
        took >= Duration::from_millis(300),
        "killed before its timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(30), "not killed: {took:?}");
    assert_eq!(stubborn.get_status(), ractor::ActorStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_fails_to_start_fails_its_supervisor_with_the_reason() {
    let lab = Lab::default();
    let spec = lenient("root")
        .child(lab.worker("a"))
        .child(ChildSpec::worker("broken", |_supervisor| async move {
            Err::<ractor::ActorCell, _>("no database")
        }))
        .child(lab.worker("never"));
    let error = Supervisor::start(spec).await.unwrap_err();
    assert_eq!(
        error,
        SupervisorError::StartFailed {
            supervisor: "root".into(),
            child: "broken".into(),
            reason: "no database".into(),
        }
    );
    // a was started, then stopped; `never` was never started.
    assert_eq!(lab.since(0), ["start a", "stop a"]);

    // Nested: the failure propagates up through the parent's start.
    let sub = lenient("sub").child(ChildSpec::worker("broken", |_sup| async move {
        Err::<ractor::ActorCell, _>("no disk")
    }));
    let error = Supervisor::start(lenient("top").child(ChildSpec::supervisor(sub)))
        .await
        .unwrap_err();
    let SupervisorError::StartFailed { child, reason, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(child, "sub");
    assert!(reason.contains("no disk"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_children_with_a_maximum() {
    let lab = Lab::default();
    let pool = Supervisor::start(lenient("pool").max_children(2))
        .await
        .unwrap();
    pool.start_child(lab.worker("x")).await.unwrap();
    assert!(matches!(
        pool.start_child(lab.worker("x")).await,
        Err(SupervisorError::DuplicateChild { .. })
    ));
    pool.start_child(lab.worker("y")).await.unwrap();
    assert_eq!(
        pool.start_child(lab.worker("z")).await.unwrap_err(),
        SupervisorError::MaxChildren {
            supervisor: "pool".into(),
            max: 2
        }
    );
    // A dynamic child crashing is restarted like any other.
    let x = lab.actor_id("x");
    lab.send("x", WorkerMsg::Crash);
    eventually("x restarted", || lab.actor_id("x") != x).await;
    // Terminating a dynamic child removes it and makes room.
    pool.terminate_child("x").await.unwrap();
    assert!(matches!(
        pool.terminate_child("x").await,
        Err(SupervisorError::UnknownChild { .. })
    ));
    pool.start_child(lab.worker("z")).await.unwrap();
    let ids: Vec<String> = pool.tree().children.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, ["y", "z"]);
    // Releasing a child stops supervising it without stopping it: it is unlinked, so the
    // pool's shutdown (which stops, and ractor then kills, whatever is linked) spares it.
    let z = pool.release_child("z").await.unwrap();
    assert_eq!(pool.tree().children.len(), 1);
    pool.shutdown().await;
    assert_ne!(z.get_status(), ractor::ActorStatus::Stopped);
    assert!(!lab.since(0).contains(&"stop z".to_string()));
    z.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_delays_restarts_and_failed_restarts_are_retried() {
    let lab = Lab::default();
    let fails_left = Arc::new(AtomicU32::new(0));
    let flaky = {
        let (lab, fails_left) = (lab.clone(), Arc::clone(&fails_left));
        ChildSpec::worker("flaky", move |supervisor| {
            let args = WorkerArgs {
                id: "flaky".into(),
                lab: lab.clone(),
                stubborn: false,
            };
            let fail = fails_left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            async move {
                if fail {
                    return Err("not yet".to_string());
                }
                Actor::spawn_linked(None, Worker, args, supervisor)
                    .await
                    .map(|(actor, _)| actor.get_cell())
                    .map_err(|e| e.to_string())
            }
        })
    };
    let root = Supervisor::start(
        lenient("root")
            .backoff(Backoff {
                initial: Duration::from_millis(150),
                max: Duration::from_secs(1),
            })
            .child(flaky),
    )
    .await
    .unwrap();
    // The next two restarts fail; each failure counts and is retried after the backoff.
    fails_left.store(2, Ordering::Release);
    let before = lab.actor_id("flaky");
    let crashed = Instant::now();
    lab.send("flaky", WorkerMsg::Crash);
    eventually("restarting", || {
        root.tree().children[0].state == ChildState::Restarting
    })
    .await;
    eventually("restarted", || lab.actor_id("flaky") != before).await;
    // 150 ms, then 300 ms and 600 ms for the retries (three restarts in the period).
    assert!(
        crashed.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        crashed.elapsed()
    );
    assert_eq!(fails_left.load(Ordering::Acquire), 0);
    eventually("running", || {
        root.tree().children[0].state == ChildState::Running
    })
    .await;
    root.shutdown().await;

    // A restart that keeps failing exhausts the intensity.
    let lab = Lab::default();
    let always_fails = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&always_fails);
    let first = Arc::new(AtomicU32::new(1));
    let lab2 = lab.clone();
    let root = Supervisor::start(
        SupervisorSpec::new("root")
            .intensity(3, Duration::from_secs(30))
            .child(ChildSpec::worker("doomed", move |supervisor| {
                let args = WorkerArgs {
                    id: "doomed".into(),
                    lab: lab2.clone(),
                    stubborn: false,
                };
                let start = first.swap(0, Ordering::AcqRel) == 1;
                counter.fetch_add(1, Ordering::AcqRel);
                async move {
                    if !start {
                        return Err("still broken".to_string());
                    }
                    Actor::spawn_linked(None, Worker, args, supervisor)
                        .await
                        .map(|(actor, _)| actor.get_cell())
                        .map_err(|e| e.to_string())
                }
            })),
    )
    .await
    .unwrap();
    lab.send("doomed", WorkerMsg::Crash);
    let exit = tokio::time::timeout(Duration::from_secs(10), root.wait_exit())
        .await
        .unwrap();
    assert!(
        exit.to_string().contains("failed to restart: still broken"),
        "{exit}"
    );
    // The first start, then restarts until the 4th restart in the period.
    assert_eq!(always_fails.load(Ordering::Acquire), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_function_may_decline_and_a_panicking_one_is_a_failed_start() {
    let lab = Lab::default();
    // Declining (OTP's `ignore`): no error, kept as terminated, never restarted.
    let root = Supervisor::start(
        lenient("root")
            .child(lab.worker("a"))
            .child(ChildSpec::from_fn(
                "declines",
                arbor_supervisor::ChildKind::Worker,
                |_supervisor| Box::pin(async { Ok(None) }),
            )),
    )
    .await
    .unwrap();
    let tree = root.tree();
    assert_eq!(
        tree.children[1].state,
        ChildState::Terminated {
            reason: ExitReason::Normal
        }
    );
    assert!(matches!(
        root.start_child(ChildSpec::from_fn(
            "dynamic-declines",
            arbor_supervisor::ChildKind::Worker,
            |_supervisor| Box::pin(async { Ok(None) }),
        ))
        .await,
        Ok(None)
    ));
    assert_eq!(root.tree().children.len(), 2);
    // A panic in a start function (in its body or its future) fails that start only.
    let error = root
        .start_child(ChildSpec::worker("panics", |_supervisor| async move {
            if true {
                panic!("bad config");
            }
            Err::<ractor::ActorCell, String>(String::new())
        }))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("panicked"), "{error}");
    let error = root
        .start_child(ChildSpec::from_fn(
            "panics-early",
            arbor_supervisor::ChildKind::Worker,
            |_supervisor| panic!("before the future"),
        ))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("before the future"), "{error}");
    assert!(root.is_running());
    // Releasing a child that is not running leaves it alone.
    assert!(matches!(
        root.release_child("declines").await,
        Err(SupervisorError::UnknownChild { .. })
    ));
    assert_eq!(root.tree().children.len(), 2);
    root.shutdown().await;
}

/// Issue 16.1: `Shutdown::Timeout(T)` kills the child `T` after the shutdown request (it was
/// `2T`: one wait in `stop_and_wait`, then another before the kill), whether the child is busy
/// in a handler or slow in its `post_stop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_kills_one_timeout_after_the_request() {
    const T: Duration = Duration::from_secs(1);
    let lab = Lab::default();
    let spec = lenient("root")
        .child(lab.worker("busy").shutdown(Shutdown::Timeout(T)))
        .child(
            lab.worker_with("stubborn", true)
                .shutdown(Shutdown::Timeout(T)),
        );
    let root = Supervisor::start(spec).await.unwrap();
    lab.send("busy", WorkerMsg::Busy(Duration::from_secs(3600)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    for id in ["busy", "stubborn"] {
        let worker = lab.workers.lock().get(id).cloned().unwrap();
        let started = Instant::now();
        root.terminate_child(id).await.unwrap();
        let took = started.elapsed();
        assert_eq!(worker.get_status(), ractor::ActorStatus::Stopped, "{id}");
        assert!(took >= T, "{id} killed before its timeout: {took:?}");
        // 2T before the fix; the margin is for a loaded machine.
        assert!(
            took < T + T / 2,
            "{id} killed {took:?} after the request, timeout {T:?}"
        );
    }
    root.shutdown().await;
}

/// Issue 16.2: an intensity period of zero is refused (it used to disable the limit: five
/// back-to-back restarts survived intensity 1 with period 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_intensity_period_is_refused_at_start() {
    let lab = Lab::default();
    let spec = SupervisorSpec::new("root")
        .intensity(1, Duration::ZERO)
        .child(lab.worker("a"));
    match Supervisor::start(spec).await {
        Err(SupervisorError::InvalidIntensity {
            supervisor,
            max_restarts,
            period,
        }) => {
            assert_eq!(
                (supervisor.as_str(), max_restarts, period),
                ("root", 1, Duration::ZERO)
            );
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(root) => {
            // What the defect allowed: restarts without limit.
            for _ in 0..5 {
                let before = lab.actor_id("a");
                lab.send("a", WorkerMsg::Crash);
                eventually("restarted", || {
                    lab.workers.lock().get("a").map(|w| w.get_id()) != Some(before)
                })
                .await;
            }
            let exit = root.exit();
            root.shutdown().await;
            panic!("a zero period was accepted; 5 restarts later the root's exit is {exit:?}");
        }
    }
    assert!(
        lab.since(0).is_empty(),
        "a child started: {:?}",
        lab.since(0)
    );
    // A zero limit with a positive period is valid (OTP: the first restart gives up).
    let root = Supervisor::start(
        SupervisorSpec::new("strict")
            .intensity(0, Duration::from_secs(5))
            .child(lab.worker("b")),
    )
    .await
    .unwrap();
    lab.send("b", WorkerMsg::Crash);
    let exit = tokio::time::timeout(Duration::from_secs(10), root.wait_exit())
        .await
        .unwrap();
    assert!(matches!(exit, ExitReason::Shutdown(_)), "{exit}");
}

/// Issue 16.4: a temporary child is gone for good whenever it exits or its supervisor stops
/// it — by a sibling's group restart, or because the supervisor itself gives up — and the
/// exit hook says so each time (the runtime drops the agent from its registry there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_children_exit_for_good_and_say_so() {
    let lab = Lab::default();
    let gone: Arc<Mutex<Vec<(String, ExitReason)>>> = Arc::default();
    let temporary = |id: &str| {
        let (gone, child) = (Arc::clone(&gone), id.to_string());
        lab.worker(id)
            .restart(Restart::Temporary)
            .on_exit(move |reason| gone.lock().push((child.clone(), reason.clone())))
    };
    let root = Supervisor::start(
        SupervisorSpec::new("root")
            .strategy(Strategy::OneForAll)
            .intensity(1, Duration::from_secs(30))
            .child(temporary("t1"))
            .child(lab.worker("p"))
            .child(temporary("t2"))
            .child(temporary("t3")),
    )
    .await
    .unwrap();
    // Its own crash.
    lab.send("t1", WorkerMsg::Crash);
    eventually("t1 gone", || gone.lock().len() == 1).await;
    // A sibling's crash restarts the group; the temporary ones are stopped, not restarted.
    let mark = lab.mark();
    lab.send("p", WorkerMsg::Crash);
    eventually("t2 and t3 gone", || gone.lock().len() == 3).await;
    eventually("p restarted", || {
        lab.since(mark).contains(&"start p".into())
    })
    .await;
    assert!(!lab.since(mark).iter().any(|e| e.starts_with("start t")));
    let ids: Vec<String> = root.tree().children.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, ["p"]);
    let gone_now = gone.lock().clone();
    assert_eq!(gone_now[0].0, "t1");
    assert!(matches!(gone_now[0].1, ExitReason::Failed(_)));
    let mut stopped: Vec<&str> = gone_now[1..].iter().map(|(id, _)| id.as_str()).collect();
    stopped.sort();
    assert_eq!(stopped, ["t2", "t3"]);

    // A supervisor that gives up stops its temporary children for good too.
    let gone: Arc<Mutex<Vec<(String, ExitReason)>>> = Arc::default();
    let hook = Arc::clone(&gone);
    let root = Supervisor::start(
        SupervisorSpec::new("root")
            .intensity(0, Duration::from_secs(30))
            .child(lab.worker("crashy"))
            .child(
                lab.worker("temp")
                    .restart(Restart::Temporary)
                    .on_exit(move |reason| hook.lock().push(("temp".into(), reason.clone()))),
            ),
    )
    .await
    .unwrap();
    lab.send("crashy", WorkerMsg::Crash);
    tokio::time::timeout(Duration::from_secs(10), root.wait_exit())
        .await
        .unwrap();
    assert_eq!(
        gone.lock().clone(),
        [("temp".to_string(), ExitReason::Shutdown(String::new()))]
    );
}

/// Issue 16.8: when a child fails to start during a `one_for_all` group restart, the children
/// already restarted are stopped again and the whole group is retried (OTP); it used to retry
/// only the failed child while the others kept running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_retries_the_whole_group_when_a_restart_fails() {
    let lab = Lab::default();
    let fail_next = Arc::new(AtomicU32::new(0));
    let flaky = {
        let (lab, fail_next) = (lab.clone(), Arc::clone(&fail_next));
        ChildSpec::worker("b", move |supervisor| {
            let args = WorkerArgs {
                id: "b".into(),
                lab: lab.clone(),
                stubborn: false,
            };
            let fail = fail_next
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            let lab = lab.clone();
            async move {
                if fail {
                    lab.log.lock().push("failed b".into());
                    return Err("not yet".to_string());
                }
                Actor::spawn_linked(None, Worker, args, supervisor)
                    .await
                    .map(|(actor, _)| actor.get_cell())
                    .map_err(|e| e.to_string())
            }
        })
    };
    let root = Supervisor::start(
        lenient("root")
            .strategy(Strategy::OneForAll)
            .child(lab.worker("a"))
            .child(flaky)
            .child(lab.worker("c")),
    )
    .await
    .unwrap();
    fail_next.store(1, Ordering::Release);
    let mark = lab.mark();
    lab.send("c", WorkerMsg::Crash);
    eventually("group restarted", || {
        lab.since(mark).len() >= 7
            && root
                .tree()
                .children
                .iter()
                .all(|c| c.state == ChildState::Running)
    })
    .await;
    assert_eq!(
        lab.since(mark),
        [
            "stop b", "stop a", "start a", "failed b", "stop a", "start a", "start b", "start c"
        ]
    );
    root.shutdown().await;
}
