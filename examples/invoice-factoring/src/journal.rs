//! [`Journal`]: what the stand-in services did, stamped with the time they
//! did it and the activity attempt that asked them, so that a test can
//! assert on it and the demo can print it as a timeline.

use std::sync::{Arc, Mutex, PoisonError};
use weft::model::RunId;
use weft::{ActivityContext, Clock, SystemClock};

/// One thing a service did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// When, in ms since the Unix epoch, on the journal's clock.
    pub at_ms: u64,
    /// Which service: `registry`, `bureau`, `bank`, `collections`.
    pub service: &'static str,
    /// The activity attempt that asked for it.
    pub by: Attempt,
    pub text: String,
}

/// An activity attempt, as the journal remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub run_id: RunId,
    /// The activity's sequence number within the run.
    pub seq: u32,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl From<&ActivityContext> for Attempt {
    fn from(ctx: &ActivityContext) -> Self {
        Self {
            run_id: ctx.run_id.clone(),
            seq: ctx.seq,
            attempt: ctx.attempt(),
        }
    }
}

type Observer = Box<dyn Fn(&Entry) + Send + Sync>;

/// An append-only list of [`Entry`]s, shared by every clone.
///
/// Its clock is the system's until [`use_clock`](Self::use_clock) hands it
/// the host's: a test or the demo gives it the test environment's virtual
/// clock, so entries carry virtual time.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Mutex<Arc<dyn Clock>>,
    entries: Mutex<Vec<Entry>>,
    observer: Mutex<Option<Observer>>,
}

impl Default for Journal {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                clock: Mutex::new(Arc::new(SystemClock)),
                entries: Mutex::default(),
                observer: Mutex::default(),
            }),
        }
    }
}

impl Journal {
    /// Stamps entries from now on with `clock`'s time.
    pub fn use_clock(&self, clock: impl Clock) {
        *lock(&self.inner.clock) = Arc::new(clock);
    }

    /// Calls `observer` with every entry as it is written.
    pub fn observe(&self, observer: impl Fn(&Entry) + Send + Sync + 'static) {
        *lock(&self.inner.observer) = Some(Box::new(observer));
    }

    /// The time on the journal's clock.
    pub fn now_ms(&self) -> u64 {
        lock(&self.inner.clock).now_ms()
    }

    pub(crate) fn write(&self, service: &'static str, ctx: &ActivityContext, text: String) {
        let entry = Entry {
            at_ms: self.now_ms(),
            service,
            by: Attempt::from(ctx),
            text,
        };
        if let Some(observer) = lock(&self.inner.observer).as_ref() {
            observer(&entry);
        }
        lock(&self.inner.entries).push(entry);
    }

    /// Every entry so far, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        lock(&self.inner.entries).clone()
    }

    /// The entries of one service, oldest first.
    pub fn of(&self, service: &str) -> Vec<Entry> {
        lock(&self.inner.entries)
            .iter()
            .filter(|e| e.service == service)
            .cloned()
            .collect()
    }
}

/// A poisoned lock only means another thread panicked mid-write of a
/// journal line; the data is still a list of whole entries.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `ms` since the Unix epoch as `Mon 2026-01-05 09:00:00` (UTC).
pub fn format_time(ms: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let secs = ms / 1000;
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    let of_day = secs % 86_400;
    format!(
        "{} {year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        WEEKDAYS[(days % 7) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_virtual_dates() {
        assert_eq!(format_time(0), "Thu 1970-01-01 00:00:00");
        assert_eq!(format_time(1_767_225_600_000), "Thu 2026-01-01 00:00:00");
        assert_eq!(
            format_time(1_767_225_600_000 + (4 * 86_400 + 9 * 3600 + 30) * 1000),
            "Mon 2026-01-05 09:00:30"
        );
        assert_eq!(format_time(1_772_323_200_000), "Sun 2026-03-01 00:00:00");
    }
}
