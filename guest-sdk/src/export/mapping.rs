//! Conversions between the generated bindings and the SDK's own types, and
//! [`WasmHost`], the [`Host`] that calls the real imports.

use super::bindings::weft::workflow::context;
use super::bindings::weft::workflow::types as wit;
use crate::activity::{ActivityOptions, RetryPolicy, millis, timeout_millis};
use crate::child::{ChildRequest, ParentClosePolicy};
use crate::error::WorkflowError;
use crate::host::{Host, Job, LogLevel, Status, WorkflowInfo};

/// The `context` imports of the component.
pub(super) struct WasmHost;

impl Host for WasmHost {
    fn now_ms(&self) -> u64 {
        context::now_ms()
    }

    fn random_u64(&self) -> u64 {
        context::random_u64()
    }

    fn schedule_activity(&self, name: &str, input: &str, options: &ActivityOptions) -> u32 {
        context::schedule_activity(name, input, &activity_options(options))
    }

    fn request_cancel_activity(&self, seq: u32) {
        context::request_cancel_activity(seq);
    }

    fn start_timer(&self, duration_ms: u64) -> u32 {
        context::start_timer(duration_ms)
    }

    fn cancel_timer(&self, seq: u32) {
        context::cancel_timer(seq);
    }

    fn log(&self, level: LogLevel, message: &str) {
        context::log(log_level(level), message);
    }

    fn is_replaying(&self) -> bool {
        context::is_replaying()
    }

    fn start_child(&self, request: &ChildRequest) -> u32 {
        context::start_child(&child_options(request))
    }

    fn request_cancel_child(&self, seq: u32) {
        context::request_cancel_child(seq);
    }

    fn complete_update(&self, id: &str, outcome: Result<String, WorkflowError>) {
        let outcome = outcome.map_err(failure);
        context::complete_update(id, outcome.as_deref());
    }

    fn patched(&self, change_id: &str) -> bool {
        context::patched(change_id)
    }

    fn set_status_line(&self, text: &str) {
        context::set_status_line(text);
    }

    fn upsert_search_attributes(&self, attributes: &str) {
        context::upsert_search_attributes(attributes);
    }

    fn info(&self) -> WorkflowInfo {
        let info = context::info();
        WorkflowInfo {
            workflow_id: info.workflow_id,
            workflow_type: info.workflow_type,
            parent_workflow_id: info.parent_workflow_id,
        }
    }
}

pub(super) fn job(job: wit::Job) -> Job {
    match job {
        wit::Job::ActivityResolved(resolution) => Job::ActivityResolved {
            seq: resolution.seq,
            outcome: resolution
                .outcome
                .map_err(|f| WorkflowError::new(f.error_type, f.message)),
        },
        wit::Job::TimerFired(seq) => Job::TimerFired(seq),
        wit::Job::SignalReceived(signal) => Job::SignalReceived {
            name: signal.name,
            input: signal.input,
        },
        wit::Job::ChildResolved(resolution) => Job::ChildResolved {
            seq: resolution.seq,
            outcome: resolution
                .outcome
                .map_err(|f| WorkflowError::new(f.error_type, f.message)),
        },
        wit::Job::UpdateReceived(update) => Job::UpdateReceived {
            id: update.id,
            name: update.name,
            input: update.input,
        },
        wit::Job::CancelRequested(reason) => Job::CancelRequested(reason),
    }
}

pub(super) fn status(status: Status) -> wit::Status {
    match status {
        Status::Pending => wit::Status::Pending,
        Status::Completed(output) => wit::Status::Completed(output),
        Status::Failed(error) => wit::Status::Failed(failure(error)),
        Status::Cancelled(message) => wit::Status::Cancelled(message),
        Status::ContinuedAsNew(input) => wit::Status::ContinuedAsNew(input),
    }
}

fn failure(error: WorkflowError) -> wit::Failure {
    let (error_type, message) = error.into_parts();
    wit::Failure {
        error_type,
        message,
    }
}

fn child_options(request: &ChildRequest) -> wit::ChildOptions {
    wit::ChildOptions {
        workflow_type: request.workflow_type.clone(),
        workflow_id: request.workflow_id.clone().unwrap_or_default(),
        input: request.input.clone(),
        parent_close_policy: match request.parent_close_policy {
            ParentClosePolicy::Terminate => wit::ParentClosePolicy::Terminate,
            ParentClosePolicy::RequestCancel => wit::ParentClosePolicy::RequestCancel,
            ParentClosePolicy::Abandon => wit::ParentClosePolicy::Abandon,
        },
        execution_timeout_ms: request.execution_timeout_ms,
    }
}

fn activity_options(options: &ActivityOptions) -> wit::ActivityOptions {
    wit::ActivityOptions {
        start_to_close_timeout_ms: timeout_millis(options.start_to_close_timeout),
        schedule_to_start_timeout_ms: timeout_millis(options.schedule_to_start_timeout),
        schedule_to_close_timeout_ms: timeout_millis(options.schedule_to_close_timeout),
        heartbeat_timeout_ms: timeout_millis(options.heartbeat_timeout),
        retry: options.retry.as_ref().map(retry_policy),
        local: options.local,
    }
}

fn retry_policy(policy: &RetryPolicy) -> wit::RetryPolicy {
    wit::RetryPolicy {
        initial_interval_ms: millis(policy.initial_interval),
        backoff_coefficient: policy.backoff_coefficient,
        maximum_interval_ms: millis(policy.maximum_interval),
        maximum_attempts: policy.maximum_attempts,
        non_retryable_error_types: policy.non_retryable_error_types.clone(),
    }
}

fn log_level(level: LogLevel) -> wit::LogLevel {
    match level {
        LogLevel::Trace => wit::LogLevel::Trace,
        LogLevel::Debug => wit::LogLevel::Debug,
        LogLevel::Info => wit::LogLevel::Info,
        LogLevel::Warn => wit::LogLevel::Warn,
        LogLevel::Error => wit::LogLevel::Error,
    }
}
