//! Messages to a run from outside and from the clock: cancel and termination
//! requests, run deadlines, and updates from delivery to their answer.

use super::lifecycle::{close, record, start};
use super::*;
use crate::store::{CancelRequest, InboxUpdate};

pub async fn cancel_request_is_delivered_once(store: &dyn Store) {
    let mut run = start(store, "wf-cancel", T0, RunOptions::default()).await;
    run.activate(store, T0, |_, _| {}).await;
    store
        .request_cancel(&run.id, "customer asked", T0 + 10)
        .await
        .expect("request_cancel");
    store
        .request_cancel(&run.id, "second thoughts", T0 + 11)
        .await
        .expect("a second request is accepted");
    assert_eq!(
        record(store, &run).await.cancel_requested.as_deref(),
        Some("customer asked"),
        "the first reason wins"
    );
    let claim = claim_only(store, "host-a", T0 + 12, &run).await;
    let jobs = store
        .pending_jobs(&run.id, T0 + 12)
        .await
        .expect("pending_jobs");
    assert_eq!(
        jobs.cancel,
        Some(CancelRequest {
            reason: "customer asked".into(),
            requested_at_ms: T0 + 10,
        })
    );
    let mut commit = run.commit(
        &claim,
        vec![Event::WorkflowCancelRequested {
            reason: "customer asked".into(),
        }],
        T0 + 12,
    );
    commit.consumed_cancel = true;
    run.apply(store, commit).await;
    assert_eq!(
        store
            .pending_jobs(&run.id, T0 + 13)
            .await
            .expect("pending_jobs")
            .cancel,
        None,
        "delivered once"
    );
    assert_eq!(
        record(store, &run).await.cancel_requested.as_deref(),
        Some("customer asked"),
        "still requested until honoured"
    );
    store
        .request_cancel(&run.id, "again", T0 + 14)
        .await
        .expect("request_cancel");
    let claim = claim_only(store, "host-a", T0 + 15, &run).await;
    assert!(
        store
            .pending_jobs(&run.id, T0 + 15)
            .await
            .expect("pending_jobs")
            .is_empty(),
        "a delivered request is not delivered again"
    );
    let mut commit = run.commit(
        &claim,
        vec![Event::WorkflowCancelled {
            message: "cancelled as asked".into(),
        }],
        T0 + 15,
    );
    commit.outcome = RunOutcome::Cancelled {
        message: "cancelled as asked".into(),
    };
    run.apply(store, commit).await;
    let closed = record(store, &run).await;
    assert_eq!(closed.status, RunStatus::Cancelled);
    assert_eq!(
        closed.failure,
        Some(Failure::new("Cancelled", "cancelled as asked"))
    );
    assert_eq!(closed.closed_at_ms, Some(T0 + 15));
    assert_eq!(closed.cancel_requested, None, "honoured");

    match store.request_cancel(&run.id, "late", T0 + 16).await {
        Err(StoreError::NotFound { what }) => {
            assert!(
                what.contains(run.id.as_str()) && what.contains("closed"),
                "names the run and says it is closed: {what}"
            );
        }
        other => panic!("expected NotFound for a closed run, got {other:?}"),
    }
    assert!(is_not_found(
        &store.request_cancel(&RunId::from("nobody"), "x", T0).await
    ));
}

