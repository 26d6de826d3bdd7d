//! New runs with their first activation, many in one statement: what
//! [`place_started`](super::place_started) writes for one run, written for
//! a batch (see [`batch`](super::batch)).

use super::batch::{Lanes, WriteBatch};
use super::{Clauses, StoreResult, place_started, statement};
use crate::store::ActivationCommit;
use crate::store::rows::{CommitColumns, NewRunColumns};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;

/// A run to place with its first activation, laid out in columns.
pub(in crate::store) struct Start {
    pub(in crate::store) run: NewRunColumns,
    pub(in crate::store) first: ActivationCommit,
    pub(in crate::store) c: CommitColumns,
}

/// The lanes that place new runs: `true` for a run placed, `false` for
/// one that its workflow id refused (the caller then takes the ordinary
/// way, which says why).
pub(in crate::store) fn lanes(pool: PgPool) -> Lanes<Start, bool> {
    let write: WriteBatch<Start, bool> = Arc::new(move |starts| {
        let pool = pool.clone();
        Box::pin(async move { place_all(&pool, starts).await })
    });
    Lanes::spawn(
        "new runs",
        |s| [s.run.run_id.as_str(), s.run.workflow_id.as_str()],
        write,
    )
}

/// Places `starts`: one alone as `place_started` does, several in one
/// statement. Should that statement fail (a run id taken, say), nothing of
/// it was written, and each run is placed alone to get its own answer.
async fn place_all(pool: &PgPool, starts: Vec<Start>) -> Vec<StoreResult<bool>> {
    if starts.len() > 1 {
        match place_many(pool, &starts).await {
            Ok(placed) => {
                return starts
                    .iter()
                    .map(|s| Ok(placed.contains(s.run.run_id.as_str())))
                    .collect();
            }
            Err(e) => {
                tracing::debug!(error = %e, runs = starts.len(), "placing a batch of new runs failed; placing each alone");
            }
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for s in &starts {
        out.push(place_one(pool, s).await);
    }
    out
}

async fn place_one(pool: &PgPool, s: &Start) -> StoreResult<bool> {
    let mut conn = pool.acquire().await?;
    place_started(&mut conn, &s.run, &s.first, &s.c).await
}

/// The statement of a batch, by which clauses it needs: the runs from
/// `$1`–`$18`, their events from `$19`–`$24`, then their activity tasks
/// and their timers, each from the next free parameter.
fn sql(clauses: Clauses) -> &'static str {
    statement("place_started_many", clauses, || {
        let mut sql = String::from(
            "WITH i AS (
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                                      $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::bigint[],
                                      $12::text[], $13::text[], $14::bigint[], $15::bigint[], $16::bigint[],
                                      $17::boolean[], $18::text[])
                   AS i (run_id, workflow_id, workflow_type, module_sha256, last_seq, last_hash,
                         handled_wakeups, created_at, parent_workflow_id, parent_run_id, parent_seq,
                         search_attributes, memo, deadline_ms, execution_deadline_ms, run_timeout_ms,
                         checks_reuse, reusable_after)
             ), ins AS (
                 INSERT INTO runs (run_id, workflow_id, workflow_type, module_sha256, status, last_seq,
                                   last_hash, created_at_ms, wakeups, handled_wakeups, woken_at_ms,
                                   parent_workflow_id, parent_run_id, parent_seq, search_attributes, memo,
                                   deadline_ms, execution_deadline_ms, run_timeout_ms)
                 SELECT i.run_id, i.workflow_id, i.workflow_type, i.module_sha256, 'running', i.last_seq,
                        i.last_hash, i.created_at, 1, i.handled_wakeups, i.created_at,
                        i.parent_workflow_id, i.parent_run_id, i.parent_seq, i.search_attributes, i.memo,
                        i.deadline_ms, i.execution_deadline_ms, i.run_timeout_ms
                   FROM i
                  -- As place_started: the last closed run of the workflow id
                  -- must be one its reuse policy allows to follow.
                  WHERE NOT EXISTS (
                        SELECT 1
                          FROM (SELECT r.status FROM runs r
                                 WHERE i.checks_reuse AND r.workflow_id = i.workflow_id
                                   AND r.status NOT IN ('running', 'stuck')
                                 ORDER BY r.created_at_ms DESC, r.status = 'continued_as_new', r.run_id DESC
                                 LIMIT 1) AS last
                         WHERE NOT (last.status = ANY (string_to_array(i.reusable_after, ','))))
                 ON CONFLICT (workflow_id) WHERE status IN ('running', 'stuck') DO NOTHING
                 RETURNING run_id
             ), ev AS (
                 INSERT INTO events (run_id, seq, kind, payload, recorded_at_ms, hash)
                 SELECT e.run_id, e.seq, e.kind, e.payload, e.at, e.hash
                   FROM UNNEST($19::text[], $20::bigint[], $21::text[], $22::text[], $23::bigint[], $24::text[])
                        AS e (run_id, seq, kind, payload, at, hash)
                  WHERE e.run_id IN (SELECT run_id FROM ins)
             )",
        );
        let mut next = 25;
        let mut p = || {
            next += 1;
            format!("${}", next - 1)
        };
        if clauses.tasks {
            let ps: Vec<String> = (0..14).map(|_| p()).collect();
            sql.push_str(&format!(
                ", new_tasks AS (
                 -- As place_started's: a task with an owner is claimed as it is scheduled.
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
                  WHERE a.run_id IN (SELECT run_id FROM ins)
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
                  WHERE t.run_id IN (SELECT run_id FROM ins)
             )"
            ));
        }
        sql.push_str(" SELECT ARRAY(SELECT run_id FROM ins)");
        sql
    })
}

