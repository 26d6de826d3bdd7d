//! What the disk and the database give one connection, and the counters
//! that say what a scenario cost them.
//!
//! Every host figure is read against the probe: a host that commits once
//! per step of a run cannot finish more steps per second than one
//! connection commits single rows, unless it batches, so the ratio says how
//! close a figure is to that bound on any machine.

use super::report::{DbCost, PerUnit, Probe};
use anyhow::Context;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The probe stops after this many commits or after `PROBE_TIME`, whichever comes first.
const PROBE_COMMITS: u64 = 2_000;
const PROBE_TIME: Duration = Duration::from_secs(2);

/// Untimed commits first, so the table's first pages and the connection's
/// statement cache are not in the figure.
const PROBE_WARM: u64 = 50;

/// Single-row autocommit `INSERT`s into `probe` on `$conn` until
/// `PROBE_COMMITS` or `PROBE_TIME`: the commits and the seconds they took.
/// (A macro: the Postgres and SQLite connections share no executor type.)
macro_rules! timed_inserts {
    ($conn:ident) => {{
        let insert =
            || sqlx::query("INSERT INTO probe (payload) VALUES ($1)").bind("weft bench probe");
        for _ in 0..PROBE_WARM {
            insert().execute(&mut $conn).await?;
        }
        let began = Instant::now();
        let mut commits: u64 = 0;
        while commits < PROBE_COMMITS && began.elapsed() < PROBE_TIME {
            insert().execute(&mut $conn).await?;
            commits += 1;
        }
        (commits, began.elapsed().as_secs_f64())
    }};
}

/// Single-row commits per second from one connection to `schema`: a normal
/// table, one `INSERT` per autocommit transaction, as a host's store commits.
pub(super) async fn postgres(url: &str, schema: &str) -> anyhow::Result<Probe> {
    let options: PgConnectOptions = url
        .parse()
        .with_context(|| format!("{} is not a Postgres URL", weft::store::redact_url(url)))?;
    let mut conn = options
        .options([("search_path", schema)])
        .application_name("weft-bench-probe")
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot connect to {} for the probe; is Postgres up? (--postgres-url / DATABASE_URL)",
                weft::store::redact_url(url)
            )
        })?;
    sqlx::query("CREATE TABLE probe (id bigserial PRIMARY KEY, payload text NOT NULL)")
        .execute(&mut conn)
        .await?;
    let (commits, seconds) = timed_inserts!(conn);
    // Closed, not dropped: its backend exits and reports its statistics now,
    // not inside the first scenario's window.
    conn.close().await?;
    Ok(Probe {
        commits,
        seconds,
        commits_per_second: commits as f64 / seconds,
        how: "one connection, one INSERT per transaction into a logged table".into(),
        full_sync_commits_per_second: None,
    })
}

/// The same for SQLite, on a file opened the way `SqliteStore` opens its own
/// (WAL, `synchronous=NORMAL`), and once more with `synchronous=FULL`, where
/// each commit waits for the disk, to show what the store's setting buys.
pub(super) async fn sqlite(dir: &Path) -> anyhow::Result<Probe> {
    let normal = sqlite_with(&dir.join("probe.db"), SqliteSynchronous::Normal).await?;
    let full = sqlite_with(&dir.join("probe-full.db"), SqliteSynchronous::Full).await?;
    Ok(Probe {
        commits: normal.0,
        seconds: normal.1,
        commits_per_second: normal.0 as f64 / normal.1,
        how: "one connection, one INSERT per transaction, WAL, synchronous=NORMAL as SqliteStore: a commit does not wait for the disk".into(),
        full_sync_commits_per_second: Some(full.0 as f64 / full.1),
    })
}

