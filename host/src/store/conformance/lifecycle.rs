//! The workflow lifecycle: id reuse and conflict policies, signal-with-start,
//! listing, the status line and search attributes, and the helpers the other
//! lifecycle files share. Messages to runs (cancel, termination, updates) and
//! deadlines are in `requests`; children and continue-as-new in `children`.

use super::*;
use crate::model::ParentLink;
use crate::store::{Created, IdConflictPolicy, IdReusePolicy, ListFilter, RunRecord};

/// A start request for `workflow_id` (of `workflow_type`) at `now_ms`, and the
/// run it creates if the store accepts it.
pub(super) fn request(
    workflow_id: &str,
    workflow_type: &str,
    now_ms: u64,
    options: RunOptions,
) -> (CreateRun, Run) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = RunId(format!(
        "lc-{}-{workflow_id}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut history = History::default();
    history.push(
        Event::WorkflowStarted {
            workflow_type: workflow_type.into(),
            workflow_id: workflow_id.into(),
            input: json!({"n": 1}),
            module_sha256: module_sha(),
            seed: 7,
            parent: options.parent.clone(),
            continued_from: None,
        },
        now_ms,
    );
    let request = CreateRun {
        run_id: id.clone(),
        workflow_id: workflow_id.into(),
        workflow_type: workflow_type.into(),
        module_sha256: module_sha(),
        first_event: history.events()[0].clone(),
        now_ms,
        options,
    };
    (request, Run { id, history })
}

/// Starts a run of type `order` that the store must accept as new.
pub(super) async fn start(
    store: &dyn Store,
    workflow_id: &str,
    now_ms: u64,
    options: RunOptions,
) -> Run {
    let (request, run) = request(workflow_id, "order", now_ms, options);
    assert_eq!(
        store.create_run(request).await.expect("create_run"),
        Created::New,
        "workflow id {workflow_id} starts a new run"
    );
    run
}

/// The event that records `outcome` in a history.
pub(super) fn terminal_event(outcome: &RunOutcome) -> Event {
    match outcome {
        RunOutcome::Running => unreachable!("running is not terminal"),
        RunOutcome::Completed { output } => Event::WorkflowCompleted {
            output: output.clone(),
        },
        RunOutcome::Failed { failure } => Event::WorkflowFailed {
            failure: failure.clone(),
        },
        RunOutcome::Cancelled { message } => Event::WorkflowCancelled {
            message: message.clone(),
        },
        RunOutcome::Terminated { reason } => Event::WorkflowTerminated {
            reason: reason.clone(),
        },
        RunOutcome::TimedOut { timeout } => Event::WorkflowTimedOut {
            timeout: timeout.clone(),
        },
        RunOutcome::ContinuedAsNew { .. } => Event::WorkflowContinuedAsNew {
            input: json!("next"),
        },
    }
}

/// Claims `run` (it must be the only runnable run) and closes it with `outcome`.
pub(super) async fn close(store: &dyn Store, run: &mut Run, now_ms: u64, outcome: RunOutcome) {
    run.activate(store, now_ms, |run, c| {
        add_events(run, c, vec![terminal_event(&outcome)]);
        c.outcome = outcome;
    })
    .await;
}

pub(super) async fn record(store: &dyn Store, run: &Run) -> RunRecord {
    store.run(&run.id).await.expect("run")
}

fn completed(output: Value) -> RunOutcome {
    RunOutcome::Completed { output }
}

fn failed() -> RunOutcome {
    RunOutcome::Failed {
        failure: Failure::new("Boom", "it broke"),
    }
}

fn policy(reuse: IdReusePolicy) -> RunOptions {
    RunOptions {
        id_reuse_policy: reuse,
        ..RunOptions::default()
    }
}

pub async fn reuse_policy_allow_duplicate_follows_any_closed_run(store: &dyn Store) {
    let mut first = start(store, "wf-reuse-any", T0, RunOptions::default()).await;
    close(store, &mut first, T0 + 1, completed(json!(1))).await;
    let mut second = start(
        store,
        "wf-reuse-any",
        T0 + 2,
        policy(IdReusePolicy::AllowDuplicate),
    )
    .await;
    close(store, &mut second, T0 + 3, failed()).await;
    start(
        store,
        "wf-reuse-any",
        T0 + 4,
        policy(IdReusePolicy::AllowDuplicate),
    )
    .await;
}

pub async fn reuse_policy_failed_only_follows_only_unsuccessful_runs(store: &dyn Store) {
    let mut first = start(store, "wf-reuse-failed", T0, RunOptions::default()).await;
    close(store, &mut first, T0 + 1, completed(json!(1))).await;
    let (refused, _) = request(
        "wf-reuse-failed",
        "order",
        T0 + 2,
        policy(IdReusePolicy::AllowDuplicateFailedOnly),
    );
    match store.create_run(refused.clone()).await {
        Err(StoreError::WorkflowIdReused {
            workflow_id,
            run_id,
            status,
            policy,
        }) => {
            assert_eq!(workflow_id, "wf-reuse-failed");
            assert_eq!(run_id, first.id, "names the run that completed");
            assert_eq!(status, "completed");
            assert_eq!(policy, "allow_duplicate_failed_only");
        }
        other => panic!("expected WorkflowIdReused after a completed run, got {other:?}"),
    }
    assert!(
        is_not_found(&store.run(&refused.run_id).await),
        "a refused run is not written"
    );

    // A plain start is allowed, and the next run ends unsuccessfully.
    let mut second = start(store, "wf-reuse-failed", T0 + 3, RunOptions::default()).await;
    close(
        store,
        &mut second,
        T0 + 4,
        RunOutcome::Terminated {
            reason: "operator".into(),
        },
    )
    .await;
    start(
        store,
        "wf-reuse-failed",
        T0 + 5,
        policy(IdReusePolicy::AllowDuplicateFailedOnly),
    )
    .await;
}

pub async fn reuse_policy_reject_duplicate_refuses_any_earlier_run(store: &dyn Store) {
    let mut first = start(store, "wf-reuse-never", T0, RunOptions::default()).await;
    close(store, &mut first, T0 + 1, failed()).await;
    let (refused, _) = request(
        "wf-reuse-never",
        "order",
        T0 + 2,
        policy(IdReusePolicy::RejectDuplicate),
    );
    match store.create_run(refused.clone()).await {
        Err(StoreError::WorkflowIdReused {
            run_id,
            status,
            policy,
            ..
        }) => {
            assert_eq!(
                (run_id, status.as_str(), policy.as_str()),
                (first.id.clone(), "failed", "reject_duplicate")
            );
        }
        other => panic!("expected WorkflowIdReused, got {other:?}"),
    }
    assert!(is_not_found(&store.run(&refused.run_id).await));
    assert_eq!(
        store
            .run_by_workflow_id("wf-reuse-never")
            .await
            .expect("by workflow id")
            .run_id,
        first.id
    );
    start(
        store,
        "wf-reuse-never-fresh",
        T0,
        policy(IdReusePolicy::RejectDuplicate),
    )
    .await;
}

pub async fn an_open_run_is_a_conflict_whatever_the_reuse_policy(store: &dyn Store) {
    let mut first = start(store, "wf-open-reuse", T0, RunOptions::default()).await;
    close(store, &mut first, T0 + 1, completed(json!(1))).await;
    let open = start(store, "wf-open-reuse", T0 + 2, RunOptions::default()).await;
    let (again, _) = request(
        "wf-open-reuse",
        "order",
        T0 + 3,
        RunOptions {
            id_reuse_policy: IdReusePolicy::RejectDuplicate,
            id_conflict_policy: IdConflictPolicy::Fail,
            ..RunOptions::default()
        },
    );
    let result = store.create_run(again.clone()).await;
    assert!(
        matches!(&result, Err(StoreError::WorkflowIdInUse { run_id, .. }) if *run_id == open.id),
        "an open run decides before the reuse policy: {result:?}"
    );
    let mut use_existing = again;
    use_existing.options.id_conflict_policy = IdConflictPolicy::UseExisting;
    assert_eq!(
        store.create_run(use_existing).await.expect("create_run"),
        Created::Existing(open.id.clone())
    );
}

pub async fn conflict_policy_use_existing_returns_the_open_run(store: &dyn Store) {
    let mut open = start(store, "wf-existing", T0, RunOptions::default()).await;
    open.activate(store, T0, |_, _| {}).await;
    let (again, _) = request(
        "wf-existing",
        "order",
        T0 + 1,
        RunOptions {
            id_conflict_policy: IdConflictPolicy::UseExisting,
            ..RunOptions::default()
        },
    );
    assert_eq!(
        store.create_run(again.clone()).await.expect("create_run"),
        Created::Existing(open.id.clone())
    );
    assert!(
        is_not_found(&store.run(&again.run_id).await),
        "no second run was written"
    );
    assert_not_claimable(
        store,
        T0 + 2,
        "using the open run without a signal does not wake it",
    )
    .await;
    let mut fail = again;
    fail.options.id_conflict_policy = IdConflictPolicy::Fail;
    assert!(matches!(
        store.create_run(fail).await,
        Err(StoreError::WorkflowIdInUse { .. })
    ));
}

pub async fn signal_with_start_queues_the_signal_for_a_new_run(store: &dyn Store) {
    let run = start(
        store,
        "wf-sws-new",
        T0,
        RunOptions {
            id_conflict_policy: IdConflictPolicy::UseExisting,
            signal: Some(("go".into(), json!({"fast": true}))),
            ..RunOptions::default()
        },
    )
    .await;
    let jobs = store.pending_jobs(&run.id, T0).await.expect("pending_jobs");
    assert_eq!(
        jobs.signals.len(),
        1,
        "the start's signal waits for the run"
    );
    assert_eq!(
        (
            jobs.signals[0].name.as_str(),
            &jobs.signals[0].input,
            jobs.signals[0].received_at_ms
        ),
        ("go", &json!({"fast": true}), T0)
    );
    let claim = claim_only(store, "host-a", T0, &run).await;
    assert_eq!(
        claim.observed_wakeups, 1,
        "one wake-up for start and signal"
    );
}

pub async fn signal_with_start_delivers_to_the_existing_run(store: &dyn Store) {
    let mut open = start(store, "wf-sws-old", T0, RunOptions::default()).await;
    open.activate(store, T0, |_, _| {}).await;
    assert_not_claimable(store, T0 + 1, "the run is idle").await;
    let (again, _) = request(
        "wf-sws-old",
        "order",
        T0 + 2,
        RunOptions {
            id_conflict_policy: IdConflictPolicy::UseExisting,
            signal: Some(("go".into(), json!(2))),
            ..RunOptions::default()
        },
    );
    assert_eq!(
        store.create_run(again.clone()).await.expect("create_run"),
        Created::Existing(open.id.clone())
    );
    assert!(is_not_found(&store.run(&again.run_id).await));
    let claim = claim_only(store, "host-a", T0 + 3, &open).await;
    assert_eq!(claim.observed_wakeups, 2, "the signal woke the open run");
    let jobs = store
        .pending_jobs(&open.id, T0 + 3)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.signals.len(), 1, "delivered exactly once");
    assert_eq!(
        (
            jobs.signals[0].name.as_str(),
            &jobs.signals[0].input,
            jobs.signals[0].received_at_ms
        ),
        ("go", &json!(2), T0 + 2)
    );
}

