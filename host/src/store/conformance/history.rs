//! Creating runs and reading their histories back.

use super::*;

pub async fn create_run_then_read_history(store: &dyn Store) {
    let run = Run::start(store, "wf-read", T0).await;
    let history = store.history(&run.id).await.expect("history");
    assert_eq!(history, run.history);
    history.verify().expect("the stored chain verifies");
    assert_eq!(
        store.events_after(&run.id, 0).await.expect("events_after"),
        run.history.events()
    );
    assert!(
        store
            .events_after(&run.id, 1)
            .await
            .expect("events_after")
            .is_empty()
    );

    let record = store.run(&run.id).await.expect("run");
    assert_eq!(record.run_id, run.id);
    assert_eq!(record.workflow_id, "wf-read");
    assert_eq!(record.workflow_type, "order");
    assert_eq!(record.module_sha256, module_sha());
    assert_eq!(record.status, RunStatus::Running);
    assert_eq!(
        (record.output, record.failure, record.stuck),
        (None, None, None)
    );
    assert_eq!(record.last_seq, 1);
    assert_eq!(record.last_hash, run.history.last_hash());
    assert_eq!(record.created_at_ms, T0);
    assert_eq!(record.closed_at_ms, None);

    let unknown = RunId::from("no-such-run");
    assert!(is_not_found(&store.history(&unknown).await));
    assert!(is_not_found(&store.run(&unknown).await));
}

pub async fn history_keeps_every_event_kind_exactly(store: &dyn Store) {
    let mut run = Run::start(store, "wf-kinds", T0).await;
    let failure = Failure::new(
        "CardDeclined",
        "insufficient funds: «ünïcødé» \"quoted\" \\ \n newline",
    );
    let options = ActivityOptions {
        start_to_close_timeout_ms: 1_500,
        retry: Some(RetryPolicy {
            non_retryable_error_types: vec!["Fatal".into()],
            ..RetryPolicy::default()
        }),
        ..ActivityOptions::default()
    };
    let events = vec![
        Event::ActivityScheduled {
            seq: 1,
            name: "charge".into(),
            input: json!({"nested": {"deep": [1, 2.5, -3e-7, null, true]}, "emoji": "🧵", "big": u64::MAX}),
            options,
        },
        Event::ActivityCompleted {
            seq: 1,
            output: json!("ok"),
            attempt: 3,
        },
        Event::ActivityFailed {
            seq: 2,
            failure: failure.clone(),
            attempt: 1,
        },
        Event::TimerStarted {
            seq: 3,
            duration_ms: 1_000,
            fire_at_ms: T0 + 1_000,
        },
        Event::TimerFired { seq: 3 },
        Event::TimerCancelled { seq: 4 },
        Event::SignalReceived {
            name: "approve".into(),
            input: json!({"by": "grace", "at": 0.1}),
        },
    ];
    let claim = claim_only(store, "host-a", T0, &run).await;
    let commit = run.commit(&claim, events, T0 + 7);
    run.apply(store, commit).await;
    // Close it, so that the last kinds are stored too.
    store
        .send_signal(&run.id, "wake", Value::Null, T0 + 9, 2_000)
        .await
        .expect("send_signal");
    let claim = claim_only(store, "host-a", T0 + 10, &run).await;
    let mut commit = run.commit(
        &claim,
        vec![Event::WorkflowFailed {
            failure: failure.clone(),
        }],
        T0 + 10,
    );
    commit.outcome = RunOutcome::Failed { failure };
    run.apply(store, commit).await;

    let stored = store.history(&run.id).await.expect("history");
    assert_eq!(stored, run.history);
    stored.verify().expect("the stored chain verifies");
    assert_eq!(stored.len(), 11);
    let after = store.events_after(&run.id, 8).await.expect("events_after");
    assert_eq!(after, run.history.events()[8..]);
}

pub async fn create_run_with_a_taken_run_id_fails(store: &dyn Store) {
    let run = Run::start(store, "wf-a", T0).await;
    let mut first_event = run.history.events()[0].clone();
    first_event.recorded_at_ms += 1;
    let again = store
        .create_run(CreateRun {
            run_id: run.id.clone(),
            workflow_id: "wf-b".into(),
            workflow_type: "order".into(),
            module_sha256: module_sha(),
            first_event,
            now_ms: T0 + 1,
            options: RunOptions::default(),
        })
        .await;
    assert!(again.is_err(), "a run id is never reused: {again:?}");
    assert_eq!(
        store.history(&run.id).await.expect("history"),
        run.history,
        "the first run is untouched"
    );
    assert!(is_not_found(&store.run_by_workflow_id("wf-b").await));
}
