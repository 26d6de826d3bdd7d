//! `weft dev` and `weft server`: a host with its API on one port.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weft::api::{Limits, ServeOptions, ServerTls, Tokens};
use weft::audit::Signer;
use weft::store::{PostgresOptions, PostgresStore, Store};
use weft::{Activities, Host, HostConfig, RunLimits};

#[derive(clap::Args)]
pub(crate) struct DevArgs {
    /// Where the API listens (loopback unless tokens are given).
    #[arg(long, default_value = "127.0.0.1:7233")]
    listen: SocketAddr,
    /// The SQLite file that holds everything (created if missing).
    #[arg(long, default_value = "weft-dev.db")]
    database: String,
    #[command(flatten)]
    tokens: TokenArgs,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    run_limits: RunLimitArgs,
}

#[derive(clap::Args)]
pub(crate) struct ServerArgs {
    /// `postgres://…` (several servers may share it) or a SQLite file.
    #[arg(long, env = "WEFT_DATABASE")]
    database: String,
    /// Where the API listens.
    #[arg(long, env = "WEFT_LISTEN", default_value = "0.0.0.0:7233")]
    listen: SocketAddr,
    /// Names this host in leases; every host on one database needs its own,
    /// stable across restarts. Default: the machine's hostname and the port.
    #[arg(long, env = "WEFT_HOST_ID")]
    host_id: Option<String>,
    /// How long a run stays this host's after it goes silent: other hosts
    /// take its work over after that.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    run_lease: u64,
    #[command(flatten)]
    tokens: TokenArgs,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    run_limits: RunLimitArgs,
}

/// What one run may hold (`weft::limits`): the defaults are Temporal's.
#[derive(clap::Args)]
struct RunLimitArgs {
    /// Activities a run may have scheduled and not resolved.
    #[arg(long, env = "WEFT_MAX_PENDING_ACTIVITIES", default_value_t = RunLimits::default().max_pending_activities, value_name = "N")]
    max_pending_activities: usize,
    /// Timers a run may have started and neither fired nor cancelled.
    #[arg(long, env = "WEFT_MAX_PENDING_TIMERS", default_value_t = RunLimits::default().max_pending_timers, value_name = "N")]
    max_pending_timers: usize,
    /// Child workflows a run may have started and not resolved.
    #[arg(long, env = "WEFT_MAX_PENDING_CHILDREN", default_value_t = RunLimits::default().max_pending_children, value_name = "N")]
    max_pending_children: usize,
    /// Signals a run may hold not yet taken; a sender past it is refused.
    #[arg(long, env = "WEFT_MAX_PENDING_SIGNALS", default_value_t = RunLimits::default().max_pending_signals, value_name = "N")]
    max_pending_signals: usize,
    /// Updates a run may hold not yet answered; a sender past it is refused.
    #[arg(long, env = "WEFT_MAX_UPDATES_IN_FLIGHT", default_value_t = RunLimits::default().max_updates_in_flight, value_name = "N")]
    max_updates_in_flight: usize,
    /// Commands one activation may issue.
    #[arg(long, env = "WEFT_MAX_COMMANDS_PER_ACTIVATION", default_value_t = RunLimits::default().max_commands_per_activation, value_name = "N")]
    max_commands_per_activation: usize,
    /// Bytes of a run's search attributes (their JSON text).
    #[arg(long, env = "WEFT_MAX_SEARCH_ATTRIBUTE_BYTES", default_value_t = RunLimits::default().max_search_attribute_bytes, value_name = "BYTES")]
    max_search_attribute_bytes: usize,
    /// Events in a history at which the host logs a warning for the run.
    #[arg(long, env = "WEFT_WARN_HISTORY_EVENTS", default_value_t = RunLimits::default().warn_history_events, value_name = "N")]
    warn_history_events: u64,
    /// Bytes of a history at which the host logs a warning for the run.
    #[arg(long, env = "WEFT_WARN_HISTORY_BYTES", default_value_t = RunLimits::default().warn_history_bytes, value_name = "BYTES")]
    warn_history_bytes: u64,
    /// Events in a history at which the host terminates the run.
    #[arg(long, env = "WEFT_MAX_HISTORY_EVENTS", default_value_t = RunLimits::default().max_history_events, value_name = "N")]
    max_history_events: u64,
    /// Bytes of a history at which the host terminates the run.
    #[arg(long, env = "WEFT_MAX_HISTORY_BYTES", default_value_t = RunLimits::default().max_history_bytes, value_name = "BYTES")]
    max_history_bytes: u64,
    /// Bytes of log output (stdout, stderr, `log`) one activation may
    /// write; the rest of that activation's output is dropped with a warning.
    #[arg(long, env = "WEFT_MAX_LOG_BYTES_PER_ACTIVATION", default_value_t = RunLimits::default().max_log_bytes_per_activation, value_name = "BYTES")]
    max_log_bytes_per_activation: u64,
    /// Handles (WASI streams, pollables) one guest instance may hold at once.
    #[arg(long, env = "WEFT_MAX_GUEST_RESOURCES", default_value_t = RunLimits::default().max_guest_resources, value_name = "N")]
    max_guest_resources: usize,
}