pub async fn status_line_search_attributes_and_memo_round_trip(store: &dyn Store) {
    let mut run = start(
        store,
        "wf-attrs",
        T0,
        RunOptions {
            memo: Some(json!({"note": "from the start"})),
            search_attributes: json!({"customer": "ada", "priority": 1}),
            ..RunOptions::default()
        },
    )
    .await;
    let started = record(store, &run).await;
    assert_eq!(
        started.search_attributes,
        json!({"customer": "ada", "priority": 1})
    );
    assert_eq!(started.memo, Some(json!({"note": "from the start"})));
    assert_eq!(started.status_line, None);
    assert_eq!(started.parent, None);
    assert_eq!(started.continued_to, None);
    assert_eq!(
        (started.cancel_requested, started.termination_requested),
        (None, None)
    );
    assert_eq!(
        (
            started.deadline_ms,
            started.execution_deadline_ms,
            started.run_timeout_ms
        ),
        (None, None, None)
    );

    run.activate(store, T0 + 1, |run, c| {
        add_events(
            run,
            c,
            vec![
                Event::StatusLineSet {
                    text: "charging the card".into(),
                },
                Event::SearchAttributesUpserted {
                    attributes: json!({"stage": "charge"}),
                },
            ],
        );
        c.status_line = Some("charging the card".into());
        c.search_attributes = Some(json!({"customer": "ada", "priority": 1, "stage": "charge"}));
    })
    .await;
    let set = record(store, &run).await;
    assert_eq!(set.status_line.as_deref(), Some("charging the card"));
    assert_eq!(
        set.search_attributes,
        json!({"customer": "ada", "priority": 1, "stage": "charge"})
    );

    store
        .send_signal(&run.id, "poke", Value::Null, T0 + 2, 2_000)
        .await
        .expect("send_signal");
    run.activate(store, T0 + 3, |_, _| {}).await;
    let kept = record(store, &run).await;
    assert_eq!(
        kept.status_line.as_deref(),
        Some("charging the card"),
        "an activation that sets nothing keeps the status line"
    );
    assert_eq!(kept.search_attributes, set.search_attributes);

    let plain = start(store, "wf-no-attrs", T0, RunOptions::default()).await;
    assert_eq!(
        record(store, &plain).await.search_attributes,
        json!({}),
        "no search attributes read back as an empty object"
    );
}

