//! Committing activations: the conditional append and everything that rides on it.

use super::*;

pub async fn commit_appends_events_and_creates_tasks_and_timers(store: &dyn Store) {
    let mut run = Run::start(store, "wf-commit", T0).await;
    let options = ActivityOptions {
        start_to_close_timeout_ms: 0,
        retry: Some(RetryPolicy::default()),
        ..ActivityOptions::default()
    };
    run.activate(store, T0 + 5, |run, c| {
        schedule_in(run, c, 1, "charge", options.clone());
        start_timer_in(run, c, 2, T0 + 60_000);
    })
    .await;
    let stored = store.history(&run.id).await.expect("history");
    assert_eq!(stored, run.history);
    stored.verify().expect("chain verifies");
    let record = store.run(&run.id).await.expect("run");
    assert_eq!(record.last_seq, 4);
    assert_eq!(record.last_hash, run.history.last_hash());
    assert_eq!(record.status, RunStatus::Running);
    assert_not_claimable(store, T0 + 6, "the run waits for its activity and timer").await;
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 60_000)
    );
    assert_eq!(
        store
            .next_activity_at(&names(&["charge"]))
            .await
            .expect("next_activity_at"),
        Some(T0 + 5)
    );

    let tasks = store
        .claim_activities("worker", &names(&["charge"]), T0 + 6, 1_000, 10)
        .await
        .expect("claim");
    assert_eq!(tasks.len(), 1);
    let task = &tasks[0];
    assert_eq!(
        (&task.run_id, task.seq, task.name.as_str(), task.attempt),
        (&run.id, 1, "charge", 1)
    );
    assert_eq!(task.input, json!({"amount": 100}));
    assert_eq!(task.options, options);
}

pub async fn commit_consumes_jobs(store: &dyn Store) {
    let mut run = Run::start(store, "wf-consume", T0).await;
    run.activate(store, T0, |run, c| {
        schedule_in(run, c, 1, "charge", ActivityOptions::default());
        start_timer_in(run, c, 2, T0 + 60_000);
    })
    .await;
    let task = store
        .claim_activities("worker", &names(&["charge"]), T0 + 1, 1_000, 1)
        .await
        .expect("claim");
    store
        .finish_attempt(
            &run.id,
            1,
            task[0].lease_token,
            AttemptOutcome::Completed {
                output: json!("paid"),
            },
            T0 + 2,
        )
        .await
        .expect("finish_attempt");
    let signal = store
        .send_signal(&run.id, "cancel-timer", json!(null), T0 + 3, 2_000)
        .await
        .expect("send_signal");

    let claim = claim_only(store, "host-a", T0 + 4, &run).await;
    let jobs = store
        .pending_jobs(&run.id, T0 + 4)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.activities.len(), 1);
    assert_eq!(jobs.signals.len(), 1);
    assert_eq!(jobs.signals[0].id, signal);
    let mut commit = run.commit(
        &claim,
        vec![
            Event::ActivityCompleted {
                seq: 1,
                output: json!("paid"),
                attempt: 1,
            },
            Event::SignalReceived {
                name: "cancel-timer".into(),
                input: json!(null),
            },
            Event::TimerCancelled { seq: 2 },
        ],
        T0 + 4,
    );
    commit.consumed_activities = vec![1];
    commit.consumed_signals = vec![signal];
    commit.removed_timers = vec![2];
    run.apply(store, commit).await;

    assert!(
        store
            .pending_jobs(&run.id, T0 + 100_000)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        None,
        "the cancelled timer is gone"
    );
    assert_not_claimable(store, T0 + 100_000, "every job was consumed").await;
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
}

