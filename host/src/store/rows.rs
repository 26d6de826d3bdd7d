//! What both backends share: rows as read back from SQL and their conversion to
//! the model, the column form of an [`ActivationCommit`], and the wording of
//! conflicts. The SQL itself lives with each backend, but for the few
//! statements both run as they are.

use super::{
    ActivationCommit, ActivityTask, AttemptOutcome, CancelRequest, DueTimer, InboxSignal,
    InboxUpdate, ModuleRecord, PendingActivity, PendingChild, PendingJobs, PendingTimer,
    ResolvedActivity, ResolvedChild, RunClaim, RunRecord, RunStatus, StoreError, StoreResult,
    WaitingOn,
};
use crate::model::{
    ActivityOptions, Event, EventHash, Failure, ParentLink, RecordedEvent, RunId, Sha256Hex,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Display;

mod lifecycle;
mod seals;
mod secrets;
mod versions;

pub(super) use lifecycle::*;
pub(super) use seals::*;
pub(super) use secrets::*;
pub(super) use versions::*;

/// A `u64` as stored in a signed 64-bit column. Values past `i64::MAX` (about
/// 292 million years of milliseconds) saturate rather than wrap.
pub(super) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored integer that must not be negative.
pub(super) fn uint(v: i64, what: impl Display) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({v})")))
}

/// A stored sequence number that must fit the model's `u32`.
pub(super) fn seq32(v: i64, what: impl Display) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is out of range ({v})")))
}

/// A claimed run as both backends' claims return it: run id, lease token,
/// wake-ups, last event number.
pub(super) type ClaimRow = (String, i64, i64, i64);

pub(super) fn run_claims(rows: Vec<ClaimRow>) -> StoreResult<Vec<RunClaim>> {
    rows.into_iter()
        .map(|(run_id, lease_token, observed_wakeups, last_seq)| {
            let last_seq = uint(last_seq, format!("run {run_id}'s last_seq"))?;
            Ok(RunClaim {
                run_id: RunId(run_id),
                lease_token,
                observed_wakeups,
                last_seq,
            })
        })
        .collect()
}

pub(super) fn to_json<T: Serialize>(value: &T, what: impl Display) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("{what} cannot be written as JSON: {e}")))
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str, what: impl Display) -> StoreResult<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("{what} is not valid JSON: {e}")))
}

pub(super) fn hash(hex: &str, what: impl Display) -> StoreResult<EventHash> {
    EventHash::from_hex(hex).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// `SELECT` of the columns of `runs` that make a [`RunRow`], followed by `$tail`: a literal, so
/// the query stays a `&'static str`.
macro_rules! select_run {
    ($tail:literal) => {
        concat!(
            "SELECT run_id, workflow_id, workflow_type, module_sha256, status, output, failure, stuck, \
             last_seq, last_hash, created_at_ms, closed_at_ms, parent_workflow_id, parent_run_id, \
             parent_seq, status_line, search_attributes, memo, cancel_reason, termination_reason, \
             deadline_ms, execution_deadline_ms, run_timeout_ms, continued_to FROM runs ",
            $tail
        )
    };
}
pub(super) use select_run;

#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
    run_id: String,
    workflow_id: String,
    workflow_type: String,
    module_sha256: String,
    status: String,
    output: Option<String>,
    failure: Option<String>,
    stuck: Option<String>,
    last_seq: i64,
    last_hash: String,
    created_at_ms: i64,
    closed_at_ms: Option<i64>,
    parent_workflow_id: Option<String>,
    parent_run_id: Option<String>,
    parent_seq: Option<i64>,
    status_line: Option<String>,
    search_attributes: String,
    memo: Option<String>,
    cancel_reason: Option<String>,
    termination_reason: Option<String>,
    deadline_ms: Option<i64>,
    execution_deadline_ms: Option<i64>,
    run_timeout_ms: Option<i64>,
    continued_to: Option<String>,
}

