//! Placeholder while the backend is written.
use super::StoreResult;
pub struct PostgresStore;
impl PostgresStore {
    pub async fn connect(_url: &str) -> StoreResult<Self> {
        Err(super::StoreError::Unavailable("the Postgres backend is not written yet".into()))
    }
}
