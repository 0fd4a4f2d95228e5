//! The arbor demo: `cargo run --release --example demo`.
//!
//! One file on purpose: it is read top to bottom as the story it tells (six chapters in order),
//! and each chapter's checks sit beside the narration that states them.
//!
//! A host embeds arbor and arbor does its whole job, with real components and real crashes:
//!
//! 1. the host builds a `Runtime` on a data directory (WAL + vault), with its metrics endpoint,
//!    its admin endpoint and its evolution arbiter; Wasm `kv` and `counter` agents and a native
//!    `ledger` agent start under three supervisors;
//! 2. they take load from 16 concurrent clients; every reply is checked against a model of the
//!    acknowledged writes;
//! 3. an agent traps; its supervisor restarts it and its state is recovered from its journal;
//! 4. the host process itself is killed with SIGKILL while clients write, and restarted on the
//!    same directory: every acknowledged write is still there;
//! 5. under live load, `kv-v2` is admitted, passes the replay gate, shadows production on
//!    mirrored traffic and is promoted (the pause is measured), `kv-buggy` is rejected with its
//!    diverging inputs, and a promotion is rolled back; then every acknowledged write is read
//!    back;
//! 6. the metrics endpoint and the admin endpoint are checked, and the `arborctl` commands to
//!    try are printed.
//!
//! The data directory is created under the system temp dir (set `ARBOR_DEMO_DIR` to choose
//! one) and kept. The demo exits non-zero if any step did not do what it says. When stdin is a
//! terminal it keeps the host running at the end, for `arborctl` and the metrics endpoint,
//! until Enter (`ARBOR_DEMO_EXIT=1` exits at once).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::io::{BufRead, BufReader, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arbor::admin::{AdminConfig, AdminToken};
use arbor::agent::{AgentError, Behaviour, BehaviourError, BehaviourId, CheckpointPolicy, Host};
use arbor::shadow::{
    Approval, ArbiterConfig, EvaluationOptions, EvaluationStatus, Outcome, Policy, ShadowLimits,
    Stage,
};
use arbor::supervisor::{ChildState, Intensity, SupervisorTree};
use arbor::vault::LineageEvent;
use arbor::{Error, Runtime, Spawn, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};
use arbor_modules::kv::{KvEntry, KvMsg, KvReply, is_unlucky};
use arbor_testkit::SplitMix64;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

type DemoResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The Wasm kv agents and the supervisor they run under.
const KV_AGENTS: [&str; 3] = ["orders", "sessions", "profiles"];
/// The Wasm counter agents (one client each, so every reply is exact).
const COUNTERS: [&str; 2] = ["visits", "likes"];
/// Clients per kv agent.
const KV_CLIENTS: usize = 4;
/// Keys each kv client owns (so each key has one writer and every reply can be checked).
const KEYS_PER_CLIENT: usize = 100;
/// Of those, on `profiles`, keys kv-buggy answers wrongly (so its evaluation meets them).
const UNLUCKY_PER_CLIENT: usize = 10;
/// Ledger clients, each owning its accounts.
const LEDGER_CLIENTS: usize = 2;
/// Writers in the child host of step 4.
const CRASH_WRITERS: usize = 3;

// ---------------------------------------------------------------------------------------------
// The agents' protocols, host side

