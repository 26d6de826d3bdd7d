//! What one request may ask of the API: how large its body may be and how
//! long one call may wait. Bodies are checked on their bytes before anything
//! parses them, and a refusal names the limit and the setting that raises it.
//!
//! | limit | default | applies to | setting |
//! |---|---|---|---|
//! | [`Limits::request_bytes`] | 4 MiB | every HTTP body but a module's; every gRPC message of `WorkflowService` and `WorkerService` | `--max-request-bytes`, `WEFT_MAX_REQUEST_BYTES` |
//! | [`Limits::module_bytes`] | 64 MiB | `PUT /v1/modules/{name}` (deploy, check); every gRPC message of `ModuleService` | `--max-module-bytes`, `WEFT_MAX_MODULE_BYTES` |
//! | [`Limits::wait`] | 60 s | one `AwaitResult` (`GET …/result`), one start's `wait_ms`, one update's wait for its answer | — |

use super::http::error_body;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// The API's limits; [`Limits::default`] gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body (HTTP) or message (gRPC) but a module's.
    pub request_bytes: usize,
    /// The largest body or message that carries a module (deploys, checks).
    pub module_bytes: usize,
    /// The longest one call waits for a run: the caller asks again after it.
    pub wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_bytes: 4 << 20,
            module_bytes: 64 << 20,
            wait: Duration::from_secs(60),
        }
    }
}

/// Which limit a request falls under, and how an operator raises it.
struct Applied {
    bytes: usize,
    setting: &'static str,
}

const REQUEST_SETTING: &str = "--max-request-bytes (WEFT_MAX_REQUEST_BYTES)";
const MODULE_SETTING: &str = "--max-module-bytes (WEFT_MAX_MODULE_BYTES)";

impl Limits {
    /// The limit of a body sent to `path` with `method`: the module routes
    /// carry a module, every other route a request.
    fn for_http(&self, method: &axum::http::Method, path: &str) -> Applied {
        if method == axum::http::Method::PUT && path.starts_with("/v1/modules/") {
            self.module()
        } else {
            self.request()
        }
    }

    /// The limit of a gRPC message to `path` (`/weft.v1.Service/Method`).
    fn for_grpc(&self, path: &str) -> Applied {
        if path.starts_with("/weft.v1.ModuleService/") {
            self.module()
        } else {
            self.request()
        }
    }

    fn request(&self) -> Applied {
        Applied {
            bytes: self.request_bytes,
            setting: REQUEST_SETTING,
        }
    }

    fn module(&self) -> Applied {
        Applied {
            bytes: self.module_bytes,
            setting: MODULE_SETTING,
        }
    }
}

fn too_large(limit: &Applied, found: Option<u64>) -> Response {
    let found = found.map_or_else(String::new, |n| format!(" ({n} bytes)"));
    error_body(
        StatusCode::PAYLOAD_TOO_LARGE,
        tonic::Code::ResourceExhausted,
        &format!(
            "the request body{found} is over this host's limit of {} bytes; send less, or raise the limit with the server's {}",
            limit.bytes, limit.setting
        ),
    )
}

/// Reads an HTTP request's body, up to its route's limit, before any
/// handler parses it: a `Content-Length` over the limit is refused unread,
/// a body without one as soon as it passes the limit. gRPC bodies are
/// streams of messages, each checked by tonic as it decodes it.
pub(crate) async fn bodies(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    // The routes anyone may call before a token is checked read no body, or
    // their own few KiB (the sign-in form): reading one here would let a
    // stranger make the host hold the request limit's worth.
    let unchecked = matches!(path, "/healthz" | "/" | "/ui/login" | "/ui/logout");
    if unchecked || super::auth::is_grpc(&request) {
        return next.run(request).await;
    }
    let limit = limits.for_http(request.method(), request.uri().path());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.bytes as u64) {
        return too_large(&limit, declared);
    }
    let (parts, body) = request.into_parts();
    let mut read = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                return error_body(
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    &format!("the request body could not be read ({e}); send it again"),
                );
            }
        };
        if read.len() + chunk.len() > limit.bytes {
            return too_large(&limit, None);
        }
        read.extend_from_slice(&chunk);
    }
    next.run(Request::from_parts(parts, Body::from(Bytes::from(read))))
        .await
}

/// tonic refuses a message over a service's decoding limit with
/// `OutOfRange` and a message naming neither the service's limit nor how to
/// raise it; this answers `ResourceExhausted` (what gRPC's own servers say)
/// with both.
pub(crate) async fn grpc_messages(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = limits.for_grpc(request.uri().path());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|s| s == HeaderValue::from(tonic::Code::OutOfRange as i32));
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| {
            percent_encoding::percent_decode_str(m)
                .decode_utf8_lossy()
                .into_owned()
        });
    let Some(found) = message
        .as_deref()
        .filter(|_| out_of_range)
        .and_then(|m| m.strip_prefix("Error, decoded message length too large: found "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return response;
    };
    let clear = format!(
        "the request message ({found} bytes) is over this host's limit of {} bytes; send less, or raise the limit with the server's {}",
        limit.bytes, limit.setting
    );
    headers.insert(
        "grpc-status",
        HeaderValue::from(tonic::Code::ResourceExhausted as i32),
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        headers.insert("grpc-message", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn module_routes_take_the_module_limit() {
        let limits = Limits::default();
        assert_eq!(
            limits.for_http(&Method::PUT, "/v1/modules/m").bytes,
            64 << 20
        );
        assert_eq!(
            limits.for_http(&Method::POST, "/v1/workflows").bytes,
            4 << 20
        );
        assert_eq!(limits.for_http(&Method::GET, "/v1/modules").bytes, 4 << 20);
        assert_eq!(
            limits.for_grpc("/weft.v1.ModuleService/Deploy").bytes,
            64 << 20
        );
        assert_eq!(
            limits.for_grpc("/weft.v1.WorkerService/Poll").bytes,
            4 << 20
        );
        assert_eq!(
            limits.for_grpc("/weft.v1.WorkflowService/Start").setting,
            REQUEST_SETTING
        );
    }
}
