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
    _dir: tempfile::TempDir,
}

impl Fixture for SqliteFile {
    fn store(&self) -> &dyn Store {
        &self.store
    }
    async fn teardown(self) {
        self.store.close().await;
    }
}

async fn sqlite_file() -> SqliteFile {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("weft.db");
    let store = SqliteStore::open(path.to_str().expect("a UTF-8 path"))
        .await
        .expect("open SQLite");
    SqliteFile { store, _dir: dir }
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
