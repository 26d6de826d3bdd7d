//! Finding work and the clock: the loops that claim runs for activation and
//! activity tasks for execution, the sweep that enforces activity timeouts,
//! and the [`Clock`] they all read.
//!
//! Work is found by claiming it in the store under a lease, never by holding
//! it in memory, so any number of hosts can share one database. Within a
//! process, a [`Wakeups`] notification wakes a loop at once; a due timer (or
//! activity deadline) wakes it at that time on the [`Clock`]; across hosts,
//! the store's change feed ([`change_loop`]) wakes it, and a slow poll is the
//! safety net.
//!
//! A loop rides out the database going away: it logs once per outage, backs
//! off ([`Outage`]) and carries on when the database answers again.
//!
//! Local activities skip the queue: the activation loop claims each one its
//! activation scheduled, by key, and runs it at once in this process.

mod clock;

pub use clock::{Clock, ManualClock, SystemClock};

use crate::activity::{AttemptRunner, StoreSink};
use crate::host::HostInner;
use crate::metrics::{ActivationResult, AttemptPlace};
use crate::model::RunId;
use crate::store::{
    ActivityStore, ActivityTask, AttemptOutcome, Change, Changes, ClaimActivity, FinishedAttempt,
    RunClaim, RunRecord, StoreError, TIMEOUT_BATCH,
};
use crate::workflow::{ActivationReport, DriverError, LocalActivity};
use std::time::{Duration, Instant};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// Parks a run whose activation failed `attempts` times in a row, for a
/// reason retrying cannot mend, as stuck with that reason.
async fn park_failing(host: &HostInner, claim: &RunClaim, attempts: u32, e: &DriverError) {
    tracing::error!(run_id = %claim.run_id, attempts, "activation failed {attempts} times in a row, the run is parked as stuck: {e}");
    let reason = serde_json::json!({
        "kind": "activation_failed",
        "attempts": attempts,
        "message": format!("its activation failed {attempts} times in a row, for a reason retrying cannot mend: {e}; fix the cause, then `weft resume` the run"),
    });
    if let Err(park) = host
        .store
        .park_run(&claim.run_id, claim.lease_token, reason)
        .await
    {
        tracing::warn!(run_id = %claim.run_id, "the failing run could not be parked (its lease ends in time): {park}");
    }
}

/// How long a run that found every instance slot in use waits before it is handed back.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Activations of one run that may fail in a row for a reason retrying
/// cannot mend (stored data that cannot be read, a value the database
/// refuses, a module that cannot load) before the run is parked as stuck
/// with the reason: enough to ride out a fluke, few enough that one bad run
/// does not keep a host busy. Between them the run waits [`FIRST_RETRY`],
/// doubling.
pub(crate) const MAX_FAILED_ACTIVATIONS: u32 = 5;

/// Runs whose activations failed in a row on this host, and how often;
/// bounded, since it is only a brake.
#[derive(Default)]
struct Failing(Mutex<HashMap<RunId, u32>>);

impl Failing {
    const MAX_RUNS: usize = 10_000;

    /// Counts a failure of `run_id`'s activation; how many in a row.
    fn failed(&self, run_id: &RunId) -> u32 {
        let mut runs = self.0.lock().expect("failing runs poisoned");
        if runs.len() >= Self::MAX_RUNS && !runs.contains_key(run_id) {
            runs.clear();
        }
        let n = runs.entry(run_id.clone()).or_default();
        *n += 1;
        *n
    }

    fn forget(&self, run_id: &RunId) {
        self.0.lock().expect("failing runs poisoned").remove(run_id);
    }
}

/// Whether retrying the activation can never help.
fn permanent(e: &DriverError) -> bool {
    match e {
        DriverError::Store(s) => !s.is_retryable() && !matches!(s, StoreError::Conflict { .. }),
        DriverError::Module { .. } | DriverError::Replay { .. } => true,
        DriverError::Busy { .. } => false,
    }
}

