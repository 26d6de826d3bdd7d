//! Activity timeouts, heartbeats, cancellation, per-error retry delays and
//! local activities, end to end through the real host on SQLite and
//! Postgres, in virtual time.
//!
//! The activities here report what they do on a channel and wait on the
//! test's [`ManualClock`]; the tests move the clock only when the activity
//! (or the store) has reached the point the next step depends on, so every
//! outcome is the same however slowly the machine runs.

mod common;

use common::{Backend, START_MS, TestHost};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use weft::model::{Event, Failure, History, RunId};
use weft::store::RunStatus;
use weft::{Activities, ActivityContext, ActivityError, Clock, ManualClock};

/// What the activities tell the test, one line per step.
struct Events {
    rx: mpsc::UnboundedReceiver<String>,
}

type Tell = mpsc::UnboundedSender<String>;

fn events() -> (Tell, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Events { rx })
}

impl Events {
    /// The next line; it must start with `prefix`.
    async fn expect(&mut self, prefix: &str) -> String {
        let line = tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no activity reported {prefix:?} within 30 s"))
            .expect("the activities hold the sender");
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}, the activity reported {line:?}"
        );
        line
    }

    /// Nothing reported for a moment of real time.
    async fn quiet(&mut self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(line) = self.rx.try_recv() {
            panic!("expected no activity, one reported {line:?}");
        }
    }
}

fn kinds(h: &History) -> Vec<&'static str> {
    h.events().iter().map(|e| e.event.kind()).collect()
}

