//! Child workflows (started with the parent's commit, resolved in the parent
//! when they close, handled by their parent-close policy when the parent
//! closes first) and continue-as-new.

use super::lifecycle::{close, link, record, request, start, terminal_event};
use super::*;
use crate::model::ParentClosePolicy;
use crate::store::{Created, IdReusePolicy, NewChild, ResolvedChild};

/// Adds the command and the child run for child `seq` to a parent's commit.
fn start_child_in(
    parent: &Run,
    commit: &mut ActivationCommit,
    seq: u32,
    child: CreateRun,
    policy: ParentClosePolicy,
) {
    add_events(
        parent,
        commit,
        vec![Event::ChildWorkflowInitiated {
            seq,
            workflow_type: child.workflow_type.clone(),
            workflow_id: child.workflow_id.clone(),
            input: json!({"n": 1}),
            parent_close_policy: policy,
            execution_timeout_ms: 0,
        }],
    );
    commit.new_children.push(NewChild {
        seq,
        parent_close_policy: policy,
        run: child,
    });
}

/// A start request for a child of `parent` (workflow id `parent_workflow_id`) as its child `seq`.
fn child_request(
    parent: &Run,
    parent_workflow_id: &str,
    seq: u32,
    workflow_id: &str,
    now_ms: u64,
) -> (CreateRun, Run) {
    request(
        workflow_id,
        "order",
        now_ms,
        RunOptions {
            parent: Some(link(parent, parent_workflow_id, seq)),
            ..RunOptions::default()
        },
    )
}

/// Claims exactly `runs` (no other run may be runnable) and returns their claims in that order.
async fn claim_exactly(store: &dyn Store, now_ms: u64, runs: &[&Run]) -> Vec<RunClaim> {
    let claims = store
        .claim_runs("host-a", now_ms, LEASE, 100)
        .await
        .expect("claim_runs");
    let mut got: Vec<&RunId> = claims.iter().map(|c| &c.run_id).collect();
    got.sort();
    let mut want: Vec<&RunId> = runs.iter().map(|r| &r.id).collect();
    want.sort();
    assert_eq!(got, want, "the runnable runs at {now_ms}");
    runs.iter()
        .map(|r| {
            claims
                .iter()
                .find(|c| c.run_id == r.id)
                .cloned()
                .expect("claimed")
        })
        .collect()
}

/// Commits an activation of a claimed run that ends with `outcome` (`Running`: nothing happens).
async fn finish(
    store: &dyn Store,
    run: &mut Run,
    claim: &RunClaim,
    now_ms: u64,
    outcome: RunOutcome,
) {
    let events = match outcome {
        RunOutcome::Running => Vec::new(),
        ref closing => vec![terminal_event(closing)],
    };
    let mut commit = run.commit(claim, events, now_ms);
    commit.outcome = outcome;
    run.apply(store, commit).await;
}

