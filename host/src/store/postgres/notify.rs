//! The change feed: a `LISTEN` on channel [`CHANNEL`], on which hosts
//! announce work they made ready, turned into [`Change`]s; and the
//! [`Notifier`] that announces this host's.
//!
//! A host announces its work after its commit, in a statement of its own
//! (migration 0007 says why: a NOTIFY inside a commit keeps commits from
//! sharing a WAL flush). The triggers of migration 0004 stay for sessions that
//! do not (an older host, a statement by hand).
//!
//! The feed listens on a connection of its own (a pool of one, so that it
//! never takes a connection the store's statements need) and outlives the
//! database going away: when the connection drops it logs, reconnects with
//! backoff, and reports [`Change::Resumed`], since whatever was notified
//! meanwhile is lost.

use crate::store::{Change, Changes};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The channel every host listens on; the payload is `<kind> <schema>`.
pub(super) const CHANNEL: &str = "weft_work";

/// The wait before the first reconnection attempt; it doubles up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// The backend process ids of this store's own listening sessions: its
/// notifier need not wake them (this host's loops hear of its own work in
/// process), so it announces work only while some other session listens.
pub(super) type OwnListeners = Arc<Mutex<HashSet<i32>>>;

/// Starts the feed for the tables in `schema`; it stops when the receiver is dropped.
pub(super) fn spawn(connect: PgConnectOptions, schema: String, own: OwnListeners) -> Changes {
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        let pid = Mutex::new(None);
        tokio::select! {
            () = feed(connect, &schema, &tx, &own, &pid) => {}
            () = tx.closed() => {}
        }
        if let Some(pid) = pid.lock().expect("listener pid poisoned").take() {
            own.lock().expect("own listeners poisoned").remove(&pid);
        }
    });
    rx
}

async fn feed(
    connect: PgConnectOptions,
    schema: &str,
    tx: &UnboundedSender<Change>,
    own: &OwnListeners,
    pid: &Mutex<Option<i32>>,
) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(LAST_RETRY)
        .test_before_acquire(true)
        .connect_lazy_with(connect);
    let mut delay = FIRST_RETRY;
    let mut failures = 0u32;
    let mut connected_before = false;
    loop {
        let (mut listener, listening) = match listen(&pool).await {
            Ok(listening) => listening,
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(
                        "cannot listen for work that other hosts make ready: {e}; retrying with backoff, polling meanwhile"
                    );
                }
                failures += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(LAST_RETRY);
                continue;
            }
        };
        if connected_before || failures > 0 {
            tracing::info!(
                attempts = failures + 1,
                "listening again for work that other hosts make ready; every loop looks for work, since notifications may have been missed"
            );
        }
        (connected_before, failures, delay) = (true, 0, FIRST_RETRY);
        {
            let before = pid
                .lock()
                .expect("listener pid poisoned")
                .replace(listening);
            let mut own = own.lock().expect("own listeners poisoned");
            if let Some(before) = before {
                own.remove(&before);
            }
            own.insert(listening);
        }
        if tx.send(Change::Resumed).is_err() {
            return;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(change) = parse(notification.payload(), schema)
                        && tx.send(change).is_err()
                    {
                        return;
                    }
                }
                Ok(None) => {
                    tracing::warn!("the connection listening for work was lost; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!("listening for work failed: {e}; reconnecting");
                    break;
                }
            }
        }
    }
}

/// A session listening on [`CHANNEL`], and its backend process id (read
/// before the `LISTEN`, which must stay the session's last statement: that is
/// how notifiers see that it listens).
async fn listen(pool: &PgPool) -> Result<(PgListener, i32), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is replaced here, explicitly, so that it is reported.
    listener.eager_reconnect(false);
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut listener)
        .await?;
    listener.listen(CHANNEL).await?;
    Ok((listener, pid))
}

/// The kinds of work one write made ready, as a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Kinds(u8);

impl Kinds {
    pub(super) const NONE: Kinds = Kinds(0);
    /// A run became runnable (created, woken, or its parent or children were).
    pub(super) const RUN: Kinds = Kinds(1);
    /// A timer started.
    pub(super) const TIMER: Kinds = Kinds(2);
    /// An activity task became claimable.
    pub(super) const ACTIVITY: Kinds = Kinds(4);
    /// An activity deadline was set.
    pub(super) const TIMEOUT: Kinds = Kinds(8);
    pub(super) const ALL: Kinds = Kinds(15);

    /// `self` and `other` when `when` holds, else `self`.
    pub(super) fn with(self, other: Kinds, when: bool) -> Kinds {
        if when { Kinds(self.0 | other.0) } else { self }
    }

    /// The payload words of each kind in the set, as the feed parses them.
    fn words(self) -> impl Iterator<Item = &'static str> {
        [
            (Kinds::RUN, "run"),
            (Kinds::TIMER, "timer"),
            (Kinds::ACTIVITY, "activity"),
            (Kinds::TIMEOUT, "timeout"),
        ]
        .into_iter()
        .filter(move |(k, _)| self.0 & k.0 != 0)
        .map(|(_, word)| word)
    }
}

