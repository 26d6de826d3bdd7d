//! Updates: validation, delivery, completion.

use super::*;

fn update(id: &str, name: &str, input: &str) -> Job {
    Job::UpdateReceived {
        id: id.to_owned(),
        name: name.to_owned(),
        input: input.to_owned(),
    }
}

fn answered(id: &str, outcome: Result<&str, WorkflowError>) -> Command {
    Command::CompleteUpdate {
        id: id.to_owned(),
        outcome: outcome.map(str::to_owned),
    }
}

/// A value that update `add` raises (after an `echo` activity) and update
/// `reset` sets to zero; ends on signal `done`.
async fn updatable(ctx: Context, start: i64) -> Result<i64, WorkflowError> {
    let value = Rc::new(Cell::new(start));
    ctx.on_query("value", {
        let value = Rc::clone(&value);
        move || value.get()
    });
    ctx.on_update_validated(
        "add",
        |amount: &i64| {
            if *amount < 0 {
                Err("amounts must not be negative".to_owned())
            } else {
                Ok(())
            }
        },
        {
            let (ctx, value) = (ctx.clone(), Rc::clone(&value));
            move |amount: i64| {
                let (ctx, value) = (ctx.clone(), Rc::clone(&value));
                async move {
                    let _: String = ctx.activity("echo", &amount.to_string()).await?;
                    value.set(value.get() + amount);
                    Ok(value.get())
                }
            }
        },
    );
    ctx.on_update("reset", {
        let value = Rc::clone(&value);
        move |why: String| {
            let value = Rc::clone(&value);
            async move {
                if why.is_empty() {
                    return Err(WorkflowError::new("NoReason", "say why"));
                }
                value.set(0);
                Ok(())
            }
        }
    });
    ctx.signal::<()>("done").recv().await;
    Ok(value.get())
}

