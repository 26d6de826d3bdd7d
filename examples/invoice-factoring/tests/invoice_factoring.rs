//! The `invoice_factoring` workflow through a real host on virtual time:
//! every path of the process, the retry schedule of the credit bureau, the
//! idempotent advance, and a replay check of every run. Build the workflow
//! first: `scripts/build-guests`.

use invoice_factoring::{Config, Services, activities};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use weft::model::{RunId, Sha256Hex};
use weft::store::RunRecord;
use weft::testing::{TestEnv, guest_wasm};
use weft::wasm::{EngineConfig, WasmEngine};
use weft::{ListFilter, RunStatus};

const SECOND_MS: u64 = 1000;
const DAY_MS: u64 = 24 * 3600 * SECOND_MS;

/// One engine for the whole file, so that the module is compiled once.
fn engine() -> Arc<WasmEngine> {
    static ENGINE: OnceLock<Arc<WasmEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(WasmEngine::new(EngineConfig::default()).unwrap()))
        .clone()
}

/// A test environment whose services keep their journal in virtual time.
struct Kit {
    env: TestEnv,
    services: Services,
    module: Sha256Hex,
}

impl Kit {
    async fn new(config: Config) -> Self {
        Self::build(config, false).await
    }

    /// Every activation starts from a replay of the history, as after a crash.
    async fn replaying(config: Config) -> Self {
        Self::build(config, true).await
    }

    async fn build(config: Config, replay_every_activation: bool) -> Self {
        let services = Services::new(config);
        let mut builder = TestEnv::builder(activities(&services)).engine(engine());
        if replay_every_activation {
            builder = builder.replay_every_activation();
        }
        let env = builder.build().await.unwrap();
        services.journal().use_clock(env.clock().clone());
        let wasm = guest_wasm("invoice-factoring-workflow").unwrap();
        let module = env.deploy("invoice-factoring", &wasm).await.unwrap();
        Self {
            env,
            services,
            module,
        }
    }

    async fn start(&self, invoice: Value) -> RunId {
        let id = format!("factoring-{}", invoice["invoice_id"].as_str().unwrap());
        self.env
            .start(&self.module, "invoice_factoring", &id, invoice)
            .await
            .unwrap()
    }

    async fn status(&self, run: &RunId) -> Value {
        self.env.query(run, "status", ()).await.unwrap()
    }

    async fn decide(&self, run: &RunId, approved: bool) {
        let decision = json!({ "approved": approved, "by": "Lin", "note": "concentration" });
        self.env.signal(run, "decision", decision).await.unwrap();
    }

    async fn pay(&self, run: &RunId, amount_cents: u64, reference: &str) {
        let payment = json!({ "amount_cents": amount_cents, "reference": reference });
        self.env.signal(run, "payment", payment).await.unwrap();
    }

    async fn sleep_days(&self, days: u64) {
        self.env
            .sleep(Duration::from_millis(days * DAY_MS))
            .await
            .unwrap();
    }

    /// Runs to the end, checks that the history replays, and shuts down.
    async fn finish(self, run: &RunId) -> (RunRecord, Services) {
        let record = self.env.result(run).await.unwrap();
        self.env.assert_replays(run).await.unwrap();
        self.env.shutdown().await;
        (record, self.services)
    }
}

/// 48,000.00 owed by Globex Retail to Acme Tools; 80 % advanced, 3 % fee.
fn invoice(id: &str) -> Value {
    json!({
        "invoice_id": id,
        "client": "Acme Tools Ltd",
        "debtor": "Globex Retail",
        "amount_cents": 4_800_000,
        "advance_rate_bps": 8000,
        "fee_bps": 300,
    })
}