/// Announces the work this host's commits made ready to every host
/// listening, after the commits, from a connection of its own. Kinds
/// announced while a notification is on its way are folded into the next
/// one, so a busy host sends far fewer notifications than it commits. A
/// notification that fails is dropped with a debug line: the others' poll is
/// the safety net, as for a notification lost while they reconnect.
///
/// Nothing is sent while no session but this store's own listens (a host
/// alone on its database hears of its own work in process); whether one
/// does is looked up at most once every [`LISTENERS_CHECK`].
///
/// The notifying session commits with `synchronous_commit = off`: a NOTIFY
/// takes a transaction id, and its commit would otherwise wait for a WAL
/// flush of its own. It writes no data, so there is nothing to keep: a
/// notification lost in a crash is one the listeners, whose connections go
/// with it, could not have received anyway.
#[derive(Clone, Debug)]
pub(super) struct Notifier {
    tx: UnboundedSender<Kinds>,
}

impl Notifier {
    pub(super) fn spawn(connect: PgConnectOptions, schema: String, own: OwnListeners) -> Self {
        let (tx, rx) = unbounded_channel();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(LAST_RETRY)
            .test_before_acquire(false)
            .connect_lazy_with(connect.options([("synchronous_commit", "off")]));
        tokio::spawn(announce(pool, schema, own, rx));
        Self { tx }
    }

    /// Announces `kinds` (nothing for none). Never waits.
    pub(super) fn notify(&self, kinds: Kinds) {
        if kinds != Kinds::NONE {
            // The task ends only when every store handle is gone.
            let _ = self.tx.send(kinds);
        }
    }
}

/// How long the answer to "does another session listen?" is trusted.
const LISTENERS_CHECK: Duration = Duration::from_secs(1);

/// Whether a session other than this store's own listening ones is
/// listening (an error counts as yes: better a needless notification).
async fn others_listen(pool: &PgPool, own: &OwnListeners) -> bool {
    let own: Vec<i32> = own
        .lock()
        .expect("own listeners poisoned")
        .iter()
        .copied()
        .collect();
    sqlx::query_scalar(
        // A session of another role whose query this one may not see could
        // be listening too.
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                         WHERE datname = current_database()
                           AND (query LIKE 'LISTEN %' OR query = '<insufficient privilege>')
                           AND pid <> ALL($1::int[]))",
    )
    .bind(&own)
    .fetch_one(pool)
    .await
    .unwrap_or(true)
}

/// Tries to send one notification this many times: the first try may meet
/// a connection the database dropped (the pool is not pinged), the next
/// ones connect afresh.
const ANNOUNCE_ATTEMPTS: u32 = 3;

async fn announce(
    pool: PgPool,
    schema: String,
    own: OwnListeners,
    mut rx: UnboundedReceiver<Kinds>,
) {
    let mut others: Option<(bool, Instant)> = None;
    while let Some(Kinds(mut bits)) = rx.recv().await {
        let listen = match others {
            Some((listen, at)) if at.elapsed() < LISTENERS_CHECK => listen,
            _ => {
                let listen = others_listen(&pool, &own).await;
                others = Some((listen, Instant::now()));
                listen
            }
        };
        if !listen {
            continue;
        }
        let mut pause = FIRST_RETRY;
        for attempt in 1..=ANNOUNCE_ATTEMPTS {
            while let Ok(Kinds(more)) = rx.try_recv() {
                bits |= more;
            }
            let payloads: Vec<String> = Kinds(bits)
                .words()
                .map(|word| format!("{word} {schema}"))
                .collect();
            let sent = sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(&payloads)
                .execute(&pool)
                .await;
            match sent {
                Ok(_) => break,
                Err(e) if attempt == ANNOUNCE_ATTEMPTS => tracing::debug!(
                    "announcing work to other hosts failed: {e}; they find it at their next poll"
                ),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }
    pool.close().await;
}

/// The change a payload reports, if it is about the tables in `schema`.
fn parse(payload: &str, schema: &str) -> Option<Change> {
    let (kind, of) = payload.split_once(' ')?;
    if of != schema {
        return None;
    }
    match kind {
        "run" => Some(Change::Runs),
        "timer" => Some(Change::Timers),
        "activity" => Some(Change::Activities),
        "timeout" => Some(Change::Timeouts),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_announces_the_word_the_feed_parses() {
        let kinds = Kinds::NONE
            .with(Kinds::RUN, true)
            .with(Kinds::TIMER, false)
            .with(Kinds::TIMEOUT, true);
        assert_eq!(kinds.words().collect::<Vec<_>>(), ["run", "timeout"]);
        let all: Vec<_> = Kinds::ALL
            .words()
            .map(|w| parse(&format!("{w} s"), "s"))
            .collect();
        assert_eq!(
            all,
            [
                Some(Change::Runs),
                Some(Change::Timers),
                Some(Change::Activities),
                Some(Change::Timeouts)
            ]
        );
    }

    #[test]
    fn payloads_of_other_schemas_are_ignored() {
        assert_eq!(parse("run public", "public"), Some(Change::Runs));
        assert_eq!(parse("activity s1", "s1"), Some(Change::Activities));
        assert_eq!(parse("timer s1", "s1"), Some(Change::Timers));
        assert_eq!(parse("timeout s1", "s1"), Some(Change::Timeouts));
        assert_eq!(parse("run s2", "s1"), None);
        assert_eq!(parse("bogus s1", "s1"), None);
        assert_eq!(parse("run", "run"), None);
    }
}