/// The pause after a loop's first failed call to the store; it doubles up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// A loop's view of the database being away: logs once when an outage
/// starts and once when it ends (not once per poll), and says how long to
/// back off after each failure.
pub(crate) struct Outage {
    what: &'static str,
    failures: u32,
    since: Option<Instant>,
}

impl Outage {
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            failures: 0,
            since: None,
        }
    }

    /// Records a failed call; returns how long to wait before the next one.
    pub(crate) fn failed(&mut self, e: &StoreError) -> Duration {
        if self.failures == 0 {
            self.since = Some(Instant::now());
            if e.is_retryable() {
                tracing::warn!(
                    "{} failed: {e}; retrying with backoff until the database answers",
                    self.what
                );
            } else {
                tracing::warn!("{} failed: {e}", self.what);
            }
        } else {
            tracing::debug!(
                failures = self.failures + 1,
                "{} failed again: {e}",
                self.what
            );
        }
        let delay = FIRST_RETRY.saturating_mul(1 << self.failures.min(16));
        self.failures += 1;
        delay.min(LAST_RETRY)
    }

    /// Records a call that worked, ending the outage if there was one.
    pub(crate) fn recovered(&mut self) {
        if self.failures > 0 {
            let for_ms = self.since.map_or(0, |t| t.elapsed().as_millis());
            tracing::info!(
                failures = self.failures,
                "{} works again after {for_ms} ms",
                self.what
            );
            self.failures = 0;
            self.since = None;
        }
    }
}

/// Sleeps for `delay` (real time: a backoff, not workflow time), until
/// woken (the change feed reconnected: the database is back), or until shutdown.
async fn back_off(
    delay: Duration,
    woken: tokio::sync::futures::Notified<'_>,
    shutdown: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = woken => {}
        _ = shutdown.changed() => {}
    }
}

/// Wakes this host's loops when the store reports work made ready elsewhere
/// (another host, or this one through the database); after the feed
/// reconnects, wakes every loop once, since notifications may have been missed.
pub(crate) async fn change_loop(
    host: Arc<HostInner>,
    mut changes: Changes,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        tokio::select! {
            change = changes.recv() => match change {
                Some(change) => wake(&host.wakeups, change),
                None => return,
            },
            _ = shutdown.changed() => {}
        }
    }
}

fn wake(wakeups: &Wakeups, change: Change) {
    match change {
        Change::Runs | Change::Timers => wakeups.activations.notify_one(),
        Change::Activities => wakeups.activities_ready(),
        Change::Timeouts => wakeups.timeouts.notify_one(),
        Change::Resumed => {
            wakeups.activations.notify_one();
            wakeups.activities_ready();
            wakeups.timeouts.notify_one();
        }
    }
}

/// In-process wake-ups between the API and the loops.
#[derive(Default)]
pub(crate) struct Wakeups {
    pub(crate) activations: Notify,
    pub(crate) activities: Notify,
    /// An activity deadline appeared that may come before the one the timeout
    /// sweep sleeps until (a task scheduled, claimed or retried with one).
    pub(crate) timeouts: Notify,
    /// Remote workers' long polls, every one woken when tasks may have
    /// appeared (each asks the store for the names it serves).
    pub(crate) pollers: Notify,
    /// A run closed on this host: the seal loop has work.
    pub(crate) sealer: Notify,
    /// When the activation loop means to wake next for a timer: 0 while it
    /// reads that from the store (any new timer wakes it then), `u64::MAX`
    /// when the store held none. See [`Wakeups::timer_started`].
    timers_watched_until: AtomicU64,
    /// Whether [`waiter_loop`] runs: callers waiting on a run need not
    /// read it now and then themselves.
    pub(crate) waiters_watched: AtomicBool,
    /// Per run with someone waiting for it to stop running: wakes only them.
    closed: Mutex<HashMap<RunId, Arc<Closing>>>,
    /// Per run with someone waiting for an update's answer: woken by every
    /// committed activation of the run.
    updated: Mutex<HashMap<RunId, Arc<Notify>>>,
}

