//! Child workflows: fan-out, and a parent that gives up on its child.

use std::time::Duration;
use weft_sdk::{Context, Either, ParentClosePolicy, WorkflowError, join_all, select};

/// Starts `n` children `child_echo`, the i-th (from 0) with input `item-<i>`
/// and workflow id `<own id>-child-<i>`, and returns their outputs in that
/// order.
pub(crate) async fn parent(ctx: Context, n: u32) -> Result<Vec<String>, WorkflowError> {
    let id = ctx.workflow_id();
    let children = (0..n).map(|i| {
        ctx.child_workflow::<String>("child_echo", &format!("item-{i}"))
            .id(format!("{id}-child-{i}"))
    });
    let outputs = join_all(children).await;
    Ok(outputs.into_iter().collect::<Result<_, _>>()?)
}

/// Returns what activity `echo` returns for `s`.
pub(crate) async fn child_echo(ctx: Context, s: String) -> Result<String, WorkflowError> {
    Ok(ctx.activity("echo", &s).await?)
}

/// Starts child `child_waits` with id `<own id>-child` and the parent-close
/// policy `policy` (`terminate`, `request_cancel` or `abandon`), sleeps one
/// second and fails with `ParentGaveUp` while the child is still open, so
/// that the policy decides what happens to it.
pub(crate) async fn parent_then_fail(ctx: Context, policy: String) -> Result<(), WorkflowError> {
    let policy = match policy.as_str() {
        "terminate" => ParentClosePolicy::Terminate,
        "request_cancel" => ParentClosePolicy::RequestCancel,
        "abandon" => ParentClosePolicy::Abandon,
        other => {
            return Err(WorkflowError::new(
                "UnknownPolicy",
                format!(
                    "{other:?} is no parent-close policy; use terminate, request_cancel or abandon"
                ),
            ));
        }
    };
    let child = ctx
        .child_workflow::<String>("child_waits", &())
        .id(format!("{}-child", ctx.workflow_id()))
        .parent_close_policy(policy);
    // Held by a task, which the run drops without a cancel request when the
    // parent returns: the policy alone decides the child's fate.
    ctx.spawn(async move {
        let _ = child.await;
    });
    ctx.sleep(Duration::from_secs(1)).await;
    Err(WorkflowError::new(
        "ParentGaveUp",
        "the parent stopped waiting for its child",
    ))
}

/// Returns the first message of signal `finish` (a string), or ends
/// cancelled, with the request's reason, when asked to cancel first.
pub(crate) async fn child_waits(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    match select(ctx.signal::<String>("finish").recv(), ctx.cancelled()).await {
        Either::Left(message) => Ok(message),
        Either::Right(reason) => Err(WorkflowError::cancelled(reason)),
    }
}
