//! Claiming runs, leases and their fencing tokens, parking and releasing.

use super::*;

pub async fn claim_takes_a_new_run_once(store: &dyn Store) {
    let run = Run::start(store, "wf-new", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    assert!(claim.lease_token > 0);
    assert_eq!(
        claim.observed_wakeups, 1,
        "creation is the run's first wake-up"
    );
    assert_eq!(claim.last_seq, 1, "a new run's history is its start");
    assert!(
        claimed_ids(store, "host-b", T0 + 1).await.is_empty(),
        "host-a holds the lease"
    );
}

pub async fn claim_skips_idle_runs_and_future_timers(store: &dyn Store) {
    let mut run = Run::start(store, "wf-idle", T0).await;
    run.activate(store, T0, |run, c| start_timer_in(run, c, 1, T0 + 5_000))
        .await;
    assert_not_claimable(store, T0 + 1, "an idle run with a future timer").await;
    assert_not_claimable(store, T0 + 4_999, "one ms before the timer").await;
    assert!(
        store
            .pending_jobs(&run.id, T0 + 4_999)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
    let claim = claim_only(store, "host-a", T0 + 5_000, &run).await;
    assert_eq!(
        claim.last_seq,
        run.history.len() as u64,
        "the claim tells where the history ends"
    );
    let jobs = store
        .pending_jobs(&run.id, T0 + 5_000)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.due_timers.len(), 1);
    assert_eq!(
        (jobs.due_timers[0].seq, jobs.due_timers[0].fire_at_ms),
        (1, T0 + 5_000)
    );
    let mut commit = run.commit(&claim, vec![Event::TimerFired { seq: 1 }], T0 + 5_000);
    commit.removed_timers = vec![1];
    run.apply(store, commit).await;
    assert_not_claimable(store, T0 + 10_000, "the fired timer is gone").await;
}

pub async fn claim_takes_a_signalled_run(store: &dyn Store) {
    let mut run = Run::start(store, "wf-signalled", T0).await;
    run.activate(store, T0, |_, _| {}).await;
    assert_not_claimable(store, T0 + 1, "an idle run").await;
    store
        .send_signal(&run.id, "approve", json!({"ok": true}), T0 + 2, 2_000)
        .await
        .expect("send_signal");
    let claim = claim_only(store, "host-a", T0 + 3, &run).await;
    assert_eq!(claim.observed_wakeups, 2);
}

pub async fn claim_returns_each_run_once(store: &dyn Store) {
    let mut run = Run::start(store, "wf-many-reasons", T0).await;
    run.activate(store, T0, |run, c| {
        for seq in 1..=3 {
            start_timer_in(run, c, seq, T0 + 10);
        }
    })
    .await;
    store
        .send_signal(&run.id, "poke", Value::Null, T0 + 1, 2_000)
        .await
        .expect("send_signal");
    let claims = store
        .claim_runs("host-a", T0 + 20, LEASE, 10)
        .await
        .expect("claim_runs");
    assert_eq!(
        claims.len(),
        1,
        "three due timers and a signal make one claim: {claims:?}"
    );
    assert_eq!(claims[0].run_id, run.id);
}

pub async fn claim_waits_for_another_hosts_lease_to_expire(store: &dyn Store) {
    let run = Run::start(store, "wf-lease", T0).await;
    let a = store
        .claim_runs("host-a", T0, 1_000, 10)
        .await
        .expect("claim_runs");
    assert_eq!(a.len(), 1);
    assert!(
        claimed_ids(store, "host-b", T0 + 999).await.is_empty(),
        "host-a's lease still holds"
    );
    let b = store
        .claim_runs("host-b", T0 + 1_000, 1_000, 10)
        .await
        .expect("claim_runs");
    assert_eq!(b.len(), 1, "the lease expired");
    assert_eq!(b[0].run_id, run.id);
    assert!(
        b[0].lease_token > a[0].lease_token,
        "the new lease fences the old one"
    );
}

pub async fn a_run_in_activation_is_not_claimed_again_by_its_host(store: &dyn Store) {
    let run = Run::start(store, "wf-own", T0).await;
    let first = claim_only(store, "host-a", T0, &run).await;
    let again = store
        .claim_runs("host-a", T0 + 10, LEASE, 10)
        .await
        .expect("claim_runs");
    assert!(
        again.is_empty(),
        "a live lease is not claimed twice, even by its holder"
    );
    let commit = run.commit(&first, Vec::new(), T0 + 11);
    store
        .commit_activation(commit)
        .await
        .expect("the only claim commits");
}

pub async fn claims_take_the_longest_woken_runs_first(store: &dyn Store) {
    let late = Run::start(store, "wf-late", T0 + 50).await;
    let early = Run::start(store, "wf-early", T0).await;
    let first = store
        .claim_runs("host-a", T0 + 100, LEASE, 1)
        .await
        .expect("claim_runs");
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].run_id, early.id,
        "the run woken first is claimed first"
    );
    let second = store
        .claim_runs("host-a", T0 + 100, LEASE, 1)
        .await
        .expect("claim_runs");
    assert_eq!(second[0].run_id, late.id);
}