impl RunLimitArgs {
    fn limits(&self) -> anyhow::Result<RunLimits> {
        if self.warn_history_events > self.max_history_events
            || self.warn_history_bytes > self.max_history_bytes
        {
            bail!(
                "the history warning sizes ({} events, {} bytes) must not exceed the maximums ({} events, {} bytes): lower --warn-history-events/--warn-history-bytes or raise --max-history-events/--max-history-bytes",
                self.warn_history_events,
                self.warn_history_bytes,
                self.max_history_events,
                self.max_history_bytes
            );
        }
        Ok(RunLimits {
            max_pending_activities: self.max_pending_activities,
            max_pending_timers: self.max_pending_timers,
            max_pending_children: self.max_pending_children,
            max_pending_signals: self.max_pending_signals,
            max_updates_in_flight: self.max_updates_in_flight,
            max_commands_per_activation: self.max_commands_per_activation,
            max_search_attribute_bytes: self.max_search_attribute_bytes,
            warn_history_events: self.warn_history_events,
            warn_history_bytes: self.warn_history_bytes,
            max_history_events: self.max_history_events,
            max_history_bytes: self.max_history_bytes,
            max_log_bytes_per_activation: self.max_log_bytes_per_activation,
            max_guest_resources: self.max_guest_resources,
        })
    }
}

#[derive(clap::Args)]
struct LimitArgs {
    /// The largest request body (HTTP) or gRPC message the API takes, but a
    /// module's; larger ones are refused unread (413, ResourceExhausted).
    #[arg(
        long,
        env = "WEFT_MAX_REQUEST_BYTES",
        value_name = "BYTES",
        default_value_t = weft::api::Limits::default().request_bytes
    )]
    max_request_bytes: usize,
    /// The largest module a deploy or a check may send (HTTP body or gRPC message).
    #[arg(
        long,
        env = "WEFT_MAX_MODULE_BYTES",
        value_name = "BYTES",
        default_value_t = weft::api::Limits::default().module_bytes
    )]
    max_module_bytes: usize,
    /// Queries, update validations, replays and compatibility checks run at
    /// once; the rest wait their turn (a query, a validation or a replay up
    /// to 10 s, then refused as busy: 429, ResourceExhausted).
    #[arg(
        long,
        env = "WEFT_MAX_CONCURRENT_QUERIES",
        value_name = "N",
        default_value_t = HostConfig::default().max_concurrent_queries
    )]
    max_concurrent_queries: usize,
}

impl LimitArgs {
    fn limits(&self) -> anyhow::Result<Limits> {
        for (flag, value) in [
            ("--max-request-bytes", self.max_request_bytes),
            ("--max-module-bytes", self.max_module_bytes),
        ] {
            if value < MIN_LIMIT_BYTES {
                bail!(
                    "{flag} {value} is too small to carry any request; give at least {MIN_LIMIT_BYTES} bytes"
                );
            }
        }
        Ok(Limits {
            request_bytes: self.max_request_bytes,
            module_bytes: self.max_module_bytes,
            ..Limits::default()
        })
    }
}

