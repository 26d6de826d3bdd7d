//! Default versions, module changes and garbage collection.

use super::*;
use crate::store::{ChangeModule, GarbageRequest, ListFilter, Reapplied, ReappliedUpdate};

/// Deploys the module every test run is pinned to, as `order` version 1.
async fn deploy_v1(store: &dyn Store) -> ModuleRecord {
    store
        .put_module("order", "1", b"conformance module", T0)
        .await
        .expect("put_module")
}

async fn deploy_v2(store: &dyn Store) -> ModuleRecord {
    store
        .put_module("order", "2", b"conformance module v2", T0 + 1)
        .await
        .expect("put_module")
}

fn change(run: &Run, to: &Sha256Hex, now_ms: u64) -> ChangeModule {
    ChangeModule {
        run_id: run.id.clone(),
        from: module_sha(),
        to: to.clone(),
        expected_last_seq: run.history.len() as u64,
        reason: "upgrade".into(),
        resume: false,
        now_ms,
    }
}

pub async fn a_name_has_one_default_module(store: &dyn Store) {
    assert_eq!(store.default_module("order").await.expect("default"), None);
    let v1 = deploy_v1(store).await;
    let v2 = deploy_v2(store).await;
    assert_eq!(
        store.default_module("order").await.expect("default"),
        None,
        "deploying alone sets no default"
    );
    store
        .set_default_module(&v1.sha256, T0 + 2)
        .await
        .expect("set_default");
    assert_eq!(
        store.default_module("order").await.expect("default"),
        Some(v1.clone())
    );
    store
        .set_default_module(&v2.sha256, T0 + 3)
        .await
        .expect("set_default");
    assert_eq!(
        store.default_module("order").await.expect("default"),
        Some(v2.clone())
    );
    let usage = store.module_usage().await.expect("module_usage");
    let flags: Vec<(String, bool)> = usage
        .iter()
        .map(|u| (u.module.version.clone(), u.is_default))
        .collect();
    assert_eq!(flags, vec![("1".into(), false), ("2".into(), true)]);
    assert!(is_not_found(
        &store
            .set_default_module(&Sha256Hex::of(b"never deployed"), T0)
            .await
    ));
}

pub async fn a_version_names_one_module(store: &dyn Store) {
    deploy_v1(store).await;
    let taken = store.put_module("order", "1", b"other bytes", T0 + 5).await;
    assert!(
        matches!(&taken, Err(StoreError::VersionTaken { name, version, sha256 })
            if name == "order" && version == "1" && sha256 == module_sha().as_str()),
        "{taken:?}"
    );
    store
        .put_module("invoice", "1", b"other bytes", T0 + 5)
        .await
        .expect("another name may use the same version");
}

pub async fn module_usage_counts_runs_and_runs_of_module_samples_them(store: &dyn Store) {
    let v1 = deploy_v1(store).await;
    let mut done = Vec::new();
    for (i, id) in ["wf-done-1", "wf-done-2", "wf-done-3"].iter().enumerate() {
        let mut run = Run::start(store, id, T0).await;
        let at = T0 + 10 + i as u64;
        run.activate(store, at, |run, c| {
            add_events(run, c, vec![Event::WorkflowCompleted { output: json!(i) }]);
            c.outcome = RunOutcome::Completed { output: json!(i) };
        })
        .await;
        done.push(run);
    }
    // Started last, so that the activations above claim only their own run.
    let open = Run::start(store, "wf-open", T0).await;
    let usage = store.module_usage().await.expect("module_usage");
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].open_runs, usage[0].closed_runs), (1, 3));
    assert_eq!(usage[0].module, v1);

    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.runs_of_module("order", 2).await.expect("runs")),
        vec![open.id.clone(), done[2].id.clone(), done[1].id.clone()],
        "the open runs, then the most recently closed"
    );
    assert_eq!(
        ids(store.runs_of_module("order", 0).await.expect("runs")),
        vec![open.id.clone()]
    );
    assert!(
        store
            .runs_of_module("invoice", 5)
            .await
            .expect("runs")
            .is_empty()
    );
}

