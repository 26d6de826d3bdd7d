//! Storage: the event log and the indexes over it, behind narrow traits.
//!
//! The log ([`HistoryStore`]) is the truth; the other tables are indexes that let
//! work be found quickly: runs that need an activation ([`RunStore`]), activity
//! tasks ([`ActivityStore`]), the signal inbox ([`SignalStore`]), deployed
//! modules ([`ModuleStore`]) and what operators change about them: default
//! versions, upgrades, retention ([`VersionStore`]); the seals a signing
//! host puts on closed runs ([`SealStore`]); and the secrets every host on
//! one database shares ([`SecretStore`]). [`Store`] is all of them together.
//!
//! Two implementations behave the same: [`SqliteStore`] (the embedded default)
//! and [`PostgresStore`] (many hosts on one database). The contract is pinned
//! by one conformance suite, [`conformance`], that runs against both.
//!
//! Many hosts from the start: a host *claims* a run with a lease (owner, expiry,
//! fencing token) before it activates it, and [`RunStore::commit_activation`]
//! appends only if the lease token and the expected next event number still
//! hold. A host whose lease expired can therefore never extend a history.
//!
//! Hosts sharing a database hear of work the others made ready through
//! [`RunStore::changes`] (Postgres `LISTEN/NOTIFY`); a slow poll is the safety net.
//!
//! No ambient time: every call that needs "now" takes it as `now_ms`.
//!
//! ```no_run
//! # async fn f() -> Result<(), weft::store::StoreError> {
//! use weft::store::{SqliteStore, HistoryStore};
//! let store = SqliteStore::open("weft.db").await?;
//! let history = store.history(&"some-run".into()).await?;
//! # Ok(()) }
//! ```

pub mod conformance;
mod expiry;
mod postgres;
mod rows;
mod seals;
mod secrets;
mod sqlite;
mod versions;

pub use postgres::{PostgresOptions, PostgresStore, redact_url};
pub use seals::{Seal, SealStore};
pub use secrets::SecretStore;
pub use sqlite::SqliteStore;
pub use versions::{
    ChangeModule, Garbage, GarbageRequest, ModuleUsage, Reapplied, ReappliedUpdate, VersionStore,
};

use crate::model::{
    ActivityOptions, EventHash, Failure, History, ParentClosePolicy, ParentLink, RecordedEvent,
    RetryPolicy, RunId, Sha256Hex,
};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

/// What can go wrong in storage, grouped by what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; retry later. Nothing
    /// was written, or the write is fenced so that a retry cannot double it.
    #[error(
        "database unavailable: {0}; this is retryable: try again once the database answers (check that it is up)"
    )]
    Unavailable(String),
    /// The history moved on or the lease was lost: another host owns the run now.
    #[error("run {run_id}: {reason}; this host's work on it is discarded and the owner carries on")]
    Conflict { run_id: RunId, reason: String },
    /// A workflow id already has an open run.
    #[error(
        "workflow id {workflow_id:?} already has an open run ({run_id}); pick another id or wait for that run to close"
    )]
    WorkflowIdInUse { workflow_id: String, run_id: RunId },
    /// The workflow id was used before and the reuse policy forbids another run.
    #[error(
        "workflow id {workflow_id:?} was already used by run {run_id} ({status}) and the reuse policy is {policy}; pick another id or start with a policy that allows it"
    )]
    WorkflowIdReused {
        workflow_id: String,
        run_id: RunId,
        status: String,
        policy: String,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    /// A deploy reused a name and version for other bytes.
    #[error(
        "module {name} version {version} is already deployed with other bytes (sha256 {sha256}); deploy these under a new version"
    )]
    VersionTaken {
        name: String,
        version: String,
        sha256: String,
    },
    /// Stored data that cannot be read back (a corrupted row, a bad migration).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database cannot be used as configured, and retrying cannot
    /// change that (its TLS certificate is not trusted, say): the message
    /// says what to fix.
    #[error("the database cannot be used as configured: {0}")]
    Refused(String),
    /// The database refused this request's data for good (a value it
    /// cannot store, a key over its size limit): retrying the same request
    /// can never succeed.
    #[error(
        "the database refused the request: {0}; this is not retryable: change what was sent (a shorter id or name, no NUL character) and send it again"
    )]
    Rejected(String),
    /// A run already holds as many of something (signals not yet taken,
    /// updates not yet answered) as its limit allows; sending again once
    /// the workflow has caught up can succeed.
    #[error(
        "run {run_id} already has {limit} {what}, the limit ({setting}); send again once the workflow has taken some, or raise the limit"
    )]
    Full {
        run_id: RunId,
        what: &'static str,
        limit: u64,
        setting: &'static str,
    },
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound { what: "row".into() },
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            sqlx::Error::Database(db) if permanent(db.as_ref()) => StoreError::Rejected(format!(
                "{} ({} {})",
                db.message(),
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    "SQLSTATE"
                } else {
                    "SQLite code"
                },
                db.code().as_deref().unwrap_or("?")
            )),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Whether a database error is about the request itself, so that the same