pub async fn claim_honours_the_limit(store: &dyn Store) {
    for i in 0..3 {
        Run::start(store, &format!("wf-limit-{i}"), T0).await;
    }
    let first = store
        .claim_runs("host-a", T0, LEASE, 2)
        .await
        .expect("claim_runs");
    assert_eq!(first.len(), 2);
    let second = store
        .claim_runs("host-b", T0, LEASE, 2)
        .await
        .expect("claim_runs");
    assert_eq!(second.len(), 1);
    assert!(!first.iter().any(|c| c.run_id == second[0].run_id));
    assert!(
        store
            .claim_runs("host-c", T0, LEASE, 2)
            .await
            .expect("claim_runs")
            .is_empty()
    );
}

pub async fn park_run_makes_the_run_stuck(store: &dyn Store) {
    let run = Run::start(store, "wf-park", T0).await;
    let old = store
        .claim_runs("host-a", T0, 1_000, 1)
        .await
        .expect("claim_runs")
        .remove(0);
    let claim = store
        .claim_runs("host-b", T0 + 1_000, LEASE, 1)
        .await
        .expect("claim_runs")
        .remove(0);
    let reason =
        json!({"event": 2, "recorded": "activity_scheduled charge", "issued": "timer_started"});
    assert!(
        is_conflict(
            &store
                .park_run(&run.id, old.lease_token, reason.clone())
                .await
        ),
        "a lost lease cannot park"
    );
    store
        .park_run(&run.id, claim.lease_token, reason.clone())
        .await
        .expect("park_run");
    let record = store.run(&run.id).await.expect("run");
    assert_eq!(record.status, RunStatus::Stuck);
    assert_eq!(record.stuck, Some(reason));
    store
        .send_signal(&run.id, "still-open", Value::Null, T0 + 1_001, 2_000)
        .await
        .expect("a stuck run is open");
    assert_not_claimable(store, T0 + 1_000_000, "a stuck run").await;
    let commit = Run {
        id: run.id.clone(),
        history: run.history.clone(),
    }
    .commit(&claim, Vec::new(), T0 + 1_002);
    assert!(
        is_conflict(&store.commit_activation(commit).await),
        "a parked run takes no commit"
    );
}

pub async fn release_run_frees_the_lease(store: &dyn Store) {
    let run = Run::start(store, "wf-release", T0).await;
    let a = claim_only(store, "host-a", T0, &run).await;
    store
        .release_run(&run.id, a.lease_token)
        .await
        .expect("release_run");
    let b = claim_only(store, "host-b", T0 + 1, &run).await;
    assert!(b.lease_token > a.lease_token);
    assert!(
        is_conflict(&store.release_run(&run.id, a.lease_token).await),
        "a stale token releases nothing"
    );
    assert!(
        claimed_ids(store, "host-c", T0 + 2).await.is_empty(),
        "host-b still holds the lease"
    );
}