/// The native ledger agent's protocol.
#[derive(Debug, Serialize, Deserialize)]
enum LedgerMsg {
    Deposit { account: String, amount: u64 },
    Balance { account: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct LedgerReply {
    balance: u64,
}

/// A native behaviour: balances per account. Native agents are journaled, checkpointed,
/// supervised and recovered exactly like Wasm ones.
#[derive(Default)]
struct Ledger {
    balances: BTreeMap<String, u64>,
}

impl Behaviour for Ledger {
    fn handle(&mut self, input: &[u8], _host: &mut Host) -> Result<Vec<u8>, BehaviourError> {
        let msg: LedgerMsg =
            rmp_serde::from_slice(input).map_err(|e| BehaviourError::BadInput(e.to_string()))?;
        let balance = match msg {
            LedgerMsg::Deposit { account, amount } => {
                let balance = self.balances.entry(account).or_default();
                *balance = balance.saturating_add(amount);
                *balance
            }
            LedgerMsg::Balance { account } => self.balances.get(&account).copied().unwrap_or(0),
        };
        rmp_serde::to_vec_named(&LedgerReply { balance })
            .map_err(|e| BehaviourError::Trap(e.to_string()))
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
        rmp_serde::to_vec_named(&self.balances).map_err(|e| BehaviourError::Trap(e.to_string()))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), BehaviourError> {
        self.balances = rmp_serde::from_slice(state)
            .map_err(|e| BehaviourError::StateRejected(e.to_string()))?;
        Ok(())
    }

    fn describe(&self) -> String {
        "native ledger".into()
    }
}

// ---------------------------------------------------------------------------------------------
// The host's runtime

fn lenient() -> SupervisorOptions {
    SupervisorOptions {
        intensity: Intensity {
            max_restarts: 100,
            period: Duration::from_secs(10),
        },
        ..SupervisorOptions::default()
    }
}

/// The endpoints a runtime serves (the child host of step 4 serves none).
struct Endpoints {
    metrics: SocketAddr,
    admin: SocketAddr,
    token_file: PathBuf,
}

/// The host's whole embedding of arbor. Recovers every agent the directory holds.
async fn start_runtime(dir: &Path, endpoints: Option<&Endpoints>) -> Result<Runtime, Error> {
    let mut builder = Runtime::builder()
        .data_dir(dir)
        .checkpoints(CheckpointPolicy {
            every_records: 2_000,
            every: Duration::from_secs(2),
            keep: 3,
            ..CheckpointPolicy::default()
        })
        .evolution(ArbiterConfig {
            approval: Approval::Suggest,
            policy: Policy {
                // Judged on answers, state and fuel: on a shared 2-core machine latency says
                // more about the neighbours than about the module.
                latency_tolerance: 5.0,
                ..Policy::default()
            },
            limits: ShadowLimits {
                max_evaluations: 3,
                deadline: Duration::from_secs(90),
                ..ShadowLimits::default()
            },
            watch: Duration::from_secs(3),
            watch_samples: 500,
            watch_max: Duration::from_secs(60),
            ..ArbiterConfig::default()
        })
        .root(lenient())
        .supervisor("stores", lenient())
        .supervisor("counters", lenient())
        .supervisor("natives", lenient())
        .native("ledger", || Box::new(Ledger::default()));
    if let Some(endpoints) = endpoints {
        let token = AdminToken::from_file(&endpoints.token_file)
            .map_err(|e| Error::Admin(e.to_string()))?;
        builder = builder
            .metrics(endpoints.metrics)
            .admin(AdminConfig::new(endpoints.admin, token));
    }
    builder.build().await
}

/// `preferred` if it is free on loopback, else any free port (the kernel's choice).
fn loopback(preferred: u16) -> SocketAddr {
    let addr = SocketAddr::from(([127, 0, 0, 1], preferred));
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

/// Writes a fresh admin token to `path`, readable by its owner only (`AdminToken::from_file`
/// refuses anything else).
fn write_token(path: &Path) -> DemoResult<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Clients and the model of what they were acknowledged

/// One kv client: owns `keys` on `agent`, and knows what each holds after every acknowledged
/// write.
struct KvClient {
    agent: &'static str,
    keys: Vec<String>,
    /// The acknowledged value of each key (`None`: absent).
    known: BTreeMap<String, Option<String>>,
    /// Keys whose last write failed without an answer: either outcome is possible until read.
    unsure: BTreeSet<String>,
    /// Requests sent so far (the first pass over the keys stores each).
    sent: u64,
}

impl KvClient {
    fn new(agent: &'static str, client: usize) -> KvClient {
        let names = (0..).map(|i| format!("{agent}-c{client}-k{i}"));
        let keys = if agent == "profiles" {
            let unlucky = names.clone().filter(|key| is_unlucky(key));
            let plain = names.filter(|key| !is_unlucky(key));
            unlucky
                .take(UNLUCKY_PER_CLIENT)
                .chain(plain.take(KEYS_PER_CLIENT - UNLUCKY_PER_CLIENT))
                .collect()
        } else {
            names.take(KEYS_PER_CLIENT).collect()
        };
        KvClient {
            agent,
            keys,
            known: BTreeMap::new(),
            unsure: BTreeSet::new(),
            sent: 0,
        }
    }

    fn present(&self, key: &str) -> Option<bool> {
        if self.unsure.contains(key) {
            return None;
        }
        Some(self.known.get(key).is_some_and(Option::is_some))
    }

    /// One request (the first pass stores every key); checks the reply against the model.
    async fn step(&mut self, runtime: &Runtime, rng: &mut SplitMix64) -> Step {
        let n = self.sent;
        self.sent += 1;
        let key = if (n as usize) < self.keys.len() {
            self.keys[n as usize].clone()
        } else {
            self.keys[rng.below(self.keys.len() as u64) as usize].clone()
        };
        let roll = if (n as usize) < self.keys.len() {
            99
        } else {
            rng.below(100)
        };
        let msg = match roll {
            0..35 => KvMsg::Get { key: key.clone() },
            35..45 => KvMsg::Delete { key: key.clone() },
            45..55 => KvMsg::Scan {
                prefix: format!(
                    "{}-k{}",
                    key.rsplit_once("-k").map_or("", |p| p.0),
                    1 + rng.below(9)
                ),
                limit: 5,
            },
            _ => KvMsg::Put {
                key: key.clone(),
                value: format!("v{n}-{}", rng.below(1_000_000)),
            },
        };
        let started = Instant::now();
        let reply = runtime.call::<_, KvReply>(self.agent, &msg).await;
        let took = started.elapsed();
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                if !matches!(msg, KvMsg::Get { .. } | KvMsg::Scan { .. }) {
                    self.unsure.insert(key);
                }
                return Step::Failed(format!("{}: {error}", self.agent));
            }
        };
        let wrong = |expected: String| {
            Step::Wrong(format!(
                "{}: {msg:?} answered {reply:?}, expected {expected}",
                self.agent
            ))
        };
        match (&msg, &reply) {
            (KvMsg::Get { key }, KvReply::Value { value }) => {
                if !self.unsure.remove(key) {
                    let expected = self.known.get(key).cloned().flatten();
                    if *value != expected {
                        return wrong(format!("{expected:?}"));
                    }
                }
                self.known.insert(key.clone(), value.clone());
            }
            (KvMsg::Put { key, value }, KvReply::Stored { replaced }) => {
                if self
                    .present(key)
                    .is_some_and(|present| present != *replaced)
                {
                    return wrong(format!("replaced: {}", !replaced));
                }
                self.unsure.remove(key);
                self.known.insert(key.clone(), Some(value.clone()));
            }
            (KvMsg::Delete { key }, KvReply::Deleted { existed }) => {
                if self.present(key).is_some_and(|present| present != *existed) {
                    return wrong(format!("existed: {}", !existed));
                }
                self.unsure.remove(key);
                self.known.insert(key.clone(), None);
            }
            (KvMsg::Scan { prefix, limit }, KvReply::Entries { entries }) => {
                if !self.unsure.iter().any(|k| k.starts_with(prefix.as_str())) {
                    let expected: Vec<KvEntry> = self
                        .known
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                        .filter_map(|(k, v)| {
                            v.as_ref().map(|v| KvEntry {
                                key: k.clone(),
                                value: v.clone(),
                            })
                        })
                        .take(*limit as usize)
                        .collect();
                    if *entries != expected {
                        return wrong(format!("{expected:?}"));
                    }
                }
            }
            _ => return wrong("a reply of the request's kind".into()),
        }
        Step::Ok(took)
    }

    /// Reads every key back; the number checked, or the first difference.
    async fn verify(&self, runtime: &Runtime) -> Result<usize, String> {
        let mut checked = 0;
        for key in &self.keys {
            if self.unsure.contains(key) {
                continue;
            }
            let expected = self.known.get(key).cloned().flatten();
            let got = get(runtime, self.agent, key).await?;
            if got != expected {
                return Err(format!(
                    "{}: {key} holds {got:?}, acknowledged {expected:?}",
                    self.agent
                ));
            }
            checked += 1;
        }
        Ok(checked)
    }
}

/// `Get` with retries while the agent restarts.
async fn get(runtime: &Runtime, agent: &str, key: &str) -> Result<Option<String>, String> {
    let msg = KvMsg::Get { key: key.into() };
    for _ in 0..500 {
        match runtime.call::<_, KvReply>(agent, &msg).await {
            Ok(KvReply::Value { value }) => return Ok(value),
            Ok(other) => return Err(format!("{agent}: Get answered {other:?}")),
            Err(Error::Restarting(_) | Error::Agent(AgentError::Stopped(_))) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => return Err(format!("{agent}: {error}")),
        }
    }
    Err(format!("{agent} did not come back"))
}

/// A counter client: the only one adding to its counter, so each reply is exact.
struct CounterClient {
    agent: &'static str,
    count: i64,
}

impl CounterClient {
    async fn step(&mut self, runtime: &Runtime, rng: &mut SplitMix64) -> Step {
        let by = 1 + rng.below(9) as i64;
        let started = Instant::now();
        match runtime
            .call::<_, CounterReply>(self.agent, &CounterMsg::Inc { by })
            .await
        {
            Ok(reply) if reply.count == self.count + by => {
                self.count = reply.count;
                Step::Ok(started.elapsed())
            }
            Ok(reply) => Step::Wrong(format!(
                "{}: count {} after +{by}, expected {}",
                self.agent,
                reply.count,
                self.count + by
            )),
            Err(error) => Step::Failed(format!("{}: {error}", self.agent)),
        }
    }
}

/// A ledger client: deposits into its own accounts.
struct LedgerClient {
    accounts: BTreeMap<String, u64>,
}

impl LedgerClient {
    fn new(client: usize) -> LedgerClient {
        LedgerClient {
            accounts: (0..20).map(|i| (format!("acct-{client}-{i}"), 0)).collect(),
        }
    }

