//! A client of a Weft server over gRPC: what the `weft` command line uses,
//! and what a Rust program uses to start and talk to workflows on a remote host.
//!
//! ```no_run
//! # async fn f() -> Result<(), weft::client::ClientError> {
//! use weft::client::{Client, StartSpec};
//! let client = Client::connect("http://127.0.0.1:7233", None).await?;
//! let started = client
//!     .start(StartSpec::new("hello", "hello-1", serde_json::json!("Ada")))
//!     .await?;
//! let run = client.await_result(&started.workflow_id, None, None).await?;
//! println!("{} {:?}", run.status, run.output);
//! # Ok(()) }
//! ```

mod audit;
mod versions;

pub use versions::{
    DeploySpec, DeployedView, DivergenceView, GarbageView, ModuleSpec, ResetView, RunCheckView,
    RunResults, RunUpgradeView,
};

use crate::api::proto::{
    self, module_service_client::ModuleServiceClient,
    workflow_service_client::WorkflowServiceClient,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Where a client connects when told nothing else.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:7233";

/// The largest message a client sends or accepts (module uploads).
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How long [`Client::await_result`] waits when told no limit.
const DEFAULT_AWAIT: Duration = Duration::from_secs(60);

/// A fresh update id: 128 random bits.
fn update_id() -> Result<String, ClientError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ClientError {
        code: tonic::Code::Internal,
        message: format!("no randomness for an update id: {e}"),
    })?;
    Ok(format!(
        "upd-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// A failed call: the gRPC code (it says whether to retry) and the server's message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub code: tonic::Code,
    pub message: String,
}

impl ClientError {
    /// The host or its database is unreachable for now: the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.code == tonic::Code::Unavailable
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        let message = match s.code() {
            tonic::Code::Unavailable
                if s.message().is_empty() || s.message().contains("transport") =>
            {
                format!(
                    "the Weft host is unreachable ({}); it is retryable: check that it runs and that --address / WEFT_ADDRESS points at it",
                    s.message()
                )
            }
            _ => s.message().to_owned(),
        };
        Self {
            code: s.code(),
            message,
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub(crate) fn new(token: Option<&str>) -> Result<Self, ClientError> {
        token
            .filter(|t| !t.is_empty())
            .map(|t| {
                format!("Bearer {t}").parse().map_err(|_| ClientError {
                    code: tonic::Code::InvalidArgument,
                    message: "the token holds characters a header cannot carry; use the token exactly as the server's operator gave it".into(),
                })
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// How a client trusts a host it reaches at an `https://` address: the
/// system's root certificates, or the operator's own CA.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    ca_pem: Option<Vec<u8>>,
}

impl ClientTls {
    /// Trusts hosts whose certificate the PEM CA certificate(s) in `pem` sign
    /// (instead of the system's roots).
    pub fn with_ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_pem: Some(pem.into()),
        }
    }

    /// [`with_ca_pem`](Self::with_ca_pem) from a file.
    pub fn from_ca_file(path: &std::path::Path) -> Result<Self, ClientError> {
        let pem = std::fs::read(path).map_err(|e| ClientError {
            code: tonic::Code::InvalidArgument,
            message: format!(
                "cannot read the CA file {} ({e}); give the PEM certificate of the CA that signed the host's certificate",
                path.display()
            ),
        })?;
        Ok(Self::with_ca_pem(pem))
    }
}

/// The endpoint of a Weft host at `address`: TLS for `https://` (trusting
/// what `tls` says), plaintext for `http://`. Nothing is connected yet.
pub(crate) fn endpoint(address: &str, tls: &ClientTls) -> Result<Endpoint, ClientError> {
    let invalid = |message: String| ClientError {
        code: tonic::Code::InvalidArgument,
        message,
    };
    let endpoint = Channel::from_shared(address.to_owned()).map_err(|e| {
        invalid(format!(
            "{address:?} is not a valid address ({e}); use a URL such as {DEFAULT_ADDRESS}"
        ))
    })?;
    let endpoint = match endpoint.uri().scheme_str() {
        Some("https") => {
            let config = match &tls.ca_pem {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint
                .tls_config(config)
                .map_err(|e| invalid(format!("cannot use TLS towards {address} ({e})")))?
        }
        Some("http") if tls.ca_pem.is_some() => {
            return Err(invalid(format!(
                "a CA file was given for {address}, a plaintext address; write https:// to reach a host that serves TLS"
            )));
        }
        Some("http") => endpoint,
        _ => {
            return Err(invalid(format!(
                "{address:?} names no scheme weft speaks; use http://HOST:PORT, or https://HOST:PORT for a host that serves TLS"
            )));
        }
    };
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true))
}

/// Opens a channel to a Weft host, failing fast with advice when it is not there.
pub(crate) async fn channel(address: &str, tls: &ClientTls) -> Result<Channel, ClientError> {
    endpoint(address, tls)?
        .connect()
        .await
        .map_err(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            if why.contains("certificate") {
                // Retrying cannot help: the host is there, and not trusted.
                return ClientError {
                    code: tonic::Code::FailedPrecondition,
                    message: format!(
                        "the host at {address} is not trusted ({why}); give the PEM certificate of the CA that signed its certificate with --ca-file (WEFT_CA_FILE), and use the host name the certificate names"
                    ),
                };
            }
            ClientError {
                code: tonic::Code::Unavailable,
                message: format!(
                    "cannot reach a Weft host at {address} ({why}); start one with `weft dev`, or point --address / WEFT_ADDRESS at yours"
                ),
            }
        })
}

type Authed = InterceptedService<Channel, Bearer>;

/// A connection to one Weft host.
#[derive(Clone)]
pub struct Client {
    workflows: WorkflowServiceClient<Authed>,
    modules: ModuleServiceClient<Authed>,
}

/// What to start: the workflow function, its id and input, and where it runs.
#[derive(Clone, Debug, Default)]
pub struct StartSpec {
    pub workflow_type: String,
    pub workflow_id: String,
    pub input: Value,
    /// The module's name (default: the workflow type); its newest version unless `module_version`.
    pub module: Option<String>,
    pub module_version: Option<String>,
    /// allow_duplicate, allow_duplicate_failed_only or reject_duplicate.
    pub id_reuse_policy: Option<String>,
    /// fail or use_existing.
    pub id_conflict_policy: Option<String>,
    pub execution_timeout: Option<Duration>,
    pub run_timeout: Option<Duration>,
    pub memo: Option<Value>,
    pub search_attributes: Option<Value>,
}

impl StartSpec {
    pub fn new(
        workflow_type: impl Into<String>,
        workflow_id: impl Into<String>,
        input: Value,
    ) -> Self {
        Self {
            workflow_type: workflow_type.into(),
            workflow_id: workflow_id.into(),
            input,
            ..Self::default()
        }
    }

    fn to_proto(&self) -> proto::StartRequest {
        proto::StartRequest {
            workflow_type: self.workflow_type.clone(),
            workflow_id: self.workflow_id.clone(),
            input_json: self.input.to_string(),
            module_name: self.module.clone().unwrap_or_default(),
            module_version: self.module_version.clone().unwrap_or_default(),
            module_sha256: String::new(),
            wait_ms: 0,
            options: Some(proto::StartOptions {
                id_reuse_policy: self.id_reuse_policy.clone().unwrap_or_default(),
                id_conflict_policy: self.id_conflict_policy.clone().unwrap_or_default(),
                execution_timeout_ms: self.execution_timeout.map(|d| d.as_millis() as u64),
                run_timeout_ms: self.run_timeout.map(|d| d.as_millis() as u64),
                memo_json: self.memo.as_ref().map(Value::to_string),
                search_attributes_json: self.search_attributes.as_ref().map(Value::to_string),
            }),
        }
    }
}

/// A started run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Started {
    pub run_id: String,
    pub workflow_id: String,
    pub module_sha256: String,
}

