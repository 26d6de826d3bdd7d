//! The Postgres backend: many hosts share one database.
//!
//! [`PostgresStore`] makes almost every operation one statement, and so one
//! round trip and its own transaction: an activation commit is a single
//! statement whose data-modifying `WITH` clauses all hang on the conditional
//! update of the run's row (`lease_token` and `last_seq` must still hold), so
//! either all of it applies or nothing does. The exception is a commit with
//! lifecycle work (children, updates, a cancel delivered, the run closing) or
//! cancelled activities: that statement and a few more run in one
//! transaction. The activity timeout sweep reads the expired tasks, then ends
//! each with a statement of its own, fenced like a finished attempt. Lists
//! travel as arrays (`UNNEST`, `= ANY`), so each statement has one text and
//! one prepared plan whatever the batch size.
//!
//! The hot writes — a start with its first activation, an activity's result
//! with the activation it lets a warm run commit, and an activation of a
//! claimed run (a close included when it owes no other run anything) — are
//! written for many runs at once: concurrent calls queue for two lanes per
//! kind, and each lane writes what waits as one statement of arrays
//! (`batch`; `started`, `finished`, `appended`; their shared rows in
//! `many`). A call is answered once that statement committed.
//!
//! Work is claimed with `FOR UPDATE SKIP LOCKED`: hosts claiming at the same
//! time take different runs and tasks instead of queueing on each other's
//! locks. Statements that lock a run and its activity tasks lock the run first,
//! and a commit that reaches other runs (its parent, its children) locks them
//! all in `run_id` order before anything else, so they cannot deadlock with
//! one another.
//!
//! Idle hosts are woken by `LISTEN/NOTIFY`: after each write that made a run
//! runnable, started a timer or made an activity task claimable (never on a
//! claim), the store announces it from a connection of its own, folding the
//! announcements of many commits into one `pg_notify` (a NOTIFY inside the
//! commit would keep commits from sharing a WAL flush: migration 0007); the
//! triggers of migration 0004 still notify for sessions that do not say they
//! announce their own. The change feed ([`RunStore::changes`], in `notify`)
//! listens on a connection of its own and reconnects by itself.
//! The pool does not ping a connection before handing it out (that was a
//! round trip before every statement); sqlx pings it when it comes back, off
//! the caller's path, and drops it if that fails. So after the database went
//! away, the call that meets a dead connection fails as retryable
//! ([`StoreError::Unavailable`]), the connection is dropped, and the retry
//! connects afresh; a call that gets no connection within [`ACQUIRE_TIMEOUT`]
//! fails the same way.

use super::expiry;
use super::rows::{
    self, AttemptColumns, ClaimedTaskRow, CommitColumns, EventRow, LifecycleColumns, ModuleRow,
    NewRunColumns, PendingRow, Placed, RunRow, RunStateRow, TaskStateRow, int, select_run, uint,
};
use super::{
    ActivationCommit, ActivityStore, ActivityTask, AttemptOutcome, Changes, ClaimActivity,
    CreateRun, Created, FinishedAttempt, Heartbeat, HistoryStore, IdConflictPolicy, ListFilter,
    ModuleRecord, ModuleStore, PendingJobs, RunClaim, RunPage, RunRecord, RunStore, SignalStore,
    StoreError, StoreResult, TIMEOUT_BATCH, WaitingOn,
};
use crate::model::{Failure, History, RecordedEvent, RunId, Sha256Hex};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::collections::HashMap;

mod appended;
mod batch;
mod finished;
mod lifecycle;
mod many;
mod notify;
mod started;
mod versions;

use notify::{Kinds, Notifier};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections per store: Postgres commits best from a handful of connections at once.
const POOL_SIZE: u32 = 8;

/// Connections for the statements that write many runs (one per lane) and
/// for the claim of runs (one per host's activation loop, and one spare).
const BATCH_POOL_SIZE: u32 = 3 * batch::LANES as u32 + 2;

/// Candidates read per run to claim, so that concurrent claims find runs past each other's.
const CLAIM_OVERFETCH: i64 = 4;

/// How long a call waits for a pooled connection before it fails as
/// [`StoreError::Unavailable`]: a request made while the database is away
/// fails fast and says so, instead of hanging.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// How often `create_run` retries when the open run that blocked it closes before it could be named.
const CREATE_ATTEMPTS: usize = 3;

/// A store in a Postgres database, shared by any number of hosts.
///
/// Almost every operation is one statement (one round trip, one transaction);
/// work is claimed with `FOR UPDATE SKIP LOCKED` and fenced by lease tokens.
/// The pool holds up to eight connections and reconnects by itself after the
/// database went away (the call that meets a dead connection fails as
/// retryable, and the connection is dropped); a call that finds
/// no connection within a few seconds fails with [`StoreError::Unavailable`].
/// Idle hosts are woken by [`changes`](RunStore::changes), a `LISTEN` on a
/// connection of its own.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// How the change feed connects: the pool's options, and the schema whose
    /// notifications it keeps.
    connect: PgConnectOptions,
    schema: String,
    /// Announces the work this store's writes made ready to other hosts.
    notifier: Notifier,
    /// This store's own listening sessions, which its notifier need not wake.
    own_listeners: notify::OwnListeners,
    /// New runs with their first activation, placed many to a statement.
    starts: batch::Lanes<started::Start, bool>,
    /// Results with the activation they let commit, many to a statement.
    finishes: batch::Lanes<finished::Finish, finished::Finished>,
    /// Activations of claimed runs, many to a statement.
    appends: batch::Lanes<appended::Append, appended::Appended>,
    /// The sessions of the statements of many runs (see `batch::Pools`).
    batch_pool: PgPool,
}

/// How [`PostgresStore::connect_with`] connects, beyond the URL.
#[derive(Clone, Debug, Default)]
pub struct PostgresOptions {
    /// Every table in this schema, created if missing: each pooled connection
    /// gets it as its `search_path`. Lets several stores (tests running in
    /// parallel, say) share one database. A plain identifier: ASCII letters,
    /// digits and `_`, not starting with a digit.
    pub schema: Option<String>,
    /// The `application_name` of every connection, as `pg_stat_activity`
    /// shows it (say `weft-<host id>`), so that an operator can find a host's
    /// connections. Default: the URL's `application_name`, else `weft`.
    pub application_name: Option<String>,
}

impl PostgresStore {
    /// Commits an activation the ordinary way, by itself: an `append` of
    /// one round trip when that is all it writes, else the append and the
    /// rest (children, updates, closing, cancelled activities) in one
    /// transaction, under the locks of the runs it reaches.
    async fn commit_alone(
        &self,
        commit: ActivationCommit,
        c: CommitColumns,
        lc: LifecycleColumns,
    ) -> StoreResult<()> {
        if lc.is_empty() && commit.cancelled_activities.is_empty() {
            let mut conn = self.pool.acquire().await?;
            append(&mut conn, &commit, &c).await?;
        } else {
            let mut tx = lifecycle::begin(&self.pool, &commit.run_id, &lc).await?;
            apply_activation(&mut tx, &commit, &c, &lc).await?;
            tx.commit().await?;
        }
        self.notifier.notify(commit_kinds(&commit));
        Ok(())
    }

    /// A transaction for a write of several statements.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
    /// Connects to `url` (`postgres://user@host:port/db`) and brings the schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Like [`PostgresStore::connect`], with every table in `schema` (see
    /// [`PostgresOptions::schema`]).
    pub async fn connect_in_schema(url: &str, schema: &str) -> StoreResult<Self> {
        let options = PostgresOptions {
            schema: Some(schema.to_owned()),
            ..PostgresOptions::default()
        };
        Self::connect_with(url, options).await
    }

