//! Group commit on Postgres: one statement writes the same kind of write
//! for many runs.
//!
//! Most of what a hot statement costs Postgres is paid once per statement,
//! not once per row: the protocol messages, the executor's start-up (every
//! table and index the statement may touch is opened and locked), the
//! commit. A batch of eight starts in one statement wrote ~3× as many runs
//! per second as eight statements from eight connections, measured with
//! pgbench on this machine's 2 cores.
//!
//! [`Lanes`] takes the writes waiting when a lane becomes free (one when a
//! single client writes: nothing waits for a batch to fill), up to
//! [`MAX_BATCH`], and hands them to the kind's batch writer, which answers
//! each with its own result once its statement committed. A few lanes write
//! at once, so one batch's round trip and flush overlap the next one's work.
//! Two writes with the same key (one run, one workflow id) never share a
//! batch: one statement must not write one row twice. Writes in different
//! batches race as writes from different connections always did.

use super::{StoreError, StoreResult};
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most writes in one statement: enough that the statement's fixed cost is
/// shared widely, few enough that the first write in line does not wait long
/// behind the rest.
pub(super) const MAX_BATCH: usize = 32;

/// Batches written at once. With two, a batch is prepared and sent while the
/// other one's commit is flushed; more did not write faster on 2 cores.
pub(super) const LANES: usize = 2;

/// Writes a batch: one result per item, in the items' order.
pub(super) type WriteBatch<I, O> =
    Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, Vec<StoreResult<O>>> + Send + Sync>;

/// What keeps two writes out of one batch: equal keys.
pub(super) type Keys<I> = fn(&I) -> [&str; 2];

/// Where the lanes write.
#[derive(Clone, Debug)]
pub(super) struct Pools {
    /// The store's pool, whose sessions plan each statement once: for a
    /// write of one run.
    pub(super) one: sqlx::PgPool,
    /// Sessions for the statements of many runs, which each session plans
    /// once, as the store's pool does, but may only join the batch to a
    /// table by looking each run up by its key (no sequential scans, hash
    /// or merge joins). Left free, a plan made while the tables were small
    /// joined the batch to them by scanning them whole (seen in the bench:
    /// every batch read all of `runs` and `activity_tasks`) and kept doing
    /// so as they grew. Planning at each call avoided that but cost ~2.2 ms
    /// of a batch's ~5.7 ms in a statement log of 1,000 `hello` workflows;
    /// planned once, binding a batch takes ~0.4 ms.
    pub(super) many: sqlx::PgPool,
}

struct Pending<I, O> {
    item: I,
    reply: oneshot::Sender<StoreResult<O>>,
}

/// The line of one kind of write to its lanes, which run while any clone of
/// the store holds this.
pub(super) struct Lanes<I, O> {
    line: mpsc::UnboundedSender<Pending<I, O>>,
    what: &'static str,
}

impl<I, O> Clone for Lanes<I, O> {
    fn clone(&self) -> Self {
        Self {
            line: self.line.clone(),
            what: self.what,
        }
    }
}

impl<I, O> std::fmt::Debug for Lanes<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes").field("what", &self.what).finish()
    }
}

impl<I: Send + 'static, O: Send + 'static> Lanes<I, O> {
    /// Starts [`LANES`] lanes that write batches of `what` with `write`,
    /// keeping writes with a key in common apart.
    pub(super) fn spawn(what: &'static str, keys: Keys<I>, write: WriteBatch<I, O>) -> Self {
        let (line, waiting) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..LANES {
            tokio::spawn(lane(waiting.clone(), keys, write.clone()));
        }
        Self { line, what }
    }

    /// [`Lanes::spawn`] with `write` given the store's [`Pools`]:
    /// `write(pools, batch)` gives one result per item of the batch, in its
    /// order.
    pub(super) fn on<F, Fut>(pools: Pools, what: &'static str, keys: Keys<I>, write: F) -> Self
    where
        F: Fn(Pools, Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Vec<StoreResult<O>>> + Send + 'static,
    {
        let write: WriteBatch<I, O> = Arc::new(move |batch| Box::pin(write(pools.clone(), batch)));
        Self::spawn(what, keys, write)
    }

    /// Writes `item` in the next batch a lane takes, and gives its result
    /// once the batch's statement committed.
    pub(super) async fn write(&self, item: I) -> StoreResult<O> {
        let (reply, answer) = oneshot::channel();
        self.line.send(Pending { item, reply }).map_err(|_| {
            StoreError::Unavailable(format!("the Postgres writer of {} has stopped", self.what))
        })?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the Postgres writer of {} stopped before this write committed",
                self.what
            )))
        })
    }
}

