//! `patched_flow` as it was before patch `use-new-path`: the host's
//! versioning tests start runs on this module, then replay or continue them
//! on `test-primitives`, whose `patched_flow` carries the patch. Activity
//! `old_path` is implemented by the tests.

use std::time::Duration;
use weft_sdk::{Context, WorkflowError};

/// Activity `old_path` with input `"x"`, then an hour's sleep; returns the
/// activity's output.
async fn patched_flow(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    let output: String = ctx.activity("old_path", "x").await?;
    ctx.sleep(Duration::from_secs(3600)).await;
    Ok(output)
}

weft_sdk::export_workflows!(patched_flow);
