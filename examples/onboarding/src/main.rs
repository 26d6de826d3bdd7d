//! Onboards three customers over 30 days on the embedded default (a SQLite
//! file), on virtual time: the month passes in about a second. Prints each
//! e-mail with the day it went out and where each customer ended.

use onboarding::{Profile, Services, activities};
use serde_json::json;
use std::sync::Arc;
use weft::ManualClock;
use weft::testing::{DEFAULT_START_MS, TestEnv, guest_wasm};

const DAY_MS: u64 = 24 * 3600 * 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("onboarding-{}.db", std::process::id()));
    let store =
        Arc::new(weft::store::SqliteStore::open(path.to_str().expect("a UTF-8 temp path")).await?);
    println!("database: {}", path.display());
    let clock = ManualClock::new(DEFAULT_START_MS);
    let services = Services::new(Arc::new(clock.clone()));
    let env = TestEnv::builder(activities(&services))
        .store(store)
        .clock(clock)
        .build()
        .await?;
    let module = env
        .deploy("onboarding", &guest_wasm("onboarding-workflow")?)
        .await?;
    let customers = [
        ("ada", true, Some(25)),
        ("grace", false, Some(28)),
        ("linus", false, Some(2)),
    ];
    let mut runs = Vec::new();
    for (id, complete, active_day) in customers {
        services.set_profile(
            id,
            Profile {
                complete,
                last_active_ms: active_day.map(|d| DEFAULT_START_MS + d * DAY_MS),
            },
        );
        let input = json!({ "customer_id": id, "email": format!("{id}@example.com") });
        runs.push((id, env.start(&module, "onboarding", id, input).await?));
    }
    let started = std::time::Instant::now();
    for (id, run) in &runs {
        let record = env.result(run).await?;
        println!(
            "{id:6} {:?}, stage {:?}: {}",
            record.status,
            record.status_line.unwrap_or_default(),
            record.output.unwrap_or_default()
        );
        env.assert_replays(run).await?;
    }
    println!("e-mails:");
    for sent in services.sent() {
        println!(
            "    day {:2}  {:9} to {}",
            (sent.at_ms - DEFAULT_START_MS) / DAY_MS,
            sent.template,
            sent.to
        );
    }
    println!(
        "30 days of virtual time in {:.1} s; every run replays identically",
        started.elapsed().as_secs_f64()
    );
    env.shutdown().await;
    let _ = std::fs::remove_file(&path);
    Ok(())
}
