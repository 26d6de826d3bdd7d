//! Versions on SQLite: defaults, module changes and retention. Writes run in
//! a `BEGIN IMMEDIATE` transaction, so a read followed by a write cannot race.

use super::{SqliteStore, insert_events, insert_tasks, insert_timers};
use sqlx::SqliteConnection;

crate::store::rows::version_store! {
    store: SqliteStore,
    conn: SqliteConnection,
    reader: reader,
    change_state: crate::store::rows::CHANGE_STATE,
}

crate::store::rows::seal_store! {
    store: SqliteStore,
    reader: reader,
}

crate::store::rows::secret_store! {
    store: SqliteStore,
    writer: writer,
}

/// Writes what a reset run inherits after its event 1 (the rest of the kept
/// history, the activities and timers it left pending) with the activation
/// commit's chunked inserts, and moves the run's last seq and hash on.
async fn inherit(
    conn: &mut SqliteConnection,
    run_id: &RunId,
    c: &CommitColumns,
) -> StoreResult<()> {
    insert_events(conn, run_id, c).await?;
    insert_tasks(conn, run_id, c).await?;
    insert_timers(conn, run_id, c).await?;
    sqlx::query(rows::CONTINUE_RUN)
        .bind(run_id.as_str())
        .bind(c.last_seq)
        .bind(c.last_hash.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