impl RunRow {
    pub(super) fn into_record(self) -> StoreResult<RunRecord> {
        let run = &self.run_id;
        let status = RunStatus::parse(&self.status)?;
        let parent = match (self.parent_workflow_id, self.parent_run_id, self.parent_seq) {
            (Some(workflow_id), Some(run_id), Some(seq)) => Some(ParentLink {
                workflow_id,
                run_id: RunId(run_id),
                seq: seq32(seq, format_args!("run {run}: parent_seq"))?,
            }),
            (None, None, None) => None,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "run {run}: its parent link is partly missing (parent_workflow_id, parent_run_id and parent_seq go together)"
                )));
            }
        };
        let millis = |v: Option<i64>, what: &str| {
            v.map(|v| uint(v, format_args!("run {run}: {what}")))
                .transpose()
        };
        Ok(RunRecord {
            parent,
            status_line: self.status_line,
            search_attributes: from_json(
                &self.search_attributes,
                format_args!("run {run}: search attributes"),
            )?,
            memo: self
                .memo
                .as_deref()
                .map(|t| from_json(t, format_args!("run {run}: memo")))
                .transpose()?,
            // Requests matter only while the run is open: once closed, they were carried out or moot.
            cancel_requested: self.cancel_reason.filter(|_| status.is_open()),
            termination_requested: self.termination_reason.filter(|_| status.is_open()),
            deadline_ms: millis(self.deadline_ms, "deadline_ms")?,
            execution_deadline_ms: millis(self.execution_deadline_ms, "execution_deadline_ms")?,
            run_timeout_ms: millis(self.run_timeout_ms, "run_timeout_ms")?,
            continued_to: self.continued_to.map(RunId),
            status,
            output: self
                .output
                .as_deref()
                .map(|t| from_json(t, format_args!("run {run}: output")))
                .transpose()?,
            failure: self
                .failure
                .as_deref()
                .map(|t| from_json(t, format_args!("run {run}: failure")))
                .transpose()?,
            stuck: self
                .stuck
                .as_deref()
                .map(|t| from_json(t, format_args!("run {run}: stuck reason")))
                .transpose()?,
            last_seq: uint(self.last_seq, format_args!("run {run}: last_seq"))?,
            last_hash: hash(&self.last_hash, format_args!("run {run}: last_hash"))?,
            created_at_ms: uint(self.created_at_ms, format_args!("run {run}: created_at_ms"))?,
            closed_at_ms: self
                .closed_at_ms
                .map(|v| uint(v, format_args!("run {run}: closed_at_ms")))
                .transpose()?,
            workflow_id: self.workflow_id,
            workflow_type: self.workflow_type,
            module_sha256: Sha256Hex(self.module_sha256),
            run_id: RunId(self.run_id),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    seq: i64,
    kind: String,
    payload: String,
    recorded_at_ms: i64,
    hash: String,
}

impl EventRow {
    pub(super) fn into_recorded(self, run_id: &RunId) -> StoreResult<RecordedEvent> {
        let seq = self.seq;
        let event = Event::from_parts(&self.kind, &self.payload).map_err(|e| {
            StoreError::Corrupt(format!(
                "run {run_id}: event {seq} ({}) cannot be read: {e}",
                self.kind
            ))
        })?;
        Ok(RecordedEvent {
            seq: uint(seq, format_args!("run {run_id}: event seq"))?,
            recorded_at_ms: uint(
                self.recorded_at_ms,
                format_args!("run {run_id}: event {seq} recorded_at_ms"),
            )?,
            event,
            hash: hash(&self.hash, format_args!("run {run_id}: event {seq} hash"))?,
        })
    }
}

/// A claimed activity task, as returned by the claim's `RETURNING` clause.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimedTaskRow {
    run_id: String,
    seq: i64,
    name: String,
    input: String,
    options: String,
    attempt: i64,
    lease_token: i64,
    heartbeat_details: Option<String>,
    close_deadline_ms: Option<i64>,
}

impl ClaimedTaskRow {
    pub(super) fn into_task(self) -> StoreResult<ActivityTask> {
        let what = format_args!("run {}: activity {}", self.run_id, self.seq);
        Ok(ActivityTask {
            heartbeat_details: self
                .heartbeat_details
                .as_deref()
                .map(|t| from_json(t, format_args!("{what} heartbeat details")))
                .transpose()?,
            close_deadline_ms: self
                .close_deadline_ms
                .map(|v| uint(v, format_args!("{what} close_deadline_ms")))
                .transpose()?,
            seq: seq32(self.seq, what)?,
            name: self.name,
            input: from_json(&self.input, format_args!("{what} input"))?,
            options: from_json::<ActivityOptions>(&self.options, format_args!("{what} options"))?,
            attempt: u32::try_from(self.attempt).map_err(|_| {
                StoreError::Corrupt(format!("{what} attempt is out of range ({})", self.attempt))
            })?,
            lease_token: self.lease_token,
            run_id: RunId(self.run_id),
        })
    }
}

/// Decodes claimed task rows one at a time: the tasks that read back, and
/// for each row that does not, its run, its seq and why.
pub(super) fn decode_claimed(rows: Vec<ClaimedTaskRow>) -> (Vec<ActivityTask>, Vec<Unreadable>) {
    let mut tasks = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for row in rows {
        let (run_id, seq) = (row.run_id.clone(), row.seq);
        match row.into_task() {
            Ok(task) => tasks.push(task),
            Err(error) => unreadable.push(Unreadable { run_id, seq, error }),
        }
    }
    (tasks, unreadable)
}

