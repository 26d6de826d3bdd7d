//! The hosts' shared secrets: one task-token key per database, random,
//! the same for every open of it and every host racing to make it.

use super::*;

/// Every open of one database (another host, or this one restarted) gets
/// the same task-token key, even when they ask for it first at once; it
/// is 32 random bytes.
pub async fn one_task_token_key_per_database<F: Fixture>(fixture: &F) {
    let store = fixture.store();
    let again = fixture.reopen().await;
    // The first asks race: each inserts its own key if there is none,
    // and all must read back the one that won.
    let (first, second, other_open) =
        tokio::join!(store.task_token_key(), store.task_token_key(), async {
            match &again {
                Some(again) => Some(again.task_token_key().await),
                None => None,
            }
        });
    let key = first.expect("task_token_key");
    assert_eq!(
        second.expect("task_token_key"),
        key,
        "two first asks on one store agree"
    );
    if let Some(other_open) = other_open {
        assert_eq!(
            other_open.expect("task_token_key on a second open"),
            key,
            "a second open of the database, asking at the same time, gets the same key"
        );
    }
    assert_eq!(
        store.task_token_key().await.expect("task_token_key"),
        key,
        "the key stays"
    );
    drop(again);
    if let Some(later) = fixture.reopen().await {
        assert_eq!(
            later
                .task_token_key()
                .await
                .expect("task_token_key after a reopen"),
            key,
            "a later open (a restarted host) gets the same key"
        );
    }
    assert_ne!(key, [0u8; 32], "the key is not zeros");
    // 32 bytes from a good source have about 30 distinct values; fewer
    // than 16 has a probability far below 1e-20.
    let distinct: BTreeSet<u8> = key.iter().copied().collect();
    assert!(
        distinct.len() >= 16,
        "the key looks made, not random: {} distinct bytes",
        distinct.len()
    );
}
