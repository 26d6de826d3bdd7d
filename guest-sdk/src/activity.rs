//! Activities: [`Activity`], the future [`Context::activity`](crate::Context::activity)
//! returns, its [`ActivityOptions`] and [`RetryPolicy`], and [`ActivityError`].

use crate::executor::Shared;
use serde::de::DeserializeOwned;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

/// The error type of an [`ActivityError`] when the input did not serialize to
/// JSON (the activity is then never scheduled).
const INPUT_INVALID: &str = "ActivityInputInvalid";
/// The error type of an [`ActivityError`] when the activity succeeded but its
/// output does not deserialize as the type the workflow asked for.
const OUTPUT_INVALID: &str = "ActivityOutputInvalid";

/// Options for one activity call. `ActivityOptions::default()` leaves every
/// choice to the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivityOptions {
    /// How long one attempt may run before it is abandoned and retried;
    /// [`Duration::ZERO`] takes the host's default.
    pub start_to_close_timeout: Duration,
    /// `None` takes the host's default policy.
    pub retry: Option<RetryPolicy>,
}

/// How a failed activity is retried. The default is the host's: 1 s,
/// doubling, capped at 100 × the first delay, unlimited attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial_interval: Duration,
    /// Each further delay is the previous one times this (at least 1.0).
    pub backoff_coefficient: f64,
    /// Upper bound for one delay; [`Duration::ZERO`] means 100 × the initial interval.
    pub maximum_interval: Duration,
    /// Attempts in all, the first one included; 0 means unlimited.
    pub maximum_attempts: u32,
    /// Error types (see [`ActivityError::error_type`]) that are never retried.
    pub non_retryable_error_types: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::ZERO,
            maximum_attempts: 0,
            non_retryable_error_types: Vec::new(),
        }
    }
}

/// An activity's final failure, after the host gave up retrying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityError {
    activity: String,
    error_type: String,
    message: String,
}

impl ActivityError {
    pub(crate) fn new(activity: &str, error_type: String, message: String) -> Self {
        Self {
            activity: activity.to_owned(),
            error_type,
            message,
        }
    }

    /// The name the activity was scheduled with.
    pub fn activity(&self) -> &str {
        &self.activity
    }

    /// The short, stable classifier of the last attempt's failure, such as
    /// `CardDeclined`; the SDK itself uses `ActivityInputInvalid` and
    /// `ActivityOutputInvalid` when the JSON on either side does not fit.
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ActivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "activity {} failed with {}: {}",
            self.activity, self.error_type, self.message
        )
    }
}

impl std::error::Error for ActivityError {}

/// A scheduled-on-first-poll activity call; awaiting it yields the activity's
/// output deserialized as `T`, or its final failure.
///
/// The `schedule-activity` command is issued the first time the future is
/// polled, not when it is created, so options can still be set with
/// [`options`](Self::options), [`start_to_close`](Self::start_to_close) and
/// [`retry`](Self::retry). Dropping the future before it resolves does not
/// cancel the activity (the contract has no such command); its outcome is
/// ignored when it arrives.
#[must_use = "an activity is scheduled only when its future is awaited"]
pub struct Activity<T> {
    shared: Rc<Shared>,
    name: String,
    /// The input as JSON, or why it did not serialize.
    input: Result<String, String>,
    options: ActivityOptions,
    seq: Option<u32>,
    finished: bool,
    output: PhantomData<fn() -> T>,
}

impl<T> Activity<T> {
    pub(crate) fn new(shared: Rc<Shared>, name: &str, input: Result<String, String>) -> Self {
        Self {
            shared,
            name: name.to_owned(),
            input,
            options: ActivityOptions::default(),
            seq: None,
            finished: false,
            output: PhantomData,
        }
    }

    /// Replaces all options.
    pub fn options(mut self, options: ActivityOptions) -> Self {
        self.assert_unscheduled();
        self.options = options;
        self
    }

    /// How long one attempt may run before it is abandoned and retried.
    pub fn start_to_close(mut self, timeout: Duration) -> Self {
        self.assert_unscheduled();
        self.options.start_to_close_timeout = timeout;
        self
    }

    /// How failed attempts are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.assert_unscheduled();
        self.options.retry = Some(policy);
        self
    }

    fn assert_unscheduled(&self) {
        assert!(
            self.seq.is_none(),
            "weft-sdk: options of activity {} were changed after it was scheduled; set them before awaiting it",
            self.name
        );
    }
}

impl<T: DeserializeOwned> Future for Activity<T> {
    type Output = Result<T, ActivityError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(
            !this.finished,
            "weft-sdk: activity {} was polled after it completed",
            this.name
        );
        let seq = match this.seq {
            Some(seq) => seq,
            None => match &this.input {
                Ok(input) => {
                    let seq = this
                        .shared
                        .schedule_activity(&this.name, input, &this.options);
                    this.seq = Some(seq);
                    seq
                }
                Err(why) => {
                    this.finished = true;
                    let message = format!("the input does not serialize to JSON: {why}");
                    return Poll::Ready(Err(ActivityError::new(
                        &this.name,
                        INPUT_INVALID.to_owned(),
                        message,
                    )));
                }
            },
        };
        let Some(outcome) = this.shared.take_activity(seq, cx.waker()) else {
            return Poll::Pending;
        };
        this.finished = true;
        Poll::Ready(match outcome {
            Ok(output) => serde_json::from_str(&output).map_err(|e| {
                let message = format!(
                    "its output does not deserialize as {}: {e}; the output was {output}",
                    std::any::type_name::<T>()
                );
                ActivityError::new(&this.name, OUTPUT_INVALID.to_owned(), message)
            }),
            Err(failure) => {
                let (error_type, message) = failure.into_parts();
                Err(ActivityError::new(&this.name, error_type, message))
            }
        })
    }
}

impl<T> Drop for Activity<T> {
    fn drop(&mut self) {
        if let (Some(seq), false) = (self.seq, self.finished) {
            self.shared.forget_activity(seq);
        }
    }
}

/// Whole milliseconds in `duration`, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
