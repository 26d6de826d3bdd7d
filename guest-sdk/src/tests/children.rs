//! Child workflows: options, outcomes, and what dropping one does.

use super::*;
use crate::{ChildWorkflowError, ParentClosePolicy};
use std::pin::pin;

fn child_resolved(seq: u32, outcome: Result<&str, WorkflowError>) -> Job {
    Job::ChildResolved {
        seq,
        outcome: outcome.map(str::to_owned),
    }
}

fn request(workflow_type: &str, input: &str) -> ChildRequest {
    ChildRequest {
        workflow_type: workflow_type.to_owned(),
        workflow_id: None,
        input: input.to_owned(),
        parent_close_policy: ParentClosePolicy::Terminate,
        execution_timeout_ms: 0,
    }
}

async fn parent(ctx: Context, n: u32) -> Result<String, WorkflowError> {
    let output: String = ctx
        .child_workflow("kid", &n)
        .id("kid-7")
        .parent_close_policy(ParentClosePolicy::Abandon)
        .execution_timeout(Duration::from_secs(90))
        .await?;
    Ok(format!("kid said {output}"))
}

#[test]
fn a_child_is_started_with_its_options_and_resolves() {
    let (mut executor, status, host) = start(vec![Workflow::new("parent", parent)], "parent", "3");
    assert_eq!(status, Status::Pending);
    assert_eq!(
        host.take(),
        [Command::StartChild {
            seq: 1,
            request: ChildRequest {
                workflow_id: Some("kid-7".to_owned()),
                parent_close_policy: ParentClosePolicy::Abandon,
                execution_timeout_ms: 90_000,
                ..request("kid", "3")
            },
        }]
    );
    assert_eq!(
        executor.deliver(vec![signal("noise", "1")]),
        Status::Pending
    );
    let status = executor.deliver(vec![child_resolved(1, Ok(r#""hi""#))]);
    assert_eq!(status, completed(r#""kid said hi""#));
    assert_eq!(host.take(), []);
}

#[test]
fn a_child_without_options_leaves_the_id_to_the_host() {
    async fn plain(ctx: Context, _: ()) -> Result<u32, WorkflowError> {
        Ok(ctx.child_workflow("kid", "x").await?)
    }
    let (mut executor, _, host) = start(vec![Workflow::new("plain", plain)], "plain", "null");
    assert_eq!(
        host.take(),
        [Command::StartChild {
            seq: 1,
            request: request("kid", r#""x""#),
        }]
    );
    assert_eq!(
        executor.deliver(vec![child_resolved(1, Ok("5"))]),
        completed("5")
    );
}

#[test]
fn a_failed_child_fails_the_parent_with_its_error_type() {
    let (mut executor, _, _) = start(vec![Workflow::new("parent", parent)], "parent", "3");
    let failure = failed(executor.deliver(vec![child_resolved(
        1,
        Err(WorkflowError::new("CardDeclined", "card 4242 was declined")),
    )]));
    assert_eq!(failure.error_type(), "CardDeclined");
    assert_eq!(
        failure.message(),
        "child workflow kid failed: card 4242 was declined"
    );
    assert!(!failure.is_cancellation());
}

#[test]
fn a_child_error_names_the_child_and_its_error_type() {
    async fn inspect(ctx: Context, _: ()) -> Result<String, WorkflowError> {
        let error: ChildWorkflowError = ctx
            .child_workflow::<u32>("kid", &())
            .await
            .expect_err("the test fails the child");
        let as_error: &dyn std::error::Error = &error;
        Ok(format!(
            "{}|{}|{}|{as_error}",
            error.workflow_type(),
            error.error_type(),
            error.message()
        ))
    }
    let (mut executor, _, _) = start(vec![Workflow::new("inspect", inspect)], "inspect", "null");
    let status = executor.deliver(vec![child_resolved(
        1,
        Err(WorkflowError::new("TimedOut", "ran past 90s")),
    )]);
    assert_eq!(
        status,
        completed(
            r#""kid|TimedOut|ran past 90s|child workflow kid failed with TimedOut: ran past 90s""#
        )
    );
}

#[test]
fn a_child_output_of_the_wrong_type_is_a_child_error() {
    let (mut executor, _, _) = start(vec![Workflow::new("parent", parent)], "parent", "3");
    let failure = failed(executor.deliver(vec![child_resolved(1, Ok("42"))]));
    assert_eq!(failure.error_type(), "ChildOutputInvalid");
    assert!(
        failure.message().contains("String"),
        "{}",
        failure.message()
    );
}

#[test]
fn a_child_input_that_does_not_serialize_starts_nothing() {
    async fn bad(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        let input = BTreeMap::from([((1, 2), 3)]);
        ctx.child_workflow::<()>("kid", &input).await?;
        Ok(())
    }
    let (_, status, host) = start(vec![Workflow::new("bad", bad)], "bad", "null");
    assert_eq!(failed(status).error_type(), "ChildInputInvalid");
    assert_eq!(host.take(), []);
}

/// Races a child against a one-second timer, then sleeps once more.
async fn impatient(ctx: Context, _: ()) -> Result<&'static str, WorkflowError> {
    let child = ctx.child_workflow::<String>("kid", &());
    if let Either::Left(_) = select(child, ctx.sleep(Duration::from_secs(1))).await {
        return Ok("child first");
    }
    ctx.sleep(Duration::from_secs(1)).await;
    Ok("gave up")
}

#[test]
fn dropping_a_started_child_asks_it_to_cancel_at_the_end_of_the_round() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("impatient", impatient)],
        "impatient",
        "null",
    );
    assert_eq!(host.take().len(), 2);
    assert_eq!(executor.deliver(vec![Job::TimerFired(2)]), Status::Pending);
    assert_eq!(
        host.take(),
        [Command::Timer { seq: 3, ms: 1000 }, Command::CancelChild(1)]
    );
    // Its late outcome is ignored.
    assert_eq!(
        executor.deliver(vec![child_resolved(
            1,
            Err(WorkflowError::new("Cancelled", ""))
        )]),
        Status::Pending
    );
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(3)]),
        completed(r#""gave up""#)
    );
    assert_eq!(host.take(), []);
}

#[test]
fn a_child_that_resolved_is_not_cancelled_when_dropped() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("impatient", impatient)],
        "impatient",
        "null",
    );
    host.take();
    // Both in one batch: the child wins the select, nothing is cancelled.
    let status = executor.deliver(vec![child_resolved(1, Ok(r#""x""#)), Job::TimerFired(2)]);
    assert_eq!(status, completed(r#""child first""#));
    assert_eq!(host.take(), []);
}

#[test]
fn a_child_held_when_the_workflow_returns_follows_its_parent_close_policy() {
    async fn leaves(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        let mut child = pin!(ctx.child_workflow::<String>("kid", &()));
        select(child.as_mut(), ctx.sleep(Duration::from_secs(1))).await;
        Err(WorkflowError::new(
            "ParentGaveUp",
            "the child is still running",
        ))
    }
    let (mut executor, _, host) = start(vec![Workflow::new("leaves", leaves)], "leaves", "null");
    assert_eq!(host.take().len(), 2);
    let failure = failed(executor.deliver(vec![Job::TimerFired(2)]));
    assert_eq!(failure.error_type(), "ParentGaveUp");
    // No request-cancel-child: the host applies the parent-close policy.
    assert_eq!(host.take(), []);
}

#[test]
fn tearing_down_the_executor_cancels_no_child() {
    let (executor, _, host) = start(vec![Workflow::new("parent", parent)], "parent", "3");
    assert_eq!(host.take().len(), 1);
    drop(executor);
    assert_eq!(host.take(), []);
}

#[test]
#[should_panic(expected = "set them before awaiting it")]
fn child_options_after_the_start_are_a_bug() {
    async fn late(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        let mut child = Box::pin(ctx.child_workflow::<()>("kid", &()));
        select(child.as_mut(), std::future::ready(())).await;
        let child = Pin::into_inner(child).id("too-late");
        child.await?;
        Ok(())
    }
    start(vec![Workflow::new("late", late)], "late", "null");
}
