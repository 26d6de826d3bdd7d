//! The SQLite backend: the embedded default (`weft dev` needs nothing installed).
//!
//! [`SqliteStore`] keeps one file in WAL mode with `synchronous=NORMAL`: a
//! committed activation survives the process being killed (not a power cut,
//! which production leaves to Postgres). SQLite has one writer at a time, so
//! the store has exactly one write connection, and every write goes through it
//! in order instead of contending for the file lock; reads use a small pool of
//! their own that WAL lets run beside the writer. Multi-statement writes start
//! with `BEGIN IMMEDIATE`, which takes the write lock up front: a deferred
//! transaction that reads and then writes can fail with `SQLITE_BUSY` when
//! another process wrote in between, and no busy timeout helps then. The hot
//! writes (a start, an activation, an attempt's end) go through a committer
//! that commits whatever writes are waiting in one transaction, each in a
//! savepoint of its own ([`batch`]). A task
//! folds the WAL back into the file beside the writer ([`Checkpoints`]), so
//! that the writer does not stall to do it every thousand pages.
//!
//! SQLite has no `SKIP LOCKED` and needs none: a claim is one `UPDATE …
//! RETURNING` statement, atomic under the write lock.

use super::expiry;
use super::rows::{
    self, ClaimedTaskRow, CommitColumns, EventRow, LifecycleColumns, ModuleRow, NewRunColumns,
    PendingRow, Placed, RunRow, RunStateRow, TaskStateRow, int, select_run, uint,
};
use super::{
    ActivationCommit, ActivityStore, ActivityTask, AttemptOutcome, ClaimActivity, CreateRun,
    Created, FinishedAttempt, Heartbeat, HistoryStore, IdConflictPolicy, ListFilter, ModuleRecord,
    ModuleStore, PendingJobs, RunClaim, RunPage, RunRecord, RunStore, SignalStore, StoreError,
    StoreResult, TIMEOUT_BATCH, WaitingOn,
};
use crate::model::{Failure, History, RecordedEvent, RunId, Sha256Hex};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use std::sync::Arc;
use std::time::Duration;

mod batch;
mod lifecycle;
mod versions;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Rows per multi-row `INSERT`, well under SQLite's limit of bound parameters.
const ROWS_PER_INSERT: usize = 200;

/// A store in one SQLite file (WAL, `synchronous=NORMAL`): the embedded default.
///
/// One connection writes, so writes queue in the process instead of contending
/// for the file lock; a few more connections read beside it.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// The one connection that writes.
    writer: SqlitePool,
    /// Connections that only read (the writer itself for an in-memory database).
    reader: SqlitePool,
    /// Commits the hot writes of many runs together, on the writer.
    committer: batch::Committer,
    /// Folds the WAL back into the file beside the writer (a file only).
    _checkpoints: Option<Arc<Checkpoints>>,
}

/// How far the WAL may grow (in 4 KiB pages) before the writer checkpoints
/// it itself, should the [`Checkpoints`] task fall behind: 64 MiB.
const WAL_BACKSTOP_PAGES: &str = "16384";

/// How often [`Checkpoints`] folds the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// A task that checkpoints the WAL on a reading connection. Each commit
/// appends every page it changed to the WAL, and by default the committing
/// connection copies the WAL back into the file every 1,000 pages, with the
/// one writer stalled meanwhile. A `PASSIVE` checkpoint here never blocks the
/// writer (it copies what no reader still needs); the writer checkpoints only
/// past [`WAL_BACKSTOP_PAGES`]. Stopped when the last clone of the store goes.
#[derive(Debug)]
struct Checkpoints(tokio::task::JoinHandle<()>);