/// request can never succeed: by SQLSTATE class on Postgres (22 data
/// exception, 54 program limit exceeded — an index key too large —, 21
/// cardinality, 23 integrity, 42 syntax or access rule, 0A unsupported),
/// by primary result code on SQLite (TOOBIG, CONSTRAINT, MISMATCH, RANGE).
/// Everything else — connections, serialization failures and deadlocks,
/// resources, shutdowns, locks — may pass, and stays retryable.
fn permanent(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else {
        return false;
    };
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return matches!(code.get(..2), Some("22" | "54" | "21" | "23" | "42" | "0A"));
    }
    // SQLite: an extended result code; its low byte is the primary one.
    code.parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25))
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The lifecycle of a run, as stored in `runs.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Open: waiting for or doing work.
    Running,
    /// Open but parked: the guest diverged from its history or trapped. See [`RunRecord::stuck`].
    Stuck,
    Completed,
    Failed,
    /// The workflow honoured a cancel request.
    Cancelled,
    /// Ended by the host on request, without the workflow's say.
    Terminated,
    /// Ended, and a new run of the same workflow id carries on ([`RunRecord::continued_to`]).
    ContinuedAsNew,
    /// The run or execution timeout passed.
    TimedOut,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Stuck => "stuck",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Terminated => "terminated",
            RunStatus::ContinuedAsNew => "continued_as_new",
            RunStatus::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "running" => RunStatus::Running,
            "stuck" => RunStatus::Stuck,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            "terminated" => RunStatus::Terminated,
            "continued_as_new" => RunStatus::ContinuedAsNew,
            "timed_out" => RunStatus::TimedOut,
            other => return Err(StoreError::Corrupt(format!("unknown run status {other:?}"))),
        })
    }

    pub fn is_open(self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::Stuck)
    }

    /// Closed without completing: what "allow duplicate failed only" lets a new run follow.
    pub fn is_unsuccessful(self) -> bool {
        matches!(
            self,
            RunStatus::Failed | RunStatus::Cancelled | RunStatus::Terminated | RunStatus::TimedOut
        )
    }
}

/// Whether a workflow id may be used again after its earlier runs closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdReusePolicy {
    /// Any closed run may be followed by a new one.
    #[default]
    AllowDuplicate,
    /// Only when the last run did not complete (failed, cancelled, terminated, timed out).
    AllowDuplicateFailedOnly,
    /// Never: a workflow id names one run for good.
    RejectDuplicate,
}

/// What a start does when the workflow id has an open run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdConflictPolicy {
    /// Refuse with [`StoreError::WorkflowIdInUse`].
    #[default]
    Fail,
    /// Return the open run instead of starting one (and deliver the start's signal to it).
    UseExisting,
}

/// What a run waits on ([`RunStore::waiting_on`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaitingOn {
    pub activities: Vec<PendingActivity>,
    pub timers: Vec<PendingTimer>,
    pub children: Vec<PendingChild>,
}

/// An activity the workflow scheduled and has no result of yet.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingActivity {
    pub seq: u32,
    pub name: String,
    /// An attempt is running now (else the next one waits to be picked up).
    pub running: bool,
    /// Attempts started so far (0: none yet).
    pub attempt: u32,
    /// Running: when the attempt's lease runs out. Waiting: when the next
    /// attempt may start (a retry's backoff).
    pub next_at_ms: u64,
    /// Running: the host or worker that holds the attempt.
    pub owner: Option<String>,
    /// The last attempt's failure, when it was retried.
    pub last_failure: Option<Failure>,
    /// The last heartbeat's details, and when it came.
    pub heartbeat_details: Option<Value>,
    pub heartbeat_at_ms: Option<u64>,
}

/// A timer that has not fired into the workflow yet.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingTimer {
    pub seq: u32,
    pub fire_at_ms: u64,
}

/// A child workflow whose result the parent has not received yet.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingChild {
    pub seq: u32,
    pub workflow_id: String,
    pub run_id: Option<RunId>,
}

/// One row of `runs`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub run_id: RunId,
    pub workflow_id: String,
    pub workflow_type: String,
    pub module_sha256: Sha256Hex,
    pub status: RunStatus,
    /// The workflow's output once completed.
    pub output: Option<Value>,
    /// Why it failed, once failed.
    pub failure: Option<Failure>,
    /// Why it is parked, while stuck (JSON written by the workflow driver).
    pub stuck: Option<Value>,
    /// Number of events in the history (the last event's seq).
    pub last_seq: u64,
    pub last_hash: EventHash,
    pub created_at_ms: u64,
    pub closed_at_ms: Option<u64>,
    /// Set for a child workflow.
    pub parent: Option<ParentLink>,
    /// The workflow's own status line (`set-status-line`).
    pub status_line: Option<String>,
    /// Typed search attributes: a JSON object of scalars (empty object when none).
    pub search_attributes: Value,
    /// Given at start, shown by `describe`, never read by the workflow.
    pub memo: Option<Value>,
    /// A cancel request not yet delivered or honoured: its reason.
    pub cancel_requested: Option<String>,
    /// A termination asked for and not yet carried out: its reason.
    pub termination_requested: Option<String>,
    /// When this run times out (the earlier of its run and execution deadlines).
    pub deadline_ms: Option<u64>,
    /// The execution deadline, carried across continue-as-new.
    pub execution_deadline_ms: Option<u64>,
    /// Each run's own time limit, given afresh to a continued run.
    pub run_timeout_ms: Option<u64>,
    /// For a run that continued as new: the run that carries on.
    pub continued_to: Option<RunId>,
}

/// Starts a run: writes `runs` and event 1 (`workflow_started`) in one transaction.
#[derive(Clone, Debug)]
pub struct CreateRun {
    pub run_id: RunId,
    pub workflow_id: String,
    pub workflow_type: String,
    pub module_sha256: Sha256Hex,
    /// Event 1, already numbered and hashed (`seq == 1`).
    pub first_event: RecordedEvent,
    pub now_ms: u64,
    pub options: RunOptions,
}

/// What a new run carries beyond its identity. The default: no parent, no
/// limits, no memo, reuse allowed, conflicts refused, no signal.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub parent: Option<ParentLink>,
    pub memo: Option<Value>,
    /// Initial search attributes (an object; `Value::Null` for none).
    pub search_attributes: Value,
    /// The earlier of the run and execution deadlines.
    pub deadline_ms: Option<u64>,
    pub execution_deadline_ms: Option<u64>,
    pub run_timeout_ms: Option<u64>,
    pub id_reuse_policy: IdReusePolicy,
    pub id_conflict_policy: IdConflictPolicy,
    /// Signal-with-start: a signal queued for the new run, or delivered to the
    /// open one when [`IdConflictPolicy::UseExisting`] finds it.
    pub signal: Option<(String, Value)>,
}

/// What [`RunStore::create_run`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Created {
    /// The new run was created.
    New,
    /// An open run of the workflow id was found and used instead (its id).
    Existing(RunId),
}

/// A run claimed for one activation.
#[derive(Clone, Debug, PartialEq)]
pub struct RunClaim {
    pub run_id: RunId,
    /// Fencing token: strictly increases with every claim of this run.
    pub lease_token: i64,
    /// `runs.wakeups` as read at claim time; pass it back in [`ActivationCommit::observed_wakeups`].
    pub observed_wakeups: i64,
    /// `runs.last_seq` as read at claim time: with the lease token and the
    /// wake-ups, whether the run is as this host's last commit left it.
    pub last_seq: u64,
}

/// Things that became ready for a run and are not yet in its history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PendingJobs {
    /// Activity tasks in a final state (completed or failed) not yet consumed, by `resolved_at_ms` then seq.
    pub activities: Vec<ResolvedActivity>,
    /// Unconsumed signals in arrival order.
    pub signals: Vec<InboxSignal>,
    /// Timers with `fire_at_ms <= now_ms`, by fire time then seq.
    pub due_timers: Vec<DueTimer>,
    /// Children resolved and not yet consumed, by `resolved_at_ms` then seq.
    pub children: Vec<ResolvedChild>,
    /// Accepted updates not yet consumed, in arrival order.
    pub updates: Vec<InboxUpdate>,
    /// A cancel request not yet delivered.
    pub cancel: Option<CancelRequest>,
}

impl PendingJobs {
    pub fn is_empty(&self) -> bool {
        self.activities.is_empty()
            && self.signals.is_empty()
            && self.due_timers.is_empty()
            && self.children.is_empty()
            && self.updates.is_empty()
            && self.cancel.is_none()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedChild {
    pub seq: u32,
    pub outcome: Result<Value, Failure>,
    pub resolved_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InboxUpdate {
    pub update_id: String,
    pub name: String,
    pub input: Value,
    pub received_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CancelRequest {
    pub reason: String,
    pub requested_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedActivity {
    pub seq: u32,
    pub attempt: u32,
    pub outcome: Result<Value, Failure>,
    pub resolved_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InboxSignal {
    /// Inbox row id, increasing in arrival order.
    pub id: i64,
    pub name: String,
    pub input: Value,
    pub received_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DueTimer {
    pub seq: u32,
    pub fire_at_ms: u64,
}

/// A new activity task created by an activation.
#[derive(Clone, Debug, PartialEq)]
pub struct NewActivityTask {
    pub seq: u32,
    pub name: String,
    pub input: Value,
    pub options: ActivityOptions,
    /// Earliest time the first attempt may start.
    pub visible_at_ms: u64,
    /// Its first attempt, claimed by the commit that schedules the task (for
    /// a worker's poll that waits for it); `None`: scheduled, to be claimed.
    pub claimed: Option<InlineClaim>,
}

/// The first attempt of a new task, claimed as it is scheduled: attempt 1
/// under lease token 1, as [`ActivityStore::claim_activities`] would claim it.
#[derive(Clone, Debug, PartialEq)]
pub struct InlineClaim {
    /// Who holds the attempt (a worker's id).
    pub owner: String,
    /// When the attempt's lease ends (its start-to-close timeout from now).
    pub lease_expires_at_ms: u64,
}

/// A new durable timer created by an activation.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTimer {
    pub seq: u32,
    pub fire_at_ms: u64,
}

/// A child workflow started by an activation: its `children` row and its run.
#[derive(Clone, Debug)]
pub struct NewChild {
    pub seq: u32,
    pub parent_close_policy: ParentClosePolicy,
    /// The child's run; `parent` is set. If its workflow id has an open run,
    /// the child is not created and resolves at once as failed
    /// (`WorkflowIdInUse`), waking the parent.
    pub run: CreateRun,
}

/// How the run row changes when an activation (or the host's verdict) commits.
/// Every outcome but `Running` closes the run: it resolves the parent's
/// `children` row (waking the parent) and applies each open child's
/// parent-close policy. Closed runs keep a [`Failure`] in `failure` for every
/// unsuccessful outcome: `Cancelled` (the message), `Terminated` (the reason),
/// `TimedOut` ("the run timeout passed" / "the execution timeout passed").
#[derive(Clone, Debug, Default)]
pub enum RunOutcome {
    /// Still running, waiting for jobs.
    #[default]
    Running,
    Completed {
        output: Value,
    },
    Failed {
        failure: Failure,
    },
    Cancelled {
        message: String,
    },
    /// Closes this run and creates `next` (same workflow id) in the same
    /// transaction. Unconsumed signals move to it; the parent's `children` row
    /// follows it.
    ContinuedAsNew {
        next: Box<CreateRun>,
    },
    Terminated {
        reason: String,
    },
    TimedOut {
        timeout: String,
    },
}

impl RunOutcome {
    /// What a run closed with this outcome holds: its output, or why it
    /// failed (a cancel, a termination and a timeout are failures of their
    /// own type). Neither for a run still running or continued as new.
    pub fn result(&self) -> (Option<&Value>, Option<Failure>) {
        match self {
            RunOutcome::Running | RunOutcome::ContinuedAsNew { .. } => (None, None),
            RunOutcome::Completed { output } => (Some(output), None),
            RunOutcome::Failed { failure } => (None, Some(failure.clone())),
            RunOutcome::Cancelled { message } => {
                (None, Some(Failure::new("Cancelled", message.clone())))
            }
            RunOutcome::Terminated { reason } => {
                (None, Some(Failure::new("Terminated", reason.clone())))
            }
            RunOutcome::TimedOut { timeout } => (
                None,
                Some(Failure::new(
                    "TimedOut",
                    format!("the {timeout} timeout passed"),
                )),
            ),
        }
    }

    /// The status a run has after a commit with this outcome.
    pub fn status(&self) -> RunStatus {
        match self {
            RunOutcome::Running => RunStatus::Running,
            RunOutcome::Completed { .. } => RunStatus::Completed,
            RunOutcome::Failed { .. } => RunStatus::Failed,
            RunOutcome::Cancelled { .. } => RunStatus::Cancelled,
            RunOutcome::ContinuedAsNew { .. } => RunStatus::ContinuedAsNew,
            RunOutcome::Terminated { .. } => RunStatus::Terminated,
            RunOutcome::TimedOut { .. } => RunStatus::TimedOut,
        }
    }
}

/// Everything one activation writes, applied in one transaction.
///
/// The commit succeeds only if `runs.lease_token == lease_token` and
/// `runs.last_seq + 1 == events[0].seq` (the conditional append); otherwise it
/// writes nothing and returns [`StoreError::Conflict`].
#[derive(Clone, Debug, Default)]
pub struct ActivationCommit {
    pub run_id: RunId,
    pub lease_token: i64,
    pub observed_wakeups: i64,
    /// Numbered and hashed, continuing the stored chain. Never empty.
    pub events: Vec<RecordedEvent>,
    /// Activity tasks (by seq) whose resolution is now in the history: marked consumed.
    pub consumed_activities: Vec<u32>,
    /// Inbox signal ids now in the history: marked consumed.
    pub consumed_signals: Vec<i64>,
    /// Timers (by seq) that fired or were cancelled: removed.
    pub removed_timers: Vec<u32>,
    pub new_activities: Vec<NewActivityTask>,
    pub new_timers: Vec<NewTimer>,
    /// Activities the guest asked to cancel: an unresolved one resolves at once
    /// as failed (`Cancelled`) and wakes the run; a running attempt sees it at
    /// its next heartbeat.
    pub cancelled_activities: Vec<u32>,
    /// Children (by seq) whose resolution is now in the history: marked consumed.
    pub consumed_children: Vec<u32>,
    pub new_children: Vec<NewChild>,
    /// Children (by seq) the guest asked to cancel: each gets a cancel request.
    pub cancelled_children: Vec<u32>,
    /// Update ids now in the history: marked consumed.
    pub consumed_updates: Vec<String>,
    /// Updates the guest answered: their outcome is stored for the caller.
    pub completed_updates: Vec<(String, Result<Value, Failure>)>,
    /// The pending cancel request is now in the history.
    pub consumed_cancel: bool,
    /// The status line, when the activation set one.
    pub status_line: Option<String>,
    /// The whole merged search attributes, when the activation changed them.
    pub search_attributes: Option<Value>,
    pub outcome: RunOutcome,
    pub now_ms: u64,
}

/// An activity task claimed for one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivityTask {
    pub run_id: RunId,
    pub seq: u32,
    pub name: String,
    pub input: Value,
    pub options: ActivityOptions,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Fencing token of this attempt's lease.
    pub lease_token: i64,
    /// The details of the last heartbeat an earlier attempt recorded.
    pub heartbeat_details: Option<Value>,
    /// The schedule-to-close deadline: the activity fails if it has not
    /// resolved by then, and no retry is scheduled at or after it.
    pub close_deadline_ms: Option<u64>,
}

/// An attempt that ended, as its runner reports it: see [`RunStore::finish_and_commit`].
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedAttempt {
    pub run_id: RunId,
    pub seq: u32,
    /// The attempt's lease token: a report of an attempt that is no longer
    /// current records nothing.
    pub lease_token: i64,
    /// The attempt's number (1 for the first), as its result's event records it.
    pub attempt: u32,
    pub outcome: AttemptOutcome,
    pub now_ms: u64,
}

/// Claims one given task for an attempt: see [`ActivityStore::claim_activity`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimActivity {
    pub run_id: RunId,
    pub seq: u32,
    pub host_id: String,
    pub now_ms: u64,
    /// The lease when the task sets no start-to-close timeout.
    pub default_lease_ms: u64,
}

/// A heartbeat of a running attempt: see [`ActivityStore::heartbeat`].
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    pub run_id: RunId,
    pub seq: u32,
    /// The attempt's lease token: a heartbeat of an attempt that is no longer
    /// current records nothing.
    pub lease_token: i64,
    /// Progress to hand to the next attempt; `None` keeps what was recorded.
    pub details: Option<Value>,
    pub now_ms: u64,
}

/// An attempt that failed, and what decides whether it is retried.
#[derive(Clone, Debug, PartialEq)]
pub struct FailedAttempt<'a> {
    pub policy: &'a RetryPolicy,
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    pub failure: Failure,
    /// The error said so: no retry whatever the policy.
    pub non_retryable: bool,
    /// The delay the activity chose for its next attempt, instead of the policy's backoff.
    pub retry_after_ms: Option<u64>,
    pub now_ms: u64,
    /// The schedule-to-close deadline: a retry due at or after it is not scheduled.
    pub close_deadline_ms: Option<u64>,
}

impl FailedAttempt<'_> {
    /// Retried after the policy's delay (or the activity's own), unless the
    /// error is not retryable, the attempts are used up, or the retry would
    /// come too late for the schedule-to-close deadline: then the activity
    /// fails for good with this attempt's failure.
    pub fn outcome(self) -> AttemptOutcome {
        if self.non_retryable {
            return AttemptOutcome::Failed {
                failure: self.failure,
            };
        }
        let Some(policy_delay) = self
            .policy
            .delay_before(self.attempt.saturating_add(1), &self.failure.error_type)
        else {
            return AttemptOutcome::Failed {
                failure: self.failure,
            };
        };
        let retry_at_ms = self
            .now_ms
            .saturating_add(self.retry_after_ms.unwrap_or(policy_delay));
        match self.close_deadline_ms {
            Some(deadline) if retry_at_ms >= deadline => AttemptOutcome::Failed {
                failure: self.failure,
            },
            _ => AttemptOutcome::Retry {
                failure: self.failure,
                retry_at_ms,
            },
        }
    }
}

/// How one attempt of an activity ended.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptOutcome {
    /// Final success: the run is woken.
    Completed { output: Value },
    /// Failed, and the policy allows another attempt at `retry_at_ms`.
    Retry { failure: Failure, retry_at_ms: u64 },
    /// Failed for good: the run is woken.
    Failed { failure: Failure },
}

impl AttemptOutcome {
    /// `completed`, `retry` or `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Completed { .. } => "completed",
            AttemptOutcome::Retry { .. } => "retry",
            AttemptOutcome::Failed { .. } => "failed",
        }
    }
}

