//! Misbehaving workflows. Each must be contained by the host — fail its
//! activation or park its run — without disturbing the host or other runs.
//!
//! - `spin` never returns (the epoch deadline must stop it);
//! - `bomb` allocates until the memory cap stops it;
//! - `panic` panics with "this workflow panics on purpose";
//! - `hello` is the hello example changed: it schedules `greet-v2` instead of
//!   `greet`, so replaying a history of the real `hello` against this module
//!   must report nondeterminism at the first command;
//! - `nan_retry`, `nul_name`, `deep_output` and `big_output` pass the host
//!   what it must refuse at the boundary: a retry policy whose backoff
//!   coefficient is NaN (JSON has no NaN: stored, the history could not be
//!   read back), an activity name with a NUL, an output nested 200 deep and
//!   one of 3 MiB.
//! - `fan_out`, `chatty`, `big_attributes` and `long_history` test the
//!   run's limits: `fan_out` starts `timers` timers, then `activities`
//!   `greet` activities at once (after `rounds` rounds of one timer each,
//!   awaited one after another); `chatty` sets its status line `n` times
//!   in one activation; `big_attributes` upserts a search attribute of
//!   `n` bytes; `long_history` sleeps 1 ms `n` times.

use serde::de::IgnoredAny;
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::Duration;
use weft_sdk::{Context, RetryPolicy, WorkflowError};

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

/// Schedules an activity whose retry policy's backoff coefficient is NaN.
async fn nan_retry(ctx: Context, _: IgnoredAny) -> Result<String, WorkflowError> {
    let out: String = ctx
        .activity("greet", "Ada")
        .retry(RetryPolicy {
            backoff_coefficient: f64::NAN,
            ..RetryPolicy::default()
        })
        .await?;
    Ok(out)
}

/// Schedules an activity whose name holds a NUL.
async fn nul_name(ctx: Context, _: IgnoredAny) -> Result<String, WorkflowError> {
    let out: String = ctx.activity("gr\0eet", "Ada").await?;
    Ok(out)
}

/// Returns valid JSON nested 200 arrays deep.
async fn deep_output(_ctx: Context, _: IgnoredAny) -> Result<Value, WorkflowError> {
    let mut v = json!(0);
    for _ in 0..200 {
        v = Value::Array(vec![v]);
    }
    Ok(v)
}

/// Returns a 3 MiB string.
async fn big_output(_ctx: Context, _: IgnoredAny) -> Result<String, WorkflowError> {
    Ok("x".repeat(3 << 20))
}

#[derive(serde::Deserialize)]
struct FanOut {
    #[serde(default)]
    rounds: u32,
    #[serde(default)]
    timers: u32,
    #[serde(default)]
    activities: u32,
}

async fn fan_out(ctx: Context, input: FanOut) -> Result<u32, WorkflowError> {
    for _ in 0..input.rounds {
        ctx.sleep(Duration::from_millis(1)).await;
    }
    weft_sdk::join_all((0..input.timers).map(|_| ctx.sleep(Duration::from_millis(5)))).await;
    let greetings = weft_sdk::join_all(
        (0..input.activities).map(|i| ctx.activity::<String>("greet", &format!("n{i}"))),
    )
    .await;
    let mut done = input.timers;
    for greeting in greetings {
        greeting?;
        done += 1;
    }
    Ok(done)
}

async fn chatty(ctx: Context, n: u32) -> Result<(), WorkflowError> {
    for i in 0..n {
        ctx.set_status_line(&format!("line {i}"));
    }
    Ok(())
}

/// Prints `lines` lines of 1,000 bytes to stdout in one activation, and
/// as many again after a timer.
async fn noisy(ctx: Context, lines: u32) -> Result<u32, WorkflowError> {
    let line = "x".repeat(999);
    for _ in 0..lines {
        println!("{line}");
    }
    ctx.sleep(Duration::from_millis(1)).await;
    for _ in 0..lines {
        eprintln!("{line}");
    }
    Ok(lines)
}

async fn big_attributes(ctx: Context, n: usize) -> Result<(), WorkflowError> {
    let value = "x".repeat(n);
    ctx.upsert_search_attributes([("blob", value.as_str().into())]);
    ctx.sleep(Duration::from_millis(1)).await;
    Ok(())
}

async fn long_history(ctx: Context, n: u32) -> Result<u32, WorkflowError> {
    for _ in 0..n {
        ctx.sleep(Duration::from_millis(1)).await;
    }
    Ok(n)
}

weft_sdk::export_workflows!(
    fan_out,
    chatty,
    noisy,
    big_attributes,
    long_history,
    spin,
    bomb,
    panic,
    hello,
    nan_retry,
    nul_name,
    deep_output,
    big_output
);
