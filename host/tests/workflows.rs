//! The durable core end to end, through the real host, on SQLite and Postgres,
//! in virtual time: activities with retries, durable timers, signals, queries,
//! join/select, replay, nondeterminism, runaway guests and bad input.

mod common;

use common::{Backend, Calls, TestHost, completed};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use weft::model::{Event, GuestStatus};
use weft::store::{RunRecord, RunStatus, StoreError};
use weft::workflow::ReplayVerdict;
use weft::{Activities, ActivityContext, ActivityError, HostError, IdConflictPolicy, StartRequest};

const DAY_MS: u64 = 24 * 3600 * 1000;

fn kinds(h: &weft::model::History) -> Vec<&'static str> {
    h.events().iter().map(|e| e.event.kind()).collect()
}

fn hello_activities(calls: &Calls) -> Activities {
    let mut a = Activities::new();
    let calls = calls.clone();
    a.register("greet", move |ctx: ActivityContext, name: String| {
        let calls = calls.clone();
        async move {
            calls.record("greet");
            assert_eq!(ctx.idempotency_key(), format!("{}-1", ctx.run_id));
            Ok::<_, ActivityError>(format!("Hello, {name}!"))
        }
    });
    a
}

async fn hello_runs_and_replays(backend: Backend) {
    let calls = Calls::default();
    let t = TestHost::new(backend, hello_activities(&calls)).await;
    let module = t.deploy("hello-workflow").await;
    let run = t.start(&module, "hello", "hello-ada", json!("Ada")).await;
    let record = t.finished(&run).await;
    assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    assert_eq!(record.output, Some(json!("Hello, Ada!")));
    let history = t.host.history(&run).await.unwrap();
    assert_eq!(
        kinds(&history),
        [
            "workflow_started",
            "activation_started",
            "activity_scheduled",
            "activation_started",
            "activity_completed",
            "workflow_completed"
        ]
    );
    history.verify().unwrap();
    assert_eq!(calls.count("greet"), 1);
    match t.host.replay(&run).await.unwrap() {
        ReplayVerdict::Identical { status, events } => {
            assert_eq!(status, GuestStatus::Completed(json!("Hello, Ada!")));
            assert_eq!(events, 6);
        }
        other => panic!("expected an identical replay, got {other:?}"),
    }
    t.stop().await;
}

