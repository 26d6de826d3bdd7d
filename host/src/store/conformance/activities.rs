//! Activity tasks: claiming attempts, finishing them, retries and lease expiry.

use super::*;

async fn resolve_one(store: &dyn Store, outcome: AttemptOutcome) -> (Run, u64) {
    let mut run = Run::start(store, "wf-activity", T0).await;
    run.schedule(store, T0, 1, "charge", ActivityOptions::default())
        .await;
    let tasks = store
        .claim_activities("worker", &names(&["charge"]), T0 + 10, 5_000, 10)
        .await
        .expect("claim");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].attempt, 1);
    assert_not_claimable(store, T0 + 11, "the activity is still running").await;
    store
        .finish_attempt(&run.id, 1, tasks[0].lease_token, outcome, T0 + 20)
        .await
        .expect("finish_attempt");
    (run, T0 + 20)
}

async fn consume_the_activity(store: &dyn Store, run: &mut Run, completion: Event, now_ms: u64) {
    let claim = claim_only(store, "host-a", now_ms, run).await;
    let jobs = store
        .pending_jobs(&run.id, now_ms)
        .await
        .expect("pending_jobs");
    assert_eq!(
        jobs.activities.len(),
        1,
        "the activity's outcome is pending exactly once"
    );
    let again = store
        .pending_jobs(&run.id, now_ms)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs, again, "reading the jobs does not consume them");
    let mut commit = run.commit(&claim, vec![completion], now_ms);
    commit.consumed_activities = vec![1];
    run.apply(store, commit).await;
    assert!(
        store
            .pending_jobs(&run.id, now_ms + 1)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
    assert_not_claimable(store, now_ms + 1_000_000, "the outcome was consumed").await;
    let tasks = store
        .claim_activities("worker", &names(&["charge"]), now_ms + 1_000_000, 5_000, 10)
        .await;
    assert!(
        tasks.expect("claim").is_empty(),
        "a finished task is never claimed again"
    );
}

pub async fn completed_activity_wakes_the_run_once(store: &dyn Store) {
    let (mut run, at) = resolve_one(
        store,
        AttemptOutcome::Completed {
            output: json!({"receipt": 7}),
        },
    )
    .await;
    let jobs = store.pending_jobs(&run.id, at).await.expect("pending_jobs");
    assert_eq!(jobs.activities[0].seq, 1);
    assert_eq!(jobs.activities[0].attempt, 1);
    assert_eq!(jobs.activities[0].outcome, Ok(json!({"receipt": 7})));
    assert_eq!(jobs.activities[0].resolved_at_ms, at);
    let completion = Event::ActivityCompleted {
        seq: 1,
        output: json!({"receipt": 7}),
        attempt: 1,
    };
    consume_the_activity(store, &mut run, completion, at + 1).await;
}

pub async fn failed_activity_wakes_the_run_once(store: &dyn Store) {
    let failure = Failure::new("CardDeclined", "card 4242 declined");
    let (mut run, at) = resolve_one(
        store,
        AttemptOutcome::Failed {
            failure: failure.clone(),
        },
    )
    .await;
    let jobs = store.pending_jobs(&run.id, at).await.expect("pending_jobs");
    assert_eq!(jobs.activities[0].outcome, Err(failure.clone()));
    let completion = Event::ActivityFailed {
        seq: 1,
        failure,
        attempt: 1,
    };
    consume_the_activity(store, &mut run, completion, at + 1).await;
}

pub async fn finish_attempt_is_fenced_by_the_lease(store: &dyn Store) {
    let mut run = Run::start(store, "wf-fence", T0).await;
    run.schedule(store, T0, 1, "charge", ActivityOptions::default())
        .await;
    let first = store
        .claim_activities("w1", &names(&["charge"]), T0, 1_000, 1)
        .await
        .expect("claim")
        .remove(0);
    assert!(
        store
            .claim_activities("w2", &names(&["charge"]), T0 + 999, 1_000, 1)
            .await
            .expect("claim")
            .is_empty()
    );
    let second = store
        .claim_activities("w2", &names(&["charge"]), T0 + 1_000, 1_000, 1)
        .await
        .expect("claim");
    assert_eq!(second.len(), 1, "the first attempt's lease expired");
    let second = &second[0];
    assert_eq!(second.attempt, 2);
    assert!(second.lease_token > first.lease_token);
    let late = store
        .finish_attempt(
            &run.id,
            1,
            first.lease_token,
            AttemptOutcome::Completed {
                output: json!("late"),
            },
            T0 + 1_001,
        )
        .await;
    assert!(is_conflict(&late), "the first attempt is fenced: {late:?}");
    assert!(
        store
            .pending_jobs(&run.id, T0 + 1_001)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
    store
        .finish_attempt(
            &run.id,
            1,
            second.lease_token,
            AttemptOutcome::Completed {
                output: json!("ok"),
            },
            T0 + 1_002,
        )
        .await
        .expect("finish_attempt");
    let twice = store
        .finish_attempt(
            &run.id,
            1,
            second.lease_token,
            AttemptOutcome::Completed {
                output: json!("again"),
            },
            T0 + 1_003,
        )
        .await;
    assert!(is_conflict(&twice), "an attempt finishes once");
    let jobs = store
        .pending_jobs(&run.id, T0 + 1_004)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.activities.len(), 1);
    assert_eq!(
        (jobs.activities[0].attempt, &jobs.activities[0].outcome),
        (2, &Ok(json!("ok")))
    );
    assert!(is_not_found(
        &store
            .finish_attempt(
                &run.id,
                9,
                second.lease_token,
                AttemptOutcome::Completed { output: json!(0) },
                T0
            )
            .await
    ));
}

