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
