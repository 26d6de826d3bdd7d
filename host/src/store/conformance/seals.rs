//! Seals: a closed run's head, signed and kept once.

use super::*;
use crate::store::{GarbageRequest, Seal};

fn seal_of(run: &Run, event_count: u64, now_ms: u64) -> Seal {
    Seal {
        event_count,
        head: run.history.events()[event_count as usize - 1].hash,
        public_key: "ab".repeat(32),
        signature: "cd".repeat(64),
        sealed_at_ms: now_ms,
    }
}

pub async fn a_closed_run_is_sealed_once_and_collected_with_its_seal(store: &dyn Store) {
    let mut run = Run::start(store, "wf-sealed", T0).await;
    let claim = claim_only(store, "host-a", T0 + 1, &run).await;
    let mut commit = run.commit(
        &claim,
        vec![Event::WorkflowCompleted { output: json!(1) }],
        T0 + 1,
    );
    commit.outcome = RunOutcome::Completed { output: json!(1) };
    run.apply(store, commit).await;
    let open = Run::start(store, "wf-unsealed-open", T0 + 1).await;
    assert_eq!(
        store.unsealed_runs(10).await.expect("unsealed_runs"),
        vec![run.id.clone()],
        "closed runs are sealed, open ones are not"
    );

    let count = run.history.len() as u64;
    let short = seal_of(&run, count - 1, T0 + 2);
    assert!(
        !store.put_seal(&run.id, &short).await.expect("put_seal"),
        "a seal must cover the whole closed history"
    );
    assert!(
        !store
            .put_seal(&open.id, &seal_of(&open, 1, T0 + 2))
            .await
            .expect("put_seal"),
        "an open run is not sealed"
    );
    let seal = seal_of(&run, count, T0 + 2);
    assert!(store.put_seal(&run.id, &seal).await.expect("put_seal"));
    let later = Seal {
        sealed_at_ms: T0 + 3,
        ..seal.clone()
    };
    assert!(
        !store.put_seal(&run.id, &later).await.expect("put_seal"),
        "the first seal stays"
    );
    assert_eq!(store.seal(&run.id).await.expect("seal"), Some(seal));
    assert_eq!(store.seal(&open.id).await.expect("seal"), None);
    assert!(
        store
            .unsealed_runs(10)
            .await
            .expect("unsealed_runs")
            .is_empty(),
        "nothing left to seal"
    );

    store
        .collect_garbage(GarbageRequest {
            closed_before_ms: T0 + 10,
            limit: None,
            dry_run: false,
        })
        .await
        .expect("collect_garbage");
    assert_eq!(
        store.seal(&run.id).await.expect("seal"),
        None,
        "a collected run's seal goes with it"
    );
}
