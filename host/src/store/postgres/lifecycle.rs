//! The workflow lifecycle on Postgres: placing new runs (starts, children,
//! continue-as-new), the part of an activation commit beyond the conditional
//! append, messages to runs (updates, cancel and termination requests), and
//! listing runs.
//!
//! The unique index `runs_open_workflow_id` is the arbiter of who may open a
//! workflow id: a run is inserted with `ON CONFLICT … DO NOTHING` on it, which
//! waits for a concurrent insert of the same id to commit or roll back, so two
//! starts never both succeed and neither has to lock anything first.
//!
//! A commit that carries lifecycle work runs as a transaction: the runs it may
//! touch locked in one global order ([`begin`]), the conditional append, then
//! the statements here, each a handful of data-modifying `WITH` clauses that
//! touch disjoint rows.

use crate::model::{Failure, RunId};
use crate::store::rows::{
    self, LifecycleColumns, NewRunColumns, PARENT_CANCELS, PARENT_CLOSED, Placed, RunRow,
    WORKFLOW_ID_SLOT, select_run,
};
use crate::store::{ListFilter, RunPage, StoreError, StoreResult};
use serde_json::Value;
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres, QueryBuilder};

/// How often placing a run retries when the open run that blocked it closes before it could be named.
const PLACE_ATTEMPTS: usize = 3;

/// Inserts a run with its event 1 (and its start signal) in one statement,
/// unless its workflow id has an open run or the reuse policy forbids
/// following the last closed one.
pub(super) async fn place_run(conn: &mut PgConnection, run: &NewRunColumns) -> StoreResult<Placed> {
    for _ in 0..PLACE_ATTEMPTS {
        // `last` is the newest closed run (a run that continued as new sorts
        // after its successor created the same millisecond); it is read only
        // when the reuse policy needs it.
        let statement = sqlx::query_as(
            "WITH last AS (
                 SELECT run_id, status FROM runs
                  WHERE $20::boolean AND workflow_id = $2 AND status NOT IN ('running', 'stuck')
                  ORDER BY created_at_ms DESC, status = 'continued_as_new', run_id DESC
                  LIMIT 1
             ), ins AS (
                 INSERT INTO runs (run_id, workflow_id, workflow_type, module_sha256, status, last_seq,
                                   last_hash, created_at_ms, wakeups, handled_wakeups, woken_at_ms,
                                   parent_workflow_id, parent_run_id, parent_seq, search_attributes, memo,
                                   deadline_ms, execution_deadline_ms, run_timeout_ms)
                 SELECT $1, $2, $3, $4, 'running', 1, $5, $6, 1, 0, $6,
                        $10, $11, $12, $13, $14, $15, $16, $17
                  WHERE NOT EXISTS (SELECT 1 FROM last WHERE NOT (status = ANY($21::text[])))
                 ON CONFLICT (workflow_id) WHERE status IN ('running', 'stuck') DO NOTHING
                 RETURNING run_id
             ), ev AS (
                 INSERT INTO events (run_id, seq, kind, payload, recorded_at_ms, hash)
                 SELECT run_id, 1, $7, $8, $9, $5 FROM ins
             ), sig AS (
                 INSERT INTO signals (run_id, name, input, received_at_ms)
                 SELECT run_id, $18, $19, $6 FROM ins WHERE $18::text IS NOT NULL
             )
             SELECT EXISTS (SELECT 1 FROM ins), (SELECT run_id FROM last), (SELECT status FROM last)",
        )
        .bind(run.run_id.as_str());
        let placed: Result<(bool, Option<String>, Option<String>), sqlx::Error> =
            bind_new_run(statement, run)
                .bind(run.signal_name.as_deref())
                .bind(run.signal_input.as_deref())
                .bind(run.checks_reuse())
                .bind(&run.reusable_after)
                .fetch_one(&mut *conn)
                .await;
        let (inserted, last_run, last_status) = match placed {
            Ok(row) => row,
            Err(e) => {
                return Err(match rows::unique_violation(&e) {
                    Some(_) => StoreError::Conflict {
                        run_id: run.run_id.clone(),
                        reason: "a run with this id already exists; run ids must be unique".into(),
                    },
                    None => e.into(),
                });
            }
        };
        if inserted {
            return Ok(Placed::New);
        }
        // A new statement sees what committed since: the open run that won the index.
        let open: Option<String> = sqlx::query_scalar(
            "SELECT run_id FROM runs WHERE workflow_id = $1 AND status IN ('running', 'stuck')",
        )
        .bind(&run.workflow_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(open) = open {
            return Ok(Placed::Open(RunId(open)));
        }
        if let (Some(run_id), Some(status)) = (last_run, last_status)
            && !run.reusable_after.contains(&status.as_str())
        {
            return Ok(Placed::Reused {
                run_id: RunId(run_id),
                status,
            });
        }
        // The open run closed in between: try again.
    }
    Err(StoreError::Unavailable(format!(
        "workflow id {:?} keeps changing hands while run {} starts; try again",
        run.workflow_id, run.run_id
    )))
}

