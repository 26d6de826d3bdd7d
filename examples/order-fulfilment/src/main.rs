//! Runs four orders on the embedded default (a SQLite file), on virtual
//! time: one fulfilled through a flaky warehouse, one cancelled while its
//! payment is retried, one with a declined card, one invalid. Prints what
//! each service did and how each order ended.

use order_fulfilment::{Config, Services, activities};
use serde_json::json;
use std::sync::Arc;
use weft::testing::{TestEnv, guest_wasm};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("order-fulfilment-{}.db", std::process::id()));
    let store =
        Arc::new(weft::store::SqliteStore::open(path.to_str().expect("a UTF-8 temp path")).await?);
    println!("database: {}", path.display());
    let cases = [
        (
            "o-100",
            Config {
                warehouse_failures: 2,
                ..Config::default()
            },
            false,
        ),
        (
            "o-101",
            Config {
                gateway_timeouts: 1,
                ..Config::default()
            },
            true,
        ),
        (
            "o-102",
            Config {
                card_declined: true,
                ..Config::default()
            },
            false,
        ),
        ("o-103", Config::default(), false),
    ];
    for (n, (id, config, cancel)) in cases.into_iter().enumerate() {
        let services = Services::new(config);
        // One environment per order (each with its own injected failures) on
        // one database: each draws its run ids from its own seed.
        let env = TestEnv::builder(activities(&services))
            .store(store.clone())
            .config(|c| c.seed = Some(n as u64 + 1))
            .build()
            .await?;
        let module = env
            .deploy("orders", &guest_wasm("order-fulfilment-workflow")?)
            .await?;
        let items = if id == "o-103" {
            json!([])
        } else {
            json!([{ "sku": "KETTLE", "qty": 1 }, { "sku": "MUG", "qty": 2 }])
        };
        let input =
            json!({ "order_id": id, "customer": "ada", "items": items, "amount_cents": 4999 });
        let run = env.start(&module, "fulfil_order", id, input).await?;
        if cancel {
            env.cancel(&run, "the customer changed their mind").await?;
        }
        let record = env.result(&run).await?;
        let outcome = match weft::outcome(&record) {
            Ok(tracking) => format!("completed, tracking {tracking}"),
            Err(failure) => format!("{} ({failure})", record.status.as_str()),
        };
        println!("{id}: {outcome}");
        for line in services.journal() {
            println!("    {line}");
        }
        env.assert_replays(&run).await?;
        env.shutdown().await;
    }
    println!("every run replays identically from each activation boundary");
    let _ = std::fs::remove_file(&path);
    Ok(())
}
