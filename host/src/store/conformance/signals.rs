//! The signal inbox.

use super::*;

pub async fn signal_during_an_activation_keeps_the_run_runnable(store: &dyn Store) {
    let mut run = Run::start(store, "wf-mid", T0).await;
    let claim = claim_only(store, "host-a", T0, &run).await;
    let jobs = store.pending_jobs(&run.id, T0).await.expect("pending_jobs");
    assert!(jobs.is_empty());
    let id = store
        .send_signal(&run.id, "poke", json!(1), T0 + 1, 2_000)
        .await
        .expect("send_signal");
    let commit = run.commit(&claim, Vec::new(), T0 + 2);
    run.apply(store, commit).await;
    let claim = claim_only(store, "host-a", T0 + 3, &run).await;
    assert_eq!(claim.observed_wakeups, 2);
    let jobs = store
        .pending_jobs(&run.id, T0 + 3)
        .await
        .expect("pending_jobs");
    assert_eq!(jobs.signals.len(), 1);
    assert_eq!(
        (jobs.signals[0].id, jobs.signals[0].name.as_str()),
        (id, "poke")
    );
}

pub async fn signal_to_closed_or_unknown_run_is_not_found(store: &dyn Store) {
    assert!(is_not_found(
        &store
            .send_signal(&RunId::from("nobody"), "x", Value::Null, T0, 2_000)
            .await
    ));
    let mut run = Run::start(store, "wf-closed", T0).await;
    run.activate(store, T0, |run, c| {
        add_events(
            run,
            c,
            vec![Event::WorkflowCompleted {
                output: Value::Null,
            }],
        );
        c.outcome = RunOutcome::Completed {
            output: Value::Null,
        };
    })
    .await;
    match store
        .send_signal(&run.id, "x", Value::Null, T0 + 1, 2_000)
        .await
    {
        Err(StoreError::NotFound { what }) => {
            assert!(what.contains(run.id.as_str()), "names the run: {what}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(
        store
            .pending_jobs(&run.id, T0 + 2)
            .await
            .expect("pending_jobs")
            .is_empty()
    );
}
