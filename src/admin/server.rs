//! The admin endpoint over HTTP/1 (axum): every route behind the token check, each handing
//! its request to the [`Admin`] method of the runtime's [`Operator`].

use std::net::SocketAddr;
use std::sync::Arc;

use arbor_agent::AfterRestore;
use arbor_shadow::EvaluationOptions;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::api::{ApiError, RestoreSource};
use super::rows::scratch_file;
use super::{Admin, AdminError, AdminToken, Candidate, Operator, routes};

/// The largest request body: a module or an exported checkpoint.
const MAX_BODY: usize = 512 << 20;

struct Served {
    operator: Operator,
    token: AdminToken,
}

/// Binds `addr` and serves the admin API for `operator` until `stop` resolves; returns the
/// bound address.
pub(crate) async fn serve(
    addr: SocketAddr,
    token: AdminToken,
    operator: Operator,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let served = Arc::new(Served { operator, token });
    let app = Router::new()
        .route(routes::STATUS, get(status))
        .route(routes::AGENTS, get(agents))
        .route(routes::AGENT_REMOVE, post(agent_remove))
        .route(routes::CHECKPOINTS, get(checkpoints))
        .route(routes::CHECKPOINT, get(checkpoint_show))
        .route(routes::CHECKPOINT_EXPORT, get(checkpoint_export))
        .route(routes::RESTORE, post(restore))
        .route(routes::EVOLUTION, get(evolve_status).post(evolve_start))
        .route(routes::EVOLUTION_PROMOTE, post(evolve_promote))
        .route(routes::EVOLUTION_ROLLBACK, post(evolve_rollback))
        .route(routes::EVOLUTION_CANCEL, post(evolve_cancel))
        .route(routes::EVOLUTION_ACCEPT, post(evolve_accept))
        .route(routes::EVOLUTION_ARCHIVE, get(evolve_archive))
        .route(
            routes::EVOLUTION_LOOP,
            get(evolve_loop_status).post(evolve_loop_start),
        )
        .route(routes::EVOLUTION_LOOP_STOP, post(evolve_loop_stop))
        .route(routes::LINEAGE, get(lineage))
        .route(routes::WAL_VERIFY, get(wal_verify))
        .route(routes::WAL_RECORDS, get(wal_records))
        .route(routes::MODULES, get(modules).post(module_add))
        .route(routes::CLUSTER, get(cluster_status))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&served),
            authorize,
        ))
        .with_state(served);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%error, "admin endpoint stopped");
        }
    });
    Ok(bound)
}

/// Lets a request through only with the right token; counts every request by outcome.
async fn authorize(State(served): State<Arc<Served>>, request: Request, next: Next) -> Response {
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !offered.is_some_and(|token| served.token.matches(token)) {
        metrics::counter!(arbor_metrics::ADMIN_REQUESTS, "outcome" => "unauthorized").increment(1);
        return Failure(AdminError::Unauthorized).into_response();
    }
    let response = next.run(request).await;
    let outcome = if response.status().is_success() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!(arbor_metrics::ADMIN_REQUESTS, "outcome" => outcome).increment(1);
    response
}

/// An [`AdminError`] as an HTTP response.
struct Failure(AdminError);