/// Not spelled out by the traits: a wake-up whose job an earlier activation
/// already consumed leaves nothing to do; releasing then settles the run
/// instead of leaving it claimable forever.
pub async fn release_after_an_empty_wake_up_settles_the_run(store: &dyn Store) {
    let mut run = Run::start(store, "wf-empty-wake", T0).await;
    run.activate(store, T0, |_, _| {}).await;
    store
        .send_signal(&run.id, "s1", json!(1), T0 + 1, 2_000)
        .await
        .expect("send_signal");
    let claim = claim_only(store, "host-a", T0 + 2, &run).await;
    // A second signal arrives between the claim and the read, and is consumed with the first.
    store
        .send_signal(&run.id, "s2", json!(2), T0 + 3, 2_000)
        .await
        .expect("send_signal");
    let jobs = store
        .pending_jobs(&run.id, T0 + 4)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.signals.len(), 2);
    let mut commit = run.commit(
        &claim,
        vec![
            Event::SignalReceived {
                name: "s1".into(),
                input: json!(1),
            },
            Event::SignalReceived {
                name: "s2".into(),
                input: json!(2),
            },
        ],
        T0 + 4,
    );
    commit.consumed_signals = jobs.signals.iter().map(|s| s.id).collect();
    run.apply(store, commit).await;
    // The second wake-up is still counted, so the run is claimed once more, finds nothing, and releases.
    let claim = claim_only(store, "host-a", T0 + 5, &run).await;
    assert!(
        store
            .pending_jobs(&run.id, T0 + 5)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
    store
        .release_run(&run.id, claim.lease_token)
        .await
        .expect("release_run");
    assert_not_claimable(store, T0 + 6, "nothing is waiting").await;
    // A new signal still wakes it.
    store
        .send_signal(&run.id, "s3", json!(3), T0 + 7, 2_000)
        .await
        .expect("send_signal");
    claim_only(store, "host-a", T0 + 8, &run).await;
}

pub async fn reclaim_leases_frees_and_fences(store: &dyn Store) {
    let mut one = Run::start(store, "wf-r1", T0).await;
    one.schedule(store, T0, 1, "charge", ActivityOptions::default())
        .await;
    let two = Run::start(store, "wf-r2", T0 + 1).await;
    store
        .send_signal(&one.id, "wake", Value::Null, T0 + 2, 2_000)
        .await
        .expect("send_signal");
    let held = store
        .claim_runs("host-a", T0 + 3, LEASE, 10)
        .await
        .expect("claim_runs");
    assert_eq!(held.len(), 2);
    let task = store
        .claim_activities("host-a", &names(&["charge"]), T0 + 3, LEASE, 10)
        .await
        .expect("claim");
    assert_eq!(task.len(), 1);
    assert_eq!(
        store
            .reclaim_leases("host-b")
            .await
            .expect("reclaim_leases"),
        0,
        "host-b holds nothing"
    );

    assert_eq!(
        store
            .reclaim_leases("host-a")
            .await
            .expect("reclaim_leases"),
        3,
        "two runs and one attempt"
    );
    let mut taken = store
        .claim_runs("host-b", T0 + 4, LEASE, 10)
        .await
        .expect("claim_runs");
    taken.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    assert_eq!(taken.len(), 2, "the runs are free at once");
    for claim in &taken {
        let old = held
            .iter()
            .find(|h| h.run_id == claim.run_id)
            .expect("same runs");
        assert!(
            claim.lease_token > old.lease_token + 1,
            "reclaiming raised the token before the new claim"
        );
        let run = if claim.run_id == one.id { &one } else { &two };
        assert!(
            is_conflict(
                &store
                    .commit_activation(run.commit(old, Vec::new(), T0 + 5))
                    .await
            ),
            "the old lease is fenced"
        );
    }
    let again = store
        .claim_activities("host-b", &names(&["charge"]), T0 + 4, LEASE, 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1, "the lost attempt is claimable at once");
    assert_eq!(again[0].attempt, 2);
    let late = store
        .finish_attempt(
            &one.id,
            1,
            task[0].lease_token,
            AttemptOutcome::Completed { output: json!(0) },
            T0 + 6,
        )
        .await;
    assert!(is_conflict(&late), "the old attempt is fenced");
    assert_eq!(
        store
            .reclaim_leases("host-a")
            .await
            .expect("reclaim_leases"),
        0
    );
}

