//! Results with the next activation they let a warm run commit, many runs
//! in one statement: what [`end_and_append`](super::end_and_append) writes
//! for one, written for a batch (see [`batch`](super::batch)).

use super::batch::{Lanes, WriteBatch};
use super::{Clauses, Ended, StoreResult, end_and_append, statement};
use crate::store::rows::{AttemptColumns, AttemptEnd, CommitColumns};
use crate::store::{ActivationCommit, FinishedAttempt};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;

/// An attempt's result and the activation prepared for it, in columns.
pub(in crate::store) struct Finish {
    pub(in crate::store) finished: FinishedAttempt,
    pub(in crate::store) columns: AttemptColumns,
    pub(in crate::store) next: ActivationCommit,
    pub(in crate::store) c: CommitColumns,
}

/// What a [`Finish`] did, with its activation back (a close that owes
/// other runs commits it again, the ordinary way).
pub(in crate::store) struct Finished {
    pub(in crate::store) ended: Ended,
    pub(in crate::store) next: ActivationCommit,
}

/// The lanes that record results with the activation they let commit.
pub(in crate::store) fn lanes(pool: PgPool) -> Lanes<Finish, Finished> {
    let write: WriteBatch<Finish, Finished> = Arc::new(move |finishes| {
        let pool = pool.clone();
        Box::pin(async move { finish_all(&pool, finishes).await })
    });
    // One run's results never share a statement: it would lock and update
    // the run's row twice.
    Lanes::spawn(
        "results",
        |f| {
            let run = f.finished.run_id.as_str();
            [run, run]
        },
        write,
    )
}

/// Records `finishes`: one alone as `end_and_append` does, several in one
/// statement. Should that statement fail, nothing of it was written, and
/// each is recorded alone to get its own answer.
async fn finish_all(pool: &PgPool, finishes: Vec<Finish>) -> Vec<StoreResult<Finished>> {
    if finishes.len() > 1 {
        match finish_many(pool, &finishes).await {
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
        out.push(finish_one(pool, f).await);
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
    })
}

/// The runs of a batch by what its statement did to each.
struct Outcome {
    ended: HashSet<String>,
    applied: HashSet<String>,
    reaches_others: HashSet<String>,
}

