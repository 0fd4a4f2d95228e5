//! Faults against a cluster of real host processes on a real 3-server NATS JetStream cluster,
//! each fault 20 rounds at random moments (the seed is printed; `ARBOR_TEST_SEED` repeats it):
//! kill -9 a host; SIGSTOP a host past its lease, then SIGCONT; cut a host off its NATS server
//! (a TCP proxy this test controls), then heal; kill -9 one of the NATS servers; a rolling
//! graceful restart of every host.
//!
//! Each host runs a runtime in cluster mode and a client that writes its own keys through kv
//! agents spread over the cluster (so most calls cross nodes), printing `ACK agent key value`
//! for every acknowledged write and checking every read against its own model of its writes
//! (`VIOLATION` if a read shows less than the last acknowledged value or more than the last
//! attempted one). Once the faults stop, the clients must get writes acknowledged again
//! (liveness). At the end every host is killed, this process joins as the only node, waits
//! for it to own every agent, and reads every acknowledged key back: 0 acknowledged writes
//! lost. Then the journal stream itself is checked: every append carries the epoch of the
//! takeover before it, so no two owners were ever active on one agent.
//!
//! To see what the hosts did, run with `ARBOR_HOST_LOG=<dir>` (and `RUST_LOG`, default info):
//! each host incarnation writes its log to `<dir>/<node>-<incarnation>.log`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arbor::{ClusterOptions, Error, Runtime, Spawn};
use arbor_cluster::harness::{NatsCluster, signal_process};
use arbor_cluster::{EntryKind, JournalLog, LogConfig};
use arbor_protocols::kv::{KvMsg, KvReply};
use arbor_testkit::ChildProcess;
use arbor_testkit::{CrashChild, KillTest, Side};
use parking_lot::Mutex;

const HOSTS: usize = 3;
const AGENTS: usize = 6;
const ROUNDS: usize = 20;
const LEASE: Duration = Duration::from_millis(1500);
/// Writes the clients must get acknowledged once the faults have stopped, within [`QUIET`].
/// This asks that the cluster serves again at a rate like the one during the faults, not how
/// fast: healthy, the clients get 400 in 2–10 s on a 2-core machine. After 20 partitions they
/// used to get about 2 a second for minutes (an agent crash-looping on a fenced journal until
/// the root supervisor gave up; then slow passes that let every lease of a node run out, so
/// nodes stepped down from all their agents and claimed them back in turns).
const AFTER_FAULTS: usize = 400;
/// How long the cluster has to serve [`AFTER_FAULTS`] writes after the faults.
const QUIET: Duration = Duration::from_secs(120);

/// One fault test at a time: each runs 3 NATS servers and 3 hosts with short leases, and two
/// of them at once on a small machine starve each other's renewals.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillHost,
    PauseHost,
    Partition,
    KillNats,
    RollingRestart,
}

fn agents() -> Vec<String> {
    (0..AGENTS).map(|i| format!("kv-{i}")).collect()
}

fn options(urls: Vec<String>, node: &str) -> ClusterOptions {
    ClusterOptions::new(urls, node)
        .replicas(3)
        .lease(LEASE)
        .max_clock_skew(Duration::from_millis(100))
        .tick(Duration::from_millis(200))
        .append_timeout(Duration::from_secs(2))
}

// ---------------------------------------------------------------------------------------------
// The host (child side).

