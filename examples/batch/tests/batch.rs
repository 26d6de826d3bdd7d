//! The batch example on virtual time, through a real host: 20 orders as
//! child workflows four at a time with three failures reported, the same
//! batch replayed before every activation, one order at a time, a refused
//! input; and the monitor for 2,500 checks in three runs, and its `stop`.
//!
//! Needs the workflows built: `scripts/build-guests`.

use batch::{Config, Journal, activities, sample_config, sample_orders};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use weft::model::{Event, History, RunId, Sha256Hex};
use weft::store::RunRecord;
use weft::testing::{TestEnv, guest_wasm};
use weft::wasm::{EngineConfig, WasmEngine};
use weft::workflow::ReplayVerdict;
use weft::{ListFilter, RunStatus};

const MINUTE_MS: u64 = 60_000;

/// One engine for the whole file: the module is compiled once.
fn engine() -> Arc<WasmEngine> {
    static ENGINE: OnceLock<Arc<WasmEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(WasmEngine::new(EngineConfig::default()).unwrap()))
        .clone()
}

struct Kit {
    env: TestEnv,
    module: Sha256Hex,
    journal: Journal,
}

impl Kit {
    async fn new(mut config: Config, replay_every_activation: bool) -> Kit {
        let journal = Journal::default();
        config.journal = journal.clone();
        let mut builder = TestEnv::builder(activities(config)).engine(engine());
        if replay_every_activation {
            builder = builder.replay_every_activation();
        }
        let env = builder.build().await.unwrap();
        journal.set_clock(Arc::new(env.clock().clone()));
        let wasm = guest_wasm("batch-workflow").unwrap();
        let module = env.deploy("batch", &wasm).await.unwrap();
        Kit {
            env,
            module,
            journal,
        }
    }

    async fn start(&self, workflow_type: &str, id: &str, input: Value) -> RunId {
        self.env
            .start(&self.module, workflow_type, id, input)
            .await
            .unwrap()
    }

    async fn runs(&self, filter: ListFilter) -> Vec<RunRecord> {
        self.env.host().list(&filter).await.unwrap()
    }

    /// The attempts of `activity` for one order (or check).
    fn attempts(&self, activity: &str, subject: &str) -> usize {
        self.journal
            .of(activity)
            .iter()
            .filter(|e| e.subject == subject)
            .count()
    }
}

/// The most children the parent had started and not yet seen end, by its
/// history. A child is created after its start is recorded and closed before
/// its end is, so no more than this many were ever open at once.
fn peak_open_children(history: &History) -> usize {
    let (mut open, mut peak) = (0usize, 0usize);
    for e in history.events() {
        match e.event {
            Event::ChildWorkflowInitiated { .. } => {
                open += 1;
                peak = peak.max(open);
            }
            Event::ChildWorkflowCompleted { .. } | Event::ChildWorkflowFailed { .. } => open -= 1,
            _ => {}
        }
    }
    peak
}

fn batch_input(orders: Vec<Value>, max_parallel: usize) -> Value {
    json!({ "orders": orders, "max_parallel": max_parallel })
}