pub async fn retry_hides_the_task_until_retry_at(store: &dyn Store) {
    let mut run = Run::start(store, "wf-retry", T0).await;
    run.schedule(store, T0, 1, "flaky", ActivityOptions::default())
        .await;
    let first = store
        .claim_activities("w1", &names(&["flaky"]), T0, 10_000, 1)
        .await
        .expect("claim")
        .remove(0);
    let retry = AttemptOutcome::Retry {
        failure: Failure::new("Timeout", "upstream timed out"),
        retry_at_ms: T0 + 500,
    };
    store
        .finish_attempt(&run.id, 1, first.lease_token, retry, T0 + 100)
        .await
        .expect("finish_attempt");
    assert_not_claimable(store, T0 + 101, "a retry does not wake the run").await;
    assert!(
        store
            .pending_jobs(&run.id, T0 + 101)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
    assert_eq!(
        store
            .next_activity_at(&names(&["flaky"]))
            .await
            .expect("next_activity_at"),
        Some(T0 + 500)
    );
    assert!(
        store
            .claim_activities("w2", &names(&["flaky"]), T0 + 499, 10_000, 1)
            .await
            .expect("claim")
            .is_empty()
    );
    let second = store
        .claim_activities("w2", &names(&["flaky"]), T0 + 500, 10_000, 1)
        .await
        .expect("claim");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, 2);
    assert!(second[0].lease_token > first.lease_token);
}

pub async fn activity_lease_follows_start_to_close_timeout(store: &dyn Store) {
    let mut run = Run::start(store, "wf-timeout", T0).await;
    let options = ActivityOptions {
        start_to_close_timeout_ms: 200,
        retry: None,
        ..ActivityOptions::default()
    };
    run.schedule(store, T0, 1, "quick", options).await;
    let first = store
        .claim_activities("w1", &names(&["quick"]), T0, 10_000, 1)
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(
        store
            .next_activity_at(&names(&["quick"]))
            .await
            .expect("next_activity_at"),
        Some(T0 + 200)
    );
    assert!(
        store
            .claim_activities("w2", &names(&["quick"]), T0 + 199, 10_000, 1)
            .await
            .expect("claim")
            .is_empty()
    );
    let second = store
        .claim_activities("w2", &names(&["quick"]), T0 + 200, 10_000, 1)
        .await
        .expect("claim");
    assert_eq!(
        second.len(),
        1,
        "the lease lasted the task's start-to-close timeout, not the default"
    );
    assert_eq!(second[0].attempt, 2);
}

pub async fn claim_activities_filters_by_name(store: &dyn Store) {
    let mut run = Run::start(store, "wf-names", T0).await;
    run.activate(store, T0, |run, c| {
        schedule_in(run, c, 1, "a", ActivityOptions::default());
        schedule_in(run, c, 2, "b", ActivityOptions::default());
        schedule_in(run, c, 3, "c", ActivityOptions::default());
        schedule_in(run, c, 4, "a", ActivityOptions::default());
    })
    .await;
    assert!(
        store
            .claim_activities("w", &[], T0, 1_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        store
            .claim_activities("w", &names(&["zzz"]), T0, 1_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let one = store
        .claim_activities("w", &names(&["a", "c"]), T0, 1_000, 1)
        .await
        .expect("claim");
    assert_eq!(one.len(), 1, "the limit holds");
    let rest = store
        .claim_activities("w", &names(&["a", "c"]), T0, 1_000, 10)
        .await
        .expect("claim");
    let mut seqs: Vec<(u32, String)> = one
        .iter()
        .chain(&rest)
        .map(|t| (t.seq, t.name.clone()))
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        vec![(1, "a".into()), (3, "c".into()), (4, "a".into())]
    );
    let b = store
        .claim_activities("w", &names(&["b"]), T0, 1_000, 10)
        .await
        .expect("claim");
    assert_eq!(b.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![2]);
}

pub async fn concurrent_activity_claims_never_share_a_task(store: &dyn Store) {
    let mut run = Run::start(store, "wf-task-race", T0).await;
    run.activate(store, T0, |run, c| {
        for seq in 1..=20 {
            schedule_in(run, c, seq, "work", ActivityOptions::default());
        }
    })
    .await;
    let workers = (0..4).map(|w| async move {
        let worker = format!("worker-{w}");
        let mut mine = Vec::new();
        loop {
            let tasks = store
                .claim_activities(&worker, &names(&["work"]), T0, LEASE, 2)
                .await
                .expect("claim");
            if tasks.is_empty() {
                return mine;
            }
            mine.extend(tasks.into_iter().map(|t| t.seq));
        }
    });
    let mut claimed: Vec<u32> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    claimed.sort_unstable();
    assert_eq!(
        claimed,
        (1..=20).collect::<Vec<u32>>(),
        "each task claimed exactly once"
    );
}