    /// Like [`PostgresStore::connect`], with [`PostgresOptions`].
    pub async fn connect_with(url: &str, options: PostgresOptions) -> StoreResult<Self> {
        let schema = options.schema.as_deref();
        if let Some(schema) = schema {
            let plain = schema.len() <= 63
                && schema
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain {
                return Err(StoreError::Unavailable(format!(
                    "schema name {schema:?} is not a plain identifier; use ASCII letters, digits and _ (at most 63)"
                )));
            }
        }
        let where_ = || match schema {
            Some(schema) => format!(
                "the Postgres database {} (schema {schema})",
                redact_url(url)
            ),
            None => format!("the Postgres database {}", redact_url(url)),
        };
        let mut connect: PgConnectOptions = url.parse().map_err(|e| {
            StoreError::Unavailable(format!(
                "{} is not a valid Postgres URL: {e}",
                redact_url(url)
            ))
        })?;
        if let Some(schema) = schema {
            connect = connect.options([("search_path", schema)]);
        }
        match (&options.application_name, connect.get_application_name()) {
            (Some(name), _) => connect = connect.application_name(name),
            (None, None) => connect = connect.application_name("weft"),
            (None, Some(_)) => {}
        }
        // This host announces its work itself (see `notify`): its sessions
        // tell the notification triggers to stay quiet. Every statement is
        // planned once per connection: left to choose, Postgres plans the
        // large activation statements again on every call (their parameters
        // fold clauses away, so a custom plan always looks cheaper), and
        // that planning was a large share of each call.
        let statements = connect.clone().options([
            ("weft.notify", "host"),
            ("plan_cache_mode", "force_generic_plan"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(statements)
            .await
            .map_err(|e| {
                let why = e.to_string();
                if why.contains("certificate") {
                    return StoreError::Refused(format!(
                        "cannot connect to {} over TLS: {why}; name the CA that signed the server's certificate with sslrootcert=FILE in the URL, connect by the host name the certificate names, or use sslmode=require to encrypt without verifying the server",
                        where_()
                    ));
                }
                StoreError::Unavailable(format!("cannot connect to {}: {why}; check that it is up", where_()))
            })?;
        // The statements of many runs are planned once per session too, with
        // only index lookups and nested loops to choose from (see
        // `batch::Pools`); at most one per lane is in flight.
        let many = PgPoolOptions::new()
            .max_connections(BATCH_POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy_with(connect.clone().options([
                ("weft.notify", "host"),
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
                ("enable_hashjoin", "off"),
                ("enable_mergejoin", "off"),
            ]));
        if let Some(schema) = schema {
            // The name was checked to be a plain identifier.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&pool)
            .await?;
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| rows::migrate_error(&where_(), e))?;
        // Where the tables are, as the notification triggers name it.
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        let own_listeners = notify::OwnListeners::default();
        let notifier = Notifier::spawn(connect.clone(), schema.clone(), own_listeners.clone());
        let pools = batch::Pools {
            one: pool.clone(),
            many: many.clone(),
        };
        Ok(Self {
            batch_pool: many,
            starts: started::lanes(pools.clone()),
            finishes: finished::lanes(pools.clone()),
            appends: appended::lanes(pools),
            pool,
            connect,
            schema,
            notifier,
            own_listeners,
        })
    }

    /// Waits for running statements and closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
        self.batch_pool.close().await;
    }

    async fn run_state(&self, run_id: &RunId) -> StoreResult<Option<RunStateRow>> {
        Ok(
            sqlx::query_as("SELECT status, lease_token, last_seq FROM runs WHERE run_id = $1")
                .bind(run_id.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

/// The URL without its password, for messages.
/// A database URL fit for logs: the password, if any, replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[async_trait]
impl HistoryStore for PostgresStore {
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
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| r.into_recorded(run_id)).collect()
    }
}

#[async_trait]
impl RunStore for PostgresStore {
    async fn create_run(&self, request: CreateRun) -> StoreResult<Created> {
        let run = NewRunColumns::new(&request)?;
        let mut conn = self.pool.acquire().await?;
        for _ in 0..CREATE_ATTEMPTS {
            match lifecycle::place_run(&mut conn, &run).await? {
                Placed::New => {
                    self.notifier.notify(Kinds::RUN);
                    return Ok(Created::New);
                }
                Placed::Open(open)
                    if request.options.id_conflict_policy == IdConflictPolicy::UseExisting =>
                {
                    let (Some(name), Some(input)) = (&run.signal_name, &run.signal_input) else {
                        return Ok(Created::Existing(open));
                    };
                    if lifecycle::queue_signal(&mut conn, &open, name, input, run.now_ms).await? {
                        self.notifier.notify(Kinds::RUN);
                        return Ok(Created::Existing(open));
                    }
                    // That run closed in between: start a new one after all.
                }
                refused => {
                    return Err(refused
                        .refusal(&run)
                        .expect("a placement other than New is a refusal"));
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "workflow id {:?} keeps changing hands while run {} starts; try again",
            request.workflow_id, request.run_id
        )))
    }

    async fn list_runs(&self, filter: &ListFilter) -> StoreResult<RunPage> {
        lifecycle::list_runs(&self.pool, filter).await
    }

    async fn run(&self, run_id: &RunId) -> StoreResult<RunRecord> {
        let row: Option<RunRow> = sqlx::query_as(select_run!("WHERE run_id = $1"))
            .bind(run_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or_else(|| StoreError::NotFound {
            what: format!("run {run_id}"),
        })?
        .into_record()
    }

    async fn stopped_runs(&self, run_ids: &[RunId]) -> StoreResult<Vec<RunId>> {
        let keys: Vec<&str> = run_ids.iter().map(RunId::as_str).collect();
        let stopped: Vec<String> = sqlx::query_scalar(
            "SELECT run_id FROM runs WHERE run_id = ANY ($1) AND status <> 'running'",
        )
        .bind(&keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(stopped.into_iter().map(RunId).collect())
    }

    async fn run_by_workflow_id(&self, workflow_id: &str) -> StoreResult<RunRecord> {
        let row: Option<RunRow> = sqlx::query_as(select_run!(
            "WHERE workflow_id = $1
             ORDER BY status IN ('running', 'stuck') DESC, created_at_ms DESC, run_id DESC
             LIMIT 1"
        ))
        .bind(workflow_id)
        .fetch_optional(&self.pool)
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
        // Candidates come from three short index ranges, each read in order and
        // cut off early whatever the backlog: woken runs whose lease is free or
        // expired (longest woken first), runs with a due timer (earliest
        // first) and runs past their deadline (earliest first). Taking from
        // each keeps any from starving the others. A run
        // whose lease is live — even this host's own, mid-activation — is never
        // a candidate. `c` re-checks each candidate under its
        // row lock and skips rows another claim is locking, so two hosts never
        // take the same run; fetching a few more candidates than `limit` lets a
        // host step past the rows a concurrent claim just took.
        //
        // Each statement is planned once per connection, often while the
        // tables are new and their statistics say `running` runs are few:
        // written as joins, its plan then drove the timer candidates and the
        // re-check from every open run (~12 ms a claim at 1,000 sleeping
        // runs). So a due timer's run is looked up by key in a scalar
        // subquery, and each candidate is locked by key in a `LATERAL`
        // subquery: neither can be turned into a scan of `runs`. The claimed
        // rows are updated by key on a session that may not plan otherwise
        // (see `batch::Pools`).
        let rows: Vec<rows::ClaimRow> = sqlx::query_as(
            "WITH candidates AS (
                 (SELECT run_id FROM runs
                   WHERE status = 'running' AND woken AND lease_expires_at_ms <= $2
                   ORDER BY woken_at_ms
                   LIMIT $5)
                 UNION
                 (SELECT t.run_id FROM timers t
                   WHERE t.fire_at_ms <= $2
                     AND (SELECT r.status = 'running' AND r.lease_expires_at_ms <= $2
                            FROM runs r WHERE r.run_id = t.run_id)
                   ORDER BY t.fire_at_ms
                   LIMIT $5)
                 UNION
                 (SELECT run_id FROM runs
                   WHERE status = 'running' AND deadline_ms IS NOT NULL AND deadline_ms <= $2
                     AND lease_expires_at_ms <= $2
                   ORDER BY deadline_ms
                   LIMIT $5)
             ), c AS (
                 SELECT r.run_id FROM candidates k, LATERAL (
                     SELECT run_id,
                            CASE WHEN wakeups > handled_wakeups THEN woken_at_ms
                                 WHEN deadline_ms <= $2 THEN deadline_ms
                                 ELSE (SELECT min(t.fire_at_ms) FROM timers t WHERE t.run_id = runs.run_id)
                            END AS due
                       FROM runs
                      WHERE runs.run_id = k.run_id
                        AND status = 'running'
                        AND lease_expires_at_ms <= $2
                        AND (wakeups > handled_wakeups
                             OR deadline_ms <= $2
                             OR EXISTS (SELECT 1 FROM timers t WHERE t.run_id = runs.run_id AND t.fire_at_ms <= $2))
                        FOR UPDATE SKIP LOCKED
                 ) r
                  ORDER BY r.due
                  LIMIT $4
             )
             UPDATE runs
                SET lease_owner = $1, lease_expires_at_ms = $2::bigint + $3::bigint,
                    lease_token = runs.lease_token + 1, lease_wakeups = runs.wakeups
               FROM c
              WHERE runs.run_id = c.run_id
             RETURNING runs.run_id, runs.lease_token, runs.wakeups, runs.last_seq",
        )
        .bind(host_id)
        .bind(int(now_ms))
        .bind(int(lease_ms))
        .bind(i64::from(limit))
        .bind(i64::from(limit).saturating_mul(CLAIM_OVERFETCH))
        .fetch_all(&self.batch_pool)
        .await?;
        rows::run_claims(rows)
    }

    async fn waiting_on(&self, run_id: &RunId) -> StoreResult<WaitingOn> {
        let rows: Vec<rows::WaitingRow> = sqlx::query_as(rows::WAITING_ON_SQL)
            .bind(run_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows::waiting_on(run_id, rows)
    }

    async fn pending_jobs(&self, run_id: &RunId, now_ms: u64) -> StoreResult<PendingJobs> {
        let rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT 'a' AS source, seq AS n, attempt, status, output AS body, failure AS extra, resolved_at_ms AS at_ms
               FROM activity_tasks
              WHERE run_id = $1 AND status IN ('completed', 'failed') AND NOT consumed
             UNION ALL
             SELECT 's', id, NULL::bigint, NULL::text, input, name, received_at_ms
               FROM signals WHERE run_id = $1 AND NOT consumed
             UNION ALL
             SELECT 't', seq, NULL::bigint, NULL::text, NULL::text, NULL::text, fire_at_ms
               FROM timers WHERE run_id = $1 AND fire_at_ms <= $2
             UNION ALL
             SELECT 'c', seq, NULL::bigint, NULL::text, output, failure, COALESCE(resolved_at_ms, 0)
               FROM children WHERE parent_run_id = $1 AND resolved AND NOT consumed
             UNION ALL
             SELECT 'u', id, NULL::bigint, update_id, input, name, received_at_ms
               FROM updates WHERE run_id = $1 AND NOT consumed
             UNION ALL
             SELECT 'x', 0, NULL::bigint, NULL::text, NULL::text, cancel_reason, COALESCE(cancel_requested_at_ms, 0)
               FROM runs WHERE run_id = $1 AND cancel_reason IS NOT NULL AND NOT cancel_delivered",
        )
        .bind(run_id.as_str())
        .bind(int(now_ms))
        .fetch_all(&self.pool)
        .await?;
        rows::pending_jobs(run_id, rows)
    }

    async fn commit_activation(&self, commit: ActivationCommit) -> StoreResult<()> {
        let c = CommitColumns::new(&commit)?;
        let lc = LifecycleColumns::new(&commit)?;
        // Most activations write only what `append` writes, and most closes
        // owe no other run anything: one statement, shared with other runs'.
        // What that statement leaves (see `appended`) goes the ordinary way.
        if (lc.is_empty() || lc.only_closes()) && commit.cancelled_activities.is_empty() {
            let kinds = commit_kinds(&commit);
            let appended::Appended { applied, append } =
                self.appends.write(appended::Append { commit, c }).await?;
            if applied {
                self.notifier.notify(kinds);
                return Ok(());
            }
            return self.commit_alone(append.commit, append.c, lc).await;
        }
        self.commit_alone(commit, c, lc).await
    }

    async fn start_run(&self, create: CreateRun, first: ActivationCommit) -> StoreResult<bool> {
        let run = NewRunColumns::new(&create)?;
        let c = CommitColumns::new(&first)?;
        let lc = LifecycleColumns::new(&first)?;
        // The usual first activation schedules activities and timers and
        // nothing else: the run and all it writes go in one statement, with
        // the other runs started meanwhile (see `batch`).
        let rows_only = lc.is_empty()
            && first.cancelled_activities.is_empty()
            && c.consumed_signals.is_empty()
            && !c.closing
            && run.signal_name.is_none()
            && first.lease_token == 0
            && c.expected_last_seq == 1;
        if rows_only {
            let kinds = commit_kinds(&first);
            if !self.starts.write(started::Start { run, first, c }).await? {
                return Ok(false);
            }
            self.notifier.notify(kinds);
            return Ok(true);
        }
        let mut tx = self.begin_write().await?;
        if lifecycle::place_run(&mut tx, &run).await? != Placed::New {
            // Dropping the transaction rolls it back: nothing was written.
            return Ok(false);
        }
        apply_activation(&mut tx, &first, &c, &lc).await?;
        tx.commit().await?;
        self.notifier.notify(commit_kinds(&first));
        Ok(true)
    }

    async fn finish_and_commit(
        &self,
        finished: FinishedAttempt,
        next: ActivationCommit,
    ) -> StoreResult<bool> {
        let run_id = &finished.run_id;
        let columns = rows::AttemptColumns::reported(&finished)?;
        let c = CommitColumns::new(&next)?;
        let lc = LifecycleColumns::new(&next)?;
        if (lc.is_empty() || lc.only_closes()) && next.cancelled_activities.is_empty() {
            // The usual step (a result, then activities or timers scheduled,
            // or the run closed): one statement, shared with other runs'.
            let (seq, lease_token) = (finished.seq, finished.lease_token);
            let finish = finished::Finish {
                finished,
                columns,
                next,
                c,
            };
            let finished::Finished { ended, next, c } = self.finishes.write(finish).await?;
            let run_id = &next.run_id;
            if ended.reaches_others {
                // It fits, but its close owes other runs (a parent, children,
                // updates): the result is recorded, and the activation commits
                // as any other, with their locks. Should the run have moved on
                // in between, the activation is the run's next one to redo.
                return match self.commit_alone(next, c, lc).await {
                    Ok(()) => Ok(true),
                    Err(StoreError::Conflict { .. }) => Ok(false),
                    Err(e) => Err(e),
                };
            }
            let (ended, fits) = (ended.ended, ended.applied);
            if !ended {
                let now = self.task_state(run_id, seq).await?;
                return Err(rows::task_conflict(run_id, seq, now, lease_token));
            }
            self.notifier.notify(if fits {
                commit_kinds(&next)
            } else {
                Kinds::RUN
            });
            return Ok(fits);
        }
        // Locks as `commit_activation` would (the run, and for a close its
        // parent and children, in run_id order), then reads what `next`
        // expects under that lock.
        let end = rows::AttemptEnd::with_columns(&finished, columns);
        let mut tx = lifecycle::begin(&self.pool, run_id, &lc).await?;
        let (ended, state) = end_attempt_reading_run(&mut tx, &end).await?;
        if !ended {
            drop(tx);
            let now = self.task_state(run_id, finished.seq).await?;
            return Err(rows::task_conflict(
                run_id,
                finished.seq,
                now,
                finished.lease_token,
            ));
        }
        let fits = state.is_some_and(|s| s.fits(&finished, &next, &c));
        if fits {
            apply_activation(&mut tx, &next, &c, &lc).await?;
        }
        tx.commit().await?;
        // Applied: what the activation made ready. Not: the result woke the run.
        self.notifier.notify(if fits {
            commit_kinds(&next)
        } else {
            Kinds::RUN
        });
        Ok(fits)
    }

    async fn release_run(&self, run_id: &RunId, lease_token: i64) -> StoreResult<()> {
        // See the SQLite backend's `RELEASE_SQL` for why handled_wakeups may move here.
        let updated = sqlx::query(
            "UPDATE runs
                SET lease_owner = NULL, lease_expires_at_ms = 0,
                    handled_wakeups = CASE
                        WHEN last_seq > 1
                         AND NOT EXISTS (SELECT 1 FROM activity_tasks a
                                          WHERE a.run_id = runs.run_id AND a.status IN ('completed', 'failed')
                                            AND NOT a.consumed)
                         AND NOT EXISTS (SELECT 1 FROM signals s WHERE s.run_id = runs.run_id AND NOT s.consumed)
                         AND NOT EXISTS (SELECT 1 FROM children c
                                          WHERE c.parent_run_id = runs.run_id AND c.resolved AND NOT c.consumed)
                         AND NOT EXISTS (SELECT 1 FROM updates u WHERE u.run_id = runs.run_id AND NOT u.consumed)
                         AND NOT (cancel_reason IS NOT NULL AND NOT cancel_delivered)
                        THEN GREATEST(handled_wakeups, lease_wakeups)
                        ELSE handled_wakeups END
              WHERE run_id = $1 AND lease_token = $2",
        )
        .bind(run_id.as_str())
        .bind(lease_token)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated != 1 {
            let now = self.run_state(run_id).await?;
            return Err(rows::run_conflict(run_id, now, lease_token, None));
        }
        Ok(())
    }

    async fn park_run(&self, run_id: &RunId, lease_token: i64, reason: Value) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE runs SET status = 'stuck', stuck = $3, lease_owner = NULL, lease_expires_at_ms = 0
              WHERE run_id = $1 AND lease_token = $2 AND status = 'running'",
        )
        .bind(run_id.as_str())
        .bind(lease_token)
        .bind(reason.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated != 1 {
            let now = self.run_state(run_id).await?;
            return Err(rows::run_conflict(run_id, now, lease_token, None));
        }
        Ok(())
    }

    async fn next_timer_at(&self) -> StoreResult<Option<u64>> {
        // LEAST skips whichever of the two is missing.
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT LEAST(
                 (SELECT t.fire_at_ms FROM timers t JOIN runs r ON r.run_id = t.run_id
                   WHERE r.status = 'running' ORDER BY t.fire_at_ms LIMIT 1),
                 (SELECT deadline_ms FROM runs
                   WHERE status = 'running' AND deadline_ms IS NOT NULL
                   ORDER BY deadline_ms LIMIT 1))",
        )
        .fetch_one(&self.pool)
        .await?;
        at.map(|v| uint(v, "a timer's fire_at_ms or a run's deadline"))
            .transpose()
    }

    async fn pending_work(&self, now_ms: u64) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(rows::PENDING_WORK)
            .bind(int(now_ms))
            .fetch_optional(&self.pool)
            .await?)
    }

    fn changes(&self) -> Option<Changes> {
        Some(notify::spawn(
            self.connect.clone(),
            self.schema.clone(),
            self.own_listeners.clone(),
        ))
    }

    async fn reclaim_leases(&self, host_id: &str) -> StoreResult<u64> {
        let freed: i64 = sqlx::query_scalar(
            "WITH r AS (
                 UPDATE runs SET lease_owner = NULL, lease_expires_at_ms = 0, lease_token = lease_token + 1
                  WHERE lease_owner = $1
                 RETURNING 1
             ), t AS (
                 UPDATE activity_tasks
                    SET status = 'scheduled', visible_at_ms = 0, lease_owner = NULL, lease_expires_at_ms = NULL,
                        lease_token = lease_token + 1, heartbeat_deadline_ms = NULL
                  WHERE lease_owner = $1 AND status = 'running'
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM t)",
        )
        .bind(host_id)
        .fetch_one(&self.pool)
        .await?;
        uint(freed, "the number of leases reclaimed")
    }
}

/// What an activation commit makes ready for other hosts, as the triggers of
/// migration 0004 would have announced it.
fn commit_kinds(commit: &ActivationCommit) -> Kinds {
    let closing = !matches!(commit.outcome, super::RunOutcome::Running);
    let tasks = if closing {
        &[][..]
    } else {
        &commit.new_activities[..]
    };
    Kinds::NONE
        // A task claimed as it was scheduled is no other host's to claim.
        .with(Kinds::ACTIVITY, tasks.iter().any(|t| t.claimed.is_none()))
        .with(
            Kinds::TIMEOUT,
            tasks.iter().any(|t| {
                t.options.schedule_to_start_timeout_ms > 0
                    || t.options.schedule_to_close_timeout_ms > 0
                    || (t.claimed.is_some() && t.options.heartbeat_timeout_ms > 0)
            }),
        )
        .with(Kinds::TIMER, !closing && !commit.new_timers.is_empty())
        // A close wakes the parent (or starts the next run) and reaches the
        // children; new children are runnable; a cancelled activity resolves
        // and wakes its own run.
        .with(
            Kinds::RUN,
            closing
                || !commit.new_children.is_empty()
                || !commit.cancelled_children.is_empty()
                || !commit.cancelled_activities.is_empty(),
        )
}

/// Everything an activation commit writes, inside the caller's transaction:
/// the conditional append, then the lifecycle work and cancelled activities.
async fn apply_activation(
    tx: &mut PgConnection,
    commit: &ActivationCommit,
    c: &CommitColumns,
    lc: &LifecycleColumns,
) -> StoreResult<()> {
    let appended = append(tx, commit, c).await?;
    if !lc.is_empty() {
        lifecycle::apply_lifecycle(tx, &commit.run_id, lc, appended.reaches_others).await?;
    }
    if !commit.cancelled_activities.is_empty() {
        cancel_activities(
            tx,
            &commit.run_id,
            &commit.cancelled_activities,
            commit.now_ms,
        )
        .await?;
    }
    Ok(())
}

/// The optional clauses of an activation's statement that its columns
/// need. A clause that would write no row is left out, not run empty:
/// Postgres sets up every data-modifying clause (its table, its indexes,
/// their locks) on each call whether it writes or not, and a chain step's
/// statement ran ~10% faster without the three it never needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Clauses {
    tasks: bool,
    timers: bool,
    consumed_tasks: bool,
    consumed_signals: bool,
    removed_timers: bool,
    closing: bool,
}