/// A claimed task row that does not read back.
pub(super) struct Unreadable {
    pub(super) run_id: String,
    pub(super) seq: i64,
    pub(super) error: StoreError,
}

impl Unreadable {
    /// Why its run is parked: the task is not run, and the others claimed
    /// with it are not held back.
    pub(super) fn reason(&self) -> String {
        serde_json::json!({
            "kind": "unreadable_task",
            "seq": self.seq,
            "message": format!(
                "activity task {} of this run cannot be read back from the database ({}); it was not run. Repair or remove the row, then `weft resume` the run",
                self.seq, self.error
            ),
        })
        .to_string()
    }
}

/// Parks the run of an unreadable task whatever host holds it: the
/// statement that would commit its activation finds it no longer running.
pub(super) const PARK_FOR_UNREADABLE_TASK: &str =
    "UPDATE runs SET status = 'stuck', stuck = $2, lease_owner = NULL, lease_expires_at_ms = 0
      WHERE run_id = $1 AND status = 'running'";

/// One row of the pending-jobs union. By `source`:
///
/// | source | job | `n` | `status` | `body` | `extra` | `at_ms` |
/// |---|---|---|---|---|---|---|
/// | `a` | resolved activity | seq | task status | output | failure | resolved |
/// | `s` | signal | inbox id | | input | name | received |
/// | `t` | due timer | seq | | | | fire time |
/// | `c` | resolved child | seq | | output | failure | resolved |
/// | `u` | update | arrival id | update id | input | name | received |
/// | `x` | cancel request | 0 | | | reason | requested |
#[derive(sqlx::FromRow)]
pub(super) struct PendingRow {
    source: String,
    n: i64,
    attempt: Option<i64>,
    status: Option<String>,
    body: Option<String>,
    extra: Option<String>,
    at_ms: i64,
}

/// Sorts the rows of the pending-jobs union into [`PendingJobs`], each kind in the contract's order.
pub(super) fn pending_jobs(run_id: &RunId, rows: Vec<PendingRow>) -> StoreResult<PendingJobs> {
    let mut jobs = PendingJobs::default();
    let mut updates = Vec::new();
    for row in rows {
        let at_ms = uint(row.at_ms, format_args!("run {run_id}: pending job time"))?;
        match row.source.as_str() {
            "a" => {
                let what = format_args!("run {run_id}: activity {}", row.n);
                let outcome = match row.status.as_deref() {
                    Some("completed") => Ok(from_json(
                        row.body.as_deref().unwrap_or("null"),
                        format_args!("{what} output"),
                    )?),
                    _ => Err(from_json::<Failure>(
                        row.extra.as_deref().unwrap_or("null"),
                        format_args!("{what} failure"),
                    )?),
                };
                jobs.activities.push(ResolvedActivity {
                    seq: seq32(row.n, what)?,
                    attempt: seq32(row.attempt.unwrap_or(0), format_args!("{what} attempt"))?,
                    outcome,
                    resolved_at_ms: at_ms,
                });
            }
            "s" => jobs.signals.push(InboxSignal {
                id: row.n,
                name: row.extra.unwrap_or_default(),
                input: from_json(
                    row.body.as_deref().unwrap_or("null"),
                    format_args!("run {run_id}: signal {}", row.n),
                )?,
                received_at_ms: at_ms,
            }),
            "t" => jobs.due_timers.push(DueTimer {
                seq: seq32(row.n, format_args!("run {run_id}: timer"))?,
                fire_at_ms: at_ms,
            }),
            "c" => {
                let what = format_args!("run {run_id}: child {}", row.n);
                let outcome = match row.extra.as_deref() {
                    Some(failure) => Err(from_json::<Failure>(
                        failure,
                        format_args!("{what} failure"),
                    )?),
                    None => Ok(from_json(
                        row.body.as_deref().unwrap_or("null"),
                        format_args!("{what} output"),
                    )?),
                };
                jobs.children.push(ResolvedChild {
                    seq: seq32(row.n, what)?,
                    outcome,
                    resolved_at_ms: at_ms,
                });
            }
            "u" => {
                let update_id = row.status.unwrap_or_default();
                updates.push((
                    row.n,
                    InboxUpdate {
                        input: from_json(
                            row.body.as_deref().unwrap_or("null"),
                            format_args!("run {run_id}: update {update_id} input"),
                        )?,
                        update_id,
                        name: row.extra.unwrap_or_default(),
                        received_at_ms: at_ms,
                    },
                ));
            }
            "x" => {
                jobs.cancel = Some(CancelRequest {
                    reason: row.extra.unwrap_or_default(),
                    requested_at_ms: at_ms,
                })
            }
            other => {
                return Err(StoreError::Corrupt(format!(
                    "run {run_id}: the pending-jobs query returned a row of unknown source {other:?}"
                )));
            }
        }
    }
    jobs.activities.sort_by_key(|a| (a.resolved_at_ms, a.seq));
    jobs.signals.sort_by_key(|s| s.id);
    jobs.due_timers.sort_by_key(|t| (t.fire_at_ms, t.seq));
    jobs.children.sort_by_key(|c| (c.resolved_at_ms, c.seq));
    updates.sort_by_key(|(id, _)| *id);
    jobs.updates = updates.into_iter().map(|(_, u)| u).collect();
    Ok(jobs)
}