fn approval_activities(calls: &Calls, bureau_failures: u32, unknown_applicant: bool) -> Activities {
    let mut a = Activities::new();
    let c = calls.clone();
    a.register("check_credit", move |ctx: ActivityContext, req: Value| {
        let c = c.clone();
        async move {
            c.record("check_credit");
            if unknown_applicant {
                return Err(ActivityError::non_retryable(
                    "ApplicantUnknown",
                    format!("no record of {}", req["applicant"]),
                ));
            }
            if ctx.attempt <= bureau_failures {
                return Err(ActivityError::retryable(
                    "BureauTimeout",
                    "the bureau did not answer",
                ));
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

fn approval_input() -> Value {
    json!({ "applicant": "Grace", "amount": 25_000, "cooling_off_ms": DAY_MS, "decision_timeout_ms": 7 * DAY_MS })
}

/// Advances virtual time one second at a time until the run records `kind` `n` times.
async fn advance_until(t: &TestHost, run: &weft::model::RunId, kind: &str, n: usize) {
    for _ in 0..300 {
        let h = t.host.history(run).await.unwrap();
        if h.events().iter().filter(|e| e.event.kind() == kind).count() >= n {
            return;
        }
        t.clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "run {run} never recorded {kind} #{n}: {:?}",
        kinds(&t.host.history(run).await.unwrap())
    );
}

async fn approval_approved_in_virtual_time(backend: Backend) {
    let calls = Calls::default();
    let t = TestHost::new(backend, approval_activities(&calls, 2, false)).await;
    let module = t.deploy("approval-workflow").await;
    let run = t
        .start(&module, "approval", "approval-grace", approval_input())
        .await;

    // The bureau times out twice; the retries wait 1 s and 2 s of virtual time.
    advance_until(&t, &run, "activity_completed", 1).await;
    assert_eq!(calls.count("check_credit"), 3);
    t.until_event(&run, "timer_started", 1).await;
    let status = t.host.query(&run, "status", json!(null)).await.unwrap();
    assert_eq!(status, json!({ "stage": "cooling off", "score": 712 }));

    // A day of cooling off passes in an instant.
    assert!(t.skip_to_next_timer().await);
    t.until_event(&run, "timer_fired", 1).await;
    t.until_event(&run, "timer_started", 2).await;
    let status = t.host.query(&run, "status", json!(null)).await.unwrap();
    assert_eq!(status["stage"], "awaiting decision");

    t.host
        .signal(&run, "decision", json!({ "approved": true, "by": "Lin" }))
        .await
        .unwrap();
    let record = t.finished(&run).await;
    assert_eq!(
        record.output,
        Some(
            json!({ "applicant": "Grace", "score": 712, "outcome": "approved", "decided_by": "Lin" })
        ),
        "{record:?}"
    );
    assert_eq!(calls.count("notify:approved"), 1);
    // The decision timer lost the race and was cancelled, so nothing is left to fire.
    assert_eq!(t.db.store.next_timer_at().await.unwrap(), None);
    let history = t.host.history(&run).await.unwrap();
    history.verify().unwrap();
    assert!(kinds(&history).contains(&"timer_cancelled"));
    assert!(matches!(
        t.host.replay(&run).await.unwrap(),
        ReplayVerdict::Identical { .. }
    ));
    t.stop().await;
}

async fn approval_times_out_after_seven_days(backend: Backend) {
    let calls = Calls::default();
    let t = TestHost::new(backend, approval_activities(&calls, 0, false)).await;
    let module = t.deploy("approval-workflow").await;
    let run = t
        .start(&module, "approval", "approval-grace", approval_input())
        .await;
    t.until_event(&run, "timer_started", 1).await;
    assert!(t.skip_to_next_timer().await);
    t.until_event(&run, "timer_started", 2).await;
    assert!(t.skip_to_next_timer().await);
    let record = t.finished(&run).await;
    assert_eq!(
        record.output.as_ref().unwrap()["outcome"],
        "timed_out",
        "{record:?}"
    );
    assert_eq!(record.output.as_ref().unwrap()["decided_by"], Value::Null);
    let history = t.host.history(&run).await.unwrap();
    let last_time = history
        .events()
        .iter()
        .filter_map(|e| match e.event {
            Event::ActivationStarted { time_ms } => Some(time_ms),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(
        last_time >= common::START_MS + 8 * DAY_MS,
        "eight virtual days passed"
    );
    t.stop().await;
}

async fn approval_fails_on_a_non_retryable_error(backend: Backend) {
    let calls = Calls::default();
    let t = TestHost::new(backend, approval_activities(&calls, 0, true)).await;
    let module = t.deploy("approval-workflow").await;
    let run = t
        .start(&module, "approval", "approval-nobody", approval_input())
        .await;
    let record = t.finished(&run).await;
    assert_eq!(record.status, RunStatus::Failed, "{record:?}");
    assert_eq!(
        record.failure.as_ref().unwrap().error_type,
        "ApplicantUnknown"
    );
    assert_eq!(
        calls.count("check_credit"),
        1,
        "a non-retryable error is not retried"
    );
    t.stop().await;
}

fn step_activities(calls: &Calls) -> Activities {
    let mut a = Activities::new();
    let c = calls.clone();
    a.register("step", move |_: ActivityContext, req: Value| {
        let c = c.clone();
        async move {
            let name = req["name"].as_str().unwrap_or("?").to_owned();
            c.record(name.clone());
            Ok::<_, ActivityError>(format!("{name}-done"))
        }
    });
    a
}

/// Signals, a 30-day timer, join and select — with every warm instance thrown
/// away between steps, so each activation first replays the history.
async fn steps_survive_eviction_with_signals_join_and_select(backend: Backend) {
    let calls = Calls::default();
    let t = TestHost::new(backend, step_activities(&calls)).await;
    let module = t.deploy("test-scenarios").await;
    let run = t
        .start(
            &module,
            "steps",
            "steps-1",
            json!({ "label": "x", "timer_ms": 30 * DAY_MS }),
        )
        .await;

    t.until_event(&run, "timer_started", 1).await;
    t.host.forget_warm_instances();
    assert_eq!(
        t.host.query(&run, "progress", json!(null)).await.unwrap(),
        json!(["a"])
    );
    assert!(t.skip_to_next_timer().await);
    t.until_event(&run, "timer_fired", 1).await;
    t.host.forget_warm_instances();
    // Two signals of one name queue in order: the workflow takes the first.
    t.host.signal(&run, "go", json!("green")).await.unwrap();
    t.host.signal(&run, "go", json!("ignored")).await.unwrap();
    t.until_event(&run, "activity_completed", 3).await;
    t.until_event(&run, "timer_started", 2).await;
    t.host.forget_warm_instances();
    t.host.signal(&run, "extra", json!("late")).await.unwrap();
    let record = t.finished(&run).await;
    assert_eq!(
        record.output,
        Some(
            json!({ "a": "a-done", "go": "green", "b": "b-done", "c": "c-done", "extra": "extra:late" })
        ),
        "{record:?}"
    );
    for step in ["a", "b", "c"] {
        assert_eq!(calls.count(step), 1, "step {step} ran once");
    }
    let history = t.host.history(&run).await.unwrap();
    history.verify().unwrap();
    common::assert_each_completion_once(&history, 3);
    assert!(matches!(
        t.host.replay(&run).await.unwrap(),
        ReplayVerdict::Identical { .. }
    ));
    t.stop().await;
}

/// `SystemTime::now()`, `getrandom` and `HashMap` iteration inside a guest are
/// answered from the history, so a replay (forced mid-run) issues the same commands.
async fn std_time_random_and_hashmap_replay_identically(backend: Backend) {
    let mut a = Activities::new();
    a.register("echo", |_: ActivityContext, v: Value| async move {
        Ok::<_, ActivityError>(v)
    });
    let t = TestHost::new(backend, a).await;
    let module = t.deploy("test-scenarios").await;
    let run = t.start(&module, "entropy", "entropy-1", json!(null)).await;
    t.until_event(&run, "timer_started", 1).await;
    t.host.forget_warm_instances();
    assert!(t.skip_to_next_timer().await);
    let record = t.finished(&run).await;
    assert!(completed(&record), "{record:?}");
    let history = t.host.history(&run).await.unwrap();
    let echoes: Vec<&Value> = history
        .events()
        .iter()
        .filter_map(|e| match &e.event {
            Event::ActivityScheduled { input, .. } => Some(input),
            _ => None,
        })
        .collect();
    assert_eq!(echoes.len(), 2);
    assert_ne!(
        echoes[0], echoes[1],
        "time and randomness move on between activations"
    );
    assert!(
        echoes[0]
            .to_string()
            .contains(&common::START_MS.to_string()),
        "the guest's SystemTime is workflow time: {}",
        echoes[0]
    );
    assert!(matches!(
        t.host.replay(&run).await.unwrap(),
        ReplayVerdict::Identical { .. }
    ));
    t.stop().await;
}

/// A module whose code changed diverges from an old history; the verdict names
/// the event, what was recorded and what is issued now.
async fn a_changed_module_diverges_with_a_diff(backend: Backend) {
    let calls = Calls::default();
    let t = TestHost::new(backend, hello_activities(&calls)).await;
    let module = t.deploy("hello-workflow").await;
    let run = t.start(&module, "hello", "hello-diff", json!("Ada")).await;
    assert!(completed(&t.finished(&run).await));
    let history = t.host.history(&run).await.unwrap();
    let changed = t
        .host
        .engine()
        .load(&common::guest("test-misbehave"))
        .unwrap();
    let err = weft::workflow::replay_history(t.host.engine(), &changed, &history)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("replay with the recorded module"),
        "{err}"
    );
    match weft::workflow::replay_against(t.host.engine(), &changed, &history)
        .await
        .unwrap()
    {
        ReplayVerdict::Diverged(d) => {
            assert_eq!(d.event_seq, 3);
            assert!(
                matches!(&d.recorded, Some(Event::ActivityScheduled { name, .. }) if name == "greet"),
                "{d}"
            );
            assert!(
                matches!(&d.issued, Some(Event::ActivityScheduled { name, .. }) if name == "greet-v2"),
                "{d}"
            );
            assert!(d.to_string().contains("nondeterminism at event 3"), "{d}");
        }
        other => panic!("expected a divergence, got {other:?}"),
    }
    t.stop().await;
}

/// A live divergence parks the run as stuck with the diff; nothing is lost.
async fn live_nondeterminism_parks_the_run(backend: Backend) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut a = Activities::new();
    let g = gate.clone();
    a.register("echo", move |_: ActivityContext, v: Value| {
        let g = g.clone();
        async move {
            let _permit = g.acquire().await.unwrap();
            Ok::<_, ActivityError>(v)
        }
    });
    let t = TestHost::new(backend, a).await;
    let module = t.deploy("test-scenarios").await;
    let run = t
        .start(&module, "query_mutates", "buggy-1", json!(null))
        .await;
    t.until_event(&run, "activation_started", 1).await;
    // The buggy query changes state the workflow then uses.
    assert_eq!(
        t.host.query(&run, "bump", json!(null)).await.unwrap(),
        json!(1)
    );
    t.host.signal(&run, "go", json!(null)).await.unwrap();
    t.until_event(&run, "activity_scheduled", 1).await;
    let before = t.host.history(&run).await.unwrap();
    // A restart loses the warm instance; the replay cannot see the query's effect.
    t.host.forget_warm_instances();
    gate.add_permits(1);
    let record = t
        .until(&run, "stuck", |r| r.status == RunStatus::Stuck)
        .await;
    let reason = record.stuck.unwrap();
    assert_eq!(reason["kind"], "nondeterminism", "{reason}");
    let seq = reason["event_seq"].as_u64().unwrap();
    let recorded = &before.events()[seq as usize - 1].event;
    assert!(
        matches!(recorded, Event::ActivityScheduled { input, .. } if input["bumps"] == 1),
        "{reason}"
    );
    assert_eq!(reason["issued"]["input"]["bumps"], 0, "{reason}");
    assert_eq!(
        t.host.history(&run).await.unwrap(),
        before,
        "a parked run's history is untouched"
    );
    t.stop().await;
}

/// An endless loop, a memory bomb and a panic each fail their own activation
/// with a clear reason; the host keeps serving other runs meanwhile.
async fn runaway_guests_are_stopped_and_parked(backend: Backend) {
    let calls = Calls::default();
    let t = TestHost::new(backend, hello_activities(&calls)).await;
    let bad = t.deploy("test-misbehave").await;
    let good = t.deploy("hello-workflow").await;
    let spin = t.start(&bad, "spin", "spin-1", json!(null)).await;
    let bomb = t.start(&bad, "bomb", "bomb-1", json!(null)).await;
    let panic = t.start(&bad, "panic", "panic-1", json!(null)).await;
    let hello = t
        .start(&good, "hello", "hello-meanwhile", json!("Ada"))
        .await;
    assert!(completed(&t.finished(&hello).await));
    for (run, needle) in [
        (&spin, "deadline"),
        (&bomb, "memory limit"),
        (&panic, "trapped"),
    ] {
        let record = t
            .until(run, "stuck", |r| r.status == RunStatus::Stuck)
            .await;
        let reason = record.stuck.unwrap();
        assert_eq!(reason["kind"], "guest_error", "{reason}");
        assert!(
            reason["message"].as_str().unwrap().contains(needle),
            "{run}: {reason}"
        );
    }
    t.stop().await;
}

/// What a guest hands the host is checked at the boundary: a NaN backoff
/// coefficient, a NUL in a name, an output too deep or too large each park
/// their run with a reason naming the fault, and nothing of it is stored —
/// so each run's history stays readable (a NaN stored as JSON `null` made
/// it unreadable) and the host keeps serving the others.
async fn bad_guest_values_are_refused_at_the_boundary(backend: Backend) {
    let calls = Calls::default();
    let t = TestHost::new(backend, hello_activities(&calls)).await;
    let bad = t.deploy("test-misbehave").await;
    let good = t.deploy("hello-workflow").await;
    let mut runs = Vec::new();
    for (workflow, needle) in [
        (
            "nan_retry",
            "backoff coefficient NaN: it must be a finite number",
        ),
        ("nul_name", "an activity's name contains a NUL character"),
        (
            "deep_output",
            "the workflow's output is nested more than 128 levels deep",
        ),
        (
            "big_output",
            "the workflow's output is 3145730 bytes, over the limit of",
        ),
    ] {
        let run = t
            .start(&bad, workflow, &format!("{workflow}-1"), json!(null))
            .await;
        runs.push((run, workflow, needle));
    }
    let hello = t.start(&good, "hello", "hello-beside", json!("Ada")).await;
    assert!(completed(&t.finished(&hello).await));
    for (run, workflow, needle) in runs {
        let record = t
            .until(&run, "stuck", |r| r.status == RunStatus::Stuck)
            .await;
        let reason = record.stuck.unwrap();
        assert!(reason.to_string().contains(needle), "{workflow}: {reason}");
        let history = t.host.history(&run).await.expect("the history reads back");
        assert_eq!(
            kinds(&history),
            ["workflow_started"],
            "{workflow}: nothing of the refused activation is stored"
        );
    }
    assert_eq!(calls.count("greet"), 1, "only the hello's activity ran");
    t.stop().await;
}

async fn bad_input_gets_clear_errors(backend: Backend) {
    // `greet` never answers, so the run of "same-id" below is still open
    // when the same id is started again (a hello run finishes in
    // milliseconds otherwise).
    let mut activities = Activities::new();
    activities.register("greet", |_: ActivityContext, _: String| async move {
        std::future::pending::<Result<String, ActivityError>>().await
    });
    let t = TestHost::new(backend, activities).await;
    let err = t
        .host
        .deploy("junk", "1", b"not wasm at all")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not a valid WebAssembly component"),
        "{err}"
    );

    let unknown = weft::model::Sha256Hex::of(b"never deployed");
    let err = t
        .host
        .start(weft::StartRequest {
            workflow_id: "w".into(),
            workflow_type: "hello".into(),
            input: json!(1),
            module: unknown,
            options: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::UnknownModule(_)), "{err}");

    let err = t
        .host
        .deploy("forbidden", "1", &common::guest("test-forbidden"))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, HostError::Load(weft::wasm::LoadError::ForbiddenImport { import, .. }) if import.starts_with("wasi:sockets/")),
        "{message}"
    );
    assert!(message.contains("only through activities"), "{message}");

    let module = t.deploy("hello-workflow").await;
    let big = json!("x".repeat(3 << 20));
    let err = t
        .host
        .start(weft::StartRequest {
            workflow_id: "big".into(),
            workflow_type: "hello".into(),
            input: big,
            module: module.clone(),
            options: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::PayloadTooLarge { .. }), "{err}");

    let run = t
        .start(&module, "no_such_workflow", "nope", json!(null))
        .await;
    let record = t.finished(&run).await;
    assert_eq!(record.status, RunStatus::Failed);
    let message = record.failure.unwrap().message;
    assert!(
        message.contains("no_such_workflow") && message.contains("hello"),
        "{message}"
    );

    let dup = t.start(&module, "hello", "same-id", json!("A")).await;
    let err = t
        .host
        .start(weft::StartRequest {
            workflow_id: "same-id".into(),
            workflow_type: "hello".into(),
            input: json!("B"),
            module,
            options: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HostError::Store(StoreError::WorkflowIdInUse { run_id, .. }) if *run_id == dup),
        "{err}"
    );

    let err = t
        .host
        .signal(&"no-such-run".into(), "go", json!(null))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HostError::Store(StoreError::NotFound { .. })),
        "{err}"
    );
    t.stop().await;
}

