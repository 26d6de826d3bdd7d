//! Versions through the real host, on both backends and virtual time: v1 of
//! `order` runs; v2 (`test-versions-v2`) would diverge from every v1 run and
//! v3 (`test-versions-v3`, a patched step) would not. Checked deploys,
//! defaults, the compatibility check, upgrades that move only the runs that
//! replay, a stuck run resumed on a fixed module, and garbage collection.

mod common;

use common::{Backend, Calls, Db, fresh_db, guest};
use serde_json::json;
use std::time::Duration;
use weft::model::{Event, RunId, Sha256Hex};
use weft::store::RunStatus;
use weft::testing::TestEnv;
use weft::versions::{DeployOptions, Reapply, ResetRequest, UpgradeResult, Verdict};
use weft::workflow::ReplayVerdict;
use weft::{Activities, ActivityContext, ActivityError};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn activities(calls: &Calls) -> Activities {
    let mut a = Activities::new();
    for (name, prefix) in [
        ("reserve", "R-"),
        ("ship", "S-"),
        ("notify", "N-"),
        ("check_stock", ""),
        ("echo", ""),
    ] {
        let c = calls.clone();
        a.register(name, move |_: ActivityContext, input: String| {
            let c = c.clone();
            async move {
                c.record(format!("{name}:{input}"));
                if name == "check_stock" {
                    return Ok::<_, ActivityError>(json!(true));
                }
                Ok(json!(format!("{prefix}{input}")))
            }
        });
    }
    a
}

async fn kit(backend: Backend, calls: &Calls) -> (TestEnv, Db) {
    let db = fresh_db(backend).await;
    let env = TestEnv::builder(activities(calls))
        .store(db.store.clone())
        .engine(common::engine())
        .config(|c| c.host_id = common::unique("host"))
        .build()
        .await
        .unwrap();
    (env, db)
}

async fn deploy(env: &TestEnv, version: &str, options: DeployOptions) -> weft::versions::Deployed {
    let wasm = guest(&format!("test-versions-v{version}"));
    env.host()
        .deploy_module("order", version, &wasm, options)
        .await
        .unwrap()
}

/// The module a start by name takes now.
async fn default_module(env: &TestEnv) -> Sha256Hex {
    env.host()
        .store()
        .default_module("order")
        .await
        .unwrap()
        .expect("order has a default")
        .sha256
}

async fn start(env: &TestEnv, id: &str) -> RunId {
    let module = default_module(env).await;
    env.start(&module, "order", id, id).await.unwrap()
}

fn checked() -> DeployOptions {
    DeployOptions {
        make_default: true,
        check: true,
    }
}