pub async fn children_start_with_the_parent_commit_and_resolve_it(store: &dyn Store) {
    let mut parent = start(store, "wf-parent", T0, RunOptions::default()).await;
    let (first, mut first_run) = child_request(&parent, "wf-parent", 1, "wf-child-1", T0 + 1);
    let (second, mut second_run) = child_request(&parent, "wf-parent", 2, "wf-child-2", T0 + 1);
    parent
        .activate(store, T0 + 1, |run, c| {
            start_child_in(run, c, 1, first, ParentClosePolicy::Terminate);
            start_child_in(run, c, 2, second, ParentClosePolicy::Abandon);
        })
        .await;
    let child = record(store, &first_run).await;
    assert_eq!(child.status, RunStatus::Running);
    assert_eq!(child.workflow_id, "wf-child-1");
    assert_eq!(child.parent, Some(link(&parent, "wf-parent", 1)));
    assert_eq!(
        store.history(&first_run.id).await.expect("child history"),
        first_run.history,
        "the child's event 1 is written with the parent's commit"
    );
    assert!(
        store
            .pending_jobs(&parent.id, T0 + 1)
            .await
            .expect("pending_jobs")
            .children
            .is_empty(),
        "a running child has not resolved"
    );
    let waiting: Vec<_> = store
        .waiting_on(&parent.id)
        .await
        .expect("waiting_on")
        .children
        .into_iter()
        .map(|c| (c.seq, c.workflow_id, c.run_id))
        .collect();
    assert_eq!(
        waiting,
        vec![
            (1, "wf-child-1".to_owned(), Some(first_run.id.clone())),
            (2, "wf-child-2".to_owned(), Some(second_run.id.clone())),
        ],
        "the parent waits on both children"
    );

    let claims = claim_exactly(store, T0 + 2, &[&first_run, &second_run]).await;
    finish(
        store,
        &mut first_run,
        &claims[0],
        T0 + 2,
        RunOutcome::Completed {
            output: json!("shipped"),
        },
    )
    .await;
    let failure = Failure::new("OutOfStock", "no more widgets");
    finish(
        store,
        &mut second_run,
        &claims[1],
        T0 + 3,
        RunOutcome::Failed {
            failure: failure.clone(),
        },
    )
    .await;

    assert!(
        store
            .waiting_on(&parent.id)
            .await
            .expect("waiting_on")
            .children
            .is_empty(),
        "resolved children are no longer waited on"
    );
    let claim = claim_only(store, "host-a", T0 + 4, &parent).await;
    assert_eq!(
        claim.observed_wakeups, 3,
        "created, then woken once by each child"
    );
    let jobs = store
        .pending_jobs(&parent.id, T0 + 4)
        .await
        .expect("pending_jobs");
    assert_eq!(
        jobs.children,
        vec![
            ResolvedChild {
                seq: 1,
                outcome: Ok(json!("shipped")),
                resolved_at_ms: T0 + 2,
            },
            ResolvedChild {
                seq: 2,
                outcome: Err(failure.clone()),
                resolved_at_ms: T0 + 3,
            },
        ]
    );
    let mut commit = parent.commit(
        &claim,
        vec![
            Event::ChildWorkflowCompleted {
                seq: 1,
                output: json!("shipped"),
            },
            Event::ChildWorkflowFailed { seq: 2, failure },
        ],
        T0 + 4,
    );
    commit.consumed_children = vec![1, 2];
    parent.apply(store, commit).await;
    assert!(
        store
            .pending_jobs(&parent.id, T0 + 5)
            .await
            .expect("pending_jobs")
            .children
            .is_empty(),
        "consumed children are not delivered again"
    );
    assert_not_claimable(store, T0 + 5, "everything was consumed").await;
}

pub async fn children_closing_unsuccessfully_resolve_with_their_failure(store: &dyn Store) {
    let mut parent = start(store, "wf-sad-parent", T0, RunOptions::default()).await;
    let (a, mut a_run) = child_request(&parent, "wf-sad-parent", 1, "wf-sad-1", T0);
    let (b, mut b_run) = child_request(&parent, "wf-sad-parent", 2, "wf-sad-2", T0);
    let (c, mut c_run) = child_request(&parent, "wf-sad-parent", 3, "wf-sad-3", T0);
    parent
        .activate(store, T0, |run, commit| {
            start_child_in(run, commit, 1, a, ParentClosePolicy::Terminate);
            start_child_in(run, commit, 2, b, ParentClosePolicy::Terminate);
            start_child_in(run, commit, 3, c, ParentClosePolicy::Terminate);
        })
        .await;
    let claims = claim_exactly(store, T0 + 1, &[&a_run, &b_run, &c_run]).await;
    finish(
        store,
        &mut a_run,
        &claims[0],
        T0 + 1,
        RunOutcome::Cancelled {
            message: "as asked".into(),
        },
    )
    .await;
    finish(
        store,
        &mut b_run,
        &claims[1],
        T0 + 1,
        RunOutcome::Terminated {
            reason: "operator".into(),
        },
    )
    .await;
    finish(
        store,
        &mut c_run,
        &claims[2],
        T0 + 1,
        RunOutcome::TimedOut {
            timeout: "execution".into(),
        },
    )
    .await;
    claim_only(store, "host-a", T0 + 2, &parent).await;
    let outcomes: Vec<(u32, Result<Value, Failure>)> = store
        .pending_jobs(&parent.id, T0 + 2)
        .await
        .expect("pending_jobs")
        .children
        .into_iter()
        .map(|c| (c.seq, c.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1, Err(Failure::new("Cancelled", "as asked"))),
            (2, Err(Failure::new("Terminated", "operator"))),
            (
                3,
                Err(Failure::new("TimedOut", "the execution timeout passed"))
            ),
        ]
    );
}

