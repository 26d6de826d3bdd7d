//! The storage contract as tests: one suite that every backend must pass.
//!
//! Each `pub async fn` here is one behaviour of the traits in [`crate::store`],
//! checked against a fresh, empty store. A backend runs the whole suite with one
//! line in an integration test, which expands to one `#[tokio::test]` per
//! behaviour:
//!
//! ```ignore
//! mod sqlite {
//!     weft::conformance_tests!(weft::store::SqliteStore::in_memory());
//! }
//! ```
//!
//! The expression is awaited once per test and must give a [`Fixture`]: a
//! store, plus whatever has to be cleaned up after the test
//! ([`Fixture::teardown`]). Time is passed by hand (`T0` plus offsets), so leases,
//! timers and retries expire exactly when a test says.

use super::{
    ActivationCommit, AttemptOutcome, CreateRun, NewActivityTask, NewTimer, PostgresStore,
    RunClaim, RunOutcome, RunStatus, SqliteStore, Store, StoreError,
};
use crate::model::{
    ActivityOptions, Event, Failure, History, RecordedEvent, RetryPolicy, RunId, Sha256Hex,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the suite runs against: a store, and how to clean up after it.
pub trait Fixture: Send + Sync + 'static {
    fn store(&self) -> &dyn Store;
    /// Called after a test that passed (a failed test leaves its data for a post-mortem).
    fn teardown(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

impl Fixture for SqliteStore {
    fn store(&self) -> &dyn Store {
        self
    }
    async fn teardown(self) {
        self.close().await;
    }
}

impl Fixture for PostgresStore {
    fn store(&self) -> &dyn Store {
        self
    }
    async fn teardown(self) {
        self.close().await;
    }
}

/// Expands to one `#[tokio::test]` per behaviour of the storage contract, each
/// on a fixture made by awaiting `$make` (see [`crate::store::conformance`]).
#[macro_export]
#[doc(hidden)]
macro_rules! conformance_tests {
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $make.await;
                $crate::store::conformance::$name($crate::store::conformance::Fixture::store(&fixture)).await;
                $crate::store::conformance::Fixture::teardown(fixture).await;
            }
        )*
    };
    ($make:expr) => {
        $crate::conformance_tests!(@tests $make;
            create_run_then_read_history,
            history_keeps_every_event_kind_exactly,
            workflow_id_is_unique_among_open_runs,
            stuck_run_keeps_its_workflow_id,
            run_by_workflow_id_prefers_the_open_run,
            create_run_with_a_taken_run_id_fails,
            claim_takes_a_new_run_once,
            claim_skips_idle_runs_and_future_timers,
            claim_takes_a_signalled_run,
            claim_returns_each_run_once,
            claim_waits_for_another_hosts_lease_to_expire,
            reclaiming_an_own_lease_raises_the_token,
            claim_honours_the_limit,
            commit_appends_events_and_creates_tasks_and_timers,
            commit_consumes_jobs,
            commit_completed_closes_the_run,
            commit_failed_records_the_failure,
            commit_with_a_stale_lease_writes_nothing,
            commit_with_a_wrong_event_number_writes_nothing,
            signal_during_an_activation_keeps_the_run_runnable,
            pending_jobs_are_ordered,
            park_run_makes_the_run_stuck,
            release_run_frees_the_lease,
            release_after_an_empty_wake_up_settles_the_run,
            completed_activity_wakes_the_run_once,
            failed_activity_wakes_the_run_once,
            finish_attempt_is_fenced_by_the_lease,
            retry_hides_the_task_until_retry_at,
            activity_lease_follows_start_to_close_timeout,
            claim_activities_filters_by_name,
            signal_to_closed_or_unknown_run_is_not_found,
            modules_are_stored_once_by_sha256,
            next_timer_at_and_next_activity_at,
            reclaim_leases_frees_and_fences,
            concurrent_run_claims_never_share_a_run,
            concurrent_activity_claims_never_share_a_task,
            concurrent_commits_of_one_claim_apply_once,
        );
    };
}

/// The time every test starts at.
const T0: u64 = 1_700_000_000_000;
/// A lease long enough not to expire unless a test moves time past it.
const LEASE: u64 = 30_000;