pub async fn next_timer_at_and_next_activity_at(store: &dyn Store) {
    assert_eq!(store.next_timer_at().await.expect("next_timer_at"), None);
    assert_eq!(
        store
            .next_activity_at(&names(&["x"]))
            .await
            .expect("next_activity_at"),
        None
    );
    let mut early = Run::start(store, "wf-early", T0).await;
    let mut late = Run::start(store, "wf-late", T0).await;
    let mut claims = store
        .claim_runs("host-a", T0, LEASE, 10)
        .await
        .expect("claim_runs");
    claims.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    let claim_of = |run: &Run| {
        claims
            .iter()
            .find(|c| c.run_id == run.id)
            .cloned()
            .expect("claimed")
    };
    let mut commit = early.commit(&claim_of(&early), Vec::new(), T0);
    start_timer_in(&early, &mut commit, 1, T0 + 1_000);
    schedule_in(&early, &mut commit, 2, "x", ActivityOptions::default());
    commit.new_activities[0].visible_at_ms = T0 + 700;
    early.apply(store, commit).await;
    let mut commit = late.commit(&claim_of(&late), Vec::new(), T0);
    start_timer_in(&late, &mut commit, 1, T0 + 2_000);
    schedule_in(&late, &mut commit, 2, "x", ActivityOptions::default());
    commit.new_activities[0].visible_at_ms = T0 + 900;
    late.apply(store, commit).await;
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 1_000)
    );
    assert_eq!(
        store
            .next_activity_at(&names(&["x"]))
            .await
            .expect("next_activity_at"),
        Some(T0 + 700)
    );
    assert_eq!(
        store
            .next_activity_at(&names(&["y"]))
            .await
            .expect("next_activity_at"),
        None
    );
    assert!(
        store
            .claim_activities("w", &names(&["x"]), T0 + 699, 1_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );

    // Parking the early run leaves only the late run's timer to wait for.
    store
        .send_signal(&early.id, "wake", Value::Null, T0 + 1, 2_000)
        .await
        .expect("send_signal");
    let claim = claim_only(store, "host-a", T0 + 2, &early).await;
    store
        .park_run(&early.id, claim.lease_token, json!("parked"))
        .await
        .expect("park_run");
    assert_eq!(
        store.next_timer_at().await.expect("next_timer_at"),
        Some(T0 + 2_000)
    );
}

pub async fn concurrent_run_claims_never_share_a_run(store: &dyn Store) {
    const RUNS: usize = 24;
    let mut runs = std::collections::BTreeMap::new();
    for i in 0..RUNS {
        let run = Run::start(store, &format!("wf-race-{i}"), T0).await;
        runs.insert(run.id.clone(), run);
    }
    let runs = &runs;
    // Each host activates what it claims at once, so that it does not take its own runs again.
    let hosts = (0..4).map(|h| async move {
        let host = format!("host-{h}");
        let mut mine = Vec::new();
        loop {
            let claims = store
                .claim_runs(&host, T0, LEASE, 3)
                .await
                .expect("claim_runs");
            if claims.is_empty() {
                return mine;
            }
            for claim in claims {
                let run = &runs[&claim.run_id];
                store
                    .commit_activation(run.commit(&claim, Vec::new(), T0))
                    .await
                    .expect("commit_activation");
                mine.push(claim.run_id);
            }
        }
    });
    let claimed: Vec<RunId> = futures::future::join_all(hosts)
        .await
        .into_iter()
        .flatten()
        .collect();
    let distinct: BTreeSet<RunId> = claimed.iter().cloned().collect();
    assert_eq!(
        claimed.len(),
        distinct.len(),
        "a run was claimed twice: {claimed:?}"
    );
    assert_eq!(distinct, runs.keys().cloned().collect::<BTreeSet<_>>());
}
