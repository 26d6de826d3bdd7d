//! The hosts' shared secrets on both backends: the same statements.

/// `$1` a fresh key: kept only if there is none yet.
pub(in crate::store) const INSERT_TASK_TOKEN_KEY: &str =
    "INSERT INTO host_secrets (id, task_token_key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING";

pub(in crate::store) const TASK_TOKEN_KEY: &str =
    "SELECT task_token_key FROM host_secrets WHERE id = 1";

/// 32 bytes from the operating system. Not the host's seeded randomness:
/// a test seed would make the key, and so every task token, guessable.
pub(in crate::store) fn fresh_key() -> crate::store::StoreResult<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| {
        crate::store::StoreError::Unavailable(format!(
            "the operating system gave no randomness for the task-token key: {e}"
        ))
    })?;
    Ok(key)
}

/// The stored key, which must be 32 bytes.
pub(in crate::store) fn task_token_key(stored: Vec<u8>) -> crate::store::StoreResult<[u8; 32]> {
    let len = stored.len();
    stored.try_into().map_err(|_| {
        crate::store::StoreError::Corrupt(format!(
            "host_secrets.task_token_key is {len} bytes, not 32; delete the row and every host makes a new key (task tokens handed out before are then refused, and their tasks retried after their leases)"
        ))
    })
}

/// Implements [`crate::store::SecretStore`] for a backend whose pool
/// `writer` writes (and reads what it wrote).
macro_rules! secret_store {
    (store: $store:ty, writer: $writer:ident $(,)?) => {
        #[async_trait::async_trait]
        impl crate::store::SecretStore for $store {
            async fn task_token_key(&self) -> crate::store::StoreResult<[u8; 32]> {
                use crate::store::rows;
                sqlx::query(rows::INSERT_TASK_TOKEN_KEY)
                    .bind(rows::fresh_key()?.to_vec())
                    .execute(&self.$writer)
                    .await?;
                let stored: Vec<u8> = sqlx::query_scalar(rows::TASK_TOKEN_KEY)
                    .fetch_one(&self.$writer)
                    .await?;
                rows::task_token_key(stored)
            }
        }
    };
}
pub(in crate::store) use secret_store;
