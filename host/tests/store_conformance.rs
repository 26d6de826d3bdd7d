//! The storage conformance suite ([`weft::store::conformance`]) on both backends.
//!
//! SQLite: a fresh database file per test. Postgres: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), a fresh schema per test so that
//! tests run in parallel; the schema is dropped when the test passes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use weft::store::conformance::Fixture;
use weft::store::{PostgresStore, SqliteStore, Store};

/// A name no other test, in this process or another, is using.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

struct SqliteFile {
    store: SqliteStore,
    path: String,
    _dir: tempfile::TempDir,
}

impl Fixture for SqliteFile {
    fn store(&self) -> &dyn Store {
        &self.store
    }
    async fn reopen(&self) -> Option<Box<dyn Store>> {
        let store = SqliteStore::open(&self.path)
            .await
            .expect("open the SQLite file again");
        Some(Box::new(store))
    }
    async fn teardown(self) {
        self.store.close().await;
    }
}

async fn sqlite_file() -> SqliteFile {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("weft.db");
    let path = path.to_str().expect("a UTF-8 path").to_owned();
    let store = SqliteStore::open(&path).await.expect("open SQLite");
    SqliteFile {
        store,
        path,
        _dir: dir,
    }
}

async fn sqlite_in_memory() -> SqliteStore {
    SqliteStore::in_memory()
        .await
        .expect("an in-memory SQLite database")
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

struct PostgresSchema {
    store: PostgresStore,
    schema: String,
}

impl Fixture for PostgresSchema {
    fn store(&self) -> &dyn Store {
        &self.store
    }
    async fn reopen(&self) -> Option<Box<dyn Store>> {
        let store = PostgresStore::connect_in_schema(&database_url(), &self.schema)
            .await
            .expect("connect to the schema again");
        Some(Box::new(store))
    }
    async fn teardown(self) {
        self.store.close().await;
        let pool = sqlx::PgPool::connect(&database_url())
            .await
            .expect("connect to drop the schema");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.schema
        )))
        .execute(&pool)
        .await
        .expect("drop the test schema");
        pool.close().await;
    }
}

async fn postgres_schema() -> PostgresSchema {
    let schema = unique_name("weft_test");
    let store = PostgresStore::connect_in_schema(&database_url(), &schema)
        .await
        .expect("connect to Postgres (set DATABASE_URL)");
    PostgresSchema { store, schema }
}

mod sqlite {
    weft::conformance_tests!(super::sqlite_file());
}

mod sqlite_in_memory {
    weft::conformance_tests!(super::sqlite_in_memory());
}

mod postgres {
    weft::conformance_tests!(super::postgres_schema());
}

/// The notification triggers stay quiet for a host's own sessions (it
/// announces its work itself, after its commits) and still wake hosts for
/// any other session: an older host in a rolling upgrade, a statement typed
/// by hand. Notifications arrive in commit order, so a quiet host write
/// committed first and a loud one after must give the loud one's first.
/// Other tests share the channel; their payloads name their own schemas.
#[tokio::test]
async fn postgres_triggers_notify_for_other_sessions_only() {
    let fixture = postgres_schema().await;
    let schema = &fixture.schema;
    let url = database_url();
    let mut listener = sqlx::postgres::PgListener::connect(&url)
        .await
        .expect("connect a listener");
    listener.listen("weft_work").await.expect("LISTEN");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let mut host = pool.acquire().await.expect("a connection");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET search_path TO \"{schema}\""
    )))
    .execute(&mut *host)
    .await
    .unwrap();
    sqlx::query("SET weft.notify TO 'host'")
        .execute(&mut *host)
        .await
        .unwrap();
    sqlx::query("INSERT INTO timers (run_id, seq, fire_at_ms) VALUES ('r-host', 1, 1)")
        .execute(&mut *host)
        .await
        .expect("a host session inserts a timer");
    drop(host);
    let mut other = pool.acquire().await.expect("a connection");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET search_path TO \"{schema}\""
    )))
    .execute(&mut *other)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO runs (run_id, workflow_id, workflow_type, module_sha256, status,
                           last_seq, last_hash, created_at_ms)
         VALUES ('r-other', 'w-other', 't', 'm', 'running', 0, '', 1)",
    )
    .execute(&mut *other)
    .await
    .expect("another session inserts a run");
    // Tests running beside this one notify on the same channel for their
    // own schemas: only this schema's notifications count.
    let ours = format!(" {schema}");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let n = listener
                .recv()
                .await
                .expect("the listener's connection stays up");
            if n.payload().ends_with(&ours) {
                return n;
            }
        }
    })
    .await
    .expect("a notification for this schema within 10 s");
    assert_eq!(first.payload(), format!("run {schema}"));
    drop(other);
    pool.close().await;
    fixture.teardown().await;
}

/// What Postgres refuses for good — a NUL in text, a key over the index
/// size limit — is a rejected request, not an outage to retry: retrying
/// the same write can never succeed. The store stays usable.
#[tokio::test]
async fn postgres_refusals_of_the_data_are_not_retryable() {
    use weft::model::{Event, History, RunId, Sha256Hex};
    use weft::store::{CreateRun, RunOptions, RunStore, StoreError};
    let fixture = postgres_schema().await;
    let create = |workflow_id: String, run_id: &str| {
        let mut history = History::default();
        history.push(
            Event::WorkflowStarted {
                workflow_type: "order".into(),
                workflow_id: workflow_id.clone(),
                input: serde_json::json!(null),
                module_sha256: Sha256Hex::of(b"m"),
                seed: 1,
                parent: None,
                continued_from: None,
            },
            1,
        );
        CreateRun {
            run_id: RunId(run_id.into()),
            workflow_id,
            workflow_type: "order".into(),
            module_sha256: Sha256Hex::of(b"m"),
            first_event: history.events()[0].clone(),
            now_ms: 1,
            options: RunOptions::default(),
        }
    };
    for (workflow_id, sqlstate) in [
        ("nul\0id".to_owned(), "22021"),
        ("x".repeat(1 << 20), "54000"),
    ] {
        match fixture.store.create_run(create(workflow_id, "r-bad")).await {
            Err(e @ StoreError::Rejected(_)) => {
                assert!(!e.is_retryable());
                assert!(e.to_string().contains(sqlstate), "{e}");
                assert!(e.to_string().contains("not retryable"), "{e}");
            }
            other => panic!("expected a rejection ({sqlstate}), got {other:?}"),
        }
    }
    fixture
        .store
        .create_run(create("fine".into(), "r-fine"))
        .await
        .expect("the store still writes");
    fixture.teardown().await;
}
