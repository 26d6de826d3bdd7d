//! Golden histories: real histories of the examples and of the primitives'
//! test workflows (sagas, updates, children, patches, visibility,
//! continue-as-new, retries, failures, local activities, terminations,
//! resets), kept under
//! `host/tests/histories/` as `weft export` writes them, replayed against
//! the modules built from today's source. A change to the SDK, the host or an
//! example that would break the replay of runs recorded before it fails here,
//! naming the file and the first divergence.
//!
//! The replay is unpinned (`replay_against`): module bytes change with every
//! toolchain, what must not change is how today's code replays old runs.
//!
//! To re-record them after an intended, compatible change (say a new event
//! field with a default), run `WEFT_BLESS=1 cargo test -p weft --test golden`
//! and review the diff: a normal run never rewrites them. Recording uses a
//! fixed seed and a manual clock, so ids and times come out the same each time.

mod common;

use common::{Backend, fresh_db, guest};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use weft::audit::{self, Export};
use weft::testing::TestEnv;
use weft::workflow::{ReplayVerdict, replay_against};
use weft::{Activities, ActivityContext, ActivityError};

fn histories() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/histories")
}

/// One recorded example: its file, the guest crate it runs on (also the
/// module's name in the export), and how to drive it to its end.
struct Golden {
    file: &'static str,
    guest: &'static str,
}

const GOLDEN: &[Golden] = &[
    Golden {
        file: "hello.json",
        guest: "hello-workflow",
    },
    Golden {
        file: "approval-approved.json",
        guest: "approval-workflow",
    },
    Golden {
        file: "approval-timed-out.json",
        guest: "approval-workflow",
    },
    Golden {
        file: "order-v1.json",
        guest: "test-versions-v1",
    },
    Golden {
        file: "counter.json",
        guest: "test-scenarios",
    },
    // The primitives' event kinds, one workflow each: a saga compensated on
    // a cancel request, validated updates, children, a patch marker, the
    // status line and search attributes.
    Golden {
        file: "saga-cancelled.json",
        guest: "test-primitives",
    },
    Golden {
        file: "updatable.json",
        guest: "test-primitives",
    },
    Golden {
        file: "parent.json",
        guest: "test-primitives",
    },
    Golden {
        file: "patched.json",
        guest: "test-primitives",
    },
    Golden {
        file: "status.json",
        guest: "test-primitives",
    },
    Golden {
        file: "continue-as-new.json",
        guest: "test-primitives",
    },
    // A retried activity, a non-retryable failure and a local activity.
    Golden {
        file: "activities.json",
        guest: "test-activities",
    },
    // How runs end otherwise: a failed child failing its parent, an update
    // whose handler fails, a termination, and a reset run.
    Golden {
        file: "child-failed.json",
        guest: "test-primitives",
    },
    Golden {
        file: "update-failed.json",
        guest: "test-primitives",
    },
    Golden {
        file: "terminated.json",
        guest: "test-scenarios",
    },
    Golden {
        file: "reset.json",
        guest: "test-scenarios",
    },
];

/// The recordings whose activity `echo` fails (non-retryably) instead of
/// answering its input.
const ECHO_FAILS: &[&str] = &["child-failed.json", "update-failed.json"];

fn activities(echo_fails: bool) -> Activities {
    let mut a = Activities::new();
    a.register("greet", |_: ActivityContext, name: String| async move {
        Ok::<_, ActivityError>(format!("Hello, {name}!"))
    });
    a.register("check_credit", |_: ActivityContext, _: Value| async move {
        Ok::<_, ActivityError>(json!({"score": 720}))
    });
    a.register("notify", |_: ActivityContext, _: Value| async move {
        Ok::<_, ActivityError>(json!(null))
    });
    for name in ["reserve", "ship"] {
        a.register(name, move |_: ActivityContext, input: String| async move {
            Ok::<_, ActivityError>(format!("{name}d {input}"))
        });
    }
    // Fails its first attempt (retryably), then answers its input.
    a.register("flaky", |ctx: ActivityContext, input: String| async move {
        if ctx.attempt() == 1 {
            return Err(ActivityError::retryable("Busy", "try again later"));
        }
        Ok(input)
    });
    a.register("refuse", |_: ActivityContext, _: String| async move {
        Err::<String, _>(ActivityError::non_retryable(
            "Refused",
            "not for this input",
        ))
    });
    if echo_fails {
        a.register("echo", |_: ActivityContext, _: String| async move {
            Err::<String, _>(ActivityError::non_retryable("EchoDown", "no echo today"))
        });
    } else {
        a.register("echo", |_: ActivityContext, input: String| async move {
            Ok::<_, ActivityError>(input)
        });
    }
    for name in ["release", "charge", "refund", "old_path", "new_path"] {
        a.register(name, |_: ActivityContext, input: String| async move {
            Ok::<_, ActivityError>(input)
        });
    }
    a
}

