//! Activations run ahead of a claim: a run started with its first
//! activation ([`RunStore::start_run`](crate::store::RunStore::start_run)), and
//! a result committed together with the activation it wakes
//! ([`RunStore::finish_and_commit`](crate::store::RunStore::finish_and_commit)).

use super::*;
use crate::store::{FinishedAttempt, InlineClaim};

/// The claim a new run's first activation is made under: its first lease
/// token and the wake-up it is created with.
fn first_claim(run: &Run) -> RunClaim {
    RunClaim {
        run_id: run.id.clone(),
        lease_token: 0,
        observed_wakeups: 1,
        last_seq: 0,
    }
}

pub async fn start_run_writes_the_run_with_its_first_activation(store: &dyn Store) {
    let (create, mut run) = Run::new("wf-eager", "run-eager-1", T0);
    let mut first = run.commit(&first_claim(&run), Vec::new(), T0);
    schedule_in(&run, &mut first, 1, "charge", ActivityOptions::default());
    start_timer_in(&run, &mut first, 2, T0 + 5_000);
    let events = first.events.clone();
    assert!(store.start_run(create, first).await.expect("start_run"));
    let mut all = run.history.events().to_vec();
    all.extend(events);
    run.history = History::from_recorded(all);

    let stored = store.history(&run.id).await.expect("history");
    assert_eq!(stored, run.history);
    stored.verify().expect("chain verifies");
    let record = store.run(&run.id).await.expect("run");
    assert_eq!(
        (record.status, record.last_seq),
        (RunStatus::Running, 4),
        "created with its first activation applied"
    );
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 5_000),
        "its timer is set"
    );
    assert_not_claimable(store, T0 + 1, "the first activation is already done").await;
    let tasks = store
        .claim_activities("worker", &names(&["charge"]), T0 + 1, 1_000, 10)
        .await
        .expect("claim_activities");
    assert_eq!(tasks.len(), 1, "its activity is claimable at once");

    // The workflow id is taken: nothing of the second run is written.
    let (create, second) = Run::new("wf-eager", "run-eager-2", T0 + 2);
    let first = second.commit(&first_claim(&second), Vec::new(), T0 + 2);
    assert!(
        !store
            .start_run(create, first)
            .await
            .expect("start_run with a taken workflow id")
    );
    assert!(matches!(
        store.run(&second.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.history(&second.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// A run with activity 1 (`charge`) scheduled under `claim`, and its attempt 1 claimed.
async fn run_with_a_running_attempt(
    store: &dyn Store,
    workflow_id: &str,
) -> (Run, RunClaim, ActivityTask) {
    let mut run = Run::start(store, workflow_id, T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    let mut commit = run.commit(&claim, Vec::new(), T0);
    schedule_in(&run, &mut commit, 1, "charge", ActivityOptions::default());
    run.apply(store, commit).await;
    let mut tasks = store
        .claim_activities("worker", &names(&["charge"]), T0 + 1, 60_000, 1)
        .await
        .expect("claim_activities");
    let task = tasks.pop().expect("the task is claimed");
    assert_eq!(task.attempt, 1);
    (run, claim, task)
}

pub(super) fn paid(task: &ActivityTask, now_ms: u64) -> FinishedAttempt {
    FinishedAttempt {
        run_id: task.run_id.clone(),
        seq: task.seq,
        lease_token: task.lease_token,
        attempt: task.attempt,
        outcome: AttemptOutcome::Completed {
            output: json!("paid"),
        },
        now_ms,
    }
}

/// The activation the result of attempt 1 wakes, closing the run, prepared
/// under the run's last commit's claim.
pub(super) fn closing_activation(run: &Run, last: &RunClaim, now_ms: u64) -> ActivationCommit {
    let claim = RunClaim {
        run_id: run.id.clone(),
        lease_token: last.lease_token,
        observed_wakeups: last.observed_wakeups + 1,
        last_seq: last.last_seq,
    };
    let mut commit = run.commit(
        &claim,
        vec![
            Event::ActivityCompleted {
                seq: 1,
                output: json!("paid"),
                attempt: 1,
            },
            Event::WorkflowCompleted {
                output: json!("done"),
            },
        ],
        now_ms,
    );
    commit.consumed_activities = vec![1];
    commit.outcome = RunOutcome::Completed {
        output: json!("done"),
    };
    commit
}

/// The activation the result of attempt 1 wakes, scheduling activity 2
/// (`ship`) and staying open, prepared under the run's last commit's claim.
fn stepping_activation(run: &Run, last: &RunClaim, now_ms: u64) -> ActivationCommit {
    let claim = RunClaim {
        run_id: run.id.clone(),
        lease_token: last.lease_token,
        observed_wakeups: last.observed_wakeups + 1,
        last_seq: last.last_seq,
    };
    let mut commit = run.commit(
        &claim,
        vec![Event::ActivityCompleted {
            seq: 1,
            output: json!("paid"),
            attempt: 1,
        }],
        now_ms,
    );
    commit.consumed_activities = vec![1];
    schedule_in(run, &mut commit, 2, "ship", ActivityOptions::default());
    commit
}

/// The two shapes of prepared activation: one that closes the run, one that
/// takes the next step (a backend may write each its own way).
type Prepare = fn(&Run, &RunClaim, u64) -> ActivationCommit;
const PREPARED: [(&str, Prepare); 2] =
    [("close", closing_activation), ("step", stepping_activation)];

/// Commits attempt 1's result with `prepare`'s activation, which must apply:
/// the history gains its events, the result is consumed and nothing is left
/// to activate. A repeat (a caller that did not hear back) is a conflict that
/// writes nothing. The run's record, after.
async fn applies_with_the_result(
    store: &dyn Store,
    workflow_id: &str,
    prepare: Prepare,
) -> RunRecord {
    let (mut run, claim, task) = run_with_a_running_attempt(store, workflow_id).await;
    let next = prepare(&run, &claim, T0 + 2);
    let events = next.events.clone();
    assert!(
        store
            .finish_and_commit(paid(&task, T0 + 2), next.clone())
            .await
            .expect("finish_and_commit")
    );
    let mut all = run.history.events().to_vec();
    all.extend(events);
    run.history = History::from_recorded(all);
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
    assert!(
        store
            .pending_jobs(&run.id, T0 + 3)
            .await
            .expect("pending_jobs")
            .is_empty(),
        "the result was consumed by the activation committed with it"
    );
    assert_not_claimable(store, T0 + 3, "nothing is left to activate").await;
    let record = store.run(&run.id).await.expect("run");
    assert_eq!(record.last_seq, run.history.len() as u64);

    match store.finish_and_commit(paid(&task, T0 + 4), next).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("a repeated finish_and_commit must be a conflict, got {other:?}"),
    }
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
    record
}

pub async fn finish_and_commit_applies_a_result_with_the_step_it_wakes(store: &dyn Store) {
    let record = applies_with_the_result(store, "wf-ahead-step", stepping_activation).await;
    assert_eq!(record.status, RunStatus::Running);
    let shipped = store
        .claim_activities("worker", &names(&["ship"]), T0 + 5, 60_000, 10)
        .await
        .expect("claim_activities");
    assert_eq!(
        shipped.iter().map(|t| t.seq).collect::<Vec<_>>(),
        [2],
        "the next activity is claimable"
    );
}

pub async fn finish_and_commit_applies_a_result_with_the_activation_it_wakes(store: &dyn Store) {
    let record = applies_with_the_result(store, "wf-ahead", closing_activation).await;
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.output, Some(json!("done")));
}

pub async fn finish_and_commit_records_only_the_result_when_a_signal_came_first(store: &dyn Store) {
    for (shape, prepare) in PREPARED {
        signal_came_first(store, shape, prepare).await;
    }
}

async fn signal_came_first(store: &dyn Store, shape: &str, prepare: Prepare) {
    // A signal came in after the run's last commit: the activation prepared
    // without it must not apply, the result must.
    let (run, claim, task) =
        run_with_a_running_attempt(store, &format!("wf-ahead-signal-{shape}")).await;
    store
        .send_signal(&run.id, "nudge", json!(1), T0 + 2, 2_000)
        .await
        .expect("send_signal");
    let next = prepare(&run, &claim, T0 + 3);
    assert!(
        !store
            .finish_and_commit(paid(&task, T0 + 3), next)
            .await
            .expect("finish_and_commit")
    );
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
    let jobs = store
        .pending_jobs(&run.id, T0 + 4)
        .await
        .expect("pending_jobs");
    assert_eq!(
        (jobs.activities.len(), jobs.signals.len()),
        (1, 1),
        "the result is recorded beside the signal"
    );
    assert_eq!(
        claimed_ids(store, "host-b", T0 + 4).await,
        vec![run.id.clone()]
    );
}

pub async fn finish_and_commit_records_only_the_result_when_another_host_claimed_the_run(
    store: &dyn Store,
) {
    for (shape, prepare) in PREPARED {
        another_host_claimed(store, shape, prepare).await;
    }
}

async fn another_host_claimed(store: &dyn Store, shape: &str, prepare: Prepare) {
    // Another host claimed the run after its last commit, for a due timer,
    // and handed it back without writing: only its lease token moved on.
    let mut run = Run::start(store, &format!("wf-ahead-claimed-{shape}"), T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    let mut commit = run.commit(&claim, Vec::new(), T0);
    schedule_in(&run, &mut commit, 1, "charge", ActivityOptions::default());
    start_timer_in(&run, &mut commit, 2, T0 + 2);
    run.apply(store, commit).await;
    let task = store
        .claim_activities("worker", &names(&["charge"]), T0 + 1, 60_000, 1)
        .await
        .expect("claim_activities")
        .pop()
        .expect("the task is claimed");
    let taken = claim_only(store, "host-b", T0 + 2, &run).await;
    assert_eq!(taken.lease_token, claim.lease_token + 1);
    store
        .release_run(&run.id, taken.lease_token)
        .await
        .expect("release_run");
    let next = prepare(&run, &claim, T0 + 3);
    assert!(
        !store
            .finish_and_commit(paid(&task, T0 + 3), next)
            .await
            .expect("finish_and_commit")
    );
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
    assert_eq!(
        store
            .pending_jobs(&run.id, T0 + 4)
            .await
            .expect("pending_jobs")
            .activities
            .len(),
        1,
        "the result is recorded"
    );
    // It woke the run (held from here on, so the next shape claims only its own).
    claim_only(store, "host-c", T0 + 5, &run).await;
}

pub async fn finish_and_commit_records_only_the_result_of_another_attempt(store: &dyn Store) {
    for (shape, prepare) in PREPARED {
        another_attempt(store, shape, prepare).await;
    }
}

async fn another_attempt(store: &dyn Store, shape: &str, prepare: Prepare) {
    // A result that names another attempt than the one running.
    let (run, claim, task) =
        run_with_a_running_attempt(store, &format!("wf-ahead-attempt-{shape}")).await;
    let next = prepare(&run, &claim, T0 + 3);
    let mut finished = paid(&task, T0 + 3);
    finished.attempt = 2;
    assert!(
        !store
            .finish_and_commit(finished, next)
            .await
            .expect("finish_and_commit")
    );
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
    assert_eq!(
        claimed_ids(store, "host-b", T0 + 4).await,
        vec![run.id.clone()]
    );
}

pub async fn finish_and_commit_of_a_stale_attempt_writes_nothing(store: &dyn Store) {
    for (shape, prepare) in PREPARED {
        stale_attempt(store, shape, prepare).await;
    }
}

async fn stale_attempt(store: &dyn Store, shape: &str, prepare: Prepare) {
    let (run, claim, task) =
        run_with_a_running_attempt(store, &format!("wf-ahead-stale-{shape}")).await;
    let next = prepare(&run, &claim, T0 + 2);
    let mut finished = paid(&task, T0 + 2);
    finished.lease_token += 1;
    match store.finish_and_commit(finished, next).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("a stale attempt must be a conflict, got {other:?}"),
    }
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
    assert!(
        store
            .pending_jobs(&run.id, T0 + 3)
            .await
            .expect("pending_jobs")
            .is_empty(),
        "no result was recorded"
    );
    let current = store
        .current_attempt(&run.id, 1, task.lease_token)
        .await
        .expect("current_attempt");
    assert!(current.is_some(), "the running attempt is untouched");
}

pub async fn a_task_claimed_as_it_is_scheduled_runs_its_first_attempt(store: &dyn Store) {
    let mut run = Run::start(store, "wf-inline", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    let mut commit = run.commit(&claim, Vec::new(), T0);
    let options = ActivityOptions {
        start_to_close_timeout_ms: 5_000,
        ..ActivityOptions::default()
    };
    schedule_in(&run, &mut commit, 1, "charge", options);
    commit.new_activities[0].claimed = Some(InlineClaim {
        owner: "worker-7".into(),
        lease_expires_at_ms: T0 + 5_000,
    });
    run.apply(store, commit).await;

    let attempt = store
        .current_attempt(&run.id, 1, 1)
        .await
        .expect("current_attempt")
        .expect("attempt 1 runs under lease token 1");
    assert_eq!((attempt.attempt, attempt.lease_token), (1, 1));
    assert!(
        store
            .claim_activities("other", &names(&["charge"]), T0 + 4_999, 60_000, 10)
            .await
            .expect("claim_activities")
            .is_empty(),
        "nobody else claims a running attempt before its lease ends"
    );
    let waiting = store.waiting_on(&run.id).await.expect("waiting_on");
    assert_eq!(waiting.activities.len(), 1);
    let task = &waiting.activities[0];
    assert!(task.running && task.attempt == 1);
    assert_eq!(task.owner.as_deref(), Some("worker-7"));
    assert_eq!(task.next_at_ms, T0 + 5_000);

    // Its lease runs out like any claimed attempt's: attempt 2 goes to another.
    let retried = store
        .claim_activities("other", &names(&["charge"]), T0 + 5_000, 60_000, 10)
        .await
        .expect("claim_activities");
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].attempt, retried[0].lease_token), (2, 2));
    match store
        .finish_attempt(
            &run.id,
            1,
            1,
            AttemptOutcome::Completed {
                output: json!("late"),
            },
            T0 + 5_001,
        )
        .await
    {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("the first attempt's late result must be a conflict, got {other:?}"),
    }
    store
        .finish_attempt(
            &run.id,
            1,
            2,
            AttemptOutcome::Completed {
                output: json!("paid"),
            },
            T0 + 5_002,
        )
        .await
        .expect("the second attempt finishes");
    let jobs = store
        .pending_jobs(&run.id, T0 + 5_003)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.activities.len(), 1);
    assert_eq!(jobs.activities[0].attempt, 2);
}