/// Queues a signal for an open run and wakes it; false if the run is not open (any more).
pub(super) async fn queue_signal(
    conn: &mut PgConnection,
    run_id: &RunId,
    name: &str,
    input: &str,
    now_ms: i64,
) -> StoreResult<bool> {
    let id: Option<i64> = sqlx::query_scalar(
        "WITH r AS (
             UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $4 ELSE woken_at_ms END,
                             wakeups = wakeups + 1
              WHERE run_id = $1 AND status IN ('running', 'stuck')
             RETURNING run_id
         )
         INSERT INTO signals (run_id, name, input, received_at_ms)
         SELECT run_id, $2, $3, $4 FROM r
         RETURNING id",
    )
    .bind(run_id.as_str())
    .bind(name)
    .bind(input)
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id.is_some())
}

/// Opens the transaction of a commit with lifecycle work. When the commit will
/// touch other runs' rows (a closing run wakes its parent and polices its
/// children; a cancel reaches children), it first locks every run it may
/// touch — itself, its parent, its unresolved children — in `run_id` order.
/// Otherwise a parent closing while its child closes would each hold its own
/// row (the conditional append) and wait for the other's: a deadlock that
/// Postgres breaks only after `deadlock_timeout`, by failing one commit.
pub(super) async fn begin(
    pool: &PgPool,
    run_id: &RunId,
    lc: &LifecycleColumns,
) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    if lc.close.is_some() || !lc.cancelled_children.is_empty() {
        sqlx::query(LOCK_FAMILY)
            .bind(run_id.as_str())
            .fetch_all(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// Binds a new run's columns from its workflow id to its run timeout, in the
/// order [`place_run`] and the Postgres store's one-statement start use.
pub(super) fn bind_new_run<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    run: &'q NewRunColumns,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(&run.workflow_id)
        .bind(&run.workflow_type)
        .bind(&run.module_sha256)
        .bind(&run.hash)
        .bind(run.now_ms)
        .bind(run.event_kind)
        .bind(&run.event_payload)
        .bind(run.event_recorded_at_ms)
        .bind(run.parent_workflow_id.as_deref())
        .bind(run.parent_run_id.as_deref())
        .bind(run.parent_seq)
        .bind(&run.search_attributes)
        .bind(run.memo.as_deref())
        .bind(run.deadline_ms)
        .bind(run.execution_deadline_ms)
        .bind(run.run_timeout_ms)
}

/// Locks a run, its parent and its unresolved children (`$1` the run):
/// the ids first, sorted, then each run by its key, in that order. The key
/// matters: `run_id = $1 OR run_id IN (…)` reads the whole table, and so does
/// `run_id = ANY (…)` while the planner's statistics still say it is small.
const LOCK_FAMILY: &str = "SELECT l.run_id
   FROM (SELECT DISTINCT id
           FROM unnest(ARRAY[$1]
                       || ARRAY(SELECT parent_run_id FROM runs
                                 WHERE run_id = $1 AND parent_run_id IS NOT NULL)
                       || ARRAY(SELECT child_run_id FROM children
                                 WHERE parent_run_id = $1 AND NOT resolved
                                   AND child_run_id IS NOT NULL)) AS id
          ORDER BY id) ids
  CROSS JOIN LATERAL (SELECT run_id FROM runs WHERE run_id = ids.id FOR NO KEY UPDATE) l";

/// Applies what an activation commit does beyond the conditional append, in
/// the commit's transaction and after the append (which set `handled_wakeups`
/// and holds the run's row lock).
pub(super) async fn apply_lifecycle(
    conn: &mut PgConnection,
    run_id: &RunId,
    lc: &LifecycleColumns,
    reaches_others: bool,
) -> StoreResult<()> {
    let now = lc.now_ms;
    // Children first: a child started and cancelled (or orphaned by the
    // parent's close) within this activation is then already there.
    let mut refused = false;
    if !lc.new_children.is_empty() {
        let n = lc.new_children.len();
        let (mut seqs, mut ids, mut child_runs, mut policies, mut failures) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for child in &lc.new_children {
            let placed = place_run(conn, &child.run).await?;
            let failure = placed.child_failure(&child.run)?;
            refused |= failure.is_some();
            seqs.push(child.seq);
            ids.push(child.run.workflow_id.as_str());
            child_runs.push((placed == Placed::New).then_some(child.run.run_id.as_str()));
            policies.push(child.parent_close_policy);
            failures.push(failure);
        }
        sqlx::query(
            "INSERT INTO children (parent_run_id, seq, workflow_id, child_run_id, parent_close_policy,
                                   resolved, failure, resolved_at_ms)
             SELECT $1, c.seq, c.workflow_id, c.child_run_id, c.policy, c.failure IS NOT NULL, c.failure,
                    CASE WHEN c.failure IS NULL THEN NULL ELSE $2::bigint END
               FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
                    AS c (seq, workflow_id, child_run_id, policy, failure)",
        )
        .bind(run_id.as_str())
        .bind(now)
        .bind(&seqs)
        .bind(&ids)
        .bind(&child_runs)
        .bind(&policies)
        .bind(&failures)
        .execute(&mut *conn)
        .await?;
    }
    if !lc.consumed_children.is_empty() || !lc.cancelled_children.is_empty() {
        sqlx::query(
            "WITH consumed AS (
                 UPDATE children SET consumed = true WHERE parent_run_id = $1 AND seq = ANY($2::bigint[])
             ), cancelled AS (
                 UPDATE runs
                    SET cancel_requested_at_ms = CASE WHEN cancel_reason IS NULL THEN $4 ELSE cancel_requested_at_ms END,
                        cancel_reason = COALESCE(cancel_reason,
                            replace($5, $6, (SELECT p.workflow_id FROM runs p WHERE p.run_id = $1))),
                        woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $4 ELSE woken_at_ms END,
                        wakeups = wakeups + 1
                  WHERE status IN ('running', 'stuck')
                    AND run_id IN (SELECT child_run_id FROM children
                                    WHERE parent_run_id = $1 AND NOT resolved AND child_run_id IS NOT NULL
                                      AND seq = ANY($3::bigint[]))
             )
             SELECT 1",
        )
        .bind(run_id.as_str())
        .bind(&lc.consumed_children)
        .bind(&lc.cancelled_children)
        .bind(now)
        .bind(PARENT_CANCELS)
        .bind(WORKFLOW_ID_SLOT)
        .execute(&mut *conn)
        .await?;
    }
    if !lc.consumed_updates.is_empty() {
        sqlx::query(
            "UPDATE updates SET consumed = true WHERE run_id = $1 AND update_id = ANY($2::text[])",
        )
        .bind(run_id.as_str())
        .bind(&lc.consumed_updates)
        .execute(&mut *conn)
        .await?;
    }
    if !lc.completed_update_ids.is_empty() {
        sqlx::query(
            "UPDATE updates u SET completed = true, output = x.output, failure = x.failure, completed_at_ms = $2
               FROM UNNEST($3::text[], $4::text[], $5::text[]) AS x (update_id, output, failure)
              WHERE u.run_id = $1 AND u.update_id = x.update_id AND NOT u.completed",
        )
        .bind(run_id.as_str())
        .bind(now)
        .bind(&lc.completed_update_ids)
        .bind(&lc.completed_update_outputs)
        .bind(&lc.completed_update_failures)
        .execute(&mut *conn)
        .await?;
    }
    if lc.touches_own_row() || refused {
        // A refused child's resolution is a job: the run must activate again.
        sqlx::query(
            "UPDATE runs
                SET cancel_delivered = cancel_delivered OR $2,
                    status_line = COALESCE($3, status_line),
                    search_attributes = COALESCE($4, search_attributes),
                    woken_at_ms = CASE WHEN $5 AND wakeups = handled_wakeups THEN $6 ELSE woken_at_ms END,
                    wakeups = wakeups + CASE WHEN $5 THEN 1 ELSE 0 END
              WHERE run_id = $1",
        )
        .bind(run_id.as_str())
        .bind(lc.consumed_cancel)
        .bind(lc.status_line.as_deref())
        .bind(lc.search_attributes.as_deref())
        .bind(refused)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(close) = &lc.close {
        if let Some(next) = &close.next {
            let placed = place_run(conn, next).await?;
            if let Some(refusal) = placed.refusal(next) {
                return Err(rows::continue_refused(run_id, refusal));
            }
        }
        // A close that reaches no one else (no parent waiting, no child its
        // policy reaches, no update unanswered, no next run) has nothing more
        // to write: the append closed the run.
        if close.next.is_some() || reaches_others || !lc.new_children.is_empty() {
            // Each clause touches its own rows: the parent's `children` row and
            // run, the children's runs, this run's updates, and for continue-as-new
            // this run's row, its signals and the parent's row again (instead of resolving it).
            sqlx::query(
                "WITH me AS (
                     SELECT workflow_id FROM runs WHERE run_id = $1
                 ), resolved AS (
                     UPDATE children SET resolved = true, output = $2, failure = $3, resolved_at_ms = $4
                      WHERE $5::boolean AND child_run_id = $1 AND NOT resolved
                     RETURNING parent_run_id
                 ), parents AS (
                     UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $4 ELSE woken_at_ms END,
                                     wakeups = wakeups + 1
                      WHERE run_id IN (SELECT parent_run_id FROM resolved) AND status IN ('running', 'stuck')
                 ), orphans AS (
                     SELECT child_run_id, parent_close_policy FROM children
                      WHERE parent_run_id = $1 AND NOT resolved AND child_run_id IS NOT NULL
                        AND parent_close_policy IN ('terminate', 'request_cancel')
                 ), policed AS (
                     UPDATE runs r
                        SET termination_reason = CASE WHEN o.parent_close_policy = 'terminate'
                                THEN COALESCE(r.termination_reason, replace($6, $7, me.workflow_id))
                                ELSE r.termination_reason END,
                            status = CASE WHEN o.parent_close_policy = 'terminate' THEN 'running' ELSE r.status END,
                            stuck = CASE WHEN o.parent_close_policy = 'terminate' THEN NULL ELSE r.stuck END,
                            cancel_requested_at_ms = CASE
                                WHEN o.parent_close_policy = 'request_cancel' AND r.cancel_reason IS NULL THEN $4
                                ELSE r.cancel_requested_at_ms END,
                            cancel_reason = CASE WHEN o.parent_close_policy = 'request_cancel'
                                THEN COALESCE(r.cancel_reason, replace($6, $7, me.workflow_id))
                                ELSE r.cancel_reason END,
                            woken_at_ms = CASE WHEN r.wakeups = r.handled_wakeups THEN $4 ELSE r.woken_at_ms END,
                            wakeups = r.wakeups + 1
                       FROM orphans o, me
                      WHERE r.run_id = o.child_run_id AND r.status IN ('running', 'stuck')
                 ), unanswered AS (
                     UPDATE updates SET completed = true, failure = $8, completed_at_ms = $4
                      WHERE run_id = $1 AND NOT completed
                 ), continued AS (
                     UPDATE runs SET continued_to = $9 WHERE $9::text IS NOT NULL AND run_id = $1
                 ), moved AS (
                     UPDATE signals SET run_id = $9 WHERE $9::text IS NOT NULL AND run_id = $1 AND NOT consumed
                 ), followed AS (
                     UPDATE children SET child_run_id = $9
                      WHERE $9::text IS NOT NULL AND child_run_id = $1 AND NOT resolved
                 )
                 SELECT 1",
            )
            .bind(run_id.as_str())
            .bind(close.output.as_deref())
            .bind(close.failure.as_deref())
            .bind(now)
            .bind(close.resolves_parent)
            .bind(PARENT_CLOSED)
            .bind(WORKFLOW_ID_SLOT)
            .bind(&close.unanswered_update)
            .bind(close.next.as_ref().map(|n| n.run_id.as_str()))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

pub(super) async fn send_update(
    conn: &mut PgConnection,
    run_id: &RunId,
    update_id: &str,
    name: &str,
    input: &Value,
    now_ms: i64,
    max_in_flight: i64,
) -> StoreResult<()> {
    // `r` locks the open run, so it cannot close (and miss this update when it
    // fails the unanswered ones) before the update is stored. `room`: fewer
    // than `max_in_flight` updates unanswered, or this one already known (a
    // resend is a no-op, never refused).
    let (open, status, room): (i64, Option<String>, bool) = sqlx::query_as(
        "WITH r AS (
             SELECT run_id FROM runs WHERE run_id = $1 AND status IN ('running', 'stuck') FOR NO KEY UPDATE
         ), room AS (
             SELECT (SELECT count(*) FROM updates WHERE run_id = $1 AND NOT completed) < $6
                    OR EXISTS (SELECT 1 FROM updates WHERE run_id = $1 AND update_id = $2) AS ok
         ), ins AS (
             INSERT INTO updates (run_id, update_id, name, input, received_at_ms)
             SELECT run_id, $2, $3, $4, $5 FROM r WHERE (SELECT ok FROM room)
             ON CONFLICT (run_id, update_id) DO NOTHING
             RETURNING run_id
         ), w AS (
             UPDATE runs SET woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $5 ELSE woken_at_ms END,
                             wakeups = wakeups + 1
              WHERE run_id IN (SELECT run_id FROM ins)
         )
         SELECT (SELECT count(*) FROM r), (SELECT status FROM runs WHERE run_id = $1), (SELECT ok FROM room)",
    )
    .bind(run_id.as_str())
    .bind(update_id)
    .bind(name)
    .bind(input.to_string())
    .bind(now_ms)
    .bind(max_in_flight)
    .fetch_one(&mut *conn)
    .await?;
    if open != 1 {
        return Err(rows::not_open(run_id, status, "updates"));
    }
    if !room {
        return Err(rows::updates_full(run_id, max_in_flight as u64));
    }
    Ok(())
}

pub(super) async fn update_outcome(
    pool: &PgPool,
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
    pool: &PgPool,
    run_id: &RunId,
    reason: &str,
    now_ms: i64,
) -> StoreResult<()> {
    let (updated, status): (i64, Option<String>) = sqlx::query_as(
        "WITH r AS (
             UPDATE runs
                SET cancel_requested_at_ms = CASE WHEN cancel_reason IS NULL THEN $3 ELSE cancel_requested_at_ms END,
                    cancel_reason = COALESCE(cancel_reason, $2),
                    woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $3 ELSE woken_at_ms END,
                    wakeups = wakeups + 1
              WHERE run_id = $1 AND status IN ('running', 'stuck')
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM r), (SELECT status FROM runs WHERE run_id = $1)",
    )
    .bind(run_id.as_str())
    .bind(reason)
    .bind(now_ms)
    .fetch_one(pool)
    .await?;
    if updated != 1 {
        return Err(rows::not_open(run_id, status, "cancel requests"));
    }
    Ok(())
}