pub async fn a_child_with_a_taken_workflow_id_fails_at_once(store: &dyn Store) {
    let mut taken = start(store, "wf-taken", T0, RunOptions::default()).await;
    taken.activate(store, T0, |_, _| {}).await;
    let mut parent = start(store, "wf-taker", T0, RunOptions::default()).await;
    let (refused, _) = child_request(&parent, "wf-taker", 1, "wf-taken", T0 + 1);
    let refused_id = refused.run_id.clone();
    let (free, free_run) = child_request(&parent, "wf-taker", 2, "wf-free", T0 + 1);
    parent
        .activate(store, T0 + 1, |run, c| {
            start_child_in(run, c, 1, refused, ParentClosePolicy::Terminate);
            start_child_in(run, c, 2, free, ParentClosePolicy::Terminate);
        })
        .await;
    assert!(
        is_not_found(&store.run(&refused_id).await),
        "the child whose id is taken is not created"
    );
    assert_eq!(record(store, &free_run).await.status, RunStatus::Running);
    claim_exactly(store, T0 + 2, &[&parent, &free_run]).await;
    let jobs = store
        .pending_jobs(&parent.id, T0 + 2)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.children.len(), 1, "only the refused child resolved");
    let child = &jobs.children[0];
    assert_eq!((child.seq, child.resolved_at_ms), (1, T0 + 1));
    match &child.outcome {
        Err(failure) => {
            assert_eq!(failure.error_type, "WorkflowIdInUse");
            assert!(
                failure.message.contains("wf-taken") && failure.message.contains(taken.id.as_str()),
                "names the workflow id and its open run: {failure}"
            );
        }
        other => panic!("expected a WorkflowIdInUse failure, got {other:?}"),
    }
}

pub async fn parent_close_policies_apply_to_open_children(store: &dyn Store) {
    let mut parent = start(store, "wf-pcp", T0, RunOptions::default()).await;
    let (t, t_run) = child_request(&parent, "wf-pcp", 1, "wf-pcp-terminate", T0);
    let (c, c_run) = child_request(&parent, "wf-pcp", 2, "wf-pcp-cancel", T0);
    let (a, mut a_run) = child_request(&parent, "wf-pcp", 3, "wf-pcp-abandon", T0);
    let (d, mut d_run) = child_request(&parent, "wf-pcp", 4, "wf-pcp-done", T0);
    parent
        .activate(store, T0, |run, commit| {
            start_child_in(run, commit, 1, t, ParentClosePolicy::Terminate);
            start_child_in(run, commit, 2, c, ParentClosePolicy::RequestCancel);
            start_child_in(run, commit, 3, a, ParentClosePolicy::Abandon);
            start_child_in(run, commit, 4, d, ParentClosePolicy::Terminate);
        })
        .await;
    let mut c_run = c_run;
    let claims = claim_exactly(store, T0 + 1, &[&t_run, &c_run, &a_run, &d_run]).await;
    store
        .park_run(&t_run.id, claims[0].lease_token, json!({"why": "diverged"}))
        .await
        .expect("park_run");
    finish(store, &mut c_run, &claims[1], T0 + 1, RunOutcome::Running).await;
    finish(store, &mut a_run, &claims[2], T0 + 1, RunOutcome::Running).await;
    finish(
        store,
        &mut d_run,
        &claims[3],
        T0 + 1,
        RunOutcome::Completed { output: json!(4) },
    )
    .await;

    let claim = claim_only(store, "host-a", T0 + 2, &parent).await;
    let mut commit = parent.commit(
        &claim,
        vec![
            Event::ChildWorkflowCompleted {
                seq: 4,
                output: json!(4),
            },
            Event::WorkflowCompleted {
                output: json!("parent done"),
            },
        ],
        T0 + 2,
    );
    commit.consumed_children = vec![4];
    commit.outcome = RunOutcome::Completed {
        output: json!("parent done"),
    };
    parent.apply(store, commit).await;

    let terminated = record(store, &t_run).await;
    assert_eq!(
        terminated.termination_requested.as_deref(),
        Some("parent wf-pcp closed")
    );
    assert_eq!(
        (terminated.status, terminated.stuck),
        (RunStatus::Running, None),
        "a stuck child runs again so that the termination is carried out"
    );
    let cancelled = record(store, &c_run).await;
    assert_eq!(
        cancelled.cancel_requested.as_deref(),
        Some("parent wf-pcp closed")
    );
    assert_eq!(cancelled.termination_requested, None);
    let abandoned = record(store, &a_run).await;
    assert_eq!(
        (abandoned.cancel_requested, abandoned.termination_requested),
        (None, None),
        "an abandoned child runs on untouched"
    );
    let done = record(store, &d_run).await;
    assert_eq!(
        (done.status, done.termination_requested),
        (RunStatus::Completed, None),
        "a child that already closed is left alone"
    );
    let claims = claim_exactly(store, T0 + 3, &[&t_run, &c_run]).await;
    let jobs = store
        .pending_jobs(&c_run.id, T0 + 3)
        .await
        .expect("pending_jobs");
    assert_eq!(
        jobs.cancel.map(|c| c.reason),
        Some("parent wf-pcp closed".to_owned())
    );
    // The terminated child closes after its parent: the closed parent stays closed.
    let mut t_run = t_run;
    finish(
        store,
        &mut t_run,
        &claims[0],
        T0 + 3,
        RunOutcome::Terminated {
            reason: "parent wf-pcp closed".into(),
        },
    )
    .await;
    assert_eq!(record(store, &parent).await.status, RunStatus::Completed);
    assert_not_claimable(
        store,
        T0 + 4,
        "a closed parent is not woken by its children",
    )
    .await;
}

