//! HTTP/JSON for `curl` and browsers, on the same port as gRPC. Each route
//! turns its JSON into the gRPC request and calls the same service, so the
//! two cannot drift apart. Payloads are plain JSON values here, not JSON text.
//!
//! | method and path | does |
//! |---|---|
//! | `POST /v1/workflows` | start: `{"workflow_type", "workflow_id", "input", "module"?, "module_version"?, "options"?}` |
//! | `GET /v1/workflows?status=&workflow_type=&workflow_id=&limit=&page_token=` | list: a page, `{"runs", "next_page_token"?}` |
//! | `GET /v1/workflows/{id}` | describe |
//! | `GET /v1/workflows/{id}/history` | the history, with `chain_verified` |
//! | `GET /v1/workflows/{id}/result?timeout_ms=` | wait for the run to close (at most the wait limit, 60 s: then `"closed": false`) |
//! | `POST /v1/workflows/{id}/signals/{name}` | signal; the body is the input |
//! | `POST /v1/workflows/{id}/queries/{name}` | query; the body (optional) is the input |
//! | `POST /v1/workflows/{id}/updates/{name}?update_id=` | update; the body is the input; waits at most the wait limit for the answer |
//! | `POST /v1/workflows/{id}/cancel`, `/terminate` | `{"reason"}` (optional) |
//! | `POST /v1/workflows/{id}/replay` | replay against its module |
//! | `POST /v1/workflows/{id}/resume` | resume a stuck run: `{"module_sha256"}` (optional; admin) |
//! | `PUT /v1/modules/{name}?version=&check=&keep_default=` | deploy; the body is the `.wasm` (admin) |
//! | `GET /v1/modules` | deployed modules, defaults and run counts |
//! | `GET /healthz` | 200 when the host is up (no token) |
//! | `GET /metrics` | this host's metrics, Prometheus text format |
//!
//! Every `{id}` route takes `?run_id=` to address an earlier run.
//! Errors are `{"error": {"code", "message", "retryable"}}` with a fitting
//! status, the framework's own refusals (a body over its
//! [limit](super::Limits), a malformed path or query) included.

use super::ApiState;
use super::proto::{self, workflow_service_server::WorkflowService};
use crate::client::{
    DeployedView, HistoryView, ModuleView, ReplayView, RunPageView, RunView, Started,
};
use axum::Json;
use axum::body::Bytes;
// axum's `Path` and `Query`, refusing in the API's JSON error shape.
use super::extract::{ApiPath as Path, ApiQuery as Query};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tonic::Request;

pub(crate) fn routes(state: Arc<ApiState>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/workflows", post(start).get(list))
        .route("/v1/workflows/{id}", get(describe))
        .route("/v1/workflows/{id}/history", get(history))
        .route("/v1/workflows/{id}/result", get(result))
        .route("/v1/workflows/{id}/signals/{name}", post(signal))
        .route("/v1/workflows/{id}/queries/{name}", post(query))
        .route("/v1/workflows/{id}/updates/{name}", post(update))
        .route("/v1/workflows/{id}/cancel", post(cancel))
        .route("/v1/workflows/{id}/terminate", post(terminate))
        .route("/v1/workflows/{id}/replay", post(replay))
        .route("/v1/workflows/{id}/resume", post(resume))
        .route("/v1/modules", get(modules))
        .route("/v1/modules/{name}", put(deploy))
        .with_state(state)
}

/// An error as JSON with the HTTP status its gRPC code means.
pub(crate) fn error_body(status: StatusCode, code: tonic::Code, message: &str) -> Response {
    let body = json!({ "error": {
        "code": code_name(code),
        "message": message,
        // A wait that ran out (an update not yet answered) ends the same way
        // as an unavailable database, and so does a run that holds as many
        // signals or updates as it may (429, not a body over its limit: 413):
        // the same call may succeed later.
        "retryable": matches!(code, tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
            || status == StatusCode::TOO_MANY_REQUESTS,
    }});
    (status, Json(body)).into_response()
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        InvalidArgument => "invalid_argument",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        Unauthenticated => "unauthenticated",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        DeadlineExceeded => "deadline_exceeded",
        ResourceExhausted => "resource_exhausted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        _ => "internal",
    }
}

