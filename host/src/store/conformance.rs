//! The storage contract as tests: one suite that every backend must pass.
//!
//! Each `pub async fn` re-exported here is one behaviour of the traits in [`crate::store`],
//! checked against a fresh, empty store. A backend runs the whole suite with one
//! line in an integration test, which expands to one `#[tokio::test]` per
//! behaviour:
//!
//! ```ignore
//! async fn fresh_store() -> weft::store::SqliteStore {
//!     weft::store::SqliteStore::in_memory().await.expect("in-memory SQLite")
//! }
//!
//! mod sqlite {
//!     weft::conformance_tests!(super::fresh_store());
//! }
//! ```
//!
//! The expression is awaited once per test and must give a [`Fixture`]: a
//! store, plus whatever has to be cleaned up after the test
//! ([`Fixture::teardown`]). Time is passed by hand (`T0` plus offsets), so leases,
//! timers and retries expire exactly when a test says.

use super::{
    ActivationCommit, ActivityTask, AttemptOutcome, CreateRun, Heartbeat, ModuleRecord,
    NewActivityTask, NewTimer, PostgresStore, ResolvedActivity, RunClaim, RunOptions, RunOutcome,
    RunRecord, RunStatus, SqliteStore, Store, StoreError,
};
use crate::model::{
    ActivityOptions, Event, Failure, History, RecordedEvent, RetryPolicy, RunId, Sha256Hex,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

mod activities;
mod activity_control;
mod activity_timeouts;
mod ahead;
mod children;
mod claims;
mod commits;
mod history;
mod lifecycle;
mod modules;
mod paging;
mod requests;
mod seals;
mod secrets;
mod signals;
mod versions;
mod workflow_ids;

pub use activities::*;
pub use activity_control::*;
pub use activity_timeouts::*;
pub use ahead::*;
pub use children::*;
pub use claims::*;
pub use commits::*;
pub use history::*;
pub use lifecycle::*;
pub use modules::*;
pub use paging::*;
pub use requests::*;
pub use seals::*;
pub use secrets::*;
pub use signals::*;
pub use versions::*;
pub use workflow_ids::*;

/// What the suite runs against: a store, and how to clean up after it.
pub trait Fixture: Send + Sync + 'static {
    fn store(&self) -> &dyn Store;
    /// The same database opened again, as another host or a restarted one
    /// opens it; `None` for a database no one else can open (SQLite in
    /// memory), whose tests then check one open only.
    fn reopen(&self) -> impl Future<Output = Option<Box<dyn Store>>> + Send {
        async { None }
    }
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
    // Behaviours that open the database again take the fixture itself.
    (@fixture_tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $make.await;
                $crate::store::conformance::$name(&fixture).await;
                $crate::store::conformance::Fixture::teardown(fixture).await;
            }
        )*
    };
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
            a_run_in_activation_is_not_claimed_again_by_its_host,
            claims_take_the_longest_woken_runs_first,
            claim_honours_the_limit,
            commit_appends_events_and_creates_tasks_and_timers,
            commit_consumes_jobs,
            commit_completed_closes_the_run,
            stopped_runs_are_the_closed_and_the_parked,
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
            signals_and_updates_past_their_limits_are_refused,
            modules_are_stored_once_by_sha256,
            next_timer_at_and_next_activity_at,
            reclaim_leases_frees_and_fences,
            concurrent_run_claims_never_share_a_run,
            concurrent_activity_claims_never_share_a_task,
            concurrent_commits_of_one_claim_apply_once,
            reuse_policy_allow_duplicate_follows_any_closed_run,
            reuse_policy_failed_only_follows_only_unsuccessful_runs,
            reuse_policy_reject_duplicate_refuses_any_earlier_run,
            an_open_run_is_a_conflict_whatever_the_reuse_policy,
            conflict_policy_use_existing_returns_the_open_run,
            signal_with_start_queues_the_signal_for_a_new_run,
            signal_with_start_delivers_to_the_existing_run,
            cancel_request_is_delivered_once,
            termination_request_makes_a_stuck_run_claimable,
            termination_request_wakes_a_running_run,
            a_passed_deadline_makes_a_run_claimable,
            a_timer_before_the_deadline_comes_first,
            updates_are_delivered_answered_and_failed_on_close,
            status_line_search_attributes_and_memo_round_trip,
            list_runs_filters_newest_first,
            list_runs_defaults_to_a_hundred,
            pages_return_each_run_once_in_order,
            runs_created_between_pages_neither_repeat_nor_skip_older_ones,
            filters_hold_across_pages,
            a_page_holds_at_most_a_thousand_runs,
            concurrent_signal_with_starts_open_one_run,
            children_start_with_the_parent_commit_and_resolve_it,
            children_closing_unsuccessfully_resolve_with_their_failure,
            a_child_with_a_taken_workflow_id_fails_at_once,
            parent_close_policies_apply_to_open_children,
            a_parent_cancels_its_child,
            continue_as_new_moves_signals_and_the_parent_link,
            reuse_policy_looks_at_the_end_of_a_continued_chain,
            a_parent_and_its_children_closing_at_once_all_commit,
            tasks_without_timeouts_have_no_deadline,
            schedule_to_start_timeout_fails_a_task_nobody_picked_up,
            schedule_to_start_applies_to_each_waiting_attempt,
            schedule_to_close_timeout_abandons_a_running_attempt,
            schedule_to_close_timeout_ends_a_waiting_retry,
            heartbeat_timeout_retries_the_attempt,
            heartbeat_timeout_of_the_last_attempt_fails_the_activity,
            heartbeat_timeout_retry_respects_schedule_to_close,
            heartbeat_details_reach_the_next_attempt,
            current_attempt_names_only_the_running_attempt,
            waiting_on_shows_attempts_failures_heartbeats_and_timers,
            heartbeat_is_fenced_by_the_lease,
            cancel_resolves_a_scheduled_activity_and_wakes_the_run,
            cancel_reaches_a_running_attempt_at_its_heartbeat,
            cancel_leaves_resolved_and_unknown_activities_alone,
            claim_activity_takes_one_local_task_by_key,
            claim_activity_waits_for_a_retry_to_be_due,
            a_name_has_one_default_module,
            a_version_names_one_module,
            module_usage_counts_runs_and_runs_of_module_samples_them,
            change_module_appends_to_the_chain_and_moves_the_run,
            change_module_waits_for_the_activating_host,
            resume_makes_a_stuck_run_runnable_on_a_fixed_module,
            resume_on_the_same_module_appends_nothing,
            garbage_collection_keeps_open_runs_and_the_modules_they_need,
            a_reset_run_is_placed_whole_with_its_inheritance,
            a_closed_run_is_sealed_once_and_collected_with_its_seal,
            start_run_writes_the_run_with_its_first_activation,
            finish_and_commit_applies_a_result_with_the_activation_it_wakes,
            finish_and_commit_applies_a_result_with_the_step_it_wakes,
            a_child_closed_with_its_last_result_resolves_its_parent,
            finish_and_commit_records_only_the_result_when_a_signal_came_first,
            finish_and_commit_records_only_the_result_when_another_host_claimed_the_run,
            finish_and_commit_records_only_the_result_of_another_attempt,
            finish_and_commit_of_a_stale_attempt_writes_nothing,
            start_run_of_many_runs_at_once_gives_each_its_own_answer,
            finish_and_commit_of_many_runs_at_once_gives_each_its_own_answer,
            commit_activation_of_many_runs_at_once_gives_each_its_own_answer,
            a_task_claimed_as_it_is_scheduled_runs_its_first_attempt,
        );
        $crate::conformance_tests!(@fixture_tests $make;
            one_task_token_key_per_database,
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
        let id = format!("run-{}-{workflow_id}", NEXT.fetch_add(1, Ordering::Relaxed));
        let (create, run) = Run::new(workflow_id, &id, now_ms);
        store.create_run(create).await.expect("create_run");
        run
    }

    /// A run's first event and the `CreateRun` that writes it, not yet written.
    fn new(workflow_id: &str, run_id: &str, now_ms: u64) -> (CreateRun, Run) {
        let mut history = History::default();
        history.push(
            Event::WorkflowStarted {
                workflow_type: "order".into(),
                workflow_id: workflow_id.into(),
                input: json!({"customer": "ada", "items": [1, 2, 3]}),
                module_sha256: module_sha(),
                seed: 42,
                parent: None,
                continued_from: None,
            },
            now_ms,
        );
        let id = RunId(run_id.into());
        let create = CreateRun {
            run_id: id.clone(),
            workflow_id: workflow_id.into(),
            workflow_type: "order".into(),
            module_sha256: module_sha(),
            first_event: history.events()[0].clone(),
            now_ms,
            options: RunOptions::default(),
        };
        (create, Run { id, history })
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
            ..ActivationCommit::default()
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
        claimed: None,
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
