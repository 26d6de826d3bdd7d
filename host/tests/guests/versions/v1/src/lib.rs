//! `order`, version 1: reserve the item, wait a day for the warehouse, ship
//! it. The host's versioning tests start runs on it and then deploy
//! `test-versions-v2` (incompatible) and `test-versions-v3` (compatible).
//! Activities `reserve`, `ship` (and v3's `notify`) are implemented by the
//! tests. It has a bug: an item named `…cursed…` traps it, which parks the run.

use std::time::Duration;
use weft_sdk::{Context, WorkflowError};

async fn order(ctx: Context, item: String) -> Result<String, WorkflowError> {
    let reservation: String = ctx.activity("reserve", &item).await?;
    // The bug version 3 fixes: a run for this item gets stuck here.
    assert!(!item.contains("cursed"), "cannot handle a cursed item");
    ctx.sleep(Duration::from_secs(24 * 3600)).await;
    let shipment: String = ctx.activity("ship", &reservation).await?;
    Ok(shipment)
}

weft_sdk::export_workflows!(order);