struct ApiError(tonic::Status);

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        Self(s)
    }
}

/// The HTTP status a gRPC code means.
pub(crate) fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        InvalidArgument => StatusCode::BAD_REQUEST,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        FailedPrecondition => StatusCode::UNPROCESSABLE_ENTITY,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_body(http_status(self.0.code()), self.0.code(), self.0.message())
    }
}

type Answer<T> = Result<Json<T>, ApiError>;

/// `?run_id=`: an earlier run of the workflow id.
#[derive(Deserialize, Default)]
pub(crate) struct RunQuery {
    #[serde(default)]
    pub(crate) run_id: String,
}

fn run_ref(id: String, q: RunQuery) -> Option<proto::RunRef> {
    Some(proto::RunRef {
        workflow_id: id,
        run_id: q.run_id,
    })
}

/// A request body that is a JSON value (empty: `null`).
fn body_json(body: &Bytes) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("null".into());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        tonic::Status::invalid_argument(format!(
            "the request body is not JSON ({e}); send the input as JSON, e.g. '\"Ada\"' or '{{\"amount\": 10}}'"
        ))
    })?;
    Ok(value.to_string())
}

#[derive(Deserialize, Default)]
struct StartBody {
    #[serde(default)]
    workflow_type: String,
    #[serde(default)]
    workflow_id: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    module: String,
    #[serde(default)]
    module_version: String,
    #[serde(default)]
    module_sha256: String,
    #[serde(default)]
    options: Option<StartOptionsBody>,
    /// Signal-with-start: `{"name", "input"}`.
    #[serde(default)]
    signal: Option<SignalBody>,
    /// Start and wait for the result in one request (at most 60 s).
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Deserialize, Default)]
struct StartOptionsBody {
    #[serde(default)]
    id_reuse_policy: String,
    #[serde(default)]
    id_conflict_policy: String,
    execution_timeout_ms: Option<u64>,
    run_timeout_ms: Option<u64>,
    memo: Option<Value>,
    search_attributes: Option<Value>,
}

#[derive(Deserialize)]
struct SignalBody {
    name: String,
    #[serde(default)]
    input: Value,
}

/// A request body that is a JSON object of type `T`, whatever its
/// `Content-Type` says (`curl -d` sends a form's), with the error in the API's
/// shape when it is not one.
fn body_object<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
    expected: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        tonic::Status::invalid_argument(format!("the body should be {expected} ({e})")).into()
    })
}

