//! Bearer tokens: who may call the API, and who may deploy modules.
//!
//! A request carries `authorization: Bearer <token>`. An admin token may do
//! everything; a user token everything but changing which code runs run on
//! (deploys, defaults, upgrades, resumes, resets, garbage collection): clients and
//! activity workers. Without tokens a server refuses to start unless it is
//! told to be open ([`Tokens::open`], what `weft dev` on loopback uses).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The tokens a server accepts.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    admin: Vec<String>,
    user: Vec<String>,
    open: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Admin,
    User,
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
        let keep = |v: Vec<String>| {
            v.into_iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect()
        };
        Self {
            admin: keep(admin),
            user: keep(user),
            open: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// No token is accepted: such a server would refuse every request.
    pub fn is_empty(&self) -> bool {
        !self.open && self.admin.is_empty() && self.user.is_empty()
    }

    fn role(&self, token: &str) -> Option<Role> {
        // Every token is compared, so the time taken does not say which one nearly matched.
        let mut role = None;
        for t in &self.admin {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                role = Some(Role::Admin);
            }
        }
        for t in &self.user {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) && role.is_none() {
                role = Some(Role::User);
            }
        }
        role
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// Refuses a request without an acceptable token before it reaches a service.
pub(crate) async fn check(
    State(tokens): State<Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if tokens.open || matches!(path, "/healthz" | "/" | "/ui/login") {
        return next.run(request).await;
    }
    // The web UI's pages are read with the token its login page keeps in a cookie.
    let ui_page =
        request.method() == axum::http::Method::GET && (path == "/ui" || path.starts_with("/ui/"));
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or_else(|| {
            ui_page
                .then(|| super::ui::cookie_token(request.headers()))
                .flatten()
        });
    if ui_page && presented.is_none_or(|t| tokens.role(t).is_none()) {
        return axum::response::Redirect::to("/ui/login").into_response();
    }
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"));
    let denied = match presented.map(|t| tokens.role(t)) {
        None => Some((
            tonic::Code::Unauthenticated,
            "this host needs a bearer token: pass --token or set WEFT_TOKEN (header `authorization: Bearer <token>`)",
        )),
        Some(None) => Some((
            tonic::Code::Unauthenticated,
            "the bearer token is not one this host accepts; check WEFT_TOKEN against the server's tokens",
        )),
        Some(Some(Role::User)) if needs_admin(&request) => Some((
            tonic::Code::PermissionDenied,
            "deploying modules, changing defaults, upgrading, resuming, resetting and collecting garbage need an admin token (the server's --admin-token / WEFT_ADMIN_TOKENS)",
        )),
        Some(Some(_)) => None,
    };
    match denied {
        None => next.run(request).await,
        Some((code, message)) if grpc => grpc_refusal(code, message),
        Some((code, message)) => {
            let status = if code == tonic::Code::PermissionDenied {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            super::http::error_body(status, code, message).into_response()
        }
    }
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
