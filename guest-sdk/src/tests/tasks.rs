//! Tasks spawned with `Context::spawn`.

use super::*;

#[test]
fn tasks_are_polled_after_the_root_in_spawn_order() {
    async fn spawner(ctx: Context, _: ()) -> Result<String, WorkflowError> {
        for name in ["a", "b"] {
            let task = ctx.clone();
            ctx.spawn(async move {
                let _: Result<String, _> = task.activity("task", name).await;
                // A task spawned by a task runs in the same round.
                let inner = task.clone();
                task.spawn(async move {
                    let _: Result<String, _> = inner.activity("inner", name).await;
                });
            });
        }
        Ok(ctx.activity("root", &()).await?)
    }
    let (mut executor, _, host) = start(vec![Workflow::new("spawner", spawner)], "spawner", "null");
    assert_eq!(
        host.take(),
        [
            activity(1, "root", "null"),
            activity(2, "task", r#""a""#),
            activity(3, "task", r#""b""#),
        ]
    );
    // Resolved out of order: still polled in spawn order.
    assert_eq!(
        executor.deliver(vec![resolved(3, "1"), resolved(2, "1")]),
        Status::Pending
    );
    assert_eq!(
        host.take(),
        [
            activity(4, "inner", r#""a""#),
            activity(5, "inner", r#""b""#)
        ]
    );
    assert_eq!(
        executor.deliver(vec![resolved(1, r#""done""#)]),
        completed(r#""done""#)
    );
}

#[test]
fn unfinished_tasks_are_dropped_without_commands_when_the_root_ends() {
    async fn short(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        let task = ctx.clone();
        ctx.spawn(async move {
            task.sleep(Duration::from_secs(3600)).await;
            task.log_warn("never");
        });
        ctx.sleep(Duration::from_secs(1)).await;
        Ok(())
    }
    let (mut executor, _, host) = start(vec![Workflow::new("short", short)], "short", "null");
    assert_eq!(
        host.take(),
        [
            Command::Timer { seq: 1, ms: 1000 },
            Command::Timer {
                seq: 2,
                ms: 3_600_000
            }
        ]
    );
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(1)]),
        completed("null")
    );
    // No cancel-timer for the task's timer: the run is over.
    assert_eq!(host.take(), []);
    assert_eq!(
        executor.deliver(vec![Job::TimerFired(2)]),
        completed("null")
    );
    assert!(host.logs.borrow().is_empty());
}

#[test]
fn a_task_and_the_root_hand_values_to_each_other() {
    async fn relay(ctx: Context, _: ()) -> Result<u32, WorkflowError> {
        let value = Rc::new(Cell::new(None));
        ctx.spawn({
            let (ctx, value) = (ctx.clone(), Rc::clone(&value));
            async move {
                let n: u32 = ctx.signal("n").recv().await;
                value.set(Some(n * 2));
            }
        });
        let seen = Rc::clone(&value);
        ctx.wait_until(move || seen.get().is_some()).await;
        Ok(value.get().unwrap_or_default())
    }
    let (mut executor, status, _) = start(vec![Workflow::new("relay", relay)], "relay", "null");
    assert_eq!(status, Status::Pending);
    assert_eq!(executor.deliver(vec![signal("n", "21")]), completed("42"));
}

#[test]
#[should_panic(expected = "wakes itself in a loop")]
fn a_task_that_always_wakes_itself_is_stopped() {
    async fn busy(ctx: Context, _: ()) -> Result<(), WorkflowError> {
        ctx.spawn(async {
            loop {
                YieldNow(false).await;
            }
        });
        ctx.sleep(Duration::from_secs(1)).await;
        Ok(())
    }
    start(vec![Workflow::new("busy", busy)], "busy", "null");
}
