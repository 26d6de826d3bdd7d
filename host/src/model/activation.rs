use super::{ActivityOptions, Event, Failure, ParentClosePolicy};
use serde_json::Value;

/// Something delivered to the guest in an activation. Each one is recorded as
/// the matching job [`Event`] before the guest sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    ActivityResolved {
        seq: u32,
        outcome: Result<Value, Failure>,
    },
    TimerFired {
        seq: u32,
    },
    SignalReceived {
        name: String,
        input: Value,
    },
    ChildResolved {
        seq: u32,
        outcome: Result<Value, Failure>,
    },
    UpdateReceived {
        update_id: String,
        name: String,
        input: Value,
    },
    CancelRequested {
        reason: String,
    },
}

impl Job {
    /// The job an event records, if it records one.
    pub fn from_event(event: &Event) -> Option<Job> {
        Some(match event {
            Event::ActivityCompleted { seq, output, .. } => Job::ActivityResolved {
                seq: *seq,
                outcome: Ok(output.clone()),
            },
            Event::ActivityFailed { seq, failure, .. } => Job::ActivityResolved {
                seq: *seq,
                outcome: Err(failure.clone()),
            },
            Event::TimerFired { seq } => Job::TimerFired { seq: *seq },
            Event::SignalReceived { name, input } => Job::SignalReceived {
                name: name.clone(),
                input: input.clone(),
            },
            Event::ChildWorkflowCompleted { seq, output } => Job::ChildResolved {
                seq: *seq,
                outcome: Ok(output.clone()),
            },
            Event::ChildWorkflowFailed { seq, failure } => Job::ChildResolved {
                seq: *seq,
                outcome: Err(failure.clone()),
            },
            Event::UpdateReceived {
                update_id,
                name,
                input,
            } => Job::UpdateReceived {
                update_id: update_id.clone(),
                name: name.clone(),
                input: input.clone(),
            },
            Event::WorkflowCancelRequested { reason } => Job::CancelRequested {
                reason: reason.clone(),
            },
            _ => return None,
        })
    }
}

/// A child workflow the guest asked to start.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildRequest {
    pub workflow_type: String,
    /// Already resolved: the guest's id, or `<parent workflow id>/<seq>`.
    pub workflow_id: String,
    pub input: Value,
    pub parent_close_policy: ParentClosePolicy,
    /// 0 means no limit.
    pub execution_timeout_ms: u64,
}

/// What the guest asked for through an import during an activation.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    ScheduleActivity {
        seq: u32,
        name: String,
        input: Value,
        options: ActivityOptions,
    },
    RequestCancelActivity {
        seq: u32,
    },
    StartTimer {
        seq: u32,
        duration_ms: u64,
    },
    CancelTimer {
        seq: u32,
    },
    StartChild {
        seq: u32,
        request: ChildRequest,
    },
    RequestCancelChild {
        seq: u32,
    },
    CompleteUpdate {
        update_id: String,
        outcome: Result<Value, Failure>,
    },
    PatchMarker {
        change_id: String,
    },
    SetStatusLine {
        text: String,
    },
    UpsertSearchAttributes {
        attributes: Value,
    },
}

impl Command {
    /// The event that records this command in an activation at workflow time `time_ms`.
    pub fn to_event(&self, time_ms: u64) -> Event {
        match self.clone() {
            Command::ScheduleActivity {
                seq,
                name,
                input,
                options,
            } => Event::ActivityScheduled {
                seq,
                name,
                input,
                options,
            },
            Command::RequestCancelActivity { seq } => Event::ActivityCancelRequested { seq },
            Command::StartTimer { seq, duration_ms } => Event::TimerStarted {
                seq,
                duration_ms,
                fire_at_ms: time_ms.saturating_add(duration_ms),
            },
            Command::CancelTimer { seq } => Event::TimerCancelled { seq },
            Command::StartChild { seq, request } => Event::ChildWorkflowInitiated {
                seq,
                workflow_type: request.workflow_type,
                workflow_id: request.workflow_id,
                input: request.input,
                parent_close_policy: request.parent_close_policy,
                execution_timeout_ms: request.execution_timeout_ms,
            },
            Command::RequestCancelChild { seq } => Event::ChildWorkflowCancelRequested { seq },
            Command::CompleteUpdate { update_id, outcome } => match outcome {
                Ok(output) => Event::UpdateCompleted { update_id, output },
                Err(failure) => Event::UpdateFailed { update_id, failure },
            },
            Command::PatchMarker { change_id } => Event::PatchMarker { change_id },
            Command::SetStatusLine { text } => Event::StatusLineSet { text },
            Command::UpsertSearchAttributes { attributes } => {
                Event::SearchAttributesUpserted { attributes }
            }
        }
    }
}

/// The guest's state at the end of an activation.
#[derive(Clone, Debug, PartialEq)]
pub enum GuestStatus {
    Pending,
    Completed(Value),
    Failed(Failure),
    /// The workflow honoured a cancel request.
    Cancelled(String),
    /// A new run starts with this input.
    ContinuedAsNew(Value),
}

impl GuestStatus {
    /// The terminal event this status records, if the run ended.
    pub fn to_event(&self) -> Option<Event> {
        match self {
            GuestStatus::Pending => None,
            GuestStatus::Completed(output) => Some(Event::WorkflowCompleted {
                output: output.clone(),
            }),
            GuestStatus::Failed(failure) => Some(Event::WorkflowFailed {
                failure: failure.clone(),
            }),
            GuestStatus::Cancelled(message) => Some(Event::WorkflowCancelled {
                message: message.clone(),
            }),
            GuestStatus::ContinuedAsNew(input) => Some(Event::WorkflowContinuedAsNew {
                input: input.clone(),
            }),
        }
    }
}