fn output(record: &RunRecord) -> Value {
    weft::outcome(record).unwrap_or_else(|failure| {
        panic!("run {} ended {:?}: {failure}", record.run_id, record.status)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_in_three_parts_over_forty_days_the_reserve_is_released() {
    let kit = Kit::new(Config::default()).await;
    let start = kit.env.now_ms();
    let run = kit.start(invoice("INV-1")).await;
    let status = kit.status(&run).await;
    assert_eq!(status["stage"], "awaiting_decision");
    assert_eq!(status["credit_score"], 712);

    kit.sleep_days(1).await;
    kit.decide(&run, true).await;
    let approved = kit.env.now_ms();
    let status = kit.status(&run).await;
    assert_eq!(status["stage"], "awaiting_payment");
    assert_eq!(status["advance_cents"], 3_840_000);
    assert_eq!(status["payment_due_ms"], approved + 60 * DAY_MS);

    kit.sleep_days(10).await;
    kit.pay(&run, 1_600_000, "GLX-1").await;
    kit.sleep_days(15).await;
    kit.pay(&run, 1_600_000, "GLX-2").await;
    let status = kit.status(&run).await;
    assert_eq!(status["paid_cents"], 3_200_000);
    assert_eq!(status["outstanding_cents"], 1_600_000);
    assert_eq!(status["payments"][1]["reference"], "GLX-2");
    assert_eq!(status["payments"][1]["received_ms"], approved + 25 * DAY_MS);
    assert_eq!(
        kit.env.host().describe(&run).await.unwrap().status,
        RunStatus::Running,
        "two thirds paid is not paid in full"
    );

    kit.sleep_days(15).await;
    kit.pay(&run, 1_600_000, "GLX-3").await;
    let paid_in_full = kit.env.now_ms();
    assert_eq!(paid_in_full, start + 41 * DAY_MS);

    let listed = kit
        .env
        .host()
        .list(&ListFilter {
            search_attributes: vec![("debtor".into(), json!("Globex Retail"))],
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let (record, services) = kit.finish(&run).await;
    let settlement = output(&record);
    assert_eq!(settlement["outcome"], "settled");
    assert_eq!(settlement["decided_by"], "Lin");
    assert_eq!(settlement["paid_cents"], 4_800_000);
    assert_eq!(settlement["fee_cents"], 144_000);
    assert_eq!(settlement["reserve_released_cents"], 816_000);
    assert_eq!(record.closed_at_ms, Some(paid_in_full));
    assert_eq!(
        record.search_attributes,
        json!({ "client": "Acme Tools Ltd", "debtor": "Globex Retail", "invoice_amount": 4_800_000 })
    );
    assert_eq!(
        record.status_line.as_deref(),
        Some("settled: 8,160.00 released")
    );

    let transfers = services.transfers();
    let paid: Vec<(&str, u64)> = transfers
        .iter()
        .map(|t| (t.beneficiary.as_str(), t.amount_cents))
        .collect();
    assert_eq!(
        paid,
        [("Acme Tools Ltd", 3_840_000), ("Acme Tools Ltd", 816_000)]
    );
    assert_eq!(settlement["advance_transfer"], transfers[0].transfer_id);
    assert_eq!(settlement["settlement_transfer"], transfers[1].transfer_id);
    assert!(services.cases().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bureau_times_out_three_times_and_the_retry_policy_backs_off() {
    let kit = Kit::new(Config {
        bureau_timeouts: 3,
        ..Config::default()
    })
    .await;
    let start = kit.env.now_ms();
    let run = kit.start(invoice("INV-2")).await;
    // The first request timed out; the retries wait for virtual time.
    assert_eq!(kit.services.bureau_requests("Globex Retail"), 1);
    assert_eq!(kit.status(&run).await["stage"], "credit_check");

    kit.env.sleep(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(kit.services.bureau_requests("Globex Retail"), 4);
    let status = kit.status(&run).await;
    assert_eq!(status["stage"], "awaiting_decision");
    assert_eq!(status["credit_score"], 712);
    let attempts: Vec<(u64, u32)> = kit
        .services
        .journal()
        .of("bureau")
        .iter()
        .map(|e| ((e.at_ms - start) / SECOND_MS, e.by.attempt))
        .collect();
    // 30 s, then doubling: 1 min, 2 min.
    assert_eq!(attempts, [(0, 1), (30, 2), (90, 3), (210, 4)]);

    kit.decide(&run, false).await;
    let (record, _) = kit.finish(&run).await;
    assert_eq!(output(&record)["credit_score"], 712);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bureau_that_never_answers_fails_the_run_after_six_attempts() {
    let kit = Kit::new(Config {
        bureau_timeouts: 100,
        ..Config::default()
    })
    .await;
    let start = kit.env.now_ms();
    let run = kit.start(invoice("INV-3")).await;
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let failure = record.failure.clone().unwrap();
    assert_eq!(failure.error_type, "BureauTimeout");
    assert!(
        failure.message.contains("pull_credit"),
        "{}",
        failure.message
    );
    assert_eq!(kit.services.bureau_requests("Globex Retail"), 6);
    // 30 s + 1 + 2 + 4 + 8 min after the first attempt.
    assert_eq!(kit.env.now_ms() - start, 930 * SECOND_MS);
    let (_, services) = kit.finish(&run).await;
    assert!(services.transfers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_underwriter_rejects_and_no_money_moves() {
    let kit = Kit::new(Config::default()).await;
    let run = kit.start(invoice("INV-4")).await;
    kit.sleep_days(2).await;
    kit.decide(&run, false).await;
    let (record, services) = kit.finish(&run).await;
    let settlement = output(&record);
    assert_eq!(settlement["outcome"], "rejected");
    assert_eq!(settlement["decided_by"], "Lin");
    assert_eq!(settlement["advance_transfer"], Value::Null);
    assert_eq!(
        record.status_line.as_deref(),
        Some("rejected by Lin: concentration")
    );
    assert!(services.transfers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_decides_within_seven_days() {
    let kit = Kit::new(Config::default()).await;
    let start = kit.env.now_ms();
    let run = kit.start(invoice("INV-5")).await;
    // A minute before the deadline the decision could still come.
    kit.env
        .sleep(Duration::from_millis(7 * DAY_MS - 60 * SECOND_MS))
        .await
        .unwrap();
    assert_eq!(kit.status(&run).await["stage"], "awaiting_decision");

    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(kit.env.now_ms(), start + 7 * DAY_MS);
    assert_eq!(record.closed_at_ms, Some(start + 7 * DAY_MS));
    let (record, services) = kit.finish(&record.run_id).await;
    let settlement = output(&record);
    assert_eq!(settlement["outcome"], "no_decision");
    assert_eq!(settlement["decided_by"], Value::Null);
    assert!(services.transfers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debtor_who_pays_only_part_goes_to_collections_after_sixty_days() {
    let kit = Kit::new(Config::default()).await;
    let run = kit.start(invoice("INV-6")).await;
    kit.decide(&run, true).await;
    let approved = kit.env.now_ms();
    kit.sleep_days(20).await;
    kit.pay(&run, 2_000_000, "GLX-9").await;

    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(kit.env.now_ms(), approved + 60 * DAY_MS);
    let (record, services) = kit.finish(&record.run_id).await;
    let settlement = output(&record);
    assert_eq!(settlement["outcome"], "in_collections");
    assert_eq!(settlement["paid_cents"], 2_000_000);
    assert_eq!(settlement["reserve_released_cents"], 0);
    let cases = services.cases();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].outstanding_cents, 2_800_000);
    assert_eq!(cases[0].debtor, "Globex Retail");
    assert_eq!(settlement["collections_case"], cases[0].case_id);
    // The advance went out; nothing else did.
    assert_eq!(services.transfers().len(), 1);
    assert_eq!(services.transfers()[0].amount_cents, 3_840_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kyb_rejection_fails_the_run_with_its_error_type_and_is_not_retried() {
    let kit = Kit::new(Config {
        unknown_clients: vec!["Acme Tools Ltd".into()],
        ..Config::default()
    })
    .await;
    let run = kit.start(invoice("INV-7")).await;
    let (record, services) = kit.finish(&run).await;
    assert_eq!(record.status, RunStatus::Failed);
    let failure = record.failure.unwrap();
    assert_eq!(failure.error_type, "KybRejected");
    assert!(
        failure.message.contains("no record of Acme Tools Ltd"),
        "{}",
        failure.message
    );
    assert_eq!(services.journal().of("registry").len(), 1);
    assert_eq!(services.bureau_requests("Globex Retail"), 0);
    assert!(services.transfers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_before_the_advance_count_and_an_overpayment_goes_to_the_client() {
    let kit = Kit::new(Config::default()).await;
    let run = kit.start(invoice("INV-8")).await;
    // The debtor pays early, while the underwriter is still looking at it.
    kit.pay(&run, 3_000_000, "GLX-early").await;
    assert_eq!(kit.status(&run).await["paid_cents"], 0);
    kit.sleep_days(1).await;
    kit.decide(&run, true).await;
    assert_eq!(kit.status(&run).await["paid_cents"], 3_000_000);
    kit.sleep_days(5).await;
    kit.pay(&run, 2_000_000, "GLX-late").await;

    let (record, services) = kit.finish(&run).await;
    let settlement = output(&record);
    assert_eq!(settlement["outcome"], "settled");
    assert_eq!(settlement["paid_cents"], 5_000_000);
    // 50,000 collected - 38,400 advanced - 1,440 fee.
    assert_eq!(settlement["reserve_released_cents"], 1_016_000);
    assert_eq!(services.transfers()[1].amount_cents, 1_016_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_that_do_not_add_up_fail_the_run_before_anything_is_called() {
    let kit = Kit::new(Config::default()).await;
    let mut bad = invoice("INV-9");
    bad["advance_rate_bps"] = json!(9_900);
    let run = kit.start(bad).await;
    let (record, services) = kit.finish(&run).await;
    let failure = record.failure.unwrap();
    assert_eq!(failure.error_type, "InvalidInvoice");
    assert!(failure.message.contains("INV-9"), "{}", failure.message);
    assert!(services.journal().entries().is_empty());
}

/// The whole process with every injected failure, rebuilt by replay before
/// each activation — what a host does after a crash at that point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_before_every_activation_settles_the_same_and_pays_the_advance_once() {
    let kit = Kit::replaying(Config {
        bureau_timeouts: 3,
        bank_lost_confirmations: 1,
        ..Config::default()
    })
    .await;
    let run = kit.start(invoice("INV-10")).await;
    kit.sleep_days(1).await;
    kit.decide(&run, true).await;
    // The bank's lost confirmation is retried after 15 s of virtual time.
    assert_eq!(kit.status(&run).await["stage"], "paying_advance");
    kit.env.sleep(Duration::from_secs(60)).await.unwrap();
    let bank: Vec<u32> = kit
        .services
        .journal()
        .of("bank")
        .iter()
        .map(|e| e.by.attempt)
        .collect();
    assert_eq!(bank, [1, 2], "the lost confirmation is retried once");
    assert_eq!(kit.services.transfers().len(), 1, "and pays once");
    assert_eq!(kit.status(&run).await["stage"], "awaiting_payment");

    for (day, reference) in [(10, "GLX-1"), (15, "GLX-2"), (15, "GLX-3")] {
        kit.sleep_days(day).await;
        kit.pay(&run, 1_600_000, reference).await;
    }
    let (record, services) = kit.finish(&run).await;
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(output(&record)["outcome"], "settled");
    assert_eq!(services.bureau_requests("Globex Retail"), 4);
    let amounts: Vec<u64> = services
        .transfers()
        .iter()
        .map(|t| t.amount_cents)
        .collect();
    assert_eq!(amounts, [3_840_000, 816_000]);
}