pub async fn a_parent_cancels_its_child(store: &dyn Store) {
    let mut parent = start(store, "wf-cc", T0, RunOptions::default()).await;
    let (child, mut child_run) = child_request(&parent, "wf-cc", 1, "wf-cc-child", T0);
    parent
        .activate(store, T0, |run, c| {
            start_child_in(run, c, 1, child, ParentClosePolicy::Abandon)
        })
        .await;
    child_run.activate(store, T0 + 1, |_, _| {}).await;
    store
        .send_signal(&parent.id, "stop", Value::Null, T0 + 2, 2_000)
        .await
        .expect("send_signal");
    parent
        .activate(store, T0 + 3, |run, c| {
            add_events(
                run,
                c,
                vec![
                    Event::SignalReceived {
                        name: "stop".into(),
                        input: Value::Null,
                    },
                    Event::ChildWorkflowCancelRequested { seq: 1 },
                ],
            );
            c.cancelled_children = vec![1];
        })
        .await;
    assert_eq!(
        record(store, &child_run).await.cancel_requested.as_deref(),
        Some("parent wf-cc asked to cancel")
    );
    let claim = claim_only(store, "host-a", T0 + 4, &child_run).await;
    let jobs = store
        .pending_jobs(&child_run.id, T0 + 4)
        .await
        .expect("pending_jobs");
    assert_eq!(
        jobs.cancel
            .as_ref()
            .map(|c| (c.reason.as_str(), c.requested_at_ms)),
        Some(("parent wf-cc asked to cancel", T0 + 3))
    );
    let mut commit = child_run.commit(
        &claim,
        vec![
            Event::WorkflowCancelRequested {
                reason: "parent wf-cc asked to cancel".into(),
            },
            Event::WorkflowCancelled {
                message: "stopped".into(),
            },
        ],
        T0 + 4,
    );
    commit.consumed_cancel = true;
    commit.outcome = RunOutcome::Cancelled {
        message: "stopped".into(),
    };
    child_run.apply(store, commit).await;
    claim_only(store, "host-a", T0 + 5, &parent).await;
    let jobs = store
        .pending_jobs(&parent.id, T0 + 5)
        .await
        .expect("pending_jobs");
    assert_eq!(
        jobs.children
            .into_iter()
            .map(|c| (c.seq, c.outcome))
            .collect::<Vec<_>>(),
        vec![(1, Err(Failure::new("Cancelled", "stopped")))]
    );
}

