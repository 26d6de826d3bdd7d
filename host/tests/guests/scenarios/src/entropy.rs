//! `entropy`: plain std time, randomness and hashing, which Weft's virtual
//! WASI makes deterministic. It deliberately uses no `Context` for them.

use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};
use weft_sdk::{Context, WorkflowError};

/// What one round reads from std.
#[derive(Serialize)]
struct Reading {
    round: u32,
    /// `SystemTime::now()`, in milliseconds since the Unix epoch.
    unix_ms: u64,
    /// `Instant::now()` as std prints it (the raw monotonic clock reading).
    instant: String,
    /// Milliseconds since the `Instant` taken when the workflow began.
    elapsed_ms: u64,
    /// 16 bytes from `getrandom::fill`, in hex.
    random_hex: String,
    /// The iteration order of a fresh `HashMap<String, u32>` with keys
    /// `k00`..`k19` (std seeds each map from `wasi:random/insecure-seed`).
    hash_order: Vec<String>,
}

impl Reading {
    fn take(round: u32, origin: Instant) -> Result<Self, WorkflowError> {
        let unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|e| WorkflowError::new("ClockBeforeEpoch", e.to_string()))?
            .as_millis();
        let now = Instant::now();
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)
            .map_err(|e| WorkflowError::new("NoRandomness", e.to_string()))?;
        let map: HashMap<String, u32> = (0..20).map(|i| (format!("k{i:02}"), i)).collect();
        Ok(Self {
            round,
            unix_ms: u64::try_from(unix_ms).unwrap_or(u64::MAX),
            instant: format!("{now:?}"),
            elapsed_ms: u64::try_from(now.duration_since(origin).as_millis()).unwrap_or(u64::MAX),
            random_hex: random.iter().map(|b| format!("{b:02x}")).collect(),
            hash_order: map.into_keys().collect(),
        })
    }
}

/// Input `null` (anything is accepted). Reads a [`Reading`], sends it to the
/// `echo` activity and awaits it, sleeps 1000 ms, takes a second reading and
/// echoes that too. Output `{"first": <echo 1>, "second": <echo 2>}`, each the
/// `echo` activity's output (its input, for an echo): `{"round", "unix_ms",
/// "instant", "elapsed_ms", "random_hex", "hash_order"}`.
pub(crate) async fn entropy(ctx: Context, _: IgnoredAny) -> Result<Value, WorkflowError> {
    let origin = Instant::now();
    let first: Value = ctx.activity("echo", &Reading::take(1, origin)?).await?;
    ctx.sleep(Duration::from_millis(1000)).await;
    let second: Value = ctx.activity("echo", &Reading::take(2, origin)?).await?;
    Ok(json!({ "first": first, "second": second }))
}