/// A new run and its first activation, which schedules `charge` and, with
/// `timer`, starts a timer; not yet written.
fn eager_start(workflow_id: &str, run_id: &str, timer: bool) -> (CreateRun, Run, ActivationCommit) {
    let (create, run) = Run::new(workflow_id, run_id, T0);
    let mut first = run.commit(&first_claim(&run), Vec::new(), T0);
    schedule_in(&run, &mut first, 1, "charge", ActivityOptions::default());
    if timer {
        start_timer_in(&run, &mut first, 2, T0 + 5_000);
    }
    (create, run, first)
}

pub async fn start_run_of_many_runs_at_once_gives_each_its_own_answer(store: &dyn Store) {
    // Starts that arrive together (a backend may write them in one
    // statement): fresh ones, one whose workflow id has an open run, and
    // two with one new workflow id.
    let open = Run::start(store, "wf-many-open", T0).await;
    let mut starts: Vec<(String, String)> = (0..8)
        .map(|i| (format!("wf-many-{i}"), format!("run-many-{i}")))
        .collect();
    starts.push(("wf-many-open".into(), "run-many-open".into()));
    starts.push(("wf-many-twice".into(), "run-many-twice-a".into()));
    starts.push(("wf-many-twice".into(), "run-many-twice-b".into()));
    let prepared: Vec<_> = starts
        .iter()
        .enumerate()
        .map(|(i, (wf, id))| eager_start(wf, id, i % 2 == 0))
        .collect();
    let placed = futures::future::join_all(
        prepared
            .iter()
            .map(|(create, _, first)| store.start_run(create.clone(), first.clone())),
    )
    .await;
    let placed: Vec<bool> = placed.into_iter().map(|p| p.expect("start_run")).collect();
    assert_eq!(&placed[..8], &[true; 8], "every fresh run is placed");
    assert!(!placed[8], "an open run keeps its workflow id");
    assert_eq!(
        placed[9..].iter().filter(|&&p| p).count(),
        1,
        "one of two starts of one workflow id is placed: {placed:?}"
    );
    for ((create, run, first), placed) in prepared.iter().zip(&placed) {
        if !placed {
            assert!(
                matches!(
                    store.history(&run.id).await,
                    Err(StoreError::NotFound { .. })
                ),
                "nothing of {} is written",
                run.id
            );
            continue;
        }
        let mut all = run.history.events().to_vec();
        all.extend(first.events.clone());
        let stored = store.history(&run.id).await.expect("history");
        assert_eq!(stored, History::from_recorded(all), "{}", run.id);
        let record = store.run(&run.id).await.expect("run");
        assert_eq!(
            (record.status, record.last_seq, record.workflow_id.as_str()),
            (
                RunStatus::Running,
                stored.len() as u64,
                create.workflow_id.as_str()
            )
        );
    }
    assert_eq!(
        store.run(&open.id).await.expect("run").status,
        RunStatus::Running
    );
    let tasks = store
        .claim_activities("worker", &names(&["charge"]), T0 + 1, 1_000, 100)
        .await
        .expect("claim_activities");
    assert_eq!(
        tasks.len(),
        9,
        "each placed run's activity is claimable once"
    );
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 5_000)
    );
    assert_eq!(
        claimed_ids(store, "host-a", T0 + 1).await,
        vec![open.id.clone()],
        "every first activation is done: only the run created without one is runnable"
    );
}