#[derive(sqlx::FromRow)]
pub(super) struct ModuleRow {
    sha256: String,
    name: String,
    version: String,
    size: i64,
    created_at_ms: i64,
}

impl ModuleRow {
    pub(super) fn into_record(self) -> StoreResult<ModuleRecord> {
        Ok(ModuleRecord {
            size: uint(self.size, format_args!("module {}: size", self.sha256))?,
            created_at_ms: uint(
                self.created_at_ms,
                format_args!("module {}: created_at_ms", self.sha256),
            )?,
            sha256: Sha256Hex(self.sha256),
            name: self.name,
            version: self.version,
        })
    }
}

/// What a run's row says now, to explain why a fenced write did not apply.
#[derive(sqlx::FromRow)]
pub(super) struct RunStateRow {
    status: String,
    lease_token: i64,
    last_seq: i64,
}

/// Explains why a write fenced by `lease_token` (and, for commits, by the
/// history being at `expected_last_seq`) did not apply to `run_id`.
pub(super) fn run_conflict(
    run_id: &RunId,
    now: Option<RunStateRow>,
    lease_token: i64,
    expected_last_seq: Option<u64>,
) -> StoreError {
    let Some(now) = now else {
        return StoreError::NotFound {
            what: format!("run {run_id}"),
        };
    };
    let reason = if now.lease_token != lease_token {
        format!(
            "lease token is now {}, this host holds {lease_token}: the lease was lost",
            now.lease_token
        )
    } else if let Some(expected) = expected_last_seq.filter(|&e| int(e) != now.last_seq) {
        format!(
            "history is at event {}, this activation continues from event {expected}",
            now.last_seq
        )
    } else if now.status != "running" {
        format!("run is {}, not running", now.status)
    } else {
        "the run changed concurrently".to_owned()
    };
    StoreError::Conflict {
        run_id: run_id.clone(),
        reason,
    }
}

/// The events primary key caught an append that the `runs` row let through: the
/// index and the log disagree, and the log wins.
pub(super) fn events_exist(run_id: &RunId) -> StoreError {
    StoreError::Conflict {
        run_id: run_id.clone(),
        reason: "an event with this number is already stored, though the runs table said otherwise; the history wins".into(),
    }
}

/// What an activity task's row says now, to explain why a finish did not apply.
#[derive(sqlx::FromRow)]
pub(super) struct TaskStateRow {
    status: String,
    lease_token: i64,
    attempt: i64,
    cancelled_at_ms: Option<i64>,
    failure: Option<String>,
}

/// Reads a [`TaskStateRow`]: `$1` is the run id, `$2` the seq.
/// The attempt a lease token names, while it is the task's current one and runs.
/// What a run waits on, one row per activity, timer or child (both backends).
pub(super) const WAITING_ON_SQL: &str =
    "SELECT 'a' AS source, seq, name, status, attempt, visible_at_ms AS at_ms, lease_owner AS owner,
            failure, heartbeat_details, heartbeat_at_ms
       FROM activity_tasks WHERE run_id = $1 AND status IN ('scheduled', 'running')
     UNION ALL
     SELECT 't', seq, NULL, NULL, NULL, fire_at_ms, NULL, NULL, NULL, NULL
       FROM timers WHERE run_id = $1
     UNION ALL
     SELECT 'c', seq, workflow_id, NULL, NULL, NULL, child_run_id, NULL, NULL, NULL
       FROM children WHERE parent_run_id = $1 AND NOT resolved
     ORDER BY seq";

/// A row of [`WAITING_ON_SQL`].
#[derive(sqlx::FromRow)]
pub(super) struct WaitingRow {
    source: String,
    seq: i64,
    name: Option<String>,
    status: Option<String>,
    attempt: Option<i64>,
    at_ms: Option<i64>,
    owner: Option<String>,
    failure: Option<String>,
    heartbeat_details: Option<String>,
    heartbeat_at_ms: Option<i64>,
}

