//! The `hello` workflow, the smallest useful Weft workflow: it asks the
//! `greet` activity for a greeting and returns it.
//!
//! Build the component with
//! `cargo build --target wasm32-wasip2 --profile guest -p hello-workflow`;
//! it lands at `target/wasm32-wasip2/guest/hello_workflow.wasm`. A run started
//! with input `"Ada"` takes two activations: the start, which schedules `greet`
//! with input `"Ada"` and waits, and the delivery of the activity's outcome,
//! which completes the run with the greeting as its output.

use weft_sdk::{Context, WorkflowError};

/// Greets `name`: schedules the activity `greet` with `name` as its input (a
/// JSON string), waits for it, and returns its output, a string.
///
/// If `greet` fails for good (after the host's default retries), the run
/// fails with the activity's error type.
async fn hello(ctx: Context, name: String) -> Result<String, WorkflowError> {
    let greeting: String = ctx.activity("greet", &name).await?;
    Ok(greeting)
}

weft_sdk::export_workflows!(hello);
