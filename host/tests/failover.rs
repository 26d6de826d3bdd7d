//! Three host processes share one Postgres database; one is killed (SIGKILL)
//! while it holds work. The other two take its work over once its leases
//! expire: every workflow completes with the right output, each activity is
//! recorded exactly once, and every hash chain verifies.
//!
//! The hosts are real child processes: this test binary run again with only
//! the ignored `failover_child_host` test selected and `WEFT_FAILOVER_DB` set.
//! Real time throughout: short leases and timers keep it under a minute.

mod common;

use common::guest;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::model::{Event, History, RunId};
use weft::store::{PostgresOptions, PostgresStore, RunStatus};
use weft::wasm::EngineConfig;
use weft::{Activities, ActivityContext, ActivityError, Host, HostConfig, StartRequest};

const HOSTS: usize = 3;
const RUNS: usize = 300;
const TIMER_MS: u64 = 200;
/// How long a killed host's runs stay its own.
const RUN_LEASE: Duration = Duration::from_secs(2);
/// How long a killed host's activity attempts stay its own.
const ATTEMPT_LEASE: Duration = Duration::from_secs(3);
/// The whole test, kill and takeover included, ends within this.
const DEADLINE: Duration = Duration::from_secs(90);

/// One host process. Not a test of its own: it runs only when spawned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of the failover test; runs only when it spawns it"]
async fn failover_child_host() {
    tracing_subscriber::fmt()
        .with_env_filter("weft=info")
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let url = std::env::var("WEFT_FAILOVER_DB").expect("spawned by the failover test");
    let schema = std::env::var("WEFT_FAILOVER_SCHEMA").unwrap();
    let host_id = std::env::var("WEFT_FAILOVER_HOST").unwrap();
    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions {
            schema: Some(schema),
            application_name: Some(format!("weft-{host_id}")),
        },
    )
    .await
    .unwrap();
    let mut activities = Activities::new();
    activities.register("step", |_: ActivityContext, req: Value| async move {
        // Long enough that a killed host is caught with attempts in flight.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let name = req["name"].as_str().unwrap_or("?").to_owned();
        Ok::<_, ActivityError>(format!("{name}-done"))
    });
    let mut config = HostConfig {
        host_id,
        run_lease: RUN_LEASE,
        default_start_to_close: ATTEMPT_LEASE,
        // The default poll: other hosts' work must wake this one by notification.
        ..HostConfig::default()
    };
    config.engine.cache_dir = std::env::var("WEFT_FAILOVER_CACHE").ok().map(PathBuf::from);
    let host = Host::new(Arc::new(store), activities, config).unwrap();
    let _running = host.run().await.unwrap();
    tokio::time::sleep(DEADLINE + Duration::from_secs(30)).await;
    panic!("the failover test never stopped its child host");
}

/// The child hosts, killed when dropped: a failing test leaves none behind.
struct Hosts {
    children: Vec<Option<Child>>,
    log: PathBuf,
}

impl Hosts {
    fn spawn(db: &common::Db, cache: &std::path::Path, log: PathBuf) -> Self {
        let children = (0..HOSTS)
            .map(|i| {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                let child = Command::new(std::env::current_exe().unwrap())
                    .args([
                        "failover_child_host",
                        "--exact",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("WEFT_FAILOVER_DB", &db.url)
                    .env("WEFT_FAILOVER_SCHEMA", db.schema.as_ref().unwrap())
                    .env("WEFT_FAILOVER_HOST", host_id(i))
                    .env("WEFT_FAILOVER_CACHE", cache)
                    .stdout(Stdio::null())
                    .stderr(out)
                    .spawn()
                    .unwrap();
                Some(child)
            })
            .collect();
        Self { children, log }
    }

    /// SIGKILL: the host gets no chance to release anything.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

fn host_id(i: usize) -> String {
    format!("failover-host-{i}")
}

/// What the victim held when it was killed.
#[derive(Debug, Default)]
struct Held {
    runs: Vec<String>,
    attempts: Vec<(String, i64)>,
}

async fn held_by(pool: &PgPool, host: &str) -> Held {
    let runs = sqlx::query_scalar(
        "SELECT run_id FROM runs WHERE lease_owner = $1 AND lease_expires_at_ms > 0",
    )
    .bind(host)
    .fetch_all(pool)
    .await
    .unwrap();
    let attempts = sqlx::query_as(
        "SELECT run_id, seq FROM activity_tasks WHERE lease_owner = $1 AND status = 'running'",
    )
    .bind(host)
    .fetch_all(pool)
    .await
    .unwrap();
    Held { runs, attempts }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A pool on the test's schema, to look at leases directly.
async fn inspector(db: &common::Db) -> PgPool {
    let schema = db.schema.clone().unwrap();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            let schema = schema.clone();
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SET search_path = \"{schema}\""
                )))
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .connect(&db.url)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_work_is_taken_over() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_db(common::Backend::Postgres).await;
    let pool = inspector(&db).await;
    // The client: starts runs and reads them, runs no loops. Its engine is
    // configured as the hosts' are, so the module it compiles on deploy is
    // cached for them: they load it instead of each compiling it again.
    let cache = dir.path().join("cache");
    let engine = EngineConfig {
        cache_dir: Some(cache.clone()),
        ..EngineConfig::default()
    };
    let client = Host::new(
        db.store.clone(),
        Activities::new(),
        HostConfig {
            engine,
            ..HostConfig::default()
        },
    )
    .unwrap();
    let module = client
        .deploy("test-scenarios", "test", &guest("test-scenarios"))
        .await
        .unwrap()
        .sha256;
    eprintln!("deployed after {:?}", started.elapsed());
    let mut hosts = Hosts::spawn(&db, &cache, dir.path().join("hosts.log"));

    let mut runs = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let request = StartRequest::new(
            format!("failover-{i}"),
            "steps",
            json!({ "label": format!("w{i}"), "timer_ms": TIMER_MS }),
            module.clone(),
        );
        // The signal the workflow waits for after its first timer, queued at start.
        let run = client
            .signal_with_start(request, "go", json!(format!("go-{i}")))
            .await
            .unwrap();
        runs.push(run);
    }
    eprintln!("{RUNS} runs started after {:?}", started.elapsed());