pub(super) fn waiting_on(run_id: &RunId, rows: Vec<WaitingRow>) -> StoreResult<WaitingOn> {
    let mut waiting = WaitingOn::default();
    for row in rows {
        match row.source.as_str() {
            "a" => {
                let what = format!("run {run_id}: activity {}", row.seq);
                let running = row.status.as_deref() == Some("running");
                waiting.activities.push(PendingActivity {
                    seq: seq32(row.seq, &what)?,
                    name: row.name.unwrap_or_default(),
                    running,
                    attempt: seq32(row.attempt.unwrap_or(0), format_args!("{what} attempt"))?,
                    next_at_ms: uint(row.at_ms.unwrap_or(0), format_args!("{what} visible_at_ms"))?,
                    owner: row.owner.filter(|_| running),
                    last_failure: row
                        .failure
                        .as_deref()
                        .map(|t| from_json(t, format_args!("{what} failure")))
                        .transpose()?,
                    heartbeat_details: row
                        .heartbeat_details
                        .as_deref()
                        .map(|t| from_json(t, format_args!("{what} heartbeat details")))
                        .transpose()?,
                    heartbeat_at_ms: row
                        .heartbeat_at_ms
                        .map(|v| uint(v, format_args!("{what} heartbeat_at_ms")))
                        .transpose()?,
                });
            }
            "t" => {
                let what = format!("run {run_id}: timer {}", row.seq);
                waiting.timers.push(PendingTimer {
                    seq: seq32(row.seq, &what)?,
                    fire_at_ms: uint(row.at_ms.unwrap_or(0), &what)?,
                });
            }
            _ => {
                let what = format!("run {run_id}: child {}", row.seq);
                waiting.children.push(PendingChild {
                    seq: seq32(row.seq, &what)?,
                    workflow_id: row.name.unwrap_or_default(),
                    run_id: row.owner.map(RunId),
                });
            }
        }
    }
    Ok(waiting)
}

pub(super) const CURRENT_ATTEMPT_SQL: &str =
    "SELECT run_id, seq, name, input, options, attempt, lease_token, heartbeat_details, close_deadline_ms
       FROM activity_tasks
      WHERE run_id = $1 AND seq = $2 AND lease_token = $3 AND status = 'running'";

pub(super) const TASK_STATE_SQL: &str =
    "SELECT status, lease_token, attempt, cancelled_at_ms, failure
       FROM activity_tasks WHERE run_id = $1 AND seq = $2";

pub(super) fn task_conflict(
    run_id: &RunId,
    seq: u32,
    now: Option<TaskStateRow>,
    lease_token: i64,
) -> StoreError {
    let Some(now) = now else {
        return StoreError::NotFound {
            what: format!("activity {seq} of run {run_id}"),
        };
    };
    let reason = if now.status == "abandoned" {
        format!("activity {seq} was abandoned because the run closed; its result is not needed")
    } else if now.cancelled_at_ms.is_some() {
        format!("activity {seq} was cancelled by its workflow; its result is not needed")
    } else if now.status == "failed"
        && let Some(timeout) = now
            .failure
            .as_deref()
            .and_then(|f| serde_json::from_str::<Failure>(f).ok())
            .filter(|f| f.error_type.ends_with("Timeout"))
    {
        format!(
            "activity {seq} failed with {}; this attempt's result is not needed",
            timeout.error_type
        )
    } else if now.lease_token != lease_token {
        format!(
            "activity {seq}: lease token is now {} (attempt {}), this attempt holds {lease_token}: the lease expired and the task was claimed again",
            now.lease_token, now.attempt
        )
    } else if now.status == "scheduled" {
        format!(
            "activity {seq} waits for its next attempt: this attempt already ended (it failed or timed out)"
        )
    } else {
        format!(
            "activity {seq} is {}, not running: this attempt was already finished",
            now.status
        )
    };
    StoreError::Conflict {
        run_id: run_id.clone(),
        reason,
    }
}