impl Clauses {
    /// What `c` writes. `ended`: the task whose result the same statement
    /// records, which that statement marks consumed itself.
    fn of(c: &CommitColumns, ended: Option<u32>) -> Self {
        let ended = ended.map(i64::from);
        Self {
            tasks: !c.task_seqs.is_empty(),
            timers: !c.closing && !c.timer_seqs.is_empty(),
            consumed_tasks: c.consumed_activities.iter().any(|&seq| Some(seq) != ended),
            consumed_signals: !c.consumed_signals.is_empty(),
            removed_timers: c.closing || !c.removed_timers.is_empty(),
            closing: c.closing,
        }
    }

    /// Whether a close owes rows beyond its run's own: a parent waiting
    /// for it, children its close policy reaches, updates no one answered;
    /// `run` names the run (`$1`, or a column of a statement of many runs).
    /// Only a closing activation asks.
    fn reaches_others(self, run: &str) -> String {
        if !self.closing {
            return "false".to_owned();
        }
        format!(
            "(EXISTS (SELECT 1 FROM children WHERE child_run_id = {run} AND NOT resolved)
              OR EXISTS (SELECT 1 FROM children
                          WHERE parent_run_id = {run} AND NOT resolved AND child_run_id IS NOT NULL
                            AND parent_close_policy IN ('terminate', 'request_cancel'))
              OR EXISTS (SELECT 1 FROM updates WHERE run_id = {run} AND NOT completed))"
        )
    }
}

