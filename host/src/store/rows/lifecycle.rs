//! The workflow lifecycle in column form: new runs (starts, children,
//! continue-as-new), what an activation commit does beyond the conditional
//! append, and the wording of what the lifecycle tells callers and parents.

use super::{int, to_json};
use crate::model::{Failure, RunId};
use crate::store::{
    ActivationCommit, CreateRun, DEFAULT_LIST_PAGE, IdReusePolicy, ListCursor, ListFilter,
    MAX_LIST_PAGE, RunOutcome, RunPage, RunRecord, RunStatus, StoreError, StoreResult,
};
use serde_json::Value;

/// Every status a closed run can have.
const CLOSED_STATUSES: [RunStatus; 6] = [
    RunStatus::Completed,
    RunStatus::Failed,
    RunStatus::Cancelled,
    RunStatus::Terminated,
    RunStatus::ContinuedAsNew,
    RunStatus::TimedOut,
];

/// Stands for the closing run's workflow id in the reasons below; SQL fills it
/// in with `replace()`, so that the reason is written in the same statement
/// that reads the id.
pub(in crate::store) const WORKFLOW_ID_SLOT: &str = "{workflow_id}";

/// Why a child is terminated when its parent closes (`terminate` policy).
pub(in crate::store) const PARENT_CLOSED: &str = "parent {workflow_id} closed";

/// Why a child is asked to cancel by its parent's command.
pub(in crate::store) const PARENT_CANCELS: &str = "parent {workflow_id} asked to cancel";

/// Whether `policy` forbids a new run after a closed run that ended as `last`.
pub(in crate::store) fn reuse_forbids(policy: IdReusePolicy, last: RunStatus) -> bool {
    match policy {
        IdReusePolicy::AllowDuplicate => false,
        IdReusePolicy::AllowDuplicateFailedOnly => !last.is_unsuccessful(),
        IdReusePolicy::RejectDuplicate => true,
    }
}

fn policy_name(policy: IdReusePolicy) -> &'static str {
    match policy {
        IdReusePolicy::AllowDuplicate => "allow_duplicate",
        IdReusePolicy::AllowDuplicateFailedOnly => "allow_duplicate_failed_only",
        IdReusePolicy::RejectDuplicate => "reject_duplicate",
    }
}

/// Where a backend's `place_run` put a new run: created, or refused because
/// its workflow id is taken or was used before.
#[derive(Clone, Debug, PartialEq)]
pub(in crate::store) enum Placed {
    New,
    /// The workflow id has this open run.
    Open(RunId),
    /// The reuse policy forbids following this closed run.
    Reused {
        run_id: RunId,
        status: String,
    },
}

impl Placed {
    /// The error a caller of `create_run` sees for a refusal.
    pub(in crate::store) fn refusal(&self, run: &NewRunColumns) -> Option<StoreError> {
        match self {
            Placed::New => None,
            Placed::Open(run_id) => Some(StoreError::WorkflowIdInUse {
                workflow_id: run.workflow_id.clone(),
                run_id: run_id.clone(),
            }),
            Placed::Reused { run_id, status } => Some(StoreError::WorkflowIdReused {
                workflow_id: run.workflow_id.clone(),
                run_id: run_id.clone(),
                status: status.clone(),
                policy: policy_name(run.reuse_policy).to_owned(),
            }),
        }
    }

    /// How a child that could not start resolves in its parent, as `children.failure`.
    pub(in crate::store) fn child_failure(
        &self,
        run: &NewRunColumns,
    ) -> StoreResult<Option<String>> {
        let Some(refusal) = self.refusal(run) else {
            return Ok(None);
        };
        let error_type = match self {
            Placed::Open(_) => "WorkflowIdInUse",
            _ => "WorkflowIdReused",
        };
        let failure = Failure::new(error_type, format!("child workflow not started: {refusal}"));
        to_json(&failure, format_args!("child {} failure", run.workflow_id)).map(Some)
    }
}