/// An attempt that hangs is abandoned at its start-to-close timeout and
/// retried by policy; the history records the attempt that succeeded.
async fn a_hung_attempt_times_out_and_is_retried(backend: Backend) {
    let mut a = Activities::new();
    a.register("greet", |ctx: ActivityContext, name: String| async move {
        if ctx.attempt == 1 {
            std::future::pending::<()>().await;
        }
        Ok::<_, ActivityError>(format!("Hello, {name}!"))
    });
    let config = weft::HostConfig {
        default_start_to_close: Duration::from_secs(10),
        ..common::test_config()
    };
    let t = TestHost::with_config(backend, a, config).await;
    let module = t.deploy("hello-workflow").await;
    let run = t.start(&module, "hello", "hello-slow", json!("Ada")).await;
    advance_until(&t, &run, "activity_completed", 1).await;
    let record = t.finished(&run).await;
    assert_eq!(record.output, Some(json!("Hello, Ada!")));
    let history = t.host.history(&run).await.unwrap();
    let attempt = history.events().iter().find_map(|e| match e.event {
        Event::ActivityCompleted { attempt, .. } => Some(attempt),
        _ => None,
    });
    assert_eq!(attempt, Some(2), "the first attempt timed out");
    t.stop().await;
}

/// More waiting runs than instance slots: idle warm instances make room
/// (their runs replay when they next activate) and every run finishes.
async fn a_full_instance_pool_evicts_idle_runs(backend: Backend) {
    let calls = Calls::default();
    let config = weft::wasm::EngineConfig {
        pooled_instances: 4,
        ..weft::wasm::EngineConfig::default()
    };
    let engine = Arc::new(weft::wasm::WasmEngine::new(config).unwrap());
    let t = TestHost::with_engine(
        backend,
        step_activities(&calls),
        common::test_config(),
        engine,
    )
    .await;
    let module = t.deploy("test-scenarios").await;
    let mut runs = Vec::new();
    for i in 0..8 {
        let run = t
            .start(
                &module,
                "steps",
                &format!("pool-{i}"),
                json!({ "label": "p", "timer_ms": 1_000 }),
            )
            .await;
        t.until_event(&run, "timer_started", 1).await;
        runs.push(run);
    }
    for run in &runs {
        t.host.signal(run, "go", json!("ok")).await.unwrap();
    }
    // Every first timer is due: all eight runs take their signal and run
    // `b` and `c` at once, through four instances. Each then starts a second
    // timer, which is made due only once it exists (a run that starts it
    // after the clock moved would wait for it forever).
    t.clock.advance(Duration::from_secs(2));
    for run in &runs {
        t.until_event(run, "timer_started", 2).await;
        t.clock.advance(Duration::from_secs(2));
        let record = t.finished(run).await;
        assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    }
    t.stop().await;
}

