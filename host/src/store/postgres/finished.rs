//! Results with the next activation they let a warm run commit, many runs
//! in one statement: what [`end_and_append`](super::end_and_append) writes
//! for one, written for a batch (see [`batch`](super::batch)).

use super::batch::{Lanes, Pools};
use super::many::{self, HEAD_NAMES, HEADS, Heads, Params, Rows};
use super::{Clauses, Ended, StoreResult, end_and_append, int, statement};
use crate::store::rows::{AttemptColumns, AttemptEnd, CommitColumns};
use crate::store::{ActivationCommit, FinishedAttempt};
use sqlx::PgPool;
use std::collections::HashSet;

/// An attempt's result and the activation prepared for it, in columns.
pub(in crate::store) struct Finish {
    pub(in crate::store) finished: FinishedAttempt,
    pub(in crate::store) columns: AttemptColumns,
    pub(in crate::store) next: ActivationCommit,
    pub(in crate::store) c: CommitColumns,
}

/// What a [`Finish`] did, with its activation back in columns (a close
/// that owes other runs commits it again, the ordinary way).
pub(in crate::store) struct Finished {
    pub(in crate::store) ended: Ended,
    pub(in crate::store) next: ActivationCommit,
    pub(in crate::store) c: CommitColumns,
}

/// The lanes that record results with the activation they let commit.
/// One run's results never share a statement: it would lock and update the
/// run's row twice.
pub(in crate::store) fn lanes(pools: Pools) -> Lanes<Finish, Finished> {
    Lanes::on(
        pools,
        "results",
        |f| [f.finished.run_id.as_str(); 2],
        |pools, finishes| async move { finish_all(&pools, finishes).await },
    )
}

/// Records `finishes`: one alone as `end_and_append` does, several in one
/// statement. Should that statement fail, nothing of it was written, and
/// each is recorded alone to get its own answer.
async fn finish_all(pools: &Pools, finishes: Vec<Finish>) -> Vec<StoreResult<Finished>> {
    if finishes.len() > 1 {
        match finish_many(&pools.many, &finishes).await {
            Ok(outcome) => {
                return finishes
                    .into_iter()
                    .map(|f| {
                        let run = f.finished.run_id.as_str();
                        let ended = outcome.ended.contains(run);
                        let ended = Ended {
                            ended,
                            applied: outcome.applied.contains(run),
                            reaches_others: ended && outcome.reaches_others.contains(run),
                        };
                        Ok(Finished {
                            ended,
                            next: f.next,
                            c: f.c,
                        })
                    })
                    .collect();
            }
            Err(e) => {
                tracing::debug!(error = %e, results = finishes.len(), "recording a batch of results failed; recording each alone");
            }
        }
    }
    let mut out = Vec::with_capacity(finishes.len());
    for f in finishes {
        out.push(finish_one(&pools.one, f).await);
    }
    out
}

async fn finish_one(pool: &PgPool, f: Finish) -> StoreResult<Finished> {
    let mut conn = pool.acquire().await?;
    let end = AttemptEnd::with_columns(&f.finished, f.columns);
    let ended = end_and_append(&mut conn, &end, &f.finished, &f.next, &f.c).await?;
    Ok(Finished {
        ended,
        next: f.next,
        c: f.c,
    })
}

/// The runs of a batch by what its statement did to each.
struct Outcome {
    ended: HashSet<String>,
    applied: HashSet<String>,
    reaches_others: HashSet<String>,
}

