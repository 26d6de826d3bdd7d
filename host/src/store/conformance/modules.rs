//! Deployed modules.

use super::*;

pub async fn modules_are_stored_once_by_sha256(store: &dyn Store) {
    assert!(store.modules().await.expect("modules").is_empty());
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let first = store
        .put_module("shop", "1.0.0", &bytes, T0)
        .await
        .expect("put_module");
    assert_eq!(first.sha256, Sha256Hex::of(&bytes));
    assert_eq!(
        (first.name.as_str(), first.version.as_str()),
        ("shop", "1.0.0")
    );
    assert_eq!((first.size, first.created_at_ms), (70_000, T0));
    let again = store
        .put_module("shop", "9.9.9", &bytes, T0 + 5)
        .await
        .expect("put_module");
    assert_eq!(again, first, "the same bytes twice return the first record");
    assert_eq!(
        store
            .module_bytes(&first.sha256)
            .await
            .expect("module_bytes"),
        bytes
    );
    let other = store
        .put_module("shop", "2.0.0", b"\0asm other", T0 + 10)
        .await
        .expect("put_module");
    assert_eq!(store.modules().await.expect("modules"), vec![first, other]);
    assert!(is_not_found(
        &store.module_bytes(&Sha256Hex::of(b"never deployed")).await
    ));
}