pub async fn continue_as_new_moves_signals_and_the_parent_link(store: &dyn Store) {
    let mut parent = start(store, "wf-can-parent", T0, RunOptions::default()).await;
    let (child, mut old) = child_request(&parent, "wf-can-parent", 1, "wf-can", T0);
    parent
        .activate(store, T0, |run, c| {
            start_child_in(run, c, 1, child, ParentClosePolicy::Terminate)
        })
        .await;
    old.activate(store, T0 + 1, |_, _| {}).await;
    let first = store
        .send_signal(&old.id, "a", json!(1), T0 + 2, 2_000)
        .await
        .expect("send_signal");
    let claim = claim_only(store, "host-a", T0 + 3, &old).await;
    // Arrives while the run is continuing as new: the next run gets it.
    store
        .send_signal(&old.id, "b", json!(2), T0 + 4, 2_000)
        .await
        .expect("send_signal");
    let (next, mut new) = child_request(&parent, "wf-can-parent", 1, "wf-can", T0 + 5);
    let mut commit = old.commit(
        &claim,
        vec![
            Event::SignalReceived {
                name: "a".into(),
                input: json!(1),
            },
            Event::WorkflowContinuedAsNew {
                input: json!("next"),
            },
        ],
        T0 + 5,
    );
    commit.consumed_signals = vec![first];
    commit.outcome = RunOutcome::ContinuedAsNew {
        next: Box::new(next),
    };
    old.apply(store, commit).await;

    let closed = record(store, &old).await;
    assert_eq!(closed.status, RunStatus::ContinuedAsNew);
    assert_eq!(closed.continued_to, Some(new.id.clone()));
    assert_eq!((closed.output, closed.failure), (None, None));
    assert_eq!(closed.closed_at_ms, Some(T0 + 5));
    let opened = record(store, &new).await;
    assert_eq!(opened.status, RunStatus::Running);
    assert_eq!(opened.parent, Some(link(&parent, "wf-can-parent", 1)));
    assert_eq!(store.history(&new.id).await.expect("history"), new.history);
    assert_eq!(
        store
            .run_by_workflow_id("wf-can")
            .await
            .expect("by workflow id")
            .run_id,
        new.id,
        "the workflow id belongs to the new run"
    );

    let claim = claim_only(store, "host-a", T0 + 6, &new).await;
    let jobs = store
        .pending_jobs(&new.id, T0 + 6)
        .await
        .expect("pending_jobs");
    let moved: Vec<(&str, &Value)> = jobs
        .signals
        .iter()
        .map(|s| (s.name.as_str(), &s.input))
        .collect();
    assert_eq!(
        moved,
        vec![("b", &json!(2))],
        "only the unconsumed signal moves"
    );
    assert!(
        store
            .pending_jobs(&old.id, T0 + 6)
            .await
            .expect("pending_jobs")
            .signals
            .is_empty()
    );
    finish(
        store,
        &mut new,
        &claim,
        T0 + 7,
        RunOutcome::Completed {
            output: json!("final"),
        },
    )
    .await;
    claim_only(store, "host-a", T0 + 8, &parent).await;
    assert_eq!(
        store
            .pending_jobs(&parent.id, T0 + 8)
            .await
            .expect("pending_jobs")
            .children,
        vec![ResolvedChild {
            seq: 1,
            outcome: Ok(json!("final")),
            resolved_at_ms: T0 + 7,
        }],
        "the parent's child resolves with the last run of the chain"
    );
}

pub async fn reuse_policy_looks_at_the_end_of_a_continued_chain(store: &dyn Store) {
    let failed_only = || RunOptions {
        id_reuse_policy: IdReusePolicy::AllowDuplicateFailedOnly,
        ..RunOptions::default()
    };
    // Continued within the same millisecond: the successor is still the newer run.
    let mut first = start(store, "wf-chain", T0, RunOptions::default()).await;
    let (next, mut second) = request("wf-chain", "order", T0, RunOptions::default());
    close(
        store,
        &mut first,
        T0,
        RunOutcome::ContinuedAsNew {
            next: Box::new(next),
        },
    )
    .await;
    let (while_open, _) = request("wf-chain", "order", T0, failed_only());
    let result = store.create_run(while_open).await;
    assert!(
        matches!(&result, Err(StoreError::WorkflowIdInUse { run_id, .. }) if *run_id == second.id),
        "the chain's open run holds the id: {result:?}"
    );
    close(
        store,
        &mut second,
        T0,
        RunOutcome::Failed {
            failure: Failure::new("Boom", "it broke"),
        },
    )
    .await;
    let mut third = start(store, "wf-chain", T0 + 1, failed_only()).await;
    third.activate(store, T0 + 1, |_, _| {}).await;

    let mut first = start(store, "wf-chain-ok", T0, RunOptions::default()).await;
    let (next, mut second) = request("wf-chain-ok", "order", T0 + 1, RunOptions::default());
    close(
        store,
        &mut first,
        T0 + 1,
        RunOutcome::ContinuedAsNew {
            next: Box::new(next),
        },
    )
    .await;
    close(
        store,
        &mut second,
        T0 + 2,
        RunOutcome::Completed { output: json!(1) },
    )
    .await;
    let (refused, _) = request("wf-chain-ok", "order", T0 + 3, failed_only());
    match store.create_run(refused).await {
        Err(StoreError::WorkflowIdReused { run_id, status, .. }) => {
            assert_eq!((run_id, status.as_str()), (second.id.clone(), "completed"));
        }
        other => panic!("expected WorkflowIdReused naming the chain's last run, got {other:?}"),
    }
    let (allowed, _) = request("wf-chain-ok", "order", T0 + 3, RunOptions::default());
    assert_eq!(
        store.create_run(allowed).await.expect("create_run"),
        Created::New
    );
}

