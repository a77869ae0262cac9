//! The conformance suite every [`Cache`] adapter must pass.
//!
//! ```ignore
//! #[tokio::test]
//! async fn my_cache_conforms() {
//!     saas_core::cache::conformance::run(&MyCache::new()).await;
//! }
//! ```
//! Keys are prefixed with a random id, so the suite can run against a shared server.

use std::{sync::Arc, time::Duration};

use super::Cache;

/// Runs every check; panics with a message naming the first that fails.
pub async fn run(cache: &dyn Cache) {
    let p = format!("conformance:{}:", uuid::Uuid::now_v7());
    let k = |name: &str| format!("{p}{name}");
    let long = Duration::from_secs(60);

    cache.ping().await.expect("ping");
    assert_eq!(cache.get(&k("missing")).await.unwrap(), None, "a missing key reads as None");

    cache.set(&k("a"), b"one", long).await.unwrap();
    assert_eq!(cache.get(&k("a")).await.unwrap().as_deref(), Some(&b"one"[..]), "set then get");
    cache.set(&k("a"), b"two", long).await.unwrap();
    assert_eq!(cache.get(&k("a")).await.unwrap().as_deref(), Some(&b"two"[..]), "set replaces");
    cache.delete(&k("a")).await.unwrap();
    assert_eq!(cache.get(&k("a")).await.unwrap(), None, "delete removes");
    cache.delete(&k("never-set")).await.expect("deleting a missing key is fine");

    let binary = [0u8, 159, 146, 150, 255];
    cache.set(&k("bin"), &binary, long).await.unwrap();
    assert_eq!(cache.get(&k("bin")).await.unwrap().as_deref(), Some(&binary[..]), "binary values round-trip");

    cache.set(&k("short"), b"x", Duration::from_millis(150)).await.unwrap();
    assert!(cache.get(&k("short")).await.unwrap().is_some(), "present before its ttl");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cache.get(&k("short")).await.unwrap(), None, "gone after its ttl");

    assert!(cache.set_if_absent(&k("once"), b"first", long).await.unwrap(), "set_if_absent on a free key");
    assert!(!cache.set_if_absent(&k("once"), b"second", long).await.unwrap(), "set_if_absent on a taken key");
    assert_eq!(cache.get(&k("once")).await.unwrap().as_deref(), Some(&b"first"[..]), "the first value stays");
    cache.set_if_absent(&k("brief"), b"x", Duration::from_millis(150)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(cache.set_if_absent(&k("brief"), b"y", long).await.unwrap(), "an expired key is free again");

    assert_eq!(cache.increment(&k("n"), 1, long).await.unwrap(), 1, "a counter starts at 0");
    assert_eq!(cache.increment(&k("n"), 5, long).await.unwrap(), 6);
    assert_eq!(cache.increment(&k("n"), -2, long).await.unwrap(), 4, "negative deltas");
    assert_eq!(cache.get(&k("n")).await.unwrap().as_deref(), Some(&b"4"[..]), "counters read as decimal text");

    cache.increment(&k("window"), 1, Duration::from_millis(300)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    cache.increment(&k("window"), 1, Duration::from_millis(300)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get(&k("window")).await.unwrap(), None, "increments do not extend a counter's expiry");

    // Concurrency: atomic increments and a single winner of set_if_absent.
    let shared: Arc<str> = Arc::from(k("race"));
    let winners: Vec<bool> = futures::future::join_all((0..20).map(|i| {
        let key = shared.clone();
        async move { cache.set_if_absent(&key, format!("{i}").as_bytes(), long).await.unwrap() }
    }))
    .await;
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "exactly one concurrent set_if_absent wins");

    let counter = k("concurrent");
    let results: Vec<i64> = futures::future::join_all((0..50).map(|_| cache.increment(&counter, 1, long)))
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let mut sorted = results.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=50).collect::<Vec<_>>(), "50 concurrent increments each see a distinct value");
}
