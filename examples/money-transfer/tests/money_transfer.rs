//! The transfer in virtual time: success, a credit that fails for good (the
//! debit is reversed), a debit declined, and a debit whose answer is lost
//! (retried without debiting twice). Every run replays identically.

use money_transfer::{Ledger, activities};
use serde_json::{Value, json};
use weft::RunStatus;
use weft::model::RunId;
use weft::testing::{TestEnv, guest_wasm};

struct Kit {
    env: TestEnv,
    module: weft::model::Sha256Hex,
}

impl Kit {
    async fn new(ledger: &Ledger, replay_every_activation: bool) -> Kit {
        let mut builder = TestEnv::builder(activities(ledger));
        if replay_every_activation {
            builder = builder.replay_every_activation();
        }
        let env = builder.build().await.unwrap();
        let wasm = guest_wasm("money-transfer-workflow").unwrap();
        let module = env.deploy("money-transfer", &wasm).await.unwrap();
        Kit { env, module }
    }

    async fn transfer(&self, id: &str, from: &str, to: &str, amount_cents: u64) -> RunId {
        let input =
            json!({ "transfer_id": id, "from": from, "to": to, "amount_cents": amount_cents });
        self.env
            .start(&self.module, "transfer", id, input)
            .await
            .unwrap()
    }
}

fn ledger() -> Ledger {
    Ledger::with_accounts(&[
        ("alice", 10_000, false),
        ("bob", 500, false),
        ("carol", 0, true),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_moves_the_money() {
    let ledger = ledger();
    let kit = Kit::new(&ledger, false).await;
    let run = kit.transfer("T-1", "alice", "bob", 2_500).await;
    let receipt: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(receipt["transfer_id"], "T-1");
    assert_eq!(
        (ledger.balance("alice"), ledger.balance("bob")),
        (7_500, 3_000)
    );
    let record = kit.env.host().describe(&run).await.unwrap();
    assert_eq!(record.status_line.as_deref(), Some("done"));
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_that_fails_for_good_reverses_the_debit() {
    let ledger = ledger();
    let kit = Kit::new(&ledger, true).await;
    let run = kit.transfer("T-2", "alice", "carol", 4_000).await;
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.failure.unwrap().error_type, "AccountClosed");
    assert_eq!(ledger.balance("alice"), 10_000, "the debit was reversed");
    let kinds: Vec<String> = ledger
        .entries()
        .iter()
        .map(|e| e.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["debit", "reversal"]);
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_debit_moves_nothing_and_reverses_nothing() {
    let ledger = ledger();
    let kit = Kit::new(&ledger, false).await;
    let run = kit.transfer("T-3", "bob", "alice", 900).await;
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.failure.unwrap().error_type, "InsufficientFunds");
    assert!(ledger.entries().is_empty());
    let history = kit.env.history(&run).await.unwrap();
    let attempts = history
        .events()
        .iter()
        .filter(|e| e.event.kind() == "activity_scheduled")
        .count();
    assert_eq!(attempts, 1, "only the debit was scheduled: {history:?}");
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_whose_answer_is_lost_is_retried_without_debiting_twice() {
    let ledger = ledger();
    ledger.lose_debit_answers(2);
    let kit = Kit::new(&ledger, false).await;
    let run = kit.transfer("T-4", "alice", "bob", 1_000).await;
    let _: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(
        (ledger.balance("alice"), ledger.balance("bob")),
        (9_000, 1_500)
    );
    let debits = ledger
        .entries()
        .iter()
        .filter(|e| e.contains(" debit "))
        .count();
    assert_eq!(debits, 1, "{:?}", ledger.entries());
    // The history holds one debit completion, on the third attempt.
    let history = kit.env.history(&run).await.unwrap();
    let attempt = history.events().iter().find_map(|e| match &e.event {
        weft::model::Event::ActivityCompleted {
            seq: 1, attempt, ..
        } => Some(*attempt),
        _ => None,
    });
    assert_eq!(attempt, Some(3));
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}