/// Appends and reads histories.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// The whole history of a run, in order. Unknown run: [`StoreError::NotFound`].
    async fn history(&self, run_id: &RunId) -> StoreResult<History>;
    /// Events with `seq > after`, in order (for a warm instance catching up).
    async fn events_after(&self, run_id: &RunId, after: u64) -> StoreResult<Vec<RecordedEvent>>;
}

/// Runs: creating, finding, claiming and committing activations.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates a run with its first event; it is runnable at once. An open run
    /// with the same workflow id: [`StoreError::WorkflowIdInUse`], or that run
    /// under [`IdConflictPolicy::UseExisting`]. A closed one that the reuse
    /// policy forbids following: [`StoreError::WorkflowIdReused`].
    async fn create_run(&self, request: CreateRun) -> StoreResult<Created>;
    /// One page of the runs matching a filter, newest first (by creation
    /// time, then run id, both descending): at most [`ListFilter::limit`]
    /// runs after [`ListFilter::after`], and where the next page starts.
    async fn list_runs(&self, filter: &ListFilter) -> StoreResult<RunPage>;
    async fn run(&self, run_id: &RunId) -> StoreResult<RunRecord>;
    /// Those of `run_ids` that exist and are no longer `running` (closed,
    /// or parked as stuck): what a host's callers waiting on runs look up
    /// together, in one statement, instead of each reading its run.
    async fn stopped_runs(&self, run_ids: &[RunId]) -> StoreResult<Vec<RunId>>;
    /// The open run of a workflow id, else the most recently created one.
    async fn run_by_workflow_id(&self, workflow_id: &str) -> StoreResult<RunRecord>;
    /// Claims up to `limit` runs that are `running` and need an activation
    /// (`wakeups > handled_wakeups`, a timer with `fire_at_ms <= now_ms`, or
    /// `deadline_ms <= now_ms`) and
    /// whose lease is free or expired (a run this host is activating is not claimed again).
    /// Sets owner, expiry `now_ms + lease_ms`, and increments the token.
    async fn claim_runs(
        &self,
        host_id: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> StoreResult<Vec<RunClaim>>;
    /// The jobs waiting for a run at `now_ms`.
    async fn pending_jobs(&self, run_id: &RunId, now_ms: u64) -> StoreResult<PendingJobs>;
    /// What a run waits on, for `describe`: its unresolved activities (with
    /// their attempts, last failures and heartbeats), its timers and its
    /// unresolved children, each in sequence order. Unknown run: empty.
    async fn waiting_on(&self, run_id: &RunId) -> StoreResult<WaitingOn>;
    /// Applies an activation (see [`ActivationCommit`]); releases the lease and
    /// sets `handled_wakeups = observed_wakeups`.
    async fn commit_activation(&self, commit: ActivationCommit) -> StoreResult<()>;
    /// Creates a run with its first activation already applied, in one
    /// transaction: what [`create_run`](Self::create_run) of `create` and
    /// then [`commit_activation`](Self::commit_activation) of `first` would
    /// write, with the new run's first lease token (0) and wake-up (1) as the
    /// claim, since no other host can see the run before it commits. Only for
    /// a workflow id that is free: otherwise nothing is written and the
    /// answer is `false` (call `create_run` for the refusal or the open run).
    /// `first` must leave the run running and touch no other run.
    async fn start_run(&self, create: CreateRun, first: ActivationCommit) -> StoreResult<bool>;
    /// Records an attempt's final result, as
    /// [`ActivityStore::finish_attempt`] does, and in the same transaction
    /// applies `next`: the activation that result wakes, run ahead on a warm
    /// instance, with the claim of the run's last commit (its lease token,
    /// and `observed_wakeups` one past the wake-ups it had handled). `next`
    /// applies only if the run is still as it was prepared against: running,
    /// not claimed since, its history where it was, nothing else waiting for
    /// it, and the result is of attempt `finished.attempt`. Returns whether
    /// it applied; when not, the result alone is recorded (and wakes the run,
    /// which is activated the ordinary way). An attempt that is no longer
    /// current: [`StoreError::Conflict`], nothing written.
    async fn finish_and_commit(
        &self,
        finished: FinishedAttempt,
        next: ActivationCommit,
    ) -> StoreResult<bool>;
    /// Releases a lease without writing (the activation found nothing to do or failed).
    async fn release_run(&self, run_id: &RunId, lease_token: i64) -> StoreResult<()>;
    /// Parks a run as `stuck` with a reason, if the lease still holds; releases it.
    async fn park_run(&self, run_id: &RunId, lease_token: i64, reason: Value) -> StoreResult<()>;
    /// The earliest `fire_at_ms` among all timers of running runs, or
    /// `deadline_ms` of a running run, to know when to wake.
    async fn next_timer_at(&self) -> StoreResult<Option<u64>>;
    /// Takes over every lease held by `host_id` (a host restarting under the same id):
    /// the leases are freed and their tokens incremented, so the dead process is fenced.
    async fn reclaim_leases(&self, host_id: &str) -> StoreResult<u64>;
    /// Something that can make progress at `now_ms` without time moving on (a
    /// run to activate or being activated, a due timer or deadline, an
    /// activity to run or running), described for a person; `None` when
    /// everything waits for time or for the outside world. The test kit's
    /// notion of "settled".
    async fn pending_work(&self, now_ms: u64) -> StoreResult<Option<String>>;
    /// A feed of work that other processes made ready, so that idle loops
    /// wake without polling fast. It starts with [`Change::Resumed`] once
    /// listening and repeats it after every reconnection (changes may have been
    /// missed in between); it ends when the receiver is dropped. `None` (the
    /// default, and SQLite's answer): the store has no such feed, its one host
    /// wakes its own loops.
    fn changes(&self) -> Option<Changes> {
        None
    }
}

