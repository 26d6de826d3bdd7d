//! Runs the `hello` workflow on an embedded Weft host (SQLite by default).
//!
//! ```text
//! cargo build --target wasm32-wasip2 --profile guest -p hello-workflow
//! cargo run -p hello -- --name Ada
//! ```
//!
//! Kill it at any point and run it again: the open run is found by its
//! workflow id and carries on from its history.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use weft::store::StoreError;
use weft::{Activities, ActivityContext, ActivityError, Host, HostConfig, StartRequest};

#[derive(Parser)]
#[command(about = "Run the hello workflow on an embedded Weft host")]
struct Args {
    /// Whom to greet.
    #[arg(long, default_value = "Ada")]
    name: String,
    /// A SQLite file path or a postgres:// URL.
    #[arg(long, env = "WEFT_DATABASE", default_value = "weft-hello.db")]
    database: String,
    /// The workflow component.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/wasm32-wasip2/guest/hello_workflow.wasm"))]
    module: PathBuf,
    /// Makes the greet activity take this long, so there is time to kill the process mid-run.
    #[arg(long, default_value = "0")]
    activity_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,weft::guest=info".into()),
        )
        .init();
    let args = Args::parse();
    let wasm = std::fs::read(&args.module).with_context(|| {
        format!("cannot read the workflow module {}; build it with `cargo build --target wasm32-wasip2 --profile guest -p hello-workflow`", args.module.display())
    })?;

    let store = weft::store::open(&args.database).await?;
    let mut activities = Activities::new();
    let delay = Duration::from_millis(args.activity_delay_ms);
    activities.register(
        "greet",
        move |ctx: ActivityContext, name: String| async move {
            println!(
                "activity greet runs (attempt {}, idempotency key {})",
                ctx.attempt,
                ctx.idempotency_key()
            );
            tokio::time::sleep(delay).await;
            Ok::<_, ActivityError>(format!("Hello, {name}!"))
        },
    );
    // A stable host id: after a crash, the restarted process takes its leases back at once.
    let config = HostConfig {
        host_id: "hello-example".into(),
        ..HostConfig::default()
    };
    let host = Host::new(store.clone(), activities, config)?;
    let running = host.run().await?;

    let module = host
        // Versioned by its sha256: a rebuilt workflow is a new version, and
        // runs already in the database stay on the one they started on.
        .deploy("hello", "", &wasm)
        .await?;
    println!(
        "deployed module hello {} (sha256 {})",
        module.version,
        module.sha256.short()
    );

    let workflow_id = format!("hello-{}", args.name);
    let request = StartRequest {
        workflow_id: workflow_id.clone(),
        workflow_type: "hello".into(),
        input: serde_json::json!(args.name),
        module: module.sha256,
        options: Default::default(),
    };
    let run_id = match host.start(request).await {
        Ok(run_id) => {
            println!("started run {run_id} (workflow id {workflow_id})");
            run_id
        }
        Err(weft::HostError::Store(StoreError::WorkflowIdInUse { run_id, .. })) => {
            println!(
                "run {run_id} of workflow id {workflow_id} is still open: carrying on from its history"
            );
            run_id
        }
        Err(e) => return Err(e.into()),
    };

    let record = host.wait(&run_id).await?;
    let history = host.history(&run_id).await?;
    match weft::outcome(&record) {
        Ok(output) => println!("result: {output}"),
        Err(failure) => println!("the run did not complete: {failure}"),
    }
    let chain = match history.verify() {
        Ok(()) => "hash chain verified".to_owned(),
        Err(e) => format!("hash chain BROKEN: {e}"),
    };
    println!("history: {} events, {chain}", history.len());
    for e in history.events() {
        println!("  {:>3} {}", e.seq, e.event.kind());
    }
    running.shutdown().await;
    Ok(())
}
