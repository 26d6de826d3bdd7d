//! The workflow primitives through the real host, on both backends: child
//! workflows and their parent-close policies, continue-as-new, cancellation
//! with a saga, updates, patch markers, conditions, the status line and
//! search attributes, termination, run timeouts, id policies and
//! signal-with-start. Each test runs on virtual time with the test kit, and
//! the ones marked "crash" lose their host in the middle.

mod common;

use common::{Backend, Calls, Db, fresh_db, guest};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use weft::model::{Event, History, RunId};
use weft::testing::TestEnv;
use weft::workflow::{ReplayVerdict, replay_against};
use weft::{
    Activities, ActivityContext, ActivityError, HostError, IdConflictPolicy, IdReusePolicy,
    ListFilter, RunStatus, StartOptions, StartRequest,
};

/// Activities that take a string and return it, recording each call.
fn activities(calls: &Calls) -> Activities {
    let mut a = Activities::new();
    for name in [
        "echo", "reserve", "release", "charge", "refund", "old_path", "new_path",
    ] {
        let c = calls.clone();
        a.register(name, move |_: ActivityContext, input: String| {
            let c = c.clone();
            async move {
                c.record(format!("{name}:{input}"));
                Ok::<_, ActivityError>(input)
            }
        });
    }
    a
}

/// A test environment on a fresh database. On Postgres it also keeps no
/// warm instance, so every activation first replays the run, as after a
/// crash at that activation boundary; SQLite keeps the warm path covered.
async fn kit(backend: Backend, activities: Activities) -> (TestEnv, Db) {
    let db = fresh_db(backend).await;
    let mut builder = TestEnv::builder(activities)
        .store(db.store.clone())
        .engine(common::engine())
        .config(|c| c.host_id = common::unique("host"));
    if matches!(backend, Backend::Postgres) {
        builder = builder.replay_every_activation();
    }
    (builder.build().await.unwrap(), db)
}

async fn done(env: TestEnv, db: Db) {
    env.shutdown().await;
    db.drop().await;
}

fn kinds(history: &History) -> Vec<&'static str> {
    history.events().iter().map(|e| e.event.kind()).collect()
}