/// Runs one example to its end on a fresh host and exports the run.
async fn record(golden: &Golden) -> Export {
    let db = fresh_db(Backend::Sqlite).await;
    let env = TestEnv::builder(activities(ECHO_FAILS.contains(&golden.file)))
        .store(db.store.clone())
        .engine(common::engine())
        .config(|c| c.seed = Some(20_261_122))
        .build()
        .await
        .unwrap();
    let module = env
        .deploy(golden.guest, &guest(golden.guest))
        .await
        .unwrap();
    let application = |decision_timeout_ms: u64| {
        json!({
            "applicant": "Ada",
            "amount": 5000,
            "cooling_off_ms": 3_600_000,
            "decision_timeout_ms": decision_timeout_ms,
        })
    };
    let run = match golden.file {
        "hello.json" => env.start(&module, "hello", "hello-Ada", "Ada").await,
        "approval-approved.json" => {
            let run = env
                .start(&module, "approval", "loan-1", application(86_400_000))
                .await
                .unwrap();
            env.sleep(Duration::from_secs(2 * 3600)).await.unwrap();
            env.signal(&run, "decision", json!({"approved": true, "by": "grace"}))
                .await
                .unwrap();
            Ok(run)
        }
        "approval-timed-out.json" => {
            env.start(&module, "approval", "loan-2", application(3_600_000))
                .await
        }
        "order-v1.json" => env.start(&module, "order", "order-1", "book").await,
        "counter.json" => {
            let run = env
                .start(&module, "counter", "count-1", json!({"signals": 2}))
                .await
                .unwrap();
            env.signal(&run, "add", 5).await.unwrap();
            env.signal(&run, "add", 7).await.unwrap();
            Ok(run)
        }
        "saga-cancelled.json" => {
            let run = env
                .start(&module, "cancellable_order", "order-7", json!(null))
                .await
                .unwrap();
            env.settle().await.unwrap();
            env.cancel(&run, "the customer changed their mind")
                .await
                .unwrap();
            Ok(run)
        }
        "updatable.json" => {
            let run = env.start(&module, "updatable", "acct-1", 10).await.unwrap();
            env.update(&run, "add", 5).await.unwrap();
            env.update(&run, "add", 7).await.unwrap();
            env.signal(&run, "done", ()).await.unwrap();
            Ok(run)
        }
        // One child: two would complete in either order, and re-recording
        // would churn the file.
        "parent.json" => env.start(&module, "parent", "fan-out", 1).await,
        "patched.json" => env.start(&module, "patched_flow", "patched-1", ()).await,
        "status.json" => {
            let run = env
                .start(&module, "status_flow", "status-1", ())
                .await
                .unwrap();
            env.settle().await.unwrap();
            env.signal(&run, "go", ()).await.unwrap();
            Ok(run)
        }
        "continue-as-new.json" => env.start(&module, "loop_can", "loop-1", 2).await,
        "activities.json" => {
            let retry = json!({"initial_interval_ms": 1000, "maximum_attempts": 3});
            let calls = json!([
                {"activity": "flaky", "input": "a", "retry": retry},
                {"activity": "refuse", "input": "b"},
                {"activity": "echo", "input": "c", "local": true},
            ]);
            env.start(&module, "sequence", "activities-1", calls).await
        }
        // The child's activity fails, so the child fails, and the parent with it.
        "child-failed.json" => env.start(&module, "parent", "fan-out-2", 1).await,
        "update-failed.json" => {
            let run = env.start(&module, "updatable", "acct-2", 10).await.unwrap();
            let refused = env.update(&run, "add", 5).await;
            assert!(refused.is_err(), "the update's activity fails: {refused:?}");
            env.signal(&run, "done", ()).await.unwrap();
            Ok(run)
        }
        "terminated.json" => {
            let run = env
                .start(&module, "counter", "count-2", json!({"signals": 2}))
                .await
                .unwrap();
            env.signal(&run, "add", 5).await.unwrap();
            env.host()
                .terminate(&run, "opened by mistake")
                .await
                .unwrap();
            Ok(run)
        }
        // A completed run reset to the end of its first activation: the new
        // run keeps that prefix and receives both signals again.
        "reset.json" => {
            let run = env
                .start(&module, "counter", "count-3", json!({"signals": 2}))
                .await
                .unwrap();
            env.signal(&run, "add", 5).await.unwrap();
            env.signal(&run, "add", 7).await.unwrap();
            env.result(&run).await.unwrap();
            let reset = env
                .host()
                .reset(weft::versions::ResetRequest {
                    run_id: run,
                    to_event: 2,
                    module: None,
                    reason: "recount".to_owned(),
                    reapply: Default::default(),
                })
                .await
                .unwrap();
            assert_eq!(reset.signals, 2, "{reset:?}");
            env.settle().await.unwrap();
            Ok(reset.run_id)
        }
        other => panic!("no recipe for {other}"),
    }
    .unwrap();
    let record = env.result(&run).await.unwrap();
    assert!(!record.status.is_open(), "{record:?}");
    let mut export = env.host().export(&run).await.unwrap();
    export.exported_at_ms = 0;
    env.shutdown().await;
    db.drop().await;
    export
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_histories_replay_on_todays_code() {
    let bless = std::env::var_os("WEFT_BLESS").is_some();
    let engine = common::engine();
    let mut failures = Vec::new();
    for golden in GOLDEN {
        let path = histories().join(golden.file);
        if bless {
            let export = record(golden).await;
            std::fs::create_dir_all(histories()).unwrap();
            std::fs::write(&path, export.to_json() + "\n").unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; record it with WEFT_BLESS=1 cargo test -p weft --test golden",
                path.display()
            )
        });
        let (export, _) = audit::verify_export(&text)
            .unwrap_or_else(|e| panic!("{} does not verify: {e}", golden.file));
        assert_eq!(export.module.name, golden.guest, "{}", golden.file);
        let module = engine.load(&guest(golden.guest)).unwrap();
        let history = export.history().unwrap();
        match replay_against(&engine, &module, &history).await {
            Ok(ReplayVerdict::Identical { .. }) => {}
            Ok(ReplayVerdict::Diverged(d)) => failures.push(format!("{}: {d}", golden.file)),
            Err(e) => failures.push(format!("{}: {e}", golden.file)),
        }
    }
    assert!(
        failures.is_empty(),
        "today's code no longer replays these recorded runs:\n{}",
        failures.join("\n")
    );
}
