//! Versions on Postgres: defaults, module changes and retention. A module
//! change locks the run's row (`FOR UPDATE`) before it checks and writes.

use super::PostgresStore;
use sqlx::PgConnection;

crate::store::rows::version_store! {
    store: PostgresStore,
    conn: PgConnection,
    reader: pool,
    change_state: crate::store::rows::CHANGE_STATE_FOR_UPDATE,
}

crate::store::rows::seal_store! {
    store: PostgresStore,
    reader: pool,
}

crate::store::rows::secret_store! {
    store: PostgresStore,
    writer: pool,
}

/// Writes what a reset run inherits after its event 1 (the rest of the kept
/// history, the activities and timers it left pending) in one statement, the
/// rows travelling as arrays, and moves the run's last seq and hash on.
async fn inherit(conn: &mut PgConnection, run_id: &RunId, c: &CommitColumns) -> StoreResult<()> {
    sqlx::query(
        "WITH ev AS (
             INSERT INTO events (run_id, seq, kind, payload, recorded_at_ms, hash)
             SELECT $1, e.seq, e.kind, e.payload, e.at, e.hash
               FROM UNNEST($4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::text[])
                    AS e (seq, kind, payload, at, hash)
         ), new_tasks AS (
             INSERT INTO activity_tasks (run_id, seq, name, input, options, lease_ms, status, visible_at_ms,
                                         schedule_to_start_ms, heartbeat_timeout_ms, close_deadline_ms,
                                         start_deadline_ms)
             SELECT $1, a.seq, a.name, a.input, a.options, a.lease_ms, 'scheduled', a.visible_at,
                    a.schedule_to_start, a.heartbeat_timeout, a.close_deadline, a.start_deadline
               FROM UNNEST($9::bigint[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::bigint[],
                           $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[])
                    AS a (seq, name, input, options, lease_ms, visible_at,
                          schedule_to_start, heartbeat_timeout, close_deadline, start_deadline)
         ), new_timers AS (
             INSERT INTO timers (run_id, seq, fire_at_ms)
             SELECT $1, t.seq, t.fire_at FROM UNNEST($19::bigint[], $20::bigint[]) AS t (seq, fire_at)
         )
         UPDATE runs SET last_seq = $2, last_hash = $3 WHERE run_id = $1",
    )
    .bind(run_id.as_str())
    .bind(c.last_seq)
    .bind(c.last_hash.as_str())
    .bind(&c.event_seqs)
    .bind(&c.event_kinds)
    .bind(&c.event_payloads)
    .bind(&c.event_times)
    .bind(&c.event_hashes)
    .bind(&c.task_seqs)
    .bind(&c.task_names)
    .bind(&c.task_inputs)
    .bind(&c.task_options)
    .bind(&c.task_lease_ms)
    .bind(&c.task_visible_at)
    .bind(&c.task_schedule_to_start_ms)
    .bind(&c.task_heartbeat_timeout_ms)
    .bind(&c.task_close_deadline)
    .bind(&c.task_start_deadline)
    .bind(&c.timer_seqs)
    .bind(&c.timer_fire_at)
    .execute(conn)
    .await?;
    Ok(())
}