fn ids(runs: &[RunRecord]) -> Vec<RunId> {
    runs.iter().map(|r| r.run_id.clone()).collect()
}

pub async fn list_runs_filters_newest_first(store: &dyn Store) {
    let with = |attributes: Value| RunOptions {
        search_attributes: attributes,
        ..RunOptions::default()
    };
    let (a, a_run) = request(
        "wf-list-a",
        "order",
        T0,
        with(json!({"customer": "ada", "priority": 1})),
    );
    let (b, b_run) = request(
        "wf-list-b",
        "order",
        T0 + 1,
        with(json!({"customer": "bob", "priority": "1"})),
    );
    let (c, c_run) = request(
        "wf-list-c",
        "invoice",
        T0 + 2,
        with(json!({"customer": "ada", "vip": true})),
    );
    let (d, mut d_run) = request("wf-list-d", "order", T0 + 3, RunOptions::default());
    for r in [a, b, c, d] {
        store.create_run(r).await.expect("create_run");
    }
    let claims = store
        .claim_runs("host-a", T0 + 4, LEASE, 100)
        .await
        .expect("claim_runs");
    for claim in claims {
        let mut run = match &claim.run_id {
            id if *id == d_run.id => None,
            id => Some(Run {
                id: id.clone(),
                history: store.history(id).await.expect("history"),
            }),
        };
        match run.as_mut() {
            Some(run) => {
                let commit = run.commit(&claim, Vec::new(), T0 + 4);
                run.apply(store, commit).await;
            }
            None => {
                let mut commit = d_run.commit(
                    &claim,
                    vec![
                        Event::SearchAttributesUpserted {
                            attributes: json!({"stage": "done"}),
                        },
                        Event::WorkflowCompleted { output: json!(4) },
                    ],
                    T0 + 4,
                );
                commit.search_attributes = Some(json!({"stage": "done"}));
                commit.outcome = RunOutcome::Completed { output: json!(4) };
                d_run.apply(store, commit).await;
            }
        }
    }
    let (a, b, c, d) = (a_run.id, b_run.id, c_run.id, d_run.id);
    let list = |filter: ListFilter| async move {
        ids(&store.list_runs(&filter).await.expect("list_runs").runs)
    };
    let attribute = |key: &str, value: Value| ListFilter {
        search_attributes: vec![(key.into(), value)],
        ..ListFilter::default()
    };

    assert_eq!(
        list(ListFilter::default()).await,
        vec![d.clone(), c.clone(), b.clone(), a.clone()],
        "newest first"
    );
    assert_eq!(
        list(ListFilter {
            workflow_type: Some("order".into()),
            ..ListFilter::default()
        })
        .await,
        vec![d.clone(), b.clone(), a.clone()]
    );
    assert_eq!(
        list(ListFilter {
            status: Some(RunStatus::Completed),
            ..ListFilter::default()
        })
        .await,
        vec![d.clone()]
    );
    assert_eq!(
        list(ListFilter {
            status: Some(RunStatus::Running),
            workflow_type: Some("order".into()),
            ..ListFilter::default()
        })
        .await,
        vec![b.clone(), a.clone()]
    );
    assert_eq!(
        list(ListFilter {
            workflow_id: Some("wf-list-b".into()),
            ..ListFilter::default()
        })
        .await,
        vec![b.clone()]
    );
    assert_eq!(
        list(attribute("priority", json!(1))).await,
        vec![a.clone()],
        "the number 1 is not the string \"1\""
    );
    assert_eq!(
        list(attribute("priority", json!("1"))).await,
        vec![b.clone()],
        "the string \"1\" is not the number 1"
    );
    assert_eq!(list(attribute("vip", json!(true))).await, vec![c.clone()]);
    assert_eq!(
        list(attribute("vip", json!(1))).await,
        Vec::<RunId>::new(),
        "true is not 1"
    );
    assert_eq!(
        list(attribute("customer", json!("ada"))).await,
        vec![c.clone(), a.clone()]
    );
    assert_eq!(
        list(ListFilter {
            search_attributes: vec![
                ("customer".into(), json!("ada")),
                ("priority".into(), json!(1)),
            ],
            ..ListFilter::default()
        })
        .await,
        vec![a.clone()],
        "every pair must match"
    );
    assert_eq!(
        list(attribute("stage", json!("done"))).await,
        vec![d.clone()],
        "attributes set by an activation are searchable"
    );
    assert_eq!(
        list(attribute("missing", json!("x"))).await,
        Vec::<RunId>::new()
    );
    assert_eq!(
        list(ListFilter {
            limit: 2,
            ..ListFilter::default()
        })
        .await,
        vec![d.clone(), c.clone()]
    );
}

