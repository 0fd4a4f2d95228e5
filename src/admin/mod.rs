//! The admin endpoint: a token-protected JSON API on a loopback address, which `arborctl`
//! talks to.
//!
//! Every operation is a method of one trait, [`Admin`], with two implementations: [`Operator`]
//! runs it in-process (on a running runtime, which is what the endpoint serves, or on a
//! stopped host's data directory, `arborctl --data-dir`) and [`HttpAdmin`] asks a running
//! host's endpoint. The routes are named once (`routes.rs`), for the server and the client.
//!
//! ```no_run
//! use arbor::admin::{AdminConfig, AdminToken};
//! use arbor::Runtime;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::builder()
//!     .data_dir("/var/lib/myhost/arbor")
//!     .admin(AdminConfig::new(
//!         "127.0.0.1:9465".parse()?,
//!         AdminToken::from_file("/etc/myhost/arbor-admin.token")?, // mode 0600
//!     ))
//!     .build()
//!     .await?;
//! println!("admin on {:?}", runtime.admin_addr());
//! # Ok(()) }
//! ```

pub mod api;
mod client;
mod error;
mod ops;
mod routes;
mod rows;
mod server;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use arbor_agent::AfterRestore;
use arbor_evolve::{LoopSpec, LoopStatus};
use arbor_shadow::EvaluationOptions;

use api::{
    AgentRow, ArchiveRow, CheckpointRow, CheckpointShow, Cluster, Evaluation, LineageRow,
    ModuleRow, Removed, RestoreDone, RestoreSource, Status, Submitter, WalRecord, WalVerify,
};
pub use client::HttpAdmin;
pub use error::AdminError;
pub use ops::{Candidate, NEEDS_RUNNING_NODE, Operator};
pub(crate) use server::serve;

/// Every admin operation, once: what `arborctl` asks and the admin endpoint serves.
///
/// [`Operator`] does the work in-process; [`HttpAdmin`] asks a running host's endpoint, which
/// hands each request to its own `Operator`. Either way the answers are the [`api`] types and
/// the failures [`AdminError`]s of the same kind, so code written against `Admin` works the
/// same on a running host and on a stopped one's directory.
///
/// The methods return `Send` futures rather than being `async fn`s so that callers on a
/// multi-threaded runtime can rely on it. The trait is not object safe; nothing needs
/// `dyn Admin` (the CLI is generic over the two implementations, the server holds an
/// `Operator`), and that keeps it free of a boxing crate.
///
/// ```no_run
/// use std::path::Path;
///
/// use arbor::admin::{Admin, AdminError, HttpAdmin, Operator};
///
/// /// The agents that are not running, from whichever side answers.
/// async fn down(admin: &impl Admin) -> Result<Vec<String>, AdminError> {
///     let agents = admin.agents().await?;
///     Ok(agents
///         .into_iter()
///         .filter(|agent| agent.state != "running")
///         .map(|agent| agent.name)
///         .collect())
/// }
///
/// # async fn run() -> Result<(), AdminError> {
/// // A running host, through its endpoint...
/// let remote = HttpAdmin::new("127.0.0.1:9465", "the-admin-token-from-its-file");
/// println!("{:?}", down(&remote).await?);
/// // ...or a stopped one, on its data directory.
/// let offline = Operator::offline(Path::new("/var/lib/myhost/arbor"))?;
/// println!("{:?}", down(&offline).await?);
/// # Ok(()) }
/// ```
pub trait Admin {
    /// The host at a glance.
    fn status(&self) -> impl Future<Output = Result<Status, AdminError>> + Send;

    /// Every agent: online from the supervision tree (with what runs it now), offline from
    /// the registry.
    fn agents(&self) -> impl Future<Output = Result<Vec<AgentRow>, AdminError>> + Send;

    /// Forgets an agent that is not running (quarantined, terminated or stopped): its
    /// registry record and checkpoints are deleted and its supervisor drops it. Needs a
    /// running host.
    fn agent_remove(&self, agent: &str)
    -> impl Future<Output = Result<Removed, AdminError>> + Send;

