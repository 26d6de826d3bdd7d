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
//! - [`Limits`]: how large a request may be and how long one call waits.
//! - [`ServerTls`]: the same port over TLS ([`serve_tls`]).
//! - [`ServeOptions`]: all of these at once ([`serve_with`]).
//!
//! ```no_run
//! # async fn f(host: weft::Host) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7233").await?;
//! weft::api::serve(host, listener, weft::api::Tokens::open(), std::future::pending()).await
//! # }
//! ```

mod auth;
mod extract;
mod http;
mod limits;
mod mapping;
mod module_service;
mod page_token;
pub(crate) mod proto;
mod sessions;
mod task_token;
mod tls;
mod ui;
mod worker_service;
mod workflow_service;

pub use auth::Tokens;
pub use limits::Limits;
pub use tls::{ServerTls, TlsError};

use crate::client::MAX_MESSAGE_BYTES;
use crate::host::Host;
use auth::Access;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use module_service::Modules;
use proto::module_service_server::ModuleServiceServer;
use proto::workflow_service_server::WorkflowServiceServer;
use std::future::Future;
use std::sync::Arc;
use workflow_service::Workflows;

/// How the API is served: who may call it, what one request may ask of it,
/// and the certificate when it speaks TLS.
#[derive(Clone)]
pub struct ServeOptions {
    pub tokens: Tokens,
    pub limits: Limits,
    pub tls: Option<ServerTls>,
}

impl ServeOptions {
    /// `tokens`, the default [`Limits`], plaintext.
    pub fn new(tokens: Tokens) -> Self {
        Self {
            tokens,
            limits: Limits::default(),
            tls: None,
        }
    }
}

/// What the HTTP routes share: the services they call, and what the web
/// UI's sign-in needs.
pub(crate) struct ApiState {
    workflows: Workflows,
    modules: Modules,
    access: Arc<Access>,
    /// Cookies only over TLS (`Secure`): the host serves TLS.
    tls: bool,
}

/// Every route of the API, gRPC and HTTP, behind the token check and the
/// [`Limits`].
pub fn router(host: Host, options: &ServeOptions) -> axum::Router {
    let limits = Arc::new(options.limits.clone());
    let access = Arc::new(Access {
        tokens: options.tokens.clone(),
        sessions: sessions::Sessions::default(),
    });
    let workflows = || Workflows {
        host: host.clone(),
        wait: limits.wait,
    };
    let state = Arc::new(ApiState {
        workflows: workflows(),
        modules: Modules { host: host.clone() },
        access: access.clone(),
        tls: options.tls.is_some(),
    });
    // Each service decodes messages up to its limit; answers may be larger
    // (a module's bytes, a long history), up to what clients accept.
    let grpc = tonic::service::Routes::builder()
        .add_service(
            WorkflowServiceServer::new(workflows())
                .max_decoding_message_size(limits.request_bytes)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ModuleServiceServer::new(Modules { host: host.clone() })
                .max_decoding_message_size(limits.module_bytes)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(worker_service::server(&host).max_decoding_message_size(limits.request_bytes))
        .clone()
        .routes()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            limits.clone(),
            limits::grpc_messages,
        ));
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
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            http::error_body(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                tonic::Code::Unimplemented,
                &format!("this route does not take {method}; the README's route table gives each route's methods"),
            )
        })
        // The body was read, up to its limit, by `limits::bodies`.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(limits, limits::bodies))
        .layer(axum::middleware::from_fn_with_state(access, auth::check))
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the
/// requests in flight. HTTP/1.1 and HTTP/2 (gRPC) share the port.
pub async fn serve(
    host: Host,
    listener: tokio::net::TcpListener,
    tokens: Tokens,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(host, listener, ServeOptions::new(tokens), shutdown).await
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
    let options = ServeOptions {
        tls: Some(tls.clone()),
        ..ServeOptions::new(tokens)
    };
    serve_with(host, listener, options, shutdown).await
}

/// [`serve`] as `options` say: over TLS when they carry a certificate.
///
/// Every accepted connection has `TCP_NODELAY`: requests and answers are
/// small frames, and without it Nagle's algorithm holds a frame back until
/// the peer's delayed ACK (about 40 ms on Linux) — a floor under every call.
pub async fn serve_with(
    host: Host,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    read_task_token_key(&host).await?;
    let router = router(host, &options);
    match &options.tls {
        Some(tls) => {
            let listener = tls.listen(listener)?;
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY on an accepted connection: {e}");
                }
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Reads the database's task-token key before the first worker polls, so
/// that a database without one answers at startup, not on a worker's call.
async fn read_task_token_key(host: &Host) -> std::io::Result<()> {
    host.inner()
        .task_token_key()
        .await
        .map(|_| ())
        .map_err(|e| {
            std::io::Error::other(format!(
                "cannot read the task-token key from the database: {e}"
            ))
        })
}
