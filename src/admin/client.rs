//! [`Admin`] over HTTP: a running host's admin endpoint, asked with the token.

use std::path::Path;
use std::time::Duration;

use arbor_agent::AfterRestore;
use arbor_evolve::{LoopSpec, LoopStatus};
use arbor_shadow::EvaluationOptions;
use serde::de::DeserializeOwned;

use super::api::{
    AgentRow, ApiError, ArchiveRow, CheckpointRow, CheckpointShow, Cluster, Evaluation, LineageRow,
    ModuleRow, Removed, RestoreDone, RestoreSource, Status, Submitter, WalRecord, WalVerify,
};
use super::routes::{self, path};
use super::{Admin, AdminError, Candidate};

/// The largest JSON answer read.
const MAX_JSON: u64 = 256 << 20;
/// The largest export file read.
const MAX_EXPORT: u64 = 1 << 30;
/// How long one request may take: a restore replays, a WAL check reads every segment.
const TIMEOUT: Duration = Duration::from_secs(900);

/// A running host's admin endpoint.
///
/// Requests are blocking HTTP/1 calls made on tokio's blocking threads, so the futures need a
/// tokio runtime but never stall its workers. An endpoint that cannot be reached is
/// [`AdminError::Busy`]; an error the endpoint answers keeps its kind.
#[derive(Clone)]
pub struct HttpAdmin {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAdmin")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// One request: its method, route, query and body.
struct Request {
    post: bool,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Request {
    fn get(path: String) -> Request {
        Request {
            post: false,
            path,
            query: Vec::new(),
            body: Vec::new(),
        }
    }

    fn post(path: String) -> Request {
        Request {
            post: true,
            ..Request::get(path)
        }
    }

    fn query(mut self, key: &'static str, value: impl ToString) -> Request {
        self.query.push((key, value.to_string()));
        self
    }

    fn body(mut self, body: Vec<u8>) -> Request {
        self.body = body;
        self
    }
}

impl HttpAdmin {
    /// The endpoint at `addr` (`host:port`), asked with `token`. The token is not checked
    /// here: a wrong one is the endpoint's [`AdminError::Unauthorized`].
    pub fn new(addr: &str, token: impl Into<String>) -> HttpAdmin {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .new_agent();
        HttpAdmin {
            base: format!("http://{addr}"),
            token: token.into(),
            agent,
        }
    }

    /// The answer's body, up to `limit` bytes, if the endpoint says it succeeded.
    async fn send(&self, request: Request, limit: u64) -> Result<Vec<u8>, AdminError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.send_blocking(request, limit))
            .await
            .map_err(|e| AdminError::Failed(format!("the request's thread: {e}")))?
    }