async fn operators_move_only_the_runs_that_replay(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, &calls).await;
    let v1 = deploy(&env, "1", DeployOptions::default()).await;
    assert!(v1.is_default, "the first module of a name is its default");

    // One run ships on v1 and closes; two more wait a day on v1.
    let shipped = start(&env, "o-shipped").await;
    let out: String = env.output(&shipped).await.unwrap();
    assert_eq!(out, "S-R-o-shipped");
    let waiting = [start(&env, "o-1").await, start(&env, "o-2").await];

    // A checked deploy of v2 is refused: it would diverge from both open runs.
    let v2 = deploy(&env, "2", checked()).await;
    assert!(!v2.is_default);
    let mut diverging: Vec<_> = v2.diverging.iter().map(|c| c.run_id.clone()).collect();
    diverging.sort();
    let mut expected = waiting.to_vec();
    expected.sort();
    assert_eq!(diverging, expected);
    for c in &v2.diverging {
        let Verdict::Diverged(d) = &c.verdict else {
            panic!("{c:?}")
        };
        assert_eq!(d.event_seq, 3, "the first command differs: {d}");
        // v2 keeps its line tables: the check names the line that issued it.
        let location = d.location.as_deref().unwrap_or_default();
        let (file, line) = location
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("no file:line in the divergence: {d}"));
        assert!(file.ends_with("versions/v2/src/lib.rs"), "{d}");
        let source = std::fs::read_to_string(file).unwrap();
        let line: usize = line.parse().unwrap();
        assert!(
            source
                .lines()
                .nth(line - 1)
                .unwrap()
                .contains("\"check_stock\""),
            "the divergence names the line that issued it: {d}"
        );
        assert!(
            matches!(&d.issued, Some(Event::ActivityScheduled { name, .. }) if name == "check_stock")
        );
    }
    assert_eq!(default_module(&env).await, v1.module.sha256);

    // The check classifies every run: v2 diverges from all, v3 replays all.
    let runs = env.host().check_runs("order", 5).await.unwrap();
    assert_eq!(runs.len(), 3, "two open runs and the closed one");
    let v2_loaded = env.host().module(&v2.module.sha256).await.unwrap();
    let v3_wasm = guest("test-versions-v3");
    let v3_loaded = env.host().compile(&v3_wasm).await.unwrap();
    for run in &runs {
        let on_v2 = env.host().check_run(&v2_loaded, run).await;
        assert!(matches!(on_v2.verdict, Verdict::Diverged(_)), "{on_v2:?}");
        assert_eq!(on_v2.blocks(), run.status.is_open());
        let on_v3 = env.host().check_run(&v3_loaded, run).await;
        assert!(
            matches!(on_v3.verdict, Verdict::Identical { .. }),
            "{on_v3:?}"
        );
    }

    // Deployed without a check, v2 becomes the default: new runs take it,
    // open runs stay on v1.
    let v2 = deploy(&env, "2", DeployOptions::default()).await;
    assert!(v2.is_default);
    let on_v2 = start(&env, "o-3").await;
    assert_eq!(
        env.host().describe(&on_v2).await.unwrap().module_sha256,
        v2.module.sha256
    );
    for run in &waiting {
        assert_eq!(
            env.host().describe(run).await.unwrap().module_sha256,
            v1.module.sha256
        );
    }

    // v3 checked: the v2 run would diverge on it, so the default stays v2.
    let v3 = deploy(&env, "3", checked()).await;
    assert!(!v3.is_default);
    assert_eq!(
        v3.diverging
            .iter()
            .map(|c| c.run_id.clone())
            .collect::<Vec<_>>(),
        vec![on_v2.clone()]
    );
    let promoted = env.host().promote(&v3.module.sha256, false).await.unwrap();
    assert!(promoted.is_default);
    let on_v3 = start(&env, "o-4").await;

    // Upgrade every open run to v3: the v1 runs move, the v2 run stays.
    let v3_module = env.host().module(&v3.module.sha256).await.unwrap();
    for run in env.host().check_runs("order", 0).await.unwrap() {
        let dry = env
            .host()
            .upgrade_run(&v3_module, &run.run_id, true)
            .await
            .unwrap();
        let done = env
            .host()
            .upgrade_run(&v3_module, &run.run_id, false)
            .await
            .unwrap();
        if waiting.contains(&run.run_id) {
            assert_eq!(dry.result, UpgradeResult::WouldUpgrade);
            assert_eq!(done.result, UpgradeResult::Upgraded);
        } else if run.run_id == on_v2 {
            assert!(
                matches!(done.result, UpgradeResult::Stays(Verdict::Diverged(_))),
                "{done:?}"
            );
        } else {
            assert_eq!(run.run_id, on_v3);
            assert!(matches!(done.result, UpgradeResult::Skipped(_)));
        }
    }

    // A day later: the moved runs take v3's new step, the v2 run finishes on v2.
    env.sleep(DAY).await.unwrap();
    for run in waiting.iter().chain([&on_v2, &on_v3]) {
        let record = env.result(run).await.unwrap();
        assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    }
    assert_eq!(calls.count("notify:o-1"), 1);
    assert_eq!(calls.count("notify:o-2"), 1);
    assert_eq!(calls.count("notify:o-4"), 1);
    assert_eq!(calls.count("notify:o-3"), 0, "the v2 run stayed on v2");
    assert_eq!(calls.count("check_stock:o-3"), 1);
    let moved = env.history(&waiting[0]).await.unwrap();
    moved.verify().unwrap();
    let kinds: Vec<&str> = moved.events().iter().map(|e| e.event.kind()).collect();
    let changed = kinds.iter().position(|k| *k == "module_changed").unwrap();
    let marker = kinds.iter().position(|k| *k == "patch_marker").unwrap();
    assert!(changed < marker, "{kinds:?}");
    assert!(matches!(
        env.host().replay(&waiting[0]).await.unwrap(),
        ReplayVerdict::Identical { .. }
    ));
    assert_eq!(
        env.host().describe(&shipped).await.unwrap().module_sha256,
        v1.module.sha256,
        "a closed run keeps its module"
    );

    // Every run closed; two days on, a one-day retention takes them all and
    // every module but the default.
    let usage = env.host().store().module_usage().await.unwrap();
    assert_eq!(usage.iter().map(|u| u.closed_runs).sum::<u64>(), 5);
    env.clock().advance(2 * DAY);
    let dry = env.host().collect_garbage(DAY, true).await.unwrap();
    assert_eq!(dry.runs, 5);
    let gone = env.host().collect_garbage(DAY, false).await.unwrap();
    assert_eq!(gone.runs, 5);
    let mut versions: Vec<_> = gone.modules.iter().map(|m| m.version.clone()).collect();
    versions.sort();
    assert_eq!(versions, vec!["1", "2"]);
    let left = env.host().store().modules().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sha256, v3.module.sha256);
    done(env, db).await;
}

