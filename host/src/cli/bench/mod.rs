//! `weft bench`: the numbers in the closing notes, reproducibly.
//!
//! For each backend it runs the hello workflow (one activity) with a fixed
//! number in flight and reports workflows per second and the start-to-result
//! latency percentiles, then the same latency one at a time, then replays a
//! ~1,000-event history of the `chain` workflow and reports events per second.
//! Last, the operators' tools: it starts runs of the `order` test guest v1 and
//! reports how many runs per second `weft check` classifies against a
//! compatible v3 and an incompatible v2, and how many `weft upgrade` moves.

use anyhow::{Context, bail};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use weft::model::Sha256Hex;
use weft::store::{PostgresStore, SqliteStore, Store};
use weft::versions::{DeployOptions, UpgradeResult, Verdict};
use weft::workflow::{ReplayVerdict, replay_history};
use weft::{Activities, ActivityContext, ActivityError, Host, HostConfig, StartRequest};

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// Backends to measure: sqlite, postgres, or both.
    #[arg(long, default_value = "sqlite,postgres", value_delimiter = ',')]
    backends: Vec<String>,
    /// Postgres server for the postgres backend; each run uses a fresh schema.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Hello workflows started in the throughput run.
    #[arg(long, default_value = "3000")]
    workflows: usize,
    /// Workflows in flight at once.
    #[arg(long, default_value = "100")]
    in_flight: usize,
    /// Workflows run one at a time for the sequential latency.
    #[arg(long, default_value = "200")]
    sequential: usize,
    /// Activities in the chain whose history is replayed (3 events each).
    #[arg(long, default_value = "333")]
    chain: u32,
    /// Replays of that history.
    #[arg(long, default_value = "200")]
    replays: u32,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm32-wasip2/guest/hello_workflow.wasm"))]
    hello_module: PathBuf,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm32-wasip2/guest/test_scenarios.wasm"))]
    chain_module: PathBuf,
    /// Open runs of `order` v1 that are checked against v3 and v2, then upgraded.
    #[arg(long, default_value = "500")]
    check_runs: usize,
    /// The `order` test guests: v1, the incompatible v2, the compatible v3.
    #[arg(long, value_delimiter = ',', default_value = concat!(
        env!("CARGO_MANIFEST_DIR"), "/../target/wasm32-wasip2/guest/test_versions_v1.wasm,",
        env!("CARGO_MANIFEST_DIR"), "/../target/wasm32-wasip2/guest/test_versions_v2.wasm,",
        env!("CARGO_MANIFEST_DIR"), "/../target/wasm32-wasip2/guest/test_versions_v3.wasm"))]
    order_modules: Vec<PathBuf>,
}

/// The `order` guests' bytes, oldest first.
struct Orders {
    v1: Vec<u8>,
    v2: Vec<u8>,
    v3: Vec<u8>,
}