/// The insert of an activation's new activity tasks up to its `FROM`,
/// reading each task from `a`: `run` names its run, `closing` whether the
/// activation closes that run (its tasks never run then), `now` the time.
/// A task with an owner is claimed as it is scheduled: its first attempt
/// runs, as claim_activities would have started it.
fn insert_tasks(run: &str, closing: &str, now: &str) -> String {
    format!(
        "INSERT INTO activity_tasks (run_id, seq, name, input, options, lease_ms, status, visible_at_ms,
                                     schedule_to_start_ms, heartbeat_timeout_ms, close_deadline_ms,
                                     start_deadline_ms, attempt, lease_token, lease_owner,
                                     lease_expires_at_ms, heartbeat_deadline_ms)
         SELECT {run}, a.seq, a.name, a.input, a.options, a.lease_ms,
                CASE WHEN {closing} THEN 'abandoned'
                     WHEN a.owner IS NOT NULL THEN 'running'
                     ELSE 'scheduled' END,
                COALESCE(a.expires, a.visible_at),
                a.schedule_to_start, a.heartbeat_timeout, a.close_deadline,
                CASE WHEN a.owner IS NULL THEN a.start_deadline END,
                CASE WHEN a.owner IS NULL THEN 0 ELSE 1 END,
                CASE WHEN a.owner IS NULL THEN 0 ELSE 1 END,
                a.owner, a.expires,
                CASE WHEN a.owner IS NOT NULL AND a.heartbeat_timeout > 0
                     THEN {now} + a.heartbeat_timeout END"
    )
}

