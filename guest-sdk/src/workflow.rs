//! [`Workflow`]: a workflow function registered under its type name, with its
//! input and output converted from and to JSON.

use crate::Context;
use crate::error::WorkflowError;
use crate::executor::RootFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;

/// The error type of the failure when `start` names a workflow type the
/// module does not register.
const UNKNOWN_TYPE: &str = "UnknownWorkflowType";
/// ... when the input does not deserialize as the workflow's input type.
const INPUT_INVALID: &str = "WorkflowInputInvalid";
/// ... when the output does not serialize to JSON.
const OUTPUT_INVALID: &str = "WorkflowOutputInvalid";

type Instantiate = Box<dyn Fn(Context, &str) -> Result<RootFuture, WorkflowError>>;

/// One workflow type of a module. Built by
/// [`export_workflows!`](crate::export_workflows).
pub struct Workflow {
    name: &'static str,
    instantiate: Instantiate,
}

impl Workflow {
    /// Registers `function` as the workflow type `name`.
    pub fn new<F, I, O, Fut>(name: &'static str, function: F) -> Self
    where
        F: Fn(Context, I) -> Fut + 'static,
        I: DeserializeOwned,
        O: Serialize,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
    {
        let instantiate = move |ctx: Context, input: &str| -> Result<RootFuture, WorkflowError> {
            let input: I = serde_json::from_str(input).map_err(|e| {
                WorkflowError::new(
                    INPUT_INVALID,
                    format!(
                        "the input of workflow {name} does not deserialize as {}: {e}",
                        std::any::type_name::<I>()
                    ),
                )
            })?;
            let run = function(ctx, input);
            Ok(Box::pin(async move {
                let output = run.await?;
                serde_json::to_string(&output).map_err(|e| {
                    WorkflowError::new(
                        OUTPUT_INVALID,
                        format!("the output of workflow {name} does not serialize to JSON: {e}"),
                    )
                })
            }))
        };
        Self {
            name,
            instantiate: Box::new(instantiate),
        }
    }

    pub(crate) fn instantiate(
        &self,
        ctx: Context,
        input: &str,
    ) -> Result<RootFuture, WorkflowError> {
        (self.instantiate)(ctx, input)
    }
}

/// The workflow registered as `name`, or a failure that lists the registered ones.
pub(crate) fn find<'a>(
    workflows: &'a [Workflow],
    name: &str,
) -> Result<&'a Workflow, WorkflowError> {
    if let Some(workflow) = workflows.iter().find(|w| w.name == name) {
        return Ok(workflow);
    }
    let registered: Vec<&str> = workflows.iter().map(|w| w.name).collect();
    Err(WorkflowError::new(
        UNKNOWN_TYPE,
        format!(
            "this module has no workflow type {name}; it registers: {}",
            registered.join(", ")
        ),
    ))
}