    fn send_blocking(&self, request: Request, limit: u64) -> Result<Vec<u8>, AdminError> {
        let url = format!("{}{}", self.base, request.path);
        let bearer = format!("Bearer {}", self.token);
        let sent = if request.post {
            let mut builder = self
                .agent
                .post(url)
                .header("Authorization", bearer)
                .header("Content-Type", "application/octet-stream");
            for (key, value) in &request.query {
                builder = builder.query(*key, value);
            }
            builder.send(&request.body[..])
        } else {
            let mut builder = self.agent.get(url).header("Authorization", bearer);
            for (key, value) in &request.query {
                builder = builder.query(*key, value);
            }
            builder.call()
        };
        let mut response = sent.map_err(|e| {
            AdminError::Busy(format!(
                "cannot reach the admin endpoint at {}: {e}",
                self.base
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            let error: ApiError = response.body_mut().read_json().unwrap_or(ApiError {
                kind: "failed".into(),
                error: format!("HTTP {status}"),
            });
            return Err(error.into());
        }
        response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| AdminError::Failed(format!("reading the answer: {e}")))
    }

    async fn json<T: DeserializeOwned>(&self, request: Request) -> Result<T, AdminError> {
        let body = self.send(request, MAX_JSON).await?;
        serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unexpected answer: {e}")))
    }
}

/// A file the caller names, read for upload: a bad path is a bad request.
fn read(file: &Path) -> Result<Vec<u8>, AdminError> {
    std::fs::read(file).map_err(|e| AdminError::BadRequest(format!("{}: {e}", file.display())))
}

impl Admin for HttpAdmin {
    async fn status(&self) -> Result<Status, AdminError> {
        self.json(Request::get(path(routes::STATUS, &[]))).await
    }

    async fn agents(&self) -> Result<Vec<AgentRow>, AdminError> {
        self.json(Request::get(path(routes::AGENTS, &[]))).await
    }

    async fn agent_remove(&self, agent: &str) -> Result<Removed, AdminError> {
        self.json(Request::post(path(routes::AGENT_REMOVE, &[&agent])))
            .await
    }

    async fn checkpoints(&self, agent: &str) -> Result<Vec<CheckpointRow>, AdminError> {
        self.json(Request::get(path(routes::CHECKPOINTS, &[&agent])))
            .await
    }

    async fn checkpoint_show(&self, agent: &str, lsn: u64) -> Result<CheckpointShow, AdminError> {
        self.json(Request::get(path(routes::CHECKPOINT, &[&agent, &lsn])))
            .await
    }

    async fn checkpoint_export(
        &self,
        agent: &str,
        lsn: u64,
        file: &Path,
    ) -> Result<CheckpointRow, AdminError> {
        let request = Request::get(path(routes::CHECKPOINT_EXPORT, &[&agent, &lsn]));
        let bytes = self.send(request, MAX_EXPORT).await?;
        std::fs::write(file, &bytes)
            .map_err(|e| AdminError::Failed(format!("{}: {e}", file.display())))?;
        // The export's bytes carry no row: the list has it.
        self.checkpoints(agent)
            .await?
            .into_iter()
            .find(|c| c.lsn == lsn)
            .ok_or_else(|| AdminError::NotFound(format!("no checkpoint of `{agent}` at LSN {lsn}")))
    }

    async fn restore(
        &self,
        agent: &str,
        source: &RestoreSource,
        file: Option<&Path>,
        after: AfterRestore,
    ) -> Result<RestoreDone, AdminError> {
        let after = match after {
            AfterRestore::Replay => "replay",
            AfterRestore::Discard => "discard",
        };
        let request = Request::post(path(routes::RESTORE, &[&agent])).query("after", after);
        let request = match (source, file) {
            (RestoreSource::Stored { lsn }, _) => request.query("lsn", lsn),
            // The endpoint reads no path a client names: the file's bytes travel.
            (RestoreSource::File, Some(file)) => request.body(read(file)?),
            (RestoreSource::File, None) => {
                return Err(AdminError::BadRequest("no checkpoint file given".into()));
            }
        };
        self.json(request).await
    }

    async fn wal_verify(&self) -> Result<WalVerify, AdminError> {
        self.json(Request::get(path(routes::WAL_VERIFY, &[]))).await
    }

    async fn wal_records(
        &self,
        from: u64,
        limit: usize,
        agent: Option<&str>,
    ) -> Result<Vec<WalRecord>, AdminError> {
        let mut request = Request::get(path(routes::WAL_RECORDS, &[]))
            .query("from", from)
            .query("limit", limit);
        if let Some(agent) = agent {
            request = request.query("agent", agent);
        }
        self.json(request).await
    }

    async fn modules(&self) -> Result<Vec<ModuleRow>, AdminError> {
        self.json(Request::get(path(routes::MODULES, &[]))).await
    }

    async fn module_add(&self, name: &str, bytes: &[u8]) -> Result<ModuleRow, AdminError> {
        let request = Request::post(path(routes::MODULES, &[]))
            .query("name", name)
            .body(bytes.to_vec());
        self.json(request).await
    }

    async fn evolve_start(
        &self,
        agent: &str,
        candidate: Candidate,
        options: EvaluationOptions,
    ) -> Result<Evaluation, AdminError> {
        self.evolve_submit(agent, candidate, &Submitter::default(), options)
            .await
    }

    async fn evolve_loop_start(
        &self,
        agent: &str,
        spec: &LoopSpec,
    ) -> Result<LoopStatus, AdminError> {
        let spec = serde_json::to_string(spec)
            .map_err(|e| AdminError::BadRequest(format!("spec: {e}")))?;
        let request = Request::post(path(routes::EVOLUTION_LOOP, &[&agent])).query("spec", spec);
        self.json(request).await
    }

    async fn evolve_loop_stop(&self, agent: &str) -> Result<LoopStatus, AdminError> {
        self.json(Request::post(path(routes::EVOLUTION_LOOP_STOP, &[&agent])))
            .await
    }

    async fn evolve_loop_status(&self, agent: &str) -> Result<LoopStatus, AdminError> {
        self.json(Request::get(path(routes::EVOLUTION_LOOP, &[&agent])))
            .await
    }

    async fn evolve_archive(&self, agent: &str) -> Result<Vec<ArchiveRow>, AdminError> {
        self.json(Request::get(path(routes::EVOLUTION_ARCHIVE, &[&agent])))
            .await
    }

    async fn evolve_submit(
        &self,
        agent: &str,
        candidate: Candidate,
        submitter: &Submitter,
        options: EvaluationOptions,
    ) -> Result<Evaluation, AdminError> {
        let options = serde_json::to_string(&options)
            .map_err(|e| AdminError::BadRequest(format!("options: {e}")))?;
        let request = Request::post(path(routes::EVOLUTION, &[&agent]))
            .query("options", options)
            .query("author", &submitter.author)
            .query("description", &submitter.description);
        let request = match candidate {
            Candidate::Stored(hash) => request.query("module", hash),
            Candidate::Bytes { name, bytes } => request.query("name", name).body(bytes),
        };
        self.json(request).await
    }

    async fn evolve_status(&self, agent: &str) -> Result<Evaluation, AdminError> {
        self.json(Request::get(path(routes::EVOLUTION, &[&agent])))
            .await
    }

    async fn evolve_promote(&self, agent: &str) -> Result<Evaluation, AdminError> {
        self.json(Request::post(path(routes::EVOLUTION_PROMOTE, &[&agent])))
            .await
    }

    async fn evolve_rollback(&self, agent: &str, reason: &str) -> Result<Evaluation, AdminError> {
        let request =
            Request::post(path(routes::EVOLUTION_ROLLBACK, &[&agent])).query("reason", reason);
        self.json(request).await
    }

    async fn evolve_accept(&self, agent: &str, reason: &str) -> Result<Evaluation, AdminError> {
        let request =
            Request::post(path(routes::EVOLUTION_ACCEPT, &[&agent])).query("reason", reason);
        self.json(request).await
    }

    async fn evolve_cancel(&self, agent: &str) -> Result<Evaluation, AdminError> {
        self.json(Request::post(path(routes::EVOLUTION_CANCEL, &[&agent])))
            .await
    }

    async fn lineage(&self, agent: &str) -> Result<Vec<LineageRow>, AdminError> {
        self.json(Request::get(path(routes::LINEAGE, &[&agent])))
            .await
    }

    async fn cluster_status(&self) -> Result<Cluster, AdminError> {
        self.json(Request::get(path(routes::CLUSTER, &[]))).await
    }
}
