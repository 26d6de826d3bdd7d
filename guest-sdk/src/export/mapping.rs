//! Conversions between the generated bindings and the SDK's own types, and
//! [`WasmHost`], the [`Host`] that calls the real imports.

use super::bindings::weft::workflow::context;
use super::bindings::weft::workflow::types as wit;
use crate::activity::{ActivityOptions, RetryPolicy, millis, timeout_millis};
use crate::error::WorkflowError;
use crate::host::{Host, Job, LogLevel, Status};

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
        // Handled once the SDK grows children, updates and cancellation.
        wit::Job::ChildResolved(_) | wit::Job::UpdateReceived(_) | wit::Job::CancelRequested(_) => {
            Job::Ignored
        }
    }
}

pub(super) fn status(status: Status) -> wit::Status {
    match status {
        Status::Pending => wit::Status::Pending,
        Status::Completed(output) => wit::Status::Completed(output),
        Status::Failed(failure) => {
            let (error_type, message) = failure.into_parts();
            wit::Status::Failed(wit::Failure {
                error_type,
                message,
            })
        }
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