fn order_ids(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_orders_four_at_a_time_report_three_failures() {
    let kit = Kit::new(sample_config(), false).await;
    let started = kit.env.now_ms();
    let run = kit
        .start("batch", "batch-7", batch_input(sample_orders(), 4))
        .await;
    let progress: Value = kit.env.query(&run, "progress", ()).await.unwrap();
    assert_eq!(progress["in_flight"], 4);
    assert_eq!(progress["total"], 20);

    let report: Value = kit.env.output(&run).await.unwrap();
    let expected: Vec<String> = (1001..=1020)
        .filter(|id| ![1005, 1011, 1017].contains(id))
        .map(|id| id.to_string())
        .collect();
    assert_eq!(order_ids(&report["succeeded"]), expected);
    let failed: Vec<(&str, &str)> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["order_id"].as_str().unwrap(),
                f["error_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [
            ("1005", "InvalidAddress"),
            ("1011", "OutOfStock"),
            ("1017", "CardDeclined"),
        ]
    );
    assert!(
        report["failed"][2]["message"]
            .as_str()
            .unwrap()
            .contains("the card of customer c-17 was declined")
    );

    // Never more than four open, and four were open.
    let history = kit.env.history(&run).await.unwrap();
    assert_eq!(peak_open_children(&history), 4);
    assert_eq!(report["peak_in_flight"], 4);

    // The children, as the host lists them: one per order, named after the
    // batch, each closed with its own outcome.
    let children = kit
        .runs(ListFilter {
            workflow_type: Some("process_order".into()),
            ..ListFilter::default()
        })
        .await;
    assert_eq!(children.len(), 20);
    let by_id: HashMap<&str, &RunRecord> = children
        .iter()
        .map(|c| (c.workflow_id.as_str(), c))
        .collect();
    for id in 1001..=1020 {
        let child = by_id[format!("batch-7/order-{id}").as_str()];
        assert_eq!(child.parent.as_ref().unwrap().run_id, run);
        let failure = child.failure.as_ref().map(|f| f.error_type.as_str());
        match id {
            1005 => assert_eq!(failure, Some("InvalidAddress")),
            1011 => assert_eq!(failure, Some("OutOfStock")),
            1017 => assert_eq!(failure, Some("CardDeclined")),
            _ => assert_eq!(child.status, RunStatus::Completed, "order {id}"),
        }
    }
    // The children's own times tell the same story: sweeping their
    // lifetimes (an end before a start at the same instant) never finds
    // more than four open.
    let mut edges: Vec<(u64, i32)> = children
        .iter()
        .flat_map(|c| [(c.created_at_ms, 1), (c.closed_at_ms.unwrap(), -1)])
        .collect();
    edges.sort();
    let (mut open, mut peak) = (0, 0);
    for (_, step) in edges {
        open += step;
        peak = peak.max(open);
    }
    assert_eq!(peak, 4);
    // Packing takes 15 min plus 5 per unit (20 to 30 min an order); four
    // lanes finish the batch in 1 h 55 min of virtual time, plus the 3 s of
    // order 1008's two payment retries, which delayed the last order.
    let record = kit.env.host().describe(&run).await.unwrap();
    assert_eq!(
        record.closed_at_ms.unwrap() - started,
        115 * MINUTE_MS + 3_000
    );
    assert_eq!(
        record.status_line.as_deref(),
        Some("20 of 20 orders done (3 failed), 0 in flight")
    );

    // What the activities saw: the declined order's stock was released and
    // nothing refunded; the gateway's two timeouts were retried.
    assert_eq!(kit.attempts("reserve_stock", "1017"), 1);
    assert_eq!(kit.attempts("release_stock", "1017"), 1);
    assert_eq!(kit.journal.of("release_stock").len(), 1);
    assert_eq!(kit.journal.of("refund_payment").len(), 0);
    assert_eq!(kit.attempts("reserve_stock", "1005"), 0);
    assert_eq!(kit.attempts("charge_payment", "1011"), 0);
    assert_eq!(kit.attempts("charge_payment", "1008"), 3);
    assert_eq!(kit.journal.of("ship").len(), 17);

    // Replay: the parent, the declined order and the retried one.
    kit.env.assert_replays(&run).await.unwrap();
    for id in ["1017", "1008"] {
        let child = by_id[format!("batch-7/order-{id}").as_str()];
        kit.env.assert_replays(&child.run_id).await.unwrap();
    }
    kit.env.shutdown().await;
}