pub async fn termination_request_makes_a_stuck_run_claimable(store: &dyn Store) {
    let run = start(store, "wf-terminate", T0, RunOptions::default()).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    store
        .park_run(&run.id, claim.lease_token, json!({"why": "diverged"}))
        .await
        .expect("park_run");
    assert_not_claimable(store, T0 + 1, "a stuck run is not claimed").await;
    store
        .request_termination(&run.id, "operator gave up", T0 + 2)
        .await
        .expect("request_termination");
    store
        .request_termination(&run.id, "twice", T0 + 3)
        .await
        .expect("a second request is accepted");
    let requested = record(store, &run).await;
    assert_eq!(requested.status, RunStatus::Running);
    assert_eq!(requested.stuck, None, "no longer parked");
    assert_eq!(
        requested.termination_requested.as_deref(),
        Some("operator gave up"),
        "the first reason wins"
    );
    let mut run = run;
    close(
        store,
        &mut run,
        T0 + 4,
        RunOutcome::Terminated {
            reason: "operator gave up".into(),
        },
    )
    .await;
    let closed = record(store, &run).await;
    assert_eq!(closed.status, RunStatus::Terminated);
    assert_eq!(
        closed.failure,
        Some(Failure::new("Terminated", "operator gave up"))
    );
    assert_eq!(closed.termination_requested, None, "carried out");
    match store.request_termination(&run.id, "late", T0 + 5).await {
        Err(StoreError::NotFound { what }) => {
            assert!(
                what.contains(run.id.as_str()) && what.contains("closed"),
                "{what}"
            )
        }
        other => panic!("expected NotFound for a closed run, got {other:?}"),
    }
    assert!(is_not_found(
        &store
            .request_termination(&RunId::from("nobody"), "x", T0)
            .await
    ));
}

pub async fn termination_request_wakes_a_running_run(store: &dyn Store) {
    let mut run = start(store, "wf-terminate-running", T0, RunOptions::default()).await;
    run.activate(store, T0, |_, _| {}).await;
    assert_not_claimable(store, T0 + 1, "idle").await;
    store
        .request_termination(&run.id, "stop", T0 + 2)
        .await
        .expect("request_termination");
    claim_only(store, "host-a", T0 + 3, &run).await;
    assert_eq!(
        record(store, &run).await.termination_requested.as_deref(),
        Some("stop")
    );
}

pub async fn a_passed_deadline_makes_a_run_claimable(store: &dyn Store) {
    let mut run = start(
        store,
        "wf-deadline",
        T0,
        RunOptions {
            deadline_ms: Some(T0 + 1_000),
            execution_deadline_ms: Some(T0 + 5_000),
            run_timeout_ms: Some(1_000),
            ..RunOptions::default()
        },
    )
    .await;
    let started = record(store, &run).await;
    assert_eq!(
        (
            started.deadline_ms,
            started.execution_deadline_ms,
            started.run_timeout_ms
        ),
        (Some(T0 + 1_000), Some(T0 + 5_000), Some(1_000))
    );
    run.activate(store, T0, |run, c| start_timer_in(run, c, 1, T0 + 60_000))
        .await;
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 1_000),
        "the deadline comes before the timer"
    );
    assert_not_claimable(store, T0 + 999, "the deadline has not passed").await;
    let claim = claim_only(store, "host-a", T0 + 1_000, &run).await;
    assert_not_claimable(store, T0 + 1_001, "a live lease is never claimed twice").await;
    // A host verdict: the one event, outside any activation.
    let mut commit = run.commit(&claim, Vec::new(), T0 + 1_000);
    commit.events = run.next(
        vec![Event::WorkflowTimedOut {
            timeout: "run".into(),
        }],
        T0 + 1_000,
    );
    commit.outcome = RunOutcome::TimedOut {
        timeout: "run".into(),
    };
    run.apply(store, commit).await;
    let closed = record(store, &run).await;
    assert_eq!(closed.status, RunStatus::TimedOut);
    assert_eq!(
        closed.failure,
        Some(Failure::new("TimedOut", "the run timeout passed"))
    );
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        None,
        "a closed run has neither timers nor a deadline"
    );
    assert_not_claimable(store, T0 + 10_000, "a closed run is never claimed").await;
}

pub async fn a_timer_before_the_deadline_comes_first(store: &dyn Store) {
    let mut run = start(
        store,
        "wf-deadline-later",
        T0,
        RunOptions {
            deadline_ms: Some(T0 + 9_000),
            ..RunOptions::default()
        },
    )
    .await;
    run.activate(store, T0, |run, c| start_timer_in(run, c, 1, T0 + 2_000))
        .await;
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 2_000)
    );
}