/// A [`CreateRun`] in column form: the `runs` row, event 1, and the signal it starts with.
#[derive(Clone, Debug)]
pub(in crate::store) struct NewRunColumns {
    pub(in crate::store) run_id: RunId,
    pub(in crate::store) workflow_id: String,
    pub(in crate::store) workflow_type: String,
    pub(in crate::store) module_sha256: String,
    pub(in crate::store) hash: String,
    pub(in crate::store) event_kind: &'static str,
    pub(in crate::store) event_payload: String,
    pub(in crate::store) event_recorded_at_ms: i64,
    pub(in crate::store) now_ms: i64,
    pub(in crate::store) parent_workflow_id: Option<String>,
    pub(in crate::store) parent_run_id: Option<String>,
    pub(in crate::store) parent_seq: Option<i64>,
    pub(in crate::store) search_attributes: String,
    pub(in crate::store) memo: Option<String>,
    pub(in crate::store) deadline_ms: Option<i64>,
    pub(in crate::store) execution_deadline_ms: Option<i64>,
    pub(in crate::store) run_timeout_ms: Option<i64>,
    pub(in crate::store) reuse_policy: IdReusePolicy,
    /// The statuses of a last closed run that this run may follow.
    pub(in crate::store) reusable_after: Vec<&'static str>,
    pub(in crate::store) signal_name: Option<String>,
    pub(in crate::store) signal_input: Option<String>,
}

impl NewRunColumns {
    pub(in crate::store) fn new(request: &CreateRun) -> StoreResult<Self> {
        let run = &request.run_id;
        let event = &request.first_event;
        if event.seq != 1 {
            return Err(StoreError::Conflict {
                run_id: run.clone(),
                reason: format!("a run starts with event 1, not event {}", event.seq),
            });
        }
        let options = &request.options;
        let search_attributes = match &options.search_attributes {
            Value::Null => "{}".to_owned(),
            object @ Value::Object(_) => object.to_string(),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "run {run}: search attributes must be a JSON object, not {other}; pass an object of scalars"
                )));
            }
        };
        let parent = options.parent.as_ref();
        let reuse_policy = options.id_reuse_policy;
        Ok(Self {
            run_id: run.clone(),
            workflow_id: request.workflow_id.clone(),
            workflow_type: request.workflow_type.clone(),
            module_sha256: request.module_sha256.as_str().to_owned(),
            hash: event.hash.to_hex(),
            event_kind: event.event.kind(),
            event_payload: event.event.payload_json(),
            event_recorded_at_ms: int(event.recorded_at_ms),
            now_ms: int(request.now_ms),
            parent_workflow_id: parent.map(|p| p.workflow_id.clone()),
            parent_run_id: parent.map(|p| p.run_id.as_str().to_owned()),
            parent_seq: parent.map(|p| i64::from(p.seq)),
            search_attributes,
            memo: options
                .memo
                .as_ref()
                .map(|m| to_json(m, format_args!("run {run}: memo")))
                .transpose()?,
            deadline_ms: options.deadline_ms.map(int),
            execution_deadline_ms: options.execution_deadline_ms.map(int),
            run_timeout_ms: options.run_timeout_ms.map(int),
            reuse_policy,
            reusable_after: CLOSED_STATUSES
                .into_iter()
                .filter(|&s| !reuse_forbids(reuse_policy, s))
                .map(RunStatus::as_str)
                .collect(),
            signal_name: options.signal.as_ref().map(|(name, _)| name.clone()),
            signal_input: options.signal.as_ref().map(|(_, input)| input.to_string()),
        })
    }

    /// Whether placing this run must look at the workflow id's earlier runs.
    pub(in crate::store) fn checks_reuse(&self) -> bool {
        self.reuse_policy != IdReusePolicy::AllowDuplicate
    }
}

/// A new child in column form.
#[derive(Clone, Debug)]
pub(in crate::store) struct NewChildColumns {
    pub(in crate::store) seq: i64,
    pub(in crate::store) parent_close_policy: &'static str,
    pub(in crate::store) run: NewRunColumns,
}

/// How a closing run ends, for its parent and for whatever waits on it.
#[derive(Clone, Debug)]
pub(in crate::store) struct CloseColumns {
    /// The outcome is final (not continue-as-new): the parent's `children` row resolves.
    pub(in crate::store) resolves_parent: bool,
    /// The parent's `children` row: the output once completed, else the failure.
    pub(in crate::store) output: Option<String>,
    pub(in crate::store) failure: Option<String>,
    /// Continue-as-new: the run that carries on.
    pub(in crate::store) next: Option<NewRunColumns>,
    /// What every update the run never answered resolves to.
    pub(in crate::store) unanswered_update: String,
}

