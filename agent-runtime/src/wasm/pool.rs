//! Worker threads that run guest calls for modules with imports, so that handling a message does
//! not spawn a thread each time (see the `imports` module for why a second thread is needed).

use std::sync::mpsc;

use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// Idle workers kept beyond this many exit instead (a burst of concurrent calls does not leave
/// threads behind forever).
const MAX_IDLE: usize = 64;

/// Each idle worker, by the sender that wakes it.
static IDLE: Mutex<Vec<mpsc::Sender<Job>>> = Mutex::new(Vec::new());

/// Runs `job` on an idle worker, or a new one. Returns `false` if no thread could be started.
pub(crate) fn run(job: Job) -> bool {
    let mut job = job;
    while let Some(worker) = IDLE.lock().pop() {
        match worker.send(job) {
            Ok(()) => return true,
            // That worker has exited; take the job back and try another.
            Err(mpsc::SendError(returned)) => job = returned,
        }
    }
    let (wake, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("arbor-guest".into())
        .spawn(move || {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                // A panicking job (a wasmtime bug) must not take the worker down with a
                // caller waiting: the job's own channels are dropped by the unwinding.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                {
                    let mut idle = IDLE.lock();
                    if idle.len() >= MAX_IDLE {
                        return;
                    }
                    idle.push(wake.clone());
                }
                next = jobs.recv().ok();
            }
        })
        .is_ok()
}
