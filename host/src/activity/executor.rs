use super::registry::HeartbeatSink;
use super::{Activities, ActivityContext, ActivityError};
use crate::model::{Failure, RetryPolicy};
use crate::scheduler::Clock;
use crate::store::{ActivityTask, AttemptOutcome, FailedAttempt};
use futures::FutureExt;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// What running an attempt needs from its host (or remote worker).
pub(crate) struct AttemptRunner<'a> {
    pub(crate) activities: &'a Activities,
    /// Where heartbeats go.
    pub(crate) sink: Arc<dyn HeartbeatSink>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The start-to-close timeout of tasks that set none.
    pub(crate) default_timeout_ms: u64,
}

/// How calling the activity ended, before any retry decision.
pub(crate) enum Called {
    /// It returned (or panicked, or ran past its start-to-close timeout: an error).
    Returned(Result<Value, ActivityError>),
    /// The schedule-to-close deadline passed while it ran.
    TooLate,
}

impl AttemptRunner<'_> {
    /// Runs one attempt of a claimed task and decides its outcome by the
    /// retry policy, the error's own wishes and the schedule-to-close deadline.
    pub(crate) async fn run(&self, task: &ActivityTask) -> AttemptOutcome {
        if let Some(exhausted) = exhausted(task) {
            return exhausted;
        }
        match self.call(task).await {
            Called::Returned(Ok(output)) => AttemptOutcome::Completed { output },
            Called::Returned(Err(e)) => {
                let policy = task.options.retry.clone().unwrap_or_default();
                outcome_of_failure(&policy, task, e, self.clock.now_ms())
            }
            Called::TooLate => AttemptOutcome::Failed {
                failure: Failure::new(
                    "ScheduleToCloseTimeout",
                    format!(
                        "activity {:?} did not resolve within its schedule-to-close timeout (attempt {})",
                        task.name, task.attempt
                    ),
                ),
            },
        }
    }

    /// Calls the activity for one attempt under its start-to-close timeout,
    /// turning a panic into a retryable error. A remote worker uses this
    /// directly and leaves the retry decision to the host.
    pub(crate) async fn call(&self, task: &ActivityTask) -> Called {
        let Some(f) = self.activities.get(&task.name) else {
            return Called::Returned(Err(ActivityError::non_retryable(
                "ActivityNotRegistered",
                format!(
                    "no activity named {:?} is registered here; register it, or run a worker that serves it",
                    task.name
                ),
            )));
        };
        let ctx = ActivityContext::new(task, self.sink.clone(), self.clock.clone());
        let timeout_ms = match task.options.start_to_close_timeout_ms {
            0 => self.default_timeout_ms,
            t => t,
        };
        let clock = &self.clock;
        let started = clock.now_ms();
        let call = AssertUnwindSafe(f(ctx.clone(), task.input.clone())).catch_unwind();
        let too_late = async {
            match task.close_deadline_ms {
                Some(deadline) => clock.sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = call => match r {
                Ok(r) => r,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".into());
                    Err(ActivityError::retryable("Panic", format!("activity {:?} panicked: {message}", task.name)))
                }
            },
            () = clock.sleep_until(started.saturating_add(timeout_ms)) => Err(ActivityError::retryable(
                "StartToCloseTimeout",
                format!("attempt {} of activity {:?} ran longer than its start-to-close timeout of {timeout_ms} ms", task.attempt, task.name),
            )),
            // The timeout sweep fails the activity too; this only stops waiting for it.
            () = too_late => return Called::TooLate,
        };
        if result.is_err() {
            ctx.flush_heartbeat().await;
        }
        Called::Returned(result)
    }
}

/// An attempt past the policy's maximum: the one before was lost with its
/// host (or worker) after using the last try. Fails the activity for good.
pub(crate) fn exhausted(task: &ActivityTask) -> Option<AttemptOutcome> {
    let policy = task.options.retry.clone().unwrap_or_default();
    (policy.maximum_attempts != 0 && task.attempt > policy.maximum_attempts).then(|| {
        AttemptOutcome::Failed {
            failure: Failure::new(
                "AttemptsExhausted",
                format!(
                    "activity {:?} used all {} attempts (the last one was lost with its host)",
                    task.name, policy.maximum_attempts
                ),
            ),
        }
    })
}