    /// `agent`'s stored checkpoints, oldest first.
    fn checkpoints(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<Vec<CheckpointRow>, AdminError>> + Send;

    /// One checkpoint with its state.
    fn checkpoint_show(
        &self,
        agent: &str,
        lsn: u64,
    ) -> impl Future<Output = Result<CheckpointShow, AdminError>> + Send;

    /// Writes one checkpoint to `path` (on this machine) as a verified, self-describing
    /// export file.
    fn checkpoint_export(
        &self,
        agent: &str,
        lsn: u64,
        path: &Path,
    ) -> impl Future<Output = Result<CheckpointRow, AdminError>> + Send;

    /// Restores `agent` from a stored checkpoint or an export file (`file`, on this machine),
    /// handling the inputs journaled after it as `after` says. On a running host the agent
    /// pauses, is restored and resumes (a quarantined one is rebuilt and started); offline it
    /// is recovered, restored and stopped again (a native agent cannot be: its code is in the
    /// host).
    fn restore(
        &self,
        agent: &str,
        source: &RestoreSource,
        file: Option<&Path>,
        after: AfterRestore,
    ) -> impl Future<Output = Result<RestoreDone, AdminError>> + Send;

    /// Reads every WAL segment and checks every frame.
    fn wal_verify(&self) -> impl Future<Output = Result<WalVerify, AdminError>> + Send;

    /// Up to `limit` WAL records from `from` on (of `agent` only, if given), decoded.
    fn wal_records(
        &self,
        from: u64,
        limit: usize,
        agent: Option<&str>,
    ) -> impl Future<Output = Result<Vec<WalRecord>, AdminError>> + Send;

    /// Modules stored in the vault.
    fn modules(&self) -> impl Future<Output = Result<Vec<ModuleRow>, AdminError>> + Send;

    /// Checks, compiles and stores a module.
    fn module_add(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> impl Future<Output = Result<ModuleRow, AdminError>> + Send;

    /// Admits `candidate` for `agent` and starts its evaluation (replay gate, then shadows)
    /// with `options` (ignore rules, objectives, comparator, where the shadows run). Needs a
    /// running host, as do the other `evolve_*` operations.
    fn evolve_start(
        &self,
        agent: &str,
        candidate: Candidate,
        options: EvaluationOptions,
    ) -> impl Future<Output = Result<Evaluation, AdminError>> + Send;

    /// [`evolve_start`](Self::evolve_start) for a candidate `submitter` brings: who and why
    /// are kept in the lineage and the evolution archive.
    fn evolve_submit(
        &self,
        agent: &str,
        candidate: Candidate,
        submitter: &Submitter,
        options: EvaluationOptions,
    ) -> impl Future<Output = Result<Evaluation, AdminError>> + Send;

    /// `agent`'s evolution archive: every candidate admitted or refused, with its parents,
    /// origin, scores and how far it got. Works offline too.
    fn evolve_archive(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<Vec<ArchiveRow>, AdminError>> + Send;

    /// Starts an evolution loop for `agent` (needs a running host): cycles of candidates from
    /// the spec's sources, each through the arbiter, until stopped or its cycle count is
    /// reached.
    fn evolve_loop_start(
        &self,
        agent: &str,
        spec: &LoopSpec,
    ) -> impl Future<Output = Result<LoopStatus, AdminError>> + Send;

    /// Stops `agent`'s evolution loop.
    fn evolve_loop_stop(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<LoopStatus, AdminError>> + Send;

    /// `agent`'s evolution loop, running or ended, with its last cycle reports.
    fn evolve_loop_status(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<LoopStatus, AdminError>> + Send;

    /// Accepts `agent`'s rejected candidate for `reason` (recorded in the lineage); it then
    /// awaits promotion.
    fn evolve_accept(
        &self,
        agent: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Evaluation, AdminError>> + Send;

    /// `agent`'s current or last evaluation.
    fn evolve_status(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<Evaluation, AdminError>> + Send;

    /// Promotes `agent`'s approved candidate.
    fn evolve_promote(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<Evaluation, AdminError>> + Send;

    /// Rolls `agent`'s watched promotion back, for `reason`.
    fn evolve_rollback(
        &self,
        agent: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Evaluation, AdminError>> + Send;

    /// Stops `agent`'s evaluation or watch (a watched promotion stays).
    fn evolve_cancel(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<Evaluation, AdminError>> + Send;

    /// `agent`'s lineage: every admission, verdict (with its evidence), promotion, rollback
    /// and step, oldest first. Works offline too.
    fn lineage(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<Vec<LineageRow>, AdminError>> + Send;

    /// The cluster as the answering node sees it: every node in the membership and every
    /// registered agent with its owner and lease (what `arborctl cluster status` prints).
    ///
    /// Needs a running node: the cluster's state lives in NATS, not in a data directory, so
    /// offline this is [`AdminError::Busy`]; a host that does not run in cluster mode answers
    /// [`AdminError::NotClustered`].
    ///
    /// ```no_run
    /// use arbor::admin::{Admin, AdminError, HttpAdmin};
    ///
    /// # async fn run() -> Result<(), AdminError> {
    /// let admin = HttpAdmin::new("127.0.0.1:9465", "the-admin-token-from-its-file");
    /// match admin.cluster_status().await {
    ///     Ok(cluster) => {
    ///         for agent in &cluster.agents {
    ///             println!("{} on {:?}", agent.name, agent.owner);
    ///         }
    ///     }
    ///     Err(AdminError::NotClustered) => println!("a single-node host"),
    ///     Err(error) => return Err(error),
    /// }
    /// # Ok(()) }
    /// ```
    fn cluster_status(&self) -> impl Future<Output = Result<Cluster, AdminError>> + Send;
}

/// The secret an admin request must carry (`Authorization: Bearer <token>`).
#[derive(Clone)]
pub struct AdminToken(String);

/// The shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

impl AdminToken {
    /// A token given in configuration (at least [`MIN_TOKEN_LEN`] characters, no whitespace).
    pub fn new(token: impl Into<String>) -> Result<AdminToken, AdminError> {
        let token = token.into();
        if token.len() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
            return Err(AdminError::BadRequest(format!(
                "an admin token needs at least {MIN_TOKEN_LEN} characters and no whitespace"
            )));
        }
        Ok(AdminToken(token))
    }

    /// The token in `path` (surrounding whitespace ignored). The file must be readable by its
    /// owner only (mode 0600 or stricter): a token others can read protects nothing.
    pub fn from_file(path: impl AsRef<Path>) -> Result<AdminToken, AdminError> {
        let path = path.as_ref();
        let unreadable = |e: std::io::Error| {
            AdminError::BadRequest(format!("admin token file {}: {e}", path.display()))
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(AdminError::BadRequest(format!(
                    "admin token file {} has mode {mode:o}: others can read it; chmod 600 it",
                    path.display()
                )));
            }
        }
        #[cfg(not(unix))]
        let _ = metadata;
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        AdminToken::new(text.trim())
    }

    /// The token's text (for a client to send).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `offered` is this token, in time that does not depend on where they differ
    /// (both are hashed first, so not on their lengths either).
    pub fn matches(&self, offered: &str) -> bool {
        let expected = blake3::hash(self.0.as_bytes());
        let offered = blake3::hash(offered.as_bytes());
        constant_time_eq::constant_time_eq_32(expected.as_bytes(), offered.as_bytes())
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Where the admin endpoint listens and the token it requires.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// A loopback address (port 0 picks a free port; see `Runtime::admin_addr`).
    pub addr: SocketAddr,
    /// The token.
    pub token: AdminToken,
}

impl AdminConfig {
    /// The endpoint on `addr` (which must be a loopback address) requiring `token`.
    pub fn new(addr: SocketAddr, token: AdminToken) -> AdminConfig {
        AdminConfig { addr, token }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_match_only_themselves() {
        let token = AdminToken::new("0123456789abcdef-secret").unwrap();
        assert!(token.matches("0123456789abcdef-secret"));
        assert!(!token.matches("0123456789abcdef-secreT"));
        assert!(!token.matches(""));
        assert!(!token.matches("0123456789abcdef-secret "));
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("has a space in it, long enough").is_err());
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[cfg(unix)]
    #[test]
    fn token_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = AdminToken::from_file(&path).unwrap_err();
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            AdminToken::from_file(&path)
                .unwrap()
                .matches("0123456789abcdef-secret")
        );
    }
}
