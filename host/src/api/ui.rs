//! The web UI: read-only pages for a browser on the same port as the API —
//! runs with filters, one run with its history as a timeline, the deployed
//! modules. Every page is built from the same gRPC service calls as the
//! HTTP/JSON routes, so what it shows is what `weft describe` and `weft show`
//! say.
//!
//! | path | shows |
//! |---|---|
//! | `GET /ui?status=&workflow_type=&workflow_id=&module_sha256=&limit=&page_token=` | runs, newest first, 200 a page unless `limit` says |
//! | `GET /ui/workflows/{id}?run_id=` | a run: its state, result and history |
//! | `GET /ui/modules` | deployed modules, defaults and the runs on each |
//! | `GET, POST /ui/login` | a host with tokens: sign in with a token |
//! | `POST /ui/logout` | sign out |
//!
//! A browser cannot send a bearer header, so on a host with tokens the
//! sign-in page checks the token once and starts a [session](super::sessions):
//! the cookie holds a random session id, never the token, is `HttpOnly`,
//! `SameSite=Strict` (and `Secure` over TLS), and the token check accepts it
//! for `GET /ui…` only: it can read pages, never change anything. The
//! sign-in form carries a CSRF value that must match the one in a cookie
//! the form's page set (double submit), so another site cannot sign a
//! browser in under a token of its choosing.

use super::ApiState;
use super::auth::Role;
use super::extract::{path_problem, query_problem};
use super::http::{RunQuery, http_status};
use super::proto::{self, workflow_service_server::WorkflowService};
use super::sessions::secret;
use crate::client::{HistoryView, ModuleView, RunView, format_time as when};
use axum::Form;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tonic::Request;

/// The largest login form accepted.
const LOGIN_BODY_BYTES: usize = 4 << 10;

/// The cookie that holds a signed-in browser's session id.
const SESSION_COOKIE: &str = "weft_session";

/// The cookie that held the token itself, before sessions: cleared at sign-in.
const OLD_TOKEN_COOKIE: &str = "weft_token";

/// The sign-in form's CSRF cookie, sent back to `/ui/login` only.
const CSRF_COOKIE: &str = "weft_login_csrf";

/// How long a sign-in form stays good.
const CSRF_MAX_AGE_SECONDS: u32 = 3600;

/// How many runs a page of the list shows, unless its `limit` says.
const LIST_LIMIT: u32 = 200;

/// How often an open run's page reloads itself.
const OPEN_RUN_REFRESH_SECONDS: u32 = 5;

/// A payload longer than this is shown cut, with the whole of it one click away.
const SHORT_PAYLOAD: usize = 160;

const STATUSES: &[&str] = &[
    "running",
    "stuck",
    "completed",
    "failed",
    "cancelled",
    "terminated",
    "timed_out",
    "continued_as_new",
];

