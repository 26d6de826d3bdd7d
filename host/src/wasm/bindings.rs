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

/// A payload this large or larger is accepted, with a warning in the
/// host's log: each is stored in the history, and histories of such
/// payloads grow toward their limits fast.
pub(crate) const WARN_PAYLOAD_BYTES: usize = 256 << 10;

/// Warns, once per call, of a payload of `size` bytes at or past
/// [`WARN_PAYLOAD_BYTES`].
pub(crate) fn warn_if_large(what: &str, size: usize) {
    if size >= WARN_PAYLOAD_BYTES {
        tracing::warn!(
            "{what} is {size} bytes, past the warning size of {WARN_PAYLOAD_BYTES} (the limit is 2 MiB by default): each payload is stored in the run's history; pass a reference (an id, a URL) instead of the data"
        );
    }
}

/// Longest name or id a guest may pass (an activity name, a child's
/// workflow type or id, an update id, a failure's error type), in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 1_000;

/// A JSON payload the guest passed, parsed: at most `limit` bytes, valid
/// JSON, nested at most 128 deep. Else why not, naming `what`: a bug in
/// the workflow, never stored.
pub(crate) fn payload(what: &str, text: &str, limit: usize) -> Result<serde_json::Value, String> {
    if text.len() > limit {
        return Err(format!(
            "{what} is {} bytes, over the limit of {limit} bytes: pass a reference (an id, a URL) instead of the data",
            text.len()
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        // serde_json stops at 128 levels; the text may be valid JSON.
        if e.to_string().starts_with("recursion limit exceeded") {
            format!("{what} is nested more than 128 levels deep: flatten it")
        } else {
            format!("{what} is not valid JSON: {e}")
        }
    })
}

/// A name or id the guest passed: at most [`MAX_NAME_BYTES`], no NUL (a
/// database cannot store one in text). Else why not, naming `what`.
pub(crate) fn name(what: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{what} is {} bytes, over the limit of {MAX_NAME_BYTES}: use a shorter name",
            text.len()
        ));
    }
    no_nul(what, text)
}

/// Text the guest passed that a database must store as text: no NUL.
pub(crate) fn no_nul(what: &str, text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err(format!(
            "{what} contains a NUL character, which cannot be stored: remove it"
        ));
    }
    Ok(())
}

/// A failure the guest reported: its error type a [`name`], its message at
/// most `limit` bytes.
pub(crate) fn failure(what: &str, f: wit::Failure, limit: usize) -> Result<Failure, String> {
    name(&format!("the error type of {what}"), &f.error_type)?;
    if f.message.len() > limit {
        return Err(format!(
            "the message of {what} is {} bytes, over the limit of {limit} bytes: keep the message short and put details in an activity's output",
            f.message.len()
        ));
    }
    Ok(f.into())
}

/// The guest's status, with its output parsed and checked against `limit`
/// bytes; a bad output is the guest's bug.
pub(crate) fn status_from_wit(status: wit::Status, limit: usize) -> Result<GuestStatus, String> {
    Ok(match status {
        wit::Status::Pending => GuestStatus::Pending,
        wit::Status::Completed(text) => {
            GuestStatus::Completed(payload("the workflow's output", &text, limit)?)
        }
        wit::Status::Failed(f) => GuestStatus::Failed(failure("the workflow's failure", f, limit)?),
        wit::Status::Cancelled(message) => {
            if message.len() > limit {
                return Err(format!(
                    "the workflow's cancellation message is {} bytes, over the limit of {limit} bytes",
                    message.len()
                ));
            }
            GuestStatus::Cancelled(message)
        }
        wit::Status::ContinuedAsNew(text) => {
            GuestStatus::ContinuedAsNew(payload("the continue-as-new input", &text, limit)?)
        }
    })
}
