//! New runs with their first activation, many in one statement: what
//! [`place_started`](super::place_started) writes for one run, written for
//! a batch (see [`batch`](super::batch)).

use super::batch::{Lanes, Pools};
use super::many::{self, Params, Rows};
use super::{Clauses, StoreResult, place_started, statement};
use crate::store::ActivationCommit;
use crate::store::rows::{CommitColumns, NewRunColumns};
use sqlx::PgPool;
use std::collections::HashSet;

/// A run to place with its first activation, laid out in columns.
pub(in crate::store) struct Start {
    pub(in crate::store) run: NewRunColumns,
    pub(in crate::store) first: ActivationCommit,
    pub(in crate::store) c: CommitColumns,
}

/// The lanes that place new runs: `true` for a run placed, `false` for
/// one that its workflow id refused (the caller then takes the ordinary
/// way, which says why).
pub(in crate::store) fn lanes(pools: Pools) -> Lanes<Start, bool> {
    Lanes::on(
        pools,
        "new runs",
        |s| [s.run.run_id.as_str(), s.run.workflow_id.as_str()],
        |pools, starts| async move { place_all(&pools, starts).await },
    )
}

/// Places `starts`: one alone as `place_started` does, several in one
/// statement. Should that statement fail (a run id taken, say), nothing of
/// it was written, and each run is placed alone to get its own answer.
async fn place_all(pools: &Pools, starts: Vec<Start>) -> Vec<StoreResult<bool>> {
    if starts.len() > 1 {
        match place_many(&pools.many, &starts).await {
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
        out.push(place_one(&pools.one, s).await);
    }
    out
}

async fn place_one(pool: &PgPool, s: &Start) -> StoreResult<bool> {
    let mut conn = pool.acquire().await?;
    place_started(&mut conn, &s.run, &s.first, &s.c).await
}

/// The statement of a batch, by which clauses it needs: the runs from
/// `$1`–`$18`, then their rows (see [`many::sql`]).
fn sql(clauses: Clauses) -> &'static str {
    statement("place_started_many", clauses, || {
        let rows = many::sql("ins", clauses, &mut Params::from(19), None);
        format!(
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
             ), {rows}
             SELECT ARRAY(SELECT run_id FROM ins)"
        )
    })
}

/// The runs of a batch, one entry per run.
#[derive(Default)]
struct Runs<'a> {
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
}

impl<'a> Runs<'a> {
    fn push(&mut self, s: &'a Start, rows: &mut Rows<'a>) {
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
        // Event 1, then the activation's rows.
        rows.event(
            id,
            1,
            run.event_kind,
            &run.event_payload,
            run.event_recorded_at_ms,
            &run.hash,
        );
        rows.push(id, c, None);
    }
}

/// Places `starts` in one statement; the ids of the runs placed.
async fn place_many<'s>(pool: &PgPool, starts: &'s [Start]) -> StoreResult<HashSet<&'s str>> {
    let (mut runs, mut rows) = (Runs::default(), Rows::default());
    for s in starts {
        debug_assert!(!s.c.closing, "a batched first activation never closes");
        runs.push(s, &mut rows);
    }
    // A first activation consumes and removes nothing (a timer it both
    // starts and cancels is left out of its rows).
    let all = rows.clauses();
    let clauses = Clauses {
        tasks: all.tasks,
        timers: all.timers,
        consumed_tasks: false,
        consumed_signals: false,
        removed_timers: false,
        closing: false,
    };
    let query = sqlx::query_as(sql(clauses))
        .bind(&runs.run_id)
        .bind(&runs.workflow_id)
        .bind(&runs.workflow_type)
        .bind(&runs.module_sha256)
        .bind(&runs.last_seq)
        .bind(&runs.last_hash)
        .bind(&runs.handled_wakeups)
        .bind(&runs.created_at)
        .bind(&runs.parent_workflow_id)
        .bind(&runs.parent_run_id)
        .bind(&runs.parent_seq)
        .bind(&runs.search_attributes)
        .bind(&runs.memo)
        .bind(&runs.deadline_ms)
        .bind(&runs.execution_deadline_ms)
        .bind(&runs.run_timeout_ms)
        .bind(&runs.checks_reuse)
        .bind(&runs.reusable_after);
    let (placed,): (Vec<String>,) = rows.bind(query, clauses).fetch_one(pool).await?;
    let placed: HashSet<&str> = placed.iter().map(String::as_str).collect();
    Ok(starts
        .iter()
        .map(|s| s.run.run_id.as_str())
        .filter(|id| placed.contains(id))
        .collect())
}