/// The text of statement `kind` with `clauses`, built by `build` the first
/// time and kept: each is prepared once per connection, and few shapes
/// ever occur (at most 64 per kind).
fn statement(kind: &'static str, clauses: Clauses, build: impl FnOnce() -> String) -> &'static str {
    static BUILT: std::sync::LazyLock<
        std::sync::Mutex<HashMap<(&'static str, Clauses), &'static str>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut built = BUILT.lock().expect("statement texts poisoned");
    built
        .entry((kind, clauses))
        .or_insert_with(|| Box::leak(build().into_boxed_str()))
}

/// The clauses of an activation's append that insert its rows (events,
/// activity tasks, timers), each joined to `src`: the clause that wrote the
/// run's row, empty when that did not apply, so that then nothing is
/// inserted. Parameters as [`bind_append`] binds them. A timer both started
/// and cancelled in the activation is never inserted. `first`: event 1 of a
/// run the statement creates goes in with them, from `$38` and `$40`–`$42`.
fn appended_rows(src: &str, clauses: Clauses, first: bool) -> Vec<String> {
    let events = "UNNEST($11::bigint[], $12::text[], $13::text[], $14::bigint[], $15::text[])";
    let events = if first {
        format!(
            "(SELECT 1::bigint, $40::text, $41::text, $42::bigint, $38::text UNION ALL SELECT * FROM {events})"
        )
    } else {
        events.to_owned()
    };
    let mut out = vec![format!(
        "ev AS (
             INSERT INTO events (run_id, seq, kind, payload, recorded_at_ms, hash)
             SELECT {{src}}.run_id, e.seq, e.kind, e.payload, e.at, e.hash
               FROM {{src}}, {events} AS e (seq, kind, payload, at, hash)
         )"
    )];
    if clauses.tasks {
        out.push(format!(
            "new_tasks AS (
             {}
               FROM {{src}}, UNNEST($19::bigint[], $20::text[], $21::text[], $22::text[], $23::bigint[], $24::bigint[],
                              $28::bigint[], $29::bigint[], $30::bigint[], $31::bigint[],
                              $32::text[], $33::bigint[])
                    AS a (seq, name, input, options, lease_ms, visible_at,
                          schedule_to_start, heartbeat_timeout, close_deadline, start_deadline,
                          owner, expires)
         )",
            insert_tasks("{src}.run_id", "$27::boolean", "$34::bigint")
        ));
    }
    if clauses.timers {
        out.push(
            "new_timers AS (
             INSERT INTO timers (run_id, seq, fire_at_ms)
             SELECT {src}.run_id, t.seq, t.fire_at
               FROM {src}, UNNEST($25::bigint[], $26::bigint[]) AS t (seq, fire_at)
              WHERE NOT $27::boolean AND NOT (t.seq = ANY($18::bigint[]))
         )"
            .to_owned(),
        );
    }
    out.into_iter().map(|c| c.replace("{src}", src)).collect()
}

/// The clauses of an activation's append that mark what it consumed and
/// removed, and abandon a closing run's activities; each applies only with
/// `r`, the append's update of the run's row. `tasks` narrows the consumed
/// tasks further (`""` for none).
fn append_consumed(tasks: &str, clauses: Clauses) -> Vec<String> {
    let mut out = Vec::new();
    if clauses.consumed_tasks {
        out.push(format!(
            "consumed_tasks AS (
             UPDATE activity_tasks SET consumed = true
              WHERE run_id = $1 AND seq = ANY($16::bigint[]) AND EXISTS (SELECT 1 FROM r){tasks}
         )"
        ));
    }
    if clauses.consumed_signals {
        out.push(
            "consumed_signals AS (
             UPDATE signals SET consumed = true
              WHERE run_id = $1 AND id = ANY($17::bigint[]) AND EXISTS (SELECT 1 FROM r)
         )"
            .to_owned(),
        );
    }
    if clauses.removed_timers {
        out.push(
            "removed_timers AS (
             DELETE FROM timers
              WHERE run_id = $1 AND ($27::boolean OR seq = ANY($18::bigint[])) AND EXISTS (SELECT 1 FROM r)
         )"
            .to_owned(),
        );
    }
    if clauses.closing {
        out.push(
            "abandoned AS (
             UPDATE activity_tasks
                SET status = 'abandoned', lease_owner = NULL, lease_expires_at_ms = NULL
              WHERE $27::boolean AND run_id = $1 AND NOT consumed AND status IN ('scheduled', 'running')
                AND NOT (seq = ANY($16::bigint[])) AND EXISTS (SELECT 1 FROM r)
         )"
            .to_owned(),
        );
    }
    out
}

/// Every clause of an append that follows `r`, its update of the run's
/// row, as one list; `tasks` as [`append_consumed`] takes it.
fn appended_to_r(tasks: &str, clauses: Clauses) -> String {
    let mut parts = appended_rows("r", clauses, false);
    parts.extend(append_consumed(tasks, clauses));
    parts.join(", ")
}

/// Binds an activation's columns as `$1`–`$34` of a statement that uses
/// [`appended_rows`].
fn bind_append<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    commit: &'q ActivationCommit,
    c: &'q CommitColumns,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(commit.run_id.as_str())
        .bind(commit.lease_token)
        .bind(int(c.expected_last_seq))
        .bind(c.last_seq)
        .bind(c.last_hash.as_str())
        .bind(commit.observed_wakeups)
        .bind(c.status)
        .bind(c.output.as_deref())
        .bind(c.failure.as_deref())
        .bind(c.closed_at_ms)
        .bind(&c.event_seqs)
        .bind(&c.event_kinds)
        .bind(&c.event_payloads)
        .bind(&c.event_times)
        .bind(&c.event_hashes)
        .bind(&c.consumed_activities)
        .bind(&c.consumed_signals)
        .bind(&c.removed_timers)
        .bind(&c.task_seqs)
        .bind(&c.task_names)
        .bind(&c.task_inputs)
        .bind(&c.task_options)
        .bind(&c.task_lease_ms)
        .bind(&c.task_visible_at)
        .bind(&c.timer_seqs)
        .bind(&c.timer_fire_at)
        .bind(c.closing)
        .bind(&c.task_schedule_to_start_ms)
        .bind(&c.task_heartbeat_timeout_ms)
        .bind(&c.task_close_deadline)
        .bind(&c.task_start_deadline)
        .bind(&c.task_owner)
        .bind(&c.task_lease_expires)
        .bind(c.now_ms)
}

/// The conditional append of an activation: its events, its run row and
/// its activity and timer indexes, in one statement that writes nothing at
/// all unless the lease and the history still hold ([`StoreError::Conflict`]
/// then, saying what moved on).
async fn append(
    conn: &mut PgConnection,
    commit: &ActivationCommit,
    c: &CommitColumns,
) -> StoreResult<Appended> {
    let run_id = &commit.run_id;
    // `r` is the conditional append; every other clause joins or tests it,
    // so when the lease or the history moved on, nothing at all is written.
    let clauses = Clauses::of(c, None);
    let sql = statement("append", clauses, || {
        format!(
            concat!(
                "WITH r AS (
                 UPDATE runs
                    SET last_seq = $4, last_hash = $5, handled_wakeups = $6,
                        lease_owner = NULL, lease_expires_at_ms = 0,
                        status = $7, output = $8, failure = $9, closed_at_ms = $10
                  WHERE run_id = $1 AND lease_token = $2 AND last_seq = $3 AND status = 'running'
                 RETURNING run_id
             ), ",
                "{}",
                " SELECT (SELECT count(*) FROM r),
                    -- A closing run's close reaches others only through these rows
                    -- (read after the commit's locks: no one adds them meanwhile).
                    {reaches}"
            ),
            appended_to_r("", clauses),
            reaches = clauses.reaches_others("$1"),
        )
    });
    let (applied, reaches_others): (i64, bool) = bind_append(sqlx::query_as(sql), commit, c)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match rows::unique_violation(&e).as_deref() {
            Some("events_pkey") => rows::events_exist(run_id),
            _ => e.into(),
        })?;
    if applied != 1 {
        let now: Option<RunStateRow> =
            sqlx::query_as("SELECT status, lease_token, last_seq FROM runs WHERE run_id = $1")
                .bind(run_id.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        return Err(rows::run_conflict(
            run_id,
            now,
            commit.lease_token,
            Some(c.expected_last_seq),
        ));
    }
    Ok(Appended { reaches_others })
}

