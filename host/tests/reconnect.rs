//! A host survives its database going away: its connections are cut again
//! and again, then the database refuses connections for a while (what a
//! restart looks like from the host). Every workflow started completes,
//! nothing is recorded twice, every chain verifies; a request made while the
//! database is away fails with a retryable error that says so; and the
//! change feed reconnects and reports it, so that the loops look for work.
//!
//! Each test gets a database of its own (the outage is `ALLOW_CONNECTIONS
//! false` on it), dropped at the end.

mod common;

use common::guest;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::model::{Event, History, RunId};
use weft::store::{Change, Changes, PostgresOptions, PostgresStore, RunStatus, RunStore};
use weft::{
    Activities, ActivityContext, ActivityError, Host, HostConfig, HostError, StartRequest,
    SystemClock,
};

const RUNS: usize = 100;
const TIMER_MS: u64 = 100;
const DEADLINE: Duration = Duration::from_secs(90);

/// A database of its own, created on the server of `DATABASE_URL` and dropped by [`Self::drop`].
struct OwnDb {
    admin: PgPool,
    name: String,
    url: String,
}

impl OwnDb {
    async fn create() -> Self {
        let base = common::database_url();
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&base)
            .await
            .expect("connect to Postgres (DATABASE_URL) to create a test database");
        let name = common::unique("weft_reconnect");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .unwrap();
        let (server, _) = base.rsplit_once('/').unwrap();
        let url = format!("{server}/{name}");
        Self { admin, name, url }
    }

    /// Cuts every connection of `application_name` to this database; how many there were.
    async fn cut(&self, application_name: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = $1 AND application_name = $2",
        )
        .bind(&self.name)
        .bind(application_name)
        .fetch_one(&self.admin)
        .await
        .unwrap()
    }

    async fn connections(&self, application_name: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
        )
        .bind(&self.name)
        .bind(application_name)
        .fetch_one(&self.admin)
        .await
        .unwrap()
    }

    /// Stops (or resumes) accepting connections: from a host, the database is away.
    async fn allow_connections(&self, allow: bool) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS {allow}",
            self.name
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }

    async fn drop(self) {
        self.allow_connections(true).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await
        .unwrap();
        self.admin.close().await;
    }
}

async fn store(url: &str, application_name: &str) -> Arc<PostgresStore> {
    Arc::new(
        PostgresStore::connect_with(
            url,
            PostgresOptions {
                schema: None,
                application_name: Some(application_name.into()),
            },
        )
        .await
        .unwrap(),
    )
}

fn steps(i: usize, module: &weft::model::Sha256Hex) -> StartRequest {
    StartRequest::new(
        format!("reconnect-{i}"),
        "steps",
        json!({ "label": format!("w{i}"), "timer_ms": TIMER_MS }),
        module.clone(),
    )
}