/// The runs of a batch in columns, one row per run, event, task and timer.
#[derive(Default)]
struct Columns<'a> {
    run_id: Vec<&'a str>,
    workflow_id: Vec<&'a str>,
    workflow_type: Vec<&'a str>,
    module_sha256: Vec<&'a str>,
    last_seq: Vec<i64>,
    last_hash: Vec<&'a str>,
    handled_wakeups: Vec<i64>,
    created_at: Vec<i64>,
    parent_workflow_id: Vec<Option<&'a str>>,
    parent_run_id: Vec<Option<&'a str>>,
    parent_seq: Vec<Option<i64>>,
    search_attributes: Vec<&'a str>,
    memo: Vec<Option<&'a str>>,
    deadline_ms: Vec<Option<i64>>,
    execution_deadline_ms: Vec<Option<i64>>,
    run_timeout_ms: Vec<Option<i64>>,
    checks_reuse: Vec<bool>,
    reusable_after: Vec<String>,
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
}

impl<'a> Columns<'a> {
    fn push(&mut self, s: &'a Start) {
        let (run, c) = (&s.run, &s.c);
        let id = run.run_id.as_str();
        self.run_id.push(id);
        self.workflow_id.push(&run.workflow_id);
        self.workflow_type.push(&run.workflow_type);
        self.module_sha256.push(&run.module_sha256);
        self.last_seq.push(c.last_seq);
        self.last_hash.push(&c.last_hash);
        self.handled_wakeups.push(s.first.observed_wakeups);
        self.created_at.push(run.now_ms);
        self.parent_workflow_id
            .push(run.parent_workflow_id.as_deref());
        self.parent_run_id.push(run.parent_run_id.as_deref());
        self.parent_seq.push(run.parent_seq);
        self.search_attributes.push(&run.search_attributes);
        self.memo.push(run.memo.as_deref());
        self.deadline_ms.push(run.deadline_ms);
        self.execution_deadline_ms.push(run.execution_deadline_ms);
        self.run_timeout_ms.push(run.run_timeout_ms);
        self.checks_reuse.push(run.checks_reuse());
        self.reusable_after.push(run.reusable_after.join(","));
        // Event 1, then the activation's.
        self.ev_run.push(id);
        self.ev_seq.push(1);
        self.ev_kind.push(run.event_kind);
        self.ev_payload.push(&run.event_payload);
        self.ev_at.push(run.event_recorded_at_ms);
        self.ev_hash.push(&run.hash);
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
        // A timer both started and cancelled in the activation is never inserted.
        for (&seq, &at) in c.timer_seqs.iter().zip(&c.timer_fire_at) {
            if !c.removed_timers.contains(&seq) {
                self.timer_run.push(id);
                self.timer_seq.push(seq);
                self.timer_fire_at.push(at);
            }
        }
    }
}

/// Places `starts` in one statement; the ids of the runs placed.
async fn place_many<'s>(pool: &PgPool, starts: &'s [Start]) -> StoreResult<HashSet<&'s str>> {
    let mut cols = Columns::default();
    for s in starts {
        debug_assert!(!s.c.closing, "a batched first activation never closes");
        cols.push(s);
    }
    let clauses = Clauses {
        tasks: !cols.task_seq.is_empty(),
        timers: !cols.timer_seq.is_empty(),
        consumed_tasks: false,
        consumed_signals: false,
        removed_timers: false,
        closing: false,
    };
    let mut query = sqlx::query_scalar(sql(clauses))
        .bind(&cols.run_id)
        .bind(&cols.workflow_id)
        .bind(&cols.workflow_type)
        .bind(&cols.module_sha256)
        .bind(&cols.last_seq)
        .bind(&cols.last_hash)
        .bind(&cols.handled_wakeups)
        .bind(&cols.created_at)
        .bind(&cols.parent_workflow_id)
        .bind(&cols.parent_run_id)
        .bind(&cols.parent_seq)
        .bind(&cols.search_attributes)
        .bind(&cols.memo)
        .bind(&cols.deadline_ms)
        .bind(&cols.execution_deadline_ms)
        .bind(&cols.run_timeout_ms)
        .bind(&cols.checks_reuse)
        .bind(&cols.reusable_after)
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
    let placed: Vec<String> = query.fetch_one(pool).await?;
    let placed: HashSet<&str> = placed.iter().map(String::as_str).collect();
    Ok(starts
        .iter()
        .map(|s| s.run.run_id.as_str())
        .filter(|id| placed.contains(id))
        .collect())
}