/// [`lifecycle::place_run`] and the [`append`] of the run's first
/// activation as one statement: the run's row as the append leaves it, its
/// event 1 and the activation's rows. Writes nothing and says `false` when
/// the workflow id has an open run or its reuse policy refuses the last
/// closed one (the caller then takes the ordinary way, which says why).
async fn place_started(
    conn: &mut PgConnection,
    run: &NewRunColumns,
    first: &ActivationCommit,
    c: &CommitColumns,
) -> StoreResult<bool> {
    let clauses = Clauses::of(c, None);
    let sql = statement("place_started", clauses, || {
        format!(
            concat!(
                "WITH last AS (
                 SELECT run_id, status FROM runs
                  WHERE $51::boolean AND workflow_id = $35 AND status NOT IN ('running', 'stuck')
                  ORDER BY created_at_ms DESC, status = 'continued_as_new', run_id DESC
                  LIMIT 1
             ), ins AS (
                 INSERT INTO runs (run_id, workflow_id, workflow_type, module_sha256, status, last_seq,
                                   last_hash, created_at_ms, wakeups, handled_wakeups, woken_at_ms,
                                   parent_workflow_id, parent_run_id, parent_seq, search_attributes, memo,
                                   deadline_ms, execution_deadline_ms, run_timeout_ms)
                 SELECT $1, $35, $36, $37, 'running', $4, $5, $39, 1, $6, $39,
                        $43, $44, $45, $46, $47, $48, $49, $50
                  WHERE NOT EXISTS (SELECT 1 FROM last WHERE NOT (status = ANY($52::text[])))
                 ON CONFLICT (workflow_id) WHERE status IN ('running', 'stuck') DO NOTHING
                 RETURNING run_id
             ), ",
                "{} SELECT EXISTS (SELECT 1 FROM ins)"
            ),
            appended_rows("ins", clauses, true).join(", ")
        )
    });
    let statement = bind_append(sqlx::query_as(sql), first, c);
    let placed: Result<bool, sqlx::Error> = lifecycle::bind_new_run(statement, run)
        .bind(run.checks_reuse())
        .bind(&run.reusable_after)
        .fetch_one(&mut *conn)
        .await
        .map(|(inserted,)| inserted);
    placed.map_err(|e| match rows::unique_violation(&e) {
        Some(_) => StoreError::Conflict {
            run_id: run.run_id.clone(),
            reason: "a run with this id already exists; run ids must be unique".into(),
        },
        None => e.into(),
    })
}

/// `finish_and_commit` of an activation with no lifecycle work, as one
/// statement: ends the attempt, and when the run is as `next` was prepared
/// against (see [`rows::WarmRunState::fits`], checked here in SQL under the
/// run's lock) appends `next` too; otherwise the result alone wakes the run.
/// A close applies here only when it owes no other run anything.
async fn end_and_append(
    conn: &mut PgConnection,
    end: &rows::AttemptEnd<'_>,
    finished: &FinishedAttempt,
    next: &ActivationCommit,
    c: &CommitColumns,
) -> StoreResult<Ended> {
    // `$1`–`$34` as the append binds them; the attempt's end from `$35`.
    // The task the result ends is also the one the activation consumes: `t`
    // marks it, as one statement may update a row only once.
    let clauses = Clauses::of(c, Some(finished.seq));
    let sql = statement("end_and_append", clauses, || {
        format!(
            concat!(
                "WITH locked AS (
                 SELECT r.run_id,
                        r.status = 'running' AND r.lease_token = $2 AND r.last_seq = $3
                        AND r.wakeups = r.handled_wakeups AND r.handled_wakeups + 1 = $6
                        AND $42::boolean
                        AND (SELECT a.attempt FROM activity_tasks a WHERE a.run_id = r.run_id AND a.seq = $35)
                            IS NOT DISTINCT FROM $46::bigint AS prepared_for,
                        -- As `append` reads it. Anyone adding such a row
                        -- (an update) also wakes the run: it would not fit.
                        {reaches} AS reaches_others
                   FROM runs r WHERE r.run_id = $1 FOR NO KEY UPDATE
             ), run AS (
                 SELECT run_id, prepared_for AND NOT reaches_others AS fits, reaches_others FROM locked
             ), t AS (
                 UPDATE activity_tasks
                    SET status = $37, lease_owner = NULL, lease_expires_at_ms = NULL,
                        output = $38, failure = $39, resolved_at_ms = $40,
                        visible_at_ms = COALESCE($41, visible_at_ms),
                        heartbeat_deadline_ms = NULL,
                        start_deadline_ms = CASE WHEN $41::bigint IS NOT NULL AND schedule_to_start_ms > 0
                                                 THEN $41::bigint + schedule_to_start_ms END,
                        consumed = consumed OR (seq = ANY($16::bigint[]) AND (SELECT fits FROM run))
                  WHERE run_id = $1 AND seq = $35 AND lease_token = $36 AND status = $43
                    AND ($44::bigint IS NULL OR close_deadline_ms <= $44 OR start_deadline_ms <= $44
                         OR heartbeat_deadline_ms <= $44)
                    AND EXISTS (SELECT 1 FROM run)
                 RETURNING run_id
             ), w AS (
                 UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $45 ELSE woken_at_ms END,
                                 wakeups = wakeups + 1
                  WHERE run_id = $1 AND $42::boolean AND EXISTS (SELECT 1 FROM t)
                    AND NOT (SELECT fits FROM run)
             ), r AS (
                 -- As the attempt's end and then the append would leave it:
                 -- woken by the result, and that wake-up handled. Nothing
                 -- waits for the run then, so `woken_at_ms` keeps its value
                 -- (it counts only while the run is woken): a step that
                 -- leaves the run open changes no indexed column, and
                 -- Postgres updates the row in place (HOT; migration 0008).
                 UPDATE runs
                    SET last_seq = $4, last_hash = $5, handled_wakeups = $6,
                        wakeups = wakeups + 1,
                        lease_owner = NULL, lease_expires_at_ms = 0,
                        status = $7, output = $8, failure = $9, closed_at_ms = $10
                  WHERE run_id = $1 AND lease_token = $2 AND last_seq = $3 AND status = 'running'
                    AND EXISTS (SELECT 1 FROM t) AND (SELECT fits FROM run)
                 RETURNING run_id
             ), ",
                "{}",
                " SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM r),
                     COALESCE((SELECT prepared_for AND reaches_others FROM locked), false)"
            ),
            appended_to_r(" AND seq <> $35", clauses),
            reaches = clauses.reaches_others("$1"),
        )
    });
    let statement = bind_append(sqlx::query_as(sql), next, c);
    let (ended, applied, reaches_others): (i64, i64, bool) = bind_end_columns(statement, end)
        .bind(i64::from(finished.attempt))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match rows::unique_violation(&e).as_deref() {
            Some("events_pkey") => rows::events_exist(&next.run_id),
            _ => e.into(),
        })?;
    Ok(Ended {
        ended: ended == 1,
        applied: applied == 1,
        reaches_others: ended == 1 && reaches_others,
    })
}

/// What [`end_and_append`] did.
struct Ended {
    /// The attempt ended with its result.
    ended: bool,
    /// The prepared activation applied with it.
    applied: bool,
    /// The activation fits the run but was not applied: it closes the run
    /// and the close owes other runs (see [`Appended::reaches_others`]).
    reaches_others: bool,
}

/// What an applied [`append`] found.
struct Appended {
    /// The run closed with rows that its close must update beyond its own:
    /// a parent waiting for it, children its close policy reaches, updates
    /// no one answered.
    reaches_others: bool,
}

