//! The `loan_application` workflow through a real host on virtual time: the
//! reminder schedule, withdrawal, automatic approval, the underwriter's
//! decision by update and by signal, the fraud check, the status query over
//! time, and a replay check of every run. Build the workflow first:
//! `scripts/build-guests`.

use loan_application::{Config, MailKind, Services, activities};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use weft::model::{RunId, Sha256Hex};
use weft::store::RunRecord;
use weft::testing::{TestEnv, TestError, guest_wasm};
use weft::wasm::{EngineConfig, WasmEngine};
use weft::{HostError, RunStatus};

const HOUR_MS: u64 = 3600 * 1000;
const DAY_MS: u64 = 24 * HOUR_MS;

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
        let wasm = guest_wasm("loan-application-workflow").unwrap();
        let module = env.deploy("loan-application", &wasm).await.unwrap();
        Self {
            env,
            services,
            module,
        }
    }

    async fn start(&self, application: Value) -> RunId {
        let id = format!("loan-{}", application["application_id"].as_str().unwrap());
        self.env
            .start(&self.module, "loan_application", &id, application)
            .await
            .unwrap()
    }

    async fn status(&self, run: &RunId) -> Value {
        self.env.query(run, "status", ()).await.unwrap()
    }

    async fn send_documents(&self, run: &RunId, documents: &[&str]) {
        let payload = json!({ "documents": documents });
        self.env.signal(run, "documents", payload).await.unwrap();
    }

    async fn sleep_hours(&self, hours: u64) {
        self.env
            .sleep(Duration::from_millis(hours * HOUR_MS))
            .await
            .unwrap();
    }

    /// The times of the reminders sent so far, in hours after `start`.
    fn reminder_hours(&self, start: u64) -> Vec<u64> {
        self.services
            .reminders()
            .iter()
            .map(|m| (m.at_ms - start) / HOUR_MS)
            .collect()
    }

    /// Runs to the end, checks that the history replays, and shuts down.
    async fn finish(self, run: &RunId) -> (RunRecord, Services) {
        let record = self.env.result(run).await.unwrap();
        self.env.assert_replays(run).await.unwrap();
        self.env.shutdown().await;
        (record, self.services)
    }
}

/// Grace asks for `amount` and has sent her id; payslip and bank statement
/// are missing.
fn application(id: &str, amount: u64) -> Value {
    json!({
        "application_id": id,
        "applicant": "Grace Hopper",
        "email": "grace@example.com",
        "amount": amount,
        "auto_approve_below": 10_000,
        "required_documents": ["id", "payslip", "bank_statement"],
        "submitted_documents": ["id"],
    })
}

fn output(record: &RunRecord) -> Value {
    weft::outcome(record).unwrap_or_else(|failure| {
        panic!("run {} ended {:?}: {failure}", record.run_id, record.status)
    })
}

fn decision(approved: bool) -> Value {
    json!({ "approved": approved, "by": "Lin", "reason": "checked the payslip" })
}

/// The validator's message of a refused update, or a panic naming what
/// came back instead.
fn refusal(result: Result<Value, TestError>) -> String {
    match result {
        Err(TestError::Host(HostError::UpdateRejected { message, .. })) => message,
        other => panic!("expected the update to be refused, got {other:?}"),
    }
}