/// What a store's change feed ([`RunStore::changes`]) reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A run became runnable: created, or woken by a signal, an activity's
    /// result, a child or a cancel request.
    Runs,
    /// A timer started: the earliest due timer may have moved earlier.
    Timers,
    /// An activity task became claimable: scheduled, or a retry scheduled.
    Activities,
    /// An activity deadline was set: the earliest timeout may have moved earlier.
    Timeouts,
    /// The feed (re)connected: anything may have changed meanwhile.
    Resumed,
}

/// The receiving end of a change feed.
pub type Changes = tokio::sync::mpsc::UnboundedReceiver<Change>;

/// Activity tasks: claiming attempts and recording how they ended.
#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// Claims up to `limit` tasks whose name is in `names`, that are scheduled
    /// with `visible_at_ms <= now_ms` or running with an expired lease (an attempt
    /// lost with its host). Increments `attempt` and the token; the lease runs
    /// to `now_ms + lease_ms` where `lease_ms` comes from the task's own
    /// start-to-close timeout, or `default_lease_ms` when that is 0. A task
    /// whose schedule-to-start or schedule-to-close deadline has passed is not
    /// claimed: it is [timed out](Self::time_out_activities). A task with a
    /// heartbeat timeout must heartbeat by `now_ms` plus that timeout.
    async fn claim_activities(
        &self,
        host_id: &str,
        names: &[String],
        now_ms: u64,
        default_lease_ms: u64,
        limit: u32,
    ) -> StoreResult<Vec<ActivityTask>>;
    /// Records how an attempt ended, if its lease token still holds
    /// ([`StoreError::Conflict`] otherwise). Final outcomes set `resolved_at_ms`
    /// and increment the run's `wakeups`.
    async fn finish_attempt(
        &self,
        run_id: &RunId,
        seq: u32,
        lease_token: i64,
        outcome: AttemptOutcome,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// The earliest time a scheduled task becomes visible or a running one's lease expires.
    async fn next_activity_at(&self, names: &[String]) -> StoreResult<Option<u64>>;
    /// Claims one task for an attempt, like [`claim_activities`](Self::claim_activities)
    /// but by key: a local activity, run by the host that ran the workflow right
    /// after the activation. The task is claimed if it is scheduled and either
    /// waits for its first attempt (whatever its `visible_at_ms`: a local task
    /// is hidden from ordinary claims for a while) or is visible; otherwise
    /// (another host took it, it resolved, it timed out) `None`.
    async fn claim_activity(&self, claim: ClaimActivity) -> StoreResult<Option<ActivityTask>>;
    /// Records a heartbeat of a running attempt: its time and, if given, its
    /// details (kept for the next attempt). It moves the heartbeat deadline to
    /// `now_ms` plus the heartbeat timeout and extends nothing else. An attempt
    /// that is no longer current — the workflow cancelled the activity, it
    /// timed out, or another attempt holds the lease — gets
    /// [`StoreError::Conflict`] saying which, and should stop.
    async fn heartbeat(&self, heartbeat: Heartbeat) -> StoreResult<()>;
    /// Enforces the activity timeouts at `now_ms`, on every task whose
    /// deadline has passed: past schedule-to-close, the activity fails with
    /// `ScheduleToCloseTimeout` (a running attempt is abandoned: its finish is
    /// a conflict); a scheduled attempt past schedule-to-start fails it with
    /// `ScheduleToStartTimeout`, not retried; a running attempt past its
    /// heartbeat deadline fails with `HeartbeatTimeout` and is retried by the
    /// policy. Final failures wake the run. Returns how many tasks it changed;
    /// at most a batch at a time, so call it again while it returns a full one.
    async fn time_out_activities(&self, now_ms: u64) -> StoreResult<u64>;
    /// The earliest deadline [`time_out_activities`](Self::time_out_activities) acts on.
    async fn next_activity_timeout_at(&self) -> StoreResult<Option<u64>>;
    /// The attempt `lease_token` names, while it is the task's current
    /// attempt and running; `None` once it finished, timed out, was
    /// cancelled or another attempt took over. A remote worker's report is
    /// judged against it: its retry policy and deadline are the stored ones.
    async fn current_attempt(
        &self,
        run_id: &RunId,
        seq: u32,
        lease_token: i64,
    ) -> StoreResult<Option<ActivityTask>>;
}

