//! Placeholder while the backend is written.
use super::StoreResult;
pub struct SqliteStore;
impl SqliteStore {
    pub async fn open(_path: &str) -> StoreResult<Self> {
        Err(super::StoreError::Unavailable("the SQLite backend is not written yet".into()))
    }
}
