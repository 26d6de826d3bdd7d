//! The test kit (`weft::testing`) itself: virtual time that skips ahead, and
//! replay at every activation boundary, on the approval example.

mod common;

use common::{Calls, guest};
use serde_json::{Value, json};
use std::time::Duration;
use weft::testing::{TestEnv, TestError};
use weft::{Activities, ActivityContext, ActivityError, RunStatus};

const DAY_MS: u64 = 24 * 3600 * 1000;

fn activities(calls: &Calls, bureau_failures: u32) -> Activities {
    let mut a = Activities::new();
    let c = calls.clone();
    a.register("check_credit", move |ctx: ActivityContext, _: Value| {
        let c = c.clone();
        async move {
            c.record("check_credit");
            if ctx.attempt <= bureau_failures {
                return Err(ActivityError::retryable("BureauTimeout", "no answer"));
            }
            Ok(json!({ "score": 712 }))
        }
    });
    let c = calls.clone();
    a.register("notify", move |_: ActivityContext, req: Value| {
        let c = c.clone();
        async move {
            c.record(format!("notify:{}", req["outcome"].as_str().unwrap_or("?")));
            Ok::<_, ActivityError>(json!(null))
        }
    });
    a
}

fn input() -> Value {
    json!({ "applicant": "Grace", "amount": 25_000, "cooling_off_ms": DAY_MS, "decision_timeout_ms": 7 * DAY_MS })
}

async fn env(calls: &Calls, failures: u32, replay_every: bool) -> TestEnv {
    let mut builder = TestEnv::builder(activities(calls, failures)).engine(common::engine());
    if replay_every {
        builder = builder.replay_every_activation();
    }
    builder.build().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_fires_retries_and_timers_in_order_and_signals_land_at_virtual_times() {
    let calls = Calls::default();
    let env = env(&calls, 2, false).await;
    let module = env
        .deploy("approval", &guest("approval-workflow"))
        .await
        .unwrap();
    let start = env.now_ms();
    let run = env
        .start(&module, "approval", "loan-1", input())
        .await
        .unwrap();

    // Two retries (1 s, 2 s) and a day of cooling off, in one call.
    env.sleep(Duration::from_millis(DAY_MS + 5_000))
        .await
        .unwrap();
    assert_eq!(calls.count("check_credit"), 3);
    let status: Value = env.query(&run, "status", ()).await.unwrap();
    assert_eq!(status["stage"], "awaiting decision");
    assert_eq!(env.now_ms(), start + DAY_MS + 5_000);

    // Three days later the underwriter decides.
    env.sleep(Duration::from_millis(3 * DAY_MS)).await.unwrap();
    env.signal(&run, "decision", json!({ "approved": true, "by": "Lin" }))
        .await
        .unwrap();
    let verdict: Value = env.output(&run).await.unwrap();
    assert_eq!(verdict["outcome"], "approved");
    assert_eq!(verdict["decided_by"], "Lin");
    assert_eq!(calls.count("notify:approved"), 1);
    env.assert_replays(&run).await.unwrap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_skips_ahead_while_the_run_only_waits_on_timers() {
    let calls = Calls::default();
    let env = env(&calls, 0, true).await;
    let module = env
        .deploy("approval", &guest("approval-workflow"))
        .await
        .unwrap();
    let start = env.now_ms();
    let run = env
        .start(&module, "approval", "loan-2", input())
        .await
        .unwrap();
    // Nobody decides: a day of cooling off plus seven days of waiting pass at once.
    let verdict: Value = env.output(&run).await.unwrap();
    assert_eq!(verdict["outcome"], "timed_out");
    assert_eq!(env.now_ms(), start + 8 * DAY_MS);
    // Every activation replayed the run from scratch and none diverged.
    assert_eq!(
        env.host().describe(&run).await.unwrap().status,
        RunStatus::Completed
    );
    env.assert_replays(&run).await.unwrap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_on_the_outside_world_is_reported_blocked() {
    let calls = Calls::default();
    let env = env(&calls, 0, false).await;
    let module = env.deploy("hello", &guest("test-scenarios")).await.unwrap();
    // `counter` waits for signals forever: nothing is scheduled to happen.
    let run = env
        .start(&module, "counter", "c-1", json!({ "signals": 2 }))
        .await
        .unwrap();
    match env.result(&run).await {
        Err(TestError::Blocked { run_id }) => assert_eq!(run_id, run),
        other => panic!("expected Blocked, got {other:?}"),
    }
    env.shutdown().await;
}