/// The runs a host's waiters look up together: those closed or parked,
/// not those running, nor ids that name no run.
pub async fn stopped_runs_are_the_closed_and_the_parked(store: &dyn Store) {
    let mut closed = Run::start(store, "wf-stopped-closed", T0).await;
    let claim = claim_only(store, "host-a", T0, &closed).await;
    let mut commit = closed.commit(&claim, Vec::new(), T0);
    add_events(
        &closed,
        &mut commit,
        vec![Event::WorkflowCompleted { output: json!(1) }],
    );
    commit.outcome = RunOutcome::Completed { output: json!(1) };
    closed.apply(store, commit).await;
    let parked = Run::start(store, "wf-stopped-parked", T0).await;
    let claim = claim_only(store, "host-a", T0, &parked).await;
    store
        .park_run(&parked.id, claim.lease_token, json!({"kind": "test"}))
        .await
        .expect("park_run");
    let running = Run::start(store, "wf-stopped-running", T0).await;
    let unknown = RunId("no-such-run".into());
    let mut stopped = store
        .stopped_runs(&[
            running.id.clone(),
            closed.id.clone(),
            unknown,
            parked.id.clone(),
        ])
        .await
        .expect("stopped_runs");
    stopped.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![closed.id.clone(), parked.id.clone()];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(stopped, expected);
    assert_eq!(
        store.stopped_runs(&[]).await.expect("stopped_runs of none"),
        Vec::<RunId>::new()
    );
}

pub async fn commit_completed_closes_the_run(store: &dyn Store) {
    let mut run = Run::start(store, "wf-complete", T0).await;
    run.activate(store, T0, |run, c| {
        schedule_in(run, c, 1, "slow", ActivityOptions::default());
        schedule_in(run, c, 2, "later", ActivityOptions::default());
        start_timer_in(run, c, 3, T0 + 60_000);
    })
    .await;
    let running = store
        .claim_activities("worker", &names(&["slow"]), T0 + 1, 10_000, 1)
        .await
        .expect("claim");
    store
        .send_signal(&run.id, "finish", json!({}), T0 + 2, 2_000)
        .await
        .expect("send_signal");
    let claim = claim_only(store, "host-a", T0 + 3, &run).await;
    let mut commit = run.commit(&claim, Vec::new(), T0 + 3);
    schedule_in(&run, &mut commit, 4, "later", ActivityOptions::default());
    add_events(
        &run,
        &mut commit,
        vec![Event::WorkflowCompleted {
            output: json!({"total": 300}),
        }],
    );
    commit.outcome = RunOutcome::Completed {
        output: json!({"total": 300}),
    };
    run.apply(store, commit).await;

    let record = store.run(&run.id).await.expect("run");
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.output, Some(json!({"total": 300})));
    assert_eq!(record.closed_at_ms, Some(T0 + 3));
    assert_eq!(record.last_seq, run.history.len() as u64);
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        None,
        "its timers are gone"
    );
    assert_not_claimable(store, T0 + 1_000_000, "a completed run").await;
    let later = store
        .claim_activities(
            "worker",
            &names(&["slow", "later"]),
            T0 + 1_000_000,
            1_000,
            10,
        )
        .await
        .expect("claim");
    assert!(
        later.is_empty(),
        "its activity tasks are abandoned: {later:?}"
    );
    assert_eq!(
        store
            .next_activity_at(&names(&["slow", "later"]))
            .await
            .expect("next_activity_at"),
        None
    );
    let finish = store
        .finish_attempt(
            &run.id,
            1,
            running[0].lease_token,
            AttemptOutcome::Completed { output: json!(1) },
            T0 + 4,
        )
        .await;
    assert!(
        is_conflict(&finish),
        "the running attempt's result is not needed any more"
    );
    assert!(is_not_found(
        &store
            .send_signal(&run.id, "late", Value::Null, T0 + 5, 2_000)
            .await
    ));
}

