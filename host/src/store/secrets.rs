//! Secrets every host on one database shares, kept in the database itself
//! (table `host_secrets`, one row): hosts on one Postgres database must
//! agree on them, and an SQLite file keeps them across restarts.

use super::StoreResult;
use async_trait::async_trait;

/// Where the hosts' shared secrets are kept.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The key that MACs the task tokens handed to remote workers: 32
    /// random bytes, made by the first host to ask (insert-if-absent, then
    /// read, so hosts asking at once get the same key) and the same ever
    /// after, for every host on this database.
    async fn task_token_key(&self) -> StoreResult<[u8; 32]>;
}
