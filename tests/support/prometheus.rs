//! The Prometheus tests' set-up: the traffic that exercises every metric, a Prometheus child
//! process and its HTTP API, promtool, and the dashboard's queries (the traffic is long: one
//! event per metric the dashboard shows).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arbor::agent::tools::{Tool, ToolError};
use arbor::agent::{Behaviour, BehaviourError, Host};
use arbor::shadow::EvaluationStatus;
use arbor::supervisor::Intensity;
use arbor::{Error, Runtime, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};
use arbor_modules::kv::{KvMsg, is_unlucky};
use arbor_testkit::SplitMix64;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The admin token.
pub const TOKEN: &str = "prometheus-test-admin-token";

/// How Grafana's built-in variables and the dashboard's own are replaced in the queries.
pub const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "5m"),
];

/// The dashboard's template variables and what the test selects: the `arbor` job, every
/// instance.
pub const VARIABLES: &[(&str, &str)] = &[("job", "arbor"), ("instance", ".*")];

// ---------------------------------------------------------------------------------------------
// Agents and load

#[derive(Serialize)]
pub enum ToolboxMsg {
    Send { to: String, by: i64 },
}

/// A native behaviour that takes a few milliseconds per input, so casts fill its mailbox.
pub struct Sleepy;

impl Behaviour for Sleepy {
    fn handle(&mut self, input: &[u8], _host: &mut Host) -> Result<Vec<u8>, BehaviourError> {
        std::thread::sleep(Duration::from_millis(2));
        Ok(input.to_vec())
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
        Ok(rmp_serde::to_vec(&()).unwrap())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<(), BehaviourError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "sleepy".into()
    }
}

/// The `echo` tool the toolbox agent is granted (its `Send` never calls it).
pub struct Echo;

impl Tool for Echo {
    fn call(&self, args: &[u8]) -> Result<Vec<u8>, ToolError> {
        Ok(args.to_vec())
    }
}

pub fn lenient(max_restarts: u32) -> SupervisorOptions {
    SupervisorOptions {
        intensity: Intensity {
            max_restarts,
            period: Duration::from_secs(60),
        },
        ..SupervisorOptions::default()
    }
}

/// Background traffic until stopped; counts what it got.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(runtime: &Runtime) -> Load {
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            tasks: Vec::new(),
        };
        // Plain keys for kv-a; for kv-b the same plus every unlucky key among the first
        // thousand, which kv-buggy answers wrongly once they are stored.
        let plain: Vec<String> = (0..100).map(|i| format!("key-{i}")).collect();
        let mut with_unlucky = plain.clone();
        with_unlucky.extend(
            (100..5_000)
                .map(|i| format!("key-{i}"))
                .filter(|k| is_unlucky(k)),
        );
        assert!(with_unlucky.len() > plain.len());
        let plain = Arc::new(plain);
        let with_unlucky = Arc::new(with_unlucky);
        load.spawn(runtime, 1, move |runtime, rng, n| {
            let keys = Arc::clone(&plain);
            async move { kv_step(&runtime, "kv-a", &keys, rng, n).await }
        });
        load.spawn(runtime, 2, move |runtime, rng, n| {
            let keys = Arc::clone(&with_unlucky);
            async move { kv_step(&runtime, "kv-b", &keys, rng, n).await }
        });
        for task in 0..2u64 {
            load.spawn(runtime, 10 + task, |runtime, mut rng, _| async move {
                let counter = format!("counter-{}", rng.below(4));
                let by = 1 + rng.below(9) as i64;
                runtime
                    .call::<_, CounterReply>(&counter, &CounterMsg::Inc { by })
                    .await
                    .map(drop)
            });
        }
        // An agent that traps now and then: its supervisor restarts it from its journal.
        load.spawn(runtime, 20, |runtime, _, n| async move {
            let msg = if n % 300 == 299 {
                CounterMsg::Fail
            } else {
                CounterMsg::Inc { by: 1 }
            };
            let result = runtime.call::<_, CounterReply>("flaky", &msg).await;
            if result.is_err() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            result.map(drop)
        });
        // Bursts of casts to kv-c: production takes them in microseconds, kv-slow's shadows
        // take ~50 times longer and their queue overflows (gaps).
        load.spawn(runtime, 40, |runtime, _, n| async move {
            let mut result = Ok(());
            for i in 0..48 {
                let put = KvMsg::Put {
                    key: format!("key-{}", (n * 48 + i) % 500),
                    value: format!("v{n}"),
                };
                if let Err(error) = runtime.cast("kv-c", &put) {
                    result = Err(error);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            result
        });
        // Agent-to-agent sends.
        load.spawn(runtime, 30, |runtime, _, _| async move {
            let send = ToolboxMsg::Send {
                to: "counter-0".into(),
                by: 1,
            };
            let result = runtime
                .call::<_, serde::de::IgnoredAny>("toolbox", &send)
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            result.map(drop)
        });
        load
    }

    fn spawn<F, Fut>(&mut self, runtime: &Runtime, seed: u64, step: F)
    where
        F: Fn(Runtime, SplitMix64, u64) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), Error>> + Send,
    {
        let (runtime, stop, ok, failed) = (
            runtime.clone(),
            Arc::clone(&self.stop),
            Arc::clone(&self.ok),
            Arc::clone(&self.failed),
        );
        self.tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(seed);
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                let step_rng = SplitMix64::new(rng.next_u64());
                match step(runtime.clone(), step_rng, n).await {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    // Crashes, restarts, pauses: counted, the load goes on.
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
                if n % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }

    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Release);
        for task in self.tasks {
            task.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

pub async fn kv_step(
    runtime: &Runtime,
    agent: &str,
    keys: &[String],
    mut rng: SplitMix64,
    n: u64,
) -> Result<(), Error> {
    // Every key is stored first, then a mix of every message kind.
    let key = if n < keys.len() as u64 {
        keys[n as usize].clone()
    } else {
        keys[rng.below(keys.len() as u64) as usize].clone()
    };
    let roll = if n < keys.len() as u64 {
        50
    } else {
        rng.below(100)
    };
    let msg = match roll {
        0..40 => KvMsg::Get { key },
        40..85 => KvMsg::Put {
            key,
            value: format!("v{n}"),
        },
        85..92 => KvMsg::Delete { key },
        _ => KvMsg::Scan {
            prefix: format!("key-{}", rng.below(10)),
            limit: 5,
        },
    };
    runtime
        .call::<_, serde::de::IgnoredAny>(agent, &msg)
        .await
        .map(drop)
}

/// Waits (up to 60 s) until `agent`'s evaluation is settled.
pub async fn settled(runtime: &Runtime, agent: &str) -> EvaluationStatus {
    let arbiter = runtime.arbiter();
    tokio::time::timeout(
        Duration::from_secs(60),
        arbiter.wait(agent, EvaluationStatus::is_settled),
    )
    .await
    .unwrap_or_else(|_| panic!("{agent}: {:#?}", arbiter.status(agent)))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Prometheus and HTTP

pub fn on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not on PATH: this test runs a real Prometheus; install Debian's \
                 `prometheus` package (`apt-get install prometheus`), which provides \
                 `prometheus` and `promtool`"
            )
        })
}

