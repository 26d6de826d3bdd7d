//! Versions on both backends: the statements they share word for word, the
//! rows they read, and the rules of a module change.

use super::{ModuleRow, NewRunColumns, Placed, hash, int, uint};
use crate::model::{Event, RecordedEvent, seal};
use crate::store::{ChangeModule, ModuleUsage, StoreError, StoreResult};

/// `$1`: sha256, `$2`: now. Inserts nothing when no such module is deployed.
pub(in crate::store) const SET_DEFAULT: &str =
    "INSERT INTO module_defaults (name, sha256, updated_at_ms)
     SELECT name, sha256, $2 FROM modules WHERE sha256 = $1
     ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, updated_at_ms = excluded.updated_at_ms";

/// `$1`: name.
pub(in crate::store) const DEFAULT_OF: &str =
    "SELECT m.sha256, m.name, m.version, m.size, m.created_at_ms
       FROM module_defaults d JOIN modules m ON m.sha256 = d.sha256
      WHERE d.name = $1";

pub(in crate::store) const USAGE: &str = "SELECT m.sha256, m.name, m.version, m.size, m.created_at_ms,
        (SELECT COUNT(*) FROM module_defaults d WHERE d.name = m.name AND d.sha256 = m.sha256) AS defaults,
        (SELECT COUNT(*) FROM runs r WHERE r.module_sha256 = m.sha256
            AND r.status IN ('running', 'stuck')) AS open_runs,
        (SELECT COUNT(*) FROM runs r WHERE r.module_sha256 = m.sha256
            AND r.status NOT IN ('running', 'stuck')) AS closed_runs
   FROM modules m ORDER BY m.created_at_ms, m.name, m.version";

/// `$1`: name, `$2`: version, `$3`: sha256. Another module under the same name and version.
pub(in crate::store) const VERSION_TAKEN: &str =
    "SELECT sha256 FROM modules WHERE name = $1 AND version = $2 AND sha256 <> $3";

/// The closed runs a garbage collection takes: `$1` closed before, `$2` at most.
macro_rules! collected_runs {
    () => {
        "SELECT run_id FROM runs WHERE closed_at_ms < $1 AND status NOT IN ('running', 'stuck')
          ORDER BY closed_at_ms, run_id LIMIT $2"
    };
}

/// What the collected runs leave in other tables (each binds `$1` and `$2`);
/// deleted before [`COLLECT_EVENTS`] and, last, [`COLLECT_RUNS`], since they
/// select through `runs`.
pub(in crate::store) const COLLECT_PARTS: [&str; 6] = [
    concat!(
        "DELETE FROM activity_tasks WHERE run_id IN (",
        collected_runs!(),
        ")"
    ),
    concat!(
        "DELETE FROM timers WHERE run_id IN (",
        collected_runs!(),
        ")"
    ),
    concat!(
        "DELETE FROM signals WHERE run_id IN (",
        collected_runs!(),
        ")"
    ),
    concat!(
        "DELETE FROM updates WHERE run_id IN (",
        collected_runs!(),
        ")"
    ),
    concat!(
        "DELETE FROM children WHERE parent_run_id IN (",
        collected_runs!(),
        ")"
    ),
    concat!(
        "DELETE FROM seals WHERE run_id IN (",
        collected_runs!(),
        ")"
    ),
];

/// The collected runs' histories.
pub(in crate::store) const COLLECT_EVENTS: &str = concat!(
    "DELETE FROM events WHERE run_id IN (",
    collected_runs!(),
    ")"
);

/// The collected runs themselves.
pub(in crate::store) const COLLECT_RUNS: &str =
    concat!("DELETE FROM runs WHERE run_id IN (", collected_runs!(), ")");

/// `$1`: deployed before. Modules no run uses and no name has as its default.
pub(in crate::store) const COLLECT_MODULES: &str = "DELETE FROM modules
  WHERE created_at_ms < $1
    AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.module_sha256 = modules.sha256)
    AND NOT EXISTS (SELECT 1 FROM module_defaults d WHERE d.sha256 = modules.sha256)
  RETURNING sha256, name, version, size, created_at_ms";

