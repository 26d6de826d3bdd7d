//! A remote activity worker: serves the hello example's `greet` activity to
//! a Weft host over gRPC, with the same code the in-process example runs.
//!
//! ```sh
//! weft dev &                                   # a host on 127.0.0.1:7233
//! cargo run -p hello-worker                    # this worker
//! ```

use clap::Parser;
use std::time::Duration;
use weft::client::ClientTls;
use weft::worker::{Worker, WorkerOptions};
use weft::{Activities, ActivityContext, ActivityError};

#[derive(Parser)]
#[command(about = "Serves the `greet` activity to a Weft host")]
struct Args {
    /// The host to serve.
    #[arg(long, env = "WEFT_ADDRESS", default_value = weft::client::DEFAULT_ADDRESS)]
    address: String,
    /// A user token, for a host that needs one.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Attempts run at once.
    #[arg(long, default_value = "16")]
    max_concurrent: usize,
    /// For an `https://` host: the PEM certificate of the CA that signed its
    /// certificate (default: the system's roots).
    #[arg(long, env = "WEFT_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "weft=info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut activities = Activities::new();
    activities.register("greet", |ctx: ActivityContext, name: String| async move {
        println!(
            "greet {name:?} (attempt {}, idempotency key {})",
            ctx.attempt(),
            ctx.idempotency_key()
        );
        Ok::<_, ActivityError>(format!("Hello, {name}!"))
    });
    let options = WorkerOptions {
        token: args.token,
        max_concurrent: args.max_concurrent,
        poll_wait: Duration::from_secs(30),
        // Ctrl-C waits this long for a greeting in flight, then leaves it
        // to be retried.
        shutdown_grace: Some(Duration::from_secs(10)),
        tls: match &args.ca_file {
            Some(path) => ClientTls::from_ca_file(path)?,
            None => ClientTls::default(),
        },
        ..WorkerOptions::default()
    };
    let worker = Worker::connect(&args.address, options)?;
    println!("serving greet to {}; Ctrl-C stops", args.address);
    worker
        .run(activities, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("stopped");
    Ok(())
}
