//! Activity timeouts as the store enforces them: schedule-to-start,
//! schedule-to-close and heartbeat deadlines, found and acted on by
//! [`ActivityStore::time_out_activities`](crate::store::ActivityStore::time_out_activities).

use super::*;

fn with(f: impl FnOnce(&mut ActivityOptions)) -> ActivityOptions {
    let mut options = ActivityOptions::default();
    f(&mut options);
    options
}

async fn claim_one(store: &dyn Store, name: &str, now_ms: u64) -> crate::store::ActivityTask {
    let mut tasks = store
        .claim_activities("worker", &names(&[name]), now_ms, LEASE, 10)
        .await
        .expect("claim_activities");
    assert_eq!(tasks.len(), 1, "expected to claim one {name} task");
    tasks.remove(0)
}

async fn sweep(store: &dyn Store, now_ms: u64) -> u64 {
    store
        .time_out_activities(now_ms)
        .await
        .expect("time_out_activities")
}

async fn next_timeout(store: &dyn Store) -> Option<u64> {
    store
        .next_activity_timeout_at()
        .await
        .expect("next_activity_timeout_at")
}

/// The one resolved activity waiting for the run at `now_ms`.
async fn the_resolution(store: &dyn Store, run: &Run, now_ms: u64) -> ResolvedActivity {
    let jobs = store
        .pending_jobs(&run.id, now_ms)
        .await
        .expect("pending_jobs");
    assert_eq!(
        jobs.activities.len(),
        1,
        "one activity resolution: {jobs:?}"
    );
    jobs.activities.into_iter().next().expect("one")
}

fn error_type(resolution: &ResolvedActivity) -> &str {
    match &resolution.outcome {
        Err(failure) => &failure.error_type,
        Ok(output) => panic!("expected a failure, the activity completed with {output}"),
    }
}