pub async fn finish_and_commit_of_many_runs_at_once_gives_each_its_own_answer(store: &dyn Store) {
    // Results that arrive together (a backend may write them in one
    // statement), each with the activation it wakes: ones that apply
    // (closing and stepping), one a signal overtook, one of another
    // attempt, one stale.
    let mut runs = Vec::new();
    for i in 0..8 {
        runs.push(run_with_a_running_attempt(store, &format!("wf-many-results-{i}")).await);
    }
    store
        .send_signal(&runs[5].0.id, "nudge", json!(1), T0 + 2, 2_000)
        .await
        .expect("send_signal");
    let calls: Vec<(FinishedAttempt, ActivationCommit)> = runs
        .iter()
        .enumerate()
        .map(|(i, (run, claim, task))| {
            let next = if i < 3 {
                closing_activation(run, claim, T0 + 3)
            } else {
                stepping_activation(run, claim, T0 + 3)
            };
            let mut finished = paid(task, T0 + 3);
            match i {
                6 => finished.attempt = 2,
                7 => finished.lease_token += 1,
                _ => {}
            }
            (finished, next)
        })
        .collect();
    let answers = futures::future::join_all(
        calls
            .iter()
            .map(|(finished, next)| store.finish_and_commit(finished.clone(), next.clone())),
    )
    .await;
    for (i, ((run, _, task), answer)) in runs.iter().zip(answers).enumerate() {
        let history = store.history(&run.id).await.expect("history");
        let record = store.run(&run.id).await.expect("run");
        let jobs = store
            .pending_jobs(&run.id, T0 + 4)
            .await
            .expect("pending_jobs");
        match i {
            0..=4 => {
                assert!(answer.expect("finish_and_commit"), "run {i} applies");
                let mut all = run.history.events().to_vec();
                all.extend(calls[i].1.events.clone());
                assert_eq!(history, History::from_recorded(all), "run {i}");
                assert!(jobs.is_empty(), "run {i}: the result was consumed");
                let status = if i < 3 {
                    RunStatus::Completed
                } else {
                    RunStatus::Running
                };
                assert_eq!(
                    (record.status, record.last_seq),
                    (status, history.len() as u64)
                );
            }
            5 | 6 => {
                assert!(
                    !answer.expect("finish_and_commit"),
                    "run {i}: only the result"
                );
                assert_eq!(history, run.history, "run {i}");
                assert_eq!(jobs.activities.len(), 1, "run {i}: the result is recorded");
            }
            _ => {
                assert!(
                    matches!(answer, Err(StoreError::Conflict { .. })),
                    "run {i}: a stale attempt is a conflict, got {answer:?}"
                );
                assert_eq!(history, run.history, "run {i}");
                assert!(jobs.is_empty(), "run {i}: no result was recorded");
                let current = store
                    .current_attempt(&run.id, 1, task.lease_token)
                    .await
                    .expect("current_attempt");
                assert!(
                    current.is_some(),
                    "run {i}: the running attempt is untouched"
                );
            }
        }
    }
    let shipped = store
        .claim_activities("worker", &names(&["ship"]), T0 + 5, 60_000, 10)
        .await
        .expect("claim_activities");
    let mut shipped: Vec<RunId> = shipped.into_iter().map(|t| t.run_id).collect();
    shipped.sort();
    let mut stepped = vec![runs[3].0.id.clone(), runs[4].0.id.clone()];
    stepped.sort();
    assert_eq!(
        shipped, stepped,
        "each stepping run's next activity is claimable"
    );
    let mut woken = claimed_ids(store, "host-b", T0 + 6).await;
    woken.sort();
    let mut expected = vec![runs[5].0.id.clone(), runs[6].0.id.clone()];
    expected.sort();
    assert_eq!(
        woken, expected,
        "the results that did not apply woke their runs"
    );
}