async fn a_stuck_run_resumes_on_a_fixed_module(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, &calls).await;
    deploy(&env, "1", DeployOptions::default()).await;
    let cursed = start(&env, "o-cursed").await;
    let record = env.result(&cursed).await.unwrap();
    assert_eq!(record.status, RunStatus::Stuck, "{record:?}");
    assert_eq!(calls.count("reserve:o-cursed"), 1);

    // On its own module it replays, runs, and traps again.
    let resumed = env.host().resume(&cursed, None).await.unwrap();
    assert_eq!(resumed.status, RunStatus::Running);
    assert_eq!(env.result(&cursed).await.unwrap().status, RunStatus::Stuck);

    // v2 cannot take it: its history does not replay there.
    let v2 = deploy(&env, "2", DeployOptions::default()).await;
    let refused = env
        .host()
        .resume(&cursed, Some(&v2.module.sha256))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("stays stuck"), "{refused}");
    assert!(refused.contains("event 3"), "{refused}");
    assert_eq!(
        env.host().describe(&cursed).await.unwrap().status,
        RunStatus::Stuck
    );

    // v3 fixed the bug: the run goes on there, without running `reserve` again.
    let v3 = deploy(&env, "3", DeployOptions::default()).await;
    env.host()
        .resume(&cursed, Some(&v3.module.sha256))
        .await
        .unwrap();
    let out: String = env.output(&cursed).await.unwrap();
    assert_eq!(out, "S-R-o-cursed");
    assert_eq!(calls.count("reserve:o-cursed"), 1);
    let history = env.history(&cursed).await.unwrap();
    history.verify().unwrap();
    assert!(history.events().iter().any(|e| matches!(
        &e.event,
        Event::ModuleChanged { to, reason, .. } if to == &v3.module.sha256 && reason.starts_with("resume")
    )));
    assert!(matches!(
        env.host().replay(&cursed).await.unwrap(),
        ReplayVerdict::Identical { .. }
    ));
    let again = env.host().resume(&cursed, None).await.unwrap_err();
    assert!(again.to_string().contains("not stuck"), "{again}");
    done(env, db).await;
}

async fn a_version_is_deployed_once(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, &calls).await;
    let first = deploy(&env, "1", DeployOptions::default()).await;
    let again = deploy(&env, "1", DeployOptions::default()).await;
    assert_eq!(
        again.module, first.module,
        "the same bytes twice are a no-op"
    );
    let taken = env
        .host()
        .deploy_module(
            "order",
            "1",
            &guest("test-versions-v2"),
            DeployOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        taken.contains("order version 1 is already deployed") && taken.contains("new version"),
        "{taken}"
    );
    let kept = DeployOptions {
        make_default: false,
        check: false,
    };
    let v2 = deploy(&env, "2", kept).await;
    assert!(!v2.is_default);
    assert_eq!(default_module(&env).await, first.module.sha256);
    done(env, db).await;
}

