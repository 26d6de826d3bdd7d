//! `wait_until` and `wait_until_timeout`.

use super::*;

/// Counts `approve` signals in a spawned task; waits (up to `timeout_ms`, if
/// given) until `needed` arrived.
async fn approvals(
    ctx: Context,
    (needed, timeout_ms): (u32, Option<u64>),
) -> Result<String, WorkflowError> {
    let count = Rc::new(Cell::new(0u32));
    ctx.spawn({
        let (ctx, count) = (ctx.clone(), Rc::clone(&count));
        async move {
            let approve = ctx.signal::<()>("approve");
            loop {
                approve.recv().await;
                count.set(count.get() + 1);
            }
        }
    });
    let enough = {
        let count = Rc::clone(&count);
        move || count.get() >= needed
    };
    match timeout_ms {
        None => {
            ctx.wait_until(enough).await;
            Ok(format!("held at {}", count.get()))
        }
        Some(ms) => {
            let held = ctx
                .wait_until_timeout(enough, Duration::from_millis(ms))
                .await;
            Ok(format!("{held} at {}", count.get()))
        }
    }
}

#[test]
fn wait_until_completes_in_the_activation_that_makes_the_predicate_hold() {
    let (mut executor, status, host) = start(
        vec![Workflow::new("approvals", approvals)],
        "approvals",
        "[2,null]",
    );
    assert_eq!(status, Status::Pending);
    assert_eq!(
        executor.deliver(vec![signal("approve", "null")]),
        Status::Pending
    );
    assert_eq!(
        executor.deliver(vec![signal("other", "null")]),
        Status::Pending
    );
    assert_eq!(
        executor.deliver(vec![signal("approve", "null")]),
        completed(r#""held at 2""#)
    );
    assert_eq!(host.take(), []);
}

#[test]
fn wait_until_on_a_predicate_that_holds_does_not_wait() {
    let (_, status, host) = start(
        vec![Workflow::new("approvals", approvals)],
        "approvals",
        "[0,null]",
    );
    assert_eq!(status, completed(r#""held at 0""#));
    assert_eq!(host.take(), []);
}

#[test]
fn wait_until_timeout_cancels_its_timer_when_the_predicate_wins() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("approvals", approvals)],
        "approvals",
        "[1,5000]",
    );
    assert_eq!(host.take(), [Command::Timer { seq: 1, ms: 5000 }]);
    assert_eq!(
        executor.deliver(vec![signal("approve", "null")]),
        completed(r#""true at 1""#)
    );
    assert_eq!(host.take(), [Command::CancelTimer(1)]);
}

#[test]
fn wait_until_timeout_is_false_when_the_timer_fires_first() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("approvals", approvals)],
        "approvals",
        "[2,5000]",
    );
    host.take();
    assert_eq!(
        executor.deliver(vec![signal("approve", "null")]),
        Status::Pending
    );
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(1)]),
        completed(r#""false at 1""#)
    );
    assert_eq!(host.take(), []);
}