pub async fn change_module_appends_to_the_chain_and_moves_the_run(store: &dyn Store) {
    deploy_v1(store).await;
    let v2 = deploy_v2(store).await;
    let mut run = Run::start(store, "wf-upgrade", T0).await;
    run.schedule(store, T0 + 1, 1, "charge", ActivityOptions::default())
        .await;

    let stale = ChangeModule {
        expected_last_seq: 1,
        ..change(&run, &v2.sha256, T0 + 5)
    };
    let refused = store.change_module(stale).await;
    assert!(is_conflict(&refused), "{refused:?}");
    let wrong_from = ChangeModule {
        from: v2.sha256.clone(),
        ..change(&run, &v2.sha256, T0 + 5)
    };
    assert!(is_conflict(&store.change_module(wrong_from).await));
    let resume_running = ChangeModule {
        resume: true,
        ..change(&run, &v2.sha256, T0 + 5)
    };
    assert!(
        is_conflict(&store.change_module(resume_running).await),
        "only a stuck run is resumed"
    );

    store
        .change_module(change(&run, &v2.sha256, T0 + 5))
        .await
        .expect("change_module");
    let history = store.history(&run.id).await.expect("history");
    history.verify().expect("the chain holds");
    assert_eq!(history.len(), run.history.len() + 1);
    assert_eq!(
        history.events().last().map(|e| &e.event),
        Some(&Event::ModuleChanged {
            from: module_sha(),
            to: v2.sha256.clone(),
            reason: "upgrade".into(),
        })
    );
    let record = store.run(&run.id).await.expect("run");
    assert_eq!(record.module_sha256, v2.sha256);
    assert_eq!(record.last_seq, history.len() as u64);
    assert_eq!(record.last_hash, history.last_hash());
    assert_eq!(record.status, RunStatus::Running);
    let usage = store.module_usage().await.expect("module_usage");
    let open: Vec<u64> = usage.iter().map(|u| u.open_runs).collect();
    assert_eq!(open, vec![0, 1], "the run counts under its new module");
    let on = |sha: &Sha256Hex| ListFilter {
        module_sha256: Some(sha.clone()),
        ..ListFilter::default()
    };
    let listed = store.list_runs(&on(&v2.sha256)).await.expect("list_runs");
    assert_eq!(
        listed.runs.iter().map(|r| &r.run_id).collect::<Vec<_>>(),
        vec![&run.id],
        "listed under its new module"
    );
    assert!(
        store
            .list_runs(&on(&module_sha()))
            .await
            .expect("list_runs")
            .runs
            .is_empty(),
        "and no longer under its old one"
    );
    assert!(
        is_conflict(&store.change_module(change(&run, &v2.sha256, T0 + 6)).await),
        "the run is no longer on the old module"
    );
}

pub async fn change_module_waits_for_the_activating_host(store: &dyn Store) {
    deploy_v1(store).await;
    let v2 = deploy_v2(store).await;
    let run = Run::start(store, "wf-busy", T0).await;
    claim_only(store, "host-a", T0, &run).await;
    let busy = store.change_module(change(&run, &v2.sha256, T0 + 1)).await;
    assert!(
        matches!(&busy, Err(StoreError::Conflict { reason, .. }) if reason.contains("host-a")),
        "{busy:?}"
    );
    store
        .change_module(change(&run, &v2.sha256, T0 + LEASE + 1))
        .await
        .expect("once the lease expired");
}