impl Checkpoints {
    fn spawn(pool: SqlitePool) -> Self {
        Self(tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if pool.is_closed() {
                    return;
                }
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::debug!("a WAL checkpoint failed (the writer's backstop remains): {e}");
                }
            }
        }))
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it if missing, and brings its
    /// schema up to date. `:memory:` opens [`SqliteStore::in_memory`].
    pub async fn open(path: &str) -> StoreResult<Self> {
        if path == ":memory:" {
            return Self::in_memory().await;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let options = options
            .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES)
            // The committer's savepoints keep each page's old content for a
            // rollback in a statement journal: in memory, not a temporary file.
            .pragma("temp_store", "memory");
        let open_error = |e: sqlx::Error| {
            StoreError::Unavailable(format!(
                "cannot open the SQLite database {path:?}: {e}; check that its directory exists and is writable"
            ))
        };
        // A file's connections do not go stale: no ping before each statement.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| rows::migrate_error(&format!("the SQLite database {path:?}"), e))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let checkpoints = Arc::new(Checkpoints::spawn(reader.clone()));
        Ok(Self {
            committer: batch::Committer::spawn(writer.clone()),
            writer,
            reader,
            _checkpoints: Some(checkpoints),
        })
    }

    /// A private database in memory, gone when the store is dropped: for tests.
    pub async fn in_memory() -> StoreResult<Self> {
        // Each connection to `:memory:` is its own database: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                SqliteConnectOptions::new()
                    .in_memory(true)
                    .foreign_keys(true),
            )
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| rows::migrate_error("an in-memory SQLite database", e))?;
        Ok(Self {
            committer: batch::Committer::spawn(pool.clone()),
            writer: pool.clone(),
            reader: pool,
            _checkpoints: None,
        })
    }

    /// Waits for running statements and closes every connection.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// Other hosts would be told of the work a version write made ready;
    /// an SQLite file has one host, whose loops the caller wakes.
    pub(super) fn announce_all(&self) {}

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Everything an activation commit writes, inside the caller's write
/// transaction; nothing unless the lease and the history still hold
/// ([`StoreError::Conflict`] then, saying what moved on).
async fn apply_activation(
    conn: &mut SqliteConnection,
    commit: &ActivationCommit,
    c: &CommitColumns,
    lc: &LifecycleColumns,
) -> StoreResult<()> {
    let run_id = &commit.run_id;
    // The conditional append: nothing is written unless the lease and the history still hold.
    let updated = sqlx::query(
        "UPDATE runs
            SET last_seq = $4, last_hash = $5, handled_wakeups = $6,
                lease_owner = NULL, lease_expires_at_ms = 0,
                status = $7, output = $8, failure = $9, closed_at_ms = $10
          WHERE run_id = $1 AND lease_token = $2 AND last_seq = $3 AND status = 'running'",
    )
    .bind(run_id.as_str())
    .bind(commit.lease_token)
    .bind(int(c.expected_last_seq))
    .bind(c.last_seq)
    .bind(c.last_hash.as_str())
    .bind(commit.observed_wakeups)
    .bind(c.status)
    .bind(c.output.as_deref())
    .bind(c.failure.as_deref())
    .bind(c.closed_at_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        let now = run_state(conn, run_id).await?;
        return Err(rows::run_conflict(
            run_id,
            now,
            commit.lease_token,
            Some(c.expected_last_seq),
        ));
    }
    if let Err(e) = insert_events(conn, run_id, c).await {
        return Err(match rows::unique_violation(&e) {
            Some(_) => rows::events_exist(run_id),
            None => e.into(),
        });
    }
    if !c.consumed_activities.is_empty() {
        sqlx::query(
            "UPDATE activity_tasks SET consumed = 1
              WHERE run_id = $1 AND seq IN (SELECT value FROM json_each($2))",
        )
        .bind(run_id.as_str())
        .bind(json_list(&c.consumed_activities)?)
        .execute(&mut *conn)
        .await?;
    }
    if !c.consumed_signals.is_empty() {
        sqlx::query("UPDATE signals SET consumed = 1 WHERE run_id = $1 AND id IN (SELECT value FROM json_each($2))")
            .bind(run_id.as_str())
            .bind(json_list(&c.consumed_signals)?)
            .execute(&mut *conn)
            .await?;
    }
    insert_tasks(conn, run_id, c).await?;
    if c.closing {
        sqlx::query("DELETE FROM timers WHERE run_id = $1")
            .bind(run_id.as_str())
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE activity_tasks
                SET status = 'abandoned', lease_owner = NULL, lease_expires_at_ms = NULL
              WHERE run_id = $1 AND consumed = 0 AND status IN ('scheduled', 'running')",
        )
        .bind(run_id.as_str())
        .execute(&mut *conn)
        .await?;
    } else {
        insert_timers(conn, run_id, c).await?;
        // After the inserts: a timer started and cancelled within one activation is gone too.
        if !c.removed_timers.is_empty() {
            sqlx::query(
                "DELETE FROM timers WHERE run_id = $1 AND seq IN (SELECT value FROM json_each($2))",
            )
            .bind(run_id.as_str())
            .bind(json_list(&c.removed_timers)?)
            .execute(&mut *conn)
            .await?;
        }
    }
    if !lc.is_empty() {
        lifecycle::apply_lifecycle(conn, run_id, lc).await?;
    }
    cancel_activities(conn, run_id, &commit.cancelled_activities, commit.now_ms).await?;
    Ok(())
}

/// What a run's row says now, read inside the failed write's transaction.
async fn run_state(
    conn: &mut SqliteConnection,
    run_id: &RunId,
) -> StoreResult<Option<RunStateRow>> {
    Ok(
        sqlx::query_as("SELECT status, lease_token, last_seq FROM runs WHERE run_id = $1")
            .bind(run_id.as_str())
            .fetch_optional(conn)
            .await?,
    )
}

