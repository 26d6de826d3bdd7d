//! `query_mutates`: a deliberately BUGGY workflow. Its query changes state
//! that the workflow later uses, so a replay — which runs no queries — issues
//! a different command than the history records. The host's nondeterminism
//! test relies on exactly that.

use serde::de::IgnoredAny;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use weft_sdk::{Context, WorkflowError};

/// How many times `bump` was queried on this instance.
static BUMPS: AtomicU32 = AtomicU32::new(0);

/// Query `bump` increments [`BUMPS`] and answers the new count. The workflow
/// waits for signal `go` (any payload), then schedules activity `echo` with
/// `{"bumps": <count>}` and returns the activity's output.
pub(crate) async fn query_mutates(ctx: Context, _: IgnoredAny) -> Result<Value, WorkflowError> {
    ctx.on_query("bump", || BUMPS.fetch_add(1, Ordering::Relaxed) + 1);
    let _: IgnoredAny = ctx.signal("go").recv().await;
    let bumps = BUMPS.load(Ordering::Relaxed);
    Ok(ctx.activity("echo", &json!({ "bumps": bumps })).await?)
}
