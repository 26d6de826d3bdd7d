//! `chain`: sequential activities, one per activation.

use serde::Deserialize;
use serde::de::IgnoredAny;
use weft_sdk::{Context, WorkflowError};

#[derive(Deserialize)]
pub(crate) struct ChainInput {
    /// How many `echo` activities to run, one after the other.
    activities: u32,
}

/// Calls activity `echo` with input `0`, `1`, … `activities - 1`, each after
/// the previous one completed, and returns how many it called. A chain of
/// 1,000 makes a history of about 3,000 events.
pub(crate) async fn chain(ctx: Context, input: ChainInput) -> Result<u32, WorkflowError> {
    for index in 0..input.activities {
        let _: IgnoredAny = ctx.activity("echo", &index).await?;
    }
    Ok(input.activities)
}
