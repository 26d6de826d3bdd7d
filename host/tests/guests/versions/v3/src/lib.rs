//! `order`, version 3: after the wait it tells the customer before shipping,
//! behind the patch `notify-customer`. A run that waited on version 1 replays
//! identically here and, once moved, takes the new step; a run that shipped
//! on version 1 replays the old path.

use std::time::Duration;
use weft_sdk::{Context, WorkflowError};

async fn order(ctx: Context, item: String) -> Result<String, WorkflowError> {
    let reservation: String = ctx.activity("reserve", &item).await?;
    ctx.sleep(Duration::from_secs(24 * 3600)).await;
    if ctx.patched("notify-customer") {
        let _: String = ctx.activity("notify", &item).await?;
    }
    let shipment: String = ctx.activity("ship", &reservation).await?;
    Ok(shipment)
}

weft_sdk::export_workflows!(order);