/// `start_and_wait` gives a closed run's record, the same a later read
/// gives (completed or failed: the host that closes the run by an
/// activity's result passes the record on from memory, and it must be the
/// one stored); a run still open when the wait ends gives none; and under
/// `UseExisting` it waits on the open run it was given.
async fn start_and_wait_gives_the_outcome_or_the_open_run(backend: Backend) {
    let calls = Calls::default();
    let mut activities = approval_activities(&calls, 0, false);
    activities.register("greet", |_: ActivityContext, name: String| async move {
        if name == "Nobody" {
            return Err(ActivityError::non_retryable(
                "NoSuchPerson",
                "there is nobody to greet",
            ));
        }
        Ok::<_, ActivityError>(format!("Hello, {name}!"))
    });
    let t = TestHost::new(backend, activities).await;
    let hello = t.deploy("hello-workflow").await;
    let request = |id: &str, workflow_type: &str, input: Value, module: &weft::model::Sha256Hex| {
        StartRequest::new(id, workflow_type, input, module.clone())
    };

    let wait = Duration::from_secs(60);
    let (run, record) = t
        .host
        .start_and_wait(request("hello-wait", "hello", json!("Ada"), &hello), wait)
        .await
        .unwrap();
    let record = record.expect("hello closes well within a minute");
    assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    assert_eq!(record.output, Some(json!("Hello, Ada!")));
    assert_eq!(record, t.host.describe(&run).await.unwrap());

    let (run, record) = t
        .host
        .start_and_wait(
            request("hello-nobody", "hello", json!("Nobody"), &hello),
            wait,
        )
        .await
        .unwrap();
    let record = record.expect("hello fails well within a minute");
    assert_eq!(record.status, RunStatus::Failed, "{record:?}");
    assert_eq!(
        record.failure.as_ref().map(|f| f.error_type.as_str()),
        Some("NoSuchPerson"),
        "{record:?}"
    );
    assert_eq!(record, t.host.describe(&run).await.unwrap());

    // The approval waits days of virtual time: the wait ends first.
    let approval = t.deploy("approval-workflow").await;
    let short = Duration::from_millis(200);
    let (open, record) = t
        .host
        .start_and_wait(
            request("approval-wait", "approval", approval_input(), &approval),
            short,
        )
        .await
        .unwrap();
    assert!(record.is_none(), "{record:?}");
    assert_eq!(
        t.host.describe(&open).await.unwrap().status,
        RunStatus::Running
    );

    let mut again = request("approval-wait", "approval", approval_input(), &approval);
    again.options.id_conflict_policy = IdConflictPolicy::UseExisting;
    let (same, record) = t.host.start_and_wait(again, short).await.unwrap();
    assert_eq!(
        (same.clone(), record.map(|r| r.status)),
        (open.clone(), None)
    );
    t.host.terminate(&open, "done waiting").await.unwrap();
    let ended = t.finished(&open).await;
    assert_eq!(ended.status, RunStatus::Terminated, "{ended:?}");
    t.stop().await;
}