pub async fn commit_failed_records_the_failure(store: &dyn Store) {
    let mut run = Run::start(store, "wf-fail", T0).await;
    let failure = Failure::new("OutOfStock", "item 3 is out of stock");
    run.activate(store, T0 + 1, |run, c| {
        add_events(
            run,
            c,
            vec![Event::WorkflowFailed {
                failure: failure.clone(),
            }],
        );
        c.outcome = RunOutcome::Failed {
            failure: failure.clone(),
        };
    })
    .await;
    let record = store.run(&run.id).await.expect("run");
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.failure, Some(failure));
    assert_eq!(record.output, None);
    assert_eq!(record.closed_at_ms, Some(T0 + 1));
}

pub async fn commit_with_a_stale_lease_writes_nothing(store: &dyn Store) {
    let mut run = Run::start(store, "wf-stale", T0).await;
    let old = store
        .claim_runs("host-a", T0, 1_000, 1)
        .await
        .expect("claim_runs")
        .remove(0);
    let new = store
        .claim_runs("host-b", T0 + 1_000, 1_000, 1)
        .await
        .expect("claim_runs")
        .remove(0);
    let mut stale = run.commit(&old, Vec::new(), T0 + 1_001);
    schedule_in(&run, &mut stale, 1, "charge", ActivityOptions::default());
    start_timer_in(&run, &mut stale, 2, T0 + 2_000);
    match store.commit_activation(stale).await {
        Err(StoreError::Conflict { run_id, reason }) => {
            assert_eq!(run_id, run.id);
            assert!(
                reason.contains("lease"),
                "the reason names the lease: {reason}"
            );
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.history(&run.id).await.expect("history"),
        run.history,
        "no event was written"
    );
    assert_eq!(store.run(&run.id).await.expect("run").last_seq, 1);
    assert!(
        store
            .claim_activities("worker", &names(&["charge"]), T0 + 5_000, 1_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(store.next_timer_at().await.expect("next_timer_at"), None);
    let fresh = run.commit(&new, Vec::new(), T0 + 1_002);
    run.apply(store, fresh).await;
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
}

pub async fn commit_with_a_wrong_event_number_writes_nothing(store: &dyn Store) {
    let mut run = Run::start(store, "wf-seq", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    // Events numbered from 3 while the history ends at 1: event 2 is missing.
    let mut ahead = run.history.clone();
    ahead.push(Event::ActivationStarted { time_ms: T0 }, T0);
    let skipped = Run {
        id: run.id.clone(),
        history: ahead,
    };
    let mut gap = skipped.commit(&claim, Vec::new(), T0);
    schedule_in(&skipped, &mut gap, 1, "charge", ActivityOptions::default());
    match store.commit_activation(gap).await {
        Err(StoreError::Conflict { reason, .. }) => {
            assert!(
                reason.contains("event 1"),
                "the reason says where the history is: {reason}"
            );
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    // Events numbered from 1: they would overwrite the history.
    let overlap = ActivationCommit {
        events: run.history.events().to_vec(),
        ..run.commit(&claim, Vec::new(), T0)
    };
    assert!(is_conflict(&store.commit_activation(overlap).await));
    assert_eq!(
        store.history(&run.id).await.expect("history"),
        run.history,
        "no event was written"
    );
    assert!(
        store
            .claim_activities("worker", &names(&["charge"]), T0 + 5_000, 1_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    // The lease still holds: the right commit applies.
    let right = run.commit(&claim, Vec::new(), T0 + 1);
    run.apply(store, right).await;
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
}

pub async fn pending_jobs_are_ordered(store: &dyn Store) {
    let mut run = Run::start(store, "wf-order", T0).await;
    run.activate(store, T0, |run, c| {
        for seq in 1..=3 {
            schedule_in(run, c, seq, "step", ActivityOptions::default());
        }
        start_timer_in(run, c, 4, T0 + 300);
        start_timer_in(run, c, 6, T0 + 200);
        start_timer_in(run, c, 5, T0 + 200);
        start_timer_in(run, c, 7, T0 + 10_000);
    })
    .await;
    let tasks = store
        .claim_activities("worker", &names(&["step"]), T0, 10_000, 10)
        .await
        .expect("claim");
    assert_eq!(tasks.len(), 3);
    let token = |seq: u32| {
        tasks
            .iter()
            .find(|t| t.seq == seq)
            .map(|t| t.lease_token)
            .expect("claimed")
    };
    let failure = Failure::new("Declined", "no");
    store
        .finish_attempt(
            &run.id,
            3,
            token(3),
            AttemptOutcome::Completed { output: json!(3) },
            T0 + 50,
        )
        .await
        .expect("finish 3");
    store
        .finish_attempt(
            &run.id,
            2,
            token(2),
            AttemptOutcome::Failed {
                failure: failure.clone(),
            },
            T0 + 60,
        )
        .await
        .expect("finish 2");
    store
        .finish_attempt(
            &run.id,
            1,
            token(1),
            AttemptOutcome::Completed { output: json!(1) },
            T0 + 60,
        )
        .await
        .expect("finish 1");
    let a = store
        .send_signal(&run.id, "a", json!("first"), T0 + 70, 2_000)
        .await
        .expect("signal a");
    let b = store
        .send_signal(&run.id, "b", json!("second"), T0 + 70, 2_000)
        .await
        .expect("signal b");
    let c = store
        .send_signal(&run.id, "c", json!("third"), T0 + 65, 2_000)
        .await
        .expect("signal c");
    assert!(a < b && b < c, "inbox ids increase in arrival order");

    let jobs = store
        .pending_jobs(&run.id, T0 + 300)
        .await
        .expect("pending_jobs");
    let activities: Vec<(u32, u64)> = jobs
        .activities
        .iter()
        .map(|a| (a.seq, a.resolved_at_ms))
        .collect();
    assert_eq!(activities, vec![(3, T0 + 50), (1, T0 + 60), (2, T0 + 60)]);
    assert_eq!(jobs.activities[0].outcome, Ok(json!(3)));
    assert_eq!(jobs.activities[2].outcome, Err(failure));
    assert!(jobs.activities.iter().all(|a| a.attempt == 1));
    let signals: Vec<(i64, &str, &Value, u64)> = jobs
        .signals
        .iter()
        .map(|s| (s.id, s.name.as_str(), &s.input, s.received_at_ms))
        .collect();
    assert_eq!(
        signals,
        vec![
            (a, "a", &json!("first"), T0 + 70),
            (b, "b", &json!("second"), T0 + 70),
            (c, "c", &json!("third"), T0 + 65)
        ]
    );
    let timers: Vec<(u32, u64)> = jobs
        .due_timers
        .iter()
        .map(|t| (t.seq, t.fire_at_ms))
        .collect();
    assert_eq!(
        timers,
        vec![(5, T0 + 200), (6, T0 + 200), (4, T0 + 300)],
        "timer 7 is not due"
    );
}

pub async fn concurrent_commits_of_one_claim_apply_once(store: &dyn Store) {
    let run = Run::start(store, "wf-commit-race", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    let commits: Vec<ActivationCommit> = (0..4u32)
        .map(|i| {
            let mut c = run.commit(&claim, Vec::new(), T0 + 1);
            schedule_in(
                &run,
                &mut c,
                1,
                &format!("variant-{i}"),
                ActivityOptions::default(),
            );
            c
        })
        .collect();
    let results = futures::future::join_all(
        commits
            .iter()
            .cloned()
            .map(|c| async move { store.commit_activation(c).await }),
    )
    .await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one commit applies: {results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(StoreError::Conflict { .. })))
    );
    let mut expected = run.history.events().to_vec();
    expected.extend(commits[winners[0]].events.clone());
    let stored = store.history(&run.id).await.expect("history");
    assert_eq!(stored.events(), expected);
    stored.verify().expect("chain verifies");
    let names_of_winner = names(&[&format!("variant-{}", winners[0])]);
    assert_eq!(
        store
            .claim_activities("w", &names_of_winner, T0 + 2, 1_000, 10)
            .await
            .expect("claim")
            .len(),
        1
    );
}