async fn update_events(env: &TestEnv, run: &RunId) -> usize {
    env.history(run)
        .await
        .unwrap()
        .events()
        .iter()
        .filter(|e| e.event.kind().starts_with("update_"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_after_two_reminders_stop_the_reminders() {
    let kit = Kit::new(Config::default()).await;
    let start = kit.env.now_ms();
    let run = kit.start(application("LA-1", 25_000)).await;
    kit.sleep_hours(30).await;
    assert_eq!(kit.reminder_hours(start), [0, 24]);

    kit.send_documents(&run, &["payslip", "bank_statement"])
        .await;
    assert_eq!(kit.status(&run).await["stage"], "awaiting_decision");
    // Four more days pass: the reminder schedule is over.
    kit.sleep_hours(4 * 24).await;
    assert_eq!(kit.reminder_hours(start), [0, 24]);

    kit.env
        .signal(&run, "decision", decision(true))
        .await
        .unwrap();
    let (record, services) = kit.finish(&run).await;
    let verdict = output(&record);
    assert_eq!(verdict["outcome"], "approved");
    assert_eq!(verdict["reminders_sent"], 2);
    assert_eq!(services.reminders().len(), 2);
    let reminder = &services.reminders()[1];
    assert!(
        reminder.subject.contains("bank_statement, payslip"),
        "{}",
        reminder.subject
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_documents_seven_reminders_go_out_and_the_application_is_withdrawn() {
    let kit = Kit::new(Config::default()).await;
    let start = kit.env.now_ms();
    let run = kit.start(application("LA-2", 25_000)).await;
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(kit.env.now_ms(), start + 7 * DAY_MS);
    assert_eq!(kit.reminder_hours(start), [0, 24, 48, 72, 96, 120, 144]);

    let (record, services) = kit.finish(&record.run_id).await;
    let verdict = output(&record);
    assert_eq!(verdict["outcome"], "withdrawn");
    assert_eq!(verdict["decided_by"], Value::Null);
    assert_eq!(verdict["reminders_sent"], 7);
    assert_eq!(services.fraud_requests(), 0);
    let mails = services.mails();
    assert_eq!(mails.len(), 8);
    assert_eq!(mails[7].kind, MailKind::Letter);
    assert!(
        mails[7].subject.contains("withdrawn"),
        "{}",
        mails[7].subject
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_amount_is_approved_automatically() {
    let kit = Kit::new(Config::default()).await;
    let mut small = application("LA-3", 8_000);
    small["submitted_documents"] = json!(["id", "payslip", "bank_statement"]);
    let run = kit.start(small).await;
    let (record, services) = kit.finish(&run).await;
    let verdict = output(&record);
    assert_eq!(verdict["outcome"], "approved");
    assert_eq!(verdict["decided_by"], "automatic");
    assert_eq!(verdict["reminders_sent"], 0);
    assert_eq!(services.fraud_requests(), 1);
    let kinds: Vec<MailKind> = services.mails().iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MailKind::Letter]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_small_amount_is_refused() {
    // The fraud service is down for one request, so the run waits a minute in
    // its fraud check with the file complete.
    let kit = Kit::new(Config {
        fraud_outages: 1,
        ..Config::default()
    })
    .await;
    let mut small = application("LA-4", 8_000);
    small["submitted_documents"] = json!(["id", "payslip", "bank_statement"]);
    let run = kit.start(small).await;
    assert_eq!(kit.status(&run).await["stage"], "fraud_check");
    let message = refusal(kit.env.update(&run, "decide", decision(false)).await);
    assert!(message.contains("approved automatically"), "{message}");
    let (record, services) = kit.finish(&run).await;
    assert_eq!(output(&record)["decided_by"], "automatic");
    assert_eq!(services.fraud_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_amount_is_approved_by_update_once_the_file_is_complete() {
    let kit = Kit::new(Config::default()).await;
    let run = kit.start(application("LA-5", 25_000)).await;

    // Too early: the validator refuses, and the history shows nothing.
    let message = refusal(kit.env.update(&run, "decide", decision(true)).await);
    assert!(
        message.contains("incomplete (missing: bank_statement, payslip)"),
        "{message}"
    );
    assert_eq!(update_events(&kit.env, &run).await, 0);

    kit.sleep_hours(3).await;
    kit.send_documents(&run, &["payslip", "bank_statement"])
        .await;
    let answer = kit
        .env
        .update(&run, "decide", decision(true))
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({ "application_id": "LA-5", "outcome": "approved" })
    );

    let (record, services) = kit.finish(&run).await;
    let verdict = output(&record);
    assert_eq!(verdict["outcome"], "approved");
    assert_eq!(verdict["decided_by"], "Lin");
    assert_eq!(verdict["reason"], "checked the payslip");
    assert_eq!(verdict["reminders_sent"], 1);
    let letter = services.mails().pop().unwrap();
    assert_eq!(letter.kind, MailKind::Letter);
    assert!(letter.subject.contains("approved"), "{}", letter.subject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_amount_is_rejected_by_signal() {
    let kit = Kit::new(Config::default()).await;
    let mut complete = application("LA-6", 40_000);
    complete["submitted_documents"] = json!(["id", "payslip", "bank_statement"]);
    let run = kit.start(complete).await;
    assert_eq!(kit.status(&run).await["stage"], "awaiting_decision");
    kit.sleep_hours(20).await;
    kit.env
        .signal(&run, "decision", decision(false))
        .await
        .unwrap();

    let (record, services) = kit.finish(&run).await;
    let verdict = output(&record);
    assert_eq!(verdict["outcome"], "rejected");
    assert_eq!(verdict["decided_by"], "Lin");
    assert_eq!(services.reminders().len(), 0);
    let letter = services.mails().pop().unwrap();
    assert!(letter.subject.contains("rejected"), "{}", letter.subject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_decision_is_refused_while_the_letter_goes_out() {
    // The mail server is down: the letter of the first decision waits for
    // its retry, and meanwhile another decision comes in.
    let kit = Kit::new(Config {
        mail_outages: 1,
        ..Config::default()
    })
    .await;
    let mut complete = application("LA-7", 40_000);
    complete["submitted_documents"] = json!(["id", "payslip", "bank_statement"]);
    let run = kit.start(complete).await;
    kit.env
        .update(&run, "decide", decision(false))
        .await
        .unwrap();
    assert_eq!(kit.status(&run).await["stage"], "notifying");
    let message = refusal(kit.env.update(&run, "decide", decision(true)).await);
    assert!(message.contains("already rejected by Lin"), "{message}");

    let (record, services) = kit.finish(&run).await;
    assert_eq!(output(&record)["outcome"], "rejected");
    let letters: Vec<String> = services
        .mails()
        .into_iter()
        .filter(|m| m.kind == MailKind::Letter)
        .map(|m| m.subject)
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_signal_sent_early_waits_for_the_decision_stage() {
    let kit = Kit::new(Config::default()).await;
    let run = kit.start(application("LA-8", 25_000)).await;
    kit.env
        .signal(&run, "decision", decision(true))
        .await
        .unwrap();
    let status = kit.status(&run).await;
    assert_eq!(status["stage"], "awaiting_documents");
    assert_eq!(status["outcome"], Value::Null);

    kit.sleep_hours(2).await;
    kit.send_documents(&run, &["payslip", "bank_statement"])
        .await;
    let (record, _) = kit.finish(&run).await;
    assert_eq!(output(&record)["outcome"], "approved");
    assert_eq!(
        record.closed_at_ms,
        Some(record.created_at_ms + 2 * HOUR_MS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_decides_within_five_days_and_the_application_expires() {
    let kit = Kit::new(Config::default()).await;
    let mut complete = application("LA-9", 25_000);
    complete["submitted_documents"] = json!(["id", "payslip", "bank_statement"]);
    let start = kit.env.now_ms();
    let run = kit.start(complete).await;
    let record = kit.env.result(&run).await.unwrap();
    assert_eq!(kit.env.now_ms(), start + 5 * DAY_MS);
    let (record, services) = kit.finish(&record.run_id).await;
    let verdict = output(&record);
    assert_eq!(verdict["outcome"], "expired");
    assert_eq!(verdict["decided_by"], Value::Null);
    assert!(services.mails()[0].subject.contains("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagged_applicant_fails_the_run_with_fraud_suspected() {
    let kit = Kit::new(Config {
        flagged_applicants: vec!["Grace Hopper".into()],
        ..Config::default()
    })
    .await;
    let run = kit.start(application("LA-10", 25_000)).await;
    kit.sleep_hours(1).await;
    kit.send_documents(&run, &["payslip", "bank_statement"])
        .await;
    let (record, services) = kit.finish(&run).await;
    assert_eq!(record.status, RunStatus::Failed);
    let failure = record.failure.unwrap();
    assert_eq!(failure.error_type, "FraudSuspected");
    assert!(failure.message.contains("LA-10"), "{}", failure.message);
    assert_eq!(services.fraud_requests(), 1);
    // One reminder, no letter.
    let kinds: Vec<MailKind> = services.mails().iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MailKind::Reminder]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_query_follows_the_application_through_virtual_time() {
    let kit = Kit::new(Config::default()).await;
    let run = kit.start(application("LA-11", 25_000)).await;
    let status = kit.status(&run).await;
    assert_eq!(
        status,
        json!({
            "stage": "awaiting_documents",
            "missing_documents": ["bank_statement", "payslip"],
            "reminders_sent": 1,
            "outcome": null,
        })
    );

    kit.sleep_hours(50).await;
    kit.send_documents(&run, &["payslip"]).await;
    let status = kit.status(&run).await;
    assert_eq!(status["missing_documents"], json!(["bank_statement"]));
    assert_eq!(status["reminders_sent"], 3);

    kit.sleep_hours(24).await;
    assert_eq!(kit.status(&run).await["reminders_sent"], 4);
    let reminder = kit.services.reminders().pop().unwrap();
    assert!(
        reminder.subject.contains("still needs bank_statement ("),
        "{}",
        reminder.subject
    );
    kit.send_documents(&run, &["bank_statement"]).await;
    assert_eq!(
        kit.status(&run).await,
        json!({
            "stage": "awaiting_decision",
            "missing_documents": [],
            "reminders_sent": 4,
            "outcome": null,
        })
    );

    kit.sleep_hours(24).await;
    kit.env
        .update(&run, "decide", decision(true))
        .await
        .unwrap();
    let (record, _) = kit.finish(&run).await;
    assert_eq!(output(&record)["reminders_sent"], 4);
    assert_eq!(
        record.status_line.as_deref(),
        Some("approved: checked the payslip (letter <0005@mail.lender.example>)")
    );
}

/// The whole process with outages of both services, rebuilt by replay
/// before each activation — what a host does after a crash at that point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_before_every_activation_reaches_the_same_decision() {
    let kit = Kit::replaying(Config {
        mail_outages: 2,
        fraud_outages: 2,
        ..Config::default()
    })
    .await;
    let start = kit.env.now_ms();
    let run = kit.start(application("LA-12", 25_000)).await;
    kit.sleep_hours(26).await;
    // The first reminder waited for two mail retries (30 s, 60 s).
    assert_eq!(kit.reminder_hours(start), [0, 24]);
    assert_eq!(kit.services.reminders()[0].at_ms, start + 90_000);

    kit.send_documents(&run, &["payslip", "bank_statement"])
        .await;
    kit.sleep_hours(1).await;
    assert_eq!(kit.services.fraud_requests(), 3);
    assert_eq!(kit.status(&run).await["stage"], "awaiting_decision");
    kit.env
        .update(&run, "decide", decision(false))
        .await
        .unwrap();

    let (record, services) = kit.finish(&run).await;
    assert_eq!(record.status, RunStatus::Completed);
    let verdict = output(&record);
    assert_eq!(verdict["outcome"], "rejected");
    assert_eq!(verdict["reminders_sent"], 2);
    assert_eq!(services.mails().len(), 3);
}
