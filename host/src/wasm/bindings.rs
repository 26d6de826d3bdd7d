//! Generated host bindings for `wit/`, and their one mapping to the model.

use crate::model::{ActivityOptions, Failure, GuestStatus, Job, ParentClosePolicy, RetryPolicy};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "workflow",
        imports: { default: trappable },
        exports: { default: async },
    });
}

pub(crate) use generated::weft::workflow::context;
pub(crate) use generated::weft::workflow::types as wit;
pub(crate) use generated::{Workflow, WorkflowPre};

impl From<wit::Failure> for Failure {
    fn from(f: wit::Failure) -> Self {
        Failure {
            error_type: f.error_type,
            message: f.message,
        }
    }
}

impl From<Failure> for wit::Failure {
    fn from(f: Failure) -> Self {
        wit::Failure {
            error_type: f.error_type,
            message: f.message,
        }
    }
}

impl From<wit::RetryPolicy> for RetryPolicy {
    fn from(p: wit::RetryPolicy) -> Self {
        RetryPolicy {
            initial_interval_ms: p.initial_interval_ms,
            backoff_coefficient: p.backoff_coefficient,
            maximum_interval_ms: p.maximum_interval_ms,
            maximum_attempts: p.maximum_attempts,
            non_retryable_error_types: p.non_retryable_error_types,
        }
    }
}

impl From<wit::ActivityOptions> for ActivityOptions {
    fn from(o: wit::ActivityOptions) -> Self {
        ActivityOptions {
            start_to_close_timeout_ms: o.start_to_close_timeout_ms,
            schedule_to_start_timeout_ms: o.schedule_to_start_timeout_ms,
            schedule_to_close_timeout_ms: o.schedule_to_close_timeout_ms,
            heartbeat_timeout_ms: o.heartbeat_timeout_ms,
            retry: o.retry.map(Into::into),
            local: o.local,
        }
    }
}

impl From<wit::ParentClosePolicy> for ParentClosePolicy {
    fn from(p: wit::ParentClosePolicy) -> Self {
        match p {
            wit::ParentClosePolicy::Terminate => ParentClosePolicy::Terminate,
            wit::ParentClosePolicy::RequestCancel => ParentClosePolicy::RequestCancel,
            wit::ParentClosePolicy::Abandon => ParentClosePolicy::Abandon,
        }
    }
}

fn outcome_to_wit(outcome: &Result<serde_json::Value, Failure>) -> Result<String, wit::Failure> {
    match outcome {
        Ok(v) => Ok(v.to_string()),
        Err(f) => Err(f.clone().into()),
    }
}

/// A job as the guest receives it: payloads as JSON text.
pub(crate) fn job_to_wit(job: &Job) -> wit::Job {
    match job {
        Job::ActivityResolved { seq, outcome } => {
            wit::Job::ActivityResolved(wit::ActivityResolution {
                seq: *seq,
                outcome: outcome_to_wit(outcome),
            })
        }
        Job::ChildResolved { seq, outcome } => wit::Job::ChildResolved(wit::ChildResolution {
            seq: *seq,
            outcome: outcome_to_wit(outcome),
        }),
        Job::UpdateReceived {
            update_id,
            name,
            input,
        } => wit::Job::UpdateReceived(wit::Update {
            id: update_id.clone(),
            name: name.clone(),
            input: input.to_string(),
        }),
        Job::CancelRequested { reason } => wit::Job::CancelRequested(reason.clone()),
        Job::TimerFired { seq } => wit::Job::TimerFired(*seq),
        Job::SignalReceived { name, input } => wit::Job::SignalReceived(wit::Signal {
            name: name.clone(),
            input: input.to_string(),
        }),
    }
}

/// The guest's status, with its output parsed; an output that is not JSON is the guest's bug.
pub(crate) fn status_from_wit(status: wit::Status) -> Result<GuestStatus, String> {
    Ok(match status {
        wit::Status::Pending => GuestStatus::Pending,
        wit::Status::Completed(text) => GuestStatus::Completed(
            serde_json::from_str(&text)
                .map_err(|e| format!("the workflow's output is not valid JSON: {e}"))?,
        ),
        wit::Status::Failed(f) => GuestStatus::Failed(f.into()),
        wit::Status::Cancelled(message) => GuestStatus::Cancelled(message),
        wit::Status::ContinuedAsNew(text) => GuestStatus::ContinuedAsNew(
            serde_json::from_str(&text)
                .map_err(|e| format!("the continue-as-new input is not valid JSON: {e}"))?,
        ),
    })
}