pub async fn updates_are_delivered_answered_and_failed_on_close(store: &dyn Store) {
    let mut run = start(store, "wf-updates", T0, RunOptions::default()).await;
    run.activate(store, T0, |_, _| {}).await;
    store
        .send_update(&run.id, "u-1", "rename", json!("ada"), T0 + 10, 10)
        .await
        .expect("send_update");
    store
        .send_update(&run.id, "u-2", "rename", json!("bob"), T0 + 10, 10)
        .await
        .expect("send_update");
    store
        .send_update(&run.id, "u-1", "rename", json!("duplicate"), T0 + 11, 10)
        .await
        .expect("the same update id twice is a no-op");
    assert_eq!(
        store.update_outcome(&run.id, "u-1").await.expect("outcome"),
        None,
        "not answered yet"
    );
    let claim = claim_only(store, "host-a", T0 + 12, &run).await;
    let jobs = store
        .pending_jobs(&run.id, T0 + 12)
        .await
        .expect("pending_jobs");
    assert_eq!(
        jobs.updates,
        vec![
            InboxUpdate {
                update_id: "u-1".into(),
                name: "rename".into(),
                input: json!("ada"),
                received_at_ms: T0 + 10,
            },
            InboxUpdate {
                update_id: "u-2".into(),
                name: "rename".into(),
                input: json!("bob"),
                received_at_ms: T0 + 10,
            },
        ],
        "in arrival order, the duplicate dropped"
    );
    let mut commit = run.commit(
        &claim,
        vec![
            Event::UpdateReceived {
                update_id: "u-1".into(),
                name: "rename".into(),
                input: json!("ada"),
            },
            Event::UpdateReceived {
                update_id: "u-2".into(),
                name: "rename".into(),
                input: json!("bob"),
            },
            Event::UpdateCompleted {
                update_id: "u-1".into(),
                output: json!("renamed"),
            },
        ],
        T0 + 12,
    );
    commit.consumed_updates = vec!["u-1".into(), "u-2".into()];
    commit.completed_updates = vec![("u-1".into(), Ok(json!("renamed")))];
    run.apply(store, commit).await;
    assert!(
        store
            .pending_jobs(&run.id, T0 + 13)
            .await
            .expect("pending_jobs")
            .updates
            .is_empty(),
        "consumed updates are not delivered again"
    );
    assert_eq!(
        store.update_outcome(&run.id, "u-1").await.expect("outcome"),
        Some(Ok(json!("renamed")))
    );
    assert_eq!(
        store.update_outcome(&run.id, "u-2").await.expect("outcome"),
        None
    );
    assert_not_claimable(store, T0 + 13, "every update was taken").await;

    store
        .send_update(&run.id, "u-3", "rename", json!(""), T0 + 20, 10)
        .await
        .expect("send_update");
    let rejected = Failure::new("InvalidName", "a name cannot be empty");
    let failure = rejected.clone();
    run.activate(store, T0 + 21, move |run, c| {
        add_events(
            run,
            c,
            vec![
                Event::UpdateReceived {
                    update_id: "u-3".into(),
                    name: "rename".into(),
                    input: json!(""),
                },
                Event::UpdateFailed {
                    update_id: "u-3".into(),
                    failure: failure.clone(),
                },
            ],
        );
        c.consumed_updates = vec!["u-3".into()];
        c.completed_updates = vec![("u-3".into(), Err(failure))];
    })
    .await;
    assert_eq!(
        store.update_outcome(&run.id, "u-3").await.expect("outcome"),
        Some(Err(rejected))
    );

    store
        .send_update(&run.id, "u-4", "rename", json!("eve"), T0 + 30, 10)
        .await
        .expect("send_update");
    close(
        store,
        &mut run,
        T0 + 31,
        RunOutcome::Completed {
            output: json!("done"),
        },
    )
    .await;
    for unanswered in ["u-2", "u-4"] {
        match store.update_outcome(&run.id, unanswered).await {
            Ok(Some(Err(failure))) => {
                assert_eq!(failure.error_type, "UpdateNotCompleted");
                assert!(failure.message.contains(run.id.as_str()), "{failure}");
            }
            other => panic!("{unanswered}: expected UpdateNotCompleted, got {other:?}"),
        }
    }
    assert_eq!(
        store.update_outcome(&run.id, "u-1").await.expect("outcome"),
        Some(Ok(json!("renamed"))),
        "an answered update keeps its answer"
    );
    match store
        .send_update(&run.id, "u-5", "rename", json!("x"), T0 + 32, 10)
        .await
    {
        Err(StoreError::NotFound { what }) => {
            assert!(
                what.contains(run.id.as_str()) && what.contains("closed"),
                "{what}"
            )
        }
        other => panic!("expected NotFound for a closed run, got {other:?}"),
    }
    assert!(is_not_found(
        &store.update_outcome(&run.id, "u-never").await
    ));
    assert!(is_not_found(
        &store
            .send_update(&RunId::from("nobody"), "u", "x", Value::Null, T0, 10)
            .await
    ));
}