/// Resolves the activities the workflow cancelled that have not resolved, as
/// the second statement of the commit's transaction: each fails at once with
/// `Cancelled` (a running attempt learns it at its next heartbeat, and its
/// finish is a conflict), and the run — already locked by the commit — is
/// woken to receive them, after the commit set `handled_wakeups`.
async fn cancel_activities(
    tx: &mut PgConnection,
    run_id: &RunId,
    seqs: &[u32],
    now_ms: u64,
) -> StoreResult<()> {
    let seqs: Vec<i64> = seqs.iter().map(|&s| i64::from(s)).collect();
    sqlx::query(
        "WITH t AS (
             UPDATE activity_tasks
                SET status = 'failed', failure = $3, resolved_at_ms = $4, cancelled_at_ms = $4,
                    lease_owner = NULL, lease_expires_at_ms = NULL,
                    start_deadline_ms = NULL, heartbeat_deadline_ms = NULL
              WHERE run_id = $1 AND seq = ANY($2::bigint[])
                AND status IN ('scheduled', 'running') AND NOT consumed
             RETURNING 1
         )
         UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $4 ELSE woken_at_ms END,
                         wakeups = wakeups + 1
          WHERE run_id = $1 AND EXISTS (SELECT 1 FROM t)",
    )
    .bind(run_id.as_str())
    .bind(&seqs)
    .bind(rows::cancelled_failure()?)
    .bind(int(now_ms))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The statement that ends an attempt (see [`end_attempt`]): `$run` adds
/// columns of the locked run `r` to the `run` clause, `$select` is what the
/// statement returns (`t` holds the task it ended, if it applied).
macro_rules! end_attempt_sql {
    ($run:literal, $select:literal) => {
        concat!(
            "WITH run AS (
                 SELECT r.run_id",
            $run,
            " FROM runs r WHERE r.run_id = $1 FOR NO KEY UPDATE
             ), t AS (
                 UPDATE activity_tasks
                    SET status = $4, lease_owner = NULL, lease_expires_at_ms = NULL,
                        output = $5, failure = $6, resolved_at_ms = $7,
                        visible_at_ms = COALESCE($8, visible_at_ms),
                        heartbeat_deadline_ms = NULL,
                        start_deadline_ms = CASE WHEN $8::bigint IS NOT NULL AND schedule_to_start_ms > 0
                                                 THEN $8::bigint + schedule_to_start_ms END
                  WHERE run_id = $1 AND seq = $2 AND lease_token = $3 AND status = $10
                    AND ($11::bigint IS NULL OR close_deadline_ms <= $11 OR start_deadline_ms <= $11
                         OR heartbeat_deadline_ms <= $11)
                    AND EXISTS (SELECT 1 FROM run)
                 RETURNING run_id
             ), w AS (
                 UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $12 ELSE woken_at_ms END,
                                 wakeups = wakeups + 1
                  WHERE run_id = $1 AND $9::boolean AND EXISTS (SELECT 1 FROM t)
             ) ",
            $select
        )
    };
}

/// Binds an [`rows::AttemptEnd`] to a statement of [`end_attempt_sql`].
fn bind_end<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    end: &'q rows::AttemptEnd<'_>,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    bind_end_columns(query.bind(end.run_id.as_str()), end)
}

/// Binds an [`rows::AttemptEnd`] but its run: the attempt, its lease, its
/// outcome's columns, what it must still be, and the time.
fn bind_end_columns<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    end: &'q rows::AttemptEnd<'_>,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    let a = &end.columns;
    query
        .bind(i64::from(end.seq))
        .bind(end.lease_token)
        .bind(a.status)
        .bind(a.output.as_deref())
        .bind(a.failure.as_deref())
        .bind(a.resolved_at_ms)
        .bind(a.retry_at_ms)
        .bind(a.is_final)
        .bind(end.status)
        .bind(end.expired_at)
        .bind(int(end.now_ms))
}

/// Ends an attempt (see [`rows::AttemptEnd`]); a final outcome wakes the run.
/// Whether it applied. `run` locks the run's row before the task's, the
/// order commits use.
async fn end_attempt<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    end: &rows::AttemptEnd<'_>,
) -> StoreResult<bool> {
    let (applied,): (i64,) = bind_end(
        sqlx::query_as(end_attempt_sql!("", "SELECT count(*) FROM t")),
        end,
    )
    .fetch_one(conn)
    .await?;
    Ok(applied == 1)
}

/// [`end_attempt`], reading in the same statement what `finish_and_commit`
/// checks of the run (its [`rows::WarmRunState`], as the lock found it,
/// before this result woke it): one round trip instead of two.
async fn end_attempt_reading_run(
    conn: &mut PgConnection,
    end: &rows::AttemptEnd<'_>,
) -> StoreResult<(bool, Option<rows::WarmRunState>)> {
    let ended: rows::EndedReadingRun = bind_end(
        sqlx::query_as(end_attempt_sql!(
            ", r.status, r.lease_token, r.last_seq, r.wakeups, r.handled_wakeups,
               (SELECT a.attempt FROM activity_tasks a WHERE a.run_id = r.run_id AND a.seq = $2) AS attempt",
            "SELECT (SELECT count(*) FROM t) AS applied, run.status, run.lease_token, run.last_seq,
                    run.wakeups, run.handled_wakeups, run.attempt
               FROM (SELECT 1) AS one LEFT JOIN run ON true"
        )),
        end,
    )
    .fetch_one(conn)
    .await?;
    Ok(ended.into_parts())
}

impl PostgresStore {
    /// After a write the shared version code makes (a resumed run, a reset
    /// run with its inheritance): announces every kind of work.
    pub(super) fn announce_all(&self) {
        self.notifier.notify(Kinds::ALL);
    }

    async fn task_state(&self, run_id: &RunId, seq: u32) -> StoreResult<Option<TaskStateRow>> {
        Ok(sqlx::query_as(rows::TASK_STATE_SQL)
            .bind(run_id.as_str())
            .bind(i64::from(seq))
            .fetch_optional(&self.pool)
            .await?)
    }
}

