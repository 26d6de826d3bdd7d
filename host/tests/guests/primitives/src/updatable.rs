//! `updatable`: a value raised by a validated update.

use std::cell::Cell;
use std::rc::Rc;
use weft_sdk::{Context, WorkflowError};

/// Holds a value, starting at `start`. Query `value` answers it. Update
/// `add` (an `i64`) refuses negative amounts in its validator ("amounts must
/// not be negative"); its handler calls activity `echo` with the amount as a
/// string, adds the amount and answers the new value. Signal `done` (no
/// payload) ends the run with the value.
pub(crate) async fn updatable(ctx: Context, start: i64) -> Result<i64, WorkflowError> {
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
                    value.set(value.get().saturating_add(amount));
                    Ok(value.get())
                }
            }
        },
    );
    ctx.signal::<()>("done").recv().await;
    Ok(value.get())
}