/// A run holds at most so many signals not yet taken and updates not yet
/// answered: a sender past either limit is refused with
/// [`StoreError::Full`] naming the limit, nothing is queued or woken, and
/// once the workflow takes them (answers them) there is room again. A
/// resend of a queued update is never refused.
pub async fn signals_and_updates_past_their_limits_are_refused(store: &dyn Store) {
    let mut run = start(store, "wf-full", T0, RunOptions::default()).await;
    run.activate(store, T0, |_, _| {}).await;
    for i in 0..3 {
        store
            .send_signal(&run.id, "poke", json!(i), T0 + 1, 3)
            .await
            .expect("room for three signals");
    }
    match store
        .send_signal(&run.id, "poke", json!(3), T0 + 2, 3)
        .await
    {
        Err(e @ StoreError::Full { .. }) => {
            let text = e.to_string();
            assert!(text.contains("--max-pending-signals"), "{text}");
            assert!(text.contains(run.id.as_str()), "{text}");
            assert!(!e.is_retryable(), "the store does not retry it on its own");
        }
        other => panic!("a fourth signal must be refused, got {other:?}"),
    }
    for id in ["u-1", "u-2"] {
        store
            .send_update(&run.id, id, "rename", json!(id), T0 + 3, 2)
            .await
            .expect("room for two updates");
    }
    match store
        .send_update(&run.id, "u-3", "rename", json!("u-3"), T0 + 4, 2)
        .await
    {
        Err(e @ StoreError::Full { .. }) => {
            assert!(e.to_string().contains("--max-updates-in-flight"), "{e}")
        }
        other => panic!("a third update must be refused, got {other:?}"),
    }
    store
        .send_update(&run.id, "u-1", "rename", json!("again"), T0 + 4, 2)
        .await
        .expect("a resend of a queued update is a no-op, not refused");

    let claim = claim_only(store, "host-a", T0 + 5, &run).await;
    let jobs = store
        .pending_jobs(&run.id, T0 + 5)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.signals.len(), 3, "the refused signal was not queued");
    assert_eq!(jobs.updates.len(), 2, "the refused update was not queued");
    let mut events: Vec<Event> = jobs
        .signals
        .iter()
        .map(|s| Event::SignalReceived {
            name: s.name.clone(),
            input: s.input.clone(),
        })
        .collect();
    events.push(Event::UpdateReceived {
        update_id: "u-1".into(),
        name: "rename".into(),
        input: json!("u-1"),
    });
    events.push(Event::UpdateReceived {
        update_id: "u-2".into(),
        name: "rename".into(),
        input: json!("u-2"),
    });
    events.push(Event::UpdateCompleted {
        update_id: "u-1".into(),
        output: json!("done"),
    });
    let mut commit = run.commit(&claim, events, T0 + 6);
    commit.consumed_signals = jobs.signals.iter().map(|s| s.id).collect();
    commit.consumed_updates = vec!["u-1".into(), "u-2".into()];
    commit.completed_updates = vec![("u-1".into(), Ok(json!("done")))];
    run.apply(store, commit).await;

    store
        .send_signal(&run.id, "poke", json!(3), T0 + 7, 3)
        .await
        .expect("taken signals make room");
    store
        .send_update(&run.id, "u-3", "rename", json!("u-3"), T0 + 7, 2)
        .await
        .expect("an answered update makes room (u-2 is still in flight)");
    match store
        .send_update(&run.id, "u-4", "rename", json!("u-4"), T0 + 8, 2)
        .await
    {
        Err(StoreError::Full { .. }) => {}
        other => panic!("u-2 and u-3 are in flight: u-4 must be refused, got {other:?}"),
    }
}
