//! [`WorkflowError`], the failure a workflow function returns — and the two
//! ways to end a run that are not failures: cancellation and continue-as-new.

use crate::activity::ActivityError;
use crate::child::ChildWorkflowError;
use crate::host::Status;
use std::fmt;

/// The error type of [`WorkflowError::cancelled`].
const CANCELLED: &str = "Cancelled";
/// The error type of the error [`Context::continue_as_new`](crate::Context::continue_as_new) returns.
const CONTINUE_AS_NEW: &str = "ContinueAsNew";
/// ... when the next run's input does not serialize to JSON (then the run fails).
const CONTINUE_AS_NEW_INPUT_INVALID: &str = "ContinueAsNewInputInvalid";

/// Why a workflow failed. Returning `Err(WorkflowError)` from a workflow
/// function fails the run with this error type and message (the WIT
/// `failure`).
///
/// `?` on an [`ActivityError`] or a [`ChildWorkflowError`] converts it,
/// keeping the error type, so a run whose payment activity fails with
/// `CardDeclined` fails with `CardDeclined` too.
///
/// Two constructors end the run without failing it:
/// [`WorkflowError::cancelled`] (status `cancelled`) and
/// [`Context::continue_as_new`](crate::Context::continue_as_new) (status
/// `continued-as-new`).
///
/// ```
/// use weft_sdk::WorkflowError;
/// let error = WorkflowError::new("TooLarge", "amounts above 10,000 need a manual review");
/// assert_eq!(error.error_type(), "TooLarge");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowError {
    error_type: String,
    message: String,
    ending: Ending,
}

/// How returning the error from the workflow function ends the run.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ending {
    Failed,
    Cancelled,
    /// The next run's input, as JSON.
    ContinueAsNew(String),
}

impl WorkflowError {
    /// A failure with a short, stable classifier (`CardDeclined`) and a
    /// human-readable explanation.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            ending: Ending::Failed,
        }
    }

    /// Honours a cancel request: returned from the workflow function, the run
    /// ends with status `cancelled` and this message instead of failing. (Its
    /// error type is `Cancelled`; a [`WorkflowError::new`] with that type is
    /// still an ordinary failure.)
    ///
    /// ```
    /// # async fn example(ctx: weft_sdk::Context) -> Result<(), weft_sdk::WorkflowError> {
    /// use weft_sdk::{select, Either, WorkflowError};
    /// match select(ctx.signal::<()>("ship").recv(), ctx.cancelled()).await {
    ///     Either::Left(()) => Ok(()),
    ///     Either::Right(reason) => Err(WorkflowError::cancelled(reason)),
    /// }
    /// # }
    /// ```
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self {
            error_type: CANCELLED.to_owned(),
            message: message.into(),
            ending: Ending::Cancelled,
        }
    }

    /// The error [`Context::continue_as_new`](crate::Context::continue_as_new)
    /// returns; `input` is the next run's input, or why it did not serialize.
    pub(crate) fn continue_as_new(input: Result<String, String>) -> Self {
        match input {
            Ok(input) => Self {
                error_type: CONTINUE_AS_NEW.to_owned(),
                message: "the workflow continues as a new run".to_owned(),
                ending: Ending::ContinueAsNew(input),
            },
            Err(why) => Self::new(
                CONTINUE_AS_NEW_INPUT_INVALID,
                format!("the input of the next run does not serialize to JSON: {why}"),
            ),
        }
    }

    /// The short, stable classifier.
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for [`WorkflowError::cancelled`]: returning it ends the run as
    /// cancelled, not failed.
    pub fn is_cancellation(&self) -> bool {
        self.ending == Ending::Cancelled
    }

    /// True for the error of [`Context::continue_as_new`](crate::Context::continue_as_new).
    pub fn is_continue_as_new(&self) -> bool {
        matches!(self.ending, Ending::ContinueAsNew(_))
    }

    pub(crate) fn into_parts(self) -> (String, String) {
        (self.error_type, self.message)
    }

    /// The status of a run whose workflow function returned this error.
    pub(crate) fn into_status(self) -> Status {
        match self.ending {
            Ending::Failed => Status::Failed(self),
            Ending::Cancelled => Status::Cancelled(self.message),
            Ending::ContinueAsNew(input) => Status::ContinuedAsNew(input),
        }
    }
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl std::error::Error for WorkflowError {}

impl From<ActivityError> for WorkflowError {
    fn from(error: ActivityError) -> Self {
        Self::new(
            error.error_type(),
            format!("activity {} failed: {}", error.activity(), error.message()),
        )
    }
}

impl From<ChildWorkflowError> for WorkflowError {
    /// Keeps the child's error type: a parent whose child failed with
    /// `CardDeclined` (or was `Cancelled`) fails with that type too. It is a
    /// failure of the parent even when the child was cancelled.
    fn from(error: ChildWorkflowError) -> Self {
        Self::new(
            error.error_type(),
            format!(
                "child workflow {} failed: {}",
                error.workflow_type(),
                error.message()
            ),
        )
    }
}