/// Every activation of the parent and of every child starts from a fresh
/// instance that replays its history: the same report, the same peak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_replays_before_every_activation() {
    let kit = Kit::new(sample_config(), true).await;
    let run = kit
        .start("batch", "batch-8", batch_input(sample_orders(), 4))
        .await;
    let report: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(report["succeeded"].as_array().unwrap().len(), 17);
    assert_eq!(report["failed"].as_array().unwrap().len(), 3);
    assert_eq!(report["peak_in_flight"], 4);
    let history = kit.env.history(&run).await.unwrap();
    assert_eq!(peak_open_children(&history), 4);
    // Each activity ran once per attempt, however often the workflows replayed.
    assert_eq!(kit.journal.of("ship").len(), 17);
    assert_eq!(kit.attempts("charge_payment", "1008"), 3);
    kit.env.assert_replays(&run).await.unwrap();
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_runs_the_orders_in_sequence() {
    let kit = Kit::new(sample_config(), false).await;
    let orders: Vec<Value> = sample_orders().into_iter().take(6).collect();
    let run = kit.start("batch", "batch-9", batch_input(orders, 1)).await;
    let report: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(
        order_ids(&report["succeeded"]),
        ["1001", "1002", "1003", "1004", "1006"]
    );
    assert_eq!(report["failed"][0]["order_id"], "1005");
    assert_eq!(report["peak_in_flight"], 1);
    let history = kit.env.history(&run).await.unwrap();
    assert_eq!(peak_open_children(&history), 1);
    let mut children = kit
        .runs(ListFilter {
            workflow_type: Some("process_order".into()),
            ..ListFilter::default()
        })
        .await;
    children.sort_by_key(|c| c.workflow_id.clone());
    for pair in children.windows(2) {
        assert!(pair[0].closed_at_ms.unwrap() <= pair[1].created_at_ms);
    }
    kit.env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_id_given_twice_is_reported_and_a_zero_limit_refused() {
    let kit = Kit::new(sample_config(), false).await;
    let first = sample_orders().remove(0);
    let run = kit
        .start(
            "batch",
            "batch-10",
            batch_input(vec![first.clone(), first], 2),
        )
        .await;
    let report: Value = kit.env.output(&run).await.unwrap();
    assert_eq!(order_ids(&report["succeeded"]), ["1001"]);
    assert_eq!(report["failed"][0]["order_id"], "1001");
    assert_eq!(report["failed"][0]["error_type"], "WorkflowIdInUse");

    let refused = kit
        .start("batch", "batch-11", batch_input(sample_orders(), 0))
        .await;
    let record = kit.env.result(&refused).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.failure.unwrap().error_type, "InvalidInput");
    kit.env.shutdown().await;
}

/// 2,500 one-minute checks: two continue-as-new (after checks 1,000 and
/// 2,000), each run's history bounded, the summary — an open incident
/// included — carried from run to run, and `stop` ends the third run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_continues_as_new_every_1000_checks_until_stopped() {
    let config = Config {
        // One outage inside the first run, one across its continue-as-new.
        outages: vec![500..=504, 998..=1003],
        // Check 1,500 needs a second attempt; check 2,000 gets no answer at all.
        probe_timeouts: BTreeMap::from([(1500, 1), (2000, 3)]),
        ..Config::default()
    };
    let kit = Kit::new(config, false).await;
    let started = kit.env.now_ms();
    let real = Instant::now();
    let first = kit
        .start(
            "monitor",
            "monitor-shop",
            json!({ "target": "https://shop.example/health" }),
        )
        .await;

    // Check n runs (n - 1) minutes in, plus 1 + 3 s of retries before
    // check 2,500: half a minute later it is done and check 2,501 is not due.
    kit.env
        .sleep(Duration::from_millis(2_499 * MINUTE_MS + 30_000))
        .await
        .unwrap();
    let runs = kit
        .runs(ListFilter {
            workflow_id: Some("monitor-shop".into()),
            ..ListFilter::default()
        })
        .await;
    assert_eq!(runs.len(), 3);
    let current = runs
        .iter()
        .find(|r| r.status == RunStatus::Running)
        .unwrap()
        .run_id
        .clone();
    let summary: Value = kit.env.query(&current, "summary", ()).await.unwrap();
    assert_eq!(summary["checks"], 2_500);
    assert_eq!(summary["run"], 3);

    kit.env
        .signal(&current, "stop", json!({ "reason": "maintenance over" }))
        .await
        .unwrap();
    let report: Value = kit.env.output(&first).await.unwrap();
    let elapsed = real.elapsed();
    assert_eq!(report["stopped_because"], "maintenance over");
    let s = &report["summary"];
    assert_eq!(s["checks"], 2_500);
    assert_eq!(s["failed"], 5 + 6 + 1);
    assert_eq!(s["healthy"], 2_500 - 12);
    assert_eq!(s["alerts"], 2);
    assert_eq!(s["open_incident"], Value::Null);
    assert_eq!(s["run"], 3);
    // One alert per outage, even for the one a continue-as-new cut in two.
    let alerts: Vec<String> = kit
        .journal
        .of("alert")
        .iter()
        .map(|e| e.text.clone())
        .collect();
    assert_eq!(alerts.len(), 2);
    assert!(alerts[1].starts_with("INC-998: "), "{alerts:?}");
    let resolved: Vec<String> = kit
        .journal
        .of("resolve")
        .iter()
        .map(|e| e.subject.clone())
        .collect();
    assert_eq!(resolved, ["505", "1004"]);
    assert_eq!(kit.journal.of("probe").len(), 2_500 + 1 + 2);

    // Exactly two continue-as-new, oldest first; the last run completed.
    let mut runs = kit
        .runs(ListFilter {
            workflow_id: Some("monitor-shop".into()),
            ..ListFilter::default()
        })
        .await;
    runs.sort_by_key(|r| r.created_at_ms);
    let statuses: Vec<RunStatus> = runs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            RunStatus::ContinuedAsNew,
            RunStatus::ContinuedAsNew,
            RunStatus::Completed
        ]
    );
    assert_eq!(runs[0].run_id, first);
    assert_eq!(runs[0].continued_to.as_ref(), Some(&runs[1].run_id));
    assert_eq!(runs[1].continued_to.as_ref(), Some(&runs[2].run_id));
    // The first run ends when the wait after check 1,000 does.
    assert_eq!(runs[0].closed_at_ms.unwrap() - started, 1_000 * MINUTE_MS);

    let mut handed_over = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let history = kit.env.history(&r.run_id).await.unwrap();
        // Six events a check (two activations: the timer, the probe), a few
        // for alerts and status lines: bounded by the 1,000 checks of a run.
        let checks = if i < 2 { 1_000 } else { 500 };
        assert!(
            history.len() <= 6 * checks + 40,
            "run {} has {} events for {checks} checks",
            i + 1,
            history.len()
        );
        assert!(history.len() >= 6 * checks);
        history.verify().unwrap();
        match &history.events()[0].event {
            Event::WorkflowStarted {
                input,
                continued_from,
                ..
            } => {
                assert_eq!(
                    continued_from.as_ref(),
                    i.checked_sub(1).map(|p| &runs[p].run_id)
                );
                handed_over.push(input["summary"].clone());
            }
            other => panic!("event 1 is {other:?}"),
        }
        match kit.env.host().replay(&r.run_id).await.unwrap() {
            ReplayVerdict::Identical { .. } => {}
            ReplayVerdict::Diverged(d) => panic!("run {} diverged: {d}", i + 1),
        }
    }
    // The summary each run was handed: nothing for the first, then the
    // counts so far — and the outage still open at check 1,000.
    assert_eq!(handed_over[0], Value::Null);
    assert_eq!(handed_over[1]["checks"], 1_000);
    assert_eq!(handed_over[1]["run"], 1);
    assert_eq!(handed_over[1]["open_incident"], "INC-998");
    assert_eq!(handed_over[1]["consecutive_failed"], 3);
    assert_eq!(handed_over[2]["checks"], 2_000);
    assert_eq!(handed_over[2]["failed"], 5 + 6 + 1);
    assert_eq!(handed_over[2]["alerts"], 2);
    kit.env.shutdown().await;
    eprintln!(
        "2,500 monitor checks in {:.2} s of real time",
        elapsed.as_secs_f64()
    );
}

