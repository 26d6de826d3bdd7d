//! Bearer tokens: who may call the API, and who may deploy modules.
//!
//! A request carries `authorization: Bearer <token>`. An admin token may do
//! everything; a user token everything but changing which code runs run on
//! (deploys, defaults, upgrades, resumes, resets, garbage collection) and
//! compiling code it brings (checking a module's bytes). Least privilege
//! splits a user's powers in two: a client token starts, signals, queries,
//! updates, cancels and reads runs but cannot take activity tasks; a worker
//! token only polls for activity tasks and reports on them, optionally only
//! for the activities it names (`TOKEN:charge+refund`), so a leaked worker
//! token neither reads runs nor completes another team's activities.
//! Without tokens a server refuses to start unless it is
//! told to be open ([`Tokens::open`], what `weft dev` on loopback uses); an
//! open host answers only requests addressed to a loopback name and takes
//! writes only as JSON, so that web pages cannot use it.

use super::sessions::Sessions;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use subtle::{Choice, ConstantTimeEq};

/// The tokens a server accepts, kept as their SHA-256 digests: compared in
/// constant time, they say nothing of a token's length or content, and a
/// debug print of them shows no secret.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    admin: Vec<[u8; 32]>,
    user: Vec<[u8; 32]>,
    client: Vec<[u8; 32]>,
    worker: Vec<([u8; 32], Option<Scope>)>,
    open: bool,
}

/// The activities a worker token may take and report on.
pub(crate) type Scope = Arc<BTreeSet<String>>;

/// Who a request comes from, as the token check found it. It travels in the
/// request's extensions to the services, for the calls whose content
/// decides what they need (checking a module's bytes compiles them: an
/// admin's power; a scoped worker names its activities in its calls).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Admin,
    User,
    Client,
    /// Activity tasks only: of any activity (`None`), or of these.
    Worker(Option<Scope>),
}

impl Role {
    /// Whether this role may take and report on tasks of activity `name`.
    pub(crate) fn serves(&self, name: &str) -> bool {
        match self {
            Role::Admin | Role::User | Role::Worker(None) => true,
            Role::Worker(Some(scope)) => scope.contains(name),
            Role::Client => false,
        }
    }

    /// A worker token limited to named activities.
    pub(crate) fn is_scoped(&self) -> bool {
        matches!(self, Role::Worker(Some(_)))
    }

    /// The activities a scoped worker token names, for its refusals.
    pub(crate) fn scope(&self) -> Option<String> {
        match self {
            Role::Worker(Some(scope)) => Some(scope.iter().cloned().collect::<Vec<_>>().join(", ")),
            _ => None,
        }
    }
}

/// Which credential a request came with: the SHA-256 digest of its bearer
/// token, or none on an open host. It travels in the request's extensions
/// beside the [`Role`]: a task token is bound to the credential that polled
/// the task ([`super::task_token`]), so that another worker token cannot
/// report on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Credential(Option<[u8; 32]>);

impl Credential {
    /// No token: an open host, where whoever reaches it is trusted alike.
    pub(crate) fn open() -> Self {
        Self(None)
    }

    pub(crate) fn of_token(token: &str) -> Self {
        Self(Some(digest(token)))
    }

    /// The bytes a task token's MAC covers: the digest, or none.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |d| d.as_slice())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The digests of `tokens`, trimmed, empty ones left out.
fn digests(tokens: &[String]) -> Vec<[u8; 32]> {
    tokens
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(digest)
        .collect()
}

impl Tokens {
    /// Every request is allowed: for a development host on loopback.
    pub fn open() -> Self {
        Self {
            open: true,
            ..Self::default()
        }
    }

    /// Admin tokens may deploy; user tokens may do everything else. Empty
    /// strings are ignored.
    pub fn new(admin: Vec<String>, user: Vec<String>) -> Self {
        Self {
            admin: digests(&admin),
            user: digests(&user),
            ..Self::default()
        }
    }

    /// Adds client tokens: runs, but no activity tasks. Empty strings are ignored.
    pub fn with_clients(mut self, client: Vec<String>) -> Self {
        self.client.extend(digests(&client));
        self
    }

    /// Adds worker tokens: activity tasks only. Each is `TOKEN` (any
    /// activity) or `TOKEN:NAME+NAME…` (only those; `:` cannot be part of a
    /// bearer token). Empty strings are ignored.
    pub fn with_workers(mut self, worker: Vec<String>) -> Result<Self, String> {
        for entry in worker.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let (token, scope) = match entry.split_once(':') {
                None => (entry, None),
                Some((token, names)) => {
                    let names: BTreeSet<String> = names
                        .split('+')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if names.is_empty() {
                        return Err(
                            "a worker token ends in ':' but names no activity; write TOKEN:NAME+NAME, or TOKEN alone for any activity".into(),
                        );
                    }
                    (token.trim(), Some(Arc::new(names)))
                }
            };
            if token.is_empty() {
                return Err(
                    "a worker token entry has activities but no token; write TOKEN:NAME+NAME"
                        .into(),
                );
            }
            self.worker.push((digest(token), scope));
        }
        Ok(self)
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// No token is accepted: such a server would refuse every request.
    pub fn is_empty(&self) -> bool {
        !self.open
            && self.admin.is_empty()
            && self.user.is_empty()
            && self.client.is_empty()
            && self.worker.is_empty()
    }

