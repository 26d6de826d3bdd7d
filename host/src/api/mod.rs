//! The service API: gRPC and HTTP/JSON on one port, behind bearer tokens.
//!
//! - gRPC (`proto/weft/v1/*.proto`): `WorkflowService` ([`workflow_service`]),
//!   `ModuleService` ([`module_service`]), `WorkerService` for remote activity
//!   workers. Any language with a gRPC toolchain can generate a client from
//!   the `.proto` files; Rust programs use [`crate::client::Client`].
//! - HTTP/JSON ([`http`]): the same operations for `curl` and browsers; a
//!   request is turned into the gRPC request and served by the same code.
//! - The web UI ([`ui`]): read-only pages of runs, histories and modules
//!   under `/ui`, built from the same service calls.
//! - [`Tokens`]: `authorization: Bearer <token>`; deploys need an admin token.
//! - [`ServerTls`]: the same port over TLS ([`serve_tls`]).
//!
//! ```no_run
//! # async fn f(host: weft::Host) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7233").await?;
//! weft::api::serve(host, listener, weft::api::Tokens::open(), std::future::pending()).await
//! # }
//! ```

mod auth;
mod http;
mod mapping;
mod module_service;
mod page_token;
pub(crate) mod proto;
mod tls;
mod ui;
mod worker_service;
mod workflow_service;

pub use auth::Tokens;
pub use tls::{ServerTls, TlsError};

use crate::client::MAX_MESSAGE_BYTES;
use crate::host::Host;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use module_service::Modules;
use proto::module_service_server::ModuleServiceServer;
use proto::workflow_service_server::WorkflowServiceServer;
use std::future::Future;
use std::sync::Arc;
use workflow_service::Workflows;

/// What the HTTP routes share: the services they call.
pub(crate) struct ApiState {
    workflows: Workflows,
    modules: Modules,
}

/// Every route of the API, gRPC and HTTP, behind the token check.
pub fn router(host: Host, tokens: Tokens) -> axum::Router {
    let state = Arc::new(ApiState {
        workflows: Workflows { host: host.clone() },
        modules: Modules { host: host.clone() },
    });
    let grpc = tonic::service::Routes::builder()
        .add_service(
            WorkflowServiceServer::new(Workflows { host: host.clone() })
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ModuleServiceServer::new(Modules { host: host.clone() })
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(worker_service::server(&host))
        .clone()
        .routes()
        .into_axum_router();
    http::routes(state.clone())
        .merge(ui::routes(state))
        .merge(grpc)
        .fallback(|| async {
            http::error_body(
                axum::http::StatusCode::NOT_FOUND,
                tonic::Code::NotFound,
                "no such route; the HTTP API lives under /v1/workflows and /v1/modules, the web UI under /ui",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(tokens),
            auth::check,
        ))
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the
/// requests in flight. HTTP/1.1 and HTTP/2 (gRPC) share the port.
///
/// Every accepted connection has `TCP_NODELAY`: requests and answers are
/// small frames, and without it Nagle's algorithm holds a frame back until
/// the peer's delayed ACK (about 40 ms on Linux) — a floor under every call.
pub async fn serve(
    host: Host,
    listener: tokio::net::TcpListener,
    tokens: Tokens,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on an accepted connection: {e}");
        }
    });
    axum::serve(listener, router(host, tokens))
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve`] over TLS with `tls`'s certificate: the same routes, gRPC and
/// HTTP on one port, chosen by ALPN. A connection that does not complete
/// its handshake within 10 s is dropped.
pub async fn serve_tls(
    host: Host,
    listener: tokio::net::TcpListener,
    tls: &ServerTls,
    tokens: Tokens,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tls.listen(listener)?;
    axum::serve(listener, router(host, tokens))
        .with_graceful_shutdown(shutdown)
        .await
}