pub(super) async fn request_termination(
    pool: &PgPool,
    run_id: &RunId,
    reason: &str,
    now_ms: i64,
) -> StoreResult<()> {
    // A stuck run becomes running so that a claim picks it up and carries the termination out.
    let (updated, status): (i64, Option<String>) = sqlx::query_as(
        "WITH r AS (
             UPDATE runs
                SET termination_reason = COALESCE(termination_reason, $2),
                    status = 'running', stuck = NULL,
                    woken_at_ms = CASE WHEN wakeups = handled_wakeups THEN $3 ELSE woken_at_ms END,
                    wakeups = wakeups + 1
              WHERE run_id = $1 AND status IN ('running', 'stuck')
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM r), (SELECT status FROM runs WHERE run_id = $1)",
    )
    .bind(run_id.as_str())
    .bind(reason)
    .bind(now_ms)
    .fetch_one(pool)
    .await?;
    if updated != 1 {
        return Err(rows::not_open(run_id, status, "termination requests"));
    }
    Ok(())
}

pub(super) async fn list_runs(pool: &PgPool, filter: &ListFilter) -> StoreResult<RunPage> {
    let mut q = QueryBuilder::<Postgres>::new("");
    let limit = push_list(&mut q, filter);
    let rows: Vec<RunRow> = q.build_query_as().fetch_all(pool).await?;
    rows::list_page(rows, limit)
}