pub async fn resume_makes_a_stuck_run_runnable_on_a_fixed_module(store: &dyn Store) {
    deploy_v1(store).await;
    let v2 = deploy_v2(store).await;
    let run = Run::start(store, "wf-stuck", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    store
        .park_run(&run.id, claim.lease_token, json!({"event": 2}))
        .await
        .expect("park_run");
    assert_not_claimable(store, T0 + 1, "a stuck run waits for an operator").await;
    assert!(
        is_conflict(&store.change_module(change(&run, &v2.sha256, T0 + 2)).await),
        "a stuck run is resumed, not upgraded"
    );
    store
        .change_module(ChangeModule {
            resume: true,
            ..change(&run, &v2.sha256, T0 + 2)
        })
        .await
        .expect("resume");
    let record = store.run(&run.id).await.expect("run");
    assert_eq!(
        (record.status, record.stuck, record.module_sha256),
        (RunStatus::Running, None, v2.sha256.clone())
    );
    assert_eq!(claimed_ids(store, "host-b", T0 + 3).await, vec![run.id]);
}

pub async fn resume_on_the_same_module_appends_nothing(store: &dyn Store) {
    deploy_v1(store).await;
    let run = Run::start(store, "wf-retry", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    store
        .park_run(&run.id, claim.lease_token, json!({"trap": "out of fuel"}))
        .await
        .expect("park_run");
    store
        .change_module(ChangeModule {
            resume: true,
            ..change(&run, &module_sha(), T0 + 2)
        })
        .await
        .expect("resume");
    assert_eq!(store.history(&run.id).await.expect("history"), run.history);
    assert_eq!(claimed_ids(store, "host-b", T0 + 3).await, vec![run.id]);
}

pub async fn garbage_collection_keeps_open_runs_and_the_modules_they_need(store: &dyn Store) {
    let v1 = deploy_v1(store).await;
    let v2 = deploy_v2(store).await;
    let unused = store
        .put_module("order", "0", b"never used", T0 + 2)
        .await
        .expect("put_module");
    store
        .set_default_module(&v2.sha256, T0 + 3)
        .await
        .expect("set_default");
    let mut closed = Run::start(store, "wf-closed", T0).await;
    closed
        .activate(store, T0 + 10, |run, c| {
            schedule_in(run, c, 1, "charge", ActivityOptions::default());
            add_events(run, c, vec![Event::WorkflowCompleted { output: json!(1) }]);
            c.outcome = RunOutcome::Completed { output: json!(1) };
        })
        .await;
    let open = Run::start(store, "wf-open", T0).await;

    let kept = store
        .collect_garbage(GarbageRequest {
            closed_before_ms: T0 + 2,
            limit: None,
            dry_run: false,
        })
        .await
        .expect("collect_garbage");
    assert_eq!(
        (kept.runs, kept.events, kept.modules.clone()),
        (0, 0, vec![]),
        "nothing closed before the cutoff; modules deployed later are kept"
    );

    let dry = store
        .collect_garbage(GarbageRequest {
            closed_before_ms: T0 + 11,
            limit: None,
            dry_run: true,
        })
        .await
        .expect("collect_garbage");
    assert_eq!((dry.runs, dry.events), (1, closed.history.len() as u64));
    assert_eq!(dry.modules, vec![unused.clone()]);
    assert_eq!(
        store.history(&closed.id).await.expect("history"),
        closed.history,
        "a dry run keeps everything"
    );

    let gone = store
        .collect_garbage(GarbageRequest {
            closed_before_ms: T0 + 11,
            limit: Some(10),
            dry_run: false,
        })
        .await
        .expect("collect_garbage");
    assert_eq!(gone, dry);
    assert!(is_not_found(&store.run(&closed.id).await));
    assert!(
        store
            .history(&closed.id)
            .await
            .map(|h| h.is_empty())
            .unwrap_or(true)
    );
    assert_eq!(
        store.history(&open.id).await.expect("history"),
        open.history
    );
    let left: Vec<String> = store
        .modules()
        .await
        .expect("modules")
        .into_iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(
        left,
        vec!["1".to_owned(), "2".to_owned()],
        "v1 has an open run, v2 is the default"
    );
    assert_eq!(v1.name, "order");
    assert!(is_not_found(&store.module_bytes(&unused.sha256).await));
}

pub async fn a_reset_run_is_placed_whole_with_its_inheritance(store: &dyn Store) {
    let old = Run::start(store, "wf-reset", T0).await;
    let mut prefix = old.history.clone();
    prefix.push(Event::ActivationStarted { time_ms: T0 + 1 }, T0 + 1);
    prefix.push(
        Event::ActivityScheduled {
            seq: 1,
            name: "charge".into(),
            input: json!(5),
            options: ActivityOptions::default(),
        },
        T0 + 1,
    );
    prefix.push(
        Event::TimerStarted {
            seq: 2,
            duration_ms: 1_000,
            fire_at_ms: T0 + 1_001,
        },
        T0 + 1,
    );
    let new_id = RunId("run-reset-new".into());
    let create = |run_id: &RunId| CreateRun {
        run_id: run_id.clone(),
        workflow_id: "wf-reset".into(),
        workflow_type: "order".into(),
        module_sha256: module_sha(),
        first_event: prefix.events()[0].clone(),
        now_ms: T0 + 5,
        options: RunOptions::default(),
    };
    let rest = |run_id: &RunId| ActivationCommit {
        run_id: run_id.clone(),
        events: prefix.events()[1..].to_vec(),
        new_activities: vec![NewActivityTask {
            seq: 1,
            name: "charge".into(),
            input: json!(5),
            options: ActivityOptions::default(),
            visible_at_ms: T0 + 5,
            claimed: None,
        }],
        new_timers: vec![NewTimer {
            seq: 2,
            fire_at_ms: T0 + 1_001,
        }],
        now_ms: T0 + 5,
        ..ActivationCommit::default()
    };
    let reapplied = Reapplied {
        signals: vec![("add".to_owned(), json!(1)), ("add".to_owned(), json!(2))],
        updates: vec![ReappliedUpdate {
            update_id: "u-1".into(),
            name: "rename".into(),
            input: json!("bob"),
        }],
    };

    let refused = store
        .create_reset_run(create(&new_id), rest(&new_id), reapplied.clone())
        .await;
    assert!(
        matches!(refused, Err(StoreError::WorkflowIdInUse { .. })),
        "the old run is open: {refused:?}"
    );
    assert!(
        is_not_found(&store.run(&new_id).await),
        "nothing was written"
    );

    let claim = claim_only(store, "host-a", T0 + 2, &old).await;
    store
        .request_termination(&old.id, "reset", T0 + 3)
        .await
        .expect("request_termination");
    let mut closing = old.commit(&claim, vec![], T0 + 3);
    closing.events = old.next(
        vec![Event::WorkflowTerminated {
            reason: "reset".into(),
        }],
        T0 + 3,
    );
    closing.outcome = RunOutcome::Terminated {
        reason: "reset".into(),
    };
    store.commit_activation(closing).await.expect("terminate");

    store
        .create_reset_run(create(&new_id), rest(&new_id), reapplied)
        .await
        .expect("create_reset_run");
    let history = store.history(&new_id).await.expect("history");
    assert_eq!(history, prefix);
    let record = store.run(&new_id).await.expect("run");
    assert_eq!(
        (record.status, record.last_seq, record.last_hash),
        (RunStatus::Running, 4, prefix.last_hash())
    );
    let jobs = store
        .pending_jobs(&new_id, T0 + 2_000)
        .await
        .expect("pending_jobs");
    let inputs: Vec<Value> = jobs.signals.iter().map(|s| s.input.clone()).collect();
    assert_eq!(inputs, vec![json!(1), json!(2)]);
    let updates: Vec<(&str, &str)> = jobs
        .updates
        .iter()
        .map(|u| (u.update_id.as_str(), u.name.as_str()))
        .collect();
    assert_eq!(updates, vec![("u-1", "rename")]);
    assert_eq!(
        store.update_outcome(&new_id, "u-1").await.expect("outcome"),
        None,
        "received, not yet answered"
    );
    assert_eq!(jobs.due_timers.len(), 1, "{jobs:?}");
    let task = store
        .claim_activities("worker", &names(&["charge"]), T0 + 6, LEASE, 1)
        .await
        .expect("claim_activities");
    assert_eq!(task.len(), 1);
    assert_eq!((task[0].run_id.clone(), task[0].seq), (new_id.clone(), 1));
    assert_eq!(claimed_ids(store, "host-b", T0 + 7).await, vec![new_id]);
}