/// An [`ActivationCommit`] in column form, ready to bind.
pub(super) struct CommitColumns {
    pub(super) expected_last_seq: u64,
    pub(super) last_seq: i64,
    pub(super) last_hash: String,
    pub(super) status: &'static str,
    pub(super) output: Option<String>,
    pub(super) failure: Option<String>,
    pub(super) closed_at_ms: Option<i64>,
    /// The run closes with this commit (any outcome but running).
    pub(super) closing: bool,
    pub(super) event_seqs: Vec<i64>,
    pub(super) event_kinds: Vec<&'static str>,
    pub(super) event_payloads: Vec<String>,
    pub(super) event_times: Vec<i64>,
    pub(super) event_hashes: Vec<String>,
    pub(super) consumed_activities: Vec<i64>,
    pub(super) consumed_signals: Vec<i64>,
    pub(super) removed_timers: Vec<i64>,
    pub(super) task_seqs: Vec<i64>,
    pub(super) task_names: Vec<String>,
    pub(super) task_inputs: Vec<String>,
    pub(super) task_options: Vec<String>,
    pub(super) task_lease_ms: Vec<i64>,
    pub(super) task_visible_at: Vec<i64>,
    pub(super) task_schedule_to_start_ms: Vec<i64>,
    pub(super) task_heartbeat_timeout_ms: Vec<i64>,
    pub(super) task_close_deadline: Vec<Option<i64>>,
    pub(super) task_start_deadline: Vec<Option<i64>>,
    /// The owner of each task claimed as it is scheduled (`None`: not claimed).
    pub(super) task_owner: Vec<Option<String>>,
    pub(super) task_lease_expires: Vec<Option<i64>>,
    pub(super) timer_seqs: Vec<i64>,
    pub(super) timer_fire_at: Vec<i64>,
    pub(super) now_ms: i64,
}

impl CommitColumns {
    /// Checks that the events continue one another and lays the commit out in columns.
    pub(super) fn new(commit: &ActivationCommit) -> StoreResult<Self> {
        let run_id = &commit.run_id;
        let (Some(first), Some(last)) = (commit.events.first(), commit.events.last()) else {
            return Err(StoreError::Conflict {
                run_id: run_id.clone(),
                reason: "an activation commit carries no event; commit at least its activation_started event".into(),
            });
        };
        let expected_last_seq = first
            .seq
            .checked_sub(1)
            .ok_or_else(|| StoreError::Conflict {
                run_id: run_id.clone(),
                reason: "an activation cannot write event 0; histories are numbered from 1".into(),
            })?;
        if let Some(pair) = commit.events.windows(2).find(|w| w[1].seq != w[0].seq + 1) {
            return Err(StoreError::Conflict {
                run_id: run_id.clone(),
                reason: format!(
                    "event {} follows event {} in this commit; events must be numbered in order",
                    pair[1].seq, pair[0].seq
                ),
            });
        }
        let (status, output, failure) = outcome_columns(run_id, &commit.outcome)?;
        let closing = status != RunStatus::Running;
        let mut options = Vec::with_capacity(commit.new_activities.len());
        for task in &commit.new_activities {
            options.push(to_json(
                &task.options,
                format_args!("run {run_id}: activity {} options", task.seq),
            )?);
        }
        Ok(Self {
            expected_last_seq,
            last_seq: int(last.seq),
            last_hash: last.hash.to_hex(),
            status: status.as_str(),
            output,
            failure,
            closed_at_ms: closing.then_some(int(commit.now_ms)),
            closing,
            event_seqs: commit.events.iter().map(|e| int(e.seq)).collect(),
            event_kinds: commit.events.iter().map(|e| e.event.kind()).collect(),
            event_payloads: commit
                .events
                .iter()
                .map(|e| e.event.payload_json())
                .collect(),
            event_times: commit
                .events
                .iter()
                .map(|e| int(e.recorded_at_ms))
                .collect(),
            event_hashes: commit.events.iter().map(|e| e.hash.to_hex()).collect(),
            consumed_activities: commit
                .consumed_activities
                .iter()
                .map(|&s| i64::from(s))
                .collect(),
            consumed_signals: commit.consumed_signals.clone(),
            removed_timers: commit
                .removed_timers
                .iter()
                .map(|&s| i64::from(s))
                .collect(),
            task_seqs: commit
                .new_activities
                .iter()
                .map(|t| i64::from(t.seq))
                .collect(),
            task_names: commit
                .new_activities
                .iter()
                .map(|t| t.name.clone())
                .collect(),
            task_inputs: commit
                .new_activities
                .iter()
                .map(|t| t.input.to_string())
                .collect(),
            task_options: options,
            task_lease_ms: commit
                .new_activities
                .iter()
                .map(|t| int(t.options.start_to_close_timeout_ms))
                .collect(),
            task_visible_at: commit
                .new_activities
                .iter()
                .map(|t| int(t.visible_at_ms))
                .collect(),
            task_schedule_to_start_ms: commit
                .new_activities
                .iter()
                .map(|t| int(t.options.schedule_to_start_timeout_ms))
                .collect(),
            task_heartbeat_timeout_ms: commit
                .new_activities
                .iter()
                .map(|t| int(t.options.heartbeat_timeout_ms))
                .collect(),
            // Both measured from the scheduling, whenever the first attempt becomes visible.
            task_close_deadline: commit
                .new_activities
                .iter()
                .map(|t| deadline(commit.now_ms, t.options.schedule_to_close_timeout_ms))
                .collect(),
            task_start_deadline: commit
                .new_activities
                .iter()
                .map(|t| deadline(commit.now_ms, t.options.schedule_to_start_timeout_ms))
                .collect(),
            task_owner: commit
                .new_activities
                .iter()
                .map(|t| t.claimed.as_ref().map(|c| c.owner.clone()))
                .collect(),
            task_lease_expires: commit
                .new_activities
                .iter()
                .map(|t| t.claimed.as_ref().map(|c| int(c.lease_expires_at_ms)))
                .collect(),
            timer_seqs: commit.new_timers.iter().map(|t| i64::from(t.seq)).collect(),
            timer_fire_at: commit
                .new_timers
                .iter()
                .map(|t| int(t.fire_at_ms))
                .collect(),
            now_ms: int(commit.now_ms),
        })
    }
}

