//! `loop_can`: continue-as-new.

use std::time::Duration;
use weft_sdk::{Context, WorkflowError};

/// For `i` below 3: sleeps one second and continues as new with `i + 1`.
/// From 3 on: returns `i` plus the sum of the `add` signals (each a `u32`)
/// this run received — signals sent to earlier runs are not carried over.
pub(crate) async fn loop_can(ctx: Context, i: u32) -> Result<u32, WorkflowError> {
    if i >= 3 {
        let adds = ctx.signal::<u32>("add");
        let mut total = i;
        while let Some(add) = adds.try_recv() {
            total = total.saturating_add(add);
        }
        return Ok(total);
    }
    ctx.sleep(Duration::from_secs(1)).await;
    Err(ctx.continue_as_new(&(i + 1)))
}
