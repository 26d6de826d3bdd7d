//! Shared test support: guest modules, backends, and a host on a manual clock.
#![allow(dead_code, unreachable_pub)]

use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use weft::model::{Event, History, RunId, Sha256Hex};
use weft::store::{RunRecord, Store};
use weft::wasm::{EngineConfig, WasmEngine};
use weft::{Activities, Host, HostConfig, ManualClock, RunStatus, StartRequest};

/// Where cargo puts build output: `CARGO_TARGET_DIR` as set when the tests
/// run, else as set when they were built, else the workspace's `target/`.
/// A relative directory is taken from the workspace root.
fn target_dir() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"));
    workspace.join(dir)
}

/// A guest component built by `scripts/build-guests`.
pub fn guest(crate_name: &str) -> Vec<u8> {
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let path = target_dir().join("wasm32-wasip2/guest").join(&file);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("cannot read guest {}: {e}; build the guests first with `scripts/build-guests` (the test command `scripts/test` does)", path.display())
    })
}

pub const START_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Which storage backend a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A unique name for this process and test.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh, isolated store and the URL-ish string that reopens it.
pub struct Db {
    pub store: Arc<dyn Store>,
    pub url: String,
    pub schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn fresh_db(backend: Backend) -> Db {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("weft.db");
            let url = path.to_str().unwrap().to_owned();
            let store = Arc::new(weft::store::SqliteStore::open(&url).await.unwrap());
            Db {
                store,
                url,
                schema: None,
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let schema = unique("weft_test");
            let url = database_url();
            let store = Arc::new(
                weft::store::PostgresStore::connect_in_schema(&url, &schema)
                    .await
                    .unwrap(),
            );
            Db {
                store,
                url,
                schema: Some(schema),
                _dir: None,
            }
        }
    }
}

impl Db {
    /// Drops the test's Postgres schema (nothing to do for SQLite: the file goes with its directory).
    pub async fn drop(&self) {
        let Some(schema) = &self.schema else { return };
        let pool = sqlx::PgPool::connect(&self.url)
            .await
            .expect("connect to drop the schema");
        // A statement of a server task still winding down can deadlock with
        // the drop (40P01); Postgres aborts one of the two, so try again.
        for attempt in 1.. {
            let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(&pool)
            .await;
            match dropped {
                Ok(_) => break,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("40P01") && attempt < 10 =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("drop the test schema {schema}: {e}"),
            }
        }
        pool.close().await;
    }
}

/// Reopens the same database as a new connection pool (what a restarted process does).
pub async fn reopen(db: &Db) -> Arc<dyn Store> {
    match &db.schema {
        None => Arc::new(weft::store::SqliteStore::open(&db.url).await.unwrap()),
        Some(schema) => Arc::new(
            weft::store::PostgresStore::connect_in_schema(&db.url, schema)
                .await
                .unwrap(),
        ),
    }
}

/// One engine per test process: compiled modules are shared between tests.
pub fn engine() -> Arc<WasmEngine> {
    static ENGINE: OnceLock<Arc<WasmEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let config = EngineConfig {
                activation_timeout: Duration::from_millis(1_500),
                memory_limit_bytes: 32 << 20,
                ..EngineConfig::default()
            };
            Arc::new(WasmEngine::new(config).unwrap())
        })
        .clone()
}

pub fn test_config() -> HostConfig {
    HostConfig {
        host_id: unique("host"),
        poll_interval: Duration::from_millis(50),
        seed: Some(7),
        ..HostConfig::default()
    }
}

/// A running host on a manual clock.
pub struct TestHost {
    pub host: Host,
    pub clock: ManualClock,
    pub db: Db,
    host_id: String,
    running: Option<weft::Running>,
}

impl TestHost {
    pub async fn new(backend: Backend, activities: Activities) -> Self {
        Self::with_config(backend, activities, test_config()).await
    }

    pub async fn with_config(backend: Backend, activities: Activities, config: HostConfig) -> Self {
        Self::with_engine(backend, activities, config, engine()).await
    }

    pub async fn with_engine(
        backend: Backend,
        activities: Activities,
        config: HostConfig,
        engine: Arc<WasmEngine>,
    ) -> Self {
        let clock = ManualClock::new(START_MS);
        Self::start_on(fresh_db(backend).await, activities, config, engine, clock).await
    }

    /// A host on a clock the caller made first (so that its activities can
    /// wait on it too).
    pub async fn with_clock(backend: Backend, activities: Activities, clock: ManualClock) -> Self {
        Self::start_on(
            fresh_db(backend).await,
            activities,
            test_config(),
            engine(),
            clock,
        )
        .await
    }