/// Pushes the query of a page of `filter` onto `q`; returns the page's limit
/// (the query reads one row more).
fn push_list(q: &mut QueryBuilder<Postgres>, filter: &ListFilter) -> usize {
    q.push(select_run!("WHERE true"));
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
        // jsonb equality is typed: the string "1" never equals the number 1.
        q.push(" AND (search_attributes::jsonb -> ")
            .push_bind(key.as_str())
            .push("::text) = ")
            .push_bind(value.to_string())
            .push("::jsonb");
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
    limit
}

#[cfg(test)]
mod tests {
    use super::{LOCK_FAMILY, push_list};
    use crate::model::RunId;
    use crate::store::postgres::PostgresStore;
    use crate::store::{ListCursor, ListFilter, RunStatus};
    use sqlx::{Postgres, QueryBuilder};

    /// A store in a new schema of `DATABASE_URL`'s database, and the schema.
    async fn scratch(label: &str) -> (PostgresStore, String) {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!(
            "weft_test_{label}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
        );
        let store = PostgresStore::connect_in_schema(&url, &schema)
            .await
            .expect("connect to Postgres (DATABASE_URL)");
        (store, schema)
    }

    async fn drop_scratch(store: PostgresStore, schema: &str) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(&store.pool)
        .await
        .expect("drop the test schema");
        store.close().await;
    }

    /// The plan of [`LOCK_FAMILY`] for one run.
    async fn plan(store: &PostgresStore) -> String {
        let lines: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {LOCK_FAMILY}")))
                .bind("a-run")
                .fetch_all(&store.pool)
                .await
                .expect("explain the lock");
        lines.join("\n")
    }

    /// Every close takes this lock: a plan that reads the whole `runs`
    /// table makes each close cost as much as the table is long.
    #[tokio::test]
    async fn closing_locks_its_runs_by_their_key_whatever_the_statistics_say() {
        let (store, schema) = scratch("lock_plan").await;
        // A new table: the planner has no statistics and guesses it small.
        let fresh = plan(&store).await;
        assert!(!fresh.contains("Seq Scan on runs"), "{fresh}");
        sqlx::query(
            "INSERT INTO runs (run_id, workflow_id, workflow_type, module_sha256, status,
                               last_seq, last_hash, created_at_ms, closed_at_ms)
             SELECT 'run-' || i, 'wf-' || i, 'hello', 'sha', 'completed', 3, 'h', i, i
               FROM generate_series(1, 5000) AS i",
        )
        .execute(&store.pool)
        .await
        .expect("insert runs");
        sqlx::query("ANALYZE runs")
            .execute(&store.pool)
            .await
            .expect("analyze");
        let known = plan(&store).await;
        assert!(!known.contains("Seq Scan on runs"), "{known}");
        drop_scratch(store, &schema).await;
    }

    /// The plan of a page of `filter`'s list.
    async fn list_plan(store: &PostgresStore, filter: &ListFilter) -> String {
        let mut q = QueryBuilder::<Postgres>::new("EXPLAIN ");
        push_list(&mut q, filter);
        let lines: Vec<String> = q
            .build_query_scalar()
            .fetch_all(&store.pool)
            .await
            .expect("explain a page of the list");
        lines.join("\n")
    }

    /// Every page of the list, the first and the ones after a cursor, reads
    /// an index in the list's order and stops after its rows: never the whole
    /// `runs` table, never a sort of it, however many runs there are.
    #[tokio::test]
    async fn a_page_of_the_list_reads_an_index_not_the_table() {
        let (store, schema) = scratch("list_plan").await;
        sqlx::query(
            "INSERT INTO runs (run_id, workflow_id, workflow_type, module_sha256, status,
                               last_seq, last_hash, created_at_ms, closed_at_ms)
             SELECT 'run-' || i, 'wf-' || i, CASE WHEN i % 2 = 0 THEN 'hello' ELSE 'bye' END,
                    'sha', CASE WHEN i % 10 = 0 THEN 'running' ELSE 'completed' END, 3, 'h', i,
                    CASE WHEN i % 10 = 0 THEN NULL ELSE i END
               FROM generate_series(1, 20000) AS i",
        )
        .execute(&store.pool)
        .await
        .expect("insert runs");
        sqlx::query("ANALYZE runs")
            .execute(&store.pool)
            .await
            .expect("analyze");
        let after = Some(ListCursor {
            created_at_ms: 15_000,
            run_id: RunId("run-15000".into()),
        });
        let filters = [
            ListFilter::default(),
            ListFilter {
                after: after.clone(),
                ..ListFilter::default()
            },
            ListFilter {
                limit: 1000,
                after: after.clone(),
                ..ListFilter::default()
            },
            ListFilter {
                workflow_type: Some("hello".into()),
                after: after.clone(),
                ..ListFilter::default()
            },
            ListFilter {
                status: Some(RunStatus::Completed),
                after,
                ..ListFilter::default()
            },
        ];
        for filter in &filters {
            let plan = list_plan(&store, filter).await;
            assert!(!plan.contains("Seq Scan"), "{filter:?}:\n{plan}");
            assert!(!plan.contains("Sort"), "{filter:?}:\n{plan}");
        }
        drop_scratch(store, &schema).await;
    }
}