async fn lane<I: Send + 'static, O: Send + 'static>(
    waiting: Arc<Mutex<mpsc::UnboundedReceiver<Pending<I, O>>>>,
    keys: Keys<I>,
    write: WriteBatch<I, O>,
) {
    // A write that shared a key with the batch before: it leads the next
    // one, without waiting for the line (another lane may be waiting on it
    // for new writes, holding it, while this one is ready).
    let mut held: Option<Pending<I, O>> = None;
    loop {
        let batch = match held.take() {
            Some(first) => {
                let mut batch = vec![first];
                if let Ok(mut line) = waiting.try_lock() {
                    held = fill(&mut line, &mut batch, keys);
                }
                batch
            }
            None => {
                let mut line = waiting.lock().await;
                let Some(first) = line.recv().await else {
                    return;
                };
                let mut batch = vec![first];
                held = fill(&mut line, &mut batch, keys);
                batch
            }
        };
        let (items, replies): (Vec<I>, Vec<_>) =
            batch.into_iter().map(|p| (p.item, p.reply)).unzip();
        let count = items.len();
        let mut results = write(items).await.into_iter();
        for reply in replies {
            let result = results.next().unwrap_or_else(|| {
                Err(StoreError::Corrupt(format!(
                    "a batch of {count} writes gave fewer results than writes"
                )))
            });
            // A caller that gave up no longer listens.
            let _ = reply.send(result);
        }
    }
}

/// Adds the writes waiting in `line` to `batch`, up to [`MAX_BATCH`]; the
/// first that shares a key with one taken ends the batch and is given back.
fn fill<I, O>(
    line: &mut mpsc::UnboundedReceiver<Pending<I, O>>,
    batch: &mut Vec<Pending<I, O>>,
    keys: Keys<I>,
) -> Option<Pending<I, O>> {
    while batch.len() < MAX_BATCH {
        let Ok(next) = line.try_recv() else {
            return None;
        };
        let clash = keys(&next.item)
            .iter()
            .any(|key| batch.iter().any(|taken| keys(&taken.item).contains(key)));
        if clash {
            return Some(next);
        }
        batch.push(next);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// Writes that share a key go in different batches, and every write
    /// gets its own answer.
    #[tokio::test]
    async fn writes_with_a_key_in_common_never_share_a_batch() {
        let seen: Arc<StdMutex<Vec<Vec<String>>>> = Arc::default();
        let record = seen.clone();
        let write: WriteBatch<(String, String), String> = Arc::new(move |items| {
            let record = record.clone();
            Box::pin(async move {
                record
                    .lock()
                    .unwrap()
                    .push(items.iter().map(|(a, b)| format!("{a}/{b}")).collect());
                tokio::task::yield_now().await;
                items
                    .into_iter()
                    .map(|(a, b)| {
                        if b == "bad" {
                            Err(StoreError::Corrupt(format!("{a} is bad")))
                        } else {
                            Ok(format!("{a}:{b}"))
                        }
                    })
                    .collect()
            })
        });
        let lanes = Lanes::spawn("tests", |(a, b)| [a.as_str(), b.as_str()], write);
        let items = [("r1", "w1"), ("r2", "w2"), ("r3", "w1"), ("r4", "bad")];
        // A write held back for a clash is answered even though no write
        // comes after it (it once waited for one, behind the other lane).
        let answers = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            futures::future::join_all(
                items
                    .iter()
                    .map(|(a, b)| lanes.write((a.to_string(), b.to_string()))),
            ),
        )
        .await
        .expect("every write is answered");
        assert_eq!(answers[0].as_ref().unwrap(), "r1:w1");
        assert_eq!(answers[1].as_ref().unwrap(), "r2:w2");
        assert_eq!(answers[2].as_ref().unwrap(), "r3:w1");
        assert!(matches!(&answers[3], Err(StoreError::Corrupt(m)) if m == "r4 is bad"));
        let batches = seen.lock().unwrap().clone();
        for batch in &batches {
            let w1 = batch.iter().filter(|w| w.ends_with("/w1")).count();
            assert!(w1 <= 1, "two writes of w1 shared a batch: {batches:?}");
        }
    }
}