/// The failure the run's only `activity_failed` records, and its attempt.
fn the_failure(h: &History) -> (Failure, u32) {
    let failed: Vec<_> = h
        .events()
        .iter()
        .filter_map(|e| match &e.event {
            Event::ActivityFailed {
                failure, attempt, ..
            } => Some((failure.clone(), *attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "one activity_failed in {:?}", kinds(h));
    failed.into_iter().next().expect("one")
}

/// The attempt the run's only `activity_completed` records.
fn completed_attempt(h: &History) -> u32 {
    let attempts: Vec<u32> = h
        .events()
        .iter()
        .filter_map(|e| match e.event {
            Event::ActivityCompleted { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(
        attempts.len(),
        1,
        "one activity_completed in {:?}",
        kinds(h)
    );
    attempts[0]
}

async fn finished_with(t: &TestHost, run: &RunId) -> Value {
    let record = t.finished(run).await;
    assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    record.output.expect("a completed run has an output")
}

/// Waits (real time, bounded) until the store says activity `name`'s next
/// attempt is due at `at`: the previous attempt's failure is recorded.
async fn until_retry_due(t: &TestHost, name: &str, at: u64) {
    let names = vec![name.to_owned()];
    for _ in 0..1200 {
        if t.db.store.next_activity_at(&names).await.unwrap() == Some(at) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "activity {name} was never due at {at}: next at {:?}",
        t.db.store.next_activity_at(&names).await.unwrap()
    );
}

/// When a `count` attempt stops heartbeating, as if its process had died.
#[derive(Clone)]
enum Stall {
    Never,
    /// Attempt `attempt` right after heartbeating `at` (it reports `stalled`).
    After {
        attempt: u32,
        at: u64,
    },
    /// Any attempt, on waking once the flag is set (its host is dead).
    When(Arc<AtomicBool>),
}

/// `count`: counts from the last heartbeat's details (or 0) to its input,
/// heartbeating each number and then waiting one virtual second. It reports
/// `attempt N from K` when it starts and `at I` before each wait.
fn counting(clock: &ManualClock, tell: &Tell, stall: Stall) -> Activities {
    let mut a = Activities::new();
    let (clock, tell) = (clock.clone(), tell.clone());
    a.register("count", move |ctx: ActivityContext, to: u64| {
        let (clock, tell, stall) = (clock.clone(), tell.clone(), stall.clone());
        async move {
            let from = ctx.heartbeat_details::<u64>().unwrap_or(0);
            tell.send(format!("attempt {} from {from}", ctx.attempt()))
                .unwrap();
            for i in from..to {
                ctx.heartbeat(i).await?;
                if let Stall::After { attempt, at } = stall
                    && ctx.attempt() == attempt
                    && i == at
                {
                    tell.send("stalled".into()).unwrap();
                    std::future::pending::<()>().await;
                }
                let wake = clock.now_ms() + 1_000;
                tell.send(format!("at {i}")).unwrap();
                clock.sleep_until(wake).await;
                if let Stall::When(dead) = &stall
                    && dead.load(Ordering::SeqCst)
                {
                    std::future::pending::<()>().await;
                }
            }
            Ok::<_, ActivityError>(to)
        }
    });
    a
}

/// Expects `at` lines for the numbers `from..to`, moving the clock a virtual
/// second after each.
async fn count_along(t: &TestHost, events: &mut Events, from: u64, to: u64) {
    for i in from..to {
        events.expect(&format!("at {i}")).await;
        t.clock.advance(Duration::from_secs(1));
    }
}

/// An attempt that stops heartbeating is failed at its heartbeat timeout and
/// retried, and the retry resumes from the last details it recorded.
async fn a_stalled_attempt_times_out_and_the_next_resumes_from_its_details(backend: Backend) {
    let clock = ManualClock::new(START_MS);
    let (tell, mut events) = events();
    let t = TestHost::with_clock(
        backend,
        counting(&clock, &tell, Stall::After { attempt: 1, at: 5 }),
        clock,
    )
    .await;
    let module = t.deploy("test-activities").await;
    let run = t
        .start(
            &module,
            "call",
            "count-resume",
            json!({ "activity": "count", "input": 8, "heartbeat_ms": 3_000,
                    "retry": { "initial_interval_ms": 1_000 } }),
        )
        .await;
    events.expect("attempt 1 from 0").await;
    count_along(&t, &mut events, 0, 5).await;
    events.expect("stalled").await;
    let stalled_at = t.clock.now_ms();
    // The last heartbeat (5) was now: 3 s later the attempt is timed out, and
    // the retry is due 1 s after that.
    t.clock.advance(Duration::from_secs(3));
    until_retry_due(&t, "count", stalled_at + 4_000).await;
    t.clock.advance(Duration::from_secs(1));
    events.expect("attempt 2 from 5").await;
    count_along(&t, &mut events, 5, 8).await;
    assert_eq!(finished_with(&t, &run).await, json!({ "ok": 8 }));
    let history = t.host.history(&run).await.unwrap();
    assert_eq!(completed_attempt(&history), 2);
    t.stop().await;
}

/// No host runs the activity: the attempt is never picked up, and at its
/// schedule-to-start timeout the activity fails for good. Enforced by a host
/// that registers no activities at all.
async fn an_activity_nobody_picks_up_fails_at_its_schedule_to_start_timeout(backend: Backend) {
    let t = TestHost::new(backend, Activities::new()).await;
    let module = t.deploy("test-activities").await;
    let run = t
        .start(
            &module,
            "call",
            "s2s",
            json!({ "activity": "nobody", "schedule_to_start_ms": 5_000 }),
        )
        .await;
    t.until_event(&run, "activity_scheduled", 1).await;
    t.clock.advance(Duration::from_millis(4_999));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        t.host.describe(&run).await.unwrap().status,
        RunStatus::Running,
        "not yet"
    );
    t.clock.advance(Duration::from_millis(1));
    let output = finished_with(&t, &run).await;
    assert_eq!(
        output["err"]["error_type"], "ScheduleToStartTimeout",
        "{output}"
    );
    let (failure, attempt) = the_failure(&t.host.history(&run).await.unwrap());
    assert_eq!(failure.error_type, "ScheduleToStartTimeout");
    assert_eq!(attempt, 0, "no attempt started");
    t.stop().await;
}

/// `hang`: reports `attempt N` and never finishes nor heartbeats.
fn hanging(tell: &Tell) -> Activities {
    let mut a = Activities::new();
    let tell = tell.clone();
    a.register("hang", move |ctx: ActivityContext, _: Value| {
        let tell = tell.clone();
        async move {
            tell.send(format!("attempt {}", ctx.attempt())).unwrap();
            std::future::pending::<()>().await;
            Ok::<_, ActivityError>(())
        }
    });
    a
}

/// A running attempt past the schedule-to-close timeout is abandoned and the
/// activity fails, though its start-to-close timeout is far away.
async fn a_running_attempt_is_abandoned_at_schedule_to_close(backend: Backend) {
    let (tell, mut events) = events();
    let t = TestHost::new(backend, hanging(&tell)).await;
    let module = t.deploy("test-activities").await;
    let run = t
        .start(
            &module,
            "call",
            "s2c",
            json!({ "activity": "hang", "schedule_to_close_ms": 10_000,
                    "start_to_close_ms": 60_000 }),
        )
        .await;
    events.expect("attempt 1").await;
    t.clock.advance(Duration::from_secs(10));
    let output = finished_with(&t, &run).await;
    assert_eq!(
        output["err"]["error_type"], "ScheduleToCloseTimeout",
        "{output}"
    );
    let (failure, attempt) = the_failure(&t.host.history(&run).await.unwrap());
    assert_eq!(
        (failure.error_type.as_str(), attempt),
        ("ScheduleToCloseTimeout", 1)
    );
    events.quiet().await;
    t.stop().await;
}

/// `flaky`: reports `attempt N` and fails, retryably, every time.
fn always_failing(tell: &Tell) -> Activities {
    let mut a = Activities::new();
    let tell = tell.clone();
    a.register("flaky", move |ctx: ActivityContext, _: Value| {
        let tell = tell.clone();
        async move {
            tell.send(format!("attempt {}", ctx.attempt())).unwrap();
            Err::<(), _>(ActivityError::retryable(
                "Flaky",
                format!("attempt {} failed", ctx.attempt()),
            ))
        }
    });
    a
}

/// A retry that would start after the schedule-to-close deadline is not
/// made: the activity fails with the last attempt's own failure.
async fn no_retry_is_made_past_schedule_to_close(backend: Backend) {
    let (tell, mut events) = events();
    let t = TestHost::new(backend, always_failing(&tell)).await;
    let module = t.deploy("test-activities").await;
    let run = t
        .start(
            &module,
            "call",
            "s2c-retry",
            json!({ "activity": "flaky", "schedule_to_close_ms": 10_000,
                    "retry": { "initial_interval_ms": 4_000 } }),
        )
        .await;
    events.expect("attempt 1").await;
    // Attempt 1 failed at the start: attempt 2 is due 4 s later, well within 10 s.
    until_retry_due(&t, "flaky", START_MS + 4_000).await;
    t.clock.advance(Duration::from_secs(4));
    events.expect("attempt 2").await;
    // Attempt 3 would be due 8 s after that, past the deadline: no retry.
    let output = finished_with(&t, &run).await;
    assert_eq!(
        output,
        json!({ "err": { "error_type": "Flaky", "message": "attempt 2 failed" } })
    );
    let (_, attempt) = the_failure(&t.host.history(&run).await.unwrap());
    assert_eq!(attempt, 2);
    events.quiet().await;
    t.stop().await;
}

/// An attempt that never heartbeats is failed at its heartbeat timeout and
/// retried; when the policy's attempts are used up, the activity fails with
/// `HeartbeatTimeout`.
async fn silent_attempts_fail_at_their_heartbeat_timeout(backend: Backend) {
    let (tell, mut events) = events();
    let t = TestHost::new(backend, hanging(&tell)).await;
    let module = t.deploy("test-activities").await;
    let run = t
        .start(
            &module,
            "call",
            "heartbeat-timeout",
            json!({ "activity": "hang", "heartbeat_ms": 2_000,
                    "retry": { "initial_interval_ms": 1_000, "maximum_attempts": 2 } }),
        )
        .await;
    events.expect("attempt 1").await;
    t.clock.advance(Duration::from_secs(2));
    until_retry_due(&t, "hang", START_MS + 3_000).await;
    t.clock.advance(Duration::from_secs(1));
    events.expect("attempt 2").await;
    t.clock.advance(Duration::from_secs(2));
    let output = finished_with(&t, &run).await;
    assert_eq!(output["err"]["error_type"], "HeartbeatTimeout", "{output}");
    let (_, attempt) = the_failure(&t.host.history(&run).await.unwrap());
    assert_eq!(attempt, 2);
    t.stop().await;
}

/// An error's own retry delay replaces the policy's backoff.
async fn an_errors_retry_after_is_honoured(backend: Backend) {
    let (tell, mut events) = events();
    let mut a = Activities::new();
    a.register("rate_limited", move |ctx: ActivityContext, _: Value| {
        let tell = tell.clone();
        async move {
            tell.send(format!("attempt {}", ctx.attempt())).unwrap();
            if ctx.attempt() == 1 {
                return Err(
                    ActivityError::retryable("RateLimited", "come back in an hour")
                        .retry_after(Duration::from_secs(3_600)),
                );
            }
            Ok("through".to_owned())
        }
    });
    let t = TestHost::new(backend, a).await;
    let module = t.deploy("test-activities").await;
    let run = t
        .start(
            &module,
            "call",
            "retry-after",
            json!({ "activity": "rate_limited", "retry": { "initial_interval_ms": 1_000 } }),
        )
        .await;
    events.expect("attempt 1").await;
    // Not the policy's 1 s: the hour the activity asked for.
    until_retry_due(&t, "rate_limited", START_MS + 3_600_000).await;
    t.clock.advance(Duration::from_secs(3_599));
    events.quiet().await;
    t.clock.advance(Duration::from_secs(1));
    events.expect("attempt 2").await;
    assert_eq!(finished_with(&t, &run).await, json!({ "ok": "through" }));
    let history = t.host.history(&run).await.unwrap();
    assert_eq!(completed_attempt(&history), 2);
    t.stop().await;
}

/// `watch`: heartbeats once per virtual second, reporting `at I` before each
/// wait, until a heartbeat says to stop: then it reports `stopped: <why>`
/// and returns that error (whose result the host discards).
fn watching(clock: &ManualClock, tell: &Tell) -> Activities {
    let mut a = Activities::new();
    let (clock, tell) = (clock.clone(), tell.clone());
    a.register("watch", move |ctx: ActivityContext, _: Value| {
        let (clock, tell) = (clock.clone(), tell.clone());
        async move {
            for i in 0u64.. {
                if let Err(e) = ctx.heartbeat(i).await {
                    assert!(ctx.is_cancelled());
                    tell.send(format!("stopped: {e}")).unwrap();
                    return Err(e);
                }
                let wake = clock.now_ms() + 1_000;
                tell.send(format!("at {i}")).unwrap();
                clock.sleep_until(wake).await;
            }
            Ok::<_, ActivityError>(())
        }
    });
    a
}

/// An activity raced against a timer loses: dropping it cancels it, the
/// history records the request and then the activity's `Cancelled` failure,
/// and the running attempt learns it at its next heartbeat.
async fn the_activity_that_loses_a_select_is_cancelled(backend: Backend) {
    let clock = ManualClock::new(START_MS);
    let (tell, mut events) = events();
    let t = TestHost::with_clock(backend, watching(&clock, &tell), clock).await;
    let module = t.deploy("test-activities").await;
    let run = t
        .start(
            &module,
            "race",
            "race",
            json!({ "call": { "activity": "watch", "heartbeat_ms": 3_000 },
                    "timer_ms": 3_000, "linger_ms": 60_000 }),
        )
        .await;
    count_along(&t, &mut events, 0, 3).await;
    // The timer fired: the workflow cancels the activity, and receives its
    // `Cancelled` failure in the next activation.
    t.until_event(&run, "activity_failed", 1).await;
    let mut stopped = None;
    for _ in 0..3 {
        let line = events.expect("").await;
        if line.starts_with("stopped") {
            stopped = Some(line);
            break;
        }
        t.clock.advance(Duration::from_secs(1));
    }
    let stopped = stopped.expect("the attempt learns of the cancellation at a heartbeat");
    assert!(stopped.contains("cancelled"), "{stopped}");
    t.clock.advance(Duration::from_secs(60));
    assert_eq!(finished_with(&t, &run).await, json!({ "winner": "timer" }));
    let history = t.host.history(&run).await.unwrap();
    let kinds = kinds(&history);
    let requested = kinds
        .iter()
        .position(|k| *k == "activity_cancel_requested")
        .expect("the cancellation is recorded");
    let failed = kinds
        .iter()
        .position(|k| *k == "activity_failed")
        .expect("the activity's failure is recorded");
    assert!(requested < failed, "{kinds:?}");
    assert!(!kinds.contains(&"activity_completed"), "{kinds:?}");
    let (failure, _) = the_failure(&history);
    assert_eq!(failure.error_type, "Cancelled");
    assert!(matches!(
        t.host.replay(&run).await.unwrap(),
        weft::workflow::ReplayVerdict::Identical { .. }
    ));
    t.stop().await;
}

/// A local activity runs in the workflow's host right after the activation:
/// the clock never moves, and ordinary claims cannot see the task yet.
async fn a_local_activity_runs_right_after_its_activation(backend: Backend) {
    let (tell, mut events) = events();
    let mut a = Activities::new();
    a.register("lookup", move |ctx: ActivityContext, sku: String| {
        let tell = tell.clone();
        async move {
            tell.send(format!("attempt {} of {sku}", ctx.attempt()))
                .unwrap();
            Ok::<_, ActivityError>(format!("price of {sku}"))
        }
    });
    let t = TestHost::new(backend, a).await;
    let module = t.deploy("test-activities").await;
    let run = t
        .start(
            &module,
            "call",
            "local",
            json!({ "activity": "lookup", "input": "sku-42", "local": true }),
        )
        .await;
    events.expect("attempt 1 of sku-42").await;
    assert_eq!(
        finished_with(&t, &run).await,
        json!({ "ok": "price of sku-42" })
    );
    let history = t.host.history(&run).await.unwrap();
    let local = history
        .events()
        .iter()
        .any(|e| matches!(&e.event, Event::ActivityScheduled { options, .. } if options.local));
    assert!(local, "recorded as a local activity");
    assert_eq!(completed_attempt(&history), 1);
    assert_eq!(t.clock.now_ms(), START_MS, "no virtual time passed");
    t.stop().await;
}

/// The host dies in the middle of a heartbeating activity (the second of
/// two); the host that restarts with its id takes the attempt back, which
/// resumes from the last heartbeat. Each activity completes once.
async fn a_host_crash_in_a_heartbeating_activity_resumes_it(backend: Backend) {
    let clock = ManualClock::new(START_MS);
    let (tell, mut events) = events();
    let dead = Arc::new(AtomicBool::new(false));
    let first = counting(&clock, &tell, Stall::When(dead.clone()));
    let t = TestHost::with_clock(backend, first, clock.clone()).await;
    let module = t.deploy("test-activities").await;
    let call = |to: u64| json!({ "activity": "count", "input": to, "heartbeat_ms": 3_000 });
    let run = t
        .start(&module, "sequence", "crash", json!([call(2), call(5)]))
        .await;
    events.expect("attempt 1 from 0").await;
    count_along(&t, &mut events, 0, 2).await;
    t.until_event(&run, "activity_completed", 1).await;
    events.expect("attempt 1 from 0").await;
    count_along(&t, &mut events, 0, 2).await;
    // Heartbeat 2 is recorded, and the host dies.
    events.expect("at 2").await;
    dead.store(true, Ordering::SeqCst);
    let t = t.restart(counting(&clock, &tell, Stall::Never)).await;
    events.expect("attempt 2 from 2").await;
    count_along(&t, &mut events, 2, 5).await;
    assert_eq!(
        finished_with(&t, &run).await,
        json!([{ "ok": 2 }, { "ok": 5 }])
    );
    let history = t.host.history(&run).await.unwrap();
    history.verify().unwrap();
    common::assert_each_completion_once(&history, 2);
    t.stop().await;
}

both_backends!(
    a_stalled_attempt_times_out_and_the_next_resumes_from_its_details,
    an_activity_nobody_picks_up_fails_at_its_schedule_to_start_timeout,
    a_running_attempt_is_abandoned_at_schedule_to_close,
    no_retry_is_made_past_schedule_to_close,
    silent_attempts_fail_at_their_heartbeat_timeout,
    an_errors_retry_after_is_honoured,
    the_activity_that_loses_a_select_is_cancelled,
    a_local_activity_runs_right_after_its_activation,
    a_host_crash_in_a_heartbeating_activity_resumes_it,
);