async fn insert_events(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    c: &CommitColumns,
) -> sqlx::Result<()> {
    let rows: Vec<usize> = (0..c.event_seqs.len()).collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (run_id, seq, kind, payload, recorded_at_ms, hash) ",
        );
        q.push_values(chunk, |mut b, &i| {
            b.push_bind(run_id.as_str())
                .push_bind(c.event_seqs[i])
                .push_bind(c.event_kinds[i])
                .push_bind(c.event_payloads[i].as_str())
                .push_bind(c.event_times[i])
                .push_bind(c.event_hashes[i].as_str());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

async fn insert_tasks(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    c: &CommitColumns,
) -> StoreResult<()> {
    let rows: Vec<usize> = (0..c.task_seqs.len()).collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        // A task with an owner is claimed as it is scheduled: its first
        // attempt runs, as claim_activities would have started it.
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO activity_tasks (run_id, seq, name, input, options, lease_ms, status, visible_at_ms,
                                         schedule_to_start_ms, heartbeat_timeout_ms, close_deadline_ms,
                                         start_deadline_ms, attempt, lease_token, lease_owner,
                                         lease_expires_at_ms, heartbeat_deadline_ms) ",
        );
        q.push_values(chunk, |mut b, &i| {
            let owner = c.task_owner[i].as_deref();
            let claimed = owner.is_some() && !c.closing;
            let status = match (c.closing, claimed) {
                (true, _) => "abandoned",
                (false, true) => "running",
                (false, false) => "scheduled",
            };
            let heartbeat_timeout = c.task_heartbeat_timeout_ms[i];
            b.push_bind(run_id.as_str())
                .push_bind(c.task_seqs[i])
                .push_bind(c.task_names[i].as_str())
                .push_bind(c.task_inputs[i].as_str())
                .push_bind(c.task_options[i].as_str())
                .push_bind(c.task_lease_ms[i])
                .push_bind(status)
                .push_bind(c.task_lease_expires[i].unwrap_or(c.task_visible_at[i]))
                .push_bind(c.task_schedule_to_start_ms[i])
                .push_bind(heartbeat_timeout)
                .push_bind(c.task_close_deadline[i])
                .push_bind(if claimed {
                    None
                } else {
                    c.task_start_deadline[i]
                })
                .push_bind(i64::from(claimed))
                .push_bind(i64::from(claimed))
                .push_bind(owner)
                .push_bind(c.task_lease_expires[i])
                .push_bind(
                    (claimed && heartbeat_timeout > 0).then(|| c.now_ms + heartbeat_timeout),
                );
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

async fn insert_timers(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    c: &CommitColumns,
) -> StoreResult<()> {
    let rows: Vec<usize> = (0..c.timer_seqs.len()).collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO timers (run_id, seq, fire_at_ms) ");
        q.push_values(chunk, |mut b, &i| {
            b.push_bind(run_id.as_str())
                .push_bind(c.timer_seqs[i])
                .push_bind(c.timer_fire_at[i]);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Resolves the activities the workflow cancelled that have not resolved:
/// each fails at once with `Cancelled` (a running attempt learns it at its
/// next heartbeat, and its finish is a conflict), and the run is woken to
/// receive them. Runs after the commit set `handled_wakeups`, so the wake-up
/// is not taken for handled.
async fn cancel_activities(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    seqs: &[u32],
    now_ms: u64,
) -> StoreResult<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let cancelled = sqlx::query(
        "UPDATE activity_tasks
            SET status = 'failed', failure = $3, resolved_at_ms = $4, cancelled_at_ms = $4,
                lease_owner = NULL, lease_expires_at_ms = NULL,
                start_deadline_ms = NULL, heartbeat_deadline_ms = NULL
          WHERE run_id = $1 AND seq IN (SELECT value FROM json_each($2))
            AND status IN ('scheduled', 'running') AND consumed = 0",
    )
    .bind(run_id.as_str())
    .bind(json_list(seqs)?)
    .bind(rows::cancelled_failure()?)
    .bind(int(now_ms))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if cancelled > 0 {
        wake_run(conn, run_id, now_ms).await?;
    }
    Ok(())
}

/// Gives a run a job: it is claimable until an activation handles the wake-up.
async fn wake_run(conn: &mut SqliteConnection, run_id: &RunId, now_ms: u64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $2 ELSE woken_at_ms END,
                         wakeups = wakeups + 1
          WHERE run_id = $1",
    )
    .bind(run_id.as_str())
    .bind(int(now_ms))
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends an attempt as `end.columns` say, if the task is still `end.status`
/// under `end.lease_token` (and, for the timeout sweep, still past a deadline
/// at `end.expired_at`); a final outcome wakes the run. Whether it applied.
async fn end_attempt(conn: &mut SqliteConnection, end: &rows::AttemptEnd<'_>) -> StoreResult<bool> {
    let a = &end.columns;
    let updated = sqlx::query(
        "UPDATE activity_tasks
            SET status = $4, lease_owner = NULL, lease_expires_at_ms = NULL,
                output = $5, failure = $6, resolved_at_ms = $7, visible_at_ms = COALESCE($8, visible_at_ms),
                heartbeat_deadline_ms = NULL,
                start_deadline_ms = CASE WHEN $8 IS NOT NULL AND schedule_to_start_ms > 0
                                         THEN $8 + schedule_to_start_ms END
          WHERE run_id = $1 AND seq = $2 AND lease_token = $3 AND status = $9
            AND ($10 IS NULL OR close_deadline_ms <= $10 OR start_deadline_ms <= $10
                 OR heartbeat_deadline_ms <= $10)",
    )
    .bind(end.run_id.as_str())
    .bind(i64::from(end.seq))
    .bind(end.lease_token)
    .bind(a.status)
    .bind(a.output.as_deref())
    .bind(a.failure.as_deref())
    .bind(a.resolved_at_ms)
    .bind(a.retry_at_ms)
    .bind(end.status)
    .bind(end.expired_at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 1 && a.is_final {
        wake_run(conn, end.run_id, end.now_ms).await?;
    }
    Ok(updated == 1)
}

/// A list of integers as one JSON array parameter, for `IN (SELECT value FROM json_each($n))`:
/// one statement (and one cached plan) whatever the list's length.
fn json_list<T: serde::Serialize>(items: &[T]) -> StoreResult<String> {
    rows::to_json(&items, "a list of keys")
}

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn history(&self, run_id: &RunId) -> StoreResult<History> {
        let events = self.events_after(run_id, 0).await?;
        if events.is_empty() {
            return Err(StoreError::NotFound {
                what: format!("run {run_id}"),
            });
        }
        Ok(History::from_recorded(events))
    }

    async fn events_after(&self, run_id: &RunId, after: u64) -> StoreResult<Vec<RecordedEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, kind, payload, recorded_at_ms, hash FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(run_id.as_str())
        .bind(int(after))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(|r| r.into_recorded(run_id)).collect()
    }
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, request: CreateRun) -> StoreResult<Created> {
        let run = NewRunColumns::new(&request)?;
        let mut tx = self.begin_write().await?;
        let created = match lifecycle::place_run(&mut tx, &run).await? {
            Placed::New => Created::New,
            Placed::Open(open)
                if request.options.id_conflict_policy == IdConflictPolicy::UseExisting =>
            {
                if let (Some(name), Some(input)) = (&run.signal_name, &run.signal_input) {
                    // The writer holds the lock: the run found open is still open.
                    lifecycle::queue_signal(&mut tx, &open, name, input, run.now_ms).await?;
                }
                Created::Existing(open)
            }
            refused => {
                return Err(refused
                    .refusal(&run)
                    .expect("a placement other than New is a refusal"));
            }
        };
        tx.commit().await?;
        Ok(created)
    }

    async fn list_runs(&self, filter: &ListFilter) -> StoreResult<RunPage> {
        lifecycle::list_runs(&self.reader, filter).await
    }

    async fn run(&self, run_id: &RunId) -> StoreResult<RunRecord> {
        let row: Option<RunRow> = sqlx::query_as(select_run!("WHERE run_id = $1"))
            .bind(run_id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.ok_or_else(|| StoreError::NotFound {
            what: format!("run {run_id}"),
        })?
        .into_record()
    }

    async fn stopped_runs(&self, run_ids: &[RunId]) -> StoreResult<Vec<RunId>> {
        let keys: Vec<&str> = run_ids.iter().map(RunId::as_str).collect();
        let stopped: Vec<String> = sqlx::query_scalar(
            "SELECT run_id FROM runs
              WHERE run_id IN (SELECT value FROM json_each($1)) AND status <> 'running'",
        )
        .bind(json_list(&keys)?)
        .fetch_all(&self.reader)
        .await?;
        Ok(stopped.into_iter().map(RunId).collect())
    }

    async fn run_by_workflow_id(&self, workflow_id: &str) -> StoreResult<RunRecord> {
        let row: Option<RunRow> = sqlx::query_as(select_run!(
            "WHERE workflow_id = $1
             ORDER BY status IN ('running', 'stuck') DESC, created_at_ms DESC, rowid DESC
             LIMIT 1"
        ))
        .bind(workflow_id)
        .fetch_optional(&self.reader)
        .await?;
        row.ok_or_else(|| StoreError::NotFound {
            what: format!("a run of workflow id {workflow_id:?}"),
        })?
        .into_record()
    }

    async fn claim_runs(
        &self,
        host_id: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> StoreResult<Vec<RunClaim>> {
        let rows: Vec<rows::ClaimRow> = sqlx::query_as(
            "UPDATE runs
                SET lease_owner = $1, lease_expires_at_ms = $2 + $3,
                    lease_token = lease_token + 1, lease_wakeups = wakeups
              WHERE run_id IN (
                    SELECT run_id FROM (
                        SELECT run_id FROM runs
                         WHERE status = 'running' AND wakeups > handled_wakeups AND lease_expires_at_ms <= $2
                         ORDER BY woken_at_ms LIMIT $4)
                    UNION
                    SELECT run_id FROM (
                        SELECT t.run_id FROM timers t JOIN runs r ON r.run_id = t.run_id
                         WHERE t.fire_at_ms <= $2 AND r.status = 'running' AND r.lease_expires_at_ms <= $2
                         ORDER BY t.fire_at_ms LIMIT $4)
                    UNION
                    SELECT run_id FROM (
                        SELECT run_id FROM runs
                         WHERE status = 'running' AND deadline_ms IS NOT NULL AND deadline_ms <= $2
                           AND lease_expires_at_ms <= $2
                         ORDER BY deadline_ms LIMIT $4)
                    LIMIT $4)
             RETURNING run_id, lease_token, wakeups, last_seq",
        )
        .bind(host_id)
        .bind(int(now_ms))
        .bind(int(lease_ms))
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        rows::run_claims(rows)
    }

    async fn waiting_on(&self, run_id: &RunId) -> StoreResult<WaitingOn> {
        let rows: Vec<rows::WaitingRow> = sqlx::query_as(rows::WAITING_ON_SQL)
            .bind(run_id.as_str())
            .fetch_all(&self.reader)
            .await?;
        rows::waiting_on(run_id, rows)
    }

    async fn pending_jobs(&self, run_id: &RunId, now_ms: u64) -> StoreResult<PendingJobs> {
        let rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT 'a' AS source, seq AS n, attempt, status, output AS body, failure AS extra, resolved_at_ms AS at_ms
               FROM activity_tasks
              WHERE run_id = $1 AND status IN ('completed', 'failed') AND consumed = 0
             UNION ALL
             SELECT 's', id, NULL, NULL, input, name, received_at_ms
               FROM signals WHERE run_id = $1 AND consumed = 0
             UNION ALL
             SELECT 't', seq, NULL, NULL, NULL, NULL, fire_at_ms
               FROM timers WHERE run_id = $1 AND fire_at_ms <= $2
             UNION ALL
             SELECT 'c', seq, NULL, NULL, output, failure, COALESCE(resolved_at_ms, 0)
               FROM children WHERE parent_run_id = $1 AND resolved = 1 AND consumed = 0
             UNION ALL
             SELECT 'u', id, NULL, update_id, input, name, received_at_ms
               FROM updates WHERE run_id = $1 AND consumed = 0
             UNION ALL
             SELECT 'x', 0, NULL, NULL, NULL, cancel_reason, COALESCE(cancel_requested_at_ms, 0)
               FROM runs WHERE run_id = $1 AND cancel_reason IS NOT NULL AND cancel_delivered = 0",
        )
        .bind(run_id.as_str())
        .bind(int(now_ms))
        .fetch_all(&self.reader)
        .await?;
        rows::pending_jobs(run_id, rows)
    }

    async fn commit_activation(&self, commit: ActivationCommit) -> StoreResult<()> {
        let c = CommitColumns::new(&commit)?;
        let lc = LifecycleColumns::new(&commit)?;
        self.committer
            .write(move |conn| {
                Box::pin(async move { apply_activation(conn, &commit, &c, &lc).await })
            })
            .await
    }

    async fn start_run(&self, create: CreateRun, first: ActivationCommit) -> StoreResult<bool> {
        let run = NewRunColumns::new(&create)?;
        let c = CommitColumns::new(&first)?;
        let lc = LifecycleColumns::new(&first)?;
        self.committer
            .write(move |conn| {
                Box::pin(async move {
                    if lifecycle::place_run(conn, &run).await? != Placed::New {
                        // Nothing was written.
                        return Ok(false);
                    }
                    apply_activation(conn, &first, &c, &lc).await?;
                    Ok(true)
                })
            })
            .await
    }

    async fn finish_and_commit(
        &self,
        finished: FinishedAttempt,
        next: ActivationCommit,
    ) -> StoreResult<bool> {
        let c = CommitColumns::new(&next)?;
        let lc = LifecycleColumns::new(&next)?;
        self.committer
            .write(move |conn| {
                Box::pin(async move {
                    let run_id = &finished.run_id;
                    let end = rows::AttemptEnd::reported(&finished)?;
                    let state: Option<rows::WarmRunState> = sqlx::query_as(rows::WARM_RUN_STATE)
                        .bind(run_id.as_str())
                        .bind(i64::from(finished.seq))
                        .fetch_optional(&mut *conn)
                        .await?;
                    if !end_attempt(conn, &end).await? {
                        let now = task_state(conn, run_id, finished.seq).await?;
                        return Err(rows::task_conflict(
                            run_id,
                            finished.seq,
                            now,
                            finished.lease_token,
                        ));
                    }
                    let fits = state.is_some_and(|s| s.fits(&finished, &next, &c));
                    if fits {
                        apply_activation(conn, &next, &c, &lc).await?;
                    }
                    Ok(fits)
                })
            })
            .await
    }

    async fn release_run(&self, run_id: &RunId, lease_token: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(RELEASE_SQL)
            .bind(run_id.as_str())
            .bind(lease_token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated != 1 {
            let now = run_state(&mut tx, run_id).await?;
            return Err(rows::run_conflict(run_id, now, lease_token, None));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn park_run(&self, run_id: &RunId, lease_token: i64, reason: Value) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE runs SET status = 'stuck', stuck = $3, lease_owner = NULL, lease_expires_at_ms = 0
              WHERE run_id = $1 AND lease_token = $2 AND status = 'running'",
        )
        .bind(run_id.as_str())
        .bind(lease_token)
        .bind(reason.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            let now = run_state(&mut tx, run_id).await?;
            return Err(rows::run_conflict(run_id, now, lease_token, None));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn next_timer_at(&self) -> StoreResult<Option<u64>> {
        // The aggregate MIN skips whichever of the two is missing.
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(at) FROM (
                 SELECT (SELECT t.fire_at_ms FROM timers t JOIN runs r ON r.run_id = t.run_id
                          WHERE r.status = 'running' ORDER BY t.fire_at_ms LIMIT 1) AS at
                 UNION ALL
                 SELECT (SELECT deadline_ms FROM runs
                          WHERE status = 'running' AND deadline_ms IS NOT NULL
                          ORDER BY deadline_ms LIMIT 1))",
        )
        .fetch_one(&self.reader)
        .await?;
        at.map(|v| uint(v, "a timer's fire_at_ms or a run's deadline"))
            .transpose()
    }

    async fn pending_work(&self, now_ms: u64) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(rows::PENDING_WORK)
            .bind(int(now_ms))
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn reclaim_leases(&self, host_id: &str) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let runs = sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at_ms = 0, lease_token = lease_token + 1
              WHERE lease_owner = $1",
        )
        .bind(host_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let tasks = sqlx::query(RECLAIM_TASKS_SQL)
            .bind(host_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(runs + tasks)
    }
}

/// Releases a run's lease. If nothing is waiting for the run (no unconsumed
/// activity result, signal, child result, update or cancel request) and it has been activated before, the wake-ups
/// its claim observed are marked handled too: otherwise a wake-up whose job an
/// earlier activation already took (a signal that arrived between claim and
/// read) would make the run claimable forever with nothing to do.
const RELEASE_SQL: &str = "
    UPDATE runs
       SET lease_owner = NULL, lease_expires_at_ms = 0,
           handled_wakeups = CASE
               WHEN last_seq > 1
                AND NOT EXISTS (SELECT 1 FROM activity_tasks a
                                 WHERE a.run_id = runs.run_id AND a.status IN ('completed', 'failed')
                                   AND a.consumed = 0)
                AND NOT EXISTS (SELECT 1 FROM signals s WHERE s.run_id = runs.run_id AND s.consumed = 0)
                AND NOT EXISTS (SELECT 1 FROM children c
                                 WHERE c.parent_run_id = runs.run_id AND c.resolved = 1 AND c.consumed = 0)
                AND NOT EXISTS (SELECT 1 FROM updates u WHERE u.run_id = runs.run_id AND u.consumed = 0)
                AND NOT (cancel_reason IS NOT NULL AND cancel_delivered = 0)
               THEN MAX(handled_wakeups, lease_wakeups)
               ELSE handled_wakeups END
     WHERE run_id = $1 AND lease_token = $2";

/// Frees the activity attempts a host held: they are claimable again at once, fenced.
const RECLAIM_TASKS_SQL: &str = "
    UPDATE activity_tasks
       SET status = 'scheduled', visible_at_ms = 0, lease_owner = NULL, lease_expires_at_ms = NULL,
           lease_token = lease_token + 1, heartbeat_deadline_ms = NULL
     WHERE lease_owner = $1 AND status = 'running'";

#[async_trait]
impl ActivityStore for SqliteStore {
    async fn claim_activities(
        &self,
        host_id: &str,
        names: &[String],
        now_ms: u64,
        default_lease_ms: u64,
        limit: u32,
    ) -> StoreResult<Vec<ActivityTask>> {
        if names.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<ClaimedTaskRow> = sqlx::query_as(
            "UPDATE activity_tasks
                SET status = 'running', attempt = attempt + 1, lease_token = lease_token + 1, lease_owner = $1,
                    lease_expires_at_ms = $2 + CASE WHEN lease_ms > 0 THEN lease_ms ELSE $3 END,
                    visible_at_ms = $2 + CASE WHEN lease_ms > 0 THEN lease_ms ELSE $3 END,
                    start_deadline_ms = NULL,
                    heartbeat_deadline_ms = CASE WHEN heartbeat_timeout_ms > 0 THEN $2 + heartbeat_timeout_ms END
              WHERE (run_id, seq) IN (
                    SELECT run_id, seq FROM activity_tasks
                     WHERE status IN ('scheduled', 'running') AND visible_at_ms <= $2
                       AND name IN (SELECT value FROM json_each($4))
                       AND (close_deadline_ms IS NULL OR close_deadline_ms > $2)
                       AND (start_deadline_ms IS NULL OR start_deadline_ms > $2)
                     ORDER BY visible_at_ms
                     LIMIT $5)
             RETURNING run_id, seq, name, input, options, attempt, lease_token, heartbeat_details,
                       close_deadline_ms",
        )
        .bind(host_id)
        .bind(int(now_ms))
        .bind(int(default_lease_ms))
        .bind(json_list(names)?)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        let (tasks, unreadable) = rows::decode_claimed(rows);
        for bad in unreadable {
            tracing::error!(run_id = %bad.run_id, seq = bad.seq, "a claimed activity task cannot be read back; its run is parked and the rest of the claim goes on: {}", bad.error);
            let parked = sqlx::query(rows::PARK_FOR_UNREADABLE_TASK)
                .bind(bad.run_id.as_str())
                .bind(bad.reason())
                .execute(&self.writer)
                .await;
            if let Err(e) = parked {
                tracing::warn!(run_id = %bad.run_id, "parking the run of an unreadable task failed (the next claim of the task tries again): {e}");
            }
        }
        Ok(tasks)
    }

    async fn finish_attempt(
        &self,
        run_id: &RunId,
        seq: u32,
        lease_token: i64,
        outcome: AttemptOutcome,
        now_ms: u64,
    ) -> StoreResult<()> {
        let columns = rows::AttemptColumns::new(run_id, seq, &outcome, now_ms)?;
        let run_id = run_id.clone();
        self.committer
            .write(move |conn| {
                Box::pin(async move {
                    let end = rows::AttemptEnd {
                        run_id: &run_id,
                        seq,
                        lease_token,
                        status: "running",
                        expired_at: None,
                        columns,
                        now_ms,
                    };
                    if !end_attempt(conn, &end).await? {
                        let now = task_state(conn, &run_id, seq).await?;
                        return Err(rows::task_conflict(&run_id, seq, now, lease_token));
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn next_activity_at(&self, names: &[String]) -> StoreResult<Option<u64>> {
        if names.is_empty() {
            return Ok(None);
        }
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(visible_at_ms) FROM activity_tasks
              WHERE status IN ('scheduled', 'running') AND name IN (SELECT value FROM json_each($1))",
        )
        .bind(json_list(names)?)
        .fetch_one(&self.reader)
        .await?;
        at.map(|v| uint(v, "an activity task's visible_at_ms"))
            .transpose()
    }

    async fn claim_activity(&self, claim: ClaimActivity) -> StoreResult<Option<ActivityTask>> {
        let row: Option<ClaimedTaskRow> = sqlx::query_as(
            "UPDATE activity_tasks
                SET status = 'running', attempt = attempt + 1, lease_token = lease_token + 1, lease_owner = $3,
                    lease_expires_at_ms = $4 + CASE WHEN lease_ms > 0 THEN lease_ms ELSE $5 END,
                    visible_at_ms = $4 + CASE WHEN lease_ms > 0 THEN lease_ms ELSE $5 END,
                    start_deadline_ms = NULL,
                    heartbeat_deadline_ms = CASE WHEN heartbeat_timeout_ms > 0 THEN $4 + heartbeat_timeout_ms END
              WHERE run_id = $1 AND seq = $2 AND status = 'scheduled'
                AND (attempt = 0 OR visible_at_ms <= $4)
                AND (close_deadline_ms IS NULL OR close_deadline_ms > $4)
                AND (start_deadline_ms IS NULL OR start_deadline_ms > $4)
             RETURNING run_id, seq, name, input, options, attempt, lease_token, heartbeat_details,
                       close_deadline_ms",
        )
        .bind(claim.run_id.as_str())
        .bind(i64::from(claim.seq))
        .bind(&claim.host_id)
        .bind(int(claim.now_ms))
        .bind(int(claim.default_lease_ms))
        .fetch_optional(&self.writer)
        .await?;
        row.map(ClaimedTaskRow::into_task).transpose()
    }

    async fn heartbeat(&self, heartbeat: Heartbeat) -> StoreResult<()> {
        let details = heartbeat
            .details
            .as_ref()
            .map(|d| {
                rows::to_json(
                    d,
                    format_args!(
                        "run {}: activity {} heartbeat details",
                        heartbeat.run_id, heartbeat.seq
                    ),
                )
            })
            .transpose()?;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE activity_tasks
                SET heartbeat_at_ms = $4, heartbeat_details = COALESCE($5, heartbeat_details),
                    heartbeat_deadline_ms = CASE WHEN heartbeat_timeout_ms > 0 THEN $4 + heartbeat_timeout_ms END
              WHERE run_id = $1 AND seq = $2 AND lease_token = $3 AND status = 'running'",
        )
        .bind(heartbeat.run_id.as_str())
        .bind(i64::from(heartbeat.seq))
        .bind(heartbeat.lease_token)
        .bind(int(heartbeat.now_ms))
        .bind(details)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            let now = task_state(&mut tx, &heartbeat.run_id, heartbeat.seq).await?;
            return Err(rows::task_conflict(
                &heartbeat.run_id,
                heartbeat.seq,
                now,
                heartbeat.lease_token,
            ));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn time_out_activities(&self, now_ms: u64) -> StoreResult<u64> {
        // Read beside the writer: most sweeps find nothing and write nothing.
        let expired: Vec<expiry::ExpiredTaskRow> = sqlx::query_as(expiry::EXPIRED_TASKS_SQL)
            .bind(int(now_ms))
            .bind(int(TIMEOUT_BATCH))
            .fetch_all(&self.reader)
            .await?;
        let expiries = expiry::expiries(expired, now_ms)?;
        if expiries.is_empty() {
            return Ok(0);
        }
        // Each end is fenced: a finish or heartbeat that got in between wins.
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
        for expiry in expiries {
            let end = rows::AttemptEnd::expired(&expiry, now_ms)?;
            if end_attempt(&mut tx, &end).await? {
                changed += 1;
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn next_activity_timeout_at(&self) -> StoreResult<Option<u64>> {
        let at: Option<i64> = sqlx::query_scalar(expiry::NEXT_TIMEOUT_SQL)
            .fetch_one(&self.reader)
            .await?;
        at.map(|v| uint(v, "an activity task's deadline"))
            .transpose()
    }

    async fn current_attempt(
        &self,
        run_id: &RunId,
        seq: u32,
        lease_token: i64,
    ) -> StoreResult<Option<ActivityTask>> {
        let row: Option<ClaimedTaskRow> = sqlx::query_as(rows::CURRENT_ATTEMPT_SQL)
            .bind(run_id.as_str())
            .bind(i64::from(seq))
            .bind(lease_token)
            .fetch_optional(&self.reader)
            .await?;
        row.map(ClaimedTaskRow::into_task).transpose()
    }
}

/// What an activity task's row says now, read inside the failed write's transaction.
async fn task_state(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    seq: u32,
) -> StoreResult<Option<TaskStateRow>> {
    Ok(sqlx::query_as(rows::TASK_STATE_SQL)
        .bind(run_id.as_str())
        .bind(i64::from(seq))
        .fetch_optional(conn)
        .await?)
}

#[async_trait]
impl SignalStore for SqliteStore {
    async fn send_signal(
        &self,
        run_id: &RunId,
        name: &str,
        input: Value,
        now_ms: u64,
        max_pending: u64,
    ) -> StoreResult<i64> {
        let mut tx = self.begin_write().await?;
        let woken = sqlx::query(
            "UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $2 ELSE woken_at_ms END,
                             wakeups = wakeups + 1
              WHERE run_id = $1 AND status IN ('running', 'stuck')
                AND (SELECT count(*) FROM signals WHERE run_id = $1 AND NOT consumed) < $3",
        )
        .bind(run_id.as_str())
        .bind(int(now_ms))
        .bind(int(max_pending))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if woken != 1 {
            let open: Option<bool> = sqlx::query_scalar(
                "SELECT status IN ('running', 'stuck') FROM runs WHERE run_id = $1",
            )
            .bind(run_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if open == Some(true) {
                return Err(rows::signals_full(run_id, max_pending));
            }
            return Err(StoreError::NotFound {
                what: format!(
                    "open run {run_id} (it is closed or unknown; signals go to open runs)"
                ),
            });
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO signals (run_id, name, input, received_at_ms) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(run_id.as_str())
        .bind(name)
        .bind(input.to_string())
        .bind(int(now_ms))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn send_update(
        &self,
        run_id: &RunId,
        update_id: &str,
        name: &str,
        input: Value,
        now_ms: u64,
        max_in_flight: u64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        lifecycle::send_update(
            &mut tx,
            run_id,
            update_id,
            name,
            &input,
            int(now_ms),
            int(max_in_flight),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_outcome(
        &self,
        run_id: &RunId,
        update_id: &str,
    ) -> StoreResult<Option<Result<Value, Failure>>> {
        lifecycle::update_outcome(&self.reader, run_id, update_id).await
    }

    async fn request_cancel(&self, run_id: &RunId, reason: &str, now_ms: u64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        lifecycle::request_cancel(&mut tx, run_id, reason, int(now_ms)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn request_termination(
        &self,
        run_id: &RunId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        lifecycle::request_termination(&mut tx, run_id, reason, int(now_ms)).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl ModuleStore for SqliteStore {
    async fn put_module(
        &self,
        name: &str,
        version: &str,
        bytes: &[u8],
        now_ms: u64,
    ) -> StoreResult<ModuleRecord> {
        let sha256 = Sha256Hex::of(bytes);
        let mut tx = self.begin_write().await?;
        let taken: Option<String> = sqlx::query_scalar(rows::VERSION_TAKEN)
            .bind(name)
            .bind(version)
            .bind(sha256.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(existing) = taken {
            return Err(rows::version_taken(name, version, existing));
        }
        sqlx::query(
            "INSERT INTO modules (sha256, name, version, bytes, size, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256.as_str())
        .bind(name)
        .bind(version)
        .bind(bytes)
        .bind(int(bytes.len() as u64))
        .bind(int(now_ms))
        .execute(&mut *tx)
        .await?;
        let row: ModuleRow = sqlx::query_as(
            "SELECT sha256, name, version, size, created_at_ms FROM modules WHERE sha256 = $1",
        )
        .bind(sha256.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row.into_record()
    }

    async fn module_bytes(&self, sha256: &Sha256Hex) -> StoreResult<Vec<u8>> {
        let bytes: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT bytes FROM modules WHERE sha256 = $1")
                .bind(sha256.as_str())
                .fetch_optional(&self.reader)
                .await?;
        bytes.ok_or_else(|| StoreError::NotFound {
            what: format!("module {sha256} (deploy it first)"),
        })
    }

    async fn modules(&self) -> StoreResult<Vec<ModuleRecord>> {
        let rows: Vec<ModuleRow> = sqlx::query_as(
            "SELECT sha256, name, version, size, created_at_ms FROM modules ORDER BY created_at_ms, name, version",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(ModuleRow::into_record).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::SqliteStore;
    use crate::store::ModuleStore;
    use std::time::{Duration, Instant};

    /// The database file grows only when the WAL is folded back into it. The
    /// write here is far below the writer's own backstop, so only the
    /// checkpoint task can do that.
    #[tokio::test]
    async fn the_wal_is_checkpointed_beside_the_writer() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("weft.db");
        let store = SqliteStore::open(path.to_str().expect("a UTF-8 path"))
            .await
            .expect("open");
        let size = || std::fs::metadata(&path).expect("the database file").len();
        let before = size();
        let bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        store
            .put_module("big", "1", &bytes, 1)
            .await
            .expect("put_module");
        let deadline = Instant::now() + Duration::from_secs(20);
        while size() < before + 1_000_000 {
            assert!(
                Instant::now() < deadline,
                "the database file did not take the module's pages within 20 s ({} → {} bytes)",
                before,
                size()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.close().await;
    }
}
