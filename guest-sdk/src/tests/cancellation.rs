//! Cancel requests, sagas and continue-as-new.

use super::*;
use crate::Saga;

fn cancel(reason: &str) -> Job {
    Job::CancelRequested(reason.to_owned())
}

#[test]
fn continue_as_new_ends_the_run_with_the_next_input() {
    async fn rounds(ctx: Context, round: u32) -> Result<u32, WorkflowError> {
        if round >= 3 {
            return Ok(round);
        }
        ctx.sleep(Duration::from_secs(1)).await;
        let next = ctx.continue_as_new(&(round + 1));
        assert!(next.is_continue_as_new());
        Err(next)
    }
    let (mut executor, _, _) = start(vec![Workflow::new("rounds", rounds)], "rounds", "1");
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(1)]),
        Status::ContinuedAsNew("2".to_owned())
    );
    let (_, status, _) = start(vec![Workflow::new("rounds", rounds)], "rounds", "3");
    assert_eq!(status, completed("3"));
}

#[test]
fn continue_as_new_with_an_input_that_does_not_serialize_fails() {
    async fn bad(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        Err(ctx.continue_as_new(&BTreeMap::from([((1, 2), 3)])))
    }
    let (_, status, _) = start(vec![Workflow::new("bad", bad)], "bad", "null");
    assert_eq!(failed(status).error_type(), "ContinueAsNewInputInvalid");
}

#[test]
fn only_the_cancelled_constructor_ends_a_run_as_cancelled() {
    async fn ends(_ctx: Context, how: String) -> Result<(), WorkflowError> {
        Err(match how.as_str() {
            "cancelled" => WorkflowError::cancelled("as asked"),
            _ => WorkflowError::new("Cancelled", "just a type name"),
        })
    }
    let (_, status, _) = start(vec![Workflow::new("ends", ends)], "ends", r#""cancelled""#);
    assert_eq!(status, Status::Cancelled("as asked".to_owned()));
    let (_, status, _) = start(vec![Workflow::new("ends", ends)], "ends", r#""other""#);
    let failure = failed(status);
    assert_eq!(failure.error_type(), "Cancelled");
    assert!(!failure.is_cancellation());
    assert!(WorkflowError::cancelled("x").is_cancellation());
    assert_eq!(WorkflowError::cancelled("x").error_type(), "Cancelled");
}

#[test]
fn every_cancelled_future_sees_the_first_request() {
    async fn watch(ctx: Context, _: ()) -> Result<Vec<String>, WorkflowError> {
        let before = (ctx.is_cancel_requested(), ctx.cancel_reason());
        assert_eq!(before, (false, None));
        let cancelled = ctx.cancelled();
        let (a, b) = join(cancelled.clone(), ctx.cancelled()).await;
        // Already requested: resolves at once, and a second request changed nothing.
        ctx.sleep(Duration::from_secs(1)).await;
        let again = ctx.cancelled().await;
        let reason = ctx.cancel_reason().unwrap_or_default();
        Ok(vec![
            a,
            b,
            again,
            reason,
            ctx.is_cancel_requested().to_string(),
        ])
    }
    let (mut executor, _, host) = start(vec![Workflow::new("watch", watch)], "watch", "null");
    assert_eq!(host.take(), []);
    assert_eq!(executor.deliver(vec![cancel("first")]), Status::Pending);
    assert_eq!(executor.deliver(vec![cancel("second")]), Status::Pending);
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(1)]),
        completed(r#"["first","first","first","first","true"]"#)
    );
}

/// Reserves and charges with compensations, then waits for `ship` or a
/// cancel request; on cancel, compensates and ends cancelled with the saga's
/// first failure (if any) in the message.
async fn order(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    let step = |name: &'static str| {
        let ctx = ctx.clone();
        move || async move {
            ctx.activity::<String>(name, "order")
                .await
                .map(drop)
                .map_err(WorkflowError::from)
        }
    };
    let mut saga = Saga::new();
    step("reserve")().await?;
    saga.add(step("release"));
    step("charge")().await?;
    saga.add(step("refund"));
    assert_eq!(saga.len(), 2);
    match select(ctx.signal::<()>("ship").recv(), ctx.cancelled()).await {
        Either::Left(()) => Ok("shipped".to_owned()),
        Either::Right(reason) => match saga.compensate().await {
            Ok(()) => Err(WorkflowError::cancelled(reason)),
            Err(first) => Err(WorkflowError::cancelled(format!("{reason}; {first}"))),
        },
    }
}

