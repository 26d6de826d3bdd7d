//! Versions on SQLite: defaults, module changes and retention. Writes run in
//! a `BEGIN IMMEDIATE` transaction, so a read followed by a write cannot race.

use super::SqliteStore;
use sqlx::SqliteConnection;

crate::store::rows::version_store! {
    store: SqliteStore,
    conn: SqliteConnection,
    reader: reader,
    change_state: crate::store::rows::CHANGE_STATE,
}