/// `$1`: the new module, `$2`: new last seq, `$3`: new last hash, `$4`:
/// run id, `$5`: whether the run resumes, `$6`: now.
pub(in crate::store) const MOVE_RUN: &str = "UPDATE runs
    SET module_sha256 = $1, last_seq = $2, last_hash = $3,
        status = CASE WHEN $5 THEN 'running' ELSE status END,
        stuck = CASE WHEN $5 THEN NULL ELSE stuck END,
        wakeups = CASE WHEN $5 THEN wakeups + 1 ELSE wakeups END,
        woken_at_ms = CASE WHEN $5 THEN $6 ELSE woken_at_ms END
  WHERE run_id = $4";

/// `$1`: run id, `$2` seq, `$3` kind, `$4` payload, `$5` recorded at, `$6` hash.
pub(in crate::store) const INSERT_EVENT: &str =
    "INSERT INTO events (run_id, seq, kind, payload, recorded_at_ms, hash)
     VALUES ($1, $2, $3, $4, $5, $6)";

#[derive(sqlx::FromRow)]
pub(in crate::store) struct UsageRow {
    #[sqlx(flatten)]
    module: ModuleRow,
    defaults: i64,
    open_runs: i64,
    closed_runs: i64,
}

impl UsageRow {
    pub(in crate::store) fn into_usage(self) -> StoreResult<ModuleUsage> {
        let module = self.module.into_record()?;
        let sha = &module.sha256;
        Ok(ModuleUsage {
            is_default: self.defaults > 0,
            open_runs: uint(self.open_runs, format_args!("module {sha}: open runs"))?,
            closed_runs: uint(self.closed_runs, format_args!("module {sha}: closed runs"))?,
            module,
        })
    }
}

/// `$1`: run id. What a module change is checked against.
macro_rules! change_state {
    () => {
        "SELECT status, module_sha256, last_seq, last_hash, lease_owner, lease_expires_at_ms
           FROM runs WHERE run_id = $1"
    };
}

/// For SQLite, whose writer holds the database's lock.
pub(in crate::store) const CHANGE_STATE: &str = change_state!();

/// For Postgres: the row stays locked until the change commits.
pub(in crate::store) const CHANGE_STATE_FOR_UPDATE: &str = concat!(change_state!(), " FOR UPDATE");

#[derive(sqlx::FromRow)]
pub(in crate::store) struct ChangeStateRow {
    status: String,
    module_sha256: String,
    last_seq: i64,
    last_hash: String,
    lease_owner: Option<String>,
    lease_expires_at_ms: i64,
}

/// What a module change writes: the run's new last event, if it appends one.
pub(in crate::store) struct PlannedChange {
    pub(in crate::store) event: Option<RecordedEvent>,
    pub(in crate::store) last_seq: i64,
    pub(in crate::store) last_hash: String,
}

/// Checks `change` against the run's row as read in the write's transaction,
/// and seals the `module_changed` event that follows the history.
pub(in crate::store) fn plan_change(
    row: Option<ChangeStateRow>,
    change: &ChangeModule,
) -> StoreResult<PlannedChange> {
    let run_id = &change.run_id;
    let conflict = |reason: String| StoreError::Conflict {
        run_id: run_id.clone(),
        reason,
    };
    let Some(row) = row else {
        return Err(StoreError::NotFound {
            what: format!("run {run_id}"),
        });
    };
    match (row.status.as_str(), change.resume) {
        ("running", false) | ("stuck", true) => {}
        ("running", true) => {
            return Err(conflict(
                "run is running, not stuck: only a stuck run is resumed; upgrade it instead".into(),
            ));
        }
        ("stuck", false) => {
            return Err(conflict(
                "run is stuck: resume it on the module instead of upgrading it".into(),
            ));
        }
        (status, _) => return Err(conflict(format!("run is {status}, no longer open"))),
    }
    if row.module_sha256 != change.from.as_str() {
        return Err(conflict(format!(
            "run is on module {}, not {}",
            row.module_sha256, change.from
        )));
    }
    if row.last_seq != int(change.expected_last_seq) {
        return Err(conflict(format!(
            "history is at event {}, the check replayed it up to event {}: check it again",
            row.last_seq, change.expected_last_seq
        )));
    }
    if row.lease_expires_at_ms > int(change.now_ms) {
        return Err(conflict(format!(
            "host {} is activating it: try again in a moment",
            row.lease_owner.as_deref().unwrap_or("?")
        )));
    }
    if change.from == change.to {
        return Ok(PlannedChange {
            event: None,
            last_seq: row.last_seq,
            last_hash: row.last_hash,
        });
    }
    let prev = hash(&row.last_hash, format_args!("run {run_id}: last_hash"))?;
    let seq = uint(row.last_seq, format_args!("run {run_id}: last_seq"))? + 1;
    let event = seal(
        prev,
        seq,
        Event::ModuleChanged {
            from: change.from.clone(),
            to: change.to.clone(),
            reason: change.reason.clone(),
        },
        change.now_ms,
    );
    Ok(PlannedChange {
        last_seq: int(seq),
        last_hash: event.hash.to_hex(),
        event: Some(event),
    })
}