async fn a_reset_run_keeps_the_prefix_and_inherits_pending_work(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, &calls).await;
    deploy(&env, "1", DeployOptions::default()).await;
    let first = start(&env, "o-reset").await;
    env.settle().await.unwrap();
    // 1 started, 2-3 reserve scheduled, 4-6 reserve done and the day's timer started.
    let kinds = |h: &weft::model::History| -> Vec<&'static str> {
        h.events().iter().map(|e| e.event.kind()).collect()
    };
    assert_eq!(
        kinds(&env.history(&first).await.unwrap()),
        [
            "workflow_started",
            "activation_started",
            "activity_scheduled",
            "activation_started",
            "activity_completed",
            "timer_started"
        ]
    );
    let request = |run_id: &RunId, to_event: u64, module: Option<Sha256Hex>| ResetRequest {
        run_id: run_id.clone(),
        to_event,
        module,
        reason: "test".into(),
        reapply: Reapply::default(),
    };
    let inside = env
        .host()
        .reset(request(&first, 4, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(inside.contains("events 3, 6"), "{inside}");

    // After the timer started: the new run inherits the timer, not the activity.
    let second = env.host().reset(request(&first, 6, None)).await.unwrap();
    assert!(second.terminated_old);
    assert_eq!(
        env.host().describe(&first).await.unwrap().status,
        RunStatus::Terminated
    );
    let out: String = env.output(&second.run_id).await.unwrap();
    assert_eq!(out, "S-R-o-reset");
    assert_eq!(calls.count("reserve:o-reset"), 1);
    let history = env.history(&second.run_id).await.unwrap();
    history.verify().unwrap();
    let old = env.history(&first).await.unwrap();
    assert_eq!(
        history.events()[..6],
        old.events()[..6],
        "the prefix is kept as it was, hashes and all"
    );
    assert!(matches!(
        &history.events()[6].event,
        Event::WorkflowReset { from_run_id, at_event: 6, .. } if from_run_id == &first
    ));

    // The closed run reset to before `reserve` finished, onto v3: the
    // activity runs again, and the run takes v3's new step.
    let v3 = deploy(&env, "3", DeployOptions::default()).await;
    let third = env
        .host()
        .reset(request(&second.run_id, 3, Some(v3.module.sha256.clone())))
        .await
        .unwrap();
    assert!(!third.terminated_old);
    assert_eq!(third.module_sha256, v3.module.sha256);
    let out: String = env.output(&third.run_id).await.unwrap();
    assert_eq!(out, "S-R-o-reset");
    assert_eq!(calls.count("reserve:o-reset"), 2);
    assert_eq!(calls.count("notify:o-reset"), 1);
    assert!(matches!(
        env.host().replay(&third.run_id).await.unwrap(),
        ReplayVerdict::Identical { .. }
    ));
    done(env, db).await;
}

async fn a_reset_receives_later_signals_again(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, &calls).await;
    let module = env
        .deploy("scenarios", &guest("test-scenarios"))
        .await
        .unwrap();
    let run = env
        .start(&module, "counter", "count-reset", json!({"signals": 3}))
        .await
        .unwrap();
    env.signal(&run, "add", 1).await.unwrap();
    env.signal(&run, "add", 2).await.unwrap();
    env.settle().await.unwrap();
    let total: u64 = env.query(&run, "total", ()).await.unwrap();
    assert_eq!(total, 3);
    // Event 2 ends the first activation, before either signal.
    let reset = env
        .host()
        .reset(ResetRequest {
            run_id: run.clone(),
            to_event: 2,
            module: None,
            reason: "test".into(),
            reapply: Reapply::default(),
        })
        .await
        .unwrap();
    assert_eq!((reset.kept_events, reset.signals), (2, 2));
    env.settle().await.unwrap();
    let total: u64 = env.query(&reset.run_id, "total", ()).await.unwrap();
    assert_eq!(total, 3, "both signals came again");
    env.signal(&reset.run_id, "add", 4).await.unwrap();
    let out: u64 = env.output(&reset.run_id).await.unwrap();
    assert_eq!(out, 7);

    // The same point again, leaving the signals out: the count starts over.
    let bare = env
        .host()
        .reset(ResetRequest {
            run_id: reset.run_id.clone(),
            to_event: 2,
            module: None,
            reason: "test".into(),
            reapply: Reapply {
                signals: false,
                updates: true,
            },
        })
        .await
        .unwrap();
    assert_eq!((bare.signals, bare.terminated_old), (0, false));
    env.settle().await.unwrap();
    let total: u64 = env.query(&bare.run_id, "total", ()).await.unwrap();
    assert_eq!(total, 0, "no signal came again");
    done(env, db).await;
}