/// The statement of a batch, by which clauses it needs: the runs from
/// `$1`–`$23`, their consumed tasks from `$24`–`$25`, their events from
/// `$26`–`$31`, then each optional clause's columns from the next free
/// parameter. Each clause is [`end_and_append`]'s, joined by run instead of
/// bound to one.
fn sql(clauses: Clauses) -> &'static str {
    statement("end_and_append_many", clauses, || {
        let reaches = if clauses.closing {
            "(i.closing AND (
                 EXISTS (SELECT 1 FROM children WHERE child_run_id = r.run_id AND NOT resolved)
                 OR EXISTS (SELECT 1 FROM children
                             WHERE parent_run_id = r.run_id AND NOT resolved AND child_run_id IS NOT NULL
                               AND parent_close_policy IN ('terminate', 'request_cancel'))
                 OR EXISTS (SELECT 1 FROM updates WHERE run_id = r.run_id AND NOT completed)))"
        } else {
            "false"
        };
        let mut sql = format!(
            "WITH i AS (
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                                      $6::bigint[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                                      $11::boolean[], $12::bigint[], $13::bigint[], $14::text[], $15::text[],
                                      $16::text[], $17::bigint[], $18::bigint[], $19::boolean[], $20::text[],
                                      $21::bigint[], $22::bigint[], $23::bigint[])
                   AS i (run_id, lease_token, expected_last_seq, last_seq, last_hash,
                         handled_wakeups, status, output, failure, closed_at_ms,
                         closing, seq, task_lease_token, a_status, a_output,
                         a_failure, resolved_at, retry_at, is_final, end_status,
                         expired_at, now, attempt)
             ), consumed AS (
                 SELECT * FROM UNNEST($24::text[], $25::bigint[]) AS c (run_id, seq)
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
                        consumed = a.consumed
                                   OR (run.fits AND EXISTS (SELECT 1 FROM consumed c
                                                             WHERE c.run_id = a.run_id AND c.seq = a.seq))
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
                 UPDATE runs
                    SET last_seq = i.last_seq, last_hash = i.last_hash, handled_wakeups = i.handled_wakeups,
                        wakeups = runs.wakeups + 1, woken_at_ms = i.now,
                        lease_owner = NULL, lease_expires_at_ms = 0,
                        status = i.status, output = i.output, failure = i.failure,
                        closed_at_ms = i.closed_at_ms
                   FROM i JOIN run ON run.run_id = i.run_id
                  WHERE runs.run_id = i.run_id AND runs.lease_token = i.lease_token
                    AND runs.last_seq = i.expected_last_seq AND runs.status = 'running'
                    AND run.fits AND i.run_id IN (SELECT run_id FROM t)
                 RETURNING runs.run_id
             ), ev AS (
                 INSERT INTO events (run_id, seq, kind, payload, recorded_at_ms, hash)
                 SELECT e.run_id, e.seq, e.kind, e.payload, e.at, e.hash
                   FROM UNNEST($26::text[], $27::bigint[], $28::text[], $29::text[], $30::bigint[], $31::text[])
                        AS e (run_id, seq, kind, payload, at, hash)
                  WHERE e.run_id IN (SELECT run_id FROM r)
             )"
        );
        let mut next = 32;
        let mut p = || {
            next += 1;
            format!("${}", next - 1)
        };
        if clauses.tasks {
            let ps: Vec<String> = (0..14).map(|_| p()).collect();
            sql.push_str(&format!(
                ", new_tasks AS (
                 INSERT INTO activity_tasks (run_id, seq, name, input, options, lease_ms, status, visible_at_ms,
                                             schedule_to_start_ms, heartbeat_timeout_ms, close_deadline_ms,
                                             start_deadline_ms, attempt, lease_token, lease_owner,
                                             lease_expires_at_ms, heartbeat_deadline_ms)
                 SELECT a.run_id, a.seq, a.name, a.input, a.options, a.lease_ms,
                        CASE WHEN a.owner IS NOT NULL THEN 'running' ELSE 'scheduled' END,
                        COALESCE(a.expires, a.visible_at),
                        a.schedule_to_start, a.heartbeat_timeout, a.close_deadline,
                        CASE WHEN a.owner IS NULL THEN a.start_deadline END,
                        CASE WHEN a.owner IS NULL THEN 0 ELSE 1 END,
                        CASE WHEN a.owner IS NULL THEN 0 ELSE 1 END,
                        a.owner, a.expires,
                        CASE WHEN a.owner IS NOT NULL AND a.heartbeat_timeout > 0
                             THEN a.now + a.heartbeat_timeout END
                   FROM UNNEST({}::text[], {}::bigint[], {}::text[], {}::text[], {}::text[], {}::bigint[],
                               {}::bigint[], {}::bigint[], {}::bigint[], {}::bigint[], {}::bigint[],
                               {}::text[], {}::bigint[], {}::bigint[])
                        AS a (run_id, seq, name, input, options, lease_ms, visible_at, schedule_to_start,
                              heartbeat_timeout, close_deadline, start_deadline, owner, expires, now)
                  WHERE a.run_id IN (SELECT run_id FROM r)
             )",
                ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6], ps[7], ps[8], ps[9], ps[10],
                ps[11], ps[12], ps[13]
            ));
        }
        if clauses.timers {
            let (run, seq, at) = (p(), p(), p());
            sql.push_str(&format!(
                ", new_timers AS (
                 INSERT INTO timers (run_id, seq, fire_at_ms)
                 SELECT t.run_id, t.seq, t.fire_at
                   FROM UNNEST({run}::text[], {seq}::bigint[], {at}::bigint[]) AS t (run_id, seq, fire_at)
                  WHERE t.run_id IN (SELECT run_id FROM r)
             )"
            ));
        }
        if clauses.consumed_tasks {
            // The task whose result this is was marked by `t`: one
            // statement may update a row only once.
            sql.push_str(
                ", consumed_tasks AS (
                 UPDATE activity_tasks a SET consumed = true
                   FROM consumed c JOIN i ON i.run_id = c.run_id
                  WHERE a.run_id = c.run_id AND a.seq = c.seq AND c.seq <> i.seq
                    AND c.run_id IN (SELECT run_id FROM r)
             )",
            );
        }
        if clauses.consumed_signals {
            let (run, id) = (p(), p());
            sql.push_str(&format!(
                ", consumed_signals AS (
                 UPDATE signals s SET consumed = true
                   FROM UNNEST({run}::text[], {id}::bigint[]) AS cs (run_id, id)
                  WHERE s.run_id = cs.run_id AND s.id = cs.id AND cs.run_id IN (SELECT run_id FROM r)
             )"
            ));
        }
        if clauses.removed_timers {
            let (run, seq) = (p(), p());
            sql.push_str(&format!(
                ", removed_timers AS (
                 DELETE FROM timers tm USING i
                  WHERE tm.run_id = i.run_id AND i.run_id IN (SELECT run_id FROM r)
                    AND (i.closing OR EXISTS (SELECT 1 FROM UNNEST({run}::text[], {seq}::bigint[]) AS rt (run_id, seq)
                                               WHERE rt.run_id = tm.run_id AND rt.seq = tm.seq))
             )"
            ));
        }
        if clauses.closing {
            sql.push_str(
                ", abandoned AS (
                 UPDATE activity_tasks a
                    SET status = 'abandoned', lease_owner = NULL, lease_expires_at_ms = NULL
                   FROM i
                  WHERE i.closing AND a.run_id = i.run_id AND i.run_id IN (SELECT run_id FROM r)
                    AND NOT a.consumed AND a.status IN ('scheduled', 'running')
                    AND NOT EXISTS (SELECT 1 FROM consumed c WHERE c.run_id = a.run_id AND c.seq = a.seq)
             )",
            );
        }
        sql.push_str(
            " SELECT ARRAY(SELECT run_id FROM t), ARRAY(SELECT run_id FROM r),
                     ARRAY(SELECT run_id FROM locked WHERE prepared_for AND reaches_others)",
        );
        sql
    })
}