/// The smallest body limit an operator may set: a start request's worth.
const MIN_LIMIT_BYTES: usize = 1024;

#[derive(clap::Args)]
struct TlsArgs {
    /// Serve TLS with the PEM certificate chain in FILE (the host's
    /// certificate first); needs --tls-key.
    #[arg(long, env = "WEFT_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "WEFT_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Listen beyond loopback without TLS: tokens and payloads cross the
    /// network readable by anyone on the path. Only for a network you trust,
    /// or behind a proxy that terminates TLS on the same machine.
    #[arg(long)]
    insecure_plaintext: bool,
}

impl TlsArgs {
    /// The certificate to serve, or plaintext where that is allowed.
    fn server_tls(&self, command: &str, listen: SocketAddr) -> anyhow::Result<Option<ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls::from_pem_files(cert, key)?)),
            _ if listen.ip().is_loopback() || self.insecure_plaintext => Ok(None),
            _ => bail!(
                "`weft {command}` would listen on {listen} in plaintext, where bearer tokens and payloads cross the network readable by anyone on the path; give --tls-cert FILE --tls-key FILE (or WEFT_TLS_CERT/WEFT_TLS_KEY), listen on 127.0.0.1 behind a proxy that terminates TLS, or pass --insecure-plaintext on a network you trust"
            ),
        }
    }
}

#[derive(clap::Args)]
struct SigningArgs {
    /// Sign the head of every history this host exports or serves, and seal
    /// every run once it closes, with the key in FILE (`weft keygen -o
    /// FILE`), so auditors can check an export with the public key alone
    /// (`weft verify FILE --public-key KEY`). FILE must be readable by its
    /// owner only (`chmod 600 FILE`). Only heads whose chain verifies are
    /// signed or sealed.
    #[arg(long, env = "WEFT_SIGNING_KEY_FILE", value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

impl SigningArgs {
    fn signer(&self) -> anyhow::Result<Option<Signer>> {
        let Some(path) = &self.signing_key else {
            return Ok(None);
        };
        let signer = Signer::from_file(path).map_err(anyhow::Error::msg)?;
        eprintln!(
            "signing history heads with {}: public key {}",
            path.display(),
            signer.public_key()
        );
        Ok(Some(signer))
    }
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Tokens that may do everything, deploys included (comma-separated).
    #[arg(
        long = "admin-token",
        env = "WEFT_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    admin: Vec<String>,
    /// Tokens for clients and activity workers: everything but deploys (comma-separated).
    #[arg(
        long = "user-token",
        env = "WEFT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    user: Vec<String>,
    /// Tokens for clients only: start, signal, query, update, cancel and
    /// read runs, but never take activity tasks (comma-separated).
    #[arg(
        long = "client-token",
        env = "WEFT_CLIENT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    client: Vec<String>,
    /// Tokens for activity workers only: poll for tasks and report on them,
    /// nothing else. `TOKEN:NAME+NAME` serves only the activities named
    /// (comma-separated).
    #[arg(
        long = "worker-token",
        env = "WEFT_WORKER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    worker: Vec<String>,
    /// Admin tokens from a file, one per line: kept out of the process list
    /// and the environment.
    #[arg(
        long = "admin-token-file",
        env = "WEFT_ADMIN_TOKENS_FILE",
        value_name = "FILE"
    )]
    admin_file: Option<PathBuf>,
    /// User tokens from a file, one per line.
    #[arg(
        long = "user-token-file",
        env = "WEFT_TOKENS_FILE",
        value_name = "FILE"
    )]
    user_file: Option<PathBuf>,
    /// Client tokens from a file, one per line.
    #[arg(
        long = "client-token-file",
        env = "WEFT_CLIENT_TOKENS_FILE",
        value_name = "FILE"
    )]
    client_file: Option<PathBuf>,
    /// Worker tokens from a file, one per line (`TOKEN` or `TOKEN:NAME+NAME`).
    #[arg(
        long = "worker-token-file",
        env = "WEFT_WORKER_TOKENS_FILE",
        value_name = "FILE"
    )]
    worker_file: Option<PathBuf>,
}