impl Wakeups {
    /// A commit of this host started a timer due at `at_ms`: wakes the
    /// activation loop if it would otherwise sleep past it. (A commit made
    /// by the loop's own activations wakes it anyway; one made inline — a
    /// start's first activation, an activity result's — does not.)
    pub(crate) fn timer_started(&self, at_ms: u64) {
        if at_ms < self.timers_watched_until.load(Ordering::SeqCst) {
            self.activations.notify_one();
        }
    }

    /// Activity tasks may be claimable: wakes this host's claim loop and
    /// every remote worker's poll.
    pub(crate) fn activities_ready(&self) {
        self.activities.notify_one();
        self.pollers.notify_waiters();
    }

    /// The notification that fires when `run` stops running on this host.
    pub(crate) fn on_close(&self, run: &RunId) -> Arc<Closing> {
        self.closed
            .lock()
            .expect("wake-ups poisoned")
            .entry(run.clone())
            .or_default()
            .clone()
    }

    /// Forgets `run`'s notification once its last waiter is gone.
    pub(crate) fn forget_close(&self, run: &RunId, notify: Arc<Closing>) {
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

    /// The runs some caller on this host waits on to stop running.
    pub(crate) fn awaited_runs(&self) -> Vec<RunId> {
        self.closed
            .lock()
            .expect("wake-ups poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// `run` was found stopped, by a commit this host did not make: its
    /// waiters read it.
    fn stopped_elsewhere(&self, run: &RunId) {
        if let Some(closing) = self.closed.lock().expect("wake-ups poisoned").get(run) {
            closing.notify.notify_waiters();
        }
    }

    /// `run` stopped running on this host; `record`, the run as it closed,
    /// when the closing commit knew it exactly (see
    /// [`ActivationReport::closed_run`](ActivationReport)).
    pub(crate) fn run_closed(&self, run: &RunId, record: Option<&RunRecord>) {
        self.sealer.notify_one();
        self.run_activated(run);
        if let Some(closing) = self.closed.lock().expect("wake-ups poisoned").get(run) {
            if let Some(record) = record {
                *closing.record.lock().expect("wake-ups poisoned") = Some(record.clone());
            }
            closing.notify.notify_waiters();
        }
    }
}

/// What waiters on one run's close share: the notification, and the run as
/// it closed when the host that closed it passed it on.
#[derive(Default)]
pub(crate) struct Closing {
    pub(crate) notify: Notify,
    record: Mutex<Option<RunRecord>>,
}

impl Closing {
    /// The run as it closed, if this host closed it and knew it exactly.
    pub(crate) fn record(&self) -> Option<RunRecord> {
        self.record.lock().expect("wake-ups poisoned").clone()
    }
}

/// How often the runs callers wait on are looked up, at most, when nothing
/// on this host told of their close: another host or a tool may close them.
pub(crate) const WAITER_POLL: Duration = Duration::from_millis(500);

/// Runs looked up in one statement by [`waiter_loop`].
const AWAITED_PER_READ: usize = 1000;

/// Wakes the callers waiting on this host for runs that stopped without
/// this host closing them (another host did, or a tool): every
/// [`WAITER_POLL`], one read of all the awaited runs, not one per caller.
/// Those closed here are woken at once by the closing commit.
pub(crate) async fn waiter_loop(host: Arc<HostInner>, mut shutdown: watch::Receiver<bool>) {
    host.wakeups.waiters_watched.store(true, Ordering::SeqCst);
    let every = host.config.poll_interval.min(WAITER_POLL);
    while !*shutdown.borrow() {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => continue,
        }
        let awaited = host.wakeups.awaited_runs();
        for some in awaited.chunks(AWAITED_PER_READ) {
            match host.store.stopped_runs(some).await {
                Ok(stopped) => {
                    for run in &stopped {
                        host.wakeups.stopped_elsewhere(run);
                    }
                }
                Err(e) => {
                    tracing::debug!(
                        "looking up the runs callers wait on failed: {e}; looking again shortly"
                    );
                    break;
                }
            }
        }
    }
    host.wakeups.waiters_watched.store(false, Ordering::SeqCst);
    // Its waiters look for themselves from now on.
    for run in host.wakeups.awaited_runs() {
        host.wakeups.stopped_elsewhere(&run);
    }
}

/// Claims runs that need an activation and drives them, a bounded number at a time.
pub(crate) async fn activation_loop(host: Arc<HostInner>, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(
        host.config.max_concurrent_activations.max(1),
    ));
    let in_flight: Arc<Mutex<HashSet<RunId>>> = Arc::default();
    let failing: Arc<Failing> = Arc::default();
    let mut outage = Outage::new("claiming runs");
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
                Ok(c) => {
                    outage.recovered();
                    c
                }
                Err(e) => {
                    back_off(outage.failed(&e), woken, &mut shutdown).await;
                    continue;
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
            let (host, in_flight, failing) = (host.clone(), in_flight.clone(), failing.clone());
            let mut permit = Some(permit);
            tokio::spawn(async move {
                host.metrics.activation_began();
                let began = Instant::now();
                let activated = host.driver.activate(&claim).await;
                let result = match &activated {
                    Ok(_) => ActivationResult::Committed,
                    Err(DriverError::Store(StoreError::Conflict { .. })) => {
                        ActivationResult::Conflict
                    }
                    Err(DriverError::Busy { .. }) => ActivationResult::Busy,
                    Err(_) => ActivationResult::Failed,
                };
                host.metrics
                    .activation_ended(result, began.elapsed().as_secs_f64());
                let release = match activated {
                    Ok(report) => {
                        failing.forget(&claim.run_id);
                        activated_here(&host, &claim.run_id, &report).await;
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
                    Err(e) if permanent(&e) => {
                        let attempts = failing.failed(&claim.run_id);
                        if attempts >= MAX_FAILED_ACTIVATIONS {
                            park_failing(&host, &claim, attempts, &e).await;
                            failing.forget(&claim.run_id);
                            false
                        } else {
                            tracing::warn!(run_id = %claim.run_id, attempts, "activation failed, it will be retried: {e}");
                            // Not hot: the slot is free meanwhile, the lease
                            // keeps the run from other claims.
                            permit.take();
                            tokio::time::sleep(
                                (FIRST_RETRY * 2u32.pow(attempts - 1)).min(LAST_RETRY),
                            )
                            .await;
                            true
                        }
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
                    release_run(&host, &claim.run_id, claim.lease_token).await;
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
        // A timer committed while the store is read may be missed by the
        // read: its commit sees 0 here and wakes the loop.
        host.wakeups.timers_watched_until.store(0, Ordering::SeqCst);
        let next_timer = match host.store.next_timer_at().await {
            Ok(at) => at,
            Err(e) => {
                back_off(outage.failed(&e), woken, &mut shutdown).await;
                continue;
            }
        };
        host.wakeups
            .timers_watched_until
            .store(next_timer.unwrap_or(u64::MAX), Ordering::SeqCst);
        outage.recovered();
        wait(&host, woken, next_timer, &mut shutdown).await;
    }
    // Let the activations in flight finish (each is bounded by the activation
    // timeout), so that a stopped host leaves no statement running and hands
    // its runs back rather than holding them until their leases expire.
    let all = host.config.max_concurrent_activations.max(1) as u32;
    let _ = permits.acquire_many(all).await;
}

/// What follows a committed activation on this host: the waiters on the run
/// hear of it, the loops of the work it made, its local activities start,
/// and a close is counted.
pub(crate) async fn activated_here(
    host: &Arc<HostInner>,
    run_id: &RunId,
    report: &ActivationReport,
) {
    host.wakeups.run_activated(run_id);
    if report.new_activities > 0 {
        host.wakeups.activities_ready();
    }
    if report.new_deadlines {
        host.wakeups.timeouts.notify_one();
    }
    if let Some(at) = report.new_timer_at_ms {
        host.wakeups.timer_started(at);
    }
    for local in &report.local_activities {
        run_local(host, run_id, local).await;
    }
    if let Some(status) = report.closed {
        host.metrics.run_closed(status);
        host.wakeups
            .run_closed(run_id, report.closed_run.as_deref());
    }
}

/// Claims activity tasks this host can run and runs them, a bounded number
/// at a time; and, on every host, enforces activity timeouts.
pub(crate) async fn activity_loop(host: Arc<HostInner>, shutdown: watch::Receiver<bool>) {
    tokio::join!(
        timeout_loop(host.clone(), shutdown.clone()),
        claim_loop(host, shutdown)
    );
}

async fn claim_loop(host: Arc<HostInner>, mut shutdown: watch::Receiver<bool>) {
    let names = host.activities.names();
    if names.is_empty() {
        return;
    }
    let permits = Arc::new(Semaphore::new(host.config.max_concurrent_activities.max(1)));
    let default_timeout_ms = host.config.default_start_to_close.as_millis() as u64;
    let mut outage = Outage::new("claiming activity tasks");
    // When the next task becomes visible, as last read from the store.
    let mut next: Option<u64> = None;
    // Whether the store may hold something to claim. Only tasks handed over
    // in line leave it `false`: anything else that makes a task claimable
    // (a commit of this host's that handed nothing over, another host's
    // work, a retry, a timeout) wakes the loop, and a due `next` is looked at.
    let mut look = true;
    while !*shutdown.borrow() {
        let woken = host.wakeups.activities.notified();
        let free = permits.available_permits() as u32;
        let now = host.clock.now_ms();
        if look || next.is_some_and(|at| at <= now) {
            let tasks = if free == 0 {
                Vec::new()
            } else {
                match host
                    .store
                    .claim_activities(&host.config.host_id, &names, now, default_timeout_ms, free)
                    .await
                {
                    Ok(t) => {
                        outage.recovered();
                        t
                    }
                    Err(e) => {
                        back_off(outage.failed(&e), woken, &mut shutdown).await;
                        continue;
                    }
                }
            };
            let claimed_any = !tasks.is_empty();
            start_attempts(&host, &permits, tasks, "claimed").await;
            if claimed_any {
                tokio::task::yield_now().await;
                continue;
            }
            next = match host.store.next_activity_at(&names).await {
                Ok(at) => at,
                Err(e) => {
                    back_off(outage.failed(&e), woken, &mut shutdown).await;
                    continue;
                }
            };
            outage.recovered();
        }
        look = true;
        if free == 0 {
            // Every slot is busy: look again once one frees.
            let freed = permits.clone().acquire_owned();
            tokio::select! {
                _ = freed => {}
                () = wait(&host, woken, still_ahead(next, now), &mut shutdown) => {}
            }
            continue;
        }
        // Wait in line like a remote worker's poll: an activation that
        // schedules a task this host runs hands it over in its commit.
        let handoff = host.driver.handoff();
        let mut place = handoff.wait(&host.config.host_id, &names, free);
        let handed = tokio::select! {
            handed = place.handed() => {
                // Claimed in the commit that scheduled them: the store has
                // nothing new for this loop.
                look = false;
                handed
            }
            () = wait(&host, woken, still_ahead(next, now), &mut shutdown) => {
                handoff.leave(&mut place).await
            }
        };
        start_attempts(&host, &permits, handed, "handed over as it was scheduled").await;
    }
}

/// Starts each attempt this host's activity loop took, in a slot of its own.
async fn start_attempts(
    host: &Arc<HostInner>,
    permits: &Arc<Semaphore>,
    tasks: Vec<ActivityTask>,
    how: &str,
) {
    if tasks.iter().any(|t| t.options.heartbeat_timeout_ms > 0) {
        host.wakeups.timeouts.notify_one();
    }
    for task in tasks {
        tracing::debug!(run_id = %task.run_id, seq = task.seq, activity = %task.name, attempt = task.attempt, "an activity attempt was {how}");
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closes");
        spawn_attempt(host.clone(), task, Some(permit));
    }
}

/// Runs one attempt in its own task and records how it ended.
fn spawn_attempt(host: Arc<HostInner>, task: ActivityTask, permit: Option<OwnedSemaphorePermit>) {
    tokio::spawn(async move {
        let store: Arc<dyn ActivityStore> = host.store.clone();
        let runner = AttemptRunner {
            activities: &host.activities,
            sink: Arc::new(StoreSink(store)),
            clock: host.clock.clone(),
            default_timeout_ms: host.config.default_start_to_close.as_millis() as u64,
        };
        let outcome = runner.run(&task).await;
        let retry = matches!(outcome, AttemptOutcome::Retry { .. });
        // A retry that must start in time has a deadline.
        let deadline = retry && task.options.schedule_to_start_timeout_ms > 0;
        let label = outcome.label();
        match finish_attempt(&host, &task, outcome).await {
            Ok(()) => {
                host.metrics.attempt_recorded(AttemptPlace::Host, label);
                if deadline {
                    host.wakeups.timeouts.notify_one();
                }
            }
            Err(StoreError::Conflict { reason, .. }) => {
                tracing::debug!(run_id = %task.run_id, seq = task.seq, "an activity attempt's result is discarded: {reason}")
            }
            Err(e) => {
                tracing::warn!(run_id = %task.run_id, seq = task.seq, "recording an activity attempt failed, the attempt runs again when its lease expires: {e}")
            }
        }
        drop(permit);
        if retry {
            // The task becomes claimable again, maybe before what the
            // claim loop waits for.
            host.wakeups.activities.notify_one();
        }
    });
}

/// Records how an attempt ended. While the database is away the result is
/// kept and the write retried with backoff, for as long as the attempt's lease
/// could still hold: a result is not thrown away (and the activity run again)
/// for an outage of a few seconds. A retry of a write that did apply before
/// its connection died is a harmless conflict: the token fences it.
async fn finish_attempt(
    host: &Arc<HostInner>,
    task: &ActivityTask,
    outcome: AttemptOutcome,
) -> Result<(), StoreError> {
    let lease = match task.options.start_to_close_timeout_ms {
        0 => host.config.default_start_to_close,
        ms => Duration::from_millis(ms),
    };
    let give_up = Instant::now() + lease;
    let mut delay = FIRST_RETRY;
    loop {
        let finished = FinishedAttempt {
            run_id: task.run_id.clone(),
            seq: task.seq,
            lease_token: task.lease_token,
            attempt: task.attempt,
            outcome: outcome.clone(),
            now_ms: host.clock.now_ms(),
        };
        match record_attempt(host, finished).await {
            Err(e) if e.is_retryable() && Instant::now() + delay < give_up => {
                tracing::debug!(run_id = %task.run_id, seq = task.seq, "recording an activity attempt failed, retrying: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(LAST_RETRY);
            }
            result => return result,
        }
    }
}

/// Records how an attempt ended — with the activation its result wakes,
/// when this host holds the run warm ([`Driver::finish_attempt`](crate::workflow::Driver::finish_attempt))
/// — and wakes whoever that concerns.
pub(crate) async fn record_attempt(
    host: &Arc<HostInner>,
    finished: FinishedAttempt,
) -> Result<(), StoreError> {
    let run_id = finished.run_id.clone();
    let began = Instant::now();
    match host.driver.finish_attempt(finished).await? {
        Some(report) => {
            host.metrics
                .activation_committed_inline(began.elapsed().as_secs_f64());
            activated_here(host, &run_id, &report).await;
        }
        // The result woke the run: the activation loop takes it from here.
        None => host.wakeups.activations.notify_one(),
    }
    Ok(())
}

/// Hands a run back without writing. While the database is away, retried
/// with backoff until the lease would have expired anyway.
async fn release_run(host: &HostInner, run_id: &RunId, lease_token: i64) {
    let give_up = Instant::now() + host.config.run_lease;
    let mut delay = FIRST_RETRY;
    loop {
        match host.store.release_run(run_id, lease_token).await {
            Err(e) if e.is_retryable() && Instant::now() + delay < give_up => {
                tracing::debug!(%run_id, "handing a run back failed, retrying: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(LAST_RETRY);
            }
            _ => return,
        }
    }
}

/// Claims a local activity the activation just scheduled and runs it here,
/// now. One this host cannot run is left to the hosts that can: it becomes
/// an ordinary task when its hand-over window ends.
async fn run_local(host: &Arc<HostInner>, run_id: &RunId, local: &LocalActivity) {
    if host.activities.get(&local.name).is_none() {
        tracing::debug!(%run_id, seq = local.seq, activity = %local.name, "a local activity that this host does not run is left to others");
        return;
    }
    let claim = ClaimActivity {
        run_id: run_id.clone(),
        seq: local.seq,
        host_id: host.config.host_id.clone(),
        now_ms: host.clock.now_ms(),
        default_lease_ms: host.config.default_start_to_close.as_millis() as u64,
    };
    match host.store.claim_activity(claim).await {
        Ok(Some(task)) => {
            tracing::debug!(%run_id, seq = task.seq, activity = %task.name, "running a local activity");
            if task.options.heartbeat_timeout_ms > 0 {
                host.wakeups.timeouts.notify_one();
            }
            spawn_attempt(host.clone(), task, None);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(%run_id, seq = local.seq, "claiming a local activity failed, it runs as an ordinary task later: {e}")
        }
    }
}

/// Enforces activity timeouts: sweeps the tasks whose deadlines passed,
/// then sleeps until the next deadline.
async fn timeout_loop(host: Arc<HostInner>, mut shutdown: watch::Receiver<bool>) {
    let mut outage = Outage::new("enforcing activity timeouts");
    while !*shutdown.borrow() {
        let woken = host.wakeups.timeouts.notified();
        let now = host.clock.now_ms();
        match host.store.time_out_activities(now).await {
            Ok(0) => {}
            Ok(changed) => {
                tracing::debug!(changed, "activity timeouts enforced");
                // Final failures woke runs; retries made tasks visible later.
                host.wakeups.activations.notify_one();
                host.wakeups.activities_ready();
                if changed >= TIMEOUT_BATCH {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            Err(e) => {
                back_off(outage.failed(&e), woken, &mut shutdown).await;
                continue;
            }
        }
        let next = match host.store.next_activity_timeout_at().await {
            Ok(at) => at,
            Err(e) => {
                back_off(outage.failed(&e), woken, &mut shutdown).await;
                continue;
            }
        };
        outage.recovered();
        wait(&host, woken, still_ahead(next, now), &mut shutdown).await;
    }
}

/// A wake-up time, unless it has passed already: work that was due and is
/// still there (another host's, or being settled) is looked at again on the
/// next poll, not in a busy loop.
fn still_ahead(at: Option<u64>, now: u64) -> Option<u64> {
    at.filter(|&at| at > now)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `notify` holds a wake-up (without waiting for one).
    fn woken(notify: &Notify) -> bool {
        use std::future::Future;
        let mut notified = std::pin::pin!(notify.notified());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        notified.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn each_change_wakes_its_loop_and_a_reconnection_wakes_them_all() {
        let cases = [
            (Change::Runs, [true, false, false]),
            (Change::Timers, [true, false, false]),
            (Change::Activities, [false, true, false]),
            (Change::Timeouts, [false, false, true]),
            (Change::Resumed, [true, true, true]),
        ];
        for (change, expected) in cases {
            let wakeups = Wakeups::default();
            wake(&wakeups, change);
            let got = [
                woken(&wakeups.activations),
                woken(&wakeups.activities),
                woken(&wakeups.timeouts),
            ];
            assert_eq!(got, expected, "{change:?}");
        }
    }

    #[test]
    fn an_outage_backs_off_up_to_a_limit_and_resets() {
        let mut outage = Outage::new("testing");
        let e = StoreError::Unavailable("gone".into());
        let delays: Vec<_> = (0..8).map(|_| outage.failed(&e)).collect();
        assert_eq!(delays[0], FIRST_RETRY);
        assert_eq!(delays[1], FIRST_RETRY * 2);
        assert_eq!(*delays.last().unwrap(), LAST_RETRY);
        outage.recovered();
        assert_eq!(outage.failed(&e), FIRST_RETRY);
    }
}
