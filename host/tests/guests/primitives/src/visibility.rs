//! `status_flow` and `info_flow`: what a run shows about itself.

use weft_sdk::{Context, SearchValue, WorkflowError};

/// Sets the status line "waiting for go" and the search attributes
/// `customer` = "acme", `amount` = 1200, `vip` = true; waits for signal `go`
/// (no payload); then sets the status line "done", removes `vip` and returns
/// "ok".
pub(crate) async fn status_flow(ctx: Context, _: ()) -> Result<String, WorkflowError> {
    ctx.set_status_line("waiting for go");
    ctx.upsert_search_attributes([
        ("customer", "acme".into()),
        ("amount", 1200.into()),
        ("vip", true.into()),
    ]);
    ctx.signal::<()>("go").recv().await;
    ctx.set_status_line("done");
    ctx.upsert_search_attributes([("vip", SearchValue::Null)]);
    Ok("ok".to_owned())
}

/// Returns its workflow id, workflow type and parent's workflow id.
pub(crate) async fn info_flow(
    ctx: Context,
    _: (),
) -> Result<(String, String, Option<String>), WorkflowError> {
    Ok((
        ctx.workflow_id(),
        ctx.workflow_type(),
        ctx.parent_workflow_id(),
    ))
}
