//! Talking to a running activity: heartbeats and their details, cancellation
//! by the workflow, and the targeted claim of a local activity.

use super::*;
use crate::store::ClaimActivity;

fn beat(run: &Run, lease_token: i64, details: Option<Value>, now_ms: u64) -> Heartbeat {
    Heartbeat {
        run_id: run.id.clone(),
        seq: 1,
        lease_token,
        details,
        now_ms,
    }
}

fn claim_of(run: &Run, seq: u32, host: &str, now_ms: u64) -> ClaimActivity {
    ClaimActivity {
        run_id: run.id.clone(),
        seq,
        host_id: host.into(),
        now_ms,
        default_lease_ms: 5_000,
    }
}

/// Wakes the run with a signal and commits an activation that receives it and
/// asks to cancel the activities `seqs`.
async fn cancel_in_activation(store: &dyn Store, run: &mut Run, seqs: &[u32], now_ms: u64) {
    let signal = store
        .send_signal(&run.id, "stop", json!(null), now_ms, 2_000)
        .await
        .expect("send_signal");
    let seqs = seqs.to_vec();
    run.activate(store, now_ms, move |run, c| {
        let mut events = vec![Event::SignalReceived {
            name: "stop".into(),
            input: json!(null),
        }];
        events.extend(
            seqs.iter()
                .map(|&seq| Event::ActivityCancelRequested { seq }),
        );
        add_events(run, c, events);
        c.consumed_signals = vec![signal];
        c.cancelled_activities = seqs;
    })
    .await;
}

fn cancelled(resolution: &ResolvedActivity) -> bool {
    matches!(&resolution.outcome, Err(f) if f.error_type == "Cancelled")
}