/// Why a run failed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FailureView {
    pub error_type: String,
    pub message: String,
}

/// Which runs [`Client::list_page`] asks for, and from where.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListSpec {
    /// running, stuck, completed, failed, cancelled, terminated, continued_as_new or timed_out.
    pub status: Option<String>,
    pub workflow_type: Option<String>,
    pub workflow_id: Option<String>,
    /// Only runs pinned to this module.
    pub module: Option<ModuleSpec>,
    /// A JSON object: every key must be present with an equal value.
    pub search_attributes: Option<Value>,
    /// At most this many (0: 100; more than 1,000: 1,000).
    pub limit: u32,
    /// The previous page's [`RunPageView::next_page_token`]; `None` for the first page.
    pub page_token: Option<String>,
}

/// A page of runs; the JSON of `weft list --output json` and of `GET /v1/workflows`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunPageView {
    pub runs: Vec<RunView>,
    /// The `page_token` of the next page (with the same filter); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl From<proto::ListResponse> for RunPageView {
    fn from(r: proto::ListResponse) -> Self {
        Self {
            runs: r.runs.into_iter().map(Into::into).collect(),
            next_page_token: Some(r.next_page_token).filter(|t| !t.is_empty()),
        }
    }
}

/// A run as `describe` shows it; the JSON of `weft describe --output json` and of the HTTP API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunView {
    pub run_id: String,
    pub workflow_id: String,
    pub workflow_type: String,
    pub module_sha256: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck: Option<Value>,
    /// Events in the history.
    pub events: u64,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_workflow_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_line: Option<String>,
    #[serde(default)]
    pub search_attributes: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continued_to: Option<String>,
    /// What the run waits on (`describe` only): activities without a result yet,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_activities: Vec<PendingActivityView>,
    /// timers that have not fired into the workflow,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_timers: Vec<PendingTimerView>,
    /// and children whose result it has not received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_children: Vec<PendingChildView>,
}