#[test]
fn the_validator_accepts_and_rejects_without_changing_anything() {
    let (executor, _, host) = start(
        vec![Workflow::new("updatable", updatable)],
        "updatable",
        "10",
    );
    assert_eq!(executor.validate_update("add", "5"), Ok(()));
    assert_eq!(
        executor.validate_update("add", "-1"),
        Err("amounts must not be negative".to_owned())
    );
    // No validator: anything that deserializes is accepted.
    assert_eq!(executor.validate_update("reset", r#""why not""#), Ok(()));
    assert_eq!(executor.query("value", "null"), Ok("10".to_owned()));
    assert_eq!(host.take(), []);
}

#[test]
fn validation_refuses_unknown_names_and_bad_input() {
    let (executor, _, _) = start(
        vec![Workflow::new("updatable", updatable)],
        "updatable",
        "10",
    );
    assert_eq!(
        executor.validate_update("sub", "5"),
        Err("unknown update sub; this workflow accepts: add, reset".to_owned())
    );
    let bad = executor
        .validate_update("add", r#""five""#)
        .expect_err("a string is no i64");
    assert!(
        bad.starts_with("the input of update add does not deserialize as i64: "),
        "{bad}"
    );

    let (executor, _, _) = start(vec![Workflow::new("hello", hello)], "hello", r#""x""#);
    assert_eq!(
        executor.validate_update("add", "1"),
        Err("unknown update add; this workflow accepts no updates".to_owned())
    );
}

#[test]
fn an_update_runs_its_handler_as_a_task_and_completes_with_its_output() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("updatable", updatable)],
        "updatable",
        "10",
    );
    assert_eq!(
        executor.deliver(vec![update("u1", "add", "5")]),
        Status::Pending
    );
    assert_eq!(host.take(), [activity(1, "echo", r#""5""#)]);
    // A second one runs concurrently with the first.
    assert_eq!(
        executor.deliver(vec![update("u2", "add", "7")]),
        Status::Pending
    );
    assert_eq!(host.take(), [activity(2, "echo", r#""7""#)]);
    assert_eq!(
        executor.deliver(vec![resolved(2, r#""7""#)]),
        Status::Pending
    );
    assert_eq!(host.take(), [answered("u2", Ok("17"))]);
    assert_eq!(
        executor.deliver(vec![resolved(1, r#""5""#)]),
        Status::Pending
    );
    assert_eq!(host.take(), [answered("u1", Ok("22"))]);
    assert_eq!(executor.query("value", "null"), Ok("22".to_owned()));
    assert_eq!(
        executor.deliver(vec![signal("done", "null")]),
        completed("22")
    );
}

#[test]
fn a_failing_handler_completes_the_update_with_its_failure() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("updatable", updatable)],
        "updatable",
        "10",
    );
    executor.deliver(vec![
        update("u1", "reset", r#""""#),
        update("u2", "reset", r#""because""#),
    ]);
    assert_eq!(
        host.take(),
        [
            answered("u1", Err(WorkflowError::new("NoReason", "say why"))),
            answered("u2", Ok("null")),
        ]
    );
    executor.deliver(vec![update("u3", "add", "1")]);
    executor.deliver(vec![Job::ActivityResolved {
        seq: 1,
        outcome: Err(WorkflowError::new("EchoDown", "no echo")),
    }]);
    assert_eq!(
        host.take(),
        [
            activity(1, "echo", r#""1""#),
            answered(
                "u3",
                Err(WorkflowError::new(
                    "EchoDown",
                    "activity echo failed: no echo"
                ))
            ),
        ]
    );
    assert_eq!(executor.query("value", "null"), Ok("0".to_owned()));
}

#[test]
fn an_update_for_a_name_without_a_handler_fails_at_once() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("updatable", updatable)],
        "updatable",
        "10",
    );
    assert_eq!(
        executor.deliver(vec![update("u9", "sub", "1")]),
        Status::Pending
    );
    assert_eq!(
        host.take(),
        [answered(
            "u9",
            Err(WorkflowError::new(
                "UnknownUpdate",
                "unknown update sub; this workflow accepts: add, reset"
            ))
        )]
    );
}

#[test]
fn an_update_whose_input_does_not_deserialize_fails_without_running() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("updatable", updatable)],
        "updatable",
        "10",
    );
    executor.deliver(vec![update("u1", "add", r#""x""#)]);
    let [
        Command::CompleteUpdate {
            id,
            outcome: Err(failure),
        },
    ] = &host.take()[..]
    else {
        panic!("expected one failed update")
    };
    assert_eq!(id, "u1");
    assert_eq!(failure.error_type(), "UpdateInputInvalid");
}

#[test]
fn a_finished_run_accepts_no_updates() {
    let (mut executor, _, _) = start(
        vec![Workflow::new("updatable", updatable)],
        "updatable",
        "1",
    );
    assert_eq!(
        executor.deliver(vec![signal("done", "null")]),
        completed("1")
    );
    let refused = executor
        .validate_update("add", "1")
        .expect_err("the run ended");
    assert!(refused.contains("after the workflow ended"), "{refused}");
    // Queries still answer.
    assert_eq!(executor.query("value", "null"), Ok("1".to_owned()));
}

#[test]
fn an_update_still_running_when_the_workflow_returns_is_dropped_unanswered() {
    let (mut executor, _, host) = start(
        vec![Workflow::new("updatable", updatable)],
        "updatable",
        "10",
    );
    executor.deliver(vec![update("u1", "add", "5")]);
    assert_eq!(host.take(), [activity(1, "echo", r#""5""#)]);
    assert_eq!(
        executor.deliver(vec![signal("done", "null")]),
        completed("10")
    );
    // Delivered with the signal that ends the run: the root returns before
    // the handler's first poll, so it issues nothing.
    let (mut executor, _, host) = start(
        vec![Workflow::new("updatable", updatable)],
        "updatable",
        "10",
    );
    let status = executor.deliver(vec![update("u2", "add", "5"), signal("done", "null")]);
    assert_eq!(status, completed("10"));
    assert_eq!(host.take(), []);
}
