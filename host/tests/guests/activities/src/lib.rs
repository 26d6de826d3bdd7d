//! Workflows the host's activity tests run (`host/tests/activities.rs`).
//! Their inputs and outputs are what those tests assert on; change them
//! together.
//!
//! - [`call`]: one activity with the options its input gives; the outcome,
//!   success or failure, is the workflow's output, so a test can read the
//!   failure's type;
//! - [`sequence`]: several such calls, one after the other;
//! - [`race`]: an activity raced against a timer; when the timer wins, the
//!   activity is dropped (and so cancelled) and the workflow waits a little
//!   longer before it completes, so the cancellation reaches its history.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use weft_sdk::{Activity, Context, Either, RetryPolicy, WorkflowError, select};

/// One activity call and its options; every timeout is in milliseconds, 0 for none.
#[derive(Deserialize)]
pub struct Call {
    activity: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    start_to_close_ms: u64,
    #[serde(default)]
    schedule_to_start_ms: u64,
    #[serde(default)]
    schedule_to_close_ms: u64,
    #[serde(default)]
    heartbeat_ms: u64,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    retry: Option<Retry>,
}

/// A retry policy: the first delay and the number of attempts (0: unlimited);
/// the delay doubles.
#[derive(Deserialize)]
pub struct Retry {
    initial_interval_ms: u64,
    #[serde(default)]
    maximum_attempts: u32,
}

/// An activity's outcome as a workflow output.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(Value),
    Err { error_type: String, message: String },
}

impl Call {
    fn activity(&self, ctx: &Context) -> Activity<Value> {
        let ms = Duration::from_millis;
        let mut activity = ctx
            .activity::<Value>(&self.activity, &self.input)
            .start_to_close(ms(self.start_to_close_ms))
            .schedule_to_start(ms(self.schedule_to_start_ms))
            .schedule_to_close(ms(self.schedule_to_close_ms))
            .heartbeat_timeout(ms(self.heartbeat_ms));
        if let Some(retry) = &self.retry {
            activity = activity.retry(RetryPolicy {
                initial_interval: ms(retry.initial_interval_ms),
                maximum_attempts: retry.maximum_attempts,
                ..RetryPolicy::default()
            });
        }
        if self.local {
            activity = activity.local();
        }
        activity
    }

    async fn run(&self, ctx: &Context) -> Outcome {
        match self.activity(ctx).await {
            Ok(output) => Outcome::Ok(output),
            Err(e) => Outcome::Err {
                error_type: e.error_type().to_owned(),
                message: e.message().to_owned(),
            },
        }
    }
}

/// Calls one activity; the output is its outcome.
pub async fn call(ctx: Context, call: Call) -> Result<Outcome, WorkflowError> {
    Ok(call.run(&ctx).await)
}

/// Calls the activities one after the other; the output is their outcomes, in order.
pub async fn sequence(ctx: Context, calls: Vec<Call>) -> Result<Vec<Outcome>, WorkflowError> {
    let mut outcomes = Vec::new();
    for call in &calls {
        outcomes.push(call.run(&ctx).await);
    }
    Ok(outcomes)
}

#[derive(Deserialize)]
pub struct Race {
    call: Call,
    /// The timer the activity races against.
    timer_ms: u64,
    /// How long the workflow waits after the timer won before it completes.
    linger_ms: u64,
}

/// Races the call against a timer: `{"winner": "activity", "outcome": …}`, or
/// `{"winner": "timer"}` after lingering `linger_ms` more (the dropped
/// activity was cancelled meanwhile).
pub async fn race(ctx: Context, race: Race) -> Result<Value, WorkflowError> {
    let activity = race.call.activity(&ctx);
    let timer = ctx.sleep(Duration::from_millis(race.timer_ms));
    match select(activity, timer).await {
        Either::Left(outcome) => {
            let outcome = match outcome {
                Ok(output) => Outcome::Ok(output),
                Err(e) => Outcome::Err {
                    error_type: e.error_type().to_owned(),
                    message: e.message().to_owned(),
                },
            };
            Ok(serde_json::json!({ "winner": "activity", "outcome": outcome }))
        }
        Either::Right(()) => {
            ctx.sleep(Duration::from_millis(race.linger_ms)).await;
            Ok(serde_json::json!({ "winner": "timer" }))
        }
    }
}

weft_sdk::export_workflows!(call, sequence, race);
