//! Updates: requests the workflow handles and answers, registered with
//! [`Context::on_update`](crate::Context::on_update) and
//! [`Context::on_update_validated`](crate::Context::on_update_validated).
//!
//! An update reaches the workflow twice. First the host calls the
//! `validate-update` export: the SDK deserializes the input and runs the
//! validator, and a rejected update is never recorded. An accepted one is
//! recorded and delivered as an `update-received` job; the SDK spawns the
//! handler as a task, and when it finishes answers with `complete-update`.

use crate::error::WorkflowError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;

/// The error type of an update's failure when the workflow has no handler
/// for its name at delivery.
pub(crate) const UNKNOWN_UPDATE: &str = "UnknownUpdate";
/// ... when the input does not deserialize as the handler's input type.
const INPUT_INVALID: &str = "UpdateInputInvalid";
/// ... when the handler's output does not serialize to JSON.
const OUTPUT_INVALID: &str = "UpdateOutputInvalid";

/// A running update handler: its answer as JSON, or its failure.
pub(crate) type Handling = Pin<Box<dyn Future<Output = Result<String, WorkflowError>>>>;

/// Deserializes an update's input and runs its validator.
type Validate = Box<dyn Fn(&str) -> Result<(), String>>;

/// One registered update, with its input and output as JSON.
pub(crate) struct UpdateHandler {
    /// Changes nothing.
    validate: Validate,
    /// Deserializes the input and runs the handler.
    handle: Box<dyn Fn(&str) -> Handling>,
}

impl UpdateHandler {
    pub(crate) fn new<I, O, F, Fut, V>(name: &str, validator: V, handler: F) -> Self
    where
        I: DeserializeOwned + 'static,
        O: Serialize,
        F: Fn(I) -> Fut + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
        V: Fn(&I) -> Result<(), String> + 'static,
    {
        let update = name.to_owned();
        let validate = move |input: &str| {
            let input = parse::<I>(&update, input)?;
            validator(&input)
        };
        let update = name.to_owned();
        let handle = move |input: &str| -> Handling {
            let input = match parse::<I>(&update, input) {
                Ok(input) => input,
                Err(why) => {
                    return Box::pin(std::future::ready(Err(WorkflowError::new(
                        INPUT_INVALID,
                        why,
                    ))));
                }
            };
            let running = handler(input);
            let update = update.clone();
            Box::pin(async move {
                let output = running.await?;
                serde_json::to_string(&output).map_err(|e| {
                    WorkflowError::new(
                        OUTPUT_INVALID,
                        format!("the output of update {update} does not serialize to JSON: {e}"),
                    )
                })
            })
        };
        Self {
            validate: Box::new(validate),
            handle: Box::new(handle),
        }
    }

    pub(crate) fn validate(&self, input: &str) -> Result<(), String> {
        (self.validate)(input)
    }

    pub(crate) fn handle(&self, input: &str) -> Handling {
        (self.handle)(input)
    }
}

fn parse<I: DeserializeOwned>(update: &str, input: &str) -> Result<I, String> {
    serde_json::from_str(input).map_err(|e| {
        format!(
            "the input of update {update} does not deserialize as {}: {e}",
            std::any::type_name::<I>()
        )
    })
}
