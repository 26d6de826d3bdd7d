//! Runs the batch example's workflows on an embedded Weft host (SQLite, in a
//! temporary directory unless `--database` says otherwise) on virtual time:
//!
//! 1. `batch`: 20 orders as child workflows, at most four open at once;
//!    three fail (a bad address, a sold-out item, a declined card) and are
//!    reported, one is retried past two payment-gateway timeouts;
//! 2. `monitor`: 2,500 one-minute checks of a target — two outages, one of
//!    them across a continue-as-new — in three runs, ended by a `stop` signal.
//!
//! ```text
//! scripts/build-guests
//! cargo run -p batch
//! ```

use anyhow::Context as _;
use batch::{Journal, activities, sample_config, sample_orders};
use clap::Parser;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::model::{Event, RunId, Sha256Hex};
use weft::testing::{TestEnv, guest_wasm};
use weft::{ListFilter, RunStatus};

#[derive(Parser)]
#[command(about = "Run the batch and monitor workflows on an embedded Weft host, on virtual time")]
struct Args {
    /// Children open at once.
    #[arg(long, default_value = "4")]
    max_parallel: usize,
    /// Checks the monitor does before it is stopped.
    #[arg(long, default_value = "2500")]
    checks: u64,
    /// A SQLite file path or a postgres:// URL; by default a SQLite file in a
    /// temporary directory.
    #[arg(long, env = "WEFT_DATABASE")]
    database: Option<String>,
}

/// Virtual time since `start_ms`, as `+HHhMMmSSs`.
fn stamp(start_ms: u64, at_ms: u64) -> String {
    let s = at_ms.saturating_sub(start_ms) / 1000;
    format!("+{:>2}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let database = match args.database {
        Some(d) => d,
        None => tmp.path().join("batch.db").to_string_lossy().into_owned(),
    };
    let wasm = guest_wasm("batch-workflow")?;
    let store = weft::store::open(&database)
        .await
        .with_context(|| format!("cannot open the database {database}"))?;

    let journal = Journal::default();
    let mut config = sample_config();
    config.outages = vec![500..=504, 998..=1003];
    config.probe_timeouts = BTreeMap::from([(1500, 1), (2000, 3)]);
    config.journal = journal.clone();
    let env = TestEnv::builder(activities(config))
        .store(store)
        .build()
        .await?;
    journal.set_clock(Arc::new(env.clock().clone()));
    let module = env.deploy("batch", &wasm).await?;
    println!("database: {database}");

    run_batch(&env, &module, &journal, args.max_parallel).await?;
    run_monitor(&env, &module, &journal, args.checks).await?;
    env.shutdown().await;
    Ok(())
}

async fn run_batch(
    env: &TestEnv,
    module: &Sha256Hex,
    journal: &Journal,
    max_parallel: usize,
) -> anyhow::Result<()> {
    let start = env.now_ms();
    let input = json!({ "orders": sample_orders(), "max_parallel": max_parallel });
    println!();
    println!("== batch: 20 orders, at most {max_parallel} at a time ==");
    let run = env.start(module, "batch", "batch-7", input).await?;
    let record = env.result(&run).await?;
    let report = weft::outcome(&record).map_err(|f| anyhow::anyhow!("the batch failed: {f}"))?;

    // The parent's history orders every child's start and end.
    let history = env.history(&run).await?;
    let mut orders = BTreeMap::new();
    let mut open = 0;
    for e in history.events() {
        let at = stamp(start, e.recorded_at_ms);
        match &e.event {
            Event::ChildWorkflowInitiated {
                seq, workflow_id, ..
            } => {
                open += 1;
                let order = workflow_id
                    .rsplit("order-")
                    .next()
                    .unwrap_or("?")
                    .to_owned();
                println!("{at}  open {open}  start    order {order}  ({workflow_id})");
                orders.insert(*seq, order);
            }
            Event::ChildWorkflowCompleted { seq, output } => {
                open -= 1;
                println!(
                    "{at}  open {open}  shipped  order {}  {}",
                    orders[seq], output["tracking"]
                );
            }
            Event::ChildWorkflowFailed { seq, failure } => {
                open -= 1;
                println!(
                    "{at}  open {open}  FAILED   order {}  {}",
                    orders[seq], failure.error_type
                );
            }
            _ => {}
        }
    }
    println!("what went wrong, from the activities:");
    for e in journal.unread() {
        if ["1005", "1008", "1011", "1017"].contains(&e.subject.as_str()) {
            println!(
                "{}  order {} {} attempt {}: {}",
                stamp(start, e.at_ms),
                e.subject,
                e.activity,
                e.attempt,
                e.text
            );
        }
    }
    println!(
        "report: {} succeeded, failed {}, peak in flight {}",
        report["succeeded"].as_array().map_or(0, Vec::len),
        report["failed"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| format!("{} ({})", f["order_id"], f["error_type"]))
            .collect::<Vec<_>>()
            .join(", "),
        report["peak_in_flight"]
    );
    println!(
        "status line: {}",
        env.host()
            .describe(&run)
            .await?
            .status_line
            .unwrap_or_default()
    );
    let children = env
        .host()
        .list(&ListFilter {
            workflow_type: Some("process_order".into()),
            ..ListFilter::default()
        })
        .await?;
    let child = children
        .iter()
        .find(|c| c.workflow_id == "batch-7/order-1017")
        .context("child batch-7/order-1017 is missing")?;
    env.assert_replays(&run).await?;
    env.assert_replays(&child.run_id).await?;
    println!(
        "{} child runs; the parent ({} events) and child {} replay identically from every activation boundary",
        children.len(),
        history.len(),
        child.workflow_id
    );
    Ok(())
}