async fn sqlite_with(file: &Path, synchronous: SqliteSynchronous) -> anyhow::Result<(u64, f64)> {
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        .connect()
        .await
        .with_context(|| format!("cannot open the SQLite probe file {}", file.display()))?;
    sqlx::query("CREATE TABLE probe (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        .execute(&mut conn)
        .await?;
    let measured = timed_inserts!(conn);
    conn.close().await?;
    Ok(measured)
}

/// The bench's own connection to Postgres: it makes and drops the schemas
/// and reads the counters. It never writes inside a scenario's window.
pub(super) struct Pg {
    url: String,
    conn: PgConnection,
    schemas: Vec<String>,
    others: Option<Others>,
}

/// The `application_name`s of the bench's connections: the bench, its
/// probe, its embedded host, its server (`weft-<host id>`) and the watcher.
const OURS: &str = "'weft-bench', 'weft-bench-probe', 'weft-bench-embedded', 'weft-bench-server', 'weft-bench-watch'";

/// Looks a few times a second for other clients busy on the same Postgres,
/// whose writes the cluster-wide counters would count as the bench's.
struct Others {
    busy: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Others {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Cluster-wide counters at one moment.
#[derive(Clone, Copy, Debug, Serialize)]
pub(super) struct Counters {
    /// The next transaction id: only transactions that write get one.
    next_xid: i64,
    /// The WAL position, in bytes from the start.
    wal_lsn: i64,
    /// `pg_stat_wal.wal_sync`: WAL flushes to disk (Postgres 14 and later).
    wal_syncs: Option<i64>,
}

impl Pg {
    pub(super) async fn connect(url: &str) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url
            .parse()
            .with_context(|| format!("{} is not a Postgres URL", weft::store::redact_url(url)))?;
        let conn = options
            .application_name("weft-bench")
            .connect()
            .await
            .with_context(|| {
                format!(
                    "cannot connect to {}; is Postgres up? (--postgres-url / DATABASE_URL)",
                    weft::store::redact_url(url)
                )
            })?;
        Ok(Self {
            url: url.to_owned(),
            conn,
            schemas: Vec::new(),
            others: None,
        })
    }

    /// Starts looking for other busy clients (see [`Pg::others_seen`]).
    pub(super) async fn watch_others(&mut self) -> anyhow::Result<()> {
        let options: PgConnectOptions = self.url.parse()?;
        let mut conn = options
            .application_name("weft-bench-watch")
            .connect()
            .await?;
        let busy = Arc::new(AtomicU32::new(0));
        let seen = busy.clone();
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND state <> 'idle' \
               AND pid <> pg_backend_pid() AND application_name NOT IN ({OURS})"
        );
        let task = tokio::spawn(async move {
            loop {
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or(0);
                if n > 0 {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        self.others = Some(Others { busy, task });
        Ok(())
    }

    /// Samples since the last call in which another client was busy.
    pub(super) fn others_seen(&self) -> u32 {
        self.others
            .as_ref()
            .map_or(0, |o| o.busy.swap(0, Ordering::Relaxed))
    }

    pub(super) async fn version(&mut self) -> anyhow::Result<String> {
        Ok(sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut self.conn)
            .await?)
    }

    /// Creates `schema` (a name the bench made up, so it is spliced in as is)
    /// and remembers to drop it.
    pub(super) async fn create_schema(&mut self, schema: &str) -> anyhow::Result<()> {
        let sql = sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\""));
        sqlx::query(sql).execute(&mut self.conn).await?;
        self.schemas.push(schema.to_owned());
        Ok(())
    }

    /// Drops every schema this made. Bounded, so that a server that somehow
    /// still holds a lock costs a warning, not a hung bench.
    pub(super) async fn drop_schemas(&mut self) {
        for schema in std::mem::take(&mut self.schemas) {
            let sql = sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
            let dropped = tokio::time::timeout(
                Duration::from_secs(30),
                sqlx::query(sql).execute(&mut self.conn),
            )
            .await;
            if !matches!(dropped, Ok(Ok(_))) {
                eprintln!(
                    "warning: could not drop schema {schema} in {}; drop it by hand",
                    weft::store::redact_url(&self.url)
                );
            }
        }
    }

    /// Tables in `schema`: proof that a server given the schema in its URL put its tables there.
    pub(super) async fn tables_in(&mut self, schema: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
        )
        .bind(schema)
        .fetch_one(&mut self.conn)
        .await?)
    }

    pub(super) async fn counters(&mut self) -> anyhow::Result<Counters> {
        let (next_xid, wal_lsn): (i64, i64) = sqlx::query_as(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
        )
        .fetch_one(&mut self.conn)
        .await
        .context("cannot read the transaction and WAL counters")?;
        let wal_syncs = sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal")
            .fetch_one(&mut self.conn)
            .await
            .ok();
        Ok(Counters {
            next_xid,
            wal_lsn,
            wal_syncs,
        })
    }
}

/// What happened between two readings, per workflow and, when `activities`
/// is given, per activity.
pub(super) fn cost(
    before: Counters,
    after: Counters,
    workflows: usize,
    activities: Option<usize>,
    settled: bool,
    others_seen: u32,
) -> DbCost {
    let write_transactions = after.next_xid - before.next_xid;
    let wal_bytes = after.wal_lsn - before.wal_lsn;
    let wal_syncs = after.wal_syncs.zip(before.wal_syncs).map(|(a, b)| a - b);
    let per = |n: usize| PerUnit {
        write_transactions: write_transactions as f64 / n.max(1) as f64,
        wal_bytes: wal_bytes as f64 / n.max(1) as f64,
        wal_syncs: wal_syncs.map(|s| s as f64 / n.max(1) as f64),
    };
    DbCost {
        write_transactions,
        wal_bytes,
        wal_syncs,
        syncs_settled: settled,
        other_clients_seen: others_seen,
        per_workflow: per(workflows),
        per_activity: activities.map(per),
    }
}

/// The peak resident set of process `pid` (`self` for this one), in KiB.
pub(super) fn peak_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Starts this process's peak over (Linux 4.0 and later), so that each
/// backend's embedded run reports its own peak, not the largest so far.
pub(super) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
