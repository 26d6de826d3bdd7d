//! `steps`: one of everything, in a fixed order.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use weft_sdk::{ActivityError, Context, Either, WorkflowError, join, select};

#[derive(Deserialize)]
pub(crate) struct StepsInput {
    label: String,
    timer_ms: u64,
}

/// The input of each `step` activity.
#[derive(Serialize)]
struct Step<'a> {
    name: &'a str,
    label: &'a str,
}

#[derive(Serialize)]
pub(crate) struct StepsOutput {
    a: String,
    go: String,
    b: String,
    c: String,
    extra: String,
}

/// In order: activity `step` `{"name":"a","label":label}`; a `timer_ms`
/// timer; the first message of signal `go` (a string); activities `step` `b`
/// and `c` joined (scheduled in that order in one activation); then signal
/// `extra` raced against another `timer_ms` timer (`"extra:<msg>"` or
/// `"no-extra"`; the losing timer is cancelled).
///
/// Output `{"a","go","b","c","extra"}`, each a string. Query `progress`
/// answers the names of the completed `step` activities, in completion order.
pub(crate) async fn steps(ctx: Context, input: StepsInput) -> Result<StepsOutput, WorkflowError> {
    let progress: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    ctx.on_query("progress", {
        let progress = Rc::clone(&progress);
        move || progress.borrow().clone()
    });
    let step = |name: &'static str| {
        let ctx = ctx.clone();
        let label = input.label.clone();
        let progress = Rc::clone(&progress);
        async move {
            let output: String = ctx
                .activity(
                    "step",
                    &Step {
                        name,
                        label: &label,
                    },
                )
                .await?;
            progress.borrow_mut().push(name);
            Ok::<_, ActivityError>(output)
        }
    };
    let timer = Duration::from_millis(input.timer_ms);

    let a = step("a").await?;
    ctx.sleep(timer).await;
    let go: String = ctx.signal("go").recv().await;
    let (b, c) = join(step("b"), step("c")).await;
    let (b, c) = (b?, c?);
    let extra = match select(ctx.signal::<String>("extra").recv(), ctx.sleep(timer)).await {
        Either::Left(message) => format!("extra:{message}"),
        Either::Right(()) => "no-extra".to_owned(),
    };
    Ok(StepsOutput { a, go, b, c, extra })
}
