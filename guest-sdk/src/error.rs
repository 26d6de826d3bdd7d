//! [`WorkflowError`], the failure a workflow function returns.

use crate::activity::ActivityError;
use std::fmt;

/// Why a workflow failed. Returning `Err(WorkflowError)` from a workflow
/// function fails the run with this error type and message (the WIT
/// `failure`).
///
/// `?` on an [`ActivityError`] converts it, keeping the activity's error type,
/// so a run whose payment activity fails with `CardDeclined` fails with
/// `CardDeclined` too.
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
}

impl WorkflowError {
    /// A failure with a short, stable classifier (`CardDeclined`) and a
    /// human-readable explanation.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
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

    pub(crate) fn into_parts(self) -> (String, String) {
        (self.error_type, self.message)
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
        Self {
            message: format!("activity {} failed: {}", error.activity(), error.message()),
            error_type: error.error_type().to_owned(),
        }
    }
}
