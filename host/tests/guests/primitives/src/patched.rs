//! `patched_flow`: a code path behind a patch.

use std::time::Duration;
use weft_sdk::{Context, WorkflowError};

/// With patch `use-new-path`: activity `new_path`, else (a run from before
/// the patch, see `test-primitives-old`) activity `old_path`, each with input
/// `"x"`; then sleeps an hour and returns the activity's output.
pub(crate) async fn patched_flow(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    let output: String = if ctx.patched("use-new-path") {
        ctx.activity("new_path", "x").await?
    } else {
        ctx.activity("old_path", "x").await?
    };
    ctx.sleep(Duration::from_secs(3600)).await;
    Ok(output)
}
