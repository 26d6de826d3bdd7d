//! What the statements that write many runs at once share: the rows an
//! activation adds or marks (events, activity tasks, timers, consumed tasks
//! and signals, removed timers, a close's abandoned tasks), laid out as one
//! column per field over the whole batch, each row naming its run, and the
//! clauses that write them for the runs the statement applied.

use super::{Clauses, insert_tasks, int};
use crate::store::ActivationCommit;
use crate::store::rows::CommitColumns;
use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;

/// Numbers a statement's parameters in the order they are bound.
pub(super) struct Params(usize);

impl Params {
    /// The next parameter is `$first`.
    pub(super) fn from(first: usize) -> Self {
        Self(first)
    }

    /// The next parameter, typed as `ty`: `$n::ty`.
    pub(super) fn next(&mut self, ty: &str) -> String {
        self.0 += 1;
        format!("${}::{ty}", self.0 - 1)
    }
}

/// What an activation sets of its run's row, and what it must find there,
/// one entry per run: `$1`–`$11` of a statement, as [`HEADS`] names them.
#[derive(Default)]
pub(super) struct Heads<'a> {
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
}

/// The columns of [`Heads`] as a statement unnests them.
pub(super) const HEADS: &str = "$1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                                $6::bigint[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                                $11::boolean[]";

/// The names of [`HEADS`]' columns.
pub(super) const HEAD_NAMES: &str = "run_id, lease_token, expected_last_seq, last_seq, last_hash,
                                     handled_wakeups, status, output, failure, closed_at_ms, closing";

impl<'a> Heads<'a> {
    pub(super) fn push(&mut self, commit: &'a ActivationCommit, c: &'a CommitColumns) {
        self.run_id.push(commit.run_id.as_str());
        self.lease_token.push(commit.lease_token);
        self.expected_last_seq.push(int(c.expected_last_seq));
        self.last_seq.push(c.last_seq);
        self.last_hash.push(&c.last_hash);
        self.handled_wakeups.push(commit.observed_wakeups);
        self.status.push(c.status);
        self.output.push(c.output.as_deref());
        self.failure.push(c.failure.as_deref());
        self.closed_at_ms.push(c.closed_at_ms);
        self.closing.push(c.closing);
    }

    /// Binds the heads as `$1`–`$11`.
    pub(super) fn bind<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(&self.run_id)
            .bind(&self.lease_token)
            .bind(&self.expected_last_seq)
            .bind(&self.last_seq)
            .bind(&self.last_hash)
            .bind(&self.handled_wakeups)
            .bind(&self.status)
            .bind(&self.output)
            .bind(&self.failure)
            .bind(&self.closed_at_ms)
            .bind(&self.closing)
    }
}

/// The rows of a batch, one entry per row.
#[derive(Default)]
pub(super) struct Rows<'a> {
    ev_run: Vec<&'a str>,
    ev_seq: Vec<i64>,
    ev_kind: Vec<&'a str>,
    ev_payload: Vec<&'a str>,
    ev_at: Vec<i64>,
    ev_hash: Vec<&'a str>,
    consumed_run: Vec<&'a str>,
    consumed_seq: Vec<i64>,
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
    task_closing: Vec<bool>,
    timer_run: Vec<&'a str>,
    timer_seq: Vec<i64>,
    timer_fire_at: Vec<i64>,
    signal_run: Vec<&'a str>,
    signal_id: Vec<i64>,
    removed_run: Vec<&'a str>,
    removed_seq: Vec<i64>,
    /// What the batch needs written, over all its runs.
    clauses: Option<Clauses>,
}

impl<'a> Rows<'a> {
    /// An event of run `id`.
    pub(super) fn event(
        &mut self,
        id: &'a str,
        seq: i64,
        kind: &'a str,
        payload: &'a str,
        at: i64,
        hash: &'a str,
    ) {
        self.ev_run.push(id);
        self.ev_seq.push(seq);
        self.ev_kind.push(kind);
        self.ev_payload.push(payload);
        self.ev_at.push(at);
        self.ev_hash.push(hash);
    }