async fn a_reset_applies_later_updates_again(backend: Backend) {
    let calls = Calls::default();
    let (env, db) = kit(backend, &calls).await;
    let module = env
        .deploy("primitives", &guest("test-primitives"))
        .await
        .unwrap();
    let run = env
        .start(&module, "updatable", "acct-reset", 10)
        .await
        .unwrap();
    env.settle().await.unwrap();
    // The end of the first activation, before any update.
    let point = env.history(&run).await.unwrap().len() as u64;
    assert_eq!(env.update(&run, "add", 5).await.unwrap(), json!(15));
    assert_eq!(env.update(&run, "add", 7).await.unwrap(), json!(22));
    let reset = env
        .host()
        .reset(ResetRequest {
            run_id: run.clone(),
            to_event: point,
            module: None,
            reason: "test".into(),
            reapply: Reapply::default(),
        })
        .await
        .unwrap();
    assert_eq!((reset.signals, reset.updates), (0, 2));
    env.settle().await.unwrap();
    let value: i64 = env.query(&reset.run_id, "value", ()).await.unwrap();
    assert_eq!(value, 22, "both updates were applied again, in order");
    assert_eq!(calls.count("echo:5"), 2, "once per run");
    let history = env.history(&reset.run_id).await.unwrap();
    let completed = history
        .events()
        .iter()
        .filter(|e| matches!(e.event, Event::UpdateCompleted { .. }))
        .count();
    assert_eq!(completed, 2);
    env.signal(&reset.run_id, "done", ()).await.unwrap();
    let out: i64 = env.output(&reset.run_id).await.unwrap();
    assert_eq!(out, 22);
    env.assert_replays(&reset.run_id).await.unwrap();
    done(env, db).await;
}

async fn done(env: TestEnv, db: Db) {
    env.shutdown().await;
    db.drop().await;
}

both_backends!(
    operators_move_only_the_runs_that_replay,
    a_stuck_run_resumes_on_a_fixed_module,
    a_version_is_deployed_once,
    a_reset_run_keeps_the_prefix_and_inherits_pending_work,
    a_reset_receives_later_signals_again,
    a_reset_applies_later_updates_again,
);

/// Two hosts on one Postgres, each with its API: a deploy through one is the
/// default for starts through the other at once, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_starts_new_runs_on_the_new_default_at_once() {
    use weft::client::{Client, StartSpec};
    let db = fresh_db(Backend::Postgres).await;
    let mut addresses = Vec::new();
    let mut stops = Vec::new();
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let host = weft::Host::with_engine(
            db.store.clone(),
            Activities::new(),
            common::test_config(),
            std::sync::Arc::new(weft::ManualClock::new(common::START_MS)),
            common::engine(),
        );
        let running = host.run().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.push(format!("http://{}", listener.local_addr().unwrap()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(weft::api::serve(
            host.clone(),
            listener,
            weft::api::Tokens::open(),
            async move {
                let _ = stopped.await;
            },
        ));
        stops.push(stop);
        hosts.push(running);
    }
    let a = Client::connect(&addresses[0], None).await.unwrap();
    let b = Client::connect(&addresses[1], None).await.unwrap();
    let start = |id: &str| StartSpec::new("order", id, json!(id));
    for (version, id) in [("1", "o-1"), ("3", "o-2")] {
        let wasm = guest(&format!("test-versions-v{version}"));
        let deployed = a.deploy("order", Some(version), wasm).await.unwrap();
        let started = b.start(start(id)).await.unwrap();
        assert_eq!(
            started.module_sha256, deployed.sha256,
            "host b starts {id} on version {version}, deployed through host a"
        );
    }
    for stop in stops {
        let _ = stop.send(());
    }
    for running in hosts {
        running.shutdown().await;
    }
    db.drop().await;
}