struct Figures {
    backend: String,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    seq_p50_ms: f64,
    seq_p99_ms: f64,
    replay_events: u64,
    replay_events_per_second: f64,
    check_identical_per_second: f64,
    check_diverged_per_second: f64,
    upgrade_per_second: f64,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let read = |p: &PathBuf, krate: &str| {
        std::fs::read(p).with_context(|| format!("cannot read {}; build it with `cargo build --target wasm32-wasip2 --profile guest -p {krate}`", p.display()))
    };
    let hello = read(&args.hello_module, "hello-workflow")?;
    let chain = read(&args.chain_module, "test-scenarios")?;
    let [v1, v2, v3] = args.order_modules.as_slice() else {
        bail!("--order-modules takes three files: v1,v2,v3");
    };
    let orders = Orders {
        v1: read(v1, "test-versions-v1")?,
        v2: read(v2, "test-versions-v2")?,
        v3: read(v3, "test-versions-v3")?,
    };
    let mut all = Vec::new();
    for backend in &args.backends {
        let dir = tempfile::tempdir()?;
        let schema = format!("weft_bench_{}", std::process::id());
        let store: Arc<dyn Store> = match backend.as_str() {
            "sqlite" => Arc::new(
                SqliteStore::open(
                    dir.path()
                        .join("bench.db")
                        .to_str()
                        .expect("utf-8 temp path"),
                )
                .await?,
            ),
            "postgres" => {
                Arc::new(PostgresStore::connect_in_schema(&args.postgres_url, &schema).await?)
            }
            other => bail!("unknown backend {other:?}; use sqlite or postgres"),
        };
        eprintln!("{backend}: running…");
        let figures = measure(backend, store, &hello, &chain, &orders, &args).await;
        if backend == "postgres" {
            drop_schema(&args.postgres_url, &schema).await;
        }
        all.push(figures?);
    }
    println!(
        "{:<9} {:>14} {:>9} {:>9} {:>11} {:>11} {:>16}",
        "backend", "workflows/s", "p50 ms", "p99 ms", "seq p50 ms", "seq p99 ms", "replay events/s"
    );
    for f in &all {
        println!(
            "{:<9} {:>14.0} {:>9.2} {:>9.2} {:>11.2} {:>11.2} {:>16.0}",
            f.backend,
            f.per_second,
            f.p50_ms,
            f.p99_ms,
            f.seq_p50_ms,
            f.seq_p99_ms,
            f.replay_events_per_second
        );
    }
    println!(
        "({} hello workflows with {} in flight; {} one at a time; replay of a {}-event history x{})",
        args.workflows,
        args.in_flight,
        args.sequential,
        all.first().map(|f| f.replay_events).unwrap_or(0),
        args.replays
    );
    println!();
    println!(
        "{:<9} {:>24} {:>24} {:>16}",
        "backend", "check identical runs/s", "check diverging runs/s", "upgrade runs/s"
    );
    for f in &all {
        println!(
            "{:<9} {:>24.0} {:>24.0} {:>16.0}",
            f.backend,
            f.check_identical_per_second,
            f.check_diverged_per_second,
            f.upgrade_per_second
        );
    }
    println!(
        "({} open runs of order v1, checked against v3 and v2 (with line tables), then upgraded to v3)",
        args.check_runs
    );
    Ok(())
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok(pool) = sqlx::PgPool::connect(url).await {
        // The name is ours (`weft_bench_` and a process id), so it is safe to splice in.
        let sql = sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
        let _ = sqlx::query(sql).execute(&pool).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn measure(
    backend: &str,
    store: Arc<dyn Store>,
    hello: &[u8],
    chain: &[u8],
    orders: &Orders,
    args: &BenchArgs,
) -> anyhow::Result<Figures> {
    let mut activities = Activities::new();
    activities.register("greet", |_: ActivityContext, name: String| async move {
        Ok::<_, ActivityError>(format!("Hello, {name}!"))
    });
    activities.register(
        "echo",
        |_: ActivityContext, v: serde_json::Value| async move { Ok::<_, ActivityError>(v) },
    );
    let config = HostConfig {
        host_id: format!("bench-{}", std::process::id()),
        warm_instances: args.in_flight * 2 + 16,
        ..HostConfig::default()
    };
    let host = Host::new(store, activities, config)?;
    let running = host.run().await?;
    let hello_module = host.deploy("hello", "bench", hello).await?.sha256;

    let one = |host: Host, module: weft::model::Sha256Hex, id: String| async move {
        let started = Instant::now();
        let run = host
            .start(StartRequest {
                workflow_id: id,
                workflow_type: "hello".into(),
                input: json!("bench"),
                module,
                options: Default::default(),
            })
            .await?;
        let record = host.wait(&run).await?;
        if record.status != weft::RunStatus::Completed {
            bail!("run {run} ended {:?}", record.status);
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    };

    // Warm up: compiled module, connections, statement caches.
    for i in 0..20 {
        one(host.clone(), hello_module.clone(), format!("warm-{i}")).await?;
    }

    let permits = Arc::new(Semaphore::new(args.in_flight));
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(args.workflows);
    for i in 0..args.workflows {
        let permit = permits.clone().acquire_owned().await?;
        let f = one(host.clone(), hello_module.clone(), format!("load-{i}"));
        tasks.push(tokio::spawn(async move {
            let r = f.await;
            drop(permit);
            r
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for t in tasks {
        latencies.push(t.await??);
    }
    let elapsed = began.elapsed();
    latencies.sort();

    let mut sequential = Vec::with_capacity(args.sequential);
    for i in 0..args.sequential {
        sequential.push(one(host.clone(), hello_module.clone(), format!("seq-{i}")).await?);
    }
    sequential.sort();

    // Replay speed: a chain of activities, replayed from memory.
    let chain_module = host.deploy("scenarios", "bench", chain).await?.sha256;
    let run = host
        .start(StartRequest {
            workflow_id: "chain".into(),
            workflow_type: "chain".into(),
            input: json!({ "activities": args.chain }),
            module: chain_module.clone(),
            options: Default::default(),
        })
        .await?;
    let record = host.wait(&run).await?;
    if record.status != weft::RunStatus::Completed {
        bail!(
            "the chain run ended {:?}: {:?}",
            record.status,
            record.stuck
        );
    }
    let history = host.history(&run).await?;
    let module = host.engine().load(chain)?;
    let began = Instant::now();
    for _ in 0..args.replays {
        match replay_history(host.engine(), &module, &history).await? {
            ReplayVerdict::Identical { .. } => {}
            ReplayVerdict::Diverged(d) => bail!("the chain history did not replay: {d}"),
        }
    }
    let replay_elapsed = began.elapsed();

    let [check_identical, check_diverged, upgrade] =
        measure_versions(&host, orders, args.check_runs).await?;
    running.shutdown().await;

    Ok(Figures {
        backend: backend.to_owned(),
        per_second: args.workflows as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        seq_p50_ms: percentile(&sequential, 0.50),
        seq_p99_ms: percentile(&sequential, 0.99),
        replay_events: history.len() as u64,
        replay_events_per_second: (history.len() as f64 * f64::from(args.replays))
            / replay_elapsed.as_secs_f64(),
        check_identical_per_second: check_identical,
        check_diverged_per_second: check_diverged,
        upgrade_per_second: upgrade,
    })
}

/// Deploys a version of `order` beside the default, which stays as it is.
async fn store_beside(host: &Host, version: &str, bytes: &[u8]) -> anyhow::Result<Sha256Hex> {
    let options = DeployOptions {
        make_default: false,
        check: false,
    };
    Ok(host
        .deploy_module("order", version, bytes, options)
        .await?
        .module
        .sha256)
}

/// Runs per second for a compatibility check that finds every run identical,
/// one that finds every run diverging, and an upgrade that moves them all.
async fn measure_versions(host: &Host, orders: &Orders, runs: usize) -> anyhow::Result<[f64; 3]> {
    let v1 = host.deploy("order", "1", &orders.v1).await?.sha256;
    let v2 = store_beside(host, "2", &orders.v2).await?;
    let v3 = store_beside(host, "3", &orders.v3).await?;
    let mut ids = Vec::with_capacity(runs);
    for i in 0..runs {
        ids.push(
            host.start(StartRequest {
                workflow_id: format!("order-{i}"),
                workflow_type: "order".into(),
                // Nothing serves `reserve`, so every run waits on it, open.
                input: json!("book"),
                module: v1.clone(),
                options: Default::default(),
            })
            .await?,
        );
    }
    // Each run's first activation schedules `reserve` (3 events).
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        while host.history(id).await?.len() < 3 {
            if Instant::now() > deadline {
                bail!("run {id} did not schedule its first activity within 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let check = |module: Sha256Hex, want_identical: bool| async move {
        let module = host.module(&module).await?;
        let records = host.check_runs("order", 0).await?;
        if records.len() != runs {
            bail!("{} open runs of order, expected {runs}", records.len());
        }
        let began = Instant::now();
        for record in &records {
            let checked = host.check_run(&module, record).await;
            match (&checked.verdict, want_identical) {
                (Verdict::Identical { .. }, true) | (Verdict::Diverged(_), false) => {}
                (other, _) => bail!("run {} checked as {other:?}", record.run_id),
            }
        }
        Ok::<_, anyhow::Error>(runs as f64 / began.elapsed().as_secs_f64())
    };
    let identical = check(v3.clone(), true).await?;
    let diverged = check(v2, false).await?;

    let module = host.module(&v3).await?;
    let began = Instant::now();
    for id in &ids {
        let moved = host.upgrade_run(&module, id, false).await?;
        if moved.result != UpgradeResult::Upgraded {
            bail!("run {id} was not upgraded: {:?}", moved.result);
        }
    }
    let upgraded = runs as f64 / began.elapsed().as_secs_f64();
    Ok([identical, diverged, upgraded])
}
