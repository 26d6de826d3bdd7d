//! `condition_flow`: a condition over state a spawned task changes.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use weft_sdk::{Context, WorkflowError};

/// Counts signals `approve` (no payload) in a spawned task; returns `true`
/// once `needed` arrived, `false` if a day passes first.
pub(crate) async fn condition_flow(ctx: Context, needed: u32) -> Result<bool, WorkflowError> {
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
    let enough = move || count.get() >= needed;
    Ok(ctx
        .wait_until_timeout(enough, Duration::from_secs(24 * 3600))
        .await)
}