/// Signals go to a run: once a run has continued as new it takes none, and
/// a `stop` sent to the open run ends it at once, before the next check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_goes_to_the_open_run_and_ends_it_before_the_next_check() {
    let kit = Kit::new(Config::default(), false).await;
    let first = kit
        .start(
            "monitor",
            "monitor-small",
            json!({ "target": "https://shop.example/health", "checks_per_run": 3 }),
        )
        .await;
    // Checks at 0, 1 and 2 minutes; the third wait ends at 3 and hands over.
    kit.env
        .sleep(Duration::from_millis(3 * MINUTE_MS + 30_000))
        .await
        .unwrap();
    let record = kit.env.host().describe(&first).await.unwrap();
    assert_eq!(record.status, RunStatus::ContinuedAsNew);
    let second = record.continued_to.unwrap();
    assert!(
        kit.env
            .host()
            .signal(&first, "stop", json!({}))
            .await
            .is_err(),
        "a run that continued as new takes no signals"
    );
    kit.env
        .signal(&second, "stop", json!({ "reason": "done" }))
        .await
        .unwrap();
    let done = kit.env.host().describe(&second).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.closed_at_ms, Some(kit.env.now_ms()));
    let report: Value = kit.env.output(&first).await.unwrap();
    assert_eq!(report["summary"]["checks"], 4);
    assert_eq!(report["stopped_because"], "done");
    assert_eq!(kit.journal.of("probe").len(), 4);
    kit.env.assert_replays(&second).await.unwrap();
    kit.env.shutdown().await;
}