pub async fn tasks_without_timeouts_have_no_deadline(store: &dyn Store) {
    let mut run = Run::start(store, "wf-no-deadline", T0).await;
    run.schedule(store, T0, 1, "plain", ActivityOptions::default())
        .await;
    assert_eq!(next_timeout(store).await, None);
    claim_one(store, "plain", T0).await;
    assert_eq!(next_timeout(store).await, None);
    assert_eq!(sweep(store, T0 + 1_000_000_000).await, 0);
    assert!(
        store
            .pending_jobs(&run.id, T0 + 1)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
}

pub async fn schedule_to_start_timeout_fails_a_task_nobody_picked_up(store: &dyn Store) {
    let mut run = Run::start(store, "wf-s2s", T0).await;
    let options = with(|o| o.schedule_to_start_timeout_ms = 5_000);
    run.schedule(store, T0, 1, "unloved", options).await;
    assert_eq!(next_timeout(store).await, Some(T0 + 5_000));
    assert_eq!(sweep(store, T0 + 4_999).await, 0, "not yet due");
    assert_not_claimable(store, T0 + 4_999, "nothing happened to the run yet").await;
    assert!(
        store
            .claim_activities("late", &names(&["unloved"]), T0 + 5_000, LEASE, 10)
            .await
            .expect("claim")
            .is_empty(),
        "a task past its schedule-to-start deadline is not claimed"
    );
    assert_eq!(sweep(store, T0 + 5_000).await, 1);
    assert_eq!(sweep(store, T0 + 5_001).await, 0, "a task times out once");
    assert_eq!(next_timeout(store).await, None);
    let resolution = the_resolution(store, &run, T0 + 5_001).await;
    assert_eq!(error_type(&resolution), "ScheduleToStartTimeout");
    assert_eq!(resolution.attempt, 0, "no attempt ever started");
    assert_eq!(resolution.resolved_at_ms, T0 + 5_000);
    claim_only(store, "host-a", T0 + 5_001, &run).await;
}

pub async fn schedule_to_start_applies_to_each_waiting_attempt(store: &dyn Store) {
    let mut run = Run::start(store, "wf-s2s-retry", T0).await;
    let options = with(|o| o.schedule_to_start_timeout_ms = 5_000);
    run.schedule(store, T0, 1, "flaky", options).await;
    let first = claim_one(store, "flaky", T0 + 1_000).await;
    assert_eq!(
        next_timeout(store).await,
        None,
        "a running attempt has no schedule-to-start deadline"
    );
    assert_eq!(sweep(store, T0 + 9_000).await, 0);
    let retry = AttemptOutcome::Retry {
        failure: Failure::new("Io", "reset"),
        retry_at_ms: T0 + 12_000,
    };
    store
        .finish_attempt(&run.id, 1, first.lease_token, retry, T0 + 9_000)
        .await
        .expect("finish_attempt");
    assert_eq!(
        next_timeout(store).await,
        Some(T0 + 17_000),
        "the retry must start within 5 s of becoming visible"
    );
    assert_eq!(sweep(store, T0 + 16_999).await, 0);
    assert_eq!(sweep(store, T0 + 17_000).await, 1);
    let resolution = the_resolution(store, &run, T0 + 17_000).await;
    assert_eq!(error_type(&resolution), "ScheduleToStartTimeout");
    assert_eq!(resolution.attempt, 1);
}

pub async fn schedule_to_close_timeout_abandons_a_running_attempt(store: &dyn Store) {
    let mut run = Run::start(store, "wf-s2c-running", T0).await;
    let options = with(|o| o.schedule_to_close_timeout_ms = 10_000);
    run.schedule(store, T0, 1, "slow", options).await;
    let attempt = claim_one(store, "slow", T0 + 100).await;
    assert_eq!(
        attempt.close_deadline_ms,
        Some(T0 + 10_000),
        "the deadline counts from the scheduling"
    );
    assert_eq!(next_timeout(store).await, Some(T0 + 10_000));
    assert_eq!(sweep(store, T0 + 9_999).await, 0);
    assert_eq!(sweep(store, T0 + 10_000).await, 1);
    let resolution = the_resolution(store, &run, T0 + 10_000).await;
    assert_eq!(error_type(&resolution), "ScheduleToCloseTimeout");
    assert_eq!(resolution.attempt, 1);
    let late = store
        .finish_attempt(
            &run.id,
            1,
            attempt.lease_token,
            AttemptOutcome::Completed {
                output: json!("too late"),
            },
            T0 + 10_001,
        )
        .await;
    assert!(
        is_conflict(&late),
        "the abandoned attempt's result is discarded: {late:?}"
    );
    let beat = store
        .heartbeat(Heartbeat {
            run_id: run.id.clone(),
            seq: 1,
            lease_token: attempt.lease_token,
            details: None,
            now_ms: T0 + 10_001,
        })
        .await;
    assert!(is_conflict(&beat), "{beat:?}");
    assert_eq!(
        error_type(&the_resolution(store, &run, T0 + 10_002).await),
        "ScheduleToCloseTimeout"
    );
    claim_only(store, "host-a", T0 + 10_002, &run).await;
}

pub async fn schedule_to_close_timeout_ends_a_waiting_retry(store: &dyn Store) {
    let mut run = Run::start(store, "wf-s2c-retry", T0).await;
    let options = with(|o| o.schedule_to_close_timeout_ms = 10_000);
    run.schedule(store, T0, 1, "flaky", options).await;
    let first = claim_one(store, "flaky", T0).await;
    let retry = AttemptOutcome::Retry {
        failure: Failure::new("Io", "connection reset"),
        retry_at_ms: T0 + 20_000,
    };
    store
        .finish_attempt(&run.id, 1, first.lease_token, retry, T0 + 1_000)
        .await
        .expect("finish_attempt");
    assert_not_claimable(store, T0 + 9_999, "a retry does not wake the run").await;
    assert_eq!(sweep(store, T0 + 10_000).await, 1);
    let resolution = the_resolution(store, &run, T0 + 10_000).await;
    assert_eq!(error_type(&resolution), "ScheduleToCloseTimeout");
    let Err(failure) = &resolution.outcome else {
        unreachable!()
    };
    assert!(
        failure.message.contains("connection reset"),
        "the message carries the last attempt's failure: {failure}"
    );
    assert!(
        store
            .claim_activities("w", &names(&["flaky"]), T0 + 20_000, LEASE, 10)
            .await
            .expect("claim")
            .is_empty(),
        "the retry never runs"
    );
}

pub async fn heartbeat_timeout_retries_the_attempt(store: &dyn Store) {
    let mut run = Run::start(store, "wf-heartbeat-timeout", T0).await;
    let options = with(|o| o.heartbeat_timeout_ms = 3_000);
    run.schedule(store, T0, 1, "beating", options).await;
    let first = claim_one(store, "beating", T0).await;
    assert_eq!(
        next_timeout(store).await,
        Some(T0 + 3_000),
        "the start counts as a heartbeat"
    );
    store
        .heartbeat(Heartbeat {
            run_id: run.id.clone(),
            seq: 1,
            lease_token: first.lease_token,
            details: Some(json!({"done": 40})),
            now_ms: T0 + 2_000,
        })
        .await
        .expect("heartbeat");
    assert_eq!(next_timeout(store).await, Some(T0 + 5_000));
    assert_eq!(sweep(store, T0 + 4_999).await, 0);
    assert_eq!(sweep(store, T0 + 5_000).await, 1);
    assert_not_claimable(store, T0 + 5_000, "a retried attempt does not wake the run").await;
    assert!(
        store
            .pending_jobs(&run.id, T0 + 5_000)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
    let beat = store
        .heartbeat(Heartbeat {
            run_id: run.id.clone(),
            seq: 1,
            lease_token: first.lease_token,
            details: Some(json!({"done": 41})),
            now_ms: T0 + 5_001,
        })
        .await;
    assert!(is_conflict(&beat), "the timed-out attempt is told to stop");
    assert!(
        store
            .claim_activities("w", &names(&["beating"]), T0 + 5_999, LEASE, 10)
            .await
            .expect("claim")
            .is_empty(),
        "the retry waits for the policy's first interval (1 s)"
    );
    let second = claim_one(store, "beating", T0 + 6_000).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.heartbeat_details,
        Some(json!({"done": 40})),
        "the next attempt gets the last recorded details"
    );
    assert_eq!(next_timeout(store).await, Some(T0 + 9_000));
}

pub async fn heartbeat_timeout_of_the_last_attempt_fails_the_activity(store: &dyn Store) {
    let mut run = Run::start(store, "wf-heartbeat-last", T0).await;
    let options = with(|o| {
        o.heartbeat_timeout_ms = 1_000;
        o.retry = Some(RetryPolicy {
            maximum_attempts: 1,
            ..RetryPolicy::default()
        });
    });
    run.schedule(store, T0, 1, "silent", options).await;
    claim_one(store, "silent", T0).await;
    assert_eq!(sweep(store, T0 + 1_000).await, 1);
    let resolution = the_resolution(store, &run, T0 + 1_000).await;
    assert_eq!(error_type(&resolution), "HeartbeatTimeout");
    assert_eq!(resolution.attempt, 1);
    claim_only(store, "host-a", T0 + 1_000, &run).await;
}

pub async fn heartbeat_timeout_retry_respects_schedule_to_close(store: &dyn Store) {
    let mut run = Run::start(store, "wf-heartbeat-s2c", T0).await;
    let options = with(|o| {
        o.heartbeat_timeout_ms = 1_000;
        o.schedule_to_close_timeout_ms = 1_500;
    });
    run.schedule(store, T0, 1, "silent", options).await;
    claim_one(store, "silent", T0).await;
    assert_eq!(sweep(store, T0 + 1_000).await, 1);
    let resolution = the_resolution(store, &run, T0 + 1_000).await;
    assert_eq!(
        error_type(&resolution),
        "HeartbeatTimeout",
        "a retry 1 s later would land past the schedule-to-close deadline: the activity fails"
    );
}