    async fn step(&mut self, runtime: &Runtime, rng: &mut SplitMix64) -> Step {
        let index = rng.below(self.accounts.len() as u64) as usize;
        let Some((account, balance)) = self.accounts.iter_mut().nth(index) else {
            return Step::Wrong(format!("no account #{index}"));
        };
        let amount = 1 + rng.below(500);
        let msg = LedgerMsg::Deposit {
            account: account.clone(),
            amount,
        };
        let started = Instant::now();
        match runtime.call::<_, LedgerReply>("ledger", &msg).await {
            Ok(reply) if reply.balance == *balance + amount => {
                *balance = reply.balance;
                Step::Ok(started.elapsed())
            }
            Ok(reply) => Step::Wrong(format!(
                "ledger: {account} balance {} after +{amount}, expected {}",
                reply.balance,
                *balance + amount
            )),
            Err(error) => Step::Failed(format!("ledger: {error}")),
        }
    }
}

enum Step {
    Ok(Duration),
    /// The call failed (no answer): counted, the client goes on.
    Failed(String),
    /// The answer contradicts the acknowledged writes: the demo fails.
    Wrong(String),
}

enum Client {
    Kv(KvClient),
    Counter(CounterClient),
    Ledger(LedgerClient),
}

/// What a client did during one load phase.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: Vec<String>,
    wrong: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.failed.extend(other.failed);
        self.wrong.extend(other.wrong);
    }

    fn percentile(&mut self, q: f64) -> Duration {
        self.latencies.sort_unstable();
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        self.latencies[((last as f64) * q).round() as usize]
    }
}

/// Every client of the demo, with their models; they run in load phases and keep their models
/// between phases (and across the host's restarts).
struct Clients(Vec<Client>);

impl Clients {
    fn new() -> Clients {
        let mut clients = Vec::new();
        for agent in KV_AGENTS {
            for client in 0..KV_CLIENTS {
                clients.push(Client::Kv(KvClient::new(agent, client)));
            }
        }
        for agent in COUNTERS {
            clients.push(Client::Counter(CounterClient { agent, count: 0 }));
        }
        for client in 0..LEDGER_CLIENTS {
            clients.push(Client::Ledger(LedgerClient::new(client)));
        }
        Clients(clients)
    }

    /// Starts every client on `runtime` until [`Load::stop`].
    fn start(self, runtime: &Runtime, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let tasks = self
            .0
            .into_iter()
            .enumerate()
            .map(|(i, mut client)| {
                let (runtime, stop, calls) =
                    (runtime.clone(), Arc::clone(&stop), Arc::clone(&calls));
                tokio::spawn(async move {
                    let mut rng = SplitMix64::new(seed ^ ((i as u64) << 32));
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Acquire) && tally.wrong.is_empty() {
                        let step = match &mut client {
                            Client::Kv(kv) => kv.step(&runtime, &mut rng).await,
                            Client::Counter(counter) => counter.step(&runtime, &mut rng).await,
                            Client::Ledger(ledger) => ledger.step(&runtime, &mut rng).await,
                        };
                        match step {
                            Step::Ok(took) => tally.latencies.push(took),
                            Step::Failed(why) => {
                                tally.failed.push(why);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Step::Wrong(why) => tally.wrong.push(why),
                        }
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                    (client, tally)
                })
            })
            .collect();
        Load {
            stop,
            calls,
            tasks,
            started: Instant::now(),
        }
    }

    fn kv(&self) -> impl Iterator<Item = &KvClient> {
        self.0.iter().filter_map(|client| match client {
            Client::Kv(kv) => Some(kv),
            _ => None,
        })
    }

    fn counter(&self, agent: &str) -> Option<&CounterClient> {
        self.0.iter().find_map(|client| match client {
            Client::Counter(counter) if counter.agent == agent => Some(counter),
            _ => None,
        })
    }

    fn counter_mut(&mut self, agent: &str) -> Option<&mut CounterClient> {
        self.0.iter_mut().find_map(|client| match client {
            Client::Counter(counter) if counter.agent == agent => Some(counter),
            _ => None,
        })
    }

    /// Reads back every key, count and balance the clients were acknowledged.
    async fn verify(&self, runtime: &Runtime) -> DemoResult<usize> {
        let mut checked = 0;
        for client in &self.0 {
            match client {
                Client::Kv(kv) => checked += kv.verify(runtime).await?,
                Client::Counter(counter) => {
                    let reply: CounterReply = runtime.call(counter.agent, &CounterMsg::Get).await?;
                    if reply.count != counter.count {
                        return Err(format!(
                            "{} holds {}, acknowledged {}",
                            counter.agent, reply.count, counter.count
                        )
                        .into());
                    }
                    checked += 1;
                }
                Client::Ledger(ledger) => {
                    for (account, balance) in &ledger.accounts {
                        let msg = LedgerMsg::Balance {
                            account: account.clone(),
                        };
                        let reply: LedgerReply = runtime.call("ledger", &msg).await?;
                        if reply.balance != *balance {
                            return Err(format!(
                                "ledger: {account} holds {}, acknowledged {balance}",
                                reply.balance
                            )
                            .into());
                        }
                        checked += 1;
                    }
                }
            }
        }
        Ok(checked)
    }
}

/// Clients running.
struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<(Client, Tally)>>,
    started: Instant,
}