/// An activity a run waits on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PendingActivityView {
    pub seq: u32,
    pub name: String,
    /// `scheduled` (waiting for an attempt, or a retry's backoff) or `running`.
    pub state: String,
    /// Attempts started so far.
    pub attempt: u32,
    /// Running: when the attempt's lease runs out. Scheduled: when the next attempt may start.
    pub next_at_ms: u64,
    /// Running: the host or worker holding the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_details: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at_ms: Option<u64>,
}

/// A timer a run waits on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PendingTimerView {
    pub seq: u32,
    pub fire_at_ms: u64,
}

/// A child workflow a run waits on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PendingChildView {
    pub seq: u32,
    pub workflow_id: String,
    /// `None` when the child could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// A time as the API gives it (milliseconds since the epoch), in UTC:
/// `2026-12-06 19:45:30.132 UTC`.
pub fn format_time(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time)
        .to_string()
        .replacen('T', " ", 1)
        .replace('Z', " UTC")
}

fn failure_view(f: proto::Failure) -> FailureView {
    FailureView {
        error_type: f.error_type,
        message: f.message,
    }
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

impl From<proto::RunInfo> for RunView {
    fn from(r: proto::RunInfo) -> Self {
        Self {
            run_id: r.run_id,
            workflow_id: r.workflow_id,
            workflow_type: r.workflow_type,
            module_sha256: r.module_sha256,
            status: r.status,
            output: r.output_json.as_deref().map(parse_json),
            failure: r.failure.map(failure_view),
            stuck: r.stuck_json.as_deref().map(parse_json),
            events: r.last_seq,
            created_at_ms: r.created_at_ms,
            closed_at_ms: r.closed_at_ms,
            parent_workflow_id: r.parent_workflow_id,
            parent_run_id: r.parent_run_id,
            status_line: r.status_line,
            search_attributes: parse_json(&r.search_attributes_json),
            memo: r.memo_json.as_deref().map(parse_json),
            cancel_requested: r.cancel_requested,
            continued_to: r.continued_to,
            pending_activities: r
                .pending_activities
                .into_iter()
                .map(|a| PendingActivityView {
                    seq: a.seq,
                    name: a.name,
                    state: a.state,
                    attempt: a.attempt,
                    next_at_ms: a.next_at_ms,
                    owner: a.owner,
                    last_failure: a.last_failure.map(failure_view),
                    heartbeat_details: a.heartbeat_details_json.as_deref().map(parse_json),
                    heartbeat_at_ms: a.heartbeat_at_ms,
                })
                .collect(),
            pending_timers: r
                .pending_timers
                .into_iter()
                .map(|t| PendingTimerView {
                    seq: t.seq,
                    fire_at_ms: t.fire_at_ms,
                })
                .collect(),
            pending_children: r
                .pending_children
                .into_iter()
                .map(|c| PendingChildView {
                    seq: c.seq,
                    workflow_id: c.workflow_id,
                    run_id: (!c.run_id.is_empty()).then_some(c.run_id),
                })
                .collect(),
        }
    }
}

/// One event of a history.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EventView {
    pub seq: u64,
    pub kind: String,
    pub recorded_at_ms: u64,
    pub hash: String,
    /// The whole event: `kind` and its fields.
    pub event: Value,
}