impl TokenArgs {
    fn tokens(self) -> anyhow::Result<Tokens> {
        let read = |mut tokens: Vec<String>, file: &Option<PathBuf>| -> anyhow::Result<_> {
            if let Some(path) = file {
                tokens.extend(super::tokens_in(path)?);
            }
            Ok(tokens)
        };
        let admin = read(self.admin, &self.admin_file)?;
        let user = read(self.user, &self.user_file)?;
        let client = read(self.client, &self.client_file)?;
        let worker = read(self.worker, &self.worker_file)?;
        Tokens::new(admin, user)
            .with_clients(client)
            .with_workers(worker)
            .map_err(|e| anyhow::anyhow!("--worker-token: {e}"))
    }
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let mut tokens = args.tokens.tokens()?;
    if tokens.is_empty() {
        if !args.listen.ip().is_loopback() {
            bail!(
                "`weft dev` without tokens listens on loopback only, and {} is not; give --admin-token/--user-token (or WEFT_ADMIN_TOKENS/WEFT_TOKENS), or listen on 127.0.0.1",
                args.listen
            );
        }
        tokens = Tokens::open();
    }
    let options = ServeOptions {
        tokens,
        limits: args.limits.limits()?,
        tls: args.tls.server_tls("dev", args.listen)?,
    };
    let mut config = HostConfig {
        host_id: "dev".into(),
        signer: args.signing.signer()?,
        max_concurrent_queries: args.limits.max_concurrent_queries.max(1),
        ..HostConfig::default()
    };
    config.engine.run_limits = args.run_limits.limits()?;
    run(&args.database, args.listen, options, config).await
}

pub(crate) async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let tokens = args.tokens.tokens()?;
    if tokens.is_empty() {
        bail!(
            "`weft server` denies every request without tokens; set WEFT_ADMIN_TOKENS and WEFT_TOKENS (or --admin-token-file/--user-token-file, WEFT_ADMIN_TOKENS_FILE/WEFT_TOKENS_FILE), or use `weft dev` on loopback"
        );
    }
    let options = ServeOptions {
        tokens,
        limits: args.limits.limits()?,
        tls: args.tls.server_tls("server", args.listen)?,
    };
    let mut config = HostConfig::default();
    config.host_id = args
        .host_id
        .unwrap_or_else(|| format!("{}-{}", config.host_id, args.listen.port()));
    config.run_lease = Duration::from_secs(args.run_lease.max(1));
    config.signer = args.signing.signer()?;
    config.max_concurrent_queries = args.limits.max_concurrent_queries.max(1);
    config.engine.run_limits = args.run_limits.limits()?;
    run(&args.database, args.listen, options, config).await
}

async fn run(
    database: &str,
    listen: SocketAddr,
    options: ServeOptions,
    config: HostConfig,
) -> anyhow::Result<()> {
    let host_id = config.host_id.clone();
    let store: Arc<dyn Store> =
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            // Named after the host, so an operator finds its connections in pg_stat_activity.
            let options = PostgresOptions {
                application_name: Some(format!("weft-{host_id}")),
                ..PostgresOptions::default()
            };
            Arc::new(PostgresStore::connect_with(database, options).await?)
        } else {
            weft::store::open(database).await?
        };
    let host = Host::new(store, Activities::new(), config)?;
    let running = host.run().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen}; is another host using the port? pick one with --listen"
            )
        })?;
    let local = listener.local_addr()?;
    let auth = if options.tokens.is_open() {
        "open: no token needed on loopback"
    } else {
        "bearer tokens required"
    };
    let shown = weft::store::redact_url(database);
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!("weft host {host_id} on {shown}: listening on {scheme}://{local} ({auth})");
    tracing::info!(%local, %host_id, "listening");
    weft::api::serve_with(host, listener, options, shutdown_signal()).await?;
    eprintln!("weft host {host_id}: stopping");
    tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .ok();
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
