//! The change feed: a `LISTEN` on channel [`CHANNEL`], which the triggers of
//! migration 0004 notify when work becomes ready, turned into [`Change`]s.
//!
//! The feed listens on a connection of its own (a pool of one, so that it
//! never takes a connection the store's statements need) and outlives the
//! database going away: when the connection drops it logs, reconnects with
//! backoff, and reports [`Change::Resumed`], since whatever was notified
//! meanwhile is lost.

use crate::store::{Change, Changes};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

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
