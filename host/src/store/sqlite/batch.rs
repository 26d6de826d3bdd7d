//! Group commit on SQLite: the hot writes of many runs share one transaction.
//!
//! SQLite has one writer. The committer takes whatever writes are waiting
//! when the writer becomes free (one when a single client writes: nothing
//! waits for a batch to fill), runs each in a savepoint of its own — a write
//! that fails is rolled back alone and the others still commit — and answers
//! each only after the commit returned. One `BEGIN IMMEDIATE` and one commit
//! serve the batch, and a write waits in a queue instead of for the pool's
//! one connection.

use super::{StoreError, StoreResult};
use futures::future::BoxFuture;
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

/// Most writes in one transaction: enough to share the pages, few enough
/// that the first write in line does not wait long behind the rest.
const MAX_BATCH: usize = 64;

/// What a write does in the batch's transaction.
pub(super) type Work<T> =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>> + Send>;

/// A write in line for the committer.
trait Queued: Send {
    /// Runs the write; whether it succeeded (and its changes are kept).
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool>;

    /// Answers the caller: the write's own result, unless the transaction
    /// that held it failed to commit (`failed`, why).
    fn answer(self: Box<Self>, failed: Option<&str>);
}

struct Write<T> {
    work: Option<Work<T>>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send + 'static> Queued for Write<T> {
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let work = self.work.take().expect("a write runs once");
            let result = work(conn).await;
            let ok = result.is_ok();
            self.result = Some(result);
            ok
        })
    }

    fn answer(self: Box<Self>, failed: Option<&str>) {
        let result = match (self.result, failed) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(why)) => Err(StoreError::Unavailable(format!(
                "the SQLite transaction holding this write did not commit: {why}"
            ))),
            (Some(ok), None) => ok,
            (None, None) => Err(StoreError::Unavailable(
                "the SQLite writer stopped before this write ran".into(),
            )),
        };
        // A caller that gave up no longer listens.
        let _ = self.reply.send(result);
    }
}

/// `work` in line, and where its answer comes.
fn queued<T: Send + 'static>(
    work: Work<T>,
) -> (Box<dyn Queued>, oneshot::Receiver<StoreResult<T>>) {
    let (reply, answer) = oneshot::channel();
    let write = Write {
        work: Some(work),
        result: None,
        reply,
    };
    (Box::new(write), answer)
}

/// The line of writes to the committer task, which runs while any clone of
/// the store holds this.
#[derive(Clone, Debug)]
pub(super) struct Committer {
    line: mpsc::UnboundedSender<Box<dyn Queued>>,
}

impl Committer {
    /// Starts the committer on `writer`, the store's one writing connection.
    pub(super) fn spawn(writer: SqlitePool) -> Self {
        let (line, waiting) = mpsc::unbounded_channel();
        tokio::spawn(commit_batches(writer, waiting));
        Self { line }
    }

    /// Runs `work` in the next transaction the committer commits, and gives
    /// its result once that transaction committed.
    pub(super) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        let (write, answer) = queued(Box::new(work));
        self.line
            .send(write)
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the SQLite writer stopped before this write committed".into(),
            ))
        })
    }
}

async fn commit_batches(writer: SqlitePool, mut waiting: mpsc::UnboundedReceiver<Box<dyn Queued>>) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let failed = commit(&writer, &mut batch).await.err();
        for write in batch {
            write.answer(failed.as_deref());
        }
    }
}

/// Runs `batch` in one transaction and commits it. A lone write needs no
/// savepoint: when it fails, the whole transaction is rolled back.
async fn commit(writer: &SqlitePool, batch: &mut [Box<dyn Queued>]) -> Result<(), String> {
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| e.to_string())?;
    if let [write] = batch {
        if !write.run(&mut tx).await {
            // Dropping the transaction rolls it back; the write reports its own error.
            return Ok(());
        }
    } else {
        for write in batch.iter_mut() {
            let mut savepoint = sqlx::Connection::begin(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            if write.run(&mut savepoint).await {
                savepoint.commit().await.map_err(|e| e.to_string())?;
            } else {
                savepoint.rollback().await.map_err(|e| e.to_string())?;
            }
        }
    }
    tx.commit().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqlitePoolOptions;

    fn insert(keys: &'static [&'static str]) -> Work<()> {
        Box::new(move |conn| {
            Box::pin(async move {
                for key in keys {
                    sqlx::query("INSERT INTO t (k) VALUES ($1)")
                        .bind(*key)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
    }

    /// A private database with one table of keys.
    async fn table() -> SqlitePool {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    async fn keys(pool: &SqlitePool) -> Vec<String> {
        sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_write_that_fails_is_undone_alone_and_the_rest_of_its_batch_commits() {
        let pool = table().await;
        // The second writes `b`, then fails on a key the first wrote.
        let (first, first_answer) = queued(insert(&["a"]));
        let (second, second_answer) = queued(insert(&["b", "a"]));
        let (third, third_answer) = queued(insert(&["c"]));
        let mut batch = vec![first, second, third];
        commit(&pool, &mut batch).await.unwrap();
        for write in batch {
            write.answer(None);
        }
        assert!(first_answer.await.unwrap().is_ok());
        assert!(second_answer.await.unwrap().is_err());
        assert!(third_answer.await.unwrap().is_ok());
        assert_eq!(keys(&pool).await, ["a", "c"]);

        // A lone write that fails leaves nothing either.
        let (lone, answer) = queued(insert(&["d", "a"]));
        let mut batch = vec![lone];
        commit(&pool, &mut batch).await.unwrap();
        batch.pop().unwrap().answer(None);
        assert!(answer.await.unwrap().is_err());
        assert_eq!(keys(&pool).await, ["a", "c"]);
    }

    #[tokio::test]
    async fn writes_sent_at_once_all_commit_and_answer() {
        let pool = table().await;
        let committer = Committer::spawn(pool.clone());
        const KEYS: [&[&str]; 4] = [&["w"], &["x"], &["y"], &["z"]];
        let writes = KEYS.map(|keys| committer.write(insert(keys)));
        for answer in futures::future::join_all(writes).await {
            answer.unwrap();
        }
        assert_eq!(keys(&pool).await, ["w", "x", "y", "z"]);
        // The same key again: refused, and said so.
        assert!(committer.write(insert(&["w"])).await.is_err());
    }
}