impl Load {
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn stop(self) -> DemoResult<(Clients, Tally, Duration)> {
        self.stop.store(true, Ordering::Release);
        let mut clients = Vec::new();
        let mut tally = Tally::default();
        for task in self.tasks {
            let (client, client_tally) = task.await?;
            clients.push(client);
            tally.merge(client_tally);
        }
        Ok((Clients(clients), tally, self.started.elapsed()))
    }
}

// ---------------------------------------------------------------------------------------------
// Narration

/// The demo's record: checks made and the numbers for the summary.
#[derive(Default)]
struct Story {
    checks: usize,
    numbers: Vec<(String, String)>,
}

impl Story {
    fn check(&mut self, ok: bool, what: impl Display) -> DemoResult<()> {
        if ok {
            self.checks += 1;
            println!("   ✓ {what}");
            Ok(())
        } else {
            Err(format!("check failed: {what}").into())
        }
    }

    /// [`check`](Self::check), showing `why` if it fails.
    fn check_or(
        &mut self,
        ok: bool,
        what: impl Display,
        why: impl std::fmt::Debug,
    ) -> DemoResult<()> {
        if ok {
            self.check(ok, what)
        } else {
            self.check(ok, format!("{what} — {why:?}"))
        }
    }

    fn number(&mut self, what: impl Into<String>, value: impl Into<String>) {
        self.numbers.push((what.into(), value.into()));
    }
}

/// `": <the first item>"`, or nothing: what a check shows about its failures.
fn first_of(items: &[String]) -> String {
    items
        .first()
        .map_or(String::new(), |item| format!(": {item}"))
}

fn chapter(n: usize, title: &str) {
    println!("\n\x1b[1m{n}. {title}\x1b[0m");
}

fn ms(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1e3)
    } else {
        format!("{ms:.1} ms")
    }
}

fn style(template: &str) -> DemoResult<ProgressStyle> {
    Ok(ProgressStyle::with_template(template)?.progress_chars("█▉▊▋▌▍▎▏ "))
}

/// Prints the supervision tree: supervisors, agents, states, restarts.
fn print_tree(tree: &SupervisorTree) {
    fn walk(tree: &SupervisorTree, depth: usize) {
        println!(
            "   {:indent$}{} ({}, {} restarts)",
            "",
            tree.name,
            tree.strategy,
            tree.restarts,
            indent = depth * 2
        );
        for child in &tree.children {
            match &child.supervisor {
                Some(subtree) => walk(subtree, depth + 1),
                None => {
                    let state = match &child.state {
                        ChildState::Running => "running".to_string(),
                        ChildState::Restarting => "restarting".to_string(),
                        ChildState::Terminated { reason } => format!("terminated: {reason:?}"),
                    };
                    println!(
                        "   {:indent$}- {} [{state}, restarted {}×]",
                        "",
                        child.id,
                        child.restarts,
                        indent = (depth + 1) * 2
                    );
                }
            }
        }
    }
    walk(tree, 0);
}

/// Runs `load` for `duration` behind a progress bar; returns the clients and what they did.
/// Spawns `cache` with a poor configuration (200 entries, LRU, admitted at once: its reads walk
/// far), runs one cycle of two candidates from a seeded search over its parameters under
/// traffic, and returns the report. An approved candidate is left awaiting a person.
async fn evolution_cycle(runtime: &Runtime) -> DemoResult<arbor::evolve::CycleReport> {
    use arbor::evolve::{
        EvolutionLoop, Genetic, GeneticConfig, LoopConfig, ParameterSearch, Params, Value,
        space_of, with_params,
    };
    use arbor_modules::cache::{CacheMsg, CacheReply};
    let mut params = Params::default();
    params.0.insert("capacity".into(), Value::Int(200));
    params
        .0
        .insert("policy".into(), Value::Choice("lru".into()));
    params.0.insert("admit_after".into(), Value::Int(1));
    let poor = with_params(arbor_modules::CACHE, &params)?;
    runtime
        .spawn(Spawn::wasm_bytes("cache", poor.clone()).under("stores"))
        .await?;
    for key in 0..50 {
        let put = CacheMsg::Put {
            key,
            value: format!("record {key}"),
        };
        let _: CacheReply = runtime.call("cache", &put).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (runtime, stop) = (runtime.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Acquire) {
                let key = if n.is_multiple_of(4) {
                    10 + n % 40
                } else {
                    n % 5
                };
                let _ = runtime
                    .call::<_, CacheReply>("cache", &CacheMsg::Get { key })
                    .await;
                n = n.wrapping_add(1);
            }
        })
    };
    let genetic = Genetic::new(
        space_of(arbor_modules::CACHE)?,
        GeneticConfig {
            population: 4,
            seed: 1,
            ..GeneticConfig::default()
        },
    )?;
    let search = ParameterSearch::new(&poor, genetic)?;
    let config = LoopConfig {
        options: EvaluationOptions {
            objectives: vec!["fuel:better:0.02".parse()?],
            ..EvaluationOptions::default()
        },
        candidates_per_cycle: 2,
        evaluation_deadline: Duration::from_secs(90),
        ..LoopConfig::new("cache")
    };
    let mut evolution =
        EvolutionLoop::new(runtime.arbiter().clone(), config, vec![Box::new(search)])?;
    let report = evolution.cycle().await;
    stop.store(true, Ordering::Release);
    traffic.await?;
    Ok(report?)
}

async fn run_for(
    load: Load,
    duration: Duration,
    label: &str,
) -> DemoResult<(Clients, Tally, Duration)> {
    let bar = ProgressBar::new(duration.as_millis() as u64)
        .with_style(style("   {prefix} [{bar:30}] {elapsed_precise} {msg}")?);
    bar.set_prefix(label.to_string());
    let started = Instant::now();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let calls = load.calls();
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{calls} calls ({:.0}/s)",
            calls as f64 / started.elapsed().as_secs_f64()
        ));
    }
    bar.finish_and_clear();
    load.stop().await
}

// ---------------------------------------------------------------------------------------------
// Step 4's child host

