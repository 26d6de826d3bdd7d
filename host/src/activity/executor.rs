use super::{Activities, ActivityContext, ActivityError};
use crate::model::{Failure, RetryPolicy};
use crate::scheduler::Clock;
use crate::store::{ActivityTask, AttemptOutcome};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;

/// Runs one attempt of a claimed task and decides its outcome by the retry policy.
pub(crate) async fn run_attempt(
    activities: &Activities,
    clock: &dyn Clock,
    task: &ActivityTask,
    default_timeout_ms: u64,
) -> AttemptOutcome {
    let policy = task.options.retry.clone().unwrap_or_default();
    if policy.maximum_attempts != 0 && task.attempt > policy.maximum_attempts {
        // The previous attempt was lost with its host after using the last try.
        return AttemptOutcome::Failed {
            failure: Failure::new(
                "AttemptsExhausted",
                format!(
                    "activity {:?} used all {} attempts (the last one was lost with its host)",
                    task.name, policy.maximum_attempts
                ),
            ),
        };
    }
    let Some(f) = activities.get(&task.name) else {
        return AttemptOutcome::Failed {
            failure: Failure::new(
                "ActivityNotRegistered",
                format!(
                    "no activity named {:?} is registered on this host",
                    task.name
                ),
            ),
        };
    };
    let ctx = ActivityContext {
        run_id: task.run_id.clone(),
        seq: task.seq,
        attempt: task.attempt,
        activity: task.name.clone(),
    };
    let timeout_ms = match task.options.start_to_close_timeout_ms {
        0 => default_timeout_ms,
        t => t,
    };
    let started = clock.now_ms();
    let call = AssertUnwindSafe(f(ctx, task.input.clone())).catch_unwind();
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
    };
    match result {
        Ok(output) => AttemptOutcome::Completed { output },
        Err(e) => outcome_of_failure(&policy, task.attempt, e, clock.now_ms()),
    }
}

fn outcome_of_failure(
    policy: &RetryPolicy,
    attempt: u32,
    e: ActivityError,
    now_ms: u64,
) -> AttemptOutcome {
    let failure = Failure::new(e.error_type.clone(), e.message.clone());
    if e.non_retryable {
        return AttemptOutcome::Failed { failure };
    }
    match policy.delay_before(attempt + 1, &e.error_type) {
        Some(delay) => AttemptOutcome::Retry {
            failure,
            retry_at_ms: now_ms.saturating_add(delay),
        },
        None => AttemptOutcome::Failed { failure },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_policy() {
        let policy = RetryPolicy {
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 3_000,
            maximum_attempts: 3,
            non_retryable_error_types: vec!["Declined".into()],
        };
        let fail = |t: &str| ActivityError::retryable(t, "x");
        assert_eq!(
            outcome_of_failure(&policy, 1, fail("Io"), 0),
            AttemptOutcome::Retry {
                failure: Failure::new("Io", "x"),
                retry_at_ms: 1_000
            }
        );
        assert_eq!(
            outcome_of_failure(&policy, 2, fail("Io"), 0),
            AttemptOutcome::Retry {
                failure: Failure::new("Io", "x"),
                retry_at_ms: 2_000
            }
        );
        assert!(matches!(
            outcome_of_failure(&policy, 3, fail("Io"), 0),
            AttemptOutcome::Failed { .. }
        ));
        assert!(matches!(
            outcome_of_failure(&policy, 1, fail("Declined"), 0),
            AttemptOutcome::Failed { .. }
        ));
        assert!(matches!(
            outcome_of_failure(&policy, 1, ActivityError::non_retryable("Io", "x"), 0),
            AttemptOutcome::Failed { .. }
        ));
        let capped = RetryPolicy {
            maximum_attempts: 0,
            ..policy
        };
        assert_eq!(capped.delay_before(10, "Io"), Some(3_000));
    }
}