    async fn start_on(
        db: Db,
        activities: Activities,
        config: HostConfig,
        engine: Arc<WasmEngine>,
        clock: ManualClock,
    ) -> Self {
        // The host's warnings show up with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("weft=info")
            .with_test_writer()
            .try_init();
        let host_id = config.host_id.clone();
        let host = Host::with_engine(
            db.store.clone(),
            activities,
            config,
            Arc::new(clock.clone()),
            engine,
        );
        let running = Some(host.run().await.unwrap());
        Self {
            host,
            clock,
            db,
            host_id,
            running,
        }
    }

    /// What a crash and a restart do: this host's loops stop (its attempts in
    /// flight are left as they are, as if its process had died), and a new
    /// host with the same id, on a new connection to the same database and
    /// the same clock, takes over with `activities`.
    pub async fn restart(mut self, activities: Activities) -> Self {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        let store = reopen(&self.db).await;
        let mut db = self.db;
        db.store = store;
        let config = HostConfig {
            host_id: self.host_id.clone(),
            ..test_config()
        };
        Self::start_on(db, activities, config, engine(), self.clock).await
    }

    pub async fn deploy(&self, crate_name: &str) -> Sha256Hex {
        self.host
            .deploy(crate_name, "", &guest(crate_name))
            .await
            .unwrap()
            .sha256
    }

    pub async fn start(
        &self,
        module: &Sha256Hex,
        workflow_type: &str,
        id: &str,
        input: Value,
    ) -> RunId {
        self.host
            .start(StartRequest {
                workflow_id: id.into(),
                workflow_type: workflow_type.into(),
                input,
                module: module.clone(),
                options: Default::default(),
            })
            .await
            .unwrap()
    }

    /// Waits (real time, bounded) until `check` holds for the run's record.
    pub async fn until(
        &self,
        run: &RunId,
        what: &str,
        check: impl Fn(&RunRecord) -> bool,
    ) -> RunRecord {
        for _ in 0..1200 {
            let r = self.host.describe(run).await.unwrap();
            if check(&r) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "run {run} never reached: {what}; it is {:?}",
            self.host.describe(run).await.unwrap()
        );
    }

    /// Waits until the run's history has an event of this kind (the `n`th, counting from 1).
    pub async fn until_event(&self, run: &RunId, kind: &str, n: usize) {
        for _ in 0..1200 {
            let h = self.host.history(run).await.unwrap();
            if h.events().iter().filter(|e| e.event.kind() == kind).count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let kinds: Vec<_> = self
            .host
            .history(run)
            .await
            .unwrap()
            .events()
            .iter()
            .map(|e| e.event.kind())
            .collect();
        panic!("run {run} never recorded {kind} #{n}; history: {kinds:?}");
    }

    /// Waits for the run to leave `running`, with a bound.
    pub async fn finished(&self, run: &RunId) -> RunRecord {
        tokio::time::timeout(Duration::from_secs(60), self.host.wait(run))
            .await
            .unwrap_or_else(|_| panic!("run {run} did not finish in 60 s"))
            .unwrap()
    }

    /// Moves the clock to the next timer due, if any.
    pub async fn skip_to_next_timer(&self) -> bool {
        match self.db.store.next_timer_at().await.unwrap() {
            Some(t) => {
                self.clock.set(t);
                true
            }
            None => false,
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.db.drop().await;
    }
}

pub fn completed(r: &RunRecord) -> bool {
    r.status == RunStatus::Completed
}

/// Counts activity executions by name, for "not executed again" checks.
#[derive(Clone, Default)]
pub struct Calls(pub Arc<Mutex<Vec<String>>>);

impl Calls {
    pub fn record(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push(what.into());
    }
    pub fn count(&self, what: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|c| *c == what).count()
    }
}

/// Generates one test per backend from an `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Postgres).await }
            )*
        }
    };
}

/// Asserts that the history records `n` activity completions, each of a
/// different activity: none was recorded twice, whatever crashed in between.
pub fn assert_each_completion_once(history: &History, n: usize) {
    let seqs: Vec<u32> = history
        .events()
        .iter()
        .filter_map(|e| match e.event {
            Event::ActivityCompleted { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    let mut unique = seqs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (seqs.len(), unique.len()),
        (n, n),
        "each activity completion is recorded exactly once: {seqs:?}"
    );
}