/// A batch in columns: one row per run, then one per consumed task,
/// event, task, timer, consumed signal and removed timer.
#[derive(Default)]
struct Columns<'a> {
    run_id: Vec<&'a str>,
    lease_token: Vec<i64>,
    expected_last_seq: Vec<i64>,
    last_seq: Vec<i64>,
    last_hash: Vec<&'a str>,
    handled_wakeups: Vec<i64>,
    status: Vec<&'a str>,
    output: Vec<Option<&'a str>>,
    failure: Vec<Option<&'a str>>,
    closed_at_ms: Vec<Option<i64>>,
    closing: Vec<bool>,
    seq: Vec<i64>,
    task_lease_token: Vec<i64>,
    a_status: Vec<&'a str>,
    a_output: Vec<Option<&'a str>>,
    a_failure: Vec<Option<&'a str>>,
    resolved_at: Vec<Option<i64>>,
    retry_at: Vec<Option<i64>>,
    is_final: Vec<bool>,
    end_status: Vec<&'a str>,
    expired_at: Vec<Option<i64>>,
    now: Vec<i64>,
    attempt: Vec<i64>,
    consumed_run: Vec<&'a str>,
    consumed_seq: Vec<i64>,
    ev_run: Vec<&'a str>,
    ev_seq: Vec<i64>,
    ev_kind: Vec<&'a str>,
    ev_payload: Vec<&'a str>,
    ev_at: Vec<i64>,
    ev_hash: Vec<&'a str>,
    task_run: Vec<&'a str>,
    task_seq: Vec<i64>,
    task_name: Vec<&'a str>,
    task_input: Vec<&'a str>,
    task_options: Vec<&'a str>,
    task_lease_ms: Vec<i64>,
    task_visible_at: Vec<i64>,
    task_schedule_to_start: Vec<i64>,
    task_heartbeat_timeout: Vec<i64>,
    task_close_deadline: Vec<Option<i64>>,
    task_start_deadline: Vec<Option<i64>>,
    task_owner: Vec<Option<&'a str>>,
    task_expires: Vec<Option<i64>>,
    task_now: Vec<i64>,
    timer_run: Vec<&'a str>,
    timer_seq: Vec<i64>,
    timer_fire_at: Vec<i64>,
    signal_run: Vec<&'a str>,
    signal_id: Vec<i64>,
    removed_run: Vec<&'a str>,
    removed_seq: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, f: &'a Finish) {
        let (finished, a, next, c) = (&f.finished, &f.columns, &f.next, &f.c);
        let id = next.run_id.as_str();
        self.run_id.push(id);
        self.lease_token.push(next.lease_token);
        self.expected_last_seq
            .push(crate::store::rows::int(c.expected_last_seq));
        self.last_seq.push(c.last_seq);
        self.last_hash.push(&c.last_hash);
        self.handled_wakeups.push(next.observed_wakeups);
        self.status.push(c.status);
        self.output.push(c.output.as_deref());
        self.failure.push(c.failure.as_deref());
        self.closed_at_ms.push(c.closed_at_ms);
        self.closing.push(c.closing);
        self.seq.push(i64::from(finished.seq));
        self.task_lease_token.push(finished.lease_token);
        self.a_status.push(a.status);
        self.a_output.push(a.output.as_deref());
        self.a_failure.push(a.failure.as_deref());
        self.resolved_at.push(a.resolved_at_ms);
        self.retry_at.push(a.retry_at_ms);
        self.is_final.push(a.is_final);
        // A reported end: the attempt must still be running.
        self.end_status.push("running");
        self.expired_at.push(None);
        self.now.push(crate::store::rows::int(finished.now_ms));
        self.attempt.push(i64::from(finished.attempt));
        for &seq in &c.consumed_activities {
            self.consumed_run.push(id);
            self.consumed_seq.push(seq);
        }
        for i in 0..c.event_seqs.len() {
            self.ev_run.push(id);
            self.ev_seq.push(c.event_seqs[i]);
            self.ev_kind.push(c.event_kinds[i]);
            self.ev_payload.push(&c.event_payloads[i]);
            self.ev_at.push(c.event_times[i]);
            self.ev_hash.push(&c.event_hashes[i]);
        }
        for i in 0..c.task_seqs.len() {
            self.task_run.push(id);
            self.task_seq.push(c.task_seqs[i]);
            self.task_name.push(&c.task_names[i]);
            self.task_input.push(&c.task_inputs[i]);
            self.task_options.push(&c.task_options[i]);
            self.task_lease_ms.push(c.task_lease_ms[i]);
            self.task_visible_at.push(c.task_visible_at[i]);
            self.task_schedule_to_start
                .push(c.task_schedule_to_start_ms[i]);
            self.task_heartbeat_timeout
                .push(c.task_heartbeat_timeout_ms[i]);
            self.task_close_deadline.push(c.task_close_deadline[i]);
            self.task_start_deadline.push(c.task_start_deadline[i]);
            self.task_owner.push(c.task_owner[i].as_deref());
            self.task_expires.push(c.task_lease_expires[i]);
            self.task_now.push(c.now_ms);
        }
        // A closing run starts no timer; a timer both started and cancelled
        // in the activation is never inserted.
        if !c.closing {
            for (&seq, &at) in c.timer_seqs.iter().zip(&c.timer_fire_at) {
                if !c.removed_timers.contains(&seq) {
                    self.timer_run.push(id);
                    self.timer_seq.push(seq);
                    self.timer_fire_at.push(at);
                }
            }
        }
        for &signal in &c.consumed_signals {
            self.signal_run.push(id);
            self.signal_id.push(signal);
        }
        for &seq in &c.removed_timers {
            self.removed_run.push(id);
            self.removed_seq.push(seq);
        }
    }
}