/// A request made while the database may be away: it succeeds, or fails
/// with an error that is retryable and says so.
fn accepted_or_retryable<T>(result: Result<T, HostError>, what: &str) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            assert!(
                e.is_retryable(),
                "{what} failed with an error that is not retryable: {e}"
            );
            assert!(
                matches!(
                    &e,
                    HostError::Store(weft::store::StoreError::Unavailable(_))
                ),
                "{what}: {e:?}"
            );
            assert!(
                e.to_string().contains("retryable"),
                "{what}: the message says it is retryable: {e}"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_rides_out_cut_connections_and_an_outage() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("weft=info")
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let db = OwnDb::create().await;
    let app = "weft-reconnect-host";
    let host_store = store(&db.url, app).await;
    // The test's own view of the database, on connections the cuts spare.
    let reader = store(&db.url, "weft-reconnect-test").await;

    let mut activities = Activities::new();
    activities.register("step", |_: ActivityContext, req: Value| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let name = req["name"].as_str().unwrap_or("?").to_owned();
        Ok::<_, ActivityError>(format!("{name}-done"))
    });
    let config = HostConfig {
        host_id: "reconnect-host".into(),
        run_lease: Duration::from_secs(2),
        // Outlives the outage: a result is kept and written once it is over.
        default_start_to_close: Duration::from_secs(10),
        ..HostConfig::default()
    };
    let host = Host::with_engine(
        host_store.clone(),
        activities,
        config,
        Arc::new(SystemClock),
        common::engine(),
    );
    let running = host.run().await.unwrap();
    let module = host
        .deploy("test-scenarios", "test", &guest("test-scenarios"))
        .await
        .unwrap()
        .sha256;
    let mut runs: Vec<(usize, RunId)> = Vec::new();
    for i in 0..RUNS {
        let run = host
            .signal_with_start(steps(i, &module), "go", json!(format!("go-{i}")))
            .await
            .unwrap();
        runs.push((i, run));
    }
    let mut next = RUNS;

    // Cut the host's connections a few times while it works; a request right
    // after each cut either finds the pool reconnected or fails retryably.
    let mut refused = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cut = db.cut(app).await;
        assert!(cut > 0, "the host had connections to cut");
        let start = host.signal_with_start(steps(next, &module), "go", json!(format!("go-{next}")));
        match accepted_or_retryable(start.await, "a start right after a cut") {
            Some(run) => runs.push((next, run)),
            None => refused += 1,
        }
        next += 1;
    }

    // The database goes away: no connection is accepted while it is.
    db.allow_connections(false).await;
    for _ in 0..50 {
        if db.cut(app).await == 0 && db.connections(app).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = host.signal_with_start(steps(next, &module), "go", json!("never"));
    let asked = Instant::now();
    let err = start
        .await
        .expect_err("a start while the database refuses connections fails");
    assert!(accepted_or_retryable::<()>(Err(err), "a start during the outage").is_none());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the request failed fast, not after {:?}",
        asked.elapsed()
    );
    let describe = host.describe(&runs[0].1).await;
    assert!(accepted_or_retryable(describe, "describe during the outage").is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    db.allow_connections(true).await;
    eprintln!(
        "outage over after {:?}; {refused} requests refused during the cuts",
        started.elapsed()
    );

    // Everything accepted completes.
    for (i, run) in &runs {
        let record = loop {
            let record = reader.run(run).await.unwrap();
            if record.status != RunStatus::Running {
                break record;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "run {run} still running after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(record.status, RunStatus::Completed, "{record:?}");
        assert_eq!(
            record.output,
            Some(json!({
                "a": "a-done", "go": format!("go-{i}"), "b": "b-done", "c": "c-done",
                "extra": "no-extra",
            }))
        );
        let history = weft::store::HistoryStore::history(&*reader, run)
            .await
            .unwrap();
        history
            .verify()
            .unwrap_or_else(|e| panic!("run {run}: the hash chain does not verify: {e}"));
        assert_each_activity_resolved_once(run, &history);
        common::assert_each_completion_once(&history, 3);
    }
    eprintln!(
        "{} runs completed after {:?}",
        runs.len(),
        started.elapsed()
    );
    running.shutdown().await;
    drop(host);
    host_store.close().await;
    reader.close().await;
    db.drop().await;
}

async fn next_change(changes: &mut Changes, want: Change) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, changes.recv()).await {
            Ok(Some(change)) if change == want => return,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the change feed ended while waiting for {want:?}"),
            Err(_) => panic!("no {want:?} from the change feed within 20 s"),
        }
    }
}

/// The feed reports a woken run, reconnects after its connection is cut and
/// says so (so the host's loops look for work), and works on afterwards; a
/// feed of another schema in the same database hears none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_reconnects_and_says_so() {
    let db = OwnDb::create().await;
    let app = "weft-reconnect-feed";
    let store = store(&db.url, app).await;
    let other = Arc::new(
        PostgresStore::connect_with(
            &db.url,
            PostgresOptions {
                schema: Some("elsewhere".into()),
                application_name: Some("weft-reconnect-other".into()),
            },
        )
        .await
        .unwrap(),
    );
    let mut changes = store.changes().expect("Postgres has a change feed");
    let mut elsewhere = other.changes().unwrap();
    next_change(&mut changes, Change::Resumed).await;
    next_change(&mut elsewhere, Change::Resumed).await;

    let client = Host::with_engine(
        store.clone(),
        Activities::new(),
        HostConfig::default(),
        Arc::new(SystemClock),
        common::engine(),
    );
    let module = client
        .deploy("test-scenarios", "test", &guest("test-scenarios"))
        .await
        .unwrap()
        .sha256;
    let run = client.start(steps(0, &module)).await.unwrap();
    // The run started with its first activation done, which left other
    // hosts nothing to do; a signal wakes it.
    client.signal(&run, "go", json!("amber")).await.unwrap();
    next_change(&mut changes, Change::Runs).await;

    // Cut the feed's connection (and the pool's): it reconnects and says so.
    let mut cut = 0;
    for _ in 0..100 {
        cut += db.cut(app).await;
        if cut > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cut > 0, "the feed's connection was found and cut");
    next_change(&mut changes, Change::Resumed).await;
    // The store's own pool may take a moment to see its connections gone.
    let mut signalled = false;
    for _ in 0..50 {
        let sent = client.signal(&run, "go", json!("green")).await;
        if accepted_or_retryable(sent, "a signal after the cut").is_some() {
            signalled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        signalled,
        "the signal went through once the pool reconnected"
    );
    next_change(&mut changes, Change::Runs).await;

    // The other schema's feed heard nothing of this schema's work.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(change) = elsewhere.try_recv() {
        assert_eq!(change, Change::Resumed, "no work of another schema");
    }
    drop((changes, elsewhere));
    store.close().await;
    other.close().await;
    db.drop().await;
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