/// A Prometheus child process, killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on `config` with its TSDB in `dir`, on a free loopback port.
    pub fn start(config: &Path, dir: &Path) -> Prometheus {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(on_path("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Prometheus { child, addr, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            if let Ok((200, _)) = get(self.addr, "/-/ready").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an instant query; the `data` of a successful answer.
    pub async fn query(&self, query: &str) -> Result<Value, String> {
        let path = format!("/api/v1/query?query={}", url_encode(query));
        let (status, body) = get(self.addr, &path).await.map_err(|e| e.to_string())?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}, {e}: {body}"))?;
        if status != 200 || answer["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(answer["data"].clone())
    }

    /// The result vector of `query`, which must be non-empty.
    pub async fn vector(&self, query: &str) -> Result<Vec<Value>, String> {
        let data = self.query(query).await?;
        match data["result"].as_array() {
            Some(result) if !result.is_empty() => Ok(result.clone()),
            Some(_) => Err("no data".into()),
            None => Err(format!("unexpected answer: {data}")),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.0 GET (the connection closes after the answer): status and body.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    get_with(addr, path, None).await
}

/// [`get`] with an `Authorization` header.
pub async fn get_with(
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let authorization = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs promtool with `args` (and `stdin`); panics with its output unless it succeeds.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(on_path("promtool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("$ promtool {}\n{text}", args.join(" "));
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

// ---------------------------------------------------------------------------------------------
// The dashboard

/// A panel's query, as Grafana would send it with the test's variables.
pub struct Query {
    pub panel: String,
    pub expr: String,
}

/// Every panel (rows' nested panels included) with its targets' expressions, checking that
/// each panel and target uses the `${datasource}` variable.
pub fn dashboard_queries(dashboard: &Value) -> Vec<Query> {
    fn walk(panels: &Value, out: &mut Vec<Query>, problems: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            if panel["type"] != "row" {
                if panel["datasource"]["uid"] != "${datasource}" {
                    problems.push(format!(
                        "panel {title:?}: datasource is not ${{datasource}}"
                    ));
                }
                let targets = panel["targets"].as_array().cloned().unwrap_or_default();
                if targets.is_empty() {
                    problems.push(format!("panel {title:?}: no targets"));
                }
                for target in targets {
                    if target["datasource"]["uid"] != "${datasource}" {
                        problems.push(format!("panel {title:?}: a target's datasource"));
                    }
                    match target["expr"].as_str() {
                        Some(expr) if !expr.trim().is_empty() => out.push(Query {
                            panel: title.clone(),
                            expr: expr.to_string(),
                        }),
                        _ => problems.push(format!("panel {title:?}: a target without expr")),
                    }
                }
            }
            walk(&panel["panels"], out, problems);
        }
    }
    let mut queries = Vec::new();
    let mut problems = Vec::new();
    walk(&dashboard["panels"], &mut queries, &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    queries
}

/// `expr` with Grafana's variables replaced as in [`SUBSTITUTIONS`] and [`VARIABLES`].
pub fn substitute(expr: &str) -> String {
    let mut expr = expr.to_string();
    for (from, to) in SUBSTITUTIONS {
        expr = expr.replace(from, to);
    }
    for (name, value) in VARIABLES {
        expr = expr
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!expr.contains('$'), "a variable left in {expr}");
    expr
}

/// The `arbor_*` names in `text`.
pub fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("arbor_") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !preceded {
            names.insert(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    names
}

/// The catalog metric an exported series name belongs to.
pub fn catalog_metric(series: &str) -> Option<&'static arbor_metrics::Metric> {
    arbor_metrics::CATALOG.iter().find(|m| {
        series == m.name
            || (m.kind == arbor_metrics::Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| series.strip_suffix(suffix) == Some(m.name)))
    })
}

/// Whether `expr` names only cluster gauges (`arbor_cluster_*`), which only a runtime in
/// cluster mode exports (every runtime exports the cluster counters, at zero on a single node).
pub fn cluster_mode_only(expr: &str) -> bool {
    let names = metric_names(expr);
    !names.is_empty()
        && names.iter().all(|name| {
            catalog_metric(name).is_some_and(|metric| {
                metric.name.starts_with("arbor_cluster_")
                    && metric.kind == arbor_metrics::Kind::Gauge
            })
        })
}

/// The dashboard and the alerts name only catalog metrics, and the dashboard shows every one.
pub fn check_names(queries: &[Query], alerts: &str) {
    let mut problems = Vec::new();
    let mut shown = BTreeSet::new();
    for query in queries {
        for name in metric_names(&query.expr) {
            match catalog_metric(&name) {
                Some(metric) => {
                    shown.insert(metric.name);
                }
                None => problems.push(format!(
                    "panel {:?}: {name} is not in the catalog",
                    query.panel
                )),
            }
        }
    }
    for name in metric_names(alerts) {
        if catalog_metric(&name).is_none() {
            problems.push(format!("alerts.yml: {name} is not in the catalog"));
        }
    }
    for metric in arbor_metrics::CATALOG {
        if !shown.contains(metric.name) {
            problems.push(format!("no panel shows {}", metric.name));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---------------------------------------------------------------------------------------------
// The deploy files and the live set-up

/// `deploy/`: the Prometheus config and alert rules, the Grafana dashboard and its queries.
pub struct Deploy {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub alerts_path: PathBuf,
    pub alerts: String,
    pub dashboard: Value,
    pub queries: Vec<Query>,
}

impl Deploy {
    pub fn load() -> Deploy {
        let dir = Path::new(ROOT).join("deploy");
        let config_path = dir.join("prometheus/prometheus.yml");
        let alerts_path = dir.join("prometheus/alerts.yml");
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("grafana/arbor.json")).unwrap())
                .unwrap();
        let alerts = std::fs::read_to_string(&alerts_path).unwrap();
        let queries = dashboard_queries(&dashboard);
        Deploy {
            dir,
            config_path,
            alerts_path,
            alerts,
            dashboard,
            queries,
        }
    }
}

/// A runtime with its metrics and admin endpoints, and a Prometheus scraping it every second
/// with the deploy config (its alert rules evaluated every second too).
pub struct Live {
    pub runtime: Runtime,
    pub metrics_addr: SocketAddr,
    pub prometheus: Prometheus,
    /// The config as the test runs it.
    pub test_config: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Live {
    /// Starts the runtime (`build` configures it) and Prometheus (not yet ready).
    pub async fn start(
        deploy: &Deploy,
        build: impl FnOnce(arbor::RuntimeBuilder) -> arbor::RuntimeBuilder,
    ) -> Live {
        let dir = tempfile::tempdir().unwrap();
        let builder = Runtime::builder()
            .data_dir(dir.path().join("data"))
            .metrics("127.0.0.1:0".parse().unwrap());
        let runtime = build(builder).build().await.unwrap();
        let metrics_addr = runtime.metrics_addr().expect("the runtime serves /metrics");

        // Prometheus on the deploy config, scraping that endpoint every second.
        let prom_dir = tempfile::tempdir().unwrap();
        let config = std::fs::read_to_string(&deploy.config_path).unwrap();
        for expected in [
            "127.0.0.1:9464",
            "scrape_interval: 15s",
            "evaluation_interval: 15s",
        ] {
            assert!(
                config.contains(expected),
                "prometheus.yml has no `{expected}`"
            );
        }
        let config = config
            .replace("127.0.0.1:9464", &metrics_addr.to_string())
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        let test_config = prom_dir.path().join("prometheus.yml");
        std::fs::write(&test_config, config).unwrap();
        std::fs::copy(&deploy.alerts_path, prom_dir.path().join("alerts.yml")).unwrap();
        let prometheus = Prometheus::start(&test_config, prom_dir.path());
        Live {
            runtime,
            metrics_addr,
            prometheus,
            test_config,
            _dirs: (dir, prom_dir),
        }
    }
}
