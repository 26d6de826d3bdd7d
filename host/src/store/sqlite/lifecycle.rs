//! The workflow lifecycle on SQLite: placing new runs (starts, children,
//! continue-as-new), the part of an activation commit beyond the conditional
//! append, messages to runs (updates, cancel and termination requests), and
//! listing runs.
//!
//! Every write here runs inside a transaction the caller opened with
//! `BEGIN IMMEDIATE`: the one writer holds the lock, so a read followed by a
//! write (is the workflow id taken? then insert) cannot race.

use super::json_list;
use crate::model::{Failure, RunId};
use crate::store::rows::{
    self, LifecycleColumns, NewRunColumns, PARENT_CANCELS, PARENT_CLOSED, Placed, RunRow,
    WORKFLOW_ID_SLOT, select_run,
};
use crate::store::{ListFilter, RunPage, RunStatus, StoreError, StoreResult};
use serde_json::Value;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

/// Inserts a run with its event 1 (and its start signal), unless its workflow
/// id has an open run or the reuse policy forbids following the last closed one.
pub(super) async fn place_run(
    conn: &mut SqliteConnection,
    run: &NewRunColumns,
) -> StoreResult<Placed> {
    let open: Option<String> = sqlx::query_scalar(
        "SELECT run_id FROM runs WHERE workflow_id = $1 AND status IN ('running', 'stuck')",
    )
    .bind(&run.workflow_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(open) = open {
        return Ok(Placed::Open(RunId(open)));
    }
    if run.checks_reuse() {
        // No run is open, so the newest run is the newest closed one. A run
        // that continued as new sorts after its successor created the same millisecond.
        let last: Option<(String, String)> = sqlx::query_as(
            "SELECT run_id, status FROM runs WHERE workflow_id = $1
              ORDER BY created_at_ms DESC, status = 'continued_as_new', rowid DESC LIMIT 1",
        )
        .bind(&run.workflow_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((run_id, status)) = last
            && rows::reuse_forbids(run.reuse_policy, RunStatus::parse(&status)?)
        {
            return Ok(Placed::Reused {
                run_id: RunId(run_id),
                status,
            });
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO runs (run_id, workflow_id, workflow_type, module_sha256, status, last_seq, last_hash,
                           created_at_ms, wakeups, handled_wakeups, woken_at_ms,
                           parent_workflow_id, parent_run_id, parent_seq, search_attributes, memo,
                           deadline_ms, execution_deadline_ms, run_timeout_ms)
         VALUES ($1, $2, $3, $4, 'running', 1, $5, $6, 1, 0, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(run.run_id.as_str())
    .bind(&run.workflow_id)
    .bind(&run.workflow_type)
    .bind(&run.module_sha256)
    .bind(&run.hash)
    .bind(run.now_ms)
    .bind(run.parent_workflow_id.as_deref())
    .bind(run.parent_run_id.as_deref())
    .bind(run.parent_seq)
    .bind(&run.search_attributes)
    .bind(run.memo.as_deref())
    .bind(run.deadline_ms)
    .bind(run.execution_deadline_ms)
    .bind(run.run_timeout_ms)
    .execute(&mut *conn)
    .await;
    if let Err(e) = inserted {
        return Err(match rows::unique_violation(&e) {
            Some(_) => StoreError::Conflict {
                run_id: run.run_id.clone(),
                reason: "a run with this id already exists; run ids must be unique".into(),
            },
            None => e.into(),
        });
    }
    sqlx::query(
        "INSERT INTO events (run_id, seq, kind, payload, recorded_at_ms, hash) VALUES ($1, 1, $2, $3, $4, $5)",
    )
    .bind(run.run_id.as_str())
    .bind(run.event_kind)
    .bind(&run.event_payload)
    .bind(run.event_recorded_at_ms)
    .bind(&run.hash)
    .execute(&mut *conn)
    .await?;
    if let (Some(name), Some(input)) = (&run.signal_name, &run.signal_input) {
        sqlx::query(
            "INSERT INTO signals (run_id, name, input, received_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(run.run_id.as_str())
        .bind(name)
        .bind(input)
        .bind(run.now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Placed::New)
}

/// Queues a signal for an open run and wakes it; false if the run is not open.
pub(super) async fn queue_signal(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    name: &str,
    input: &str,
    now_ms: i64,
) -> StoreResult<bool> {
    if !wake(conn, run_id, now_ms).await? {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO signals (run_id, name, input, received_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(run_id.as_str())
    .bind(name)
    .bind(input)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Gives an open run a wake-up; false if the run is not open.
async fn wake(conn: &mut SqliteConnection, run_id: &RunId, now_ms: i64) -> StoreResult<bool> {
    let woken = sqlx::query(
        "UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $2 ELSE woken_at_ms END,
                         wakeups = wakeups + 1
          WHERE run_id = $1 AND status IN ('running', 'stuck')",
    )
    .bind(run_id.as_str())
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(woken == 1)
}

/// Applies what an activation commit does beyond the conditional append, in
/// the commit's transaction and after the append (which set `handled_wakeups`).
pub(super) async fn apply_lifecycle(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    lc: &LifecycleColumns,
) -> StoreResult<()> {
    let now = lc.now_ms;
    // Children first: a child started and cancelled (or orphaned by the
    // parent's close) within this activation is then already there.
    let mut refused = false;
    for child in &lc.new_children {
        let placed = place_run(conn, &child.run).await?;
        let failure = placed.child_failure(&child.run)?;
        refused |= failure.is_some();
        sqlx::query(
            "INSERT INTO children (parent_run_id, seq, workflow_id, child_run_id, parent_close_policy,
                                   resolved, failure, resolved_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(run_id.as_str())
        .bind(child.seq)
        .bind(&child.run.workflow_id)
        .bind((placed == Placed::New).then_some(child.run.run_id.as_str()))
        .bind(child.parent_close_policy)
        .bind(failure.is_some())
        .bind(failure.as_deref())
        .bind(failure.is_some().then_some(now))
        .execute(&mut *conn)
        .await?;
    }
    if !lc.consumed_children.is_empty() {
        sqlx::query(
            "UPDATE children SET consumed = 1
              WHERE parent_run_id = $1 AND seq IN (SELECT value FROM json_each($2))",
        )
        .bind(run_id.as_str())
        .bind(json_list(&lc.consumed_children)?)
        .execute(&mut *conn)
        .await?;
    }
    if !lc.cancelled_children.is_empty() {
        sqlx::query(
            "UPDATE runs
                SET cancel_requested_at_ms = CASE WHEN cancel_reason IS NULL THEN $3 ELSE cancel_requested_at_ms END,
                    cancel_reason = COALESCE(cancel_reason,
                        replace($4, $5, (SELECT p.workflow_id FROM runs p WHERE p.run_id = $1))),
                    woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $3 ELSE woken_at_ms END,
                    wakeups = wakeups + 1
              WHERE status IN ('running', 'stuck')
                AND run_id IN (SELECT child_run_id FROM children
                                WHERE parent_run_id = $1 AND resolved = 0 AND child_run_id IS NOT NULL
                                  AND seq IN (SELECT value FROM json_each($2)))",
        )
        .bind(run_id.as_str())
        .bind(json_list(&lc.cancelled_children)?)
        .bind(now)
        .bind(PARENT_CANCELS)
        .bind(WORKFLOW_ID_SLOT)
        .execute(&mut *conn)
        .await?;
    }
    if !lc.consumed_updates.is_empty() {
        sqlx::query(
            "UPDATE updates SET consumed = 1
              WHERE run_id = $1 AND update_id IN (SELECT value FROM json_each($2))",
        )
        .bind(run_id.as_str())
        .bind(json_list(&lc.consumed_updates)?)
        .execute(&mut *conn)
        .await?;
    }
    for (i, update_id) in lc.completed_update_ids.iter().enumerate() {
        sqlx::query(
            "UPDATE updates SET completed = 1, output = $3, failure = $4, completed_at_ms = $5
              WHERE run_id = $1 AND update_id = $2 AND completed = 0",
        )
        .bind(run_id.as_str())
        .bind(update_id)
        .bind(lc.completed_update_outputs[i].as_deref())
        .bind(lc.completed_update_failures[i].as_deref())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if lc.touches_own_row() {
        sqlx::query(
            "UPDATE runs
                SET cancel_delivered = CASE WHEN $2 THEN 1 ELSE cancel_delivered END,
                    status_line = COALESCE($3, status_line),
                    search_attributes = COALESCE($4, search_attributes)
              WHERE run_id = $1",
        )
        .bind(run_id.as_str())
        .bind(lc.consumed_cancel)
        .bind(lc.status_line.as_deref())
        .bind(lc.search_attributes.as_deref())
        .execute(&mut *conn)
        .await?;
    }
    if refused {
        // The refused child's resolution is a job: this run must activate again.
        sqlx::query(
            "UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $2 ELSE woken_at_ms END,
                             wakeups = wakeups + 1
              WHERE run_id = $1",
        )
        .bind(run_id.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if lc.close.is_some() {
        close(conn, run_id, lc).await?;
    }
    Ok(())
}

/// What closing a run does to its parent, its children, its updates and,
/// for continue-as-new, the run that carries on.
async fn close(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    lc: &LifecycleColumns,
) -> StoreResult<()> {
    let Some(close) = &lc.close else {
        return Ok(());
    };
    let now = lc.now_ms;
    if close.resolves_parent {
        let parents: Vec<String> = sqlx::query_scalar(
            "UPDATE children SET resolved = 1, output = $2, failure = $3, resolved_at_ms = $4
              WHERE child_run_id = $1 AND resolved = 0
             RETURNING parent_run_id",
        )
        .bind(run_id.as_str())
        .bind(close.output.as_deref())
        .bind(close.failure.as_deref())
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        for parent in parents {
            wake(conn, &RunId(parent), now).await?;
        }
    }
    sqlx::query(
        "UPDATE runs
            SET termination_reason = COALESCE(termination_reason,
                    replace($2, $3, (SELECT p.workflow_id FROM runs p WHERE p.run_id = $1))),
                status = 'running', stuck = NULL,
                woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $4 ELSE woken_at_ms END,
                wakeups = wakeups + 1
          WHERE status IN ('running', 'stuck')
            AND run_id IN (SELECT child_run_id FROM children
                            WHERE parent_run_id = $1 AND resolved = 0 AND child_run_id IS NOT NULL
                              AND parent_close_policy = 'terminate')",
    )
    .bind(run_id.as_str())
    .bind(PARENT_CLOSED)
    .bind(WORKFLOW_ID_SLOT)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE runs
            SET cancel_requested_at_ms = CASE WHEN cancel_reason IS NULL THEN $4 ELSE cancel_requested_at_ms END,
                cancel_reason = COALESCE(cancel_reason,
                    replace($2, $3, (SELECT p.workflow_id FROM runs p WHERE p.run_id = $1))),
                woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $4 ELSE woken_at_ms END,
                wakeups = wakeups + 1
          WHERE status IN ('running', 'stuck')
            AND run_id IN (SELECT child_run_id FROM children
                            WHERE parent_run_id = $1 AND resolved = 0 AND child_run_id IS NOT NULL
                              AND parent_close_policy = 'request_cancel')",
    )
    .bind(run_id.as_str())
    .bind(PARENT_CLOSED)
    .bind(WORKFLOW_ID_SLOT)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE updates SET completed = 1, failure = $2, completed_at_ms = $3
          WHERE run_id = $1 AND completed = 0",
    )
    .bind(run_id.as_str())
    .bind(&close.unanswered_update)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if let Some(next) = &close.next {
        sqlx::query("UPDATE runs SET continued_to = $2 WHERE run_id = $1")
            .bind(run_id.as_str())
            .bind(next.run_id.as_str())
            .execute(&mut *conn)
            .await?;
        let placed = place_run(conn, next).await?;
        if let Some(refusal) = placed.refusal(next) {
            return Err(rows::continue_refused(run_id, refusal));
        }
        sqlx::query("UPDATE signals SET run_id = $2 WHERE run_id = $1 AND consumed = 0")
            .bind(run_id.as_str())
            .bind(next.run_id.as_str())
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE children SET child_run_id = $2 WHERE child_run_id = $1 AND resolved = 0",
        )
        .bind(run_id.as_str())
        .bind(next.run_id.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The status of a run, to say why a message to it was refused.
async fn status_of(conn: &mut SqliteConnection, run_id: &RunId) -> StoreResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT status FROM runs WHERE run_id = $1")
            .bind(run_id.as_str())
            .fetch_optional(conn)
            .await?,
    )
}

pub(super) async fn send_update(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    update_id: &str,
    name: &str,
    input: &Value,
    now_ms: i64,
    max_in_flight: i64,
) -> StoreResult<()> {
    match status_of(conn, run_id).await? {
        Some(status) if RunStatus::parse(&status)?.is_open() => {}
        status => return Err(rows::not_open(run_id, status, "updates")),
    }
    // Room: fewer than `max_in_flight` unanswered, or this update already
    // known (a resend is a no-op, never refused).
    let room: bool = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM updates WHERE run_id = $1 AND NOT completed) < $3
                OR EXISTS (SELECT 1 FROM updates WHERE run_id = $1 AND update_id = $2)",
    )
    .bind(run_id.as_str())
    .bind(update_id)
    .bind(max_in_flight)
    .fetch_one(&mut *conn)
    .await?;
    if !room {
        return Err(rows::updates_full(run_id, max_in_flight as u64));
    }
    let inserted = sqlx::query(
        "INSERT INTO updates (run_id, update_id, id, name, input, received_at_ms)
         VALUES ($1, $2, (SELECT COALESCE(MAX(id), 0) + 1 FROM updates WHERE run_id = $1), $3, $4, $5)
         ON CONFLICT (run_id, update_id) DO NOTHING",
    )
    .bind(run_id.as_str())
    .bind(update_id)
    .bind(name)
    .bind(input.to_string())
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        wake(conn, run_id, now_ms).await?;
    }
    Ok(())
}

pub(super) async fn update_outcome(
    pool: &SqlitePool,
    run_id: &RunId,
    update_id: &str,
) -> StoreResult<Option<Result<Value, Failure>>> {
    let row: Option<(bool, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT completed, output, failure FROM updates WHERE run_id = $1 AND update_id = $2",
    )
    .bind(run_id.as_str())
    .bind(update_id)
    .fetch_optional(pool)
    .await?;
    let Some((completed, output, failure)) = row else {
        return Err(rows::unknown_update(run_id, update_id));
    };
    rows::update_outcome(run_id, update_id, completed, output, failure)
}

pub(super) async fn request_cancel(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    reason: &str,
    now_ms: i64,
) -> StoreResult<()> {
    let updated = sqlx::query(
        "UPDATE runs
            SET cancel_requested_at_ms = CASE WHEN cancel_reason IS NULL THEN $3 ELSE cancel_requested_at_ms END,
                cancel_reason = COALESCE(cancel_reason, $2),
                woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $3 ELSE woken_at_ms END,
                wakeups = wakeups + 1
          WHERE run_id = $1 AND status IN ('running', 'stuck')",
    )
    .bind(run_id.as_str())
    .bind(reason)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        let status = status_of(conn, run_id).await?;
        return Err(rows::not_open(run_id, status, "cancel requests"));
    }
    Ok(())
}

pub(super) async fn request_termination(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    reason: &str,
    now_ms: i64,
) -> StoreResult<()> {
    // A stuck run becomes running so that a claim picks it up and carries the termination out.
    let updated = sqlx::query(
        "UPDATE runs
            SET termination_reason = COALESCE(termination_reason, $2),
                status = 'running', stuck = NULL,
                woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $3 ELSE woken_at_ms END,
                wakeups = wakeups + 1
          WHERE run_id = $1 AND status IN ('running', 'stuck')",
    )
    .bind(run_id.as_str())
    .bind(reason)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        let status = status_of(conn, run_id).await?;
        return Err(rows::not_open(run_id, status, "termination requests"));
    }
    Ok(())
}

pub(super) async fn list_runs(pool: &SqlitePool, filter: &ListFilter) -> StoreResult<RunPage> {
    let mut q = QueryBuilder::<Sqlite>::new(select_run!("WHERE 1 = 1"));
    if let Some(workflow_type) = &filter.workflow_type {
        q.push(" AND workflow_type = ")
            .push_bind(workflow_type.as_str());
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(workflow_id) = &filter.workflow_id {
        q.push(" AND workflow_id = ")
            .push_bind(workflow_id.as_str());
    }
    if let Some(module) = &filter.module_sha256 {
        q.push(" AND module_sha256 = ").push_bind(module.as_str());
    }
    for (key, value) in &filter.search_attributes {
        // `json_each` types each value, so a string "1" never equals the number 1
        // (nor `true`, which SQLite would otherwise compare as 1).
        q.push(" AND EXISTS (SELECT 1 FROM json_each(runs.search_attributes) j WHERE j.key = ")
            .push_bind(key.as_str());
        match value {
            Value::Null => {
                q.push(" AND j.type = 'null'");
            }
            Value::Bool(true) => {
                q.push(" AND j.type = 'true'");
            }
            Value::Bool(false) => {
                q.push(" AND j.type = 'false'");
            }
            Value::Number(n) => {
                q.push(" AND j.type IN ('integer', 'real') AND j.atom = ");
                match n.as_i64() {
                    Some(i) => q.push_bind(i),
                    None => q.push_bind(n.as_f64().unwrap_or(f64::NAN)),
                };
            }
            Value::String(s) => {
                q.push(" AND j.type = 'text' AND j.atom = ")
                    .push_bind(s.as_str());
            }
            Value::Array(_) | Value::Object(_) => {
                q.push(" AND j.type IN ('array', 'object') AND json(j.value) = json(")
                    .push_bind(value.to_string())
                    .push(")");
            }
        }
        q.push(")");
    }
    if let Some(after) = &filter.after {
        // A row value, so that the index on (created_at_ms, run_id) bounds the scan.
        q.push(" AND (created_at_ms, run_id) < (")
            .push_bind(rows::int(after.created_at_ms))
            .push(", ")
            .push_bind(after.run_id.as_str())
            .push(")");
    }
    let limit = rows::list_limit(filter);
    // One more than the page: it tells whether a next page exists.
    q.push(" ORDER BY created_at_ms DESC, run_id DESC LIMIT ")
        .push_bind(limit as i64 + 1);
    let rows: Vec<RunRow> = q.build_query_as().fetch_all(pool).await?;
    rows::list_page(rows, limit)
}