/// The error for a deploy that reuses a name and version for other bytes.
pub(in crate::store) fn version_taken(name: &str, version: &str, existing: String) -> StoreError {
    StoreError::VersionTaken {
        name: name.to_owned(),
        version: version.to_owned(),
        sha256: existing,
    }
}

/// `$1` run id, `$2` last seq, `$3` last hash.
pub(in crate::store) const CONTINUE_RUN: &str =
    "UPDATE runs SET last_seq = $2, last_hash = $3 WHERE run_id = $1";

/// The error for a reset whose workflow id has an open run again.
pub(in crate::store) fn reset_refused(placed: Placed, run: &NewRunColumns) -> StoreError {
    placed.refusal(run).unwrap_or_else(|| StoreError::Conflict {
        run_id: run.run_id.clone(),
        reason: "the reset run could not be placed".into(),
    })
}

/// The [`VersionStore`](crate::store::VersionStore) of a backend: the same
/// statements on both, written once. The store has a `begin_write` method
/// that opens a write transaction; `$reader` names the pool reads use;
/// `$change_state` reads a run before a module change (locking its row where
/// the backend needs that). The module that invokes it defines `inherit`,
/// which writes what a reset run inherits in bulk, as the backend does it.
macro_rules! version_store {
    (
        store: $store:ty,
        conn: $conn:ty,
        reader: $reader:ident,
        change_state: $change_state:expr $(,)?
    ) => {
        use super::lifecycle;
        use crate::model::RunId;
        use crate::model::Sha256Hex;
        use crate::store::rows::{
            self, ChangeStateRow, CommitColumns, ModuleRow, NewRunColumns, Placed, RunRow, UsageRow, int,
            select_run,
        };
        use crate::store::{
            ActivationCommit, ChangeModule, CreateRun, Garbage, GarbageRequest, ModuleRecord, ModuleUsage,
            Reapplied, RunRecord, StoreError, StoreResult, VersionStore,
        };
        use async_trait::async_trait;

        #[async_trait]
        impl VersionStore for $store {
            async fn set_default_module(
                &self,
                sha256: &Sha256Hex,
                now_ms: u64,
            ) -> StoreResult<ModuleRecord> {
                let mut tx = self.begin_write().await?;
                sqlx::query(rows::SET_DEFAULT)
                    .bind(sha256.as_str())
                    .bind(int(now_ms))
                    .execute(&mut *tx)
                    .await?;
                let row: Option<ModuleRow> = sqlx::query_as(
                    "SELECT sha256, name, version, size, created_at_ms FROM modules WHERE sha256 = $1",
                )
                .bind(sha256.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                row.ok_or_else(|| StoreError::NotFound {
                    what: format!("module {sha256} (deploy it first)"),
                })?
                .into_record()
            }

            async fn default_module(&self, name: &str) -> StoreResult<Option<ModuleRecord>> {
                let row: Option<ModuleRow> = sqlx::query_as(rows::DEFAULT_OF)
                    .bind(name)
                    .fetch_optional(&self.$reader)
                    .await?;
                row.map(ModuleRow::into_record).transpose()
            }

            async fn module_usage(&self) -> StoreResult<Vec<ModuleUsage>> {
                let rows: Vec<UsageRow> = sqlx::query_as(rows::USAGE).fetch_all(&self.$reader).await?;
                rows.into_iter().map(UsageRow::into_usage).collect()
            }

            async fn runs_of_module(&self, name: &str, closed_sample: u32) -> StoreResult<Vec<RunRecord>> {
                let mut found: Vec<RunRow> = sqlx::query_as(select_run!(
                    "WHERE module_sha256 IN (SELECT sha256 FROM modules WHERE name = $1)
                       AND status IN ('running', 'stuck')
                     ORDER BY created_at_ms, run_id"
                ))
                .bind(name)
                .fetch_all(&self.$reader)
                .await?;
                let closed: Vec<RunRow> = sqlx::query_as(select_run!(
                    "WHERE module_sha256 IN (SELECT sha256 FROM modules WHERE name = $1)
                       AND status NOT IN ('running', 'stuck')
                     ORDER BY closed_at_ms DESC, run_id DESC LIMIT $2"
                ))
                .bind(name)
                .bind(i64::from(closed_sample))
                .fetch_all(&self.$reader)
                .await?;
                found.extend(closed);
                found.into_iter().map(RunRow::into_record).collect()
            }

            async fn change_module(&self, change: ChangeModule) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                let row: Option<ChangeStateRow> = sqlx::query_as($change_state)
                    .bind(change.run_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let plan = rows::plan_change(row, &change)?;
                if let Some(e) = &plan.event {
                    sqlx::query(rows::INSERT_EVENT)
                        .bind(change.run_id.as_str())
                        .bind(int(e.seq))
                        .bind(e.event.kind())
                        .bind(e.event.payload_json())
                        .bind(int(e.recorded_at_ms))
                        .bind(e.hash.to_hex())
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(rows::MOVE_RUN)
                    .bind(change.to.as_str())
                    .bind(plan.last_seq)
                    .bind(&plan.last_hash)
                    .bind(change.run_id.as_str())
                    .bind(change.resume)
                    .bind(int(change.now_ms))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                if change.resume {
                    self.announce_all();
                }
                Ok(())
            }

            async fn collect_garbage(&self, request: GarbageRequest) -> StoreResult<Garbage> {
                let before = int(request.closed_before_ms);
                let limit = request.limit.map_or(i64::MAX, i64::from);
                let mut tx = self.begin_write().await?;
                let mut garbage = Garbage::default();
                for statement in rows::COLLECT_PARTS {
                    delete(&mut tx, statement, before, limit).await?;
                }
                garbage.events = delete(&mut tx, rows::COLLECT_EVENTS, before, limit).await?;
                garbage.runs = delete(&mut tx, rows::COLLECT_RUNS, before, limit).await?;
                let modules: Vec<ModuleRow> = sqlx::query_as(rows::COLLECT_MODULES)
                    .bind(before)
                    .fetch_all(&mut *tx)
                    .await?;
                garbage.modules = modules
                    .into_iter()
                    .map(ModuleRow::into_record)
                    .collect::<StoreResult<_>>()?;
                if request.dry_run {
                    tx.rollback().await?;
                } else {
                    tx.commit().await?;
                }
                Ok(garbage)
            }
            async fn create_reset_run(
                &self,
                run: CreateRun,
                rest: ActivationCommit,
                reapplied: Reapplied,
            ) -> StoreResult<()> {
                let columns = NewRunColumns::new(&run)?;
                let c = CommitColumns::new(&rest)?;
                let mut tx = self.begin_write().await?;
                match lifecycle::place_run(&mut tx, &columns).await? {
                    Placed::New => {}
                    refused => return Err(rows::reset_refused(refused, &columns)),
                }
                inherit(&mut tx, &run.run_id, &c).await?;
                for (name, input) in &reapplied.signals {
                    lifecycle::queue_signal(
                        &mut tx,
                        &run.run_id,
                        name,
                        &input.to_string(),
                        columns.now_ms,
                    )
                    .await?;
                }
                for u in &reapplied.updates {
                    lifecycle::send_update(
                        &mut tx,
                        &run.run_id,
                        &u.update_id,
                        &u.name,
                        &u.input,
                        columns.now_ms,
                        // Updates the run held already: no limit refuses them.
                        i64::MAX,
                    )
                    .await?;
                }
                tx.commit().await?;
                self.announce_all();
                Ok(())
            }
        }

        /// Runs one of the garbage collection's deletes; returns the rows it deleted.
        async fn delete(
            conn: &mut $conn,
            statement: &'static str,
            before: i64,
            limit: i64,
        ) -> sqlx::Result<u64> {
            Ok(sqlx::query(statement)
                .bind(before)
                .bind(limit)
                .execute(conn)
                .await?
                .rows_affected())
        }
    };
}
pub(in crate::store) use version_store;