/// Everything an [`ActivationCommit`] writes beyond the conditional append and
/// the activity and timer indexes, in column form.
#[derive(Clone, Debug, Default)]
pub(in crate::store) struct LifecycleColumns {
    pub(in crate::store) consumed_children: Vec<i64>,
    pub(in crate::store) cancelled_children: Vec<i64>,
    pub(in crate::store) new_children: Vec<NewChildColumns>,
    pub(in crate::store) consumed_updates: Vec<String>,
    pub(in crate::store) completed_update_ids: Vec<String>,
    pub(in crate::store) completed_update_outputs: Vec<Option<String>>,
    pub(in crate::store) completed_update_failures: Vec<Option<String>>,
    pub(in crate::store) consumed_cancel: bool,
    pub(in crate::store) status_line: Option<String>,
    pub(in crate::store) search_attributes: Option<String>,
    /// Set when the outcome closes the run.
    pub(in crate::store) close: Option<CloseColumns>,
    pub(in crate::store) now_ms: i64,
}

impl LifecycleColumns {
    pub(in crate::store) fn new(commit: &ActivationCommit) -> StoreResult<Self> {
        let run_id = &commit.run_id;
        let mut new_children = Vec::with_capacity(commit.new_children.len());
        for child in &commit.new_children {
            new_children.push(NewChildColumns {
                seq: i64::from(child.seq),
                parent_close_policy: child.parent_close_policy.as_str(),
                run: NewRunColumns::new(&child.run)?,
            });
        }
        let mut outputs = Vec::with_capacity(commit.completed_updates.len());
        let mut failures = Vec::with_capacity(commit.completed_updates.len());
        for (update_id, outcome) in &commit.completed_updates {
            match outcome {
                Ok(output) => {
                    outputs.push(Some(output.to_string()));
                    failures.push(None);
                }
                Err(failure) => {
                    outputs.push(None);
                    failures.push(Some(to_json(
                        failure,
                        format_args!("run {run_id}: update {update_id} failure"),
                    )?));
                }
            }
        }
        let close = match &commit.outcome {
            RunOutcome::Running => None,
            outcome => {
                let (_, output, failure) = outcome_columns(run_id, outcome)?;
                let next = match outcome {
                    RunOutcome::ContinuedAsNew { next } => {
                        let mut next = NewRunColumns::new(next)?;
                        // The chain goes on: the run it continues does not count as an earlier use.
                        next.reuse_policy = IdReusePolicy::AllowDuplicate;
                        next.reusable_after = CLOSED_STATUSES.map(RunStatus::as_str).to_vec();
                        Some(next)
                    }
                    _ => None,
                };
                Some(CloseColumns {
                    resolves_parent: next.is_none(),
                    output,
                    failure,
                    next,
                    unanswered_update: to_json(
                        &Failure::new(
                            "UpdateNotCompleted",
                            format!("run {run_id} closed before it answered the update"),
                        ),
                        format_args!("run {run_id}: unanswered update"),
                    )?,
                })
            }
        };
        Ok(Self {
            consumed_children: commit
                .consumed_children
                .iter()
                .map(|&s| i64::from(s))
                .collect(),
            cancelled_children: commit
                .cancelled_children
                .iter()
                .map(|&s| i64::from(s))
                .collect(),
            new_children,
            consumed_updates: commit.consumed_updates.clone(),
            completed_update_ids: commit
                .completed_updates
                .iter()
                .map(|(id, _)| id.clone())
                .collect(),
            completed_update_outputs: outputs,
            completed_update_failures: failures,
            consumed_cancel: commit.consumed_cancel,
            status_line: commit.status_line.clone(),
            search_attributes: commit
                .search_attributes
                .as_ref()
                .map(|a| to_json(a, format_args!("run {run_id}: search attributes")))
                .transpose()?,
            close,
            now_ms: int(commit.now_ms),
        })
    }

    /// Whether the commit writes anything here at all (most activations do not).
    pub(in crate::store) fn is_empty(&self) -> bool {
        self.nothing_but_a_close() && self.close.is_none()
    }

    /// Nothing but a close that starts no next run: what the conditional
    /// append does, and then only what the close may owe to other runs.
    pub(in crate::store) fn only_closes(&self) -> bool {
        self.nothing_but_a_close() && self.close.as_ref().is_some_and(|c| c.next.is_none())
    }