/// The child host: recovers the runtime on `dir`, then writers put keys into `orders` and one
/// adds to `likes`, printing every acknowledged write, until it is killed.
async fn child_host(dir: &Path) -> DemoResult<()> {
    let started = Instant::now();
    let runtime = start_runtime(dir, None).await?;
    println!(
        "READY {} {}",
        runtime.agents().len(),
        started.elapsed().as_micros()
    );
    let mut tasks = Vec::new();
    for writer in 0..CRASH_WRITERS {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0u64.. {
                let key = format!("orders-crash-w{writer}-k{n}");
                let value = format!("written-before-the-kill-{n}");
                println!("TRY {key} {value}");
                let put = KvMsg::Put {
                    key: key.clone(),
                    value: value.clone(),
                };
                match runtime.call::<_, KvReply>("orders", &put).await {
                    Ok(KvReply::Stored { .. }) => println!("ACK {key} {value}"),
                    Ok(other) => println!("WRONG {key} {other:?}"),
                    Err(error) => println!("FAILED {key} {error}"),
                }
            }
        }));
    }
    let likes = runtime.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            match likes
                .call::<_, CounterReply>("likes", &CounterMsg::Inc { by: 1 })
                .await
            {
                Ok(reply) => println!("COUNT likes {}", reply.count),
                Err(error) => println!("FAILED likes {error}"),
            }
        }
    }));
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// What the parent learned from the child's output.
#[derive(Default)]
struct CrashLog {
    acked: BTreeMap<String, String>,
    /// Per writer: the last write tried and not acknowledged when the kill came.
    in_flight: BTreeMap<String, String>,
    likes_acked: Option<i64>,
    problems: Vec<String>,
}

impl CrashLog {
    fn read(&mut self, line: &str) {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("TRY"), Some(key), Some(value)) => {
                self.in_flight
                    .insert(writer_of(key), format!("{key} {value}"));
            }
            (Some("ACK"), Some(key), Some(value)) => {
                self.in_flight.remove(&writer_of(key));
                self.acked.insert(key.into(), value.into());
            }
            (Some("COUNT"), Some("likes"), Some(count)) => {
                self.likes_acked = count.parse().ok().or(self.likes_acked);
            }
            (Some("WRONG" | "FAILED"), _, _) => self.problems.push(line.into()),
            _ => {}
        }
    }
}

fn writer_of(key: &str) -> String {
    key.split("-k").next().unwrap_or(key).to_string()
}