fn module_sha() -> Sha256Hex {
    Sha256Hex::of(b"conformance module")
}

/// A run as a test sees it: its id and the history it expects the store to hold.
struct Run {
    id: RunId,
    history: History,
}

impl Run {
    async fn start(store: &dyn Store, workflow_id: &str, now_ms: u64) -> Run {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = RunId(format!(
            "run-{}-{workflow_id}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut history = History::default();
        history.push(
            Event::WorkflowStarted {
                workflow_type: "order".into(),
                workflow_id: workflow_id.into(),
                input: json!({"customer": "ada", "items": [1, 2, 3]}),
                module_sha256: module_sha(),
                seed: 42,
            },
            now_ms,
        );
        store
            .create_run(CreateRun {
                run_id: id.clone(),
                workflow_id: workflow_id.into(),
                workflow_type: "order".into(),
                module_sha256: module_sha(),
                first_event: history.events()[0].clone(),
                now_ms,
            })
            .await
            .expect("create_run");
        Run { id, history }
    }

    /// `events` numbered and hashed after this run's history, which is left as it is.
    fn next(&self, events: Vec<Event>, now_ms: u64) -> Vec<RecordedEvent> {
        let mut h = self.history.clone();
        for e in events {
            h.push(e, now_ms);
        }
        h.events()[self.history.len()..].to_vec()
    }

    /// An activation commit opening with `activation_started` at `now_ms`, followed by `events`.
    fn commit(&self, claim: &RunClaim, events: Vec<Event>, now_ms: u64) -> ActivationCommit {
        let mut all = vec![Event::ActivationStarted { time_ms: now_ms }];
        all.extend(events);
        ActivationCommit {
            run_id: self.id.clone(),
            lease_token: claim.lease_token,
            observed_wakeups: claim.observed_wakeups,
            events: self.next(all, now_ms),
            consumed_activities: Vec::new(),
            consumed_signals: Vec::new(),
            removed_timers: Vec::new(),
            new_activities: Vec::new(),
            new_timers: Vec::new(),
            outcome: RunOutcome::Running,
            now_ms,
        }
    }

    /// Commits and, once it applied, takes its events as the expected history.
    async fn apply(&mut self, store: &dyn Store, commit: ActivationCommit) {
        let events = commit.events.clone();
        store
            .commit_activation(commit)
            .await
            .expect("commit_activation");
        let mut all = self.history.events().to_vec();
        all.extend(events);
        self.history = History::from_recorded(all);
    }

    /// Claims this run (and asserts that nothing else was claimed) and commits
    /// an activation shaped by `shape`.
    async fn activate(
        &mut self,
        store: &dyn Store,
        now_ms: u64,
        shape: impl FnOnce(&Run, &mut ActivationCommit),
    ) {
        let claim = claim_only(store, "host-a", now_ms, self).await;
        let mut commit = self.commit(&claim, Vec::new(), now_ms);
        shape(self, &mut commit);
        self.apply(store, commit).await;
    }

    /// Schedules one activity (`seq`, `name`) in an activation at `now_ms`.
    async fn schedule(
        &mut self,
        store: &dyn Store,
        now_ms: u64,
        seq: u32,
        name: &str,
        options: ActivityOptions,
    ) {
        let name = name.to_owned();
        self.activate(store, now_ms, |run, c| {
            schedule_in(run, c, seq, &name, options)
        })
        .await;
    }
}

/// Adds the command and the task for activity `seq` to a commit.
fn schedule_in(
    run: &Run,
    commit: &mut ActivationCommit,
    seq: u32,
    name: &str,
    options: ActivityOptions,
) {
    let input = json!({"amount": seq * 100});
    let mut events: Vec<Event> = commit.events.iter().map(|e| e.event.clone()).collect();
    events.push(Event::ActivityScheduled {
        seq,
        name: name.into(),
        input: input.clone(),
        options: options.clone(),
    });
    commit.events = run.next(events, commit.now_ms);
    commit.new_activities.push(NewActivityTask {
        seq,
        name: name.into(),
        input,
        options,
        visible_at_ms: commit.now_ms,
    });
}

/// Adds the command and the timer `seq` firing at `fire_at_ms` to a commit.
fn start_timer_in(run: &Run, commit: &mut ActivationCommit, seq: u32, fire_at_ms: u64) {
    let mut events: Vec<Event> = commit.events.iter().map(|e| e.event.clone()).collect();
    events.push(Event::TimerStarted {
        seq,
        duration_ms: fire_at_ms.saturating_sub(commit.now_ms),
        fire_at_ms,
    });
    commit.events = run.next(events, commit.now_ms);
    commit.new_timers.push(NewTimer { seq, fire_at_ms });
}

/// Appends job or command events to a commit's events.
fn add_events(run: &Run, commit: &mut ActivationCommit, more: Vec<Event>) {
    let mut events: Vec<Event> = commit.events.iter().map(|e| e.event.clone()).collect();
    events.extend(more);
    commit.events = run.next(events, commit.now_ms);
}

async fn claimed_ids(store: &dyn Store, host: &str, now_ms: u64) -> Vec<RunId> {
    let mut ids: Vec<RunId> = store
        .claim_runs(host, now_ms, LEASE, 100)
        .await
        .expect("claim_runs")
        .into_iter()
        .map(|c| c.run_id)
        .collect();
    ids.sort();
    ids
}

async fn claim_only(store: &dyn Store, host: &str, now_ms: u64, run: &Run) -> RunClaim {
    let claims = store
        .claim_runs(host, now_ms, LEASE, 100)
        .await
        .expect("claim_runs");
    let ids: Vec<&RunId> = claims.iter().map(|c| &c.run_id).collect();
    assert_eq!(
        ids,
        vec![&run.id],
        "expected to claim exactly run {}",
        run.id
    );
    claims.into_iter().next().expect("one claim")
}

async fn assert_not_claimable(store: &dyn Store, now_ms: u64, why: &str) {
    let ids = claimed_ids(store, "host-probe", now_ms).await;
    assert!(
        ids.is_empty(),
        "{why}: expected no runnable run, claimed {ids:?}"
    );
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn is_conflict<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict { .. }))
}