pub async fn a_parent_and_its_children_closing_at_once_all_commit(store: &dyn Store) {
    const PAIRS: usize = 6;
    let mut parents = Vec::new();
    for i in 0..PAIRS {
        parents.push(start(store, &format!("wf-both-{i}"), T0, RunOptions::default()).await);
    }
    let claims = claim_exactly(store, T0, &parents.iter().collect::<Vec<_>>()).await;
    let mut pairs = Vec::new();
    for (i, (mut parent, claim)) in parents.into_iter().zip(claims).enumerate() {
        let parent_id = format!("wf-both-{i}");
        let (child, child_run) =
            child_request(&parent, &parent_id, 1, &format!("wf-both-{i}-child"), T0);
        let mut commit = parent.commit(&claim, Vec::new(), T0);
        start_child_in(&parent, &mut commit, 1, child, ParentClosePolicy::Terminate);
        parent.apply(store, commit).await;
        store
            .send_signal(&parent.id, "finish", Value::Null, T0 + 1, 2_000)
            .await
            .expect("send_signal");
        pairs.push((parent, child_run));
    }
    let runs: Vec<&Run> = pairs.iter().flat_map(|(p, c)| [p, c]).collect();
    let claims = claim_exactly(store, T0 + 2, &runs).await;
    // Each parent closes (terminating its child) while that child completes
    // (resolving its parent's row): the two commits lock the same two runs.
    let commits = runs.iter().zip(&claims).map(|(run, claim)| {
        let mut commit = run.commit(
            claim,
            vec![Event::WorkflowCompleted { output: json!(1) }],
            T0 + 2,
        );
        commit.outcome = RunOutcome::Completed { output: json!(1) };
        store.commit_activation(commit)
    });
    for (result, run) in futures::future::join_all(commits)
        .await
        .into_iter()
        .zip(&runs)
    {
        result.unwrap_or_else(|e| panic!("run {} did not commit: {e}", run.id));
    }
    for (parent, child) in &pairs {
        assert_eq!(record(store, parent).await.status, RunStatus::Completed);
        assert_eq!(record(store, child).await.status, RunStatus::Completed);
    }
}

pub async fn a_child_closed_with_its_last_result_resolves_its_parent(store: &dyn Store) {
    // A warm child's last activity result and its closing activation commit
    // together (`finish_and_commit`); the close owes the parent its result.
    let mut parent = start(store, "wf-parent-ahead", T0, RunOptions::default()).await;
    let (request, mut child) =
        child_request(&parent, "wf-parent-ahead", 1, "wf-child-ahead", T0 + 1);
    parent
        .activate(store, T0 + 1, |run, c| {
            start_child_in(run, c, 1, request, ParentClosePolicy::Terminate);
        })
        .await;
    let claim = claim_exactly(store, T0 + 2, &[&child]).await.remove(0);
    let mut commit = child.commit(&claim, Vec::new(), T0 + 2);
    schedule_in(&child, &mut commit, 1, "charge", ActivityOptions::default());
    child.apply(store, commit).await;
    let task = store
        .claim_activities("worker", &names(&["charge"]), T0 + 3, 60_000, 1)
        .await
        .expect("claim_activities")
        .pop()
        .expect("the task is claimed");
    let next = super::ahead::closing_activation(&child, &claim, T0 + 4);
    assert!(
        store
            .finish_and_commit(super::ahead::paid(&task, T0 + 4), next)
            .await
            .expect("finish_and_commit"),
        "the closing activation applies"
    );
    assert_eq!(record(store, &child).await.status, RunStatus::Completed);
    let resolved = store
        .pending_jobs(&parent.id, T0 + 5)
        .await
        .expect("pending_jobs")
        .children;
    assert_eq!(resolved.len(), 1, "the parent has its child's result");
    assert_eq!(resolved[0].outcome, Ok(json!("done")));
    claim_exactly(store, T0 + 5, &[&parent]).await;
}
