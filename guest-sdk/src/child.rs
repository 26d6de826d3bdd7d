//! Child workflows: [`ChildWorkflow`], the future
//! [`Context::child_workflow`](crate::Context::child_workflow) returns, its
//! [`ParentClosePolicy`] and [`ChildWorkflowError`].

use crate::activity::millis;
use crate::executor::Shared;
use serde::de::DeserializeOwned;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

/// The error type of a [`ChildWorkflowError`] when the input did not
/// serialize to JSON (the child is then never started).
const INPUT_INVALID: &str = "ChildInputInvalid";
/// ... when the child completed but its output does not deserialize as the
/// type the parent asked for.
const OUTPUT_INVALID: &str = "ChildOutputInvalid";

/// What happens to a child workflow that is still running when its parent
/// closes (completes, fails, is cancelled or continues as new).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ParentClosePolicy {
    /// The child is terminated.
    #[default]
    Terminate,
    /// The child is asked to cancel (it sees [`Context::cancelled`](crate::Context::cancelled))
    /// and may clean up.
    RequestCancel,
    /// The child runs on by itself.
    Abandon,
}

/// What the SDK asks the host to start.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChildRequest {
    pub(crate) workflow_type: String,
    /// `None`: the host derives `<parent workflow id>/<seq>`.
    pub(crate) workflow_id: Option<String>,
    /// JSON.
    pub(crate) input: String,
    pub(crate) parent_close_policy: ParentClosePolicy,
    /// Zero: no limit.
    pub(crate) execution_timeout_ms: u64,
}

/// A child workflow's failure, as the parent sees it.
///
/// Its [`error_type`](Self::error_type) is the child's own failure type
/// (`CardDeclined`), or one of `Cancelled`, `Terminated`, `TimedOut`,
/// `WorkflowIdInUse` (the host could not start it), `ChildOutputInvalid` or
/// `ChildInputInvalid` (the JSON on either side did not fit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildWorkflowError {
    workflow_type: String,
    error_type: String,
    message: String,
}

impl ChildWorkflowError {
    fn new(workflow_type: &str, error_type: String, message: String) -> Self {
        Self {
            workflow_type: workflow_type.to_owned(),
            error_type,
            message,
        }
    }

    /// The child's workflow type.
    pub fn workflow_type(&self) -> &str {
        &self.workflow_type
    }

    /// The short, stable classifier of the child's failure.
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ChildWorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "child workflow {} failed with {}: {}",
            self.workflow_type, self.error_type, self.message
        )
    }
}

impl std::error::Error for ChildWorkflowError {}

/// A child workflow, started on first poll; awaiting it yields the child's
/// output deserialized as `O`, or its failure.
///
/// The `start-child` command is issued the first time the future is polled,
/// so [`id`](Self::id), [`parent_close_policy`](Self::parent_close_policy) and
/// [`execution_timeout`](Self::execution_timeout) can still be set.
///
/// Dropping a started child before it resolves (say, the loser of a
/// [`select`](crate::select)) asks the host to cancel it, at the end of the
/// executor's poll round. A child still held when the workflow function
/// returns is not cancelled that way: then its [`ParentClosePolicy`] decides.
#[must_use = "a child workflow is started only when its future is awaited"]
pub struct ChildWorkflow<O> {
    shared: Rc<Shared>,
    workflow_type: String,
    /// The input as JSON, or why it did not serialize.
    input: Result<String, String>,
    workflow_id: Option<String>,
    parent_close_policy: ParentClosePolicy,
    execution_timeout: Duration,
    seq: Option<u32>,
    finished: bool,
    output: PhantomData<fn() -> O>,
}

impl<O> ChildWorkflow<O> {
    pub(crate) fn new(
        shared: Rc<Shared>,
        workflow_type: &str,
        input: Result<String, String>,
    ) -> Self {
        Self {
            shared,
            workflow_type: workflow_type.to_owned(),
            input,
            workflow_id: None,
            parent_close_policy: ParentClosePolicy::default(),
            execution_timeout: Duration::ZERO,
            seq: None,
            finished: false,
            output: PhantomData,
        }
    }

    /// The child's workflow id. By default the host derives
    /// `<parent workflow id>/<sequence number>`, which is unique within the
    /// parent; choose one yourself to address the child from outside.
    pub fn id(mut self, workflow_id: impl Into<String>) -> Self {
        self.assert_unstarted();
        self.workflow_id = Some(workflow_id.into());
        self
    }

    /// What happens to the child if the parent closes first; by default
    /// [`ParentClosePolicy::Terminate`].
    pub fn parent_close_policy(mut self, policy: ParentClosePolicy) -> Self {
        self.assert_unstarted();
        self.parent_close_policy = policy;
        self
    }

    /// The child's whole execution, continue-as-new included, must end
    /// within this or it is timed out (`TimedOut`). By default there is no limit.
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.assert_unstarted();
        self.execution_timeout = timeout;
        self
    }

    fn assert_unstarted(&self) {
        assert!(
            self.seq.is_none(),
            "weft-sdk: options of child workflow {} were changed after it was started; set them before awaiting it",
            self.workflow_type
        );
    }
}

impl<O: DeserializeOwned> Future for ChildWorkflow<O> {
    type Output = Result<O, ChildWorkflowError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(
            !this.finished,
            "weft-sdk: child workflow {} was polled after it completed",
            this.workflow_type
        );
        let seq = match (this.seq, &this.input) {
            (Some(seq), _) => seq,
            (None, Ok(input)) => {
                let seq = this.shared.start_child(&ChildRequest {
                    workflow_type: this.workflow_type.clone(),
                    workflow_id: this.workflow_id.clone(),
                    input: input.clone(),
                    parent_close_policy: this.parent_close_policy,
                    execution_timeout_ms: millis(this.execution_timeout),
                });
                this.seq = Some(seq);
                seq
            }
            (None, Err(why)) => {
                this.finished = true;
                return Poll::Ready(Err(ChildWorkflowError::new(
                    &this.workflow_type,
                    INPUT_INVALID.to_owned(),
                    format!("the input does not serialize to JSON: {why}"),
                )));
            }
        };
        let Some(outcome) = this.shared.take_child(seq, cx.waker()) else {
            return Poll::Pending;
        };
        this.finished = true;
        Poll::Ready(match outcome {
            Ok(output) => serde_json::from_str(&output).map_err(|e| {
                let message = format!(
                    "its output does not deserialize as {}: {e}; the output was {output}",
                    std::any::type_name::<O>()
                );
                ChildWorkflowError::new(&this.workflow_type, OUTPUT_INVALID.to_owned(), message)
            }),
            Err(failure) => {
                let (error_type, message) = failure.into_parts();
                Err(ChildWorkflowError::new(
                    &this.workflow_type,
                    error_type,
                    message,
                ))
            }
        })
    }
}

impl<O> Drop for ChildWorkflow<O> {
    fn drop(&mut self) {
        if let (Some(seq), false) = (self.seq, self.finished) {
            self.shared.drop_child(seq);
        }
    }
}