/// What one run may hold (`weft::limits`), with the limits made small: a
/// run at a limit completes, one past it is parked with a reason naming the
/// setting (nothing of that activation stored), and a history past its
/// maximum is terminated with the reason recorded. Twice: with warm
/// instances, and with none, so that every activation counts again from a
/// replay of the history.
async fn a_run_is_held_to_its_limits(backend: Backend) {
    for warm_instances in [256, 0] {
        held_to_limits(backend, warm_instances).await;
    }
}

async fn held_to_limits(backend: Backend, warm_instances: usize) {
    let calls = Calls::default();
    let config = weft::wasm::EngineConfig {
        run_limits: weft::RunLimits {
            max_pending_activities: 5,
            max_pending_timers: 5,
            max_commands_per_activation: 20,
            max_search_attribute_bytes: 1_000,
            warn_history_events: 20,
            max_history_events: 40,
            max_log_bytes_per_activation: 10_000,
            ..weft::RunLimits::default()
        },
        ..weft::wasm::EngineConfig::default()
    };
    let engine = Arc::new(weft::wasm::WasmEngine::new(config).unwrap());
    let host_config = weft::HostConfig {
        warm_instances,
        ..common::test_config()
    };
    let mut activities = Activities::new();
    let counted = calls.clone();
    activities.register("greet", move |_: ActivityContext, name: String| {
        let calls = counted.clone();
        async move {
            calls.record("greet");
            Ok::<_, ActivityError>(format!("Hello, {name}!"))
        }
    });
    let t = TestHost::with_engine(backend, activities, host_config, engine).await;
    let module = t.deploy("test-misbehave").await;
    let start = |workflow: &'static str, id: &'static str, input: Value| {
        let (t, module) = (&t, &module);
        async move { (t.start(module, workflow, id, input).await, workflow, id) }
    };
    // At the limits, and past them only in sequence: completes.
    let fine = [
        start(
            "fan_out",
            "at-the-limits",
            json!({"timers": 5, "activities": 5}),
        )
        .await,
        start("fan_out", "one-after-another", json!({"rounds": 8})).await,
        start("chatty", "twenty-lines", json!(20)).await,
        // 5 MB of output in each of two activations, 10 kB of it logged.
        start("noisy", "noisy", json!(5_000)).await,
        start("big_attributes", "small-attributes", json!(900)).await,
        start("long_history", "short-history", json!(8)).await,
    ];
    let over = [
        (
            start("fan_out", "six-timers", json!({"timers": 6})).await,
            "the run already has 5 timers pending, the limit (--max-pending-timers)",
        ),
        (
            start("fan_out", "six-activities", json!({"activities": 6})).await,
            "the run already has 5 activities pending, the limit (--max-pending-activities)",
        ),
        (
            start("chatty", "twenty-one-lines", json!(21)).await,
            "the run already has 20 commands in this activation, the limit (--max-commands-per-activation)",
        ),
        (
            start("big_attributes", "big-attributes", json!(1_000)).await,
            "over the limit of 1000 (--max-search-attribute-bytes)",
        ),
    ];
    let long = start("long_history", "long-history", json!(100)).await;
    let open = |r: &RunRecord| r.status == RunStatus::Running;
    // Bounded (about a minute at most); ends as soon as every run has closed.
    for _ in 0..3_000 {
        let mut waiting = false;
        for (run, _, _) in fine
            .iter()
            .chain(over.iter().map(|(r, _)| r))
            .chain([&long])
        {
            waiting |= open(&t.host.describe(run).await.unwrap());
        }
        if !waiting {
            break;
        }
        t.clock.advance(Duration::from_millis(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (run, workflow, id) in &fine {
        let record = t.host.describe(run).await.unwrap();
        assert!(
            completed(&record),
            "{workflow} {id} (warm {warm_instances}): {record:?}"
        );
    }
    for ((run, workflow, id), needle) in &over {
        let record = t.host.describe(run).await.unwrap();
        assert_eq!(
            record.status,
            RunStatus::Stuck,
            "{workflow} {id} (warm {warm_instances}): {record:?}"
        );
        let reason = record.stuck.unwrap().to_string();
        assert!(reason.contains(needle), "{workflow} {id}: {reason}");
        let history = t.host.history(run).await.unwrap();
        assert_eq!(
            kinds(&history),
            ["workflow_started"],
            "{id}: nothing of the refused activation is stored"
        );
    }
    let (run, _, _) = &long;
    let record = t.host.describe(run).await.unwrap();
    assert_eq!(
        record.status,
        RunStatus::Terminated,
        "(warm {warm_instances}) {record:?}"
    );
    let history = t.host.history(run).await.unwrap();
    // Terminated at the first activation that found 40 events or more (an
    // activation adds three: activation_started, timer_fired, timer_started).
    assert!(
        (41..=43).contains(&history.len()),
        "terminated on reaching 40 events: {:?}",
        kinds(&history)
    );
    match &history.events().last().unwrap().event {
        weft::model::Event::WorkflowTerminated { reason } => assert!(
            reason.contains("events, the limit of 40 (--max-history-events)"),
            "{reason}"
        ),
        other => panic!("the history ends with {other:?}"),
    }
    assert_eq!(
        calls.count("greet"),
        5,
        "only the run at the limit ran activities"
    );
    t.stop().await;
}

/// Runs `sql` (one `$1`: the run id) on the test's database behind the
/// store's back, with `table` qualified by the test's Postgres schema.
async fn alter(t: &TestHost, table: &str, sql: &str, run: &weft::model::RunId) {
    match &t.db.schema {
        None => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", t.db.url))
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(run.as_str())
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Some(schema) => {
            let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
            let sql = sql.replace(table, &format!("\"{schema}\".{table}"));
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(run.as_str())
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

/// A run whose activation keeps failing for a reason retrying cannot mend
/// (here its stored history, altered in the database, no longer reads back)
/// is parked as stuck with the reason after a few tries, not retried for
/// ever, and the host keeps serving other runs.
async fn a_run_that_cannot_activate_is_parked_not_retried_for_ever(backend: Backend) {
    let config = weft::HostConfig {
        // Every activation reads the history back, as after a restart.
        warm_instances: 0,
        ..common::test_config()
    };
    let calls = Calls::default();
    let t = TestHost::with_config(backend, hello_activities(&calls), config).await;
    let module = t.deploy("test-misbehave").await;
    let run = t.start(&module, "long_history", "broken", json!(3)).await;
    t.until_event(&run, "timer_started", 1).await;
    alter(
        &t,
        "events",
        "UPDATE events SET payload = '{\"not\": \"an event\"}' WHERE run_id = $1 AND seq = 1",
        &run,
    )
    .await;
    // The timer fires: the run must activate, and cannot.
    t.clock.advance(Duration::from_secs(1));
    let record = t
        .until(&run, "parked", |r| r.status == RunStatus::Stuck)
        .await;
    let reason = record.stuck.unwrap();
    assert_eq!(reason["kind"], "activation_failed", "{reason}");
    assert_eq!(reason["attempts"], 5, "{reason}");
    let message = reason["message"].as_str().unwrap();
    assert!(message.contains("corrupt"), "{message}");
    assert!(message.contains("weft resume"), "{message}");
    // Others are served.
    let good = t.deploy("hello-workflow").await;
    let hello = t
        .start(&good, "hello", "beside-the-broken", json!("Ada"))
        .await;
    assert!(completed(&t.finished(&hello).await));
    t.stop().await;
}

/// A claimed task whose stored row does not read back (here its options,
/// altered in the database) parks its own run with the reason; the tasks
/// claimed with it are handed out as usual.
async fn an_unreadable_task_parks_its_run_not_the_claim(backend: Backend) {
    // No activity is served here, so the tasks wait for the claim below.
    let t = TestHost::with_config(backend, Activities::new(), common::test_config()).await;
    let module = t.deploy("test-misbehave").await;
    let one = json!({"activities": 1});
    let broken = t
        .start(&module, "fan_out", "broken-task", one.clone())
        .await;
    let fine = t.start(&module, "fan_out", "fine-task", one).await;
    t.until_event(&broken, "activity_scheduled", 1).await;
    t.until_event(&fine, "activity_scheduled", 1).await;
    alter(
        &t,
        "activity_tasks",
        "UPDATE activity_tasks SET options = 'not options' WHERE run_id = $1",
        &broken,
    )
    .await;
    let claimed = t
        .host
        .store()
        .claim_activities("a-worker", &["greet".to_string()], 1 << 50, 60_000, 10)
        .await
        .expect("one unreadable row does not fail the claim");
    let runs: Vec<_> = claimed.iter().map(|task| task.run_id.clone()).collect();
    assert_eq!(runs, vec![fine.clone()]);
    let record = t.host.describe(&broken).await.unwrap();
    assert_eq!(record.status, RunStatus::Stuck, "{record:?}");
    let reason = record.stuck.unwrap();
    assert_eq!(reason["kind"], "unreadable_task", "{reason}");
    assert_eq!(reason["seq"], 1, "{reason}");
    let message = reason["message"].as_str().unwrap();
    assert!(message.contains("options"), "{message}");
    assert!(message.contains("weft resume"), "{message}");
    assert_eq!(
        t.host.describe(&fine).await.unwrap().status,
        RunStatus::Running
    );
    t.stop().await;
}

/// A timer written by a commit the activation loop did not make (a start's
/// first activation, run inline) fires when it is due, not when the loop
/// next looks on its own: here an hour later.
async fn a_timer_started_inline_fires_when_due(backend: Backend) {
    let config = weft::HostConfig {
        poll_interval: Duration::from_secs(3_600),
        ..common::test_config()
    };
    let t = TestHost::with_config(backend, Activities::new(), config).await;
    let module = t.deploy("test-scenarios").await;
    // Let the activation loop find no timer and go to sleep first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = t.start(&module, "sleep", "nap", json!(1_000)).await;
    t.until_event(&run, "timer_started", 1).await;
    t.clock.advance(Duration::from_secs(1));
    let done = tokio::time::timeout(Duration::from_secs(30), t.host.wait(&run))
        .await
        .expect("the timer fires once the clock reaches it, not at the loop's hourly look")
        .unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    t.stop().await;
}

both_backends!(
    a_timer_started_inline_fires_when_due,
    an_unreadable_task_parks_its_run_not_the_claim,
    start_and_wait_gives_the_outcome_or_the_open_run,
    a_full_instance_pool_evicts_idle_runs,
    a_hung_attempt_times_out_and_is_retried,
    hello_runs_and_replays,
    approval_approved_in_virtual_time,
    approval_times_out_after_seven_days,
    approval_fails_on_a_non_retryable_error,
    steps_survive_eviction_with_signals_join_and_select,
    std_time_random_and_hashmap_replay_identically,
    a_changed_module_diverges_with_a_diff,
    live_nondeterminism_parks_the_run,
    runaway_guests_are_stopped_and_parked,
    bad_guest_values_are_refused_at_the_boundary,
    a_run_is_held_to_its_limits,
    a_run_that_cannot_activate_is_parked_not_retried_for_ever,
    bad_input_gets_clear_errors,
);
