//! Activities: [`Activity`], the future [`Context::activity`](crate::Context::activity)
//! and [`Context::local_activity`](crate::Context::local_activity) return, its
//! [`ActivityOptions`] and [`RetryPolicy`], and [`ActivityError`].

use crate::Context;
use crate::executor::Shared;
use serde::Serialize;
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
/// choice to the host. A timeout of [`Duration::ZERO`] means none (for
/// start-to-close: the host's default); they are counted in whole
/// milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivityOptions {
    /// How long one attempt may run before it is abandoned and retried;
    /// [`Duration::ZERO`] takes the host's default.
    pub start_to_close_timeout: Duration,
    /// How long an attempt may wait to be picked up by a host; past it the
    /// activity fails with `ScheduleToStartTimeout`, not retried.
    pub schedule_to_start_timeout: Duration,
    /// How long the whole activity may take, from scheduling and retries
    /// included; past it the activity fails with `ScheduleToCloseTimeout`,
    /// and a retry that would start after it is not made.
    pub schedule_to_close_timeout: Duration,
    /// How long a running attempt may go without a heartbeat before it is
    /// failed (`HeartbeatTimeout`) and retried.
    pub heartbeat_timeout: Duration,
    /// `None` takes the host's default policy.
    pub retry: Option<RetryPolicy>,
    /// Run in the host that runs this workflow, straight after the
    /// activation, rather than through the task queue: for short calls.
    pub local: bool,
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
/// [`options`](Self::options), [`start_to_close`](Self::start_to_close),
/// [`schedule_to_start`](Self::schedule_to_start),
/// [`schedule_to_close`](Self::schedule_to_close),
/// [`heartbeat_timeout`](Self::heartbeat_timeout), [`retry`](Self::retry) and
/// [`local`](Self::local).
///
/// Dropping the future after it was scheduled and before its outcome arrived
/// cancels the activity: it issues `request-cancel-activity`, so the losing
/// branch of a [`select`](crate::select) stops its activity. The host
/// resolves the activity at once as failed (`Cancelled`); a running attempt
/// learns it at its next heartbeat and its result is discarded. An outcome
/// that arrived but was not yet awaited is simply dropped, and tearing the
/// whole run down (the instance being dropped) cancels nothing.
///
/// ```
/// # use std::time::Duration;
/// # async fn example(ctx: weft_sdk::Context) {
/// use weft_sdk::{select, Either};
/// let report = ctx
///     .activity::<String>("build_report", "q3")
///     .heartbeat_timeout(Duration::from_secs(10));
/// match select(report, ctx.sleep(Duration::from_secs(600))).await {
///     Either::Left(report) => ctx.log_info(&format!("report: {report:?}")),
///     // The report activity was cancelled when `select` dropped it.
///     Either::Right(()) => ctx.log_warn("no report within ten minutes"),
/// }
/// # }
/// ```
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

    /// How long an attempt may wait to be picked up before the activity fails
    /// with `ScheduleToStartTimeout`.
    pub fn schedule_to_start(mut self, timeout: Duration) -> Self {
        self.assert_unscheduled();
        self.options.schedule_to_start_timeout = timeout;
        self
    }

    /// How long the whole activity, retries included, may take before it
    /// fails with `ScheduleToCloseTimeout`.
    pub fn schedule_to_close(mut self, timeout: Duration) -> Self {
        self.assert_unscheduled();
        self.options.schedule_to_close_timeout = timeout;
        self
    }

    /// How long a running attempt may go without a heartbeat before it is
    /// failed (`HeartbeatTimeout`) and retried.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.assert_unscheduled();
        self.options.heartbeat_timeout = timeout;
        self
    }

    /// How failed attempts are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.assert_unscheduled();
        self.options.retry = Some(policy);
        self
    }

    /// Runs the activity in the host that runs this workflow, right after the
    /// activation, instead of through the task queue (see
    /// [`Context::local_activity`]).
    pub fn local(mut self) -> Self {
        self.assert_unscheduled();
        self.options.local = true;
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
            self.shared.drop_activity(seq);
        }
    }
}

impl Context {
    /// Calls the activity `name` as a *local* activity: the host that runs
    /// this workflow runs it straight after the current activation, without
    /// the round trip through the task queue. For short calls (a lookup, a
    /// write to this service's own database) where that latency matters. It
    /// is an [`Activity`] like any other — retried, timed out and cancelled
    /// the same way — and if that host dies before running it, any host
    /// registering the activity picks it up after the run's lease time.
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) -> Result<(), weft_sdk::WorkflowError> {
    /// let price: u64 = ctx.local_activity("price_of", "sku-42").await?;
    /// # let _ = price; Ok(()) }
    /// ```
    pub fn local_activity<T: DeserializeOwned>(
        &self,
        name: &str,
        input: &(impl Serialize + ?Sized),
    ) -> Activity<T> {
        self.activity(name, input).local()
    }
}

/// Whole milliseconds in `duration`, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A timeout in whole milliseconds, rounded up: a timeout shorter than a
/// millisecond is still a timeout, not "none".
pub(crate) fn timeout_millis(timeout: Duration) -> u64 {
    let whole = millis(timeout);
    if Duration::from_millis(whole) < timeout {
        whole.saturating_add(1)
    } else {
        whole
    }
}