/// A run's history.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistoryView {
    pub run_id: String,
    pub chain_verified: bool,
    /// The host's signature of the head, when it has a signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::audit::HeadSignature>,
    /// The run's seal, once it closed on a host with a signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<crate::store::Seal>,
    pub events: Vec<EventView>,
}

impl From<proto::HistoryResponse> for HistoryView {
    fn from(h: proto::HistoryResponse) -> Self {
        Self {
            run_id: h.run_id,
            chain_verified: h.chain_verified,
            signature: h.signature.map(|s| crate::audit::HeadSignature {
                public_key: s.public_key,
                signature: s.signature,
            }),
            seal: h.seal.and_then(|s| {
                Some(crate::store::Seal {
                    event_count: s.event_count,
                    head: crate::model::EventHash::from_hex(&s.head).ok()?,
                    public_key: s.public_key,
                    signature: s.signature,
                    sealed_at_ms: s.sealed_at_ms,
                })
            }),
            events: h
                .events
                .into_iter()
                .map(|e| EventView {
                    seq: e.seq,
                    kind: e.kind,
                    recorded_at_ms: e.recorded_at_ms,
                    hash: e.hash,
                    event: parse_json(&e.event_json),
                })
                .collect(),
        }
    }
}

/// A deployed module; in a listing, with its default flag and run counts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ModuleView {
    pub sha256: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub created_at_ms: u64,
    /// New runs of its name take it.
    #[serde(default)]
    pub is_default: bool,
    /// Running or stuck runs pinned to it.
    #[serde(default)]
    pub open_runs: u64,
    /// Closed runs pinned to it whose histories are kept.
    #[serde(default)]
    pub closed_runs: u64,
}

impl From<proto::ModuleInfo> for ModuleView {
    fn from(m: proto::ModuleInfo) -> Self {
        Self {
            sha256: m.sha256,
            name: m.name,
            version: m.version,
            size: m.size,
            created_at_ms: m.created_at_ms,
            is_default: m.is_default,
            open_runs: m.open_runs,
            closed_runs: m.closed_runs,
        }
    }
}

/// The verdict of replaying a run against its module.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReplayView {
    pub run_id: String,
    pub identical: bool,
    pub events: u64,
    /// When identical: the status the guest ends in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged_at_seq: Option<u64>,
    /// When diverged: the first divergence, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub divergence: String,
    /// When diverged: the recorded and the issued event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

impl From<proto::ReplayResponse> for ReplayView {
    fn from(r: proto::ReplayResponse) -> Self {
        Self {
            run_id: r.run_id,
            identical: r.identical,
            events: r.events,
            status: r.status,
            diverged_at_seq: r.diverged_at_seq,
            divergence: r.divergence,
            detail: Some(r.divergence_json)
                .filter(|d| !d.is_empty())
                .map(|d| parse_json(&d)),
        }
    }
}

fn run_ref(workflow_id: &str, run_id: Option<&str>) -> Option<proto::RunRef> {
    Some(proto::RunRef {
        workflow_id: workflow_id.to_owned(),
        run_id: run_id.unwrap_or_default().to_owned(),
    })
}

impl Client {
    /// Connects to a host, e.g. `http://127.0.0.1:7233`, with a bearer token
    /// if it needs one; an `https://` host must have a certificate the
    /// system trusts (else see [`connect_with`](Self::connect_with)).
    pub async fn connect(address: &str, token: Option<&str>) -> Result<Self, ClientError> {
        Self::connect_with(address, token, &ClientTls::default()).await
    }