    // Kill host 0 once work is well under way and it holds some of it.
    let victim = host_id(0);
    let held = loop {
        assert!(
            started.elapsed() < DEADLINE,
            "the hosts never got going; host logs:\n{}",
            hosts.logs()
        );
        let done = count(
            &pool,
            "SELECT count(*) FROM activity_tasks WHERE status = 'completed'",
        )
        .await;
        if done >= (RUNS as i64) / 2 {
            let held = held_by(&pool, &victim).await;
            if !held.runs.is_empty() || !held.attempts.is_empty() {
                hosts.kill(0);
                break held;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let done_at_kill = count(
        &pool,
        "SELECT count(*) FROM activity_tasks WHERE status = 'completed'",
    )
    .await;
    let open_at_kill = count(&pool, "SELECT count(*) FROM runs WHERE status = 'running'").await;
    eprintln!(
        "killed {victim} after {:?} holding {} run leases and {} attempts; {done_at_kill} activities done, {open_at_kill} runs open",
        started.elapsed(),
        held.runs.len(),
        held.attempts.len()
    );
    assert!(
        open_at_kill > 0,
        "work was left for the surviving hosts to take over"
    );

    // The survivors finish everything.
    loop {
        let open = count(&pool, "SELECT count(*) FROM runs WHERE status = 'running'").await;
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{open} runs still open after {:?}; host logs:\n{}",
            started.elapsed(),
            hosts.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("all {RUNS} runs closed after {:?}", started.elapsed());

    // The work the victim held was taken over by the others: nothing it held is left.
    let after = held_by(&pool, &victim).await;
    assert!(
        after.runs.is_empty() && after.attempts.is_empty(),
        "the killed host still holds {after:?}"
    );
    let held_runs: HashSet<&String> = held.runs.iter().collect();
    let mut taken_over = 0;
    for (i, run) in runs.iter().enumerate() {
        let record = client.describe(run).await.unwrap();
        assert_eq!(record.status, RunStatus::Completed, "{record:?}");
        assert_eq!(
            record.output,
            Some(json!({
                "a": "a-done", "go": format!("go-{i}"), "b": "b-done", "c": "c-done",
                "extra": "no-extra",
            })),
            "run {run}"
        );
        let history = client.history(run).await.unwrap();
        history
            .verify()
            .unwrap_or_else(|e| panic!("run {run}: the hash chain does not verify: {e}"));
        assert_each_activity_resolved_once(run, &history);
        common::assert_each_completion_once(&history, 3);
        assert_eq!(
            kinds(&history, "signal_received"),
            1,
            "run {run}: the signal is delivered once"
        );
        if held_runs.contains(&run.0) {
            taken_over += 1;
        }
    }
    assert_eq!(taken_over, held.runs.len());
    // Each attempt the victim held was resolved once, by another host.
    for (run, seq) in &held.attempts {
        let status: String =
            sqlx::query_scalar("SELECT status FROM activity_tasks WHERE run_id = $1 AND seq = $2")
                .bind(run)
                .bind(seq)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(status, "completed", "run {run} activity {seq}");
    }
    eprintln!("checked in {:?}", started.elapsed());
    drop(hosts);
    pool.close().await;
    db.drop().await;
}

fn kinds(history: &History, kind: &str) -> usize {
    history
        .events()
        .iter()
        .filter(|e| e.event.kind() == kind)
        .count()
}

/// Every scheduled activity has exactly one resolution (completed or failed) in the history.
fn assert_each_activity_resolved_once(run: &RunId, history: &History) {
    let mut resolutions: BTreeMap<u32, usize> = BTreeMap::new();
    for e in history.events() {
        match &e.event {
            Event::ActivityScheduled { seq, .. } => {
                resolutions.entry(*seq).or_default();
            }
            Event::ActivityCompleted { seq, .. } | Event::ActivityFailed { seq, .. } => {
                *resolutions.entry(*seq).or_default() += 1;
            }
            _ => {}
        }
    }
    assert!(
        resolutions.values().all(|&n| n == 1),
        "run {run}: resolutions per activity seq {resolutions:?}"
    );
}
