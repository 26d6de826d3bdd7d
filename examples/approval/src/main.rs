//! Runs the `approval` workflow on an embedded Weft host: a credit check (an
//! activity that fails twice before it succeeds, retried by policy), a durable
//! cooling-off sleep, an underwriter's decision by signal raced against a
//! timeout, and a status query answered at every stage.
//!
//! ```text
//! cargo build --target wasm32-wasip2 --profile guest -p approval-workflow
//! cargo run -p approval -- --decision approve
//! ```

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use weft::store::StoreError;
use weft::{Activities, ActivityContext, ActivityError, Host, HostConfig, RunStatus, StartRequest};

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Decision {
    Approve,
    Reject,
    /// Send nothing: the decision timer wins the race.
    None,
}

#[derive(Parser)]
#[command(about = "Run the approval workflow on an embedded Weft host")]
struct Args {
    #[arg(long, default_value = "Grace")]
    applicant: String,
    #[arg(long, default_value = "25000")]
    amount: u64,
    /// What the underwriter decides.
    #[arg(long, value_enum, default_value = "approve")]
    decision: Decision,
    /// The durable cooling-off sleep.
    #[arg(long, default_value = "2000")]
    cooling_off_ms: u64,
    /// How long the workflow waits for the decision.
    #[arg(long, default_value = "3000")]
    decision_timeout_ms: u64,
    /// A SQLite file path or a postgres:// URL.
    #[arg(long, env = "WEFT_DATABASE", default_value = "weft-approval.db")]
    database: String,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/wasm32-wasip2/guest/approval_workflow.wasm"))]
    module: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let args = Args::parse();
    let wasm = std::fs::read(&args.module).with_context(|| {
        format!("cannot read the workflow module {}; build it with `cargo build --target wasm32-wasip2 --profile guest -p approval-workflow`", args.module.display())
    })?;

    let store = weft::store::open(&args.database).await?;
    let mut activities = Activities::new();
    let bureau_calls = Arc::new(AtomicU32::new(0));
    activities.register(
        "check_credit",
        move |ctx: ActivityContext, req: serde_json::Value| {
            let calls = bureau_calls.clone();
            async move {
                // The credit bureau is flaky: the first two calls time out.
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    println!(
                        "  check_credit attempt {}: the bureau timed out",
                        ctx.attempt
                    );
                    return Err(ActivityError::retryable(
                        "BureauTimeout",
                        "the credit bureau did not answer",
                    ));
                }
                let score = 600 + (req["amount"].as_u64().unwrap_or(0) % 250) as u32;
                println!("  check_credit attempt {}: score {score}", ctx.attempt);
                Ok(json!({ "score": score }))
            }
        },
    );
    activities.register(
        "notify",
        |_: ActivityContext, req: serde_json::Value| async move {
            println!(
                "  notify: {} is told the outcome: {}",
                req["applicant"], req["outcome"]
            );
            Ok::<_, ActivityError>(json!({ "sent": true }))
        },
    );
    let config = HostConfig {
        host_id: "approval-example".into(),
        ..HostConfig::default()
    };
    let host = Host::new(store, activities, config)?;
    let running = host.run().await?;
    let module = host
        // Versioned by its sha256: a rebuilt workflow is a new version, and
        // runs already in the database stay on the one they started on.
        .deploy("approval", "", &wasm)
        .await?;

    let workflow_id = format!("approval-{}", args.applicant);
    let input = json!({
        "applicant": args.applicant,
        "amount": args.amount,
        "cooling_off_ms": args.cooling_off_ms,
        "decision_timeout_ms": args.decision_timeout_ms,
    });
    let request = StartRequest {
        workflow_id: workflow_id.clone(),
        workflow_type: "approval".into(),
        input,
        module: module.sha256,
        options: Default::default(),
    };
    let run_id = match host.start(request).await {
        Ok(id) => id,
        Err(weft::HostError::Store(StoreError::WorkflowIdInUse { run_id, .. })) => run_id,
        Err(e) => return Err(e.into()),
    };
    println!("run {run_id} (workflow id {workflow_id})");

    // Watch the stages through the status query; decide once the workflow waits for it.
    let mut last = String::new();
    let mut decided = false;
    loop {
        let run = host.describe(&run_id).await?;
        if run.status != RunStatus::Running {
            break;
        }
        if let Ok(status) = host.query(&run_id, "status", json!(null)).await {
            let stage = status["stage"].as_str().unwrap_or_default().to_owned();
            if stage != last {
                println!("status: {status}");
                last = stage.clone();
            }
            if stage == "awaiting decision" && !decided && args.decision != Decision::None {
                let approved = args.decision == Decision::Approve;
                host.signal(
                    &run_id,
                    "decision",
                    json!({ "approved": approved, "by": "underwriter Lin" }),
                )
                .await?;
                println!("sent signal decision (approved: {approved})");
                decided = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = host.wait(&run_id).await?;
    match weft::outcome(&record) {
        Ok(output) => println!("result: {output}"),
        Err(failure) => println!("the run did not complete: {failure}"),
    }
    let history = host.history(&run_id).await?;
    println!(
        "history: {} events, hash chain {}",
        history.len(),
        if history.verify().is_ok() {
            "verified"
        } else {
            "BROKEN"
        }
    );
    running.shutdown().await;
    Ok(())
}