/// Tasks [`ActivityStore::time_out_activities`] handles in one call.
pub const TIMEOUT_BATCH: u64 = 100;

/// The most runs one page of [`RunStore::list_runs`] holds: a larger limit gets this many.
pub const MAX_LIST_PAGE: u32 = 1_000;
/// The runs a page holds when the limit is 0.
pub const DEFAULT_LIST_PAGE: u32 = 100;

/// Which runs [`RunStore::list_runs`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListFilter {
    pub workflow_type: Option<String>,
    pub status: Option<RunStatus>,
    pub workflow_id: Option<String>,
    /// Only runs pinned to this module (which runs use a deployed module).
    pub module_sha256: Option<Sha256Hex>,
    /// Every key must be present with an equal JSON value.
    pub search_attributes: Vec<(String, Value)>,
    /// Newest first; at most this many (0 means [`DEFAULT_LIST_PAGE`], more
    /// than [`MAX_LIST_PAGE`] means that many).
    pub limit: u32,
    /// Only runs after this one in the list's order: the previous page's
    /// [`RunPage::next`]. Keyset paging, so runs created meanwhile never
    /// make a page repeat or skip an older run.
    pub after: Option<ListCursor>,
}

/// A place in the list of runs: its order's key, creation time then run id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at_ms: u64,
    pub run_id: RunId,
}

