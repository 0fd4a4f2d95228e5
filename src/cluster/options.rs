//! [`ClusterOptions`]: how a runtime joins a cluster.

use std::path::PathBuf;
use std::time::Duration;

use super::ClusterError;

/// How a runtime joins a cluster (see [`RuntimeBuilder::cluster`](crate::RuntimeBuilder::cluster)).
///
/// ```
/// use std::time::Duration;
/// let options = arbor::ClusterOptions::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"], "host-a")
///     .replicas(3)
///     .lease(Duration::from_secs(6));
/// assert_eq!(options.node, "host-a");
/// ```
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The NATS servers (any of them; the client learns the rest from the cluster).
    pub urls: Vec<String>,
    /// This node's name, unique in the cluster: letters, digits, `-`, `_`.
    pub node: String,
    /// A NATS credentials file (`.creds`, user JWT + NKey seed), if the servers require one.
    pub credentials: Option<PathBuf>,
    /// A user and password, if the servers require them.
    pub user_password: Option<(String, String)>,
    /// A token, if the servers require one.
    pub token: Option<String>,
    /// Replicas of the journal stream and every bucket (3 for fault tolerance; 1 for
    /// development on one server).
    pub replicas: usize,
    /// How long a claim or renewal holds an agent: after a node dies its agents are claimed
    /// elsewhere this long (plus [`max_clock_skew`](Self::max_clock_skew)) after its last
    /// renewal. The owner renews every third of it.
    pub lease: Duration,
    /// The largest difference between two hosts' wall clocks the deployment tolerates
    /// (leases end by the owner's clock; a claimer waits this much longer).
    pub max_clock_skew: Duration,
    /// How long a journal append may wait for the stream's acknowledgement before its outcome
    /// is unknown (the agent then stops until it is taken over again).
    pub append_timeout: Duration,
    /// How often the ownership loop runs when nothing wakes it earlier.
    pub tick: Duration,
    /// Connect only to [`urls`](Self::urls), never to the servers the cluster advertises
    /// (for hosts that reach the servers through a proxy or NAT).
    pub ignore_discovered_servers: bool,
    /// Whether placement may put agents on this node (default `true`). A node with `false`
    /// spawns, calls, casts and stops agents like any other but runs none: a client, a batch
    /// job, a short-lived tool. It is in the membership as draining from its first
    /// heartbeat, so its joining and leaving move no agent.
    pub hosts_agents: bool,
}

impl ClusterOptions {
    /// The defaults for `urls` and `node`: R3, a 6 s lease, 500 ms clock skew.
    pub fn new<I, S>(urls: I, node: impl Into<String>) -> ClusterOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClusterOptions {
            urls: urls.into_iter().map(Into::into).collect(),
            node: node.into(),
            credentials: None,
            user_password: None,
            token: None,
            replicas: 3,
            lease: Duration::from_secs(6),
            max_clock_skew: Duration::from_millis(500),
            append_timeout: Duration::from_secs(5),
            tick: Duration::from_millis(500),
            ignore_discovered_servers: false,
            hosts_agents: true,
        }
    }

    /// With this many replicas of the stream and buckets.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// With this lease duration.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// With this tolerated clock skew.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// With this credentials file.
    pub fn credentials(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials = Some(path.into());
        self
    }

    /// With this user and password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user_password = Some((user.into(), password.into()));
        self
    }

    /// With this token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// With this append timeout.
    pub fn append_timeout(mut self, timeout: Duration) -> Self {
        self.append_timeout = timeout;
        self
    }

    /// With this idle period of the ownership loop.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Connects only to the given URLs (see the field).
    pub fn ignore_discovered_servers(mut self) -> Self {
        self.ignore_discovered_servers = true;
        self
    }

    /// Whether placement may put agents here (see [`hosts_agents`](Self::hosts_agents)).
    ///
    /// ```
    /// let client = arbor::ClusterOptions::new(["nats://127.0.0.1:4222"], "tool").hosts_agents(false);
    /// assert!(!client.hosts_agents);
    /// ```
    pub fn hosts_agents(mut self, hosts: bool) -> Self {
        self.hosts_agents = hosts;
        self
    }

    /// Connects to the servers with the configured credentials.
    pub(crate) async fn connect(&self) -> Result<async_nats::Client, ClusterError> {
        let valid = !self.node.is_empty()
            && self
                .node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ClusterError::NodeName(self.node.clone()));
        }
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("arbor/{}", self.node))
            // A node that lost its server keeps trying (the lease decides whether it still owns
            // anything when it is back).
            .max_reconnects(None);
        let connect_error = |source| ClusterError::Connect {
            urls: self.urls.join(","),
            source,
        };
        if let Some(path) = &self.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| ClusterError::Bucket {
                    what: format!("reading credentials {}", path.display()),
                    source: e.into(),
                })?;
        }
        if let Some((user, password)) = &self.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if self.ignore_discovered_servers {
            options = options.ignore_discovered_servers();
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            options.connect(self.urls.as_slice()),
        )
        .await
        .map_err(|_| ClusterError::Bucket {
            what: format!(
                "connecting to {} (no server answered in 10 s)",
                self.urls.join(",")
            ),
            source: "timed out".into(),
        })?
        .map_err(connect_error)?;
        Ok(client)
    }
}