    /// Every row of run `id`'s activation `c`; `ended`: the task whose
    /// result the same statement records, which marks it consumed itself.
    pub(super) fn push(&mut self, id: &'a str, c: &'a CommitColumns, ended: Option<u32>) {
        let of = Clauses::of(c, ended);
        self.clauses = Some(match self.clauses {
            None => of,
            Some(all) => Clauses {
                tasks: all.tasks || of.tasks,
                timers: all.timers || of.timers,
                consumed_tasks: all.consumed_tasks || of.consumed_tasks,
                consumed_signals: all.consumed_signals || of.consumed_signals,
                removed_timers: all.removed_timers || of.removed_timers,
                closing: all.closing || of.closing,
            },
        });
        for i in 0..c.event_seqs.len() {
            self.event(
                id,
                c.event_seqs[i],
                c.event_kinds[i],
                &c.event_payloads[i],
                c.event_times[i],
                &c.event_hashes[i],
            );
        }
        for &seq in &c.consumed_activities {
            if Some(seq) != ended.map(i64::from) {
                self.consumed_run.push(id);
                self.consumed_seq.push(seq);
            }
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
            self.task_closing.push(c.closing);
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

    /// The clauses the batch needs.
    pub(super) fn clauses(&self) -> Clauses {
        self.clauses.unwrap_or(Clauses {
            tasks: false,
            timers: false,
            consumed_tasks: false,
            consumed_signals: false,
            removed_timers: false,
            closing: false,
        })
    }

    /// Binds the rows in the order [`sql`] numbers them.
    pub(super) fn bind<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
        clauses: Clauses,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        let mut query = query
            .bind(&self.ev_run)
            .bind(&self.ev_seq)
            .bind(&self.ev_kind)
            .bind(&self.ev_payload)
            .bind(&self.ev_at)
            .bind(&self.ev_hash);
        if clauses.consumed_tasks || clauses.closing {
            query = query.bind(&self.consumed_run).bind(&self.consumed_seq);
        }
        if clauses.tasks {
            query = query
                .bind(&self.task_run)
                .bind(&self.task_seq)
                .bind(&self.task_name)
                .bind(&self.task_input)
                .bind(&self.task_options)
                .bind(&self.task_lease_ms)
                .bind(&self.task_visible_at)
                .bind(&self.task_schedule_to_start)
                .bind(&self.task_heartbeat_timeout)
                .bind(&self.task_close_deadline)
                .bind(&self.task_start_deadline)
                .bind(&self.task_owner)
                .bind(&self.task_expires)
                .bind(&self.task_now)
                .bind(&self.task_closing);
        }
        if clauses.timers {
            query = query
                .bind(&self.timer_run)
                .bind(&self.timer_seq)
                .bind(&self.timer_fire_at);
        }
        if clauses.consumed_signals {
            query = query.bind(&self.signal_run).bind(&self.signal_id);
        }
        if clauses.removed_timers {
            query = query.bind(&self.removed_run).bind(&self.removed_seq);
        }
        query
    }
}

/// The clauses that write a batch's rows, each for the runs in `applied`
/// (a clause that returns their `run_id`) only; parameters from `p`, in
/// the order [`Rows::bind`] binds them. `i` is the batch's runs (with
/// `run_id` and `closing`); `ended`: a condition on an activity task `a`
/// and its run's `i` row that leaves out the task whose result the
/// statement records itself (`None`: no such task).
pub(super) fn sql(applied: &str, clauses: Clauses, p: &mut Params, ended: Option<&str>) -> String {
    let ended = ended.map(|e| format!(" AND {e}")).unwrap_or_default();
    let mut out = vec![format!(
        "ev AS (
             INSERT INTO events (run_id, seq, kind, payload, recorded_at_ms, hash)
             SELECT e.run_id, e.seq, e.kind, e.payload, e.at, e.hash
               FROM UNNEST({}, {}, {}, {}, {}, {}) AS e (run_id, seq, kind, payload, at, hash)
              WHERE e.run_id IN (SELECT run_id FROM {applied})
         )",
        p.next("text[]"),
        p.next("bigint[]"),
        p.next("text[]"),
        p.next("text[]"),
        p.next("bigint[]"),
        p.next("text[]"),
    )];
    if clauses.consumed_tasks || clauses.closing {
        out.push(format!(
            "consumed AS (
             SELECT * FROM UNNEST({}, {}) AS c (run_id, seq)
         )",
            p.next("text[]"),
            p.next("bigint[]")
        ));
    }
    if clauses.tasks {
        let a: Vec<String> = [
            "text[]",
            "bigint[]",
            "text[]",
            "text[]",
            "text[]",
            "bigint[]",
            "bigint[]",
            "bigint[]",
            "bigint[]",
            "bigint[]",
            "bigint[]",
            "text[]",
            "bigint[]",
            "bigint[]",
            "boolean[]",
        ]
        .iter()
        .map(|ty| p.next(ty))
        .collect();
        out.push(format!(
            "new_tasks AS (
             {}
               FROM UNNEST({}) AS a (run_id, seq, name, input, options, lease_ms, visible_at,
                                     schedule_to_start, heartbeat_timeout, close_deadline,
                                     start_deadline, owner, expires, now, closing)
              WHERE a.run_id IN (SELECT run_id FROM {applied})
         )",
            insert_tasks("a.run_id", "a.closing", "a.now"),
            a.join(", ")
        ));
    }
    if clauses.timers {
        out.push(format!(
            "new_timers AS (
             INSERT INTO timers (run_id, seq, fire_at_ms)
             SELECT t.run_id, t.seq, t.fire_at
               FROM UNNEST({}, {}, {}) AS t (run_id, seq, fire_at)
              WHERE t.run_id IN (SELECT run_id FROM {applied})
         )",
            p.next("text[]"),
            p.next("bigint[]"),
            p.next("bigint[]")
        ));
    }
    if clauses.consumed_tasks {
        out.push(format!(
            "consumed_tasks AS (
             UPDATE activity_tasks a SET consumed = true
               FROM consumed c
              WHERE a.run_id = c.run_id AND a.seq = c.seq
                AND c.run_id IN (SELECT run_id FROM {applied})
         )"
        ));
    }
    if clauses.consumed_signals {
        out.push(format!(
            "consumed_signals AS (
             UPDATE signals s SET consumed = true
               FROM UNNEST({}, {}) AS cs (run_id, id)
              WHERE s.run_id = cs.run_id AND s.id = cs.id
                AND cs.run_id IN (SELECT run_id FROM {applied})
         )",
            p.next("text[]"),
            p.next("bigint[]")
        ));
    }
    if clauses.removed_timers {
        out.push(format!(
            "removed_timers AS (
             DELETE FROM timers tm USING i
              WHERE tm.run_id = i.run_id AND i.run_id IN (SELECT run_id FROM {applied})
                AND (i.closing OR EXISTS (SELECT 1 FROM UNNEST({}, {}) AS rt (run_id, seq)
                                           WHERE rt.run_id = tm.run_id AND rt.seq = tm.seq))
         )",
            p.next("text[]"),
            p.next("bigint[]")
        ));
    }
    if clauses.closing {
        out.push(format!(
            "abandoned AS (
             UPDATE activity_tasks a
                SET status = 'abandoned', lease_owner = NULL, lease_expires_at_ms = NULL
               FROM i
              WHERE i.closing AND a.run_id = i.run_id AND i.run_id IN (SELECT run_id FROM {applied})
                AND NOT a.consumed AND a.status IN ('scheduled', 'running'){ended}
                AND NOT EXISTS (SELECT 1 FROM consumed c WHERE c.run_id = a.run_id AND c.seq = a.seq)
         )"
        ));
    }
    out.join(", ")
}

/// Whether closing run `run` owes rows beyond its own (see
/// [`Clauses::reaches_others`]), for a statement of many runs: `i` is the
/// run's row of the batch.
pub(super) fn reaches_others(run: &str, clauses: Clauses) -> String {
    if !clauses.closing {
        return "false".to_owned();
    }
    format!("(i.closing AND {})", clauses.reaches_others(run))
}