pub async fn commit_activation_of_many_runs_at_once_gives_each_its_own_answer(store: &dyn Store) {
    // Activations that arrive together (a backend may write them in one
    // statement): steps, a timer, closes, a close after a wake-up came in,
    // a close that owes an update its answer, and one under a stale lease.
    let mut runs = Vec::new();
    for i in 0..7 {
        runs.push(Run::start(store, &format!("wf-many-commits-{i}"), T0).await);
    }
    let claims = store
        .claim_runs("host-a", T0, LEASE, 100)
        .await
        .expect("claim_runs");
    assert_eq!(claims.len(), runs.len());
    store
        .send_signal(&runs[4].id, "nudge", json!(1), T0 + 1, 2_000)
        .await
        .expect("send_signal");
    store
        .send_update(&runs[5].id, "u-1", "approve", json!(true), T0 + 1, 10)
        .await
        .expect("send_update");
    let commits: Vec<ActivationCommit> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let mut claim = claims
                .iter()
                .find(|c| c.run_id == run.id)
                .cloned()
                .expect("each run is claimed");
            if i == 6 {
                claim.lease_token += 1;
            }
            let closing = i >= 3;
            let events = if closing {
                vec![Event::WorkflowCompleted { output: json!(i) }]
            } else {
                Vec::new()
            };
            let mut commit = run.commit(&claim, events, T0 + 2);
            match i {
                0 | 1 => schedule_in(run, &mut commit, 1, "charge", ActivityOptions::default()),
                2 => start_timer_in(run, &mut commit, 1, T0 + 5_000),
                _ => {
                    commit.outcome = RunOutcome::Completed { output: json!(i) };
                }
            }
            commit
        })
        .collect();
    let answers = futures::future::join_all(
        commits
            .iter()
            .map(|commit| store.commit_activation(commit.clone())),
    )
    .await;
    for (i, (run, answer)) in runs.iter().zip(answers).enumerate() {
        let history = store.history(&run.id).await.expect("history");
        let record = store.run(&run.id).await.expect("run");
        if i == 6 {
            assert!(
                matches!(answer, Err(StoreError::Conflict { .. })),
                "run {i}: a stale lease is a conflict, got {answer:?}"
            );
            assert_eq!(history, run.history, "run {i}: nothing is written");
            assert_eq!(record.status, RunStatus::Running);
            continue;
        }
        answer.unwrap_or_else(|e| panic!("run {i}: commit_activation: {e}"));
        let mut all = run.history.events().to_vec();
        all.extend(commits[i].events.clone());
        assert_eq!(history, History::from_recorded(all), "run {i}");
        let status = if i >= 3 {
            RunStatus::Completed
        } else {
            RunStatus::Running
        };
        assert_eq!(
            (record.status, record.last_seq),
            (status, history.len() as u64),
            "run {i}"
        );
    }
    match store.update_outcome(&runs[5].id, "u-1").await {
        Ok(Some(Err(failure))) => assert_eq!(failure.error_type, "UpdateNotCompleted"),
        other => panic!("the close answers its open update with a failure, got {other:?}"),
    }
    let charged = store
        .claim_activities("worker", &names(&["charge"]), T0 + 3, 60_000, 10)
        .await
        .expect("claim_activities");
    let mut charged: Vec<RunId> = charged.into_iter().map(|t| t.run_id).collect();
    charged.sort();
    let mut stepped = vec![runs[0].id.clone(), runs[1].id.clone()];
    stepped.sort();
    assert_eq!(charged, stepped, "each step's activity is claimable");
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 5_000)
    );
}