impl ListCursor {
    /// The place of `run` (the last of a page: the next page starts after it).
    pub fn of(run: &RunRecord) -> Self {
        Self {
            created_at_ms: run.created_at_ms,
            run_id: run.run_id.clone(),
        }
    }
}

/// A page of [`RunStore::list_runs`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunRecord>,
    /// Where the next page starts (its [`ListFilter::after`]); `None` when
    /// no run matched after this page's last.
    pub next: Option<ListCursor>,
}

/// Messages to a run from outside: signals, updates, cancel and termination requests.
#[async_trait]
pub trait SignalStore: Send + Sync {
    /// Queues a signal for an open run and increments its `wakeups`.
    /// A closed run: [`StoreError::NotFound`] naming it. A run holding
    /// `max_pending` signals not yet taken: [`StoreError::Full`] (senders
    /// racing may each pass the check: the bound holds to within their number).
    async fn send_signal(
        &self,
        run_id: &RunId,
        name: &str,
        input: Value,
        now_ms: u64,
        max_pending: u64,
    ) -> StoreResult<i64>;
    /// Queues an update (already validated) for an open run (running or
    /// stuck) and increments its `wakeups`. The same `update_id` twice is a
    /// no-op. A closed run: [`StoreError::NotFound`] naming it. A run with
    /// `max_in_flight` updates not yet answered: [`StoreError::Full`].
    async fn send_update(
        &self,
        run_id: &RunId,
        update_id: &str,
        name: &str,
        input: Value,
        now_ms: u64,
        max_in_flight: u64,
    ) -> StoreResult<()>;
    /// An update's outcome once the workflow answered it (`None` while it has not).
    /// A run that closed without answering it: `Err(Failure "UpdateNotCompleted")`.
    async fn update_outcome(
        &self,
        run_id: &RunId,
        update_id: &str,
    ) -> StoreResult<Option<Result<Value, Failure>>>;
    /// Asks an open run to cancel (the first reason wins) and wakes it.
    async fn request_cancel(&self, run_id: &RunId, reason: &str, now_ms: u64) -> StoreResult<()>;
    /// Asks for an open run (running or stuck) to be terminated and wakes it;
    /// the next claim carries it out. A stuck run becomes running so that it is claimed.
    async fn request_termination(
        &self,
        run_id: &RunId,
        reason: &str,
        now_ms: u64,
    ) -> StoreResult<()>;
}

