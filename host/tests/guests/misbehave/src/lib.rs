//! Misbehaving workflows. Each must be contained by the host — fail its
//! activation or park its run — without disturbing the host or other runs.
//!
//! - `spin` never returns (the epoch deadline must stop it);
//! - `bomb` allocates until the memory cap stops it;
//! - `panic` panics with "this workflow panics on purpose";
//! - `hello` is the hello example changed: it schedules `greet-v2` instead of
//!   `greet`, so replaying a history of the real `hello` against this module
//!   must report nondeterminism at the first command.

use serde::de::IgnoredAny;
use std::hint::black_box;
use weft_sdk::{Context, WorkflowError};

/// Loops forever without waiting. `black_box` keeps the optimizer from
/// proving the loop does nothing.
async fn spin(_ctx: Context, _: IgnoredAny) -> Result<(), WorkflowError> {
    let mut turns = 0u64;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

/// Holds on to one more MiB, forever.
async fn bomb(_ctx: Context, _: IgnoredAny) -> Result<(), WorkflowError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![0xA5; 1 << 20]));
        black_box(&hoard);
    }
}

/// Panics: with `panic = "abort"` the guest traps.
async fn panic(_ctx: Context, _: IgnoredAny) -> Result<(), WorkflowError> {
    panic!("this workflow panics on purpose")
}

/// The hello workflow with its activity renamed: a new module version whose
/// replay of an old `hello` history must diverge.
async fn hello(ctx: Context, name: String) -> Result<String, WorkflowError> {
    let greeting: String = ctx.activity("greet-v2", &name).await?;
    Ok(greeting)
}

weft_sdk::export_workflows!(spin, bomb, panic, hello);
