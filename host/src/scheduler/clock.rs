use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Where the host's core gets the time. Nothing else in the core reads a clock.
///
/// [`SystemClock`] is the real one; [`ManualClock`] is moved by hand so a test
/// can run a workflow that sleeps 30 days in milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Resolves once `now_ms() >= deadline_ms`.
    fn sleep_until(&self, deadline_ms: u64) -> BoxFuture<'static, ()>;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn sleep_until(&self, deadline_ms: u64) -> BoxFuture<'static, ()> {
        let wait = deadline_ms.saturating_sub(self.now_ms());
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to. Cheap to clone; clones share the time.
///
/// ```
/// use weft::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(30 * 24 * 3600));
/// assert_eq!(clock.now_ms(), 1_000 + 30 * 24 * 3600 * 1000);
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<u64>>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(start_ms)),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.now
            .send_modify(|t| *t = t.saturating_add(by.as_millis() as u64));
    }

    /// Moves the clock to `ms`; it never goes backwards.
    pub fn set(&self, ms: u64) {
        self.now.send_modify(|t| *t = (*t).max(ms));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline_ms: u64) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; if all are gone, never wake.
            if rx.wait_for(|t| *t >= deadline_ms).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}
