//! Finding work and the clock: the loops that claim runs for activation and
//! activity tasks for execution, and the [`Clock`] they all read.
//!
//! Work is found by claiming it in the store under a lease, never by holding
//! it in memory, so any number of hosts can share one database. Within a
//! process, a [`Wakeups`] notification wakes a loop at once; a due timer wakes
//! it at the timer's time on the [`Clock`]; a slow poll catches work that other
//! hosts made ready.

mod clock;

pub use clock::{Clock, ManualClock, SystemClock};

use crate::activity::run_attempt;
use crate::host::HostInner;
use crate::model::RunId;
use crate::store::StoreError;
use crate::workflow::DriverError;
use std::time::Duration;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, Semaphore, watch};

/// How long a run that found every instance slot in use waits before it is handed back.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// In-process wake-ups between the API and the loops.
#[derive(Default)]
pub(crate) struct Wakeups {
    pub(crate) activations: Notify,
    pub(crate) activities: Notify,
    /// Per run with someone waiting for it to stop running: wakes only them.
    closed: Mutex<HashMap<RunId, Arc<Notify>>>,
    /// Per run with someone waiting for an update's answer: woken by every
    /// committed activation of the run.
    updated: Mutex<HashMap<RunId, Arc<Notify>>>,
}

impl Wakeups {
    /// The notification that fires when `run` stops running on this host.
    pub(crate) fn on_close(&self, run: &RunId) -> Arc<Notify> {
        self.closed
            .lock()
            .expect("wake-ups poisoned")
            .entry(run.clone())
            .or_default()
            .clone()
    }

    /// Forgets `run`'s notification once its last waiter is gone.
    pub(crate) fn forget_close(&self, run: &RunId, notify: Arc<Notify>) {
        let mut map = self.closed.lock().expect("wake-ups poisoned");
        // One reference is the map's, one is the caller's: nobody else waits.
        if Arc::strong_count(&notify) <= 2 {
            map.remove(run);
        }
    }

    /// The notification that fires when an activation of `run` commits.
    pub(crate) fn on_update(&self, run: &RunId) -> Arc<Notify> {
        self.updated
            .lock()
            .expect("wake-ups poisoned")
            .entry(run.clone())
            .or_default()
            .clone()
    }

    pub(crate) fn forget_update(&self, run: &RunId, notify: Arc<Notify>) {
        let mut map = self.updated.lock().expect("wake-ups poisoned");
        if Arc::strong_count(&notify) <= 2 {
            map.remove(run);
        }
    }

    pub(crate) fn run_activated(&self, run: &RunId) {
        if let Some(n) = self.updated.lock().expect("wake-ups poisoned").get(run) {
            n.notify_waiters();
        }
    }

    pub(crate) fn run_closed(&self, run: &RunId) {
        self.run_activated(run);
        if let Some(n) = self.closed.lock().expect("wake-ups poisoned").get(run) {
            n.notify_waiters();
        }
    }
}

