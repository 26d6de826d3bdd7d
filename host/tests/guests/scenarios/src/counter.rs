//! `counter`: sums signals.

use serde::Deserialize;
use std::cell::Cell;
use std::rc::Rc;
use weft_sdk::{Context, WorkflowError};

#[derive(Deserialize)]
pub(crate) struct CounterInput {
    /// How many `add` signals to wait for.
    signals: u32,
}

/// Receives `signals` messages of signal `add` (each a `u64`) and returns
/// their sum. Query `total` answers the sum so far.
pub(crate) async fn counter(ctx: Context, input: CounterInput) -> Result<u64, WorkflowError> {
    let total = Rc::new(Cell::new(0u64));
    ctx.on_query("total", {
        let total = Rc::clone(&total);
        move || total.get()
    });
    let adds = ctx.signal::<u64>("add");
    for _ in 0..input.signals {
        total.set(total.get().saturating_add(adds.recv().await));
    }
    Ok(total.get())
}
