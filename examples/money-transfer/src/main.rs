//! Runs three transfers on the embedded default (a SQLite file) and prints
//! what the ledger did: one that succeeds after its debit's answer was lost
//! twice, one to a closed account (the debit is reversed), and one the
//! source cannot afford.

use money_transfer::{Ledger, activities};
use serde_json::json;
use std::sync::Arc;
use weft::testing::{TestEnv, guest_wasm};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("money-transfer-{}.db", std::process::id()));
    let store =
        Arc::new(weft::store::SqliteStore::open(path.to_str().expect("a UTF-8 temp path")).await?);
    println!("database: {}", path.display());
    let ledger = Ledger::with_accounts(&[
        ("alice", 10_000, false),
        ("bob", 500, false),
        ("carol", 0, true),
    ]);
    ledger.lose_debit_answers(2);
    let env = TestEnv::builder(activities(&ledger))
        .store(store)
        .build()
        .await?;
    let module = env
        .deploy("money-transfer", &guest_wasm("money-transfer-workflow")?)
        .await?;
    let transfers = [
        ("T-1", "alice", "bob", 2_500),
        ("T-2", "alice", "carol", 4_000),
        ("T-3", "bob", "alice", 9_000),
    ];
    for (id, from, to, amount_cents) in transfers {
        let input =
            json!({ "transfer_id": id, "from": from, "to": to, "amount_cents": amount_cents });
        let run = env.start(&module, "transfer", id, input).await?;
        let record = env.result(&run).await?;
        let outcome = match weft::outcome(&record) {
            Ok(receipt) => format!("completed {receipt}"),
            Err(failure) => format!("failed {failure}"),
        };
        println!("{id}: {amount_cents} cents {from} -> {to}: {outcome}");
        println!(
            "    status line: {}",
            record.status_line.unwrap_or_default()
        );
        env.assert_replays(&run).await?;
    }
    println!("ledger entries:");
    for entry in ledger.entries() {
        println!("    {entry}");
    }
    println!(
        "balances: alice {}, bob {}, carol {}",
        ledger.balance("alice"),
        ledger.balance("bob"),
        ledger.balance("carol")
    );
    println!("every run replays identically from each activation boundary");
    env.shutdown().await;
    let _ = std::fs::remove_file(&path);
    Ok(())
}
