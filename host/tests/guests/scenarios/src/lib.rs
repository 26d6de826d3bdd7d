//! Workflows the host's integration tests and benchmarks run. Their type
//! names, inputs, outputs and the commands they issue are what the tests
//! assert on; change them together with the tests.
//!
//! - [`steps::steps`]: activities, a timer, a signal, a `join` and a `select`
//!   in one run, with a `progress` query;
//! - [`entropy::entropy`]: std's clocks, random bytes and `HashMap` order,
//!   which Weft makes deterministic;
//! - [`query_mutates::query_mutates`]: a deliberately buggy query that
//!   changes state, so that replay diverges;
//! - [`counter::counter`]: sums `add` signals, with a `total` query;
//! - [`chain::chain`]: many sequential activities, for replay speed;
//! - [`sleep`]: one durable timer and nothing else, for `weft bench`'s
//!   timer load.

mod chain;
mod counter;
mod entropy;
mod query_mutates;
mod steps;

use chain::chain;
use counter::counter;
use entropy::entropy;
use query_mutates::query_mutates;
use std::time::Duration;
use steps::steps;
use weft_sdk::{Context, WorkflowError};

/// Sleeps `ms` milliseconds on a durable timer and returns `ms`: the
/// smallest run that has a timer to fire, so that a benchmark of many of
/// them measures the timer path alone.
async fn sleep(ctx: Context, ms: u64) -> Result<u64, WorkflowError> {
    ctx.sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

weft_sdk::export_workflows!(steps, entropy, query_mutates, counter, chain, sleep);
