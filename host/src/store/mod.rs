//! Storage: the event log and the indexes over it, behind narrow traits.
//!
//! The log ([`HistoryStore`]) is the truth; the other tables are indexes that let
//! work be found quickly: runs that need an activation ([`RunStore`]), activity
//! tasks ([`ActivityStore`]), the signal inbox ([`SignalStore`]) and deployed
//! modules ([`ModuleStore`]). [`Store`] is all of them together.
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
mod postgres;
mod rows;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::model::{ActivityOptions, EventHash, Failure, History, RecordedEvent, RunId, Sha256Hex};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

/// What can go wrong in storage, grouped by what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; retry later.
    #[error("database unavailable: {0}; it is retried, check that the database is up")]
    Unavailable(String),
    /// The history moved on or the lease was lost: another host owns the run now.
    #[error("run {run_id}: {reason}; this host's work on it is discarded and the owner carries on")]
    Conflict { run_id: RunId, reason: String },
    /// A workflow id already has an open run.
    #[error(
        "workflow id {workflow_id:?} already has an open run ({run_id}); pick another id or wait for that run to close"
    )]
    WorkflowIdInUse { workflow_id: String, run_id: RunId },
    #[error("{what} not found")]
    NotFound { what: String },
    /// Stored data that cannot be read back (a corrupted row, a bad migration).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
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
            other => StoreError::Unavailable(other.to_string()),
        }
    }
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
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Stuck => "stuck",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "running" => RunStatus::Running,
            "stuck" => RunStatus::Stuck,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            other => return Err(StoreError::Corrupt(format!("unknown run status {other:?}"))),
        })
    }

    pub fn is_open(self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::Stuck)
    }
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
}

/// A run claimed for one activation.
#[derive(Clone, Debug, PartialEq)]
pub struct RunClaim {
    pub run_id: RunId,
    /// Fencing token: strictly increases with every claim of this run.
    pub lease_token: i64,
    /// `runs.wakeups` as read at claim time; pass it back in [`ActivationCommit::observed_wakeups`].
    pub observed_wakeups: i64,
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
}

impl PendingJobs {
    pub fn is_empty(&self) -> bool {
        self.activities.is_empty() && self.signals.is_empty() && self.due_timers.is_empty()
    }
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
}

/// A new durable timer created by an activation.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTimer {
    pub seq: u32,
    pub fire_at_ms: u64,
}

/// How the run row changes when an activation commits.
#[derive(Clone, Debug, PartialEq)]
pub enum RunOutcome {
    /// Still running, waiting for jobs.
    Running,
    Completed {
        output: Value,
    },
    Failed {
        failure: Failure,
    },
}

/// Everything one activation writes, applied in one transaction.
///
/// The commit succeeds only if `runs.lease_token == lease_token` and
/// `runs.last_seq + 1 == events[0].seq` (the conditional append); otherwise it
/// writes nothing and returns [`StoreError::Conflict`].
#[derive(Clone, Debug)]
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
    /// Creates a run with its first event; it is runnable at once.
    /// An open run with the same workflow id: [`StoreError::WorkflowIdInUse`].
    async fn create_run(&self, request: CreateRun) -> StoreResult<()>;
    async fn run(&self, run_id: &RunId) -> StoreResult<RunRecord>;
    /// The open run of a workflow id, else the most recently created one.
    async fn run_by_workflow_id(&self, workflow_id: &str) -> StoreResult<RunRecord>;
    /// Claims up to `limit` runs that are `running` and need an activation
    /// (`wakeups > handled_wakeups`, or a timer with `fire_at_ms <= now_ms`) and
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
    /// Applies an activation (see [`ActivationCommit`]); releases the lease and
    /// sets `handled_wakeups = observed_wakeups`.
    async fn commit_activation(&self, commit: ActivationCommit) -> StoreResult<()>;
    /// Releases a lease without writing (the activation found nothing to do or failed).
    async fn release_run(&self, run_id: &RunId, lease_token: i64) -> StoreResult<()>;
    /// Parks a run as `stuck` with a reason, if the lease still holds; releases it.
    async fn park_run(&self, run_id: &RunId, lease_token: i64, reason: Value) -> StoreResult<()>;
    /// The earliest `fire_at_ms` among all timers of running runs, to know when to wake.
    async fn next_timer_at(&self) -> StoreResult<Option<u64>>;
    /// Takes over every lease held by `host_id` (a host restarting under the same id):
    /// the leases are freed and their tokens incremented, so the dead process is fenced.
    async fn reclaim_leases(&self, host_id: &str) -> StoreResult<u64>;
}

/// Activity tasks: claiming attempts and recording how they ended.
#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// Claims up to `limit` tasks whose name is in `names`, that are scheduled
    /// with `visible_at_ms <= now_ms` or running with an expired lease (an attempt
    /// lost with its host). Increments `attempt` and the token; the lease runs
    /// to `now_ms + lease_ms` where `lease_ms` comes from the task's own
    /// start-to-close timeout, or `default_lease_ms` when that is 0.
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
}

/// The signal inbox.
#[async_trait]
pub trait SignalStore: Send + Sync {
    /// Queues a signal for an open run and increments its `wakeups`.
    /// A closed run: [`StoreError::NotFound`] naming it.
    async fn send_signal(
        &self,
        run_id: &RunId,
        name: &str,
        input: Value,
        now_ms: u64,
    ) -> StoreResult<i64>;
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
pub trait Store: HistoryStore + RunStore + ActivityStore + SignalStore + ModuleStore {}
impl<T: HistoryStore + RunStore + ActivityStore + SignalStore + ModuleStore> Store for T {}

/// Opens a store from a URL: `postgres://…`, `sqlite://PATH` or a bare file path (SQLite).
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Arc::new(SqliteStore::open(path).await?))
    }
}