fn is_not_found<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::NotFound { .. }))
}

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
        .send_signal(&run.id, "wake", Value::Null, T0 + 9)
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

pub async fn claim_takes_a_new_run_once(store: &dyn Store) {
    let run = Run::start(store, "wf-new", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    assert!(claim.lease_token > 0);
    assert_eq!(
        claim.observed_wakeups, 1,
        "creation is the run's first wake-up"
    );
    assert!(
        claimed_ids(store, "host-b", T0 + 1).await.is_empty(),
        "host-a holds the lease"
    );
}

pub async fn claim_skips_idle_runs_and_future_timers(store: &dyn Store) {
    let mut run = Run::start(store, "wf-idle", T0).await;
    run.activate(store, T0, |run, c| start_timer_in(run, c, 1, T0 + 5_000))
        .await;
    assert_not_claimable(store, T0 + 1, "an idle run with a future timer").await;
    assert_not_claimable(store, T0 + 4_999, "one ms before the timer").await;
    assert!(
        store
            .pending_jobs(&run.id, T0 + 4_999)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
    let claim = claim_only(store, "host-a", T0 + 5_000, &run).await;
    let jobs = store
        .pending_jobs(&run.id, T0 + 5_000)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.due_timers.len(), 1);
    assert_eq!(
        (jobs.due_timers[0].seq, jobs.due_timers[0].fire_at_ms),
        (1, T0 + 5_000)
    );
    let mut commit = run.commit(&claim, vec![Event::TimerFired { seq: 1 }], T0 + 5_000);
    commit.removed_timers = vec![1];
    run.apply(store, commit).await;
    assert_not_claimable(store, T0 + 10_000, "the fired timer is gone").await;
}

pub async fn claim_takes_a_signalled_run(store: &dyn Store) {
    let mut run = Run::start(store, "wf-signalled", T0).await;
    run.activate(store, T0, |_, _| {}).await;
    assert_not_claimable(store, T0 + 1, "an idle run").await;
    store
        .send_signal(&run.id, "approve", json!({"ok": true}), T0 + 2)
        .await
        .expect("send_signal");
    let claim = claim_only(store, "host-a", T0 + 3, &run).await;
    assert_eq!(claim.observed_wakeups, 2);
}

pub async fn claim_returns_each_run_once(store: &dyn Store) {
    let mut run = Run::start(store, "wf-many-reasons", T0).await;
    run.activate(store, T0, |run, c| {
        for seq in 1..=3 {
            start_timer_in(run, c, seq, T0 + 10);
        }
    })
    .await;
    store
        .send_signal(&run.id, "poke", Value::Null, T0 + 1)
        .await
        .expect("send_signal");
    let claims = store
        .claim_runs("host-a", T0 + 20, LEASE, 10)
        .await
        .expect("claim_runs");
    assert_eq!(
        claims.len(),
        1,
        "three due timers and a signal make one claim: {claims:?}"
    );
    assert_eq!(claims[0].run_id, run.id);
}

pub async fn claim_waits_for_another_hosts_lease_to_expire(store: &dyn Store) {
    let run = Run::start(store, "wf-lease", T0).await;
    let a = store
        .claim_runs("host-a", T0, 1_000, 10)
        .await
        .expect("claim_runs");
    assert_eq!(a.len(), 1);
    assert!(
        claimed_ids(store, "host-b", T0 + 999).await.is_empty(),
        "host-a's lease still holds"
    );
    let b = store
        .claim_runs("host-b", T0 + 1_000, 1_000, 10)
        .await
        .expect("claim_runs");
    assert_eq!(b.len(), 1, "the lease expired");
    assert_eq!(b[0].run_id, run.id);
    assert!(
        b[0].lease_token > a[0].lease_token,
        "the new lease fences the old one"
    );
}

pub async fn reclaiming_an_own_lease_raises_the_token(store: &dyn Store) {
    let run = Run::start(store, "wf-own", T0).await;
    let first = claim_only(store, "host-a", T0, &run).await;
    let second = claim_only(store, "host-a", T0 + 10, &run).await;
    assert!(second.lease_token > first.lease_token);
    let commit = run.commit(&first, Vec::new(), T0 + 11);
    assert!(
        is_conflict(&store.commit_activation(commit).await),
        "the first claim is fenced"
    );
}

pub async fn claim_honours_the_limit(store: &dyn Store) {
    for i in 0..3 {
        Run::start(store, &format!("wf-limit-{i}"), T0).await;
    }
    let first = store
        .claim_runs("host-a", T0, LEASE, 2)
        .await
        .expect("claim_runs");
    assert_eq!(first.len(), 2);
    let second = store
        .claim_runs("host-b", T0, LEASE, 2)
        .await
        .expect("claim_runs");
    assert_eq!(second.len(), 1);
    assert!(!first.iter().any(|c| c.run_id == second[0].run_id));
    assert!(
        store
            .claim_runs("host-c", T0, LEASE, 2)
            .await
            .expect("claim_runs")
            .is_empty()
    );
}

pub async fn commit_appends_events_and_creates_tasks_and_timers(store: &dyn Store) {
    let mut run = Run::start(store, "wf-commit", T0).await;
    let options = ActivityOptions {
        start_to_close_timeout_ms: 0,
        retry: Some(RetryPolicy::default()),
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
        .send_signal(&run.id, "cancel-timer", json!(null), T0 + 3)
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
        .send_signal(&run.id, "finish", json!({}), T0 + 2)
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
            .send_signal(&run.id, "late", Value::Null, T0 + 5)
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

pub async fn signal_during_an_activation_keeps_the_run_runnable(store: &dyn Store) {
    let mut run = Run::start(store, "wf-mid", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    let jobs = store.pending_jobs(&run.id, T0).await.expect("pending_jobs");
    assert!(jobs.is_empty());
    let id = store
        .send_signal(&run.id, "poke", json!(1), T0 + 1)
        .await
        .expect("send_signal");
    let commit = run.commit(&claim, Vec::new(), T0 + 2);
    run.apply(store, commit).await;
    let claim = claim_only(store, "host-a", T0 + 3, &run).await;
    assert_eq!(claim.observed_wakeups, 2);
    let jobs = store
        .pending_jobs(&run.id, T0 + 3)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.signals.len(), 1);
    assert_eq!(
        (jobs.signals[0].id, jobs.signals[0].name.as_str()),
        (id, "poke")
    );
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
        .send_signal(&run.id, "a", json!("first"), T0 + 70)
        .await
        .expect("signal a");
    let b = store
        .send_signal(&run.id, "b", json!("second"), T0 + 70)
        .await
        .expect("signal b");
    let c = store
        .send_signal(&run.id, "c", json!("third"), T0 + 65)
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

pub async fn park_run_makes_the_run_stuck(store: &dyn Store) {
    let run = Run::start(store, "wf-park", T0).await;
    let old = store
        .claim_runs("host-a", T0, 1_000, 1)
        .await
        .expect("claim_runs")
        .remove(0);
    let claim = store
        .claim_runs("host-b", T0 + 1_000, LEASE, 1)
        .await
        .expect("claim_runs")
        .remove(0);
    let reason =
        json!({"event": 2, "recorded": "activity_scheduled charge", "issued": "timer_started"});
    assert!(
        is_conflict(
            &store
                .park_run(&run.id, old.lease_token, reason.clone())
                .await
        ),
        "a lost lease cannot park"
    );
    store
        .park_run(&run.id, claim.lease_token, reason.clone())
        .await
        .expect("park_run");
    let record = store.run(&run.id).await.expect("run");
    assert_eq!(record.status, RunStatus::Stuck);
    assert_eq!(record.stuck, Some(reason));
    store
        .send_signal(&run.id, "still-open", Value::Null, T0 + 1_001)
        .await
        .expect("a stuck run is open");
    assert_not_claimable(store, T0 + 1_000_000, "a stuck run").await;
    let commit = Run {
        id: run.id.clone(),
        history: run.history.clone(),
    }
    .commit(&claim, Vec::new(), T0 + 1_002);
    assert!(
        is_conflict(&store.commit_activation(commit).await),
        "a parked run takes no commit"
    );
}

pub async fn release_run_frees_the_lease(store: &dyn Store) {
    let run = Run::start(store, "wf-release", T0).await;
    let a = claim_only(store, "host-a", T0, &run).await;
    store
        .release_run(&run.id, a.lease_token)
        .await
        .expect("release_run");
    let b = claim_only(store, "host-b", T0 + 1, &run).await;
    assert!(b.lease_token > a.lease_token);
    assert!(
        is_conflict(&store.release_run(&run.id, a.lease_token).await),
        "a stale token releases nothing"
    );
    assert!(
        claimed_ids(store, "host-c", T0 + 2).await.is_empty(),
        "host-b still holds the lease"
    );
}

/// Not spelled out by the traits: a wake-up whose job an earlier activation
/// already consumed leaves nothing to do; releasing then settles the run
/// instead of leaving it claimable forever.
pub async fn release_after_an_empty_wake_up_settles_the_run(store: &dyn Store) {
    let mut run = Run::start(store, "wf-empty-wake", T0).await;
    run.activate(store, T0, |_, _| {}).await;
    store
        .send_signal(&run.id, "s1", json!(1), T0 + 1)
        .await
        .expect("send_signal");
    let claim = claim_only(store, "host-a", T0 + 2, &run).await;
    // A second signal arrives between the claim and the read, and is consumed with the first.
    store
        .send_signal(&run.id, "s2", json!(2), T0 + 3)
        .await
        .expect("send_signal");
    let jobs = store
        .pending_jobs(&run.id, T0 + 4)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.signals.len(), 2);
    let mut commit = run.commit(
        &claim,
        vec![
            Event::SignalReceived {
                name: "s1".into(),
                input: json!(1),
            },
            Event::SignalReceived {
                name: "s2".into(),
                input: json!(2),
            },
        ],
        T0 + 4,
    );
    commit.consumed_signals = jobs.signals.iter().map(|s| s.id).collect();
    run.apply(store, commit).await;
    // The second wake-up is still counted, so the run is claimed once more, finds nothing, and releases.
    let claim = claim_only(store, "host-a", T0 + 5, &run).await;
    assert!(
        store
            .pending_jobs(&run.id, T0 + 5)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
    store
        .release_run(&run.id, claim.lease_token)
        .await
        .expect("release_run");
    assert_not_claimable(store, T0 + 6, "nothing is waiting").await;
    // A new signal still wakes it.
    store
        .send_signal(&run.id, "s3", json!(3), T0 + 7)
        .await
        .expect("send_signal");
    claim_only(store, "host-a", T0 + 8, &run).await;
}

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

pub async fn signal_to_closed_or_unknown_run_is_not_found(store: &dyn Store) {
    assert!(is_not_found(
        &store
            .send_signal(&RunId::from("nobody"), "x", Value::Null, T0)
            .await
    ));
    let mut run = Run::start(store, "wf-closed", T0).await;
    run.activate(store, T0, |run, c| {
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
    match store.send_signal(&run.id, "x", Value::Null, T0 + 1).await {
        Err(StoreError::NotFound { what }) => {
            assert!(what.contains(run.id.as_str()), "names the run: {what}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(
        store
            .pending_jobs(&run.id, T0 + 2)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
}

pub async fn modules_are_stored_once_by_sha256(store: &dyn Store) {
    assert!(store.modules().await.expect("modules").is_empty());
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let first = store
        .put_module("shop", "1.0.0", &bytes, T0)
        .await
        .expect("put_module");
    assert_eq!(first.sha256, Sha256Hex::of(&bytes));
    assert_eq!(
        (first.name.as_str(), first.version.as_str()),
        ("shop", "1.0.0")
    );
    assert_eq!((first.size, first.created_at_ms), (70_000, T0));
    let again = store
        .put_module("shop", "9.9.9", &bytes, T0 + 5)
        .await
        .expect("put_module");
    assert_eq!(again, first, "the same bytes twice return the first record");
    assert_eq!(
        store
            .module_bytes(&first.sha256)
            .await
            .expect("module_bytes"),
        bytes
    );
    let other = store
        .put_module("shop", "2.0.0", b"\0asm other", T0 + 10)
        .await
        .expect("put_module");
    assert_eq!(store.modules().await.expect("modules"), vec![first, other]);
    assert!(is_not_found(
        &store.module_bytes(&Sha256Hex::of(b"never deployed")).await
    ));
}

pub async fn next_timer_at_and_next_activity_at(store: &dyn Store) {
    assert_eq!(store.next_timer_at().await.expect("next_timer_at"), None);
    assert_eq!(
        store
            .next_activity_at(&names(&["x"]))
            .await
            .expect("next_activity_at"),
        None
    );
    let mut early = Run::start(store, "wf-early", T0).await;
    let mut late = Run::start(store, "wf-late", T0).await;
    let mut claims = store
        .claim_runs("host-a", T0, LEASE, 10)
        .await
        .expect("claim_runs");
    claims.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    let claim_of = |run: &Run| {
        claims
            .iter()
            .find(|c| c.run_id == run.id)
            .cloned()
            .expect("claimed")
    };
    let mut commit = early.commit(&claim_of(&early), Vec::new(), T0);
    start_timer_in(&early, &mut commit, 1, T0 + 1_000);
    schedule_in(&early, &mut commit, 2, "x", ActivityOptions::default());
    commit.new_activities[0].visible_at_ms = T0 + 700;
    early.apply(store, commit).await;
    let mut commit = late.commit(&claim_of(&late), Vec::new(), T0);
    start_timer_in(&late, &mut commit, 1, T0 + 2_000);
    schedule_in(&late, &mut commit, 2, "x", ActivityOptions::default());
    commit.new_activities[0].visible_at_ms = T0 + 900;
    late.apply(store, commit).await;
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 1_000)
    );
    assert_eq!(
        store
            .next_activity_at(&names(&["x"]))
            .await
            .expect("next_activity_at"),
        Some(T0 + 700)
    );
    assert_eq!(
        store
            .next_activity_at(&names(&["y"]))
            .await
            .expect("next_activity_at"),
        None
    );
    assert!(
        store
            .claim_activities("w", &names(&["x"]), T0 + 699, 1_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );

    // Parking the early run leaves only the late run's timer to wait for.
    store
        .send_signal(&early.id, "wake", Value::Null, T0 + 1)
        .await
        .expect("send_signal");
    let claim = claim_only(store, "host-a", T0 + 2, &early).await;
    store
        .park_run(&early.id, claim.lease_token, json!("parked"))
        .await
        .expect("park_run");
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 2_000)
    );
}

pub async fn reclaim_leases_frees_and_fences(store: &dyn Store) {
    let mut one = Run::start(store, "wf-r1", T0).await;
    one.schedule(store, T0, 1, "charge", ActivityOptions::default())
        .await;
    let two = Run::start(store, "wf-r2", T0 + 1).await;
    store
        .send_signal(&one.id, "wake", Value::Null, T0 + 2)
        .await
        .expect("send_signal");
    let held = store
        .claim_runs("host-a", T0 + 3, LEASE, 10)
        .await
        .expect("claim_runs");
    assert_eq!(held.len(), 2);
    let task = store
        .claim_activities("host-a", &names(&["charge"]), T0 + 3, LEASE, 10)
        .await
        .expect("claim");
    assert_eq!(task.len(), 1);
    assert_eq!(
        store
            .reclaim_leases("host-b")
            .await
            .expect("reclaim_leases"),
        0,
        "host-b holds nothing"
    );

    assert_eq!(
        store
            .reclaim_leases("host-a")
            .await
            .expect("reclaim_leases"),
        3,
        "two runs and one attempt"
    );
    let mut taken = store
        .claim_runs("host-b", T0 + 4, LEASE, 10)
        .await
        .expect("claim_runs");
    taken.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    assert_eq!(taken.len(), 2, "the runs are free at once");
    for claim in &taken {
        let old = held
            .iter()
            .find(|h| h.run_id == claim.run_id)
            .expect("same runs");
        assert!(
            claim.lease_token > old.lease_token + 1,
            "reclaiming raised the token before the new claim"
        );
        let run = if claim.run_id == one.id { &one } else { &two };
        assert!(
            is_conflict(
                &store
                    .commit_activation(run.commit(old, Vec::new(), T0 + 5))
                    .await
            ),
            "the old lease is fenced"
        );
    }
    let again = store
        .claim_activities("host-b", &names(&["charge"]), T0 + 4, LEASE, 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1, "the lost attempt is claimable at once");
    assert_eq!(again[0].attempt, 2);
    let late = store
        .finish_attempt(
            &one.id,
            1,
            task[0].lease_token,
            AttemptOutcome::Completed { output: json!(0) },
            T0 + 6,
        )
        .await;
    assert!(is_conflict(&late), "the old attempt is fenced");
    assert_eq!(
        store
            .reclaim_leases("host-a")
            .await
            .expect("reclaim_leases"),
        0
    );
}

pub async fn concurrent_run_claims_never_share_a_run(store: &dyn Store) {
    const RUNS: usize = 24;
    let mut runs = std::collections::BTreeMap::new();
    for i in 0..RUNS {
        let run = Run::start(store, &format!("wf-race-{i}"), T0).await;
        runs.insert(run.id.clone(), run);
    }
    let runs = &runs;
    // Each host activates what it claims at once, so that it does not take its own runs again.
    let hosts = (0..4).map(|h| async move {
        let host = format!("host-{h}");
        let mut mine = Vec::new();
        loop {
            let claims = store
                .claim_runs(&host, T0, LEASE, 3)
                .await
                .expect("claim_runs");
            if claims.is_empty() {
                return mine;
            }
            for claim in claims {
                let run = &runs[&claim.run_id];
                store
                    .commit_activation(run.commit(&claim, Vec::new(), T0))
                    .await
                    .expect("commit_activation");
                mine.push(claim.run_id);
            }
        }
    });
    let claimed: Vec<RunId> = futures::future::join_all(hosts)
        .await
        .into_iter()
        .flatten()
        .collect();
    let distinct: BTreeSet<RunId> = claimed.iter().cloned().collect();
    assert_eq!(
        claimed.len(),
        distinct.len(),
        "a run was claimed twice: {claimed:?}"
    );
    assert_eq!(distinct, runs.keys().cloned().collect::<BTreeSet<_>>());
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
