//! The activity timeout sweep's side of the store, shared by both backends:
//! which tasks are past a deadline, and what each timeout does to them. The
//! backends read [`EXPIRED_TASKS_SQL`], turn the rows into [`Expiry`]s and
//! end each attempt fenced, as a finished attempt is.

use super::rows::{from_json, int, seq32, uint};
use super::{AttemptOutcome, FailedAttempt, StoreResult};
use crate::model::{ActivityOptions, Failure, RunId};

/// A task with a deadline that passed, as read by the timeout sweep.
#[derive(sqlx::FromRow)]
pub(super) struct ExpiredTaskRow {
    pub(super) run_id: String,
    pub(super) seq: i64,
    pub(super) name: String,
    pub(super) status: String,
    pub(super) attempt: i64,
    pub(super) lease_token: i64,
    options: String,
    /// The last attempt's failure, while a retry waits.
    failure: Option<String>,
    close_deadline_ms: Option<i64>,
    start_deadline_ms: Option<i64>,
    heartbeat_deadline_ms: Option<i64>,
}

/// The sweep's candidates: unresolved tasks past any of their deadlines, each
/// kind read from its own index, at most a batch of each (`$1` is
/// now, `$2` the batch size). A task may appear more than once.
pub(super) const EXPIRED_TASKS_SQL: &str = "
    SELECT * FROM (SELECT run_id, seq, name, status, attempt, lease_token, options, failure,
                          close_deadline_ms, start_deadline_ms, heartbeat_deadline_ms
                     FROM activity_tasks
                    WHERE status IN ('scheduled', 'running') AND close_deadline_ms IS NOT NULL
                      AND close_deadline_ms <= $1
                    ORDER BY close_deadline_ms LIMIT $2) AS c
    UNION ALL
    SELECT * FROM (SELECT run_id, seq, name, status, attempt, lease_token, options, failure,
                          close_deadline_ms, start_deadline_ms, heartbeat_deadline_ms
                     FROM activity_tasks
                    WHERE status = 'scheduled' AND start_deadline_ms IS NOT NULL
                      AND start_deadline_ms <= $1
                    ORDER BY start_deadline_ms LIMIT $2) AS s
    UNION ALL
    SELECT * FROM (SELECT run_id, seq, name, status, attempt, lease_token, options, failure,
                          close_deadline_ms, start_deadline_ms, heartbeat_deadline_ms
                     FROM activity_tasks
                    WHERE status = 'running' AND heartbeat_deadline_ms IS NOT NULL
                      AND heartbeat_deadline_ms <= $1
                    ORDER BY heartbeat_deadline_ms LIMIT $2) AS h";

/// The earliest deadline of any unresolved task, each kind from its own index.
pub(super) const NEXT_TIMEOUT_SQL: &str = "
    SELECT MIN(deadline_at) FROM (
        SELECT MIN(close_deadline_ms) AS deadline_at FROM activity_tasks
         WHERE status IN ('scheduled', 'running') AND close_deadline_ms IS NOT NULL
        UNION ALL
        SELECT MIN(start_deadline_ms) FROM activity_tasks
         WHERE status = 'scheduled' AND start_deadline_ms IS NOT NULL
        UNION ALL
        SELECT MIN(heartbeat_deadline_ms) FROM activity_tasks
         WHERE status = 'running' AND heartbeat_deadline_ms IS NOT NULL) AS deadlines";

/// What the sweep does to one expired task: the outcome of its current
/// attempt, applied only if the task is still `status` under `lease_token`
/// and still past a deadline at the sweep's time.
pub(super) struct Expiry {
    pub(super) run_id: RunId,
    pub(super) seq: u32,
    pub(super) lease_token: i64,
    pub(super) status: &'static str,
    pub(super) outcome: AttemptOutcome,
}

impl ExpiredTaskRow {
    /// Which timeout fired and what follows from it; `None` if none has (yet).
    pub(super) fn expiry(self, now_ms: u64) -> StoreResult<Option<Expiry>> {
        let run_id = RunId(self.run_id);
        let seq = seq32(self.seq, format_args!("run {run_id}: activity"))?;
        let what = format_args!("run {run_id}: activity {seq}");
        let passed = |at: Option<i64>| at.is_some_and(|at| at <= int(now_ms));
        let attempt = u32::try_from(self.attempt).unwrap_or(u32::MAX);
        let (status, outcome) = if passed(self.close_deadline_ms) {
            let last = self
                .failure
                .as_deref()
                .and_then(|f| serde_json::from_str::<Failure>(f).ok())
                .filter(|_| self.status == "scheduled")
                .map(|f| format!("; the last attempt failed with {f}"))
                .unwrap_or_default();
            let failure = Failure::new(
                "ScheduleToCloseTimeout",
                format!(
                    "activity {:?} did not resolve within its schedule-to-close timeout (attempt {attempt}){last}",
                    self.name
                ),
            );
            (self.status, AttemptOutcome::Failed { failure })
        } else if self.status == "scheduled" && passed(self.start_deadline_ms) {
            let failure = Failure::new(
                "ScheduleToStartTimeout",
                format!(
                    "attempt {} of activity {:?} was not picked up within its schedule-to-start timeout; is a host running it?",
                    attempt.saturating_add(1),
                    self.name
                ),
            );
            (self.status, AttemptOutcome::Failed { failure })
        } else if self.status == "running" && passed(self.heartbeat_deadline_ms) {
            let options: ActivityOptions =
                from_json(&self.options, format_args!("{what} options"))?;
            let failure = Failure::new(
                "HeartbeatTimeout",
                format!(
                    "attempt {attempt} of activity {:?} did not heartbeat within its heartbeat timeout of {} ms",
                    self.name, options.heartbeat_timeout_ms
                ),
            );
            let outcome = FailedAttempt {
                policy: &options.retry.clone().unwrap_or_default(),
                attempt,
                failure,
                non_retryable: false,
                retry_after_ms: None,
                now_ms,
                close_deadline_ms: self
                    .close_deadline_ms
                    .map(|v| uint(v, format_args!("{what} close_deadline_ms")))
                    .transpose()?,
            }
            .outcome();
            (self.status, outcome)
        } else {
            return Ok(None);
        };
        let status = match status.as_str() {
            "scheduled" => "scheduled",
            _ => "running",
        };
        Ok(Some(Expiry {
            run_id,
            seq,
            lease_token: self.lease_token,
            status,
            outcome,
        }))
    }
}

/// The sweep's verdicts, one per task (a task found by two deadlines counts once).
pub(super) fn expiries(rows: Vec<ExpiredTaskRow>, now_ms: u64) -> StoreResult<Vec<Expiry>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for row in rows {
        if !seen.insert((row.run_id.clone(), row.seq)) {
            continue;
        }
        if let Some(e) = row.expiry(now_ms)? {
            out.push(e);
        }
    }
    Ok(out)
}