#[async_trait]
impl ActivityStore for PostgresStore {
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
            "WITH c AS (
                 SELECT run_id, seq FROM activity_tasks
                  WHERE status IN ('scheduled', 'running') AND visible_at_ms <= $2 AND name = ANY($4::text[])
                    AND (close_deadline_ms IS NULL OR close_deadline_ms > $2)
                    AND (start_deadline_ms IS NULL OR start_deadline_ms > $2)
                  ORDER BY visible_at_ms
                  LIMIT $5
                  FOR UPDATE SKIP LOCKED
             )
             UPDATE activity_tasks a
                SET status = 'running', attempt = a.attempt + 1, lease_token = a.lease_token + 1,
                    lease_owner = $1,
                    lease_expires_at_ms = $2::bigint + CASE WHEN a.lease_ms > 0 THEN a.lease_ms ELSE $3::bigint END,
                    visible_at_ms = $2::bigint + CASE WHEN a.lease_ms > 0 THEN a.lease_ms ELSE $3::bigint END,
                    start_deadline_ms = NULL,
                    heartbeat_deadline_ms = CASE WHEN a.heartbeat_timeout_ms > 0
                                                 THEN $2::bigint + a.heartbeat_timeout_ms END
               FROM c
              WHERE a.run_id = c.run_id AND a.seq = c.seq
             RETURNING a.run_id, a.seq, a.name, a.input, a.options, a.attempt, a.lease_token,
                       a.heartbeat_details, a.close_deadline_ms",
        )
        .bind(host_id)
        .bind(int(now_ms))
        .bind(int(default_lease_ms))
        .bind(names)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let (tasks, unreadable) = rows::decode_claimed(rows);
        for bad in unreadable {
            tracing::error!(run_id = %bad.run_id, seq = bad.seq, "a claimed activity task cannot be read back; its run is parked and the rest of the claim goes on: {}", bad.error);
            let parked = sqlx::query(rows::PARK_FOR_UNREADABLE_TASK)
                .bind(bad.run_id.as_str())
                .bind(bad.reason())
                .execute(&self.pool)
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
        let end = rows::AttemptEnd {
            run_id,
            seq,
            lease_token,
            status: "running",
            expired_at: None,
            columns: AttemptColumns::new(run_id, seq, &outcome, now_ms)?,
            now_ms,
        };
        if !end_attempt(&self.pool, &end).await? {
            let now = self.task_state(run_id, seq).await?;
            return Err(rows::task_conflict(run_id, seq, now, lease_token));
        }
        self.notifier.notify(match outcome {
            AttemptOutcome::Retry { .. } => Kinds::ACTIVITY.with(Kinds::TIMEOUT, true),
            _ => Kinds::RUN,
        });
        Ok(())
    }

    async fn next_activity_at(&self, names: &[String]) -> StoreResult<Option<u64>> {
        if names.is_empty() {
            return Ok(None);
        }
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(visible_at_ms) FROM activity_tasks
              WHERE status IN ('scheduled', 'running') AND name = ANY($1::text[])",
        )
        .bind(names)
        .fetch_one(&self.pool)
        .await?;
        at.map(|v| uint(v, "an activity task's visible_at_ms"))
            .transpose()
    }

    async fn claim_activity(&self, claim: ClaimActivity) -> StoreResult<Option<ActivityTask>> {
        let row: Option<ClaimedTaskRow> = sqlx::query_as(
            "UPDATE activity_tasks
                SET status = 'running', attempt = attempt + 1, lease_token = lease_token + 1, lease_owner = $3,
                    lease_expires_at_ms = $4::bigint + CASE WHEN lease_ms > 0 THEN lease_ms ELSE $5::bigint END,
                    visible_at_ms = $4::bigint + CASE WHEN lease_ms > 0 THEN lease_ms ELSE $5::bigint END,
                    start_deadline_ms = NULL,
                    heartbeat_deadline_ms = CASE WHEN heartbeat_timeout_ms > 0
                                                 THEN $4::bigint + heartbeat_timeout_ms END
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
        .fetch_optional(&self.pool)
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
        let updated = sqlx::query(
            "UPDATE activity_tasks
                SET heartbeat_at_ms = $4, heartbeat_details = COALESCE($5, heartbeat_details),
                    heartbeat_deadline_ms = CASE WHEN heartbeat_timeout_ms > 0
                                                 THEN $4::bigint + heartbeat_timeout_ms END
              WHERE run_id = $1 AND seq = $2 AND lease_token = $3 AND status = 'running'",
        )
        .bind(heartbeat.run_id.as_str())
        .bind(i64::from(heartbeat.seq))
        .bind(heartbeat.lease_token)
        .bind(int(heartbeat.now_ms))
        .bind(details)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated != 1 {
            let now = self.task_state(&heartbeat.run_id, heartbeat.seq).await?;
            return Err(rows::task_conflict(
                &heartbeat.run_id,
                heartbeat.seq,
                now,
                heartbeat.lease_token,
            ));
        }
        Ok(())
    }

    async fn time_out_activities(&self, now_ms: u64) -> StoreResult<u64> {
        let expired: Vec<expiry::ExpiredTaskRow> = sqlx::query_as(expiry::EXPIRED_TASKS_SQL)
            .bind(int(now_ms))
            .bind(int(TIMEOUT_BATCH))
            .fetch_all(&self.pool)
            .await?;
        // Each end is fenced on its own: another host's sweep, a finish or a
        // heartbeat that got there first makes it a no-op.
        let mut changed = 0;
        for expiry in expiry::expiries(expired, now_ms)? {
            let end = rows::AttemptEnd::expired(&expiry, now_ms)?;
            if end_attempt(&self.pool, &end).await? {
                changed += 1;
            }
        }
        // Final failures woke runs; retries made tasks claimable, with deadlines.
        self.notifier.notify(
            Kinds::NONE.with(
                Kinds::RUN
                    .with(Kinds::ACTIVITY, true)
                    .with(Kinds::TIMEOUT, true),
                changed > 0,
            ),
        );
        Ok(changed)
    }

    async fn next_activity_timeout_at(&self) -> StoreResult<Option<u64>> {
        let at: Option<i64> = sqlx::query_scalar(expiry::NEXT_TIMEOUT_SQL)
            .fetch_one(&self.pool)
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
            .fetch_optional(&self.pool)
            .await?;
        row.map(ClaimedTaskRow::into_task).transpose()
    }
}

#[async_trait]
impl SignalStore for PostgresStore {
    async fn send_signal(
        &self,
        run_id: &RunId,
        name: &str,
        input: Value,
        now_ms: u64,
        max_pending: u64,
    ) -> StoreResult<i64> {
        let id: Option<i64> = sqlx::query_scalar(
            "WITH r AS (
                 UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $4 ELSE woken_at_ms END,
                                 wakeups = wakeups + 1
                  WHERE run_id = $1 AND status IN ('running', 'stuck')
                    AND (SELECT count(*) FROM signals WHERE run_id = $1 AND NOT consumed) < $5
                 RETURNING run_id
             )
             INSERT INTO signals (run_id, name, input, received_at_ms)
             SELECT run_id, $2, $3, $4 FROM r
             RETURNING id",
        )
        .bind(run_id.as_str())
        .bind(name)
        .bind(input.to_string())
        .bind(int(now_ms))
        .bind(int(max_pending))
        .fetch_optional(&self.pool)
        .await?;
        let Some(id) = id else {
            // Closed, unknown, or full: which, for the error.
            let open: Option<bool> = sqlx::query_scalar(
                "SELECT status IN ('running', 'stuck') FROM runs WHERE run_id = $1",
            )
            .bind(run_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
            return Err(if open == Some(true) {
                rows::signals_full(run_id, max_pending)
            } else {
                StoreError::NotFound {
                    what: format!(
                        "open run {run_id} (it is closed or unknown; signals go to open runs)"
                    ),
                }
            });
        };
        self.notifier.notify(Kinds::RUN);
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
        let mut conn = self.pool.acquire().await?;
        lifecycle::send_update(
            &mut conn,
            run_id,
            update_id,
            name,
            &input,
            int(now_ms),
            int(max_in_flight),
        )
        .await?;
        self.notifier.notify(Kinds::RUN);
        Ok(())
    }

    async fn update_outcome(
        &self,
        run_id: &RunId,
        update_id: &str,
    ) -> StoreResult<Option<Result<Value, Failure>>> {
        lifecycle::update_outcome(&self.pool, run_id, update_id).await
    }

    async fn request_cancel(&self, run_id: &RunId, reason: &str, now_ms: u64) -> StoreResult<()> {
        lifecycle::request_cancel(&self.pool, run_id, reason, int(now_ms)).await?;
        self.notifier.notify(Kinds::RUN);
        Ok(())
    }

    async fn request_termination(
        &self,
        run_id: &RunId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<()> {
        lifecycle::request_termination(&self.pool, run_id, reason, int(now_ms)).await?;
        self.notifier.notify(Kinds::RUN);
        Ok(())
    }
}

#[async_trait]
impl ModuleStore for PostgresStore {
    async fn put_module(
        &self,
        name: &str,
        version: &str,
        bytes: &[u8],
        now_ms: u64,
    ) -> StoreResult<ModuleRecord> {
        let sha256 = Sha256Hex::of(bytes);
        let taken: Option<String> = sqlx::query_scalar(rows::VERSION_TAKEN)
            .bind(name)
            .bind(version)
            .bind(sha256.as_str())
            .fetch_optional(&self.pool)
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
        .execute(&self.pool)
        .await?;
        let row: ModuleRow = sqlx::query_as(
            "SELECT sha256, name, version, size, created_at_ms FROM modules WHERE sha256 = $1",
        )
        .bind(sha256.as_str())
        .fetch_one(&self.pool)
        .await?;
        row.into_record()
    }

    async fn module_bytes(&self, sha256: &Sha256Hex) -> StoreResult<Vec<u8>> {
        let bytes: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT bytes FROM modules WHERE sha256 = $1")
                .bind(sha256.as_str())
                .fetch_optional(&self.pool)
                .await?;
        bytes.ok_or_else(|| StoreError::NotFound {
            what: format!("module {sha256} (deploy it first)"),
        })
    }

    async fn modules(&self) -> StoreResult<Vec<ModuleRecord>> {
        let rows: Vec<ModuleRow> = sqlx::query_as(
            "SELECT sha256, name, version, size, created_at_ms FROM modules ORDER BY created_at_ms, name, version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ModuleRow::into_record).collect()
    }
}