pub async fn list_runs_defaults_to_a_hundred(store: &dyn Store) {
    for i in 0..105 {
        let (r, _) = request(
            &format!("wf-many-{i}"),
            "bulk",
            T0 + i,
            RunOptions::default(),
        );
        store.create_run(r).await.expect("create_run");
    }
    let all = store
        .list_runs(&ListFilter::default())
        .await
        .expect("list_runs")
        .runs;
    assert_eq!(all.len(), 100, "limit 0 means 100");
    assert_eq!(all[0].workflow_id, "wf-many-104");
    let three = store
        .list_runs(&ListFilter {
            limit: 3,
            ..ListFilter::default()
        })
        .await
        .expect("list_runs")
        .runs;
    assert_eq!(three.len(), 3);
}

/// A child's parent link, as the child's options carry it.
pub(super) fn link(parent: &Run, parent_workflow_id: &str, seq: u32) -> ParentLink {
    ParentLink {
        workflow_id: parent_workflow_id.into(),
        run_id: parent.id.clone(),
        seq,
    }
}

pub async fn concurrent_signal_with_starts_open_one_run(store: &dyn Store) {
    const STARTS: u64 = 12;
    let starts = (0..STARTS).map(|i| async move {
        let (start, _) = request(
            "wf-sws-race",
            "order",
            T0,
            RunOptions {
                id_conflict_policy: IdConflictPolicy::UseExisting,
                signal: Some(("go".into(), json!(i))),
                ..RunOptions::default()
            },
        );
        let new = start.run_id.clone();
        match store.create_run(start).await.expect("create_run") {
            Created::New => new,
            Created::Existing(open) => open,
        }
    });
    let went_to: BTreeSet<RunId> = futures::future::join_all(starts)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        went_to.len(),
        1,
        "every start found the one run: {went_to:?}"
    );
    let runs = store
        .list_runs(&ListFilter {
            workflow_id: Some("wf-sws-race".into()),
            ..ListFilter::default()
        })
        .await
        .expect("list_runs")
        .runs;
    assert_eq!(ids(&runs), went_to.into_iter().collect::<Vec<_>>());
    let mut inputs: Vec<Value> = store
        .pending_jobs(&runs[0].run_id, T0)
        .await
        .expect("pending_jobs")
        .signals
        .into_iter()
        .map(|s| s.input)
        .collect();
    inputs.sort_by_key(|v| v.as_u64());
    assert_eq!(
        inputs,
        (0..STARTS).map(|i| json!(i)).collect::<Vec<_>>(),
        "each signal delivered exactly once"
    );
}