/// Records `finishes` in one statement.
async fn finish_many(pool: &PgPool, finishes: &[Finish]) -> StoreResult<Outcome> {
    let mut cols = Columns::default();
    let mut clauses = Clauses {
        tasks: false,
        timers: false,
        consumed_tasks: false,
        consumed_signals: false,
        removed_timers: false,
        closing: false,
    };
    for f in finishes {
        cols.push(f);
        let of = Clauses::of(&f.c, Some(f.finished.seq));
        clauses.tasks |= of.tasks;
        clauses.timers |= of.timers;
        clauses.consumed_tasks |= of.consumed_tasks;
        clauses.consumed_signals |= of.consumed_signals;
        clauses.removed_timers |= of.removed_timers;
        clauses.closing |= of.closing;
    }
    let mut query = sqlx::query_as(sql(clauses))
        .bind(&cols.run_id)
        .bind(&cols.lease_token)
        .bind(&cols.expected_last_seq)
        .bind(&cols.last_seq)
        .bind(&cols.last_hash)
        .bind(&cols.handled_wakeups)
        .bind(&cols.status)
        .bind(&cols.output)
        .bind(&cols.failure)
        .bind(&cols.closed_at_ms)
        .bind(&cols.closing)
        .bind(&cols.seq)
        .bind(&cols.task_lease_token)
        .bind(&cols.a_status)
        .bind(&cols.a_output)
        .bind(&cols.a_failure)
        .bind(&cols.resolved_at)
        .bind(&cols.retry_at)
        .bind(&cols.is_final)
        .bind(&cols.end_status)
        .bind(&cols.expired_at)
        .bind(&cols.now)
        .bind(&cols.attempt)
        .bind(&cols.consumed_run)
        .bind(&cols.consumed_seq)
        .bind(&cols.ev_run)
        .bind(&cols.ev_seq)
        .bind(&cols.ev_kind)
        .bind(&cols.ev_payload)
        .bind(&cols.ev_at)
        .bind(&cols.ev_hash);
    if clauses.tasks {
        query = query
            .bind(&cols.task_run)
            .bind(&cols.task_seq)
            .bind(&cols.task_name)
            .bind(&cols.task_input)
            .bind(&cols.task_options)
            .bind(&cols.task_lease_ms)
            .bind(&cols.task_visible_at)
            .bind(&cols.task_schedule_to_start)
            .bind(&cols.task_heartbeat_timeout)
            .bind(&cols.task_close_deadline)
            .bind(&cols.task_start_deadline)
            .bind(&cols.task_owner)
            .bind(&cols.task_expires)
            .bind(&cols.task_now);
    }
    if clauses.timers {
        query = query
            .bind(&cols.timer_run)
            .bind(&cols.timer_seq)
            .bind(&cols.timer_fire_at);
    }
    if clauses.consumed_signals {
        query = query.bind(&cols.signal_run).bind(&cols.signal_id);
    }
    if clauses.removed_timers {
        query = query.bind(&cols.removed_run).bind(&cols.removed_seq);
    }
    let (ended, applied, reaches_others): (Vec<String>, Vec<String>, Vec<String>) =
        query.fetch_one(pool).await?;
    Ok(Outcome {
        ended: ended.into_iter().collect(),
        applied: applied.into_iter().collect(),
        reaches_others: reaches_others.into_iter().collect(),
    })
}
