//! Seals on both backends: the same statements, in one transaction.

/// Closed runs without a seal: `$1` at most.
pub(in crate::store) const UNSEALED_RUNS: &str = "SELECT run_id FROM runs
  WHERE closed_at_ms IS NOT NULL AND NOT sealed
  ORDER BY closed_at_ms, run_id LIMIT $1";

/// `$1` run id, `$2` event count, `$3` head, `$4` public key, `$5`
/// signature, `$6` now: only for a closed run whose history ends there.
pub(in crate::store) const INSERT_SEAL: &str =
    "INSERT INTO seals (run_id, event_count, head, public_key, signature, sealed_at_ms)
     SELECT run_id, $2, $3, $4, $5, $6 FROM runs
      WHERE run_id = $1 AND closed_at_ms IS NOT NULL AND last_seq = $2 AND last_hash = $3
     ON CONFLICT (run_id) DO NOTHING";

pub(in crate::store) const MARK_SEALED: &str = "UPDATE runs SET sealed = TRUE WHERE run_id = $1";

pub(in crate::store) const SEAL: &str =
    "SELECT event_count, head, public_key, signature, sealed_at_ms FROM seals WHERE run_id = $1";

#[derive(sqlx::FromRow)]
pub(in crate::store) struct SealRow {
    event_count: i64,
    head: String,
    public_key: String,
    signature: String,
    sealed_at_ms: i64,
}

impl SealRow {
    pub(in crate::store) fn into_seal(
        self,
        run_id: &crate::model::RunId,
    ) -> crate::store::StoreResult<crate::store::Seal> {
        let what = format!("run {run_id}: seal");
        Ok(crate::store::Seal {
            event_count: super::uint(self.event_count, format_args!("{what} event_count"))?,
            head: super::hash(&self.head, &what)?,
            public_key: self.public_key,
            signature: self.signature,
            sealed_at_ms: super::uint(self.sealed_at_ms, format_args!("{what} sealed_at_ms"))?,
        })
    }
}

/// Implements [`crate::store::SealStore`] for a backend with a `begin_write`
/// transaction and a pool for reads (`reader`).
macro_rules! seal_store {
    (store: $store:ty, reader: $reader:ident $(,)?) => {
        #[async_trait::async_trait]
        impl crate::store::SealStore for $store {
            async fn unsealed_runs(
                &self,
                limit: u32,
            ) -> crate::store::StoreResult<Vec<crate::model::RunId>> {
                let ids: Vec<String> = sqlx::query_scalar(crate::store::rows::UNSEALED_RUNS)
                    .bind(i64::from(limit))
                    .fetch_all(&self.$reader)
                    .await?;
                Ok(ids.into_iter().map(crate::model::RunId).collect())
            }

            async fn put_seal(
                &self,
                run_id: &crate::model::RunId,
                seal: &crate::store::Seal,
            ) -> crate::store::StoreResult<bool> {
                use crate::store::rows::int;
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(crate::store::rows::INSERT_SEAL)
                    .bind(run_id.as_str())
                    .bind(int(seal.event_count))
                    .bind(seal.head.to_hex())
                    .bind(&seal.public_key)
                    .bind(&seal.signature)
                    .bind(int(seal.sealed_at_ms))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if inserted {
                    sqlx::query(crate::store::rows::MARK_SEALED)
                        .bind(run_id.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }

            async fn seal(
                &self,
                run_id: &crate::model::RunId,
            ) -> crate::store::StoreResult<Option<crate::store::Seal>> {
                let row: Option<crate::store::rows::SealRow> =
                    sqlx::query_as(crate::store::rows::SEAL)
                        .bind(run_id.as_str())
                        .fetch_optional(&self.$reader)
                        .await?;
                row.map(|r| r.into_seal(run_id)).transpose()
            }
        }
    };
}
pub(in crate::store) use seal_store;