    /// [`connect`](Self::connect), trusting an `https://` host as `tls` says.
    pub async fn connect_with(
        address: &str,
        token: Option<&str>,
        tls: &ClientTls,
    ) -> Result<Self, ClientError> {
        let channel = channel(address, tls).await?;
        let bearer = Bearer::new(token)?;
        Ok(Self {
            workflows: WorkflowServiceClient::with_interceptor(channel.clone(), bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            modules: ModuleServiceClient::with_interceptor(channel, bearer)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// Deploys a component and makes it the default of its name; the
    /// version defaults to the start of its sha256. See
    /// [`deploy_module`](Self::deploy_module) for a checked deploy.
    pub async fn deploy(
        &self,
        name: &str,
        version: Option<&str>,
        wasm: Vec<u8>,
    ) -> Result<ModuleView, ClientError> {
        let deployed = self
            .deploy_module(DeploySpec {
                name: name.into(),
                version: version.map(Into::into),
                wasm,
                ..Default::default()
            })
            .await?;
        Ok(deployed.module)
    }

    pub async fn modules(&self) -> Result<Vec<ModuleView>, ClientError> {
        let r = self
            .modules
            .clone()
            .list_modules(proto::ListModulesRequest {})
            .await?;
        Ok(r.into_inner().modules.into_iter().map(Into::into).collect())
    }

    pub async fn start(&self, spec: StartSpec) -> Result<Started, ClientError> {
        let r = self
            .workflows
            .clone()
            .start(spec.to_proto())
            .await?
            .into_inner();
        Ok(Started {
            run_id: r.run_id,
            workflow_id: r.workflow_id,
            module_sha256: r.module_sha256,
        })
    }

    /// Starts a run and waits for its result in one request: the run once it
    /// closed (following continue-as-new), or as it is after `timeout`
    /// (at most 60 s).
    pub async fn start_and_wait(
        &self,
        spec: StartSpec,
        timeout: Duration,
    ) -> Result<(Started, RunView), ClientError> {
        let mut request = spec.to_proto();
        request.wait_ms = (timeout.as_millis() as u64).max(1);
        let r = self.workflows.clone().start(request).await?.into_inner();
        let run = r.run.map(Into::into).ok_or_else(|| ClientError {
            code: tonic::Code::Internal,
            message: "the host answered the start without the run it waited for".into(),
        })?;
        let started = Started {
            run_id: r.run_id,
            workflow_id: r.workflow_id,
            module_sha256: r.module_sha256,
        };
        Ok((started, run))
    }

    pub async fn signal_with_start(
        &self,
        spec: StartSpec,
        signal: &str,
        input: Value,
    ) -> Result<Started, ClientError> {
        let r = self
            .workflows
            .clone()
            .signal_with_start(proto::SignalWithStartRequest {
                start: Some(spec.to_proto()),
                signal_name: signal.into(),
                signal_input_json: input.to_string(),
            })
            .await?
            .into_inner();
        Ok(Started {
            run_id: r.run_id,
            workflow_id: r.workflow_id,
            module_sha256: r.module_sha256,
        })
    }

    /// Signals the workflow id's open run (or `run_id`); returns the run it went to.
    pub async fn signal(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
        name: &str,
        input: Value,
    ) -> Result<String, ClientError> {
        let r = self
            .workflows
            .clone()
            .signal(proto::SignalRequest {
                run: run_ref(workflow_id, run_id),
                name: name.into(),
                input_json: input.to_string(),
            })
            .await?;
        Ok(r.into_inner().run_id)
    }

    pub async fn query(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
        name: &str,
        input: Value,
    ) -> Result<Value, ClientError> {
        let r = self
            .workflows
            .clone()
            .query(proto::QueryRequest {
                run: run_ref(workflow_id, run_id),
                name: name.into(),
                input_json: input.to_string(),
            })
            .await?;
        Ok(parse_json(&r.into_inner().output_json))
    }

    /// Sends an update and waits for the workflow's answer. A host waits
    /// for the answer up to its wait limit per call; the update goes under
    /// an id of this call's, so asking again waits for the same update.
    pub async fn update(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
        name: &str,
        input: Value,
    ) -> Result<Value, ClientError> {
        let request = proto::UpdateRequest {
            run: run_ref(workflow_id, run_id),
            name: name.into(),
            input_json: input.to_string(),
            update_id: update_id()?,
        };
        loop {
            match self.workflows.clone().update(request.clone()).await {
                Ok(r) => return Ok(parse_json(&r.into_inner().output_json)),
                Err(s) if s.code() == tonic::Code::DeadlineExceeded => {}
                Err(s) => return Err(s.into()),
            }
        }
    }

    pub async fn cancel(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
        reason: &str,
    ) -> Result<String, ClientError> {
        let r = self
            .workflows
            .clone()
            .cancel(proto::CancelRequest {
                run: run_ref(workflow_id, run_id),
                reason: reason.into(),
            })
            .await?;
        Ok(r.into_inner().run_id)
    }

    pub async fn terminate(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
        reason: &str,
    ) -> Result<String, ClientError> {
        let r = self
            .workflows
            .clone()
            .terminate(proto::TerminateRequest {
                run: run_ref(workflow_id, run_id),
                reason: reason.into(),
            })
            .await?;
        Ok(r.into_inner().run_id)
    }

    pub async fn describe(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
    ) -> Result<RunView, ClientError> {
        let r = self
            .workflows
            .clone()
            .describe(proto::DescribeRequest {
                run: run_ref(workflow_id, run_id),
            })
            .await?;
        Ok(r.into_inner().into())
    }

    /// Runs, newest first: of a status (e.g. `running`), a workflow type,
    /// pinned to a module. The first page only: [`Client::list_page`] pages.
    pub async fn list(
        &self,
        status: Option<&str>,
        workflow_type: Option<&str>,
        module: Option<&ModuleSpec>,
        limit: u32,
    ) -> Result<Vec<RunView>, ClientError> {
        let spec = ListSpec {
            status: status.map(Into::into),
            workflow_type: workflow_type.map(Into::into),
            module: module.cloned(),
            limit,
            ..ListSpec::default()
        };
        Ok(self.list_page(&spec).await?.runs)
    }

    /// A page of the runs `spec` asks for, newest first, and the token of
    /// the next page: pass it as [`ListSpec::page_token`] with the same filter.
    pub async fn list_page(&self, spec: &ListSpec) -> Result<RunPageView, ClientError> {
        let r = self
            .workflows
            .clone()
            .list(proto::ListRequest {
                workflow_type: spec.workflow_type.clone().unwrap_or_default(),
                status: spec.status.clone().unwrap_or_default(),
                workflow_id: spec.workflow_id.clone().unwrap_or_default(),
                search_attributes_json: spec
                    .search_attributes
                    .as_ref()
                    .map(Value::to_string)
                    .unwrap_or_default(),
                limit: spec.limit,
                module: spec.module.as_ref().map(ModuleSpec::to_proto),
                page_token: spec.page_token.clone().unwrap_or_default(),
            })
            .await?;
        Ok(r.into_inner().into())
    }

    pub async fn history(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
    ) -> Result<HistoryView, ClientError> {
        let r = self
            .workflows
            .clone()
            .history(proto::HistoryRequest {
                run: run_ref(workflow_id, run_id),
            })
            .await?;
        Ok(r.into_inner().into())
    }

    /// Waits for the run to close (following continue-as-new), at most
    /// `timeout` (default 60 s); then returns it as it is. A host answers
    /// one call after its own wait limit at the latest: this asks again
    /// until the run closes or `timeout` passes.
    pub async fn await_result(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<RunView, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout.unwrap_or(DEFAULT_AWAIT);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self
                .workflows
                .clone()
                .await_result(proto::AwaitResultRequest {
                    run: run_ref(workflow_id, run_id),
                    // 0 would ask for the host's default wait.
                    timeout_ms: (left.as_millis() as u64).max(1),
                })
                .await?
                .into_inner();
            let run: RunView = r.run.map(Into::into).ok_or_else(|| ClientError {
                code: tonic::Code::Internal,
                message: "the host answered without the run".into(),
            })?;
            if r.closed || tokio::time::Instant::now() >= deadline {
                return Ok(run);
            }
        }
    }

    pub async fn replay(
        &self,
        workflow_id: &str,
        run_id: Option<&str>,
    ) -> Result<ReplayView, ClientError> {
        let r = self
            .workflows
            .clone()
            .replay(proto::ReplayRequest {
                run: run_ref(workflow_id, run_id),
            })
            .await?;
        Ok(r.into_inner().into())
    }
}