async fn run_of(env: &TestEnv, workflow_id: &str) -> weft::store::RunRecord {
    env.host()
        .list(&ListFilter {
            workflow_id: Some(workflow_id.into()),
            ..ListFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no run of workflow {workflow_id}"))
}

async fn children_complete_and_report_to_their_parent(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    let run = env.start(&module, "parent", "batch-7", 3).await.unwrap();
    let outputs: Vec<String> = env.output(&run).await.unwrap();
    assert_eq!(outputs, ["item-0", "item-1", "item-2"]);
    let history = env.history(&run).await.unwrap();
    let k = kinds(&history);
    assert_eq!(
        k.iter()
            .filter(|k| **k == "child_workflow_initiated")
            .count(),
        3
    );
    assert_eq!(
        k.iter()
            .filter(|k| **k == "child_workflow_completed")
            .count(),
        3
    );
    for i in 0..3 {
        let child = run_of(&env, &format!("batch-7-child-{i}")).await;
        assert_eq!(child.status, RunStatus::Completed);
        let parent = child.parent.expect("a child knows its parent");
        assert_eq!(
            (parent.workflow_id.as_str(), &parent.run_id),
            ("batch-7", &run)
        );
        env.assert_replays(&child.run_id).await.unwrap();
    }
    assert_eq!(calls.count("echo:item-1"), 1);
    env.assert_replays(&run).await.unwrap();
    done(env, db).await;
}

/// Crash: the host dies while the children's activities are running; a new
/// host on the same database finishes the batch, running nothing twice
/// that had completed.
async fn children_survive_a_crash(backend: Backend) {
    let calls = Calls::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut blocked = activities(&calls);
    let g = gate.clone();
    let c = calls.clone();
    blocked.register("echo", move |_: ActivityContext, input: String| {
        let (g, c) = (g.clone(), c.clone());
        async move {
            c.record(format!("started:{input}"));
            // Never returns: this host is about to die.
            let _ = g.acquire().await;
            Ok::<_, ActivityError>(input)
        }
    });
    let db = fresh_db(backend).await;
    let first = TestEnv::builder(blocked)
        .store(db.store.clone())
        .engine(common::engine())
        .config(|c| c.host_id = "crashy".into())
        .build()
        .await
        .unwrap();
    let module = first
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    let run = first
        .host()
        .start(StartRequest::new(
            "batch-9",
            "parent",
            json!(2),
            module.clone(),
        ))
        .await
        .unwrap();
    for _ in 0..400 {
        if calls.count("started:item-0") + calls.count("started:item-1") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        calls.count("started:item-1"),
        1,
        "both children reached their activity"
    );
    // The host stops claiming; its attempts hang and its leases stay behind.
    first.shutdown().await;

    let second = TestEnv::builder(activities(&calls))
        .store(common::reopen(&db).await)
        .engine(common::engine())
        .config(|c| c.host_id = "crashy".into())
        .build()
        .await
        .unwrap();
    let outputs: Vec<String> = second.output(&run).await.unwrap();
    assert_eq!(outputs, ["item-0", "item-1"]);
    let history = second.history(&run).await.unwrap();
    history.verify().unwrap();
    assert_eq!(
        kinds(&history)
            .iter()
            .filter(|k| **k == "child_workflow_completed")
            .count(),
        2
    );
    second.assert_replays(&run).await.unwrap();
    second.shutdown().await;
    db.drop().await;
}

async fn parent_close_policies_apply_to_open_children(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    for policy in ["terminate", "request_cancel", "abandon"] {
        let id = format!("parent-{policy}");
        let run = env
            .start(&module, "parent_then_fail", &id, policy)
            .await
            .unwrap();
        let record = env.result(&run).await.unwrap();
        assert_eq!(record.status, RunStatus::Failed);
        assert_eq!(record.failure.unwrap().error_type, "ParentGaveUp");
        env.settle().await.unwrap();
        let child = run_of(&env, &format!("{id}-child")).await;
        let child_history = env.history(&child.run_id).await.unwrap();
        match policy {
            "terminate" => {
                assert_eq!(child.status, RunStatus::Terminated, "{child:?}");
                assert_eq!(kinds(&child_history).last(), Some(&"workflow_terminated"));
            }
            "request_cancel" => {
                assert_eq!(child.status, RunStatus::Cancelled, "{child:?}");
                assert!(kinds(&child_history).contains(&"workflow_cancel_requested"));
            }
            _ => {
                assert_eq!(child.status, RunStatus::Running, "{child:?}");
                env.signal(&child.run_id, "finish", "on my own")
                    .await
                    .unwrap();
                let out: String = env.output(&child.run_id).await.unwrap();
                assert_eq!(out, "on my own");
            }
        }
        env.assert_replays(&child.run_id).await.unwrap();
    }
    done(env, db).await;
}

async fn continue_as_new_starts_fresh_histories(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    let first = env.start(&module, "loop_can", "looper", 0).await.unwrap();
    // Consumed by the first run: each run counts only its own signals.
    // (Signals still unconsumed when a run continues move to the next run:
    // the store conformance suite pins that.)
    env.signal(&first, "add", 10).await.unwrap();
    let record = env.result(&first).await.unwrap();
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.output, Some(json!(3)));
    assert!(kinds(&env.history(&first).await.unwrap()).contains(&"signal_received"));
    let runs = env
        .host()
        .list(&ListFilter {
            workflow_id: Some("looper".into()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 4, "three continue-as-new plus the last run");
    let first_record = env.host().describe(&first).await.unwrap();
    assert_eq!(first_record.status, RunStatus::ContinuedAsNew);
    let second = first_record.continued_to.clone().unwrap();
    match &env.history(&second).await.unwrap().events()[0].event {
        Event::WorkflowStarted {
            continued_from,
            input,
            ..
        } => {
            assert_eq!(continued_from.as_ref(), Some(&first));
            assert_eq!(input, &json!(1));
        }
        other => panic!("event 1 is {other:?}"),
    }
    for run in &runs {
        let h = env.history(&run.run_id).await.unwrap();
        assert!(
            h.len() < 12,
            "each run has a short history of its own: {:?}",
            kinds(&h)
        );
        env.assert_replays(&run.run_id).await.unwrap();
    }
    done(env, db).await;
}

async fn cancellation_runs_the_saga_in_reverse(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();

    let shipped = env
        .start(&module, "cancellable_order", "order-ship", ())
        .await
        .unwrap();
    env.signal(&shipped, "ship", ()).await.unwrap();
    let out: String = env.output(&shipped).await.unwrap();
    assert_eq!(out, "shipped");
    assert_eq!(calls.count("refund:order"), 0);

    let run = env
        .start(&module, "cancellable_order", "order-cancel", ())
        .await
        .unwrap();
    env.cancel(&run, "customer changed their mind")
        .await
        .unwrap();
    let record = env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Cancelled, "{record:?}");
    assert_eq!(
        record.failure.unwrap().message,
        "customer changed their mind"
    );
    let all = calls.0.lock().unwrap().clone();
    let order: Vec<&String> = all
        .iter()
        .filter(|c| c.starts_with("refund") || c.starts_with("release"))
        .collect();
    assert_eq!(
        order,
        ["refund:order", "release:order"],
        "compensations run in reverse"
    );
    let history = env.history(&run).await.unwrap();
    assert_eq!(kinds(&history).last(), Some(&"workflow_cancelled"));
    env.assert_replays(&run).await.unwrap();
    // A closed run cannot be cancelled again.
    assert!(env.host().cancel(&run, "again").await.is_err());
    done(env, db).await;
}

async fn updates_are_validated_answered_and_replayed(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    let run = env.start(&module, "updatable", "acct-1", 10).await.unwrap();
    let before = env.history(&run).await.unwrap().len();

    match env.host().update(&run, "add", json!(-3)).await {
        Err(HostError::UpdateRejected { message, .. }) => {
            assert!(message.contains("negative"), "{message}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        env.history(&run).await.unwrap().len(),
        before,
        "a rejected update is never recorded"
    );
    assert!(matches!(
        env.host().update(&run, "withdraw", json!(1)).await,
        Err(HostError::UpdateRejected { .. })
    ));

    assert_eq!(env.update(&run, "add", 5).await.unwrap(), json!(15));
    assert_eq!(env.update(&run, "add", 7).await.unwrap(), json!(22));
    assert_eq!(calls.count("echo:5"), 1, "the handler's activity ran once");
    let value: i64 = env.query(&run, "value", ()).await.unwrap();
    assert_eq!(value, 22);
    env.signal(&run, "done", ()).await.unwrap();
    let out: i64 = env.output(&run).await.unwrap();
    assert_eq!(out, 22);
    let k = kinds(&env.history(&run).await.unwrap());
    assert_eq!(k.iter().filter(|k| **k == "update_received").count(), 2);
    assert_eq!(k.iter().filter(|k| **k == "update_completed").count(), 2);
    env.assert_replays(&run).await.unwrap();
    done(env, db).await;
}

async fn patched_keeps_old_runs_on_the_old_path(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let old = env
        .deploy("primitives", &guest("test-primitives-old"))
        .await
        .unwrap();
    let new = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();

    let old_run = env.start(&old, "patched_flow", "p-old", ()).await.unwrap();
    let out: String = env.output(&old_run).await.unwrap();
    assert_eq!(out, "x");
    assert_eq!(calls.count("old_path:x"), 1);

    // The new module replays the old history identically: `patched` answers false there.
    let history = env.history(&old_run).await.unwrap();
    let candidate = env.host().engine().loaded(&new).unwrap();
    assert!(matches!(
        replay_against(env.host().engine(), &candidate, &history)
            .await
            .unwrap(),
        ReplayVerdict::Identical { .. }
    ));

    // A new run takes the new path and records the marker.
    let new_run = env.start(&new, "patched_flow", "p-new", ()).await.unwrap();
    let _: String = env.output(&new_run).await.unwrap();
    assert_eq!(calls.count("new_path:x"), 1);
    let new_history = env.history(&new_run).await.unwrap();
    assert!(new_history.events().iter().any(|e| matches!(
        &e.event,
        Event::PatchMarker { change_id } if change_id == "use-new-path"
    )));
    env.assert_replays(&new_run).await.unwrap();
    // The old module cannot replay the new history: the marker is a command it never issues.
    let old_module = env.host().engine().loaded(&old).unwrap();
    assert!(matches!(
        replay_against(env.host().engine(), &old_module, &new_history)
            .await
            .unwrap(),
        ReplayVerdict::Diverged(_)
    ));
    done(env, db).await;
}

async fn conditions_wait_for_state_or_time(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    let met = env
        .start(&module, "condition_flow", "cond-1", 2)
        .await
        .unwrap();
    env.sleep(Duration::from_secs(3600)).await.unwrap();
    env.signal(&met, "approve", ()).await.unwrap();
    env.signal(&met, "approve", ()).await.unwrap();
    let ok: bool = env.output(&met).await.unwrap();
    assert!(ok);
    assert!(kinds(&env.history(&met).await.unwrap()).contains(&"timer_cancelled"));

    let start = env.now_ms();
    let missed = env
        .start(&module, "condition_flow", "cond-2", 2)
        .await
        .unwrap();
    env.signal(&missed, "approve", ()).await.unwrap();
    let ok: bool = env.output(&missed).await.unwrap();
    assert!(!ok);
    assert_eq!(env.now_ms(), start + 24 * 3600 * 1000);
    env.assert_replays(&met).await.unwrap();
    env.assert_replays(&missed).await.unwrap();
    done(env, db).await;
}

async fn status_line_and_search_attributes_show_and_filter(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    let run = env
        .start(&module, "status_flow", "app-1", ())
        .await
        .unwrap();
    let _other = env.start(&module, "info_flow", "app-2", ()).await.unwrap();
    let record = env.host().describe(&run).await.unwrap();
    assert_eq!(record.status_line.as_deref(), Some("waiting for go"));
    assert_eq!(
        record.search_attributes,
        json!({ "customer": "acme", "amount": 1200, "vip": true })
    );
    let by = |pairs: Vec<(&str, Value)>| {
        let filter = ListFilter {
            search_attributes: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ..ListFilter::default()
        };
        let host = env.host().clone();
        async move {
            host.list(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.workflow_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(by(vec![("customer", json!("acme"))]).await, ["app-1"]);
    assert_eq!(
        by(vec![("customer", json!("acme")), ("amount", json!(1200))]).await,
        ["app-1"]
    );
    assert!(
        by(vec![("amount", json!("1200"))]).await.is_empty(),
        "a string is not a number"
    );
    assert!(by(vec![("customer", json!("globex"))]).await.is_empty());

    env.signal(&run, "go", ()).await.unwrap();
    let _: String = env.output(&run).await.unwrap();
    let record = env.host().describe(&run).await.unwrap();
    assert_eq!(record.status_line.as_deref(), Some("done"));
    assert_eq!(
        record.search_attributes,
        json!({ "customer": "acme", "amount": 1200 })
    );
    let completed = env
        .host()
        .list(&ListFilter {
            status: Some(RunStatus::Completed),
            workflow_type: Some("status_flow".into()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(completed.len(), 1);
    env.assert_replays(&run).await.unwrap();
    done(env, db).await;
}

async fn info_tells_the_workflow_who_it_is(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    let run = env
        .start(&module, "info_flow", "who-am-i", ())
        .await
        .unwrap();
    let out: (String, String, Option<String>) = env.output(&run).await.unwrap();
    assert_eq!(out, ("who-am-i".into(), "info_flow".into(), None));
    done(env, db).await;
}

async fn termination_and_run_timeouts_close_runs(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();

    let run = env
        .start(&module, "child_waits", "to-kill", ())
        .await
        .unwrap();
    env.host()
        .terminate(&run, "operator said so")
        .await
        .unwrap();
    let record = env.result(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Terminated);
    assert_eq!(record.failure.unwrap().message, "operator said so");
    let history = env.history(&run).await.unwrap();
    assert_eq!(kinds(&history).last(), Some(&"workflow_terminated"));
    history.verify().unwrap();
    env.assert_replays(&run).await.unwrap();

    let start = env.now_ms();
    let timed = env
        .start_with(
            &module,
            "child_waits",
            "too-slow",
            (),
            StartOptions {
                run_timeout: Some(Duration::from_secs(3600)),
                ..StartOptions::default()
            },
        )
        .await
        .unwrap();
    let record = env.result(&timed).await.unwrap();
    assert_eq!(record.status, RunStatus::TimedOut, "{record:?}");
    assert_eq!(env.now_ms(), start + 3_600_000);
    assert_eq!(
        kinds(&env.history(&timed).await.unwrap()).last(),
        Some(&"workflow_timed_out")
    );
    done(env, db).await;
}

async fn id_policies_and_signal_with_start(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, activities(&calls)).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    let request = |id: &str| StartRequest::new(id, "child_waits", json!(null), module.clone());

    // Signal-with-start twice: one run, and it sees the first signal. The
    // counter waits for both signals, so the run is still open when the
    // second arrives (a workflow that ended on the first signal could close
    // before it, and the second would rightly start a new run).
    let scenarios = env
        .deploy("scenarios", &guest("test-scenarios"))
        .await
        .unwrap();
    let counter = || StartRequest::new("sws", "counter", json!({"signals": 2}), scenarios.clone());
    let a = env
        .host()
        .signal_with_start(counter(), "add", json!(1))
        .await
        .unwrap();
    let b = env
        .host()
        .signal_with_start(counter(), "add", json!(2))
        .await
        .unwrap();
    assert_eq!(a, b);
    let out: u64 = env.output(&a).await.unwrap();
    assert_eq!(out, 3, "the first signal and the second, in one run");

    // Use-existing returns the open run.
    let open = env.start(&module, "child_waits", "dup", ()).await.unwrap();
    let mut again = request("dup");
    again.options.id_conflict_policy = IdConflictPolicy::UseExisting;
    assert_eq!(env.host().start(again).await.unwrap(), open);
    assert!(env.host().start(request("dup")).await.is_err());

    // Reject-duplicate: a closed id is not used again.
    env.signal(&open, "finish", "ok").await.unwrap();
    env.result(&open).await.unwrap();
    let mut reject = request("dup");
    reject.options.id_reuse_policy = IdReusePolicy::RejectDuplicate;
    let err = env.host().start(reject).await.unwrap_err().to_string();
    assert!(err.contains("dup"), "{err}");
    let mut failed_only = request("dup");
    failed_only.options.id_reuse_policy = IdReusePolicy::AllowDuplicateFailedOnly;
    assert!(
        env.host().start(failed_only).await.is_err(),
        "the last run completed"
    );
    let fresh: RunId = env.host().start(request("dup")).await.unwrap();
    assert_ne!(fresh, open);
    done(env, db).await;
}

both_backends!(
    children_complete_and_report_to_their_parent,
    children_survive_a_crash,
    parent_close_policies_apply_to_open_children,
    continue_as_new_starts_fresh_histories,
    cancellation_runs_the_saga_in_reverse,
    updates_are_validated_answered_and_replayed,
    patched_keeps_old_runs_on_the_old_path,
    conditions_wait_for_state_or_time,
    status_line_and_search_attributes_show_and_filter,
    info_tells_the_workflow_who_it_is,
    termination_and_run_timeouts_close_runs,
    id_policies_and_signal_with_start,
);
