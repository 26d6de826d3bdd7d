//! `order`, version 2: checks stock before it reserves. Its first command
//! differs from version 1's, so no run started on version 1 replays on it.
//! Built with line tables (see the workspace's `[profile.guest.package]`), so
//! that a check's divergence names the line below that issues `check_stock`.

use std::time::Duration;
use weft_sdk::{Context, WorkflowError};

async fn order(ctx: Context, item: String) -> Result<String, WorkflowError> {
    let _in_stock: bool = ctx.activity("check_stock", &item).await?;
    let reservation: String = ctx.activity("reserve", &item).await?;
    ctx.sleep(Duration::from_secs(24 * 3600)).await;
    let shipment: String = ctx.activity("ship", &reservation).await?;
    Ok(shipment)
}

weft_sdk::export_workflows!(order);