const CSS: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: .6em 1.5em; display: flex; gap: 1.5em; align-items: baseline; }
header a { color: #cfd8ea; text-decoration: none; } header a:hover { color: #fff; }
header .brand { font-weight: 700; color: #fff; font-size: 1.15em; }
main { padding: 1em 1.5em; }
h1 { font-size: 1.3em; margin: .3em 0 .8em; } h2 { font-size: 1.1em; margin: 1.5em 0 .5em; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e3e6ec; vertical-align: top; }
th { background: #eef0f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
pre { margin: 0; white-space: pre-wrap; word-break: break-all; }
.badge { display: inline-block; padding: 0 .5em; border-radius: .7em; font-size: 12px; font-weight: 600; }
.running { background: #dbeafe; color: #1e40af; } .completed { background: #dcfce7; color: #166534; }
.failed, .stuck, .timed_out { background: #fee2e2; color: #991b1b; }
.cancelled, .terminated { background: #fef3c7; color: #92400e; } .continued_as_new { background: #ede9fe; color: #5b21b6; }
.ok { color: #166534; font-weight: 600; } .bad { color: #991b1b; font-weight: 600; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25em 1.2em; background: #fff; padding: .8em 1em; margin: 0; }
dt { color: #5b6477; } dd { margin: 0; }
form.filters { display: flex; gap: .6em; align-items: end; margin-bottom: 1em; flex-wrap: wrap; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #5b6477; }
input, select, button { font: inherit; padding: .2em .4em; }
.muted { color: #5b6477; } .error { background: #fee2e2; padding: .8em 1em; }
details summary { cursor: pointer; }
form.signout { margin-left: auto; }
"#;

pub(crate) fn routes(state: Arc<ApiState>) -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(runs))
        .route("/ui/workflows/{id}", get(run))
        .route("/ui/modules", get(modules))
        .route(
            "/ui/login",
            // Anyone may post here, before any token is checked: a token's
            // worth of body, not the API's request limit.
            get(login_form)
                .post(login)
                .layer(DefaultBodyLimit::max(LOGIN_BODY_BYTES)),
        )
        .route(
            "/ui/logout",
            post(logout).layer(DefaultBodyLimit::max(LOGIN_BODY_BYTES)),
        )
        .with_state(state)
}

/// A page that says what went wrong, with the status it means.
struct PageError(StatusCode, String);

impl From<tonic::Status> for PageError {
    fn from(s: tonic::Status) -> Self {
        Self(http_status(s.code()), s.message().to_owned())
    }
}

impl From<PathRejection> for PageError {
    fn from(e: PathRejection) -> Self {
        Self(e.status(), path_problem(&e))
    }
}

impl From<QueryRejection> for PageError {
    fn from(e: QueryRejection) -> Self {
        Self(e.status(), query_problem(&e))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = page(
            "Error",
            html! {
                h1 { "Error" }
                p.error { (self.1) }
                p { a href="/ui" { "All runs" } }
            },
        );
        (self.0, body).into_response()
    }
}

fn page(title: &str, content: Markup) -> Markup {
    page_refreshed(title, None, false, content)
}

/// A page of a host with tokens has a sign-out button.
fn signed_page(api: &ApiState, title: &str, content: Markup) -> Markup {
    page_refreshed(title, None, !api.access.tokens.is_open(), content)
}

/// A page the browser loads again every `refresh` seconds.
fn page_refreshed(title: &str, refresh: Option<u32>, sign_out: bool, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh { meta http-equiv="refresh" content=(seconds); }
                title { (title) " · Weft" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    a.brand href="/ui" { "Weft" }
                    a href="/ui" { "Runs" }
                    a href="/ui/modules" { "Modules" }
                    @if sign_out {
                        form.signout method="post" action="/ui/logout" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (content) }
            }
        }
    }
}

/// Each deployed module's `NAME VERSION`, by sha256 (the module records
/// alone: no run is counted).
async fn module_names(api: &ApiState) -> Result<HashMap<String, String>, PageError> {
    let modules = api
        .modules
        .host
        .store()
        .modules()
        .await
        .map_err(|e| super::mapping::status(e.into()))?;
    Ok(modules
        .into_iter()
        .map(|m| (m.sha256.0, format!("{} {}", m.name, m.version)))
        .collect())
}

/// A module as `NAME VERSION` when it is deployed here, else its short sha256.
fn module_label(names: &HashMap<String, String>, sha: &str) -> String {
    names
        .get(sha)
        .cloned()
        .unwrap_or_else(|| short(sha).to_owned())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status.replace('_', " ")) } }
}

fn run_link(workflow_id: &str, run_id: &str) -> String {
    format!(
        "/ui/workflows/{}?run_id={}",
        encode(workflow_id),
        encode(run_id)
    )
}

/// What a path segment or a query value keeps as it is: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment or a query value.
fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// A word as a shell reads it back: quoted unless it is plain.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A JSON value, cut to a line when long, with the whole of it unfolded on a click.
fn payload(value: &Value) -> Markup {
    let line = value.to_string();
    if line.chars().count() <= SHORT_PAYLOAD {
        return html! { code { (line) } };
    }
    let cut: String = line.chars().take(SHORT_PAYLOAD).collect();
    let pretty = serde_json::to_string_pretty(value).unwrap_or(line);
    html! {
        details {
            summary { code { (cut) "…" } }
            pre { (pretty) }
        }
    }
}

#[derive(Deserialize, Default)]
struct RunsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    workflow_type: String,
    #[serde(default)]
    workflow_id: String,
    #[serde(default)]
    module_sha256: String,
    /// Runs a page (at most 1000).
    limit: Option<u32>,
    /// The page after the one that gave this token.
    #[serde(default)]
    page_token: String,
}

impl RunsQuery {
    /// The link to this list's page of `page_token`: the same filters.
    fn page_link(&self, page_token: Option<&str>) -> String {
        let mut link = String::from("/ui");
        let limit = self.limit.map(|l| l.to_string()).unwrap_or_default();
        let pairs = [
            ("status", self.status.as_str()),
            ("workflow_type", self.workflow_type.as_str()),
            ("workflow_id", self.workflow_id.as_str()),
            ("module_sha256", self.module_sha256.as_str()),
            ("limit", limit.as_str()),
            ("page_token", page_token.unwrap_or_default()),
        ];
        for (key, value) in pairs.into_iter().filter(|(_, v)| !v.is_empty()) {
            link.push(if link.len() == 3 { '?' } else { '&' });
            link.push_str(key);
            link.push('=');
            link.push_str(&encode(value));
        }
        link
    }
}

async fn runs(
    State(api): State<Arc<ApiState>>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Markup, PageError> {
    let Query(q) = q?;
    let listed = api
        .workflows
        .list(Request::new(proto::ListRequest {
            workflow_type: q.workflow_type.trim().to_owned(),
            status: q.status.clone(),
            workflow_id: q.workflow_id.trim().to_owned(),
            search_attributes_json: String::new(),
            limit: q.limit.unwrap_or(LIST_LIMIT),
            module: (!q.module_sha256.is_empty()).then(|| proto::ModuleRef {
                sha256: q.module_sha256.clone(),
                ..proto::ModuleRef::default()
            }),
            page_token: q.page_token.clone(),
        }))
        .await?
        .into_inner();
    let next_page = Some(listed.next_page_token).filter(|t| !t.is_empty());
    let later_page = !q.page_token.is_empty();
    let runs: Vec<RunView> = listed.runs.into_iter().map(Into::into).collect();
    let names = module_names(&api).await?;
    let filtered = !(q.status.is_empty()
        && q.workflow_type.is_empty()
        && q.workflow_id.is_empty()
        && q.module_sha256.is_empty());
    Ok(signed_page(
        &api,
        "Runs",
        html! {
            h1 { "Runs" }
            form.filters method="get" action="/ui" {
                label { "status"
                    select name="status" {
                        option value="" { "any" }
                        @for s in STATUSES {
                            option value=(s) selected[q.status == *s] { (s.replace('_', " ")) }
                        }
                    }
                }
                label { "workflow type" input name="workflow_type" value=(q.workflow_type); }
                label { "workflow id" input name="workflow_id" value=(q.workflow_id); }
                @if let Some(limit) = q.limit { input type="hidden" name="limit" value=(limit); }
                @if !q.module_sha256.is_empty() {
                    input type="hidden" name="module_sha256" value=(q.module_sha256);
                    span.muted { "on module " code { (module_label(&names, &q.module_sha256)) } }
                }
                button type="submit" { "Filter" }
                @if filtered { a href="/ui" { "clear" } }
            }
            @if runs.is_empty() {
                p.muted { "No " @if later_page { "more " } "runs" @if filtered { " match these filters" } "."
                    @if later_page { " " a href=(q.page_link(None)) { "first page" } } }
            } @else {
                table {
                    thead { tr {
                        th { "Workflow id" } th { "Type" } th { "Status" } th { "Status line" }
                        th { "Module" } th.num { "Events" } th { "Started" } th { "Closed" }
                    } }
                    tbody {
                        @for r in &runs {
                            tr {
                                td { a href=(run_link(&r.workflow_id, &r.run_id)) { (r.workflow_id) } }
                                td { (r.workflow_type) }
                                td { (status_badge(&r.status)) }
                                td { (r.status_line.as_deref().unwrap_or("")) }
                                td { span title=(r.module_sha256) { (module_label(&names, &r.module_sha256)) } }
                                td.num { (r.events) }
                                td { (when(r.created_at_ms)) }
                                td { (r.closed_at_ms.map(when).unwrap_or_default()) }
                            }
                        }
                    }
                }
                p.muted { (runs.len()) " run(s), newest first"
                    @if later_page { ", after those of the earlier pages" }
                    "."
                    @if later_page { " " a href=(q.page_link(None)) { "first page" } }
                    @if let Some(next) = &next_page { " " a rel="next" href=(q.page_link(Some(next))) { "next page" } }
                }
            }
        },
    ))
}

async fn run(
    State(api): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<RunQuery>, QueryRejection>,
) -> Result<Markup, PageError> {
    let (Path(id), Query(q)) = (id?, q?);
    let reference = || {
        Some(proto::RunRef {
            workflow_id: id.clone(),
            run_id: q.run_id.clone(),
        })
    };
    let run: RunView = api
        .workflows
        .describe(Request::new(proto::DescribeRequest { run: reference() }))
        .await?
        .into_inner()
        .into();
    // The history of the run described, even if the workflow id moved on meanwhile.
    let history: HistoryView = api
        .workflows
        .history(Request::new(proto::HistoryRequest {
            run: Some(proto::RunRef {
                workflow_id: id.clone(),
                run_id: run.run_id.clone(),
            }),
        }))
        .await?
        .into_inner()
        .into();
    let names = module_names(&api).await?;
    let start_ms = history.events.first().map_or(0, |e| e.recorded_at_ms);
    let json_history = format!(
        "/v1/workflows/{}/history?run_id={}",
        encode(&run.workflow_id),
        encode(&run.run_id)
    );
    let open = run.status == "running";
    Ok(page_refreshed(
        &run.workflow_id,
        open.then_some(OPEN_RUN_REFRESH_SECONDS),
        !api.access.tokens.is_open(),
        html! {
            h1 { (run.workflow_id) " " (status_badge(&run.status)) }
            dl {
                dt { "Workflow type" } dd { (run.workflow_type) }
                dt { "Run id" } dd.mono { (run.run_id) }
                dt { "Module" } dd {
                    a href={ "/ui?module_sha256=" (encode(&run.module_sha256)) } {
                        (module_label(&names, &run.module_sha256))
                    }
                    " " span.mono.muted { (run.module_sha256) }
                }
                dt { "Started" } dd { (when(run.created_at_ms)) }
                @if let Some(closed) = run.closed_at_ms {
                    dt { "Closed" } dd { (when(closed)) " (" (humantime::format_duration(Duration::from_millis(closed.saturating_sub(run.created_at_ms)))) ")" }
                }
                @if let Some(line) = &run.status_line { dt { "Status line" } dd { (line) } }
                @if let (Some(parent), Some(parent_run)) = (&run.parent_workflow_id, &run.parent_run_id) {
                    dt { "Parent" } dd { a href=(run_link(parent, parent_run)) { (parent) } }
                }
                @if let Some(next) = &run.continued_to {
                    dt { "Continued as" } dd { a href=(run_link(&run.workflow_id, next)) { (next) } }
                }
                @if let Some(reason) = &run.cancel_requested { dt { "Cancel requested" } dd { (reason) } }
                @if run.search_attributes.as_object().is_some_and(|o| !o.is_empty()) {
                    dt { "Search attributes" } dd { (payload(&run.search_attributes)) }
                }
                @if let Some(memo) = &run.memo { dt { "Memo" } dd { (payload(memo)) } }
                @if let Some(output) = &run.output { dt { "Result" } dd { (payload(output)) } }
                @if let Some(failure) = &run.failure {
                    dt { "Failure" } dd { code { (failure.error_type) } ": " (failure.message) }
                }
                @if let Some(stuck) = &run.stuck { dt { "Stuck" } dd { (payload(stuck)) } }
            }
            (waiting_on(&run))
            h2 {
                "History: " (history.events.len()) " events, "
                @if history.chain_verified {
                    span.ok { "hash chain verified" }
                } @else {
                    span.bad { "hash chain BROKEN" }
                }
                @if let Some(signed) = &history.signature {
                    span.muted { ", head signed by " code { (short(&signed.public_key)) } }
                }
                @if let Some(seal) = &history.seal {
                    span.muted { ", sealed at " (when(seal.sealed_at_ms)) " when it closed" }
                }
            }
            p.muted {
                @if open { "This page reloads every " (OPEN_RUN_REFRESH_SECONDS) " s while the run is open. " }
                a href=(json_history) { "as JSON" } " · " code { "weft export " (shell_word(&run.workflow_id)) } " for an auditor" }
            table {
                thead { tr { th.num { "#" } th { "Recorded" } th.num { "+ms" } th { "Event" } th { "Details" } th { "Hash" } } }
                tbody {
                    @for e in &history.events {
                        tr {
                            td.num { (e.seq) }
                            td { (when(e.recorded_at_ms)) }
                            td.num { (e.recorded_at_ms.saturating_sub(start_ms)) }
                            td { code { (e.kind) } }
                            td { (payload(&details(&e.event))) }
                            td.mono title=(e.hash) { (short(&e.hash)) }
                        }
                    }
                }
            }
        },
    ))
}

/// What an open run waits on: its activities, timers and children.
fn waiting_on(run: &RunView) -> Markup {
    if run.pending_activities.is_empty()
        && run.pending_timers.is_empty()
        && run.pending_children.is_empty()
    {
        return html! {};
    }
    html! {
        h2 { "Waiting on" }
        table {
            thead { tr { th.num { "#" } th { "What" } th { "State" } th { "Details" } } }
            tbody {
                @for a in &run.pending_activities {
                    tr {
                        td.num { (a.seq) }
                        td { "activity " code { (a.name) } }
                        td {
                            @if a.state == "running" {
                                span.badge.running { "running" } " attempt " (a.attempt)
                                @if let Some(owner) = &a.owner { " on " code { (owner) } }
                                br; span.muted { "lease until " (when(a.next_at_ms)) }
                            } @else if a.attempt == 0 {
                                "scheduled, no attempt yet"
                            } @else {
                                "attempt " (a.attempt + 1) " at " (when(a.next_at_ms))
                            }
                        }
                        td {
                            @if let Some(f) = &a.last_failure {
                                "last failure " code { (f.error_type) } ": " (f.message) br;
                            }
                            @if let Some(at) = a.heartbeat_at_ms {
                                "last heartbeat at " (when(at))
                                @if let Some(details) = &a.heartbeat_details { ": " (payload(details)) }
                            }
                        }
                    }
                }
                @for t in &run.pending_timers {
                    tr {
                        td.num { (t.seq) }
                        td { "timer" }
                        td { "fires at " (when(t.fire_at_ms)) }
                        td {}
                    }
                }
                @for c in &run.pending_children {
                    tr {
                        td.num { (c.seq) }
                        td { "child " a href=(run_link(&c.workflow_id, c.run_id.as_deref().unwrap_or(""))) { (c.workflow_id) } }
                        td { @if c.run_id.is_none() { "not started" } @else { "running" } }
                        td {}
                    }
                }
            }
        }
    }
}

/// An event's fields without its kind (the kind has a column of its own).
fn details(event: &Value) -> Value {
    match event {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(k, _)| k.as_str() != "kind")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

async fn modules(State(api): State<Arc<ApiState>>) -> Result<Markup, PageError> {
    let mut modules: Vec<ModuleView> = api
        .modules
        .list()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    modules.sort_by(|a, b| {
        (a.name.as_str(), a.created_at_ms).cmp(&(b.name.as_str(), b.created_at_ms))
    });
    Ok(signed_page(
        &api,
        "Modules",
        html! {
            h1 { "Modules" }
            @if modules.is_empty() {
                p.muted { "No modules deployed: " code { "weft deploy FILE.wasm --name NAME" } "." }
            } @else {
                table {
                    thead { tr {
                        th { "Name" } th { "Version" } th { "sha256" } th.num { "KiB" } th { "Default" }
                        th.num { "Open runs" } th.num { "Closed runs" } th { "Deployed" }
                    } }
                    tbody {
                        @for m in &modules {
                            tr {
                                td { (m.name) }
                                td { (m.version) }
                                td.mono title=(m.sha256) { (short(&m.sha256)) }
                                td.num { (m.size.div_ceil(1024)) }
                                td { @if m.is_default { span.ok { "default" } } }
                                td.num { a href={ "/ui?module_sha256=" (encode(&m.sha256)) } { (m.open_runs) } }
                                td.num { a href={ "/ui?module_sha256=" (encode(&m.sha256)) } { (m.closed_runs) } }
                                td { (when(m.created_at_ms)) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// A cookie for the UI's paths: `HttpOnly`, `SameSite=Strict`, `Secure`
/// over TLS; `max_age` 0 removes it.
fn cookie(api: &ApiState, name: &str, value: &str, path: &str, max_age: Option<u32>) -> String {
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(seconds) = max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    if api.tls {
        cookie.push_str("; Secure");
    }
    cookie
}

fn with_cookies(cookies: &[String], response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    for c in cookies {
        if let Ok(value) = HeaderValue::from_str(c) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn login_form(State(api): State<Arc<ApiState>>) -> Response {
    if api.access.tokens.is_open() {
        return Redirect::to("/ui").into_response();
    }
    login_page(&api, StatusCode::OK, None)
}

/// The sign-in form with a fresh CSRF value, in the form and in its cookie.
fn login_page(api: &ApiState, status: StatusCode, problem: Option<&str>) -> Response {
    let csrf = secret();
    let set = cookie(
        api,
        CSRF_COOKIE,
        &csrf,
        "/ui/login",
        Some(CSRF_MAX_AGE_SECONDS),
    );
    let body = page(
        "Sign in",
        html! {
            h1 { "Sign in" }
            p { "This host needs a token. It is checked once; the browser then holds a session that can only read these pages." }
            @if let Some(problem) = problem { p.error { (problem) } }
            form method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="password" name="token" placeholder="token" autofocus;
                " "
                button type="submit" { "Sign in" }
            }
        },
    );
    with_cookies(&[set], (status, body))
}

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    form: Result<Form<Login>, FormRejection>,
) -> Response {
    if api.access.tokens.is_open() {
        return Redirect::to("/ui").into_response();
    }
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => {
            let problem = match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => format!(
                    "The sign-in form is larger than any token ({LOGIN_BODY_BYTES} bytes at most): paste the token alone."
                ),
                _ => format!(
                    "The sign-in form could not be read ({}): sign in with the form below.",
                    e.body_text()
                ),
            };
            return login_page(&api, e.status(), Some(&problem));
        }
    };
    let expected = cookie_value(&headers, CSRF_COOKIE).unwrap_or_default();
    let matches = !expected.is_empty()
        && expected.len() == form.csrf.len()
        && bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes()));
    if !matches {
        return login_page(
            &api,
            StatusCode::FORBIDDEN,
            Some(
                "This sign-in did not come from this host's sign-in form, or the form expired (or the browser keeps no cookies): sign in again with the form below.",
            ),
        );
    }
    let token = form.token.trim();
    if !token68(token) {
        return login_page(
            &api,
            StatusCode::BAD_REQUEST,
            Some(
                "That is not a token: paste the value of WEFT_TOKEN (letters, digits and - . _ ~ + / only, = at the end).",
            ),
        );
    }
    let role = match api.access.tokens.role(token) {
        None => {
            return login_page(
                &api,
                StatusCode::UNAUTHORIZED,
                Some("This host does not accept that token; check it against the server's tokens."),
            );
        }
        Some(Role::Worker(_)) => {
            return login_page(
                &api,
                StatusCode::FORBIDDEN,
                Some(
                    "That is a worker token, which may only take activity tasks; sign in with a client, user or admin token to read runs.",
                ),
            );
        }
        Some(role) => role,
    };
    let session = api.access.sessions.start(role, Instant::now());
    let cookies = [
        cookie(&api, SESSION_COOKIE, &session, "/ui", None),
        cookie(&api, CSRF_COOKIE, "", "/ui/login", Some(0)),
        cookie(&api, OLD_TOKEN_COOKIE, "", "/ui", Some(0)),
    ];
    with_cookies(&cookies, Redirect::to("/ui"))
}

/// Ends the browser's session and sends it to the sign-in page. Needs no
/// CSRF value: the session cookie is `SameSite=Strict`, so another site's
/// form cannot end it.
async fn logout(State(api): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        api.access.sessions.end(id);
    }
    let cleared = cookie(&api, SESSION_COOKIE, "", "/ui", Some(0));
    with_cookies(&[cleared], Redirect::to("/ui/login"))
}

/// RFC 7235's token68, what a bearer token is made of: letters, digits and
/// `-._~+/`, then any number of `=`.
fn token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The value of the request's cookie `name`.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
}

/// The session id in a request's `weft_session` cookie.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie_value(headers, SESSION_COOKIE).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_payloads_read_well() {
        assert_eq!(when(0), "1970-01-01 00:00:00.000 UTC");
        let long = Value::String("x".repeat(500));
        let shown = payload(&long).into_string();
        assert!(shown.contains("<details>"), "{shown}");
        assert_eq!(
            payload(&serde_json::json!({"a": "<b>"})).into_string(),
            "<code>{&quot;a&quot;:&quot;&lt;b&gt;&quot;}</code>"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; weft_session=s3s; b=2".parse().unwrap(),
        );
        assert_eq!(session_cookie(&headers), Some("s3s"));
        assert_eq!(cookie_value(&headers, "b"), Some("2"));
    }

    #[test]
    fn a_page_link_keeps_the_filters() {
        let q = RunsQuery {
            status: "running".into(),
            workflow_type: "a b&c".into(),
            limit: Some(3),
            page_token: "old".into(),
            ..RunsQuery::default()
        };
        assert_eq!(
            q.page_link(Some("eyJ2-_")),
            "/ui?status=running&workflow_type=a%20b%26c&limit=3&page_token=eyJ2-_"
        );
        assert_eq!(
            q.page_link(None),
            "/ui?status=running&workflow_type=a%20b%26c&limit=3",
            "the first page"
        );
        assert_eq!(RunsQuery::default().page_link(None), "/ui");
    }

    #[test]
    fn a_login_token_is_token68() {
        for ok in ["t0k", "admin-secret", "a.b_c~d+e/f", "YWJj==", "x="] {
            assert!(token68(ok), "{ok}");
        }
        for bad in ["", "=", "a;Domain=evil", "a b", "a,b", "é", "a\"b", "=a"] {
            assert!(!token68(bad), "{bad}");
        }
    }
}
