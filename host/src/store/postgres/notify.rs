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
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The channel every host listens on; the payload is `<kind> <schema>`.
pub(super) const CHANNEL: &str = "weft_work";

/// The wait before the first reconnection attempt; it doubles up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Starts the feed for the tables in `schema`; it stops when the receiver is dropped.
pub(super) fn spawn(connect: PgConnectOptions, schema: String) -> Changes {
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        tokio::select! {
            () = feed(connect, &schema, &tx) => {}
            () = tx.closed() => {}
        }
    });
    rx
}

async fn feed(connect: PgConnectOptions, schema: &str, tx: &UnboundedSender<Change>) {
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
        let mut listener = match listen(&pool).await {
            Ok(listener) => listener,
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

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is replaced here, explicitly, so that it is reported.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
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
#[derive(Clone, Debug)]
pub(super) struct Notifier {
    tx: UnboundedSender<Kinds>,
}

impl Notifier {
    pub(super) fn spawn(connect: PgConnectOptions, schema: String) -> Self {
        let (tx, rx) = unbounded_channel();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(LAST_RETRY)
            .test_before_acquire(false)
            .connect_lazy_with(connect);
        tokio::spawn(announce(pool, schema, rx));
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

/// Tries to send one notification this many times: the first try may meet
/// a connection the database dropped (the pool is not pinged), the next
/// ones connect afresh.
const ANNOUNCE_ATTEMPTS: u32 = 3;

async fn announce(pool: PgPool, schema: String, mut rx: UnboundedReceiver<Kinds>) {
    while let Some(Kinds(mut bits)) = rx.recv().await {
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
