//! Per-call deadlines hold on a loaded machine: a module that never returns is stopped no
//! earlier than its deadline and within the bound `AgentLimits::deadline` states, and the error
//! gives the time it ran.
//!
//! Its own test binary: it saturates the CPUs while it runs, which would slow every other test
//! sharing the process.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arbor_agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};
use arbor_agent::{Behaviour, BehaviourError, Host, HostCalls, HostError};
use arbor_modules::fixtures;

const DEADLINE: Duration = Duration::from_millis(500);
const RUNS: usize = 5;
/// Threads that spin while the test runs: more than the machine's cores, so the epoch ticker
/// and the guest compete for them.
const SPINNERS: usize = 3;

/// Spinning threads, stopped and joined on drop.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl Load {
    fn start(threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut spins = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        spins = std::hint::black_box(spins.wrapping_add(1));
                    }
                    spins
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

struct NoHost;

impl HostCalls for NoHost {
    fn now(&mut self) -> Result<u64, HostError> {
        Err(HostError::NotGranted("now".into()))
    }
    fn random(&mut self) -> Result<u64, HostError> {
        Err(HostError::NotGranted("random".into()))
    }
    fn send(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
        Err(HostError::NotGranted("send".into()))
    }
    fn call_tool(&mut self, name: &str, _: &[u8]) -> Result<Vec<u8>, HostError> {
        Err(HostError::NotGranted(name.into()))
    }
    fn log(&mut self, _: u8, _: &str) {}
}

/// The bound `AgentLimits::deadline` states: the larger of +10 % and +20 ms.
fn latest(deadline: Duration) -> Duration {
    deadline + (deadline / 10).max(Duration::from_millis(20))
}

#[test]
fn a_deadline_holds_within_its_bound_on_a_loaded_machine() {
    let host = WasmHost::new(EngineConfig {
        max_instances: 4,
        ..EngineConfig::default()
    })
    .unwrap();
    let module = host
        .load(&wat::parse_str(fixtures::INFINITE_LOOP).unwrap())
        .unwrap();
    let limits = AgentLimits {
        deadline: DEADLINE,
        ..AgentLimits::default()
    };
    let _load = Load::start(SPINNERS);
    let mut took = Vec::new();
    for _ in 0..RUNS {
        let mut agent =
            WasmBehaviour::init(&host, &module, limits.clone(), Capabilities::none(), b"").unwrap();
        let started = Instant::now();
        let result = agent.handle(b"\xc0", &mut Host::custom(NoHost));
        let measured = started.elapsed();
        let Err(BehaviourError::DeadlineExceeded { limit, elapsed }) = result else {
            panic!("not stopped by the deadline: {result:?}");
        };
        took.push((measured, elapsed));
        assert_eq!(limit, DEADLINE);
        // The error gives the time the call ran: what the caller measured, less entering and
        // leaving the call (with the cores saturated, a preemption or two may fall there).
        assert!(elapsed >= DEADLINE, "error says {elapsed:?}");
        assert!(
            elapsed <= measured && measured - elapsed <= Duration::from_millis(10),
            "error says {elapsed:?}, measured {measured:?}"
        );
    }
    println!("deadline {DEADLINE:?}, stopped after (measured, reported) {took:?}");
    for (measured, _) in &took {
        assert!(*measured >= DEADLINE, "stopped early: {took:?}");
        assert!(
            *measured <= latest(DEADLINE),
            "stopped late (bound {:?}): {took:?}",
            latest(DEADLINE)
        );
    }
}