/// A deployed module.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleRecord {
    pub sha256: Sha256Hex,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub created_at_ms: u64,
}

/// Deployed modules, keyed by sha256.
#[async_trait]
pub trait ModuleStore: Send + Sync {
    /// Stores module bytes; the same bytes twice is a no-op that returns the first record.
    async fn put_module(
        &self,
        name: &str,
        version: &str,
        bytes: &[u8],
        now_ms: u64,
    ) -> StoreResult<ModuleRecord>;
    async fn module_bytes(&self, sha256: &Sha256Hex) -> StoreResult<Vec<u8>>;
    async fn modules(&self) -> StoreResult<Vec<ModuleRecord>>;
}

/// Every storage trait at once: what a host needs.
pub trait Store:
    HistoryStore
    + RunStore
    + ActivityStore
    + SignalStore
    + ModuleStore
    + VersionStore
    + SealStore
    + SecretStore
{
}
impl<
    T: HistoryStore
        + RunStore
        + ActivityStore
        + SignalStore
        + ModuleStore
        + VersionStore
        + SealStore
        + SecretStore,
> Store for T
{
}

/// Opens a store from a URL: `postgres://…`, `sqlite://PATH` or a bare file path (SQLite).
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Arc::new(SqliteStore::open(path).await?))
    }
}