pub async fn heartbeat_details_reach_the_next_attempt(store: &dyn Store) {
    let mut run = Run::start(store, "wf-details", T0).await;
    run.schedule(store, T0, 1, "count", ActivityOptions::default())
        .await;
    let first = store
        .claim_activities("w1", &names(&["count"]), T0, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(first.heartbeat_details, None, "nothing recorded yet");
    store
        .heartbeat(beat(
            &run,
            first.lease_token,
            Some(json!({"n": 4})),
            T0 + 10,
        ))
        .await
        .expect("heartbeat");
    store
        .heartbeat(beat(
            &run,
            first.lease_token,
            Some(json!({"n": 5})),
            T0 + 20,
        ))
        .await
        .expect("heartbeat");
    store
        .heartbeat(beat(&run, first.lease_token, None, T0 + 30))
        .await
        .expect("a heartbeat without details keeps the last ones");
    let retry = AttemptOutcome::Retry {
        failure: Failure::new("Io", "x"),
        retry_at_ms: T0 + 100,
    };
    store
        .finish_attempt(&run.id, 1, first.lease_token, retry, T0 + 40)
        .await
        .expect("finish_attempt");
    let second = store
        .claim_activities("w2", &names(&["count"]), T0 + 100, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(second.attempt, 2);
    assert_eq!(second.heartbeat_details, Some(json!({"n": 5})));
}

pub async fn heartbeat_is_fenced_by_the_lease(store: &dyn Store) {
    let mut run = Run::start(store, "wf-heartbeat-fence", T0).await;
    run.schedule(store, T0, 1, "count", ActivityOptions::default())
        .await;
    let first = store
        .claim_activities("w1", &names(&["count"]), T0, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    store
        .heartbeat(beat(&run, first.lease_token, Some(json!(1)), T0 + 10))
        .await
        .expect("heartbeat");
    // The first attempt's lease expires; another worker takes the task over.
    let second = store
        .claim_activities("w2", &names(&["count"]), T0 + 1_000, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(second.heartbeat_details, Some(json!(1)));
    let stale = store
        .heartbeat(beat(
            &run,
            first.lease_token,
            Some(json!("stale")),
            T0 + 1_001,
        ))
        .await;
    assert!(is_conflict(&stale), "{stale:?}");
    store
        .heartbeat(beat(&run, second.lease_token, Some(json!(2)), T0 + 1_002))
        .await
        .expect("the current attempt heartbeats");
    let third = store
        .claim_activities("w3", &names(&["count"]), T0 + 2_000, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(
        third.heartbeat_details,
        Some(json!(2)),
        "the stale attempt's details were not recorded"
    );
    let unknown = store
        .heartbeat(Heartbeat {
            seq: 9,
            ..beat(&run, third.lease_token, None, T0 + 2_001)
        })
        .await;
    assert!(is_not_found(&unknown), "{unknown:?}");
}

pub async fn cancel_resolves_a_scheduled_activity_and_wakes_the_run(store: &dyn Store) {
    let mut run = Run::start(store, "wf-cancel-scheduled", T0).await;
    run.schedule(store, T0, 1, "never", ActivityOptions::default())
        .await;
    cancel_in_activation(store, &mut run, &[1], T0 + 10).await;
    let claim = claim_only(store, "host-a", T0 + 11, &run).await;
    let jobs = store
        .pending_jobs(&run.id, T0 + 11)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.activities.len(), 1);
    let resolution = &jobs.activities[0];
    assert!(cancelled(resolution), "{resolution:?}");
    assert_eq!(resolution.attempt, 0);
    assert_eq!(resolution.resolved_at_ms, T0 + 10);
    assert!(
        store
            .claim_activities("w", &names(&["never"]), T0 + 12, 1_000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "a cancelled task is never run"
    );
    let failure = Failure::new("Cancelled", "the workflow cancelled the activity");
    let mut commit = run.commit(
        &claim,
        vec![Event::ActivityFailed {
            seq: 1,
            failure,
            attempt: 0,
        }],
        T0 + 11,
    );
    commit.consumed_activities = vec![1];
    run.apply(store, commit).await;
    assert_not_claimable(store, T0 + 1_000_000, "the cancellation was consumed").await;
}

pub async fn cancel_reaches_a_running_attempt_at_its_heartbeat(store: &dyn Store) {
    let mut run = Run::start(store, "wf-cancel-running", T0).await;
    let options = ActivityOptions {
        heartbeat_timeout_ms: 5_000,
        ..ActivityOptions::default()
    };
    run.schedule(store, T0, 1, "long", options).await;
    let attempt = store
        .claim_activities("w", &names(&["long"]), T0, LEASE, 1)
        .await
        .expect("claim")
        .remove(0);
    store
        .heartbeat(beat(&run, attempt.lease_token, Some(json!(1)), T0 + 5))
        .await
        .expect("heartbeat before the cancellation");
    cancel_in_activation(store, &mut run, &[1], T0 + 10).await;
    let resolution = store
        .pending_jobs(&run.id, T0 + 10)
        .await
        .expect("pending_jobs")
        .activities;
    assert_eq!(resolution.len(), 1);
    assert!(
        cancelled(&resolution[0]),
        "resolved at once: {resolution:?}"
    );
    assert_eq!(resolution[0].attempt, 1);
    let told = store
        .heartbeat(beat(&run, attempt.lease_token, Some(json!(2)), T0 + 11))
        .await;
    match &told {
        Err(StoreError::Conflict { reason, .. }) => {
            assert!(reason.contains("cancelled"), "{reason}")
        }
        other => panic!("the attempt learns of the cancellation: {other:?}"),
    }
    let finish = store
        .finish_attempt(
            &run.id,
            1,
            attempt.lease_token,
            AttemptOutcome::Completed {
                output: json!("done anyway"),
            },
            T0 + 12,
        )
        .await;
    assert!(is_conflict(&finish), "its finish is discarded: {finish:?}");
    let after = store
        .pending_jobs(&run.id, T0 + 12)
        .await
        .expect("pending_jobs")
        .activities;
    assert!(cancelled(&after[0]), "still cancelled: {after:?}");
    assert_eq!(
        store
            .next_activity_timeout_at()
            .await
            .expect("next_activity_timeout_at"),
        None,
        "a cancelled task has no deadline left"
    );
    assert_eq!(
        store
            .time_out_activities(T0 + 1_000_000)
            .await
            .expect("sweep"),
        0
    );
}

pub async fn cancel_leaves_resolved_and_unknown_activities_alone(store: &dyn Store) {
    let mut run = Run::start(store, "wf-cancel-resolved", T0).await;
    run.schedule(store, T0, 1, "quick", ActivityOptions::default())
        .await;
    let attempt = store
        .claim_activities("w", &names(&["quick"]), T0, LEASE, 1)
        .await
        .expect("claim")
        .remove(0);
    store
        .finish_attempt(
            &run.id,
            1,
            attempt.lease_token,
            AttemptOutcome::Completed {
                output: json!("fast"),
            },
            T0 + 5,
        )
        .await
        .expect("finish_attempt");
    // The activation that sees the completion cancels it anyway, and an unknown seq.
    let claim = claim_only(store, "host-a", T0 + 10, &run).await;
    let mut commit = run.commit(
        &claim,
        vec![
            Event::ActivityCancelRequested { seq: 1 },
            Event::ActivityCancelRequested { seq: 7 },
        ],
        T0 + 10,
    );
    commit.cancelled_activities = vec![1, 7];
    run.apply(store, commit).await;
    let jobs = store
        .pending_jobs(&run.id, T0 + 11)
        .await
        .expect("pending_jobs");
    assert_eq!(
        jobs.activities[0].outcome,
        Ok(json!("fast")),
        "a completed activity stays completed"
    );
    assert_eq!(jobs.activities.len(), 1);
    assert_not_claimable(
        store,
        T0 + 11,
        "a cancellation that resolved nothing does not wake the run",
    )
    .await;
}

pub async fn claim_activity_takes_one_local_task_by_key(store: &dyn Store) {
    let mut run = Run::start(store, "wf-local", T0).await;
    let options = ActivityOptions {
        local: true,
        ..ActivityOptions::default()
    };
    run.activate(store, T0, |run, c| {
        schedule_in(run, c, 1, "local", options.clone());
        schedule_in(run, c, 2, "local", options);
        // Hidden from ordinary claims for the workflow host's hand-over window.
        for task in &mut c.new_activities {
            task.visible_at_ms = T0 + LEASE;
        }
    })
    .await;
    assert!(
        store
            .claim_activities("other", &names(&["local"]), T0, 1_000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "a local task is not an ordinary task yet"
    );
    let task = store
        .claim_activity(claim_of(&run, 1, "host-a", T0 + 1))
        .await
        .expect("claim_activity")
        .expect("the task is claimed by key");
    assert_eq!((task.seq, task.attempt), (1, 1));
    assert_eq!(task.name, "local");
    assert!(
        store
            .claim_activity(claim_of(&run, 1, "host-b", T0 + 2))
            .await
            .expect("claim_activity")
            .is_none(),
        "a running task is not claimed again"
    );
    assert!(
        store
            .claim_activity(claim_of(&run, 9, "host-a", T0 + 2))
            .await
            .expect("claim_activity")
            .is_none(),
        "no such task"
    );
    store
        .finish_attempt(
            &run.id,
            1,
            task.lease_token,
            AttemptOutcome::Completed { output: json!(1) },
            T0 + 3,
        )
        .await
        .expect("finish_attempt");
    assert!(
        store
            .claim_activity(claim_of(&run, 1, "host-a", T0 + 4))
            .await
            .expect("claim_activity")
            .is_none(),
        "a resolved task is not claimed"
    );
    // The host that ran the workflow never claimed task 2: after the window,
    // it is an ordinary task for any host.
    assert!(
        store
            .claim_activities("other", &names(&["local"]), T0 + LEASE - 1, 1_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let ordinary = store
        .claim_activities("other", &names(&["local"]), T0 + LEASE, 1_000, 10)
        .await
        .expect("claim");
    assert_eq!(ordinary.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![2]);
    assert!(
        store
            .claim_activity(claim_of(&run, 2, "host-a", T0 + LEASE + 1))
            .await
            .expect("claim_activity")
            .is_none(),
        "another host has it now"
    );
}

pub async fn claim_activity_waits_for_a_retry_to_be_due(store: &dyn Store) {
    let mut run = Run::start(store, "wf-local-retry", T0).await;
    run.schedule(store, T0, 1, "flaky", ActivityOptions::default())
        .await;
    let first = store
        .claim_activity(claim_of(&run, 1, "host-a", T0))
        .await
        .expect("claim_activity")
        .expect("claimed");
    let retry = AttemptOutcome::Retry {
        failure: Failure::new("Io", "x"),
        retry_at_ms: T0 + 5_000,
    };
    store
        .finish_attempt(&run.id, 1, first.lease_token, retry, T0 + 10)
        .await
        .expect("finish_attempt");
    assert!(
        store
            .claim_activity(claim_of(&run, 1, "host-a", T0 + 4_999))
            .await
            .expect("claim_activity")
            .is_none()
    );
    let second = store
        .claim_activity(claim_of(&run, 1, "host-a", T0 + 5_000))
        .await
        .expect("claim_activity")
        .expect("due");
    assert_eq!(second.attempt, 2);
    assert!(second.lease_token > first.lease_token);
}

pub async fn current_attempt_names_only_the_running_attempt(store: &dyn Store) {
    let mut run = Run::start(store, "wf-current", T0).await;
    let options = ActivityOptions {
        retry: Some(RetryPolicy {
            maximum_attempts: 7,
            ..RetryPolicy::default()
        }),
        ..ActivityOptions::default()
    };
    run.schedule(store, T0, 1, "count", options.clone()).await;
    let first = store
        .claim_activities("w1", &names(&["count"]), T0, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    let found = store
        .current_attempt(&run.id, 1, first.lease_token)
        .await
        .expect("current_attempt")
        .expect("the claimed attempt is current");
    assert_eq!(found, first, "the stored attempt, options and all");
    assert_eq!(found.options.retry, options.retry);
    assert_eq!(
        store
            .current_attempt(&run.id, 1, first.lease_token + 1)
            .await
            .expect("current_attempt"),
        None,
        "another token names no attempt"
    );
    assert_eq!(
        store
            .current_attempt(&run.id, 2, first.lease_token)
            .await
            .expect("current_attempt"),
        None,
        "nor does another seq"
    );
    // Lost with its worker: the lease expires and another claim takes over.
    let second = store
        .claim_activities("w2", &names(&["count"]), T0 + 1_000, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(second.attempt, 2);
    assert_eq!(
        store
            .current_attempt(&run.id, 1, first.lease_token)
            .await
            .expect("current_attempt"),
        None,
        "the first attempt is no longer current"
    );
    store
        .finish_attempt(
            &run.id,
            1,
            second.lease_token,
            AttemptOutcome::Completed { output: json!(1) },
            T0 + 1_100,
        )
        .await
        .expect("finish_attempt");
    assert_eq!(
        store
            .current_attempt(&run.id, 1, second.lease_token)
            .await
            .expect("current_attempt"),
        None,
        "a finished attempt is not running"
    );
}

pub async fn waiting_on_shows_attempts_failures_heartbeats_and_timers(store: &dyn Store) {
    use crate::store::{PendingTimer, WaitingOn};
    let mut run = Run::start(store, "wf-waiting", T0).await;
    let waiting = || async { store.waiting_on(&run.id).await.expect("waiting_on") };
    assert_eq!(
        waiting().await,
        WaitingOn::default(),
        "a new run waits on nothing"
    );
    let id = run.id.clone();
    run.activate(store, T0, |run, c| {
        schedule_in(run, c, 1, "count", ActivityOptions::default());
        start_timer_in(run, c, 2, T0 + 60_000);
    })
    .await;
    let waiting = || async { store.waiting_on(&id).await.expect("waiting_on") };
    let now = waiting().await;
    assert_eq!(
        now.timers,
        vec![PendingTimer {
            seq: 2,
            fire_at_ms: T0 + 60_000
        }]
    );
    let a = &now.activities[0];
    assert_eq!(
        (a.seq, a.name.as_str(), a.running, a.attempt, a.next_at_ms),
        (1, "count", false, 0, T0),
        "scheduled, no attempt yet: {a:?}"
    );
    assert_eq!((&a.owner, &a.last_failure), (&None, &None));

    let first = store
        .claim_activities("w1", &names(&["count"]), T0 + 10, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    store
        .heartbeat(beat(
            &run,
            first.lease_token,
            Some(json!({"n": 4})),
            T0 + 20,
        ))
        .await
        .expect("heartbeat");
    let a = waiting().await.activities.remove(0);
    assert_eq!(
        (a.running, a.attempt, a.next_at_ms, a.owner.as_deref()),
        (true, 1, T0 + 10 + 1_000, Some("w1")),
        "running until its lease runs out: {a:?}"
    );
    assert_eq!(
        (a.heartbeat_details, a.heartbeat_at_ms),
        (Some(json!({"n": 4})), Some(T0 + 20))
    );

    let retry = AttemptOutcome::Retry {
        failure: Failure::new("Io", "connection reset"),
        retry_at_ms: T0 + 500,
    };
    store
        .finish_attempt(&run.id, 1, first.lease_token, retry, T0 + 40)
        .await
        .expect("finish_attempt");
    let a = waiting().await.activities.remove(0);
    assert_eq!(
        (a.running, a.attempt, a.next_at_ms, a.owner.as_deref()),
        (false, 1, T0 + 500, None),
        "waiting for its retry: {a:?}"
    );
    assert_eq!(a.last_failure, Some(Failure::new("Io", "connection reset")));

    let second = store
        .claim_activities("w2", &names(&["count"]), T0 + 500, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    store
        .finish_attempt(
            &run.id,
            1,
            second.lease_token,
            AttemptOutcome::Completed { output: json!(5) },
            T0 + 510,
        )
        .await
        .expect("finish_attempt");
    let now = waiting().await;
    assert!(
        now.activities.is_empty(),
        "a resolved activity is no longer waited on: {now:?}"
    );
    assert_eq!(now.timers.len(), 1, "the timer still is");
}