async fn run_monitor(
    env: &TestEnv,
    module: &Sha256Hex,
    journal: &Journal,
    checks: u64,
) -> anyhow::Result<()> {
    let start = env.now_ms();
    println!();
    println!("== monitor: one check a minute, {checks} checks, continue-as-new every 1000 ==");
    let first = env
        .start(
            module,
            "monitor",
            "monitor-shop",
            json!({ "target": "https://shop.example/health" }),
        )
        .await?;
    let real = Instant::now();
    // The last check is due (checks - 1) minutes in, plus a few seconds of retries.
    env.sleep(Duration::from_secs(60 * (checks - 1) + 30))
        .await?;
    let elapsed = real.elapsed();
    for e in journal.unread() {
        if e.activity != "probe" || !e.text.starts_with("200") {
            println!(
                "{}  {:<7} check {:>4} attempt {}: {}",
                stamp(start, e.at_ms),
                e.activity,
                e.subject,
                e.attempt,
                e.text
            );
        }
    }

    let mut runs = env
        .host()
        .list(&ListFilter {
            workflow_id: Some("monitor-shop".into()),
            ..ListFilter::default()
        })
        .await?;
    runs.reverse();
    let current = runs
        .iter()
        .find(|r| r.status == RunStatus::Running)
        .map(|r| r.run_id.clone())
        .context("the monitor has no open run")?;
    let summary: Value = env.query(&current, "summary", ()).await?;
    println!(
        "{}  query summary on the open run: {} checks, {} failed, open incident {}",
        stamp(start, env.now_ms()),
        summary["checks"],
        summary["failed"],
        summary["open_incident"]
    );
    println!("{}  signal stop", stamp(start, env.now_ms()));
    env.signal(&current, "stop", json!({ "reason": "demo over" }))
        .await?;
    let record = env.result(&first).await?;
    let report = weft::outcome(&record).map_err(|f| anyhow::anyhow!("the monitor failed: {f}"))?;

    for r in env
        .host()
        .list(&ListFilter {
            workflow_id: Some("monitor-shop".into()),
            ..ListFilter::default()
        })
        .await?
        .iter()
        .rev()
    {
        let history = env.history(&r.run_id).await?;
        let handed_over = match &history.events()[0].event {
            Event::WorkflowStarted { input, .. } => input["summary"]["checks"].clone(),
            _ => Value::Null,
        };
        println!(
            "run {}  {:<16} {}..{}  {:>5} events  started with {} checks in its input",
            short(&r.run_id),
            r.status.as_str(),
            stamp(start, r.created_at_ms),
            stamp(start, r.closed_at_ms.unwrap_or(r.created_at_ms)),
            history.len(),
            if handed_over.is_null() {
                json!(0)
            } else {
                handed_over
            }
        );
        if let weft::workflow::ReplayVerdict::Diverged(d) = env.host().replay(&r.run_id).await? {
            anyhow::bail!("run {} does not replay: {d}", r.run_id);
        }
    }
    let s = &report["summary"];
    println!(
        "result: stopped because {}; {} checks ({} healthy, {} failed), {} alerts, mean latency {} ms, slowest {} ms",
        report["stopped_because"],
        s["checks"],
        s["healthy"],
        s["failed"],
        s["alerts"],
        report["mean_latency_ms"],
        s["slowest_ms"]
    );
    println!(
        "every run replays identically; {checks} checks took {:.1} s of real time",
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn short(run: &RunId) -> String {
    run.to_string().chars().take(8).collect()
}