    /// Nothing beyond the conditional append, a close aside.
    fn nothing_but_a_close(&self) -> bool {
        self.consumed_children.is_empty()
            && self.cancelled_children.is_empty()
            && self.new_children.is_empty()
            && self.consumed_updates.is_empty()
            && self.completed_update_ids.is_empty()
            && !self.consumed_cancel
            && self.status_line.is_none()
            && self.search_attributes.is_none()
    }

    /// Whether the run's own row changes beyond the conditional append.
    pub(in crate::store) fn touches_own_row(&self) -> bool {
        self.consumed_cancel || self.status_line.is_some() || self.search_attributes.is_some()
    }
}

/// The `runs` columns an outcome sets: status, output and failure.
pub(in crate::store) fn outcome_columns(
    run_id: &RunId,
    outcome: &RunOutcome,
) -> StoreResult<(RunStatus, Option<String>, Option<String>)> {
    let (output, failure) = outcome.result();
    let failure = failure
        .map(|f| to_json(&f, format_args!("run {run_id}: failure")))
        .transpose()?;
    Ok((outcome.status(), output.map(Value::to_string), failure))
}

/// A message (a signal, an update, a request) for a run that is closed or unknown.
pub(in crate::store) fn not_open(run_id: &RunId, status: Option<String>, what: &str) -> StoreError {
    StoreError::NotFound {
        what: match status {
            Some(status) => format!(
                "open run {run_id}: run {run_id} is closed ({status}), and {what} go to open runs only"
            ),
            None => format!("run {run_id} (unknown; check the run id)"),
        },
    }
}

/// A run holding `limit` signals not yet taken.
pub(in crate::store) fn signals_full(run_id: &RunId, limit: u64) -> StoreError {
    StoreError::Full {
        run_id: run_id.clone(),
        what: "signals not yet taken by the workflow",
        limit,
        setting: "--max-pending-signals",
    }
}

/// A run holding `limit` updates not yet answered.
pub(in crate::store) fn updates_full(run_id: &RunId, limit: u64) -> StoreError {
    StoreError::Full {
        run_id: run_id.clone(),
        what: "updates not yet answered by the workflow",
        limit,
        setting: "--max-updates-in-flight",
    }
}

/// The run that a continue-as-new creates could not be placed.
pub(in crate::store) fn continue_refused(run_id: &RunId, refusal: StoreError) -> StoreError {
    StoreError::Conflict {
        run_id: run_id.clone(),
        reason: format!(
            "it cannot continue as new ({refusal}); the activation is discarded and retried"
        ),
    }
}

/// An update id that the run never accepted.
pub(in crate::store) fn unknown_update(run_id: &RunId, update_id: &str) -> StoreError {
    StoreError::NotFound {
        what: format!(
            "update {update_id:?} of run {run_id} (it was never accepted; send the update first)"
        ),
    }
}

/// The runs a page of `list_runs` holds: 0 means the default, and no more than the maximum.
pub(in crate::store) fn list_limit(filter: &ListFilter) -> usize {
    let limit = match filter.limit {
        0 => DEFAULT_LIST_PAGE,
        n => n.min(MAX_LIST_PAGE),
    };
    limit as usize
}

/// A page of `list_runs` from rows read with one more than the page's
/// limit: the extra row, when there is one, says that a next page exists.
pub(in crate::store) fn list_page(rows: Vec<super::RunRow>, limit: usize) -> StoreResult<RunPage> {
    let more = rows.len() > limit;
    let runs = rows
        .into_iter()
        .take(limit)
        .map(super::RunRow::into_record)
        .collect::<StoreResult<Vec<RunRecord>>>()?;
    let next = if more {
        runs.last().map(ListCursor::of)
    } else {
        None
    };
    Ok(RunPage { runs, next })
}

/// A stored update's outcome, once completed.
pub(in crate::store) fn update_outcome(
    run_id: &RunId,
    update_id: &str,
    completed: bool,
    output: Option<String>,
    failure: Option<String>,
) -> StoreResult<Option<Result<Value, Failure>>> {
    if !completed {
        return Ok(None);
    }
    let what = format_args!("run {run_id}: update {update_id}");
    Ok(Some(match failure {
        Some(f) => Err(super::from_json(&f, format_args!("{what} failure"))?),
        None => Ok(super::from_json(
            output.as_deref().unwrap_or("null"),
            format_args!("{what} output"),
        )?),
    }))
}