#[test]
fn a_cancel_request_runs_the_compensations_in_reverse_then_cancels() {
    let (mut executor, _, host) = start(vec![Workflow::new("order", order)], "order", "null");
    assert_eq!(host.take(), [activity(1, "reserve", r#""order""#)]);
    executor.deliver(vec![resolved(1, r#""r""#)]);
    assert_eq!(host.take(), [activity(2, "charge", r#""order""#)]);
    assert_eq!(
        executor.deliver(vec![resolved(2, r#""c""#)]),
        Status::Pending
    );
    assert_eq!(host.take(), []);

    assert_eq!(
        executor.deliver(vec![cancel("customer left")]),
        Status::Pending
    );
    // One at a time, newest first.
    assert_eq!(host.take(), [activity(3, "refund", r#""order""#)]);
    executor.deliver(vec![resolved(3, r#""ok""#)]);
    assert_eq!(host.take(), [activity(4, "release", r#""order""#)]);
    let status = executor.deliver(vec![resolved(4, r#""ok""#)]);
    assert_eq!(status, Status::Cancelled("customer left".to_owned()));
}

#[test]
fn a_failing_compensation_does_not_stop_the_others() {
    let (mut executor, _, host) = start(vec![Workflow::new("order", order)], "order", "null");
    executor.deliver(vec![resolved(1, r#""r""#)]);
    executor.deliver(vec![resolved(2, r#""c""#)]);
    host.take();
    executor.deliver(vec![cancel("stop")]);
    executor.deliver(vec![Job::ActivityResolved {
        seq: 3,
        outcome: Err(WorkflowError::new("RefundFailed", "bank down")),
    }]);
    assert_eq!(
        host.take(),
        [
            activity(3, "refund", r#""order""#),
            activity(4, "release", r#""order""#)
        ]
    );
    let status = executor.deliver(vec![resolved(4, r#""ok""#)]);
    assert_eq!(
        status,
        Status::Cancelled("stop; RefundFailed: activity refund failed: bank down".to_owned())
    );
}

#[test]
fn shipping_runs_no_compensation() {
    let (mut executor, _, host) = start(vec![Workflow::new("order", order)], "order", "null");
    executor.deliver(vec![resolved(1, r#""r""#)]);
    executor.deliver(vec![resolved(2, r#""c""#)]);
    host.take();
    assert_eq!(
        executor.deliver(vec![signal("ship", "null")]),
        completed(r#""shipped""#)
    );
    assert_eq!(host.take(), []);
}

#[test]
fn a_saga_returns_the_first_failure_after_running_every_compensation() {
    async fn undo(_ctx: Context, _: ()) -> Result<(Vec<u32>, String), WorkflowError> {
        let ran = Rc::new(RefCell::new(Vec::new()));
        let mut saga = Saga::new();
        assert!(saga.is_empty());
        for i in 1..=4u32 {
            let ran = Rc::clone(&ran);
            saga.add(move || async move {
                ran.borrow_mut().push(i);
                if i % 2 == 1 {
                    Err(WorkflowError::new(format!("Failed{i}"), "undo failed"))
                } else {
                    Ok(())
                }
            });
        }
        let first = saga.compensate().await.expect_err("two compensations fail");
        let ran = ran.borrow().clone();
        Ok((ran, first.error_type().to_owned()))
    }
    let (_, status, _) = start(vec![Workflow::new("undo", undo)], "undo", "null");
    assert_eq!(status, completed(r#"[[4,3,2,1],"Failed3"]"#));
}

#[test]
fn a_saga_that_is_dropped_runs_nothing() {
    async fn keep(_ctx: Context, _: ()) -> Result<bool, WorkflowError> {
        let ran = Rc::new(Cell::new(false));
        let mut saga = Saga::new();
        saga.add({
            let ran = Rc::clone(&ran);
            move || async move {
                ran.set(true);
                Ok(())
            }
        });
        drop(saga);
        assert!(Saga::new().compensate().await.is_ok());
        Ok(ran.get())
    }
    let (_, status, _) = start(vec![Workflow::new("keep", keep)], "keep", "null");
    assert_eq!(status, completed("false"));
}