impl From<AdminError> for Failure {
    fn from(error: AdminError) -> Self {
        Failure(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // The host is fine; what was asked does not apply to how it runs.
            AdminError::NotClustered => StatusCode::CONFLICT,
        };
        let body = ApiError {
            kind: self.0.kind().into(),
            error: self.0.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

type Answer<T> = Result<Json<T>, Failure>;

async fn status(State(s): State<Arc<Served>>) -> Answer<super::api::Status> {
    Ok(Json(s.operator.status().await?))
}

async fn agents(State(s): State<Arc<Served>>) -> Answer<Vec<super::api::AgentRow>> {
    Ok(Json(s.operator.agents().await?))
}

async fn checkpoints(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
) -> Answer<Vec<super::api::CheckpointRow>> {
    Ok(Json(s.operator.checkpoints(&agent).await?))
}

async fn checkpoint_show(
    State(s): State<Arc<Served>>,
    Path((agent, lsn)): Path<(String, u64)>,
) -> Answer<super::api::CheckpointShow> {
    Ok(Json(s.operator.checkpoint_show(&agent, lsn).await?))
}

async fn checkpoint_export(
    State(s): State<Arc<Served>>,
    Path((agent, lsn)): Path<(String, u64)>,
) -> Result<Response, Failure> {
    let file = scratch_file(&[])?;
    s.operator
        .checkpoint_export(&agent, lsn, file.path())
        .await?;
    let bytes = std::fs::read(file.path())
        .map_err(|e| AdminError::Failed(format!("reading the export: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
struct RestoreQuery {
    /// A stored checkpoint's LSN; without it the body is an export file.
    lsn: Option<u64>,
    after: AfterRestore,
}

async fn restore(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
    Query(query): Query<RestoreQuery>,
    body: Bytes,
) -> Answer<super::api::RestoreDone> {
    let done = match query.lsn {
        Some(lsn) => {
            s.operator
                .restore(&agent, &RestoreSource::Stored { lsn }, None, query.after)
                .await?
        }
        None => {
            let file = scratch_file(&body)?;
            s.operator
                .restore(&agent, &RestoreSource::File, Some(file.path()), query.after)
                .await?
        }
    };
    Ok(Json(done))
}

async fn agent_remove(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
) -> Answer<super::api::Removed> {
    Ok(Json(s.operator.agent_remove(&agent).await?))
}

#[derive(Deserialize)]
struct StartQuery {
    /// A stored module's hash; without it the body is the module and `name` its label.
    module: Option<String>,
    name: Option<String>,
    /// The evaluation's options as JSON (`EvaluationOptions`); the defaults without it.
    options: Option<String>,
    /// Who submitted the candidate, and why.
    author: Option<String>,
    description: Option<String>,
}

async fn evolve_start(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
    Query(query): Query<StartQuery>,
    body: Bytes,
) -> Answer<super::api::Evaluation> {
    let candidate = match query.module {
        Some(hash) => Candidate::stored(&hash)?,
        None => Candidate::Bytes {
            name: query.name.unwrap_or_else(|| format!("{agent}-candidate")),
            bytes: body.to_vec(),
        },
    };
    let options = match query.options {
        None => EvaluationOptions::default(),
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| AdminError::BadRequest(format!("options: {e}")))?,
    };
    let submitter = super::api::Submitter {
        author: query.author.unwrap_or_default(),
        description: query.description.unwrap_or_default(),
    };
    Ok(Json(
        s.operator
            .evolve_submit(&agent, candidate, &submitter, options)
            .await?,
    ))
}

#[derive(Deserialize)]
struct LoopQuery {
    /// The loop's `LoopSpec` as JSON; the defaults without it.
    spec: Option<String>,
}

async fn evolve_loop_start(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
    Query(query): Query<LoopQuery>,
) -> Answer<arbor_evolve::LoopStatus> {
    let spec = match query.spec {
        None => arbor_evolve::LoopSpec::default(),
        Some(json) => {
            serde_json::from_str(&json).map_err(|e| AdminError::BadRequest(format!("spec: {e}")))?
        }
    };
    Ok(Json(s.operator.evolve_loop_start(&agent, &spec).await?))
}

async fn evolve_loop_stop(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
) -> Answer<arbor_evolve::LoopStatus> {
    Ok(Json(s.operator.evolve_loop_stop(&agent).await?))
}

async fn evolve_loop_status(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
) -> Answer<arbor_evolve::LoopStatus> {
    Ok(Json(s.operator.evolve_loop_status(&agent).await?))
}

async fn evolve_archive(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
) -> Answer<Vec<super::api::ArchiveRow>> {
    Ok(Json(s.operator.evolve_archive(&agent).await?))
}

#[derive(Deserialize)]
struct AcceptQuery {
    reason: Option<String>,
}

async fn evolve_accept(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
    Query(query): Query<AcceptQuery>,
) -> Answer<super::api::Evaluation> {
    let reason = query.reason.unwrap_or_default();
    Ok(Json(s.operator.evolve_accept(&agent, &reason).await?))
}

async fn evolve_status(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
) -> Answer<super::api::Evaluation> {
    Ok(Json(s.operator.evolve_status(&agent).await?))
}

async fn evolve_promote(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
) -> Answer<super::api::Evaluation> {
    Ok(Json(s.operator.evolve_promote(&agent).await?))
}

#[derive(Deserialize)]
struct RollbackQuery {
    reason: Option<String>,
}

async fn evolve_rollback(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
    Query(query): Query<RollbackQuery>,
) -> Answer<super::api::Evaluation> {
    let reason = query
        .reason
        .unwrap_or_else(|| "asked by an operator".into());
    Ok(Json(s.operator.evolve_rollback(&agent, &reason).await?))
}

async fn evolve_cancel(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
) -> Answer<super::api::Evaluation> {
    Ok(Json(s.operator.evolve_cancel(&agent).await?))
}

async fn lineage(
    State(s): State<Arc<Served>>,
    Path(agent): Path<String>,
) -> Answer<Vec<super::api::LineageRow>> {
    Ok(Json(s.operator.lineage(&agent).await?))
}

async fn wal_verify(State(s): State<Arc<Served>>) -> Answer<super::api::WalVerify> {
    Ok(Json(s.operator.wal_verify().await?))
}

#[derive(Deserialize)]
struct InspectQuery {
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
    agent: Option<String>,
}

async fn wal_records(
    State(s): State<Arc<Served>>,
    Query(query): Query<InspectQuery>,
) -> Answer<Vec<super::api::WalRecord>> {
    let limit = query.limit.unwrap_or(100).min(10_000);
    Ok(Json(
        s.operator
            .wal_records(query.from, limit, query.agent.as_deref())
            .await?,
    ))
}

async fn modules(State(s): State<Arc<Served>>) -> Answer<Vec<super::api::ModuleRow>> {
    Ok(Json(s.operator.modules().await?))
}

#[derive(Deserialize)]
struct AddQuery {
    name: String,
}

async fn module_add(
    State(s): State<Arc<Served>>,
    Query(query): Query<AddQuery>,
    body: Bytes,
) -> Answer<super::api::ModuleRow> {
    Ok(Json(s.operator.module_add(&query.name, &body).await?))
}

async fn cluster_status(State(s): State<Arc<Served>>) -> Answer<super::api::Cluster> {
    Ok(Json(s.operator.cluster_status().await?))
}