/// `from_ms` plus a timeout, as stored; `None` for a timeout of 0 (none).
fn deadline(from_ms: u64, timeout_ms: u64) -> Option<i64> {
    (timeout_ms > 0).then(|| int(from_ms.saturating_add(timeout_ms)))
}

/// The failure of an activity the workflow cancelled, as stored.
pub(super) fn cancelled_failure() -> StoreResult<String> {
    to_json(
        &Failure::new("Cancelled", "the workflow cancelled the activity"),
        "the cancellation failure",
    )
}

/// How an attempt ends, fenced: applied only if the task is still `status`
/// under `lease_token` and, when `expired_at` is set (the timeout sweep),
/// still past one of its deadlines at that time.
pub(super) struct AttemptEnd<'a> {
    pub(super) run_id: &'a RunId,
    pub(super) seq: u32,
    pub(super) lease_token: i64,
    pub(super) status: &'static str,
    pub(super) expired_at: Option<i64>,
    pub(super) columns: AttemptColumns,
    pub(super) now_ms: u64,
}

impl<'a> AttemptEnd<'a> {
    /// The end the timeout sweep gives an expired task.
    pub(super) fn expired(expiry: &'a super::expiry::Expiry, now_ms: u64) -> StoreResult<Self> {
        Ok(Self {
            run_id: &expiry.run_id,
            seq: expiry.seq,
            lease_token: expiry.lease_token,
            status: expiry.status,
            expired_at: Some(int(now_ms)),
            columns: AttemptColumns::new(&expiry.run_id, expiry.seq, &expiry.outcome, now_ms)?,
            now_ms,
        })
    }
}

impl<'a> AttemptEnd<'a> {
    /// The end a worker (or this host) reports for an attempt it ran.
    pub(super) fn reported(finished: &'a super::FinishedAttempt) -> StoreResult<Self> {
        let columns = AttemptColumns::reported(finished)?;
        Ok(Self::with_columns(finished, columns))
    }

    /// [`AttemptEnd::reported`], from the attempt's columns built before.
    pub(super) fn with_columns(
        finished: &'a super::FinishedAttempt,
        columns: AttemptColumns,
    ) -> Self {
        Self {
            run_id: &finished.run_id,
            seq: finished.seq,
            lease_token: finished.lease_token,
            status: "running",
            expired_at: None,
            columns,
            now_ms: finished.now_ms,
        }
    }
}

/// What `finish_and_commit` reads of a run (and of the finished task's
/// attempt) before it records the result: whether the activation prepared
/// from the warm instance still applies. (Postgres reads the same columns in
/// the statement that ends the attempt.)
pub(super) const WARM_RUN_STATE: &str =
    "SELECT r.status, r.lease_token, r.last_seq, r.wakeups, r.handled_wakeups,
            (SELECT t.attempt FROM activity_tasks t WHERE t.run_id = r.run_id AND t.seq = $2) AS attempt
       FROM runs r WHERE r.run_id = $1";

#[derive(sqlx::FromRow)]
pub(super) struct WarmRunState {
    status: String,
    lease_token: i64,
    last_seq: i64,
    wakeups: i64,
    handled_wakeups: i64,
    attempt: Option<i64>,
}

impl WarmRunState {
    /// The run is as `next` was prepared against: running, not claimed
    /// since (its lease token), its history where it was, nothing but this
    /// result waiting for it, and the result is of the attempt it names.
    pub(super) fn fits(
        &self,
        finished: &super::FinishedAttempt,
        next: &ActivationCommit,
        c: &CommitColumns,
    ) -> bool {
        self.status == "running"
            && self.lease_token == next.lease_token
            && self.last_seq == int(c.expected_last_seq)
            && self.wakeups == self.handled_wakeups
            && self.handled_wakeups + 1 == next.observed_wakeups
            && self.attempt == Some(i64::from(finished.attempt))
    }
}