pub(crate) fn outcome_of_failure(
    policy: &RetryPolicy,
    task: &ActivityTask,
    e: ActivityError,
    now_ms: u64,
) -> AttemptOutcome {
    FailedAttempt {
        policy,
        attempt: task.attempt,
        failure: Failure::new(e.error_type, e.message),
        non_retryable: e.non_retryable,
        retry_after_ms: e
            .next_retry_delay
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        now_ms,
        close_deadline_ms: task.close_deadline_ms,
    }
    .outcome()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ActivityOptions;
    use std::time::Duration;

    fn task(attempt: u32, close_deadline_ms: Option<u64>) -> ActivityTask {
        ActivityTask {
            run_id: "run".into(),
            seq: 1,
            name: "charge".into(),
            input: serde_json::Value::Null,
            options: ActivityOptions::default(),
            attempt,
            lease_token: 1,
            heartbeat_details: None,
            close_deadline_ms,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 3_000,
            maximum_attempts: 3,
            non_retryable_error_types: vec!["Declined".into()],
        }
    }

    #[test]
    fn retries_follow_the_policy() {
        let policy = policy();
        let fail = |t: &str| ActivityError::retryable(t, "x");
        assert_eq!(
            outcome_of_failure(&policy, &task(1, None), fail("Io"), 0),
            AttemptOutcome::Retry {
                failure: Failure::new("Io", "x"),
                retry_at_ms: 1_000
            }
        );
        assert_eq!(
            outcome_of_failure(&policy, &task(2, None), fail("Io"), 0),
            AttemptOutcome::Retry {
                failure: Failure::new("Io", "x"),
                retry_at_ms: 2_000
            }
        );
        assert!(matches!(
            outcome_of_failure(&policy, &task(3, None), fail("Io"), 0),
            AttemptOutcome::Failed { .. }
        ));
        assert!(matches!(
            outcome_of_failure(&policy, &task(1, None), fail("Declined"), 0),
            AttemptOutcome::Failed { .. }
        ));
        assert!(matches!(
            outcome_of_failure(
                &policy,
                &task(1, None),
                ActivityError::non_retryable("Io", "x"),
                0
            ),
            AttemptOutcome::Failed { .. }
        ));
        let capped = RetryPolicy {
            maximum_attempts: 0,
            ..policy
        };
        assert_eq!(capped.delay_before(10, "Io"), Some(3_000));
    }

    #[test]
    fn retry_after_replaces_the_backoff_within_the_policy() {
        let policy = policy();
        let later = |t: &str| ActivityError::retryable(t, "x").retry_after(Duration::from_secs(60));
        assert_eq!(
            outcome_of_failure(&policy, &task(1, None), later("RateLimited"), 5),
            AttemptOutcome::Retry {
                failure: Failure::new("RateLimited", "x"),
                retry_at_ms: 60_005
            },
            "the activity's delay, not the policy's 1 s (nor its 3 s cap)"
        );
        assert!(
            matches!(
                outcome_of_failure(&policy, &task(3, None), later("RateLimited"), 0),
                AttemptOutcome::Failed { .. }
            ),
            "the maximum attempts still hold"
        );
        assert!(
            matches!(
                outcome_of_failure(&policy, &task(1, None), later("Declined"), 0),
                AttemptOutcome::Failed { .. }
            ),
            "non-retryable types still hold"
        );
    }

    #[test]
    fn no_retry_at_or_past_the_schedule_to_close_deadline() {
        let policy = policy();
        let fail = ActivityError::retryable("Io", "boom");
        assert!(matches!(
            outcome_of_failure(&policy, &task(1, Some(1_001)), fail.clone(), 0),
            AttemptOutcome::Retry {
                retry_at_ms: 1_000,
                ..
            }
        ));
        assert_eq!(
            outcome_of_failure(&policy, &task(1, Some(1_000)), fail.clone(), 0),
            AttemptOutcome::Failed {
                failure: Failure::new("Io", "boom")
            },
            "the last attempt's failure, not a timeout"
        );
        assert!(matches!(
            outcome_of_failure(
                &policy,
                &task(1, Some(10_000)),
                fail.retry_after(Duration::from_secs(10)),
                0
            ),
            AttemptOutcome::Failed { .. }
        ));
    }
}