async fn start(State(api): State<Arc<ApiState>>, body: Bytes) -> Answer<Value> {
    let b: StartBody = body_object(
        &body,
        r#"{"workflow_type", "workflow_id", "input", "module"?, "options"?, "signal"?, "wait_ms"?}"#,
    )?;
    if b.wait_ms > 0 && b.signal.is_some() {
        return Err(tonic::Status::invalid_argument(
            "wait_ms applies to a plain start; after a signal-with-start, wait with GET /v1/workflows/{id}/result",
        )
        .into());
    }
    if b.workflow_type.is_empty() || b.workflow_id.is_empty() {
        return Err(tonic::Status::invalid_argument(
            r#"name the workflow to start: {"workflow_type": "…", "workflow_id": "…", "input": …}"#,
        )
        .into());
    }
    let o = b.options.unwrap_or_default();
    let start = proto::StartRequest {
        workflow_type: b.workflow_type,
        workflow_id: b.workflow_id,
        input_json: b.input.to_string(),
        module_name: b.module,
        module_version: b.module_version,
        module_sha256: b.module_sha256,
        wait_ms: b.wait_ms,
        options: Some(proto::StartOptions {
            id_reuse_policy: o.id_reuse_policy,
            id_conflict_policy: o.id_conflict_policy,
            execution_timeout_ms: o.execution_timeout_ms,
            run_timeout_ms: o.run_timeout_ms,
            memo_json: o.memo.map(|v| v.to_string()),
            search_attributes_json: o.search_attributes.map(|v| v.to_string()),
        }),
    };
    let r = match b.signal {
        None => api.workflows.start(Request::new(start)).await?,
        Some(s) => {
            api.workflows
                .signal_with_start(Request::new(proto::SignalWithStartRequest {
                    start: Some(start),
                    signal_name: s.name,
                    signal_input_json: s.input.to_string(),
                }))
                .await?
        }
    }
    .into_inner();
    let started = Started {
        run_id: r.run_id,
        workflow_id: r.workflow_id,
        module_sha256: r.module_sha256,
    };
    let mut answer = json!(started);
    if b.wait_ms > 0 {
        let run: Option<RunView> = r.run.map(Into::into);
        answer["closed"] = json!(r.closed);
        answer["run"] = json!(run);
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    workflow_type: String,
    #[serde(default)]
    workflow_id: String,
    #[serde(default)]
    limit: u32,
    /// Runs pinned to a module: `module_sha256`, or `module` and `version`.
    #[serde(default)]
    module_sha256: String,
    #[serde(default)]
    module: String,
    #[serde(default)]
    version: String,
    /// The `next_page_token` of the previous page.
    #[serde(default)]
    page_token: String,
}

async fn list(State(api): State<Arc<ApiState>>, Query(q): Query<ListQuery>) -> Answer<Value> {
    let r = api
        .workflows
        .list(Request::new(proto::ListRequest {
            workflow_type: q.workflow_type,
            status: q.status,
            workflow_id: q.workflow_id,
            search_attributes_json: String::new(),
            limit: q.limit,
            module: Some(proto::ModuleRef {
                sha256: q.module_sha256,
                name: q.module,
                version: q.version,
            }),
            page_token: q.page_token,
        }))
        .await?
        .into_inner();
    let page = RunPageView::from(r);
    Ok(Json(json!(page)))
}

async fn describe(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Answer<RunView> {
    let r = api
        .workflows
        .describe(Request::new(proto::DescribeRequest {
            run: run_ref(id, q),
        }))
        .await?;
    Ok(Json(r.into_inner().into()))
}

async fn history(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Answer<HistoryView> {
    let r = api
        .workflows
        .history(Request::new(proto::HistoryRequest {
            run: run_ref(id, q),
        }))
        .await?;
    Ok(Json(r.into_inner().into()))
}

#[derive(Deserialize)]
struct ResultQuery {
    #[serde(default)]
    run_id: String,
    #[serde(default)]
    timeout_ms: u64,
}

async fn result(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<ResultQuery>,
) -> Answer<Value> {
    let r = api
        .workflows
        .await_result(Request::new(proto::AwaitResultRequest {
            run: run_ref(id, RunQuery { run_id: q.run_id }),
            timeout_ms: q.timeout_ms,
        }))
        .await?
        .into_inner();
    let run: Option<RunView> = r.run.map(Into::into);
    Ok(Json(json!({ "closed": r.closed, "run": run })))
}

async fn signal(
    State(api): State<Arc<ApiState>>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<RunQuery>,
    body: Bytes,
) -> Answer<Value> {
    let r = api
        .workflows
        .signal(Request::new(proto::SignalRequest {
            run: run_ref(id, q),
            name,
            input_json: body_json(&body)?,
        }))
        .await?;
    Ok(Json(json!({ "run_id": r.into_inner().run_id })))
}

async fn query(
    State(api): State<Arc<ApiState>>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<RunQuery>,
    body: Bytes,
) -> Answer<Value> {
    let r = api
        .workflows
        .query(Request::new(proto::QueryRequest {
            run: run_ref(id, q),
            name,
            input_json: body_json(&body)?,
        }))
        .await?;
    let output: Value = serde_json::from_str(&r.into_inner().output_json).unwrap_or(Value::Null);
    Ok(Json(json!({ "output": output })))
}

/// `?run_id=&update_id=`: an update under the caller's id, so that asking
/// again after a wait ran out waits for the same update.
#[derive(Deserialize)]
struct UpdateQuery {
    #[serde(default)]
    run_id: String,
    #[serde(default)]
    update_id: String,
}

async fn update(
    State(api): State<Arc<ApiState>>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<UpdateQuery>,
    body: Bytes,
) -> Answer<Value> {
    let r = api
        .workflows
        .update(Request::new(proto::UpdateRequest {
            run: run_ref(id, RunQuery { run_id: q.run_id }),
            name,
            input_json: body_json(&body)?,
            update_id: q.update_id,
        }))
        .await?;
    let output: Value = serde_json::from_str(&r.into_inner().output_json).unwrap_or(Value::Null);
    Ok(Json(json!({ "output": output })))
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

fn reason(body: &Bytes) -> Result<String, ApiError> {
    let b: ReasonBody = body_object(body, r#"{"reason": "…"} or empty"#)?;
    Ok(b.reason)
}

async fn cancel(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
    body: Bytes,
) -> Answer<Value> {
    let r = api
        .workflows
        .cancel(Request::new(proto::CancelRequest {
            run: run_ref(id, q),
            reason: reason(&body)?,
        }))
        .await?;
    Ok(Json(json!({ "run_id": r.into_inner().run_id })))
}

async fn terminate(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
    body: Bytes,
) -> Answer<Value> {
    let r = api
        .workflows
        .terminate(Request::new(proto::TerminateRequest {
            run: run_ref(id, q),
            reason: reason(&body)?,
        }))
        .await?;
    Ok(Json(json!({ "run_id": r.into_inner().run_id })))
}

async fn replay(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Answer<ReplayView> {
    let r = api
        .workflows
        .replay(Request::new(proto::ReplayRequest {
            run: run_ref(id, q),
        }))
        .await?;
    Ok(Json(r.into_inner().into()))
}

async fn metrics(State(api): State<Arc<ApiState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.workflows.host.metrics_text(),
    )
        .into_response()
}

async fn modules(State(api): State<Arc<ApiState>>) -> Answer<Value> {
    let modules: Vec<ModuleView> = api
        .modules
        .list()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(json!({ "modules": modules })))
}

#[derive(Deserialize)]
struct DeployQuery {
    #[serde(default)]
    version: String,
    /// Store it without making it the default.
    #[serde(default)]
    keep_default: bool,
    /// Make it the default only if no open run would diverge on it.
    #[serde(default)]
    check: bool,
}

async fn deploy(
    State(api): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(q): Query<DeployQuery>,
    body: Bytes,
) -> Answer<DeployedView> {
    let request = proto::DeployRequest {
        name,
        version: q.version,
        wasm: body.to_vec(),
        keep_default: q.keep_default,
        check: q.check,
    };
    Ok(Json(api.modules.deploy(&request).await?.into()))
}

#[derive(Deserialize, Default)]
struct ResumeBody {
    /// Resume on this deployed module (else on the run's own).
    #[serde(default)]
    module_sha256: String,
}

async fn resume(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
    body: Bytes,
) -> Answer<RunView> {
    let body: ResumeBody = body_object(&body, r#"{"module_sha256": "…"} or empty"#)?;
    let r = api
        .workflows
        .resume(Request::new(proto::ResumeRequest {
            run: run_ref(id, q),
            module: Some(proto::ModuleRef {
                sha256: body.module_sha256,
                ..Default::default()
            }),
        }))
        .await?;
    Ok(Json(r.into_inner().into()))
}