/// An attempt's end and, read in the same statement under the run's lock,
/// the run's [`WarmRunState`] (no run: `None`).
#[derive(sqlx::FromRow)]
pub(super) struct EndedReadingRun {
    applied: i64,
    status: Option<String>,
    lease_token: Option<i64>,
    last_seq: Option<i64>,
    wakeups: Option<i64>,
    handled_wakeups: Option<i64>,
    attempt: Option<i64>,
}

impl EndedReadingRun {
    /// Whether the attempt ended, and the run as it was.
    pub(super) fn into_parts(self) -> (bool, Option<WarmRunState>) {
        let state = match (
            self.status,
            self.lease_token,
            self.last_seq,
            self.wakeups,
            self.handled_wakeups,
        ) {
            (Some(status), Some(lease_token), Some(last_seq), Some(wakeups), Some(handled)) => {
                Some(WarmRunState {
                    status,
                    lease_token,
                    last_seq,
                    wakeups,
                    handled_wakeups: handled,
                    attempt: self.attempt,
                })
            }
            _ => None,
        };
        (self.applied == 1, state)
    }
}

/// An [`AttemptOutcome`] in column form.
pub(super) struct AttemptColumns {
    pub(super) status: &'static str,
    pub(super) output: Option<String>,
    pub(super) failure: Option<String>,
    pub(super) resolved_at_ms: Option<i64>,
    /// For a retry: when the next attempt may start.
    pub(super) retry_at_ms: Option<i64>,
    /// Completed or failed for good: the run is woken.
    pub(super) is_final: bool,
}

impl AttemptColumns {
    /// The columns of the outcome a worker (or this host) reports.
    pub(super) fn reported(finished: &super::FinishedAttempt) -> StoreResult<Self> {
        Self::new(
            &finished.run_id,
            finished.seq,
            &finished.outcome,
            finished.now_ms,
        )
    }

    pub(super) fn new(
        run_id: &RunId,
        seq: u32,
        outcome: &AttemptOutcome,
        now_ms: u64,
    ) -> StoreResult<Self> {
        let failure_json =
            |f: &Failure| to_json(f, format_args!("run {run_id}: activity {seq} failure"));
        Ok(match outcome {
            AttemptOutcome::Completed { output } => Self {
                status: "completed",
                output: Some(output.to_string()),
                failure: None,
                resolved_at_ms: Some(int(now_ms)),
                retry_at_ms: None,
                is_final: true,
            },
            AttemptOutcome::Retry {
                failure,
                retry_at_ms,
            } => Self {
                status: "scheduled",
                output: None,
                failure: Some(failure_json(failure)?),
                resolved_at_ms: None,
                retry_at_ms: Some(int(*retry_at_ms)),
                is_final: false,
            },
            AttemptOutcome::Failed { failure } => Self {
                status: "failed",
                output: None,
                failure: Some(failure_json(failure)?),
                resolved_at_ms: Some(int(now_ms)),
                retry_at_ms: None,
                is_final: true,
            },
        })
    }
}

/// A failed migration: the database is unreachable, or its schema is not the one this build expects.
pub(super) fn migrate_error(database: &str, e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => {
            StoreError::Unavailable(format!("migrating {database}: {e}"))
        }
        other => StoreError::Corrupt(format!(
            "migrating {database}: {other}; its schema was written by another Weft version, run that version or a newer one"
        )),
    }
}

/// Whether a database error is a unique violation, and of which constraint
/// (Postgres names it; SQLite names the columns in its message).
pub(super) fn unique_violation(e: &sqlx::Error) -> Option<String> {
    let db = e.as_database_error()?;
    db.is_unique_violation().then(|| {
        db.constraint()
            .map(str::to_owned)
            .unwrap_or_else(|| db.message().to_owned())
    })
}

/// [`RunStore::pending_work`](super::RunStore::pending_work): the same SQL on both backends.
pub(super) const PENDING_WORK: &str = "SELECT what FROM (
    SELECT 'run ' || run_id || ' needs an activation' AS what FROM runs
     WHERE status = 'running'
       AND (wakeups > handled_wakeups OR lease_expires_at_ms > $1
            OR (deadline_ms IS NOT NULL AND deadline_ms <= $1))
    UNION ALL
    SELECT 'timer ' || t.seq || ' of run ' || t.run_id || ' is due' FROM timers t
      JOIN runs r ON r.run_id = t.run_id
     WHERE r.status = 'running' AND t.fire_at_ms <= $1
    UNION ALL
    SELECT 'activity ' || name || ' of run ' || run_id || ' (seq ' || seq || ') is ' || status
      FROM activity_tasks
     WHERE (status = 'scheduled' AND visible_at_ms <= $1) OR status = 'running'
) work LIMIT 1";