// ---------------------------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(tokio) => tokio,
        Err(error) => {
            eprintln!("demo: cannot start tokio: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = if args.next().as_deref() == Some("--child-host") {
        match args.next() {
            Some(dir) => tokio.block_on(child_host(Path::new(&dir))),
            None => Err("--child-host needs a directory".into()),
        }
    } else {
        tokio.block_on(demo())
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\n\x1b[1;31mdemo FAILED:\x1b[0m {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn demo() -> DemoResult<()> {
    let demo_started = Instant::now();
    let mut story = Story::default();
    let data_dir = match std::env::var_os("ARBOR_DEMO_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("arbor-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data_dir)?;
    let endpoints = Endpoints {
        metrics: loopback(9464),
        admin: loopback(9465),
        token_file: data_dir.join("admin.token"),
    };
    write_token(&endpoints.token_file)?;
    println!(
        "\x1b[1marbor demo\x1b[0m — data directory: {}",
        data_dir.display()
    );
    let agent_dir = data_dir.join("host");

    // 1. The host embeds arbor.
    chapter(
        1,
        "A host embeds arbor: a Runtime on a data directory, agents under supervisors",
    );
    let started = Instant::now();
    let runtime = start_runtime(&agent_dir, Some(&endpoints)).await?;
    println!(
        "   Runtime::builder().data_dir(..).metrics(..).admin(..).evolution(..) built in {}",
        ms(started.elapsed())
    );
    for agent in KV_AGENTS {
        runtime
            .spawn(Spawn::wasm_bytes(agent, arbor_modules::KV).under("stores"))
            .await?;
    }
    for agent in COUNTERS.iter().chain(&["flaky"]) {
        runtime
            .spawn(Spawn::wasm_bytes(*agent, arbor_modules::COUNTER).under("counters"))
            .await?;
    }
    runtime
        .spawn(Spawn::native("ledger", "ledger").under("natives"))
        .await?;
    print_tree(&runtime.tree());
    story.check(
        runtime.agents().len() == KV_AGENTS.len() + COUNTERS.len() + 2,
        "3 Wasm kv agents, 3 Wasm counters and a native ledger are running",
    )?;

    // 2. Load.
    chapter(
        2,
        "They take load: 16 clients, every reply checked against the acknowledged writes",
    );
    println!(
        "   {} kv clients (Get/Put/Delete/Scan on keys each owns), {} counter clients, {} ledger clients; each call is acknowledged once journaled and fdatasync'd (group commit)",
        KV_AGENTS.len() * KV_CLIENTS,
        COUNTERS.len(),
        LEDGER_CLIENTS
    );
    let load = Clients::new().start(&runtime, 1);
    let (clients, mut tally, took) = run_for(load, Duration::from_secs(4), "load").await?;
    let calls = tally.latencies.len();
    let throughput = calls as f64 / took.as_secs_f64();
    let (p50, p99) = (tally.percentile(0.50), tally.percentile(0.99));
    println!(
        "   {calls} calls answered in {:.1} s: {throughput:.0} calls/s, latency p50 {} p99 {}",
        took.as_secs_f64(),
        ms(p50),
        ms(p99)
    );
    story.number(
        "load: calls/s (16 clients, fdatasync per group)",
        format!("{throughput:.0}"),
    );
    story.number(
        "load: call latency p50 / p99",
        format!("{} / {}", ms(p50), ms(p99)),
    );
    story.check(
        tally.wrong.is_empty(),
        format!(
            "every reply matched the model of acknowledged writes{}",
            first_of(&tally.wrong)
        ),
    )?;
    story.check(
        tally.failed.is_empty(),
        format!("no call failed{}", first_of(&tally.failed)),
    )?;
    let unlucky = clients
        .kv()
        .filter(|kv| kv.agent == "profiles")
        .flat_map(|kv| kv.known.iter())
        .filter(|(key, value)| value.is_some() && is_unlucky(key))
        .count();
    story.check(
        unlucky > 0,
        format!("profiles holds {unlucky} keys that kv-buggy (step 5) answers wrongly"),
    )?;

    // 3. A trap and a restart.
    chapter(
        3,
        "An agent traps; its supervisor restarts it and its state comes back",
    );
    for _ in 0..100 {
        runtime
            .call::<_, CounterReply>("flaky", &CounterMsg::Inc { by: 1 })
            .await?;
    }
    let trapped = Instant::now();
    let crash = runtime
        .call::<_, CounterReply>("flaky", &CounterMsg::Fail)
        .await;
    println!(
        "   flaky acknowledged 100 increments, then `Fail` makes its Wasm module panic: {}",
        crash
            .as_ref()
            .err()
            .map_or("(no error!)".to_string(), |e| e.to_string())
    );
    story.check(crash.is_err(), "the trap reached the caller as an error")?;
    let recovered = loop {
        match runtime
            .call::<_, CounterReply>("flaky", &CounterMsg::Get)
            .await
        {
            Ok(reply) => break reply.count,
            Err(Error::Restarting(_) | Error::Agent(_))
                if trapped.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    let restart = trapped.elapsed();
    let restarts = runtime
        .tree()
        .walk()
        .into_iter()
        .find(|(_, child)| child.id == "flaky")
        .map_or(0, |(_, child)| child.restarts);
    println!(
        "   the `counters` supervisor restarted it (checkpoint + journal replay); answering again after {}",
        ms(restart)
    );
    story.number("trap → restarted and answering", ms(restart));
    story.check(restarts == 1, "the supervisor counts one restart of flaky")?;
    story.check(
        recovered == 100,
        format!("flaky's count after the restart is {recovered}, its 100 acknowledged increments"),
    )?;

    // 4. kill -9 of the host.
    chapter(
        4,
        "The host process is killed with SIGKILL mid-write and restarted on its directory",
    );
    runtime.shutdown().await?;
    drop(runtime);
    let exe = std::env::current_exe()?;
    let mut child = Command::new(&exe)
        .arg("--child-host")
        .arg(&agent_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("the child host has no stdout")?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = lines_rx.recv_timeout(Duration::from_secs(60))?;
    let ready: Vec<&str> = ready.split(' ').collect();
    let (child_agents, child_recovery) = match ready.as_slice() {
        ["READY", agents, micros] => (
            agents.parse::<usize>()?,
            Duration::from_micros(micros.parse()?),
        ),
        _ => return Err(format!("the child host said {ready:?}").into()),
    };
    println!(
        "   child host pid {} recovered {child_agents} agents in {}; 3 writers put keys into `orders`, one adds to `likes`",
        child.id(),
        ms(child_recovery)
    );
    let target = 3_000;
    let bar = ProgressBar::new(target).with_style(style(
        "   acknowledged writes [{bar:30}] {pos}/{len} then SIGKILL",
    )?);
    let mut log = CrashLog::default();
    while (log.acked.len() as u64) < target {
        let line = lines_rx.recv_timeout(Duration::from_secs(30))?;
        log.read(&line);
        bar.set_position(log.acked.len() as u64);
    }
    child.kill()?; // SIGKILL
    let status = child.wait()?;
    bar.finish_and_clear();
    // Lines the child wrote before it died are still in the pipe.
    let _ = reader.join();
    for line in lines_rx.try_iter() {
        log.read(&line);
    }
    println!(
        "   killed ({status}) after {} acknowledged puts and {} acknowledged increments; {} writes were in flight",
        log.acked.len(),
        log.likes_acked.unwrap_or(0),
        log.in_flight.len()
    );
    story.check(
        log.problems.is_empty(),
        format!(
            "the child's writes all succeeded{}",
            first_of(&log.problems)
        ),
    )?;
    let started = Instant::now();
    let runtime = start_runtime(&agent_dir, Some(&endpoints)).await?;
    let recovery = started.elapsed();
    println!(
        "   restarted: {} agents recovered (newest checkpoint + WAL replay) in {}",
        runtime.agents().len(),
        ms(recovery)
    );
    story.number(
        "host kill -9 → restarted, all agents recovered",
        ms(recovery),
    );
    // Where that time goes: each module is compiled (Cranelift) when its first agent recovers.
    let compiling = Instant::now();
    let scratch = arbor::agent::AgentSystem::builder().build()?;
    scratch.add_module("kv", arbor_modules::KV)?;
    scratch.add_module("counter", arbor_modules::COUNTER)?;
    let compiling = compiling.elapsed();
    scratch.shutdown().await?;
    println!(
        "   (compiling the kv and counter modules alone takes {} of it: there is no compilation cache yet)",
        ms(compiling)
    );
    story.check(
        runtime.agents().len() == child_agents,
        "every agent is back",
    )?;
    let mut missing = Vec::new();
    for (key, value) in &log.acked {
        if get(&runtime, "orders", key).await?.as_deref() != Some(value.as_str()) {
            missing.push(key.clone());
        }
    }
    story.check(
        missing.is_empty(),
        format!(
            "all {} puts acknowledged before the kill are there{}",
            log.acked.len(),
            first_of(&missing)
        ),
    )?;
    let mut kept_in_flight = 0;
    for write in log.in_flight.values() {
        if let Some((key, value)) = write.split_once(' ') {
            let got = get(&runtime, "orders", key).await?;
            if got.as_deref() == Some(value) {
                kept_in_flight += 1;
            } else if got.is_some() {
                return Err(format!("{key}: in flight with {value}, recovered {got:?}").into());
            }
        }
    }
    println!(
        "   of the {} writes in flight, {kept_in_flight} had become durable (kept), the others were never acknowledged (not applied)",
        log.in_flight.len()
    );
    let likes: CounterReply = runtime.call("likes", &CounterMsg::Get).await?;
    let mut clients = clients;
    let likes_before = clients.counter("likes").map_or(0, |c| c.count);
    let acked = log.likes_acked.unwrap_or(likes_before);
    story.check(
        likes.count == acked || likes.count == acked + 1,
        format!(
            "likes holds {} (acknowledged {acked}, one increment may have been in flight)",
            likes.count
        ),
    )?;
    if let Some(counter) = clients.counter_mut("likes") {
        counter.count = likes.count;
    }
    let checked = clients.verify(&runtime).await?;
    story.check(checked > 0, format!("all {checked} keys, counts and balances acknowledged before (steps 2 and 3) read back equal"))?;

    // 5. Evolution.
    chapter(
        5,
        "Evolution under live load: kv-v2 promoted, kv-buggy rejected, a promotion rolled back",
    );
    let load = clients.start(&runtime, 2);
    let arbiter = runtime.arbiter();
    let kv_module = match runtime
        .lookup("orders")
        .ok_or("orders is not running")?
        .running()
        .await?
    {
        (BehaviourId::Wasm(hash), _) => hash,
        (other, _) => return Err(format!("orders runs {other:?}").into()),
    };
    let plans = [
        ("orders", "kv-v2", arbor_modules::KV_V2),
        ("sessions", "kv-v2", arbor_modules::KV_V2),
        ("profiles", "kv-buggy", arbor_modules::KV_BUGGY),
    ];
    let mut candidates = BTreeMap::new();
    for (agent, name, bytes) in plans {
        let candidate = arbiter.admit(agent, name, bytes)?;
        arbiter.evaluate(agent, candidate, Vec::new())?;
        let short: String = candidate.to_string().chars().take(12).collect();
        println!("   {agent}: admitted {name} ({short}…), replay gate started");
        candidates.insert(agent, candidate);
    }
    let progress = MultiProgress::new();
    let min_samples = arbiter.config().policy.required_samples();
    let bars: Vec<(&str, ProgressBar)> = plans
        .iter()
        .map(|(agent, name, _)| {
            let bar = progress.add(ProgressBar::new(min_samples));
            bar.set_style(
                style("   {prefix:<22} [{bar:30}] {pos}/{len} samples {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(format!("{agent} ← {name}"));
            (*agent, bar)
        })
        .collect();
    let evaluation_started = Instant::now();
    let statuses: BTreeMap<&str, EvaluationStatus> = loop {
        let mut settled = BTreeMap::new();
        for (agent, bar) in &bars {
            let status = arbiter.status(agent).ok_or("an evaluation vanished")?;
            bar.set_position(status.shadow.samples.min(min_samples));
            bar.set_message(format!(
                "{:?}, {} mismatches",
                status.stage, status.shadow.mismatches
            ));
            if status.is_settled() {
                settled.insert(*agent, status);
            }
        }
        if settled.len() == bars.len() {
            break settled;
        }
        if evaluation_started.elapsed() > Duration::from_secs(120) {
            return Err("the evaluations did not settle in 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (_, bar) in &bars {
        bar.finish_and_clear();
    }
    let _ = progress.clear();
    let evaluation = evaluation_started.elapsed();

    // orders ← kv-v2: gate, shadows, verdict, promotion, watch.
    let orders = &statuses["orders"];
    if let Some(gate) = &orders.gate {
        println!(
            "   orders: the replay gate ran {} journaled inputs through kv and kv-v2 ({:.0} inputs/s): {} mismatches, fuel {}",
            gate.tally.samples,
            gate.inputs_per_second,
            gate.tally.mismatch_count(),
            gate.fuel
                .map_or("n/a".into(), |f| format!("{:+.0} %", f.shift * 100.0))
        );
        story.check(gate.passed, "kv-v2 passed the replay gate")?;
    }
    println!(
        "   orders: shadows (kv-v2 and an A/A control running kv) compared {} mirrored inputs {:?}: {} mismatches, {} A/A differences, {} state checks, {} gaps",
        orders.shadow.samples,
        orders.shadow.per_kind,
        orders.shadow.mismatches,
        orders.shadow.aa_mismatches,
        orders.shadow.state_checks,
        orders.shadow.gaps
    );
    story.check_or(
        orders.stage == Stage::AwaitingApproval,
        "kv-v2 approved for orders",
        (&orders.stage, orders.decision.as_ref().map(|d| &d.reasons)),
    )?;
    let promotion = arbiter.promote("orders").await?;
    println!(
        "   orders: promoted kv → kv-v2, state migrated ({} bytes); the mailbox paused {}",
        promotion.state_bytes,
        ms(promotion.pause)
    );
    story.number(
        "promotion pause (orders, kv → kv-v2)",
        format!(
            "{} for {} bytes of state",
            ms(promotion.pause),
            promotion.state_bytes
        ),
    );

    // profiles ← kv-buggy: rejected, with the inputs it answered differently.
    let profiles = &statuses["profiles"];
    story.check_or(
        profiles.stage == Stage::Done(Outcome::Rejected),
        "kv-buggy rejected for profiles",
        &profiles.stage,
    )?;
    let (where_caught, divergences) = match &profiles.gate {
        Some(gate) if !gate.passed => ("the replay gate", &gate.tally.divergences),
        _ => ("the shadows", &profiles.shadow.divergences),
    };
    println!(
        "   profiles: {where_caught} caught kv-buggy: {}",
        profiles
            .decision
            .as_ref()
            .map(|d| d.reasons.join("; "))
            .or_else(|| profiles.gate.as_ref().map(|g| g.reasons.join("; ")))
            .unwrap_or_default()
    );
    for divergence in divergences.iter().take(3) {
        println!(
            "     input #{} {}: production {} · kv-buggy {}",
            divergence.seq, divergence.input, divergence.expected, divergence.got
        );
    }
    story.check(
        !divergences.is_empty()
            && divergences
                .iter()
                .all(|d| d.kind == "Get" && d.got.contains("nil")),
        "every diverging input shown is a Get kv-buggy answered nil",
    )?;

    // sessions ← kv-v2: promoted, then rolled back by the operator during the watch.
    let sessions = &statuses["sessions"];
    story.check(
        sessions.stage == Stage::AwaitingApproval,
        "kv-v2 approved for sessions",
    )?;
    arbiter.promote("sessions").await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let rollback = arbiter
        .rollback("sessions", "the operator rolls it back (demo)")
        .await?;
    println!(
        "   sessions: promoted to kv-v2, then rolled back during the watch: kv rebuilt from the promotion checkpoint and {} inputs replayed, mailbox paused {}",
        rollback.replayed,
        ms(rollback.pause)
    );
    story.number(
        "rollback pause (sessions, kv-v2 → kv)",
        format!(
            "{} ({} inputs replayed)",
            ms(rollback.pause),
            rollback.replayed
        ),
    );
    let orders_done = arbiter
        .wait("orders", |s| matches!(s.stage, Stage::Done(_)))
        .await?;
    story.check_or(
        orders_done.stage == Stage::Done(Outcome::Promoted),
        "orders' watch passed: kv-v2 stays",
        &orders_done.stage,
    )?;
    let sessions_done = arbiter.status("sessions").ok_or("no sessions evaluation")?;
    story.check_or(
        sessions_done.stage == Stage::Done(Outcome::RolledBack),
        "sessions is back on kv",
        &sessions_done.stage,
    )?;
    let (clients, mut tally, took) = load.stop().await?;
    let calls = tally.latencies.len();
    println!(
        "   under all this the clients made {calls} calls ({:.0}/s, p99 {}), evaluations settled in {:.1} s",
        calls as f64 / took.as_secs_f64(),
        ms(tally.percentile(0.99)),
        evaluation.as_secs_f64()
    );
    story.number(
        "evaluations (3 at once, under load) settled in",
        format!("{:.1} s", evaluation.as_secs_f64()),
    );
    story.number(
        "shadow samples, orders ← kv-v2",
        format!("{} compared, 0 mismatches", orders.shadow.samples),
    );
    story.check(
        tally.wrong.is_empty(),
        format!(
            "every reply during the evolution matched the model{}",
            first_of(&tally.wrong)
        ),
    )?;
    story.check(
        tally.failed.is_empty(),
        format!(
            "no call failed during promotions and rollback{}",
            first_of(&tally.failed)
        ),
    )?;
    for (agent, expected) in [
        ("orders", candidates["orders"]),
        ("sessions", kv_module),
        ("profiles", kv_module),
    ] {
        let (running, _) = runtime
            .lookup(agent)
            .ok_or_else(|| format!("{agent} is not running"))?
            .running()
            .await?;
        story.check(
            running == BehaviourId::Wasm(expected),
            format!(
                "{agent} runs {}",
                if expected == kv_module { "kv" } else { "kv-v2" }
            ),
        )?;
    }
    let checked = clients.verify(&runtime).await?;
    let mut crash_kept = 0;
    for (key, value) in &log.acked {
        if get(&runtime, "orders", key).await?.as_deref() == Some(value.as_str()) {
            crash_kept += 1;
        }
    }
    story.check(
        crash_kept == log.acked.len(),
        format!("all {} acknowledged keys, counts and balances, and the {crash_kept} puts from before the kill, read back equal after the promotions and the rollback", checked),
    )?;
    let steps: Vec<String> = arbiter
        .history("orders")?
        .iter()
        .map(|record| match &record.event {
            LineageEvent::ModuleAdmitted { .. } => "admitted".to_string(),
            LineageEvent::Verdict { verdict, .. } => format!("verdict {verdict:?}"),
            LineageEvent::Promoted { .. } => "promoted".to_string(),
            LineageEvent::RolledBack { .. } => "rolled back".to_string(),
            LineageEvent::Step { step, .. } => step.to_string(),
            _ => "(a newer kind of event)".to_string(),
        })
        .collect();
    println!("   orders' lineage in the vault: {}", steps.join(" → "));

    // One cycle of the evolution loop: the cache agent, badly configured, tunes itself.
    let report = evolution_cycle(&runtime).await?;
    println!(
        "   one cycle of the evolution loop on `cache` (its parameters searched by a genetic algorithm, each configuration through the arbiter):"
    );
    for line in report.markdown().lines() {
        println!("     {line}");
    }
    story.check(
        !report.tried.is_empty()
            && report.tried.iter().all(|t| {
                [
                    "refused",
                    "gate",
                    "shadows",
                    "awaiting approval",
                    "promoted",
                ]
                .contains(&t.outcome.as_str())
            }),
        format!(
            "the loop's report names each of the {} candidates it tried and how far it got",
            report.tried.len()
        ),
    )?;

    // 6. Operating it.
    chapter(6, "Operating it: metrics, the admin endpoint, arborctl");
    let metrics_addr = runtime.metrics_addr().ok_or("no metrics endpoint")?;
    let admin_addr = runtime.admin_addr().ok_or("no admin endpoint")?;
    let token = std::fs::read_to_string(&endpoints.token_file)?;
    let (exposition, status) =
        tokio::task::spawn_blocking(move || -> DemoResult<(String, String)> {
            let exposition = ureq::get(format!("http://{metrics_addr}/metrics"))
                .call()?
                .body_mut()
                .read_to_string()?;
            let status = ureq::get(format!("http://{admin_addr}/v1/status"))
                .header("Authorization", format!("Bearer {}", token.trim()))
                .call()?
                .body_mut()
                .read_to_string()?;
            Ok((exposition, status))
        })
        .await??;
    let sample = |name: &str| -> f64 {
        exposition
            .lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for name in [
        "arbor_messages_in_total",
        "arbor_traps_total",
        "arbor_restarts_total",
        "arbor_checkpoints_total",
        "arbor_shadow_comparisons_total",
        "arbor_promotions_total",
        "arbor_rollbacks_total",
    ] {
        println!("   {name:<32} {}", sample(name));
    }
    story.check(
        sample("arbor_promotions_total") >= 2.0 && sample("arbor_rollbacks_total") >= 1.0,
        format!("http://{metrics_addr}/metrics counts the promotions and the rollback"),
    )?;
    story.check(
        status.contains("\"agents\""),
        format!("the admin endpoint http://{admin_addr}/v1/status answers with the token"),
    )?;
    let ctl = format!(
        "cargo run --release --bin arborctl -- --admin {admin_addr} --token-file {}",
        endpoints.token_file.display()
    );
    let offline = format!(
        "cargo run --release --bin arborctl -- --data-dir {}",
        agent_dir.display()
    );
    println!("\n   Metrics (Prometheus text):  curl http://{metrics_addr}/metrics");
    println!(
        "   Dashboard and alerts:       deploy/grafana/arbor.json, deploy/prometheus/ (see deploy/README.md)"
    );
    println!("   While the host runs:        {ctl} status");
    for command in [
        "agents",
        "checkpoint list orders",
        "evolve history orders",
        "evolve history profiles --json",
        "wal inspect --agent sessions --limit 10",
    ] {
        println!("                               {ctl} {command}");
    }
    println!("   After it stops:             {offline} wal verify");
    println!("                               {offline} checkpoint list orders");

    // The summary.
    println!(
        "\n\x1b[1mSummary\x1b[0m ({} checks passed in {:.1} s)",
        story.checks,
        demo_started.elapsed().as_secs_f64()
    );
    for (what, value) in &story.numbers {
        println!("   {what:<48} {value}");
    }
    println!("   data directory: {}", data_dir.display());

    if std::io::stdin().is_terminal() && std::env::var_os("ARBOR_DEMO_EXIT").is_none() {
        println!("\nThe host keeps running for arborctl and /metrics: press Enter to stop it.");
        let mut line = String::new();
        tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await??;
    }
    runtime.shutdown().await?;
    Ok(())
}