/// Claims runs that need an activation and drives them, a bounded number at a time.
pub(crate) async fn activation_loop(host: Arc<HostInner>, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(
        host.config.max_concurrent_activations.max(1),
    ));
    let in_flight: Arc<Mutex<HashSet<RunId>>> = Arc::default();
    while !*shutdown.borrow() {
        let woken = host.wakeups.activations.notified();
        let free = permits.available_permits() as u32;
        let now = host.clock.now_ms();
        let lease_ms = host.config.run_lease.as_millis() as u64;
        let claims = if free == 0 {
            Vec::new()
        } else {
            match host
                .store
                .claim_runs(&host.config.host_id, now, lease_ms, free)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("claiming runs failed: {e}");
                    Vec::new()
                }
            }
        };
        let claimed_any = !claims.is_empty();
        if claimed_any {
            tracing::debug!(runs = claims.len(), "claimed runs for activation");
        }
        for claim in claims {
            let fresh = in_flight
                .lock()
                .expect("in-flight set poisoned")
                .insert(claim.run_id.clone());
            if !fresh {
                // Released by its activation a moment ago and claimed again
                // before that activation finished: hand it straight back.
                let _ = host
                    .store
                    .release_run(&claim.run_id, claim.lease_token)
                    .await;
                continue;
            }
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closes");
            let (host, in_flight) = (host.clone(), in_flight.clone());
            tokio::spawn(async move {
                let release = match host.driver.activate(&claim).await {
                    Ok(report) => {
                        host.wakeups.run_activated(&claim.run_id);
                        if report.new_activities > 0 {
                            host.wakeups.activities.notify_one();
                        }
                        if report.closed {
                            host.wakeups.run_closed(&claim.run_id);
                        }
                        false
                    }
                    Err(DriverError::Store(StoreError::Conflict { .. })) => {
                        tracing::debug!(run_id = %claim.run_id, "another host took the run over; its activation was dropped");
                        false
                    }
                    Err(e @ DriverError::Busy { .. }) => {
                        tracing::debug!("{e}");
                        // Let the instance slots drain before the run is tried again.
                        tokio::time::sleep(BUSY_PAUSE).await;
                        true
                    }
                    Err(e) => {
                        tracing::warn!(run_id = %claim.run_id, "activation failed, it will be retried: {e}");
                        true
                    }
                };
                in_flight
                    .lock()
                    .expect("in-flight set poisoned")
                    .remove(&claim.run_id);
                if release {
                    // Hand the run back now rather than when the lease expires.
                    let _ = host
                        .store
                        .release_run(&claim.run_id, claim.lease_token)
                        .await;
                }
                drop(permit);
                // A finished activation may have left the run (or others) runnable.
                host.wakeups.activations.notify_one();
            });
        }
        if claimed_any {
            tokio::task::yield_now().await;
            continue;
        }
        let next_timer = host.store.next_timer_at().await.ok().flatten();
        wait(&host, woken, next_timer, &mut shutdown).await;
    }
}

/// Claims activity tasks this host can run and runs them, a bounded number at a time.
pub(crate) async fn activity_loop(host: Arc<HostInner>, mut shutdown: watch::Receiver<bool>) {
    let names = host.activities.names();
    if names.is_empty() {
        return;
    }
    let permits = Arc::new(Semaphore::new(host.config.max_concurrent_activities.max(1)));
    let default_timeout_ms = host.config.default_start_to_close.as_millis() as u64;
    while !*shutdown.borrow() {
        let woken = host.wakeups.activities.notified();
        let free = permits.available_permits() as u32;
        let now = host.clock.now_ms();
        let tasks = if free == 0 {
            Vec::new()
        } else {
            match host
                .store
                .claim_activities(&host.config.host_id, &names, now, default_timeout_ms, free)
                .await
            {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("claiming activity tasks failed: {e}");
                    Vec::new()
                }
            }
        };
        let claimed_any = !tasks.is_empty();
        for t in &tasks {
            tracing::debug!(run_id = %t.run_id, seq = t.seq, activity = %t.name, attempt = t.attempt, "claimed an activity attempt");
        }
        for task in tasks {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closes");
            let host = host.clone();
            tokio::spawn(async move {
                let outcome = run_attempt(
                    &host.activities,
                    host.clock.as_ref(),
                    &task,
                    default_timeout_ms,
                )
                .await;
                let now = host.clock.now_ms();
                match host
                    .store
                    .finish_attempt(&task.run_id, task.seq, task.lease_token, outcome, now)
                    .await
                {
                    Ok(()) => host.wakeups.activations.notify_one(),
                    Err(e) => {
                        tracing::warn!(run_id = %task.run_id, seq = task.seq, "recording an activity attempt failed: {e}")
                    }
                }
                drop(permit);
                host.wakeups.activities.notify_one();
            });
        }
        if claimed_any {
            tokio::task::yield_now().await;
            continue;
        }
        let next = host.store.next_activity_at(&names).await.ok().flatten();
        wait(&host, woken, next, &mut shutdown).await;
    }
}

/// Sleeps until notified, until `until_ms` on the host clock, until the poll
/// interval passes (work made ready by other hosts), or until shutdown.
async fn wait(
    host: &HostInner,
    woken: tokio::sync::futures::Notified<'_>,
    until_ms: Option<u64>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let due = async {
        match until_ms {
            Some(t) => host.clock.sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = woken => {}
        () = due => {}
        () = tokio::time::sleep(host.config.poll_interval) => {}
        _ = shutdown.changed() => {}
    }
}