#[test]
fn wait_until_timeout_on_a_predicate_that_holds_starts_no_timer() {
    let (_, status, host) = start(
        vec![Workflow::new("approvals", approvals)],
        "approvals",
        "[0,5000]",
    );
    assert_eq!(status, completed(r#""true at 0""#));
    assert_eq!(host.take(), []);
}

#[test]
fn a_predicate_that_holds_when_the_timer_fires_wins() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("approvals", approvals)],
        "approvals",
        "[1,5000]",
    );
    host.take();
    let status = executor.deliver(vec![Job::TimerFired(1), signal("approve", "null")]);
    assert_eq!(status, completed(r#""true at 1""#));
    // The timer had fired: nothing to cancel.
    assert_eq!(host.take(), []);
}

#[test]
fn a_predicate_may_read_the_cancel_request() {
    async fn until_cancelled(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        let asking = ctx.clone();
        ctx.wait_until(move || asking.is_cancel_requested()).await;
        Err(WorkflowError::cancelled(
            ctx.cancel_reason().unwrap_or_default(),
        ))
    }
    let (mut executor, status, _) = start(
        vec![Workflow::new("until_cancelled", until_cancelled)],
        "until_cancelled",
        "null",
    );
    assert_eq!(status, Status::Pending);
    assert_eq!(
        executor.deliver(vec![Job::CancelRequested("enough".to_owned())]),
        Status::Cancelled("enough".to_owned())
    );
}

#[test]
fn conditions_are_checked_in_registration_order_and_again_when_they_stop_holding() {
    /// Two conditions on one counter; the first to complete takes the count
    /// back down, so the second must wait for another signal.
    async fn contend(ctx: Context, _: ()) -> Result<Vec<&'static str>, WorkflowError> {
        let count = Rc::new(Cell::new(0u32));
        let order = Rc::new(RefCell::new(Vec::new()));
        ctx.spawn({
            let (ctx, count) = (ctx.clone(), Rc::clone(&count));
            async move {
                loop {
                    ctx.signal::<()>("tick").recv().await;
                    count.set(count.get() + 1);
                }
            }
        });
        let waiter = |name: &'static str| {
            let (ctx, count, order) = (ctx.clone(), Rc::clone(&count), Rc::clone(&order));
            async move {
                let seen = Rc::clone(&count);
                ctx.wait_until(move || seen.get() > 0).await;
                count.set(count.get() - 1);
                order.borrow_mut().push(name);
            }
        };
        join(waiter("first"), waiter("second")).await;
        let order = order.borrow().clone();
        Ok(order)
    }
    let (mut executor, _, _) = start(vec![Workflow::new("contend", contend)], "contend", "null");
    assert_eq!(
        executor.deliver(vec![signal("tick", "null")]),
        Status::Pending
    );
    assert_eq!(
        executor.deliver(vec![signal("tick", "null")]),
        completed(r#"["first","second"]"#)
    );
}

#[test]
fn a_held_condition_that_nobody_polls_does_not_keep_the_activation_busy() {
    async fn holds_one(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        let flag = Rc::new(Cell::new(false));
        let seen = Rc::clone(&flag);
        let mut waiting = Box::pin(ctx.wait_until(move || seen.get()));
        // Polled once (registered), then held without being polled again.
        select(waiting.as_mut(), std::future::ready(())).await;
        flag.set(true);
        ctx.sleep(Duration::from_secs(1)).await;
        drop(waiting);
        Ok(())
    }
    let (mut executor, status, host) = start(
        vec![Workflow::new("holds_one", holds_one)],
        "holds_one",
        "null",
    );
    assert_eq!(status, Status::Pending);
    assert_eq!(host.take(), [Command::Timer { seq: 1, ms: 1000 }]);
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(1)]),
        completed("null")
    );
}

#[test]
fn an_expired_condition_that_nobody_polls_does_not_keep_the_activation_busy() {
    async fn holds_one(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        let mut waiting = Box::pin(ctx.wait_until_timeout(|| false, Duration::from_millis(5)));
        select(waiting.as_mut(), std::future::ready(())).await;
        ctx.signal::<()>("go").recv().await;
        // Polled once after its timer fired (it waits for the check), then held.
        select(waiting.as_mut(), std::future::ready(())).await;
        ctx.sleep(Duration::from_secs(1)).await;
        Ok(())
    }
    let (mut executor, _, host) = start(
        vec![Workflow::new("holds_one", holds_one)],
        "holds_one",
        "null",
    );
    assert_eq!(host.take(), [Command::Timer { seq: 1, ms: 5 }]);
    assert_eq!(executor.deliver(vec![Job::TimerFired(1)]), Status::Pending);
    assert_eq!(
        executor.deliver(vec![signal("go", "null")]),
        Status::Pending
    );
    assert_eq!(host.take(), [Command::Timer { seq: 2, ms: 1000 }]);
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(2)]),
        completed("null")
    );
}