/// The statement of a batch, by which clauses it needs: the runs and their
/// results from `$1`–`$24`, then their rows (see [`many::sql`]). Each
/// clause is [`end_and_append`]'s, joined by run instead of bound to one.
fn sql(clauses: Clauses) -> &'static str {
    statement("end_and_append_many", clauses, || {
        let reaches = many::reaches_others("r.run_id", clauses);
        let rows = many::sql("r", clauses, &mut Params::from(25), Some("a.seq <> i.seq"));
        format!(
            "WITH i AS (
                 SELECT * FROM UNNEST({HEADS}, $12::bigint[], $13::bigint[], $14::text[], $15::text[],
                                      $16::text[], $17::bigint[], $18::bigint[], $19::boolean[], $20::text[],
                                      $21::bigint[], $22::bigint[], $23::bigint[], $24::boolean[])
                   AS i ({HEAD_NAMES}, seq, task_lease_token, a_status, a_output,
                         a_failure, resolved_at, retry_at, is_final, end_status,
                         expired_at, now, attempt, consumes_result)
             ), locked AS (
                 -- Each run locked in run_id order, as every statement that
                 -- locks several runs takes them.
                 SELECT r.run_id,
                        r.status = 'running' AND r.lease_token = i.lease_token
                        AND r.last_seq = i.expected_last_seq
                        AND r.wakeups = r.handled_wakeups AND r.handled_wakeups + 1 = i.handled_wakeups
                        AND i.is_final
                        AND (SELECT a.attempt FROM activity_tasks a WHERE a.run_id = r.run_id AND a.seq = i.seq)
                            IS NOT DISTINCT FROM i.attempt AS prepared_for,
                        {reaches} AS reaches_others
                   FROM runs r JOIN i ON i.run_id = r.run_id
                  ORDER BY r.run_id
                    FOR NO KEY UPDATE OF r
             ), run AS (
                 SELECT run_id, prepared_for AND NOT reaches_others AS fits FROM locked
             ), t AS (
                 UPDATE activity_tasks a
                    SET status = i.a_status, lease_owner = NULL, lease_expires_at_ms = NULL,
                        output = i.a_output, failure = i.a_failure, resolved_at_ms = i.resolved_at,
                        visible_at_ms = COALESCE(i.retry_at, a.visible_at_ms),
                        heartbeat_deadline_ms = NULL,
                        start_deadline_ms = CASE WHEN i.retry_at IS NOT NULL AND a.schedule_to_start_ms > 0
                                                 THEN i.retry_at + a.schedule_to_start_ms END,
                        -- The task is marked here when its result is consumed:
                        -- one statement may update a row only once.
                        consumed = a.consumed OR (run.fits AND i.consumes_result)
                   FROM i JOIN run ON run.run_id = i.run_id
                  WHERE a.run_id = i.run_id AND a.seq = i.seq AND a.lease_token = i.task_lease_token
                    AND a.status = i.end_status
                    AND (i.expired_at IS NULL OR a.close_deadline_ms <= i.expired_at
                         OR a.start_deadline_ms <= i.expired_at OR a.heartbeat_deadline_ms <= i.expired_at)
                 RETURNING a.run_id
             ), w AS (
                 UPDATE runs
                    SET woken_at_ms = CASE WHEN runs.wakeups = runs.handled_wakeups THEN i.now
                                           ELSE runs.woken_at_ms END,
                        wakeups = runs.wakeups + 1
                   FROM i JOIN run ON run.run_id = i.run_id
                  WHERE runs.run_id = i.run_id AND i.is_final AND NOT run.fits
                    AND i.run_id IN (SELECT run_id FROM t)
             ), r AS (
                 -- As in `end_and_append`: `woken_at_ms` keeps its value,
                 -- so that a step can be an update in place (HOT).
                 UPDATE runs
                    SET last_seq = i.last_seq, last_hash = i.last_hash, handled_wakeups = i.handled_wakeups,
                        wakeups = runs.wakeups + 1,
                        lease_owner = NULL, lease_expires_at_ms = 0,
                        status = i.status, output = i.output, failure = i.failure,
                        closed_at_ms = i.closed_at_ms
                   FROM i JOIN run ON run.run_id = i.run_id
                  WHERE runs.run_id = i.run_id AND runs.lease_token = i.lease_token
                    AND runs.last_seq = i.expected_last_seq AND runs.status = 'running'
                    AND run.fits AND i.run_id IN (SELECT run_id FROM t)
                 RETURNING runs.run_id
             ), {rows}
             SELECT ARRAY(SELECT run_id FROM t), ARRAY(SELECT run_id FROM r),
                    ARRAY(SELECT run_id FROM locked WHERE prepared_for AND reaches_others)"
        )
    })
}

/// The results of a batch, one entry per run: `$12`–`$24`.
#[derive(Default)]
struct Results<'a> {
    seq: Vec<i64>,
    task_lease_token: Vec<i64>,
    a_status: Vec<&'static str>,
    a_output: Vec<Option<&'a str>>,
    a_failure: Vec<Option<&'a str>>,
    resolved_at: Vec<Option<i64>>,
    retry_at: Vec<Option<i64>>,
    is_final: Vec<bool>,
    end_status: Vec<&'static str>,
    expired_at: Vec<Option<i64>>,
    now: Vec<i64>,
    attempt: Vec<i64>,
    consumes_result: Vec<bool>,
}

/// Records `finishes` in one statement.
async fn finish_many(pool: &PgPool, finishes: &[Finish]) -> StoreResult<Outcome> {
    let (mut heads, mut rows, mut results) =
        (Heads::default(), Rows::default(), Results::default());
    for f in finishes {
        let (finished, a, c) = (&f.finished, &f.columns, &f.c);
        heads.push(&f.next, c);
        rows.push(f.next.run_id.as_str(), c, Some(finished.seq));
        results.seq.push(i64::from(finished.seq));
        results.task_lease_token.push(finished.lease_token);
        results.a_status.push(a.status);
        results.a_output.push(a.output.as_deref());
        results.a_failure.push(a.failure.as_deref());
        results.resolved_at.push(a.resolved_at_ms);
        results.retry_at.push(a.retry_at_ms);
        results.is_final.push(a.is_final);
        // A reported end: the attempt must still be running.
        results.end_status.push("running");
        results.expired_at.push(None);
        results.now.push(int(finished.now_ms));
        results.attempt.push(i64::from(finished.attempt));
        results
            .consumes_result
            .push(c.consumed_activities.contains(&i64::from(finished.seq)));
    }
    let clauses = rows.clauses();
    let query = heads
        .bind(sqlx::query_as(sql(clauses)))
        .bind(&results.seq)
        .bind(&results.task_lease_token)
        .bind(&results.a_status)
        .bind(&results.a_output)
        .bind(&results.a_failure)
        .bind(&results.resolved_at)
        .bind(&results.retry_at)
        .bind(&results.is_final)
        .bind(&results.end_status)
        .bind(&results.expired_at)
        .bind(&results.now)
        .bind(&results.attempt)
        .bind(&results.consumes_result);
    let (ended, applied, reaches_others): (Vec<String>, Vec<String>, Vec<String>) =
        rows.bind(query, clauses).fetch_one(pool).await?;
    Ok(Outcome {
        ended: ended.into_iter().collect(),
        applied: applied.into_iter().collect(),
        reaches_others: reaches_others.into_iter().collect(),
    })
}
