//! Activations of claimed runs, many in one statement: what
//! [`append`](super::append) writes for one run, written for a batch (see
//! [`batch`](super::batch)), closes included when they owe no other run
//! anything.

use super::batch::{Lanes, Pools};
use super::many::{self, HEAD_NAMES, HEADS, Heads, Params, Rows};
use super::{Clauses, StoreResult, statement};
use crate::store::ActivationCommit;
use crate::store::rows::CommitColumns;
use sqlx::PgPool;
use std::collections::HashSet;

/// An activation in columns.
pub(in crate::store) struct Append {
    pub(in crate::store) commit: ActivationCommit,
    pub(in crate::store) c: CommitColumns,
}

/// What an [`Append`] did, with it back: `applied`, or it wrote nothing
/// and the caller takes the ordinary way, which says why (the lease or the
/// history moved on) or applies it with what the batch leaves to it.
pub(in crate::store) struct Appended {
    pub(in crate::store) applied: bool,
    pub(in crate::store) append: Append,
}

/// The lanes that commit activations. One run's activations never share a
/// statement: it would update the run's row twice.
pub(in crate::store) fn lanes(pools: Pools) -> Lanes<Append, Appended> {
    Lanes::on(
        pools,
        "activations",
        |a| [a.commit.run_id.as_str(); 2],
        |pools, appends| async move { append_all(&pools.many, appends).await },
    )
}

/// Commits `appends` in one statement, a lone one too: one round trip,
/// where the ordinary way takes four (begin, lock, append, commit). Should
/// it fail, nothing of it was written, and each is left to the ordinary way.
async fn append_all(pool: &PgPool, appends: Vec<Append>) -> Vec<StoreResult<Appended>> {
    let applied = match append_many(pool, &appends).await {
        Ok(applied) => applied,
        Err(e) => {
            tracing::debug!(error = %e, activations = appends.len(), "committing a batch of activations failed; committing each the ordinary way");
            HashSet::new()
        }
    };
    appends
        .into_iter()
        .map(|append| {
            Ok(Appended {
                applied: applied.contains(append.commit.run_id.as_str()),
                append,
            })
        })
        .collect()
}

/// The statement of a batch, by which clauses it needs: the runs from
/// `$1`–`$11`, then their rows (see [`many::sql`]).
///
/// A close applies here only when it owes no other run anything and no
/// wake-up came after the claim its activation was made under. Postgres
/// reads the rows it tests in the statement's snapshot, taken before the
/// run's lock: a wake-up that came in while the statement waited for that
/// lock is seen (the lock re-reads the run's row), anything else that
/// came with it might not be, so such a close goes the ordinary way, which
/// locks first and reads after.
fn sql(clauses: Clauses) -> &'static str {
    statement("append_many", clauses, || {
        let reaches = many::reaches_others("runs.run_id", clauses);
        let rows = many::sql("r", clauses, &mut Params::from(12), None);
        format!(
            "WITH i AS (
                 SELECT * FROM UNNEST({HEADS}) AS i ({HEAD_NAMES})
             ), r AS (
                 UPDATE runs
                    SET last_seq = i.last_seq, last_hash = i.last_hash, handled_wakeups = i.handled_wakeups,
                        lease_owner = NULL, lease_expires_at_ms = 0,
                        status = i.status, output = i.output, failure = i.failure,
                        closed_at_ms = i.closed_at_ms
                   FROM i
                  WHERE runs.run_id = i.run_id AND runs.lease_token = i.lease_token
                    AND runs.last_seq = i.expected_last_seq AND runs.status = 'running'
                    AND NOT (i.closing AND (runs.wakeups <> i.handled_wakeups OR {reaches}))
                 RETURNING runs.run_id
             ), {rows}
             SELECT ARRAY(SELECT run_id FROM r)"
        )
    })
}

/// Commits `appends` in one statement; the runs it applied.
async fn append_many(pool: &PgPool, appends: &[Append]) -> StoreResult<HashSet<String>> {
    let (mut heads, mut rows) = (Heads::default(), Rows::default());
    for a in appends {
        heads.push(&a.commit, &a.c);
        rows.push(a.commit.run_id.as_str(), &a.c, None);
    }
    let clauses = rows.clauses();
    let query = heads.bind(sqlx::query_as(sql(clauses)));
    let (applied,): (Vec<String>,) = rows.bind(query, clauses).fetch_one(pool).await?;
    Ok(applied.into_iter().collect())
}
