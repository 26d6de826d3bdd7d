use crate::model::RunId;
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// What an activity attempt knows about itself.
#[derive(Clone, Debug)]
pub struct ActivityContext {
    pub run_id: RunId,
    /// The command's sequence number within the run.
    pub seq: u32,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub activity: String,
}

impl ActivityContext {
    /// The same for every attempt of this activity call: pass it to payment
    /// providers and the like so a retried attempt is not done twice.
    pub fn idempotency_key(&self) -> String {
        format!("{}-{}", self.run_id, self.seq)
    }
}

/// How an activity attempt failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ActivityError {
    /// A short classifier (`CardDeclined`); retry policies match on it.
    pub error_type: String,
    pub message: String,
    /// No further attempt, whatever the retry policy says.
    pub non_retryable: bool,
}

impl ActivityError {
    /// A failure the retry policy may retry.
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            non_retryable: false,
        }
    }

    /// A failure that ends the activity at once.
    pub fn non_retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            non_retryable: true,
        }
    }
}

pub(crate) type ActivityFn = Arc<
    dyn Fn(ActivityContext, Value) -> BoxFuture<'static, Result<Value, ActivityError>>
        + Send
        + Sync,
>;

/// Activities by name.
#[derive(Clone, Default)]
pub struct Activities {
    map: BTreeMap<String, ActivityFn>,
}

impl Activities {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `f` under `name`, replacing any earlier one.
    pub fn register<I, O, F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActivityError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let name_owned = name.to_owned();
        let erased: ActivityFn = Arc::new(move |ctx: ActivityContext, input: Value| {
            let f = f.clone();
            let name = name_owned.clone();
            Box::pin(async move {
                let input: I = serde_json::from_value(input).map_err(|e| {
                    ActivityError::non_retryable(
                        "BadInput",
                        format!("the input of activity {name:?} does not match its type: {e}"),
                    )
                })?;
                let output = f(ctx, input).await?;
                serde_json::to_value(output).map_err(|e| {
                    ActivityError::non_retryable(
                        "BadOutput",
                        format!("the output of activity {name:?} cannot be serialized: {e}"),
                    )
                })
            })
        });
        self.map.insert(name.to_owned(), erased);
        self
    }

    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&ActivityFn> {
        self.map.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