    pub(crate) fn role(&self, token: &str) -> Option<Role> {
        // Every digest is compared, in constant time, so the time taken
        // says neither which token nearly matched nor how long any is.
        let presented = digest(token);
        let any = |digests: &[[u8; 32]]| {
            digests
                .iter()
                .fold(Choice::from(0), |found, d| found | d.ct_eq(&presented))
        };
        let (admin, user, client) = (any(&self.admin), any(&self.user), any(&self.client));
        let mut worker = None;
        for (d, scope) in &self.worker {
            if bool::from(d.ct_eq(&presented)) {
                worker = Some(Role::Worker(scope.clone()));
            }
        }
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(user) {
            Some(Role::User)
        } else if bool::from(client) {
            Some(Role::Client)
        } else {
            worker
        }
    }
}

/// The calls of activity workers: polling for tasks and reporting on them.
fn is_worker_call(request: &Request) -> bool {
    request.uri().path().starts_with("/weft.v1.WorkerService/")
}

/// What changes the code runs run on is admin only: deploying a module,
/// changing a default, moving runs between modules, resuming a stuck run,
/// deleting what retention let go.
const ADMIN_METHODS: &[&str] = &[
    "/weft.v1.ModuleService/Deploy",
    "/weft.v1.ModuleService/SetDefault",
    "/weft.v1.ModuleService/Upgrade",
    "/weft.v1.ModuleService/CollectGarbage",
    "/weft.v1.WorkflowService/Resume",
    "/weft.v1.WorkflowService/Reset",
];

fn needs_admin(request: &Request) -> bool {
    let path = request.uri().path();
    ADMIN_METHODS.contains(&path)
        || (path.starts_with("/v1/modules") && request.method() != axum::http::Method::GET)
        || (path.starts_with("/v1/workflows/")
            && (path.ends_with("/resume") || path.ends_with("/reset")))
}

/// What the token check consults: the tokens, and the web UI's sessions
/// (which its sign-in page starts from a token).
#[derive(Default)]
pub(crate) struct Access {
    pub(crate) tokens: Tokens,
    pub(crate) sessions: Sessions,
}

/// Refuses a request without an acceptable token before it reaches a service.
pub(crate) async fn check(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    let tokens = &access.tokens;
    let path = request.uri().path();
    if tokens.open {
        return match open_refusal(&request) {
            Some(refusal) => refusal,
            None => {
                request.extensions_mut().insert(Role::Admin);
                request.extensions_mut().insert(Credential::open());
                next.run(request).await
            }
        };
    }
    if matches!(path, "/healthz" | "/" | "/ui/login" | "/ui/logout") {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // The web UI's pages are read by a bearer token or by a session its
    // sign-in page started; a session reads pages, never changes anything.
    let ui_page =
        request.method() == axum::http::Method::GET && (path == "/ui" || path.starts_with("/ui/"));
    if ui_page {
        let role = match presented {
            Some(token) => tokens.role(token),
            None => super::ui::session_cookie(request.headers())
                .and_then(|id| access.sessions.role(id, Instant::now())),
        };
        return match role {
            None | Some(Role::Worker(_)) => {
                axum::response::Redirect::to("/ui/login").into_response()
            }
            Some(role) => {
                request.extensions_mut().insert(role);
                next.run(request).await
            }
        };
    }
    let found = presented.map(|t| tokens.role(t));
    let credential = presented.map(Credential::of_token);
    let denied = match found {
        None => Some((
            tonic::Code::Unauthenticated,
            "this host needs a bearer token: pass --token or set WEFT_TOKEN (header `authorization: Bearer <token>`)",
        )),
        Some(None) => Some((
            tonic::Code::Unauthenticated,
            "the bearer token is not one this host accepts; check WEFT_TOKEN against the server's tokens",
        )),
        Some(Some(Role::User | Role::Client)) if needs_admin(&request) => Some((
            tonic::Code::PermissionDenied,
            "deploying modules, changing defaults, upgrading, resuming, resetting and collecting garbage need an admin token (the server's --admin-token / WEFT_ADMIN_TOKENS)",
        )),
        Some(Some(Role::Client)) if is_worker_call(&request) => Some((
            tonic::Code::PermissionDenied,
            "a client token cannot take or report on activity tasks; give the worker a worker token (the server's --worker-token / WEFT_WORKER_TOKENS)",
        )),
        Some(Some(Role::Worker(_))) if !is_worker_call(&request) => Some((
            tonic::Code::PermissionDenied,
            "a worker token may only poll for activity tasks and report on them; use a client token (--client-token) for runs",
        )),
        Some(Some(_)) => None,
    };
    match denied {
        None => {
            if let (Some(Some(role)), Some(credential)) = (found, credential) {
                request.extensions_mut().insert(role);
                request.extensions_mut().insert(credential);
            }
            next.run(request).await
        }
        Some((code, message)) => {
            let status = if code == tonic::Code::PermissionDenied {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            refusal(&request, status, code, message)
        }
    }
}

/// A refusal as the caller's protocol expects it: gRPC's status headers,
/// or the HTTP API's JSON error with `status`.
fn refusal(request: &Request, status: StatusCode, code: tonic::Code, message: &str) -> Response {
    if is_grpc(request) {
        grpc_refusal(code, message)
    } else {
        super::http::error_body(status, code, message).into_response()
    }
}

pub(crate) fn is_grpc(request: &Request) -> bool {
    content_type(request).is_some_and(|c| c.starts_with("application/grpc"))
}

fn content_type(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// An open host (no tokens, on loopback) trusts whoever can reach it, and a
/// web page in the user's browser can reach loopback. Two things keep such
/// pages out: a request must be addressed to a loopback name (a page whose
/// own name was rebound to 127.0.0.1 sends its own name), and a write must
/// be JSON (a page may post a form or text across sites without asking, but
/// JSON only after a CORS preflight, which this host never grants).
fn open_refusal(request: &Request) -> Option<Response> {
    let refuse = |status: StatusCode, code: tonic::Code, message: &str| {
        Some(refusal(request, status, code, message))
    };
    let named = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if let Some(named) = named.filter(|n| !loopback_name(n)) {
        let message = format!(
            "this development host has no tokens, so it answers only requests addressed to a loopback name (localhost, 127.0.0.1, [::1]); this one was addressed to {named:?}, as a web page reaching it through DNS rebinding would be; use http://127.0.0.1:PORT, or give the host tokens"
        );
        return refuse(
            StatusCode::FORBIDDEN,
            tonic::Code::PermissionDenied,
            &message,
        );
    }
    let json = content_type(request).is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_grpc(request) && request.method() == axum::http::Method::POST && !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            "this development host has no tokens, so it takes writes only as JSON (content-type: application/json), which a web page elsewhere cannot send it; with curl, add -H 'content-type: application/json'",
        );
    }
    None
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn loopback_name(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => return v6.split(']').next() == Some("::1"),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A gRPC error as gRPC clients expect it: HTTP 200 with the status in headers.
fn grpc_refusal(code: tonic::Code, message: &str) -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    if let Ok(v) = HeaderValue::from_str(message) {
        headers.insert("grpc-message", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_are_localhost_127_and_the_v6_loopback() {
        for name in [
            "localhost",
            "LOCALHOST:7233",
            "127.0.0.1",
            "127.0.0.1:7233",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:7233",
        ] {
            assert!(loopback_name(name), "{name}");
        }
        for name in [
            "evil.example",
            "evil.example:7233",
            "localhost.evil.example",
            "10.0.0.1:7233",
            "[::2]:7233",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!loopback_name(name), "{name}");
        }
    }

    #[test]
    fn worker_tokens_may_name_their_activities() {
        let t = Tokens::default()
            .with_clients(vec!["c1".into()])
            .with_workers(vec!["w-any".into(), "w-pay:charge+refund".into()])
            .unwrap();
        assert_eq!(t.role("c1"), Some(Role::Client));
        assert_eq!(t.role("w-any"), Some(Role::Worker(None)));
        let scoped = t.role("w-pay").unwrap();
        assert!(scoped.serves("charge") && scoped.serves("refund"));
        assert!(!scoped.serves("greet"));
        assert_eq!(scoped.scope().as_deref(), Some("charge, refund"));
        assert_eq!(
            t.role("w-pay:charge+refund"),
            None,
            "the scope is not part of the token"
        );
        assert!(!Role::Client.serves("charge"));
        for bad in ["w:", ":charge", "w: + "] {
            assert!(
                Tokens::default().with_workers(vec![bad.into()]).is_err(),
                "{bad}"
            );
        }
        assert!(!t.is_empty());
    }

    #[test]
    fn roles_come_from_the_token_lists() {
        let t = Tokens::new(vec!["a1".into()], vec!["u1".into(), " ".into()]);
        assert_eq!(t.role("a1"), Some(Role::Admin));
        assert_eq!(t.role("u1"), Some(Role::User));
        assert_eq!(t.role("u2"), None);
        assert_eq!(t.role(""), None);
        assert!(!t.is_empty());
        assert!(Tokens::new(vec![], vec!["".into()]).is_empty());
        assert!(!Tokens::open().is_empty());
    }
}
