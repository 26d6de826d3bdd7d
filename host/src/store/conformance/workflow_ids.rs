//! One open run per workflow id, and finding a run by workflow id.

use super::*;

pub async fn workflow_id_is_unique_among_open_runs(store: &dyn Store) {
    let mut first = Run::start(store, "wf-unique", T0).await;
    let mut second = History::default();
    second.push(
        Event::WorkflowStarted {
            workflow_type: "order".into(),
            workflow_id: "wf-unique".into(),
            input: Value::Null,
            module_sha256: module_sha(),
            seed: 1,
            parent: None,
            continued_from: None,
        },
        T0 + 1,
    );
    let request = CreateRun {
        run_id: RunId::from("second-run"),
        workflow_id: "wf-unique".into(),
        workflow_type: "order".into(),
        module_sha256: module_sha(),
        first_event: second.events()[0].clone(),
        now_ms: T0 + 1,
        options: RunOptions::default(),
    };
    match store.create_run(request.clone()).await {
        Err(StoreError::WorkflowIdInUse {
            workflow_id,
            run_id,
        }) => {
            assert_eq!(workflow_id, "wf-unique");
            assert_eq!(run_id, first.id, "the error names the open run");
        }
        other => panic!("expected WorkflowIdInUse, got {other:?}"),
    }
    assert!(
        is_not_found(&store.run(&request.run_id).await),
        "the refused run was not written"
    );

    first
        .activate(store, T0 + 2, |run, c| {
            add_events(run, c, vec![Event::WorkflowCompleted { output: json!(1) }]);
            c.outcome = RunOutcome::Completed { output: json!(1) };
        })
        .await;
    store
        .create_run(request.clone())
        .await
        .expect("the id is free once the first run closed");
    assert_eq!(
        store
            .run_by_workflow_id("wf-unique")
            .await
            .expect("by workflow id")
            .run_id,
        request.run_id
    );
}

pub async fn stuck_run_keeps_its_workflow_id(store: &dyn Store) {
    let run = Run::start(store, "wf-stuck-id", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    store
        .park_run(&run.id, claim.lease_token, json!({"why": "diverged"}))
        .await
        .expect("park_run");
    let mut history = History::default();
    history.push(
        Event::WorkflowStarted {
            workflow_type: "order".into(),
            workflow_id: "wf-stuck-id".into(),
            input: Value::Null,
            module_sha256: module_sha(),
            seed: 1,
            parent: None,
            continued_from: None,
        },
        T0,
    );
    let again = store
        .create_run(CreateRun {
            run_id: RunId::from("another"),
            workflow_id: "wf-stuck-id".into(),
            workflow_type: "order".into(),
            module_sha256: module_sha(),
            first_event: history.events()[0].clone(),
            now_ms: T0,
            options: RunOptions::default(),
        })
        .await;
    assert!(
        matches!(&again, Err(StoreError::WorkflowIdInUse { run_id, .. }) if *run_id == run.id),
        "a stuck run is open: {again:?}"
    );
}

pub async fn run_by_workflow_id_prefers_the_open_run(store: &dyn Store) {
    assert!(is_not_found(&store.run_by_workflow_id("wf-none").await));
    let mut old = Run::start(store, "wf-latest", T0).await;
    old.activate(store, T0 + 1, |run, c| {
        add_events(
            run,
            c,
            vec![Event::WorkflowCompleted {
                output: Value::Null,
            }],
        );
        c.outcome = RunOutcome::Completed {
            output: Value::Null,
        };
    })
    .await;
    assert_eq!(
        store
            .run_by_workflow_id("wf-latest")
            .await
            .expect("closed run")
            .run_id,
        old.id
    );
    let mut newer = Run::start(store, "wf-latest", T0 + 10).await;
    assert_eq!(
        store
            .run_by_workflow_id("wf-latest")
            .await
            .expect("open run")
            .run_id,
        newer.id
    );
    newer
        .activate(store, T0 + 11, |run, c| {
            add_events(
                run,
                c,
                vec![Event::WorkflowCompleted {
                    output: Value::Null,
                }],
            );
            c.outcome = RunOutcome::Completed {
                output: Value::Null,
            };
        })
        .await;
    assert_eq!(
        store
            .run_by_workflow_id("wf-latest")
            .await
            .expect("latest closed run")
            .run_id,
        newer.id,
        "with no open run, the most recently created one"
    );
}
