//! `cancellable_order`: a saga compensated on a cancel request.

use weft_sdk::{Context, Either, Saga, WorkflowError, select};

/// Calls `step` with input `"order"`.
async fn step(ctx: Context, step: &'static str) -> Result<(), WorkflowError> {
    ctx.activity::<String>(step, "order").await?;
    Ok(())
}

/// Activities `reserve` then `charge` (each with input `"order"`), each
/// followed by its compensation (`release`, `refund`); then waits for signal
/// `ship` (no payload) or a cancel request. Shipped: `"shipped"`. Cancelled:
/// runs `refund` then `release`, one after the other, and ends cancelled
/// with the request's reason (or fails with the first compensation failure).
pub(crate) async fn cancellable_order(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    let mut saga = Saga::new();
    step(ctx.clone(), "reserve").await?;
    saga.add({
        let ctx = ctx.clone();
        move || step(ctx, "release")
    });
    step(ctx.clone(), "charge").await?;
    saga.add({
        let ctx = ctx.clone();
        move || step(ctx, "refund")
    });
    match select(ctx.signal::<()>("ship").recv(), ctx.cancelled()).await {
        Either::Left(()) => Ok("shipped".to_owned()),
        Either::Right(reason) => {
            saga.compensate().await?;
            Err(WorkflowError::cancelled(reason))
        }
    }
}