fn host(child: &CrashChild) {
    let node: String = child.var("ARBOR_NODE");
    let urls: String = child.var("ARBOR_NATS");
    let proxied: bool = child.var("ARBOR_PROXIED");
    let seed_agents: bool = child.var("ARBOR_SEED_AGENTS");
    let incarnation: u32 = child.var("ARBOR_INCARNATION");
    // For diagnosis: `ARBOR_HOST_LOG=<dir>` writes each host's log (RUST_LOG's filter,
    // default info) to `<dir>/<node>-<incarnation>.log`.
    if let Ok(dir) = std::env::var("ARBOR_HOST_LOG") {
        let file = std::fs::File::create(Path::new(&dir).join(format!("{node}-{incarnation}.log")))
            .expect("host log");
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init();
    }
    let dir = child.dir().join(&node);
    let stop_file = child.dir().join(format!("stop-{node}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut options = options(urls.split(',').map(str::to_string).collect(), &node);
        if proxied {
            options = options.ignore_discovered_servers();
        }
        let rt = Runtime::builder()
            .data_dir(&dir)
            .call_timeout(Duration::from_secs(4))
            .cluster(options)
            .build()
            .await
            .unwrap_or_else(|e| panic!("{node}: {}", arbor::agent::report::chain(&e)));
        println!("READY");
        if seed_agents {
            for agent in agents() {
                match rt
                    .spawn(Spawn::wasm_bytes(agent.clone(), arbor_modules::KV))
                    .await
                {
                    Ok(_) | Err(Error::Agent(arbor::agent::AgentError::AlreadyExists(_))) => {}
                    Err(e) => panic!("spawn {agent}: {}", arbor::agent::report::chain(&e)),
                }
            }
            println!("SEEDED");
        }
        // The client: its own keys, one per agent, values counting up.
        let mut acked: BTreeMap<String, u64> = BTreeMap::new();
        let mut attempted: BTreeMap<String, u64> = BTreeMap::new();
        let agents = agents();
        let mut n: u64 = 0;
        while !stop_file.exists() {
            n += 1;
            let agent = &agents[(n as usize) % agents.len()];
            let key = format!("{node}-{incarnation}-{agent}");
            let put = KvMsg::Put {
                key: key.clone(),
                value: n.to_string(),
            };
            attempted.insert(key.clone(), n);
            match rt.call::<_, KvReply>(agent, &put).await {
                Ok(_) => {
                    acked.insert(key.clone(), n);
                    println!("ACK {agent} {key} {n}");
                }
                Err(e) => {
                    // For the liveness check's diagnosis: which agents fail, and how.
                    println!("ERR {agent} {}", arbor::agent::report::chain(&e));
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
            }
            if n.is_multiple_of(4) {
                let get = KvMsg::Get { key: key.clone() };
                if let Ok(KvReply::Value { value }) = rt.call::<_, KvReply>(agent, &get).await {
                    let value: u64 = value.and_then(|v| v.parse().ok()).unwrap_or(0);
                    let low = acked.get(&key).copied().unwrap_or(0);
                    let high = attempted.get(&key).copied().unwrap_or(0);
                    if value < low || value > high {
                        println!(
                            "VIOLATION {agent} {key} read {value} acked {low} attempted {high}"
                        );
                    }
                }
            }
        }
        rt.shutdown().await.expect("graceful shutdown");
        println!("DRAINED");
    });
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy the test can cut (a partition between one host and its NATS server).

struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, conns) = (cut.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::Acquire) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            cut,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones until `heal`.
    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        for task in self.connections.lock().drain(..) {
            task.abort();
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------------
// The test (parent side).

struct Hosts<'a> {
    test: &'a KillTest,
    urls: Vec<String>,
    proxied: bool,
    children: Vec<Option<ChildProcess>>,
    incarnations: Vec<u32>,
    lines: Vec<String>,
}

impl Hosts<'_> {
    fn name(i: usize) -> String {
        format!("host-{i}")
    }

    fn start(&mut self, i: usize, seed: bool) {
        self.incarnations[i] += 1;
        let (name, urls) = (Self::name(i), self.urls[i].clone());
        let incarnation = self.incarnations[i].to_string();
        let mut child = self.test.spawn(
            "host",
            &[
                ("ARBOR_NODE", name.as_str()),
                ("ARBOR_NATS", urls.as_str()),
                ("ARBOR_PROXIED", if self.proxied { "true" } else { "false" }),
                ("ARBOR_SEED_AGENTS", if seed { "true" } else { "false" }),
                ("ARBOR_INCARNATION", incarnation.as_str()),
            ],
        );
        let ready = child
            .lines_until("READY", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{name} did not start"));
        self.lines.extend(ready);
        if seed {
            let seeded = child
                .lines_until("SEEDED", Duration::from_secs(60))
                .unwrap_or_else(|| panic!("{name} did not spawn the agents"));
            self.lines.extend(seeded);
        }
        self.children[i] = Some(child);
    }

    /// Collects what every host printed so far.
    fn collect(&mut self) {
        for child in self.children.iter_mut().flatten() {
            while let Some(line) = child.next_line_timeout(Duration::ZERO) {
                self.lines.push(line);
            }
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(child) = self.children[i].take() {
            self.lines.extend(child.kill());
        }
    }

    fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("running").id()
    }

    /// Asks host `i` to shut down gracefully (drain) and waits for it.
    fn stop_gracefully(&mut self, dir: &Path, i: usize) {
        let stop = dir.join(format!("stop-{}", Self::name(i)));
        std::fs::write(&stop, b"").unwrap();
        let mut child = self.children[i].take().expect("running");
        let drained = child
            .lines_until("DRAINED", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("host-{i} did not drain"));
        self.lines.extend(drained);
        let (ok, rest) = child.wait().unwrap();
        assert!(ok, "host-{i} exited with a failure");
        self.lines.extend(rest);
        std::fs::remove_file(&stop).unwrap();
    }
}

fn run(test: &'static str, fault: Fault) {
    let mut side = match KillTest::start(test, Duration::from_secs(600)) {
        Side::Child(child) => return host(&child),
        Side::Parent(test) => test,
    };
    let _one = ONE_AT_A_TIME.lock();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cluster = tokio.block_on(NatsCluster::start(3)).expect("nats cluster");
    let proxies: Vec<Proxy> = if fault == Fault::Partition {
        (0..HOSTS)
            .map(|i| {
                let target = cluster.url(i).trim_start_matches("nats://").to_string();
                tokio.block_on(Proxy::start(target))
            })
            .collect()
    } else {
        Vec::new()
    };
    let urls: Vec<String> = (0..HOSTS)
        .map(|i| match proxies.get(i) {
            Some(proxy) => proxy.url(),
            None => cluster.urls().join(","),
        })
        .collect();
    let dir = side.dir().to_path_buf();
    let mut rounds_rng = arbor_testkit::SplitMix64::new(side.rng().next_u64());
    let mut hosts = Hosts {
        test: &side,
        urls,
        proxied: fault == Fault::Partition,
        children: (0..HOSTS).map(|_| None).collect(),
        incarnations: vec![0; HOSTS],
        lines: Vec::new(),
    };
    for i in 0..HOSTS {
        hosts.start(i, i == 0);
    }
    for round in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(300 + rounds_rng.below(900)));
        let i = rounds_rng.below(HOSTS as u64) as usize;
        match fault {
            Fault::KillHost => {
                hosts.kill(i);
                std::thread::sleep(Duration::from_millis(rounds_rng.below(1500)));
                hosts.start(i, false);
            }
            Fault::PauseHost => {
                let pid = hosts.pid(i);
                signal_process(pid, "-STOP").unwrap();
                // Past its lease: its agents are claimed elsewhere while it sleeps.
                std::thread::sleep(LEASE * 2);
                signal_process(pid, "-CONT").unwrap();
            }
            Fault::Partition => {
                proxies[i].cut();
                std::thread::sleep(LEASE * 2);
                proxies[i].heal();
            }
            Fault::KillNats => {
                cluster.kill(i);
                std::thread::sleep(Duration::from_millis(500 + rounds_rng.below(1500)));
                tokio
                    .block_on(cluster.restart(i))
                    .expect("restart the server");
            }
            Fault::RollingRestart => {
                let i = round % HOSTS;
                hosts.stop_gracefully(&dir, i);
                hosts.start(i, false);
            }
        }
        hosts.collect();
        println!("round {round}: {fault:?} on {i}");
    }
    // Liveness: once the faults stop the cluster serves again. Under a fault the servers
    // themselves may be electing leaders most of the time (a NATS server killed every two
    // seconds), so progress is asked of the quiet time after the faults, not during them.
    let acks = |lines: &[String]| lines.iter().filter(|l| l.starts_with("ACK ")).count();
    let during = acks(&hosts.lines);
    let lines_at_quiet = hosts.lines.len();
    let quiet_from = Instant::now();
    let quiet = quiet_from + QUIET;
    while acks(&hosts.lines) < during + AFTER_FAULTS && Instant::now() < quiet {
        std::thread::sleep(Duration::from_millis(200));
        hosts.collect();
    }
    let after = acks(&hosts.lines) - during;
    println!(
        "{during} writes acknowledged during the faults, {after} in the {:.1} s after",
        quiet_from.elapsed().as_secs_f64()
    );
    {
        // Which agents failed the clients after the faults, and with what.
        let mut failures: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for line in &hosts.lines[lines_at_quiet..] {
            if let Some(rest) = line.strip_prefix("ERR ") {
                let (agent, error) = rest.split_once(' ').unwrap_or((rest, ""));
                let entry = failures.entry(agent.to_string()).or_default();
                entry.0 += 1;
                entry.1 = error.chars().take(200).collect();
            }
        }
        for (agent, (count, last)) in &failures {
            println!("after the faults: {count} failed calls to {agent}, the last: {last}");
        }
    }
    assert!(
        after >= AFTER_FAULTS,
        "the clients made too little progress after the faults: {after} acks in {QUIET:?}"
    );
    for i in 0..HOSTS {
        hosts.kill(i);
    }
    let lines = std::mem::take(&mut hosts.lines);
    let violations: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("VIOLATION"))
        .collect();
    assert!(
        violations.is_empty(),
        "reads that broke the model: {violations:?}"
    );
    // The last acknowledged value of every key.
    let mut acked: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        if let ["ACK", agent, key, value] = parts.as_slice() {
            let value: u64 = value.parse().unwrap();
            let slot = acked
                .entry((agent.to_string(), key.to_string()))
                .or_default();
            *slot = (*slot).max(value);
        }
    }
    println!(
        "{} acknowledged writes over {} keys",
        acks(&lines),
        acked.len()
    );

    tokio.block_on(async {
        // This process joins as the only node left and reads every acknowledged key back.
        let check_dir = tempfile::tempdir().unwrap();
        let checker = Runtime::builder()
            .data_dir(check_dir.path())
            .call_timeout(Duration::from_secs(5))
            .cluster(options(cluster.urls(), "checker"))
            .build()
            .await
            .unwrap_or_else(|e| panic!("checker: {}", arbor::agent::report::chain(&e)));
        // Every host is dead: once their leases end the checker owns every agent.
        let owned = Instant::now() + Duration::from_secs(60);
        loop {
            let status = checker.cluster_status().await.expect("cluster mode");
            let all_here = status.as_ref().is_ok_and(|status| {
                agents().iter().all(|agent| {
                    status.agents.iter().any(|placed| {
                        &placed.name == agent
                            && placed.owner.as_deref() == Some("checker")
                            && placed.state == "running"
                    })
                })
            });
            if all_here {
                break;
            }
            assert!(
                Instant::now() < owned,
                "the checker does not own every agent 60 s after the hosts died: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut lost = Vec::new();
        for ((agent, key), value) in &acked {
            let until = Instant::now() + Duration::from_secs(30);
            let got = loop {
                match checker
                    .call::<_, KvReply>(agent, &KvMsg::Get { key: key.clone() })
                    .await
                {
                    Ok(KvReply::Value { value }) => break value,
                    Ok(other) => panic!("unexpected {other:?}"),
                    // A read is idempotent: one that an agent's stop (a claim settling on the
                    // checker) cut short is asked again; what is checked is the value.
                    Err(e)
                        if (e.is_retryable()
                            || matches!(
                                e,
                                arbor::Error::Agent(arbor::agent::AgentError::Stopped(_))
                            ))
                            && Instant::now() < until =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        // What the checker sees, so a failure here says which layer is stuck.
                        let status = checker.cluster_status().await;
                        panic!(
                            "{agent}: {}\nthe checker's view: {status:#?}",
                            arbor::agent::report::chain(&e)
                        )
                    }
                }
            };
            let got: u64 = got.and_then(|v| v.parse().ok()).unwrap_or(0);
            if got < *value {
                lost.push(format!("{agent}/{key}: acked {value}, found {got}"));
            }
        }
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
        checker.shutdown().await.unwrap();

        // Never two active owners: every append carries the epoch of the last takeover before
        // it, and each epoch belongs to one node.
        let client = cluster.connect().await.unwrap();
        let log = JournalLog::open(
            async_nats::jetstream::new(client),
            LogConfig::default().replicas(3),
        )
        .await
        .unwrap();
        let mut takeovers = 0;
        for agent in agents() {
            let mut current: Option<(u64, String)> = None;
            let mut owners: BTreeMap<u64, String> = BTreeMap::new();
            for entry in log.read(&agent, 1).await.unwrap() {
                if let Some(node) = owners.insert(entry.epoch, entry.node.clone()) {
                    assert_eq!(
                        node, entry.node,
                        "{agent}: epoch {} on two nodes",
                        entry.epoch
                    );
                }
                match entry.kind {
                    EntryKind::TakeOver => {
                        if let Some((epoch, _)) = &current {
                            assert!(entry.epoch > *epoch, "{agent}: epochs went back");
                        }
                        current = Some((entry.epoch, entry.node.clone()));
                        takeovers += 1;
                    }
                    EntryKind::Append => {
                        if let Some((epoch, node)) = &current {
                            assert_eq!(
                                (entry.epoch, &entry.node),
                                (*epoch, node),
                                "{agent}: an append at seq {} by a former owner",
                                entry.seq
                            );
                        }
                    }
                }
            }
        }
        println!("{takeovers} takeovers checked");
        assert!(takeovers > AGENTS, "the faults moved no agent");
    });
    drop(proxies);
}

#[test]
fn kill_9_a_host() {
    run("kill_9_a_host", Fault::KillHost);
}

#[test]
fn sigstop_a_host_past_its_lease() {
    run("sigstop_a_host_past_its_lease", Fault::PauseHost);
}

#[test]
fn partition_a_host_from_nats() {
    run("partition_a_host_from_nats", Fault::Partition);
}

#[test]
fn kill_9_a_nats_server() {
    run("kill_9_a_nats_server", Fault::KillNats);
}

#[test]
fn rolling_restart_of_every_host() {
    run("rolling_restart_of_every_host", Fault::RollingRestart);
}
