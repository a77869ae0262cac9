//! Idempotency-Key: replays byte for byte, refuses concurrent duplicates and reused keys.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, routing::post};
use http::{Request, StatusCode};
use saas_core::{
    cache::{Cache, MemoryCache},
    http::{HttpService, HttpStack, IdempotencyLayer},
};
use tower::ServiceExt;

use crate::read;

fn app(cache: Arc<dyn Cache>, calls: Arc<AtomicU32>) -> HttpService {
    let (c1, c2) = (calls.clone(), calls);
    let c3 = Arc::new(AtomicU32::new(0));
    let routes = Router::new()
        .route(
            "/v1/orders",
            post(move |body: String| async move {
                let n = c1.fetch_add(1, Ordering::SeqCst) + 1;
                (StatusCode::CREATED, [("x-order", n.to_string())], format!("{{\"order\":{n},\"echo\":{body}}}"))
            }),
        )
        .route(
            "/v1/slow",
            post(move || async move {
                c2.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                StatusCode::CREATED
            }),
        )
        .route("/v1/big", post(|| async { vec![b'x'; 2 * 1024 * 1024] }))
        .route(
            "/v1/flaky",
            post(move || async move {
                if c3.fetch_add(1, Ordering::SeqCst) == 0 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::CREATED
                }
            }),
        );
    HttpStack::new().idempotency(IdempotencyLayer::new(cache, Duration::from_secs(60))).apply(routes)
}

fn keyed(uri: &str, key: &str, body: &str) -> Request<Body> {
    Request::post(uri).header("idempotency-key", key).body(Body::from(body.to_owned())).unwrap()
}

async fn suite(cache: Arc<dyn Cache>) {
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(cache, calls.clone());
    let key = uuid::Uuid::now_v7().to_string();

    let (s1, h1, b1) = read(app.clone().oneshot(keyed("/v1/orders", &key, "1")).await.unwrap()).await;
    let (s2, h2, b2) = read(app.clone().oneshot(keyed("/v1/orders", &key, "1")).await.unwrap()).await;
    assert_eq!(s1, 201);
    assert_eq!((s2, &b2), (s1, &b1), "replay returns the first response byte for byte");
    assert_eq!(h2["x-order"], h1["x-order"]);
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");

    let (s, _, b) = read(app.clone().oneshot(keyed("/v1/orders", &key, "2")).await.unwrap()).await;
    assert_eq!(s, 422, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("idempotency_key_reused"));

    // Unique per run: Redis keeps keys between test runs.
    let another = uuid::Uuid::now_v7().to_string();
    let (s, _, _) = read(app.clone().oneshot(keyed("/v1/orders", &another, "1")).await.unwrap()).await;
    assert_eq!(s, 201);
    let (s, _, _) =
        read(app.clone().oneshot(Request::post("/v1/orders").body(Body::from("1")).unwrap()).await.unwrap()).await;
    assert_eq!(s, 201, "requests without a key are not deduplicated");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let (s, _, b) = read(app.clone().oneshot(keyed("/v1/orders", &"k".repeat(300), "1")).await.unwrap()).await;
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&b).contains("invalid_idempotency_key"));

    // Concurrent duplicates: one runs, the other is told to retry.
    let slow_key = uuid::Uuid::now_v7().to_string();
    let (a, b) = tokio::join!(app.clone().oneshot(keyed("/v1/slow", &slow_key, "")), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.clone().oneshot(keyed("/v1/slow", &slow_key, "")).await
    });
    let (sa, _, _) = read(a.unwrap()).await;
    let (sb, hb, bb) = read(b.unwrap()).await;
    assert_eq!(sa, 201);
    assert_eq!(sb, 409);
    assert!(String::from_utf8_lossy(&bb).contains("idempotency_key_in_use"));
    assert!(hb.contains_key("retry-after"));

    // A response too large to store is still answered, and the key is released.
    let big_key = uuid::Uuid::now_v7().to_string();
    for _ in 0..2 {
        let (s, h, b) = read(app.clone().oneshot(keyed("/v1/big", &big_key, "")).await.unwrap()).await;
        assert_eq!((s.as_u16(), b.len()), (200, 2 * 1024 * 1024));
        assert!(!h.contains_key("idempotent-replayed"));
    }

    // A response too large to store is still answered, and the key is released.
    let big_key = uuid::Uuid::now_v7().to_string();
    for _ in 0..2 {
        let (s, h, b) = read(app.clone().oneshot(keyed("/v1/big", &big_key, "")).await.unwrap()).await;
        assert_eq!((s.as_u16(), b.len()), (200, 2 * 1024 * 1024));
        assert!(!h.contains_key("idempotent-replayed"));
    }

    // A 5xx first answer is not stored: the retry runs again.
    let flaky_key = uuid::Uuid::now_v7().to_string();
    let (s, _, _) = read(app.clone().oneshot(keyed("/v1/flaky", &flaky_key, "")).await.unwrap()).await;
    assert_eq!(s, 503);
    let (s, _, _) = read(app.clone().oneshot(keyed("/v1/flaky", &flaky_key, "")).await.unwrap()).await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn idempotency_on_the_memory_cache() {
    suite(Arc::new(MemoryCache::new(1000))).await;
}

#[tokio::test]
#[ignore = "needs redis: run .ci/run or set SAAS_TEST_REDIS_URL"]
async fn idempotency_on_redis() {
    suite(Arc::new(saas_core::cache::RedisCache::connect(&saas_core::testing::redis_url()).await.unwrap())).await;
}

#[tokio::test]
async fn keys_are_scoped_by_the_path_the_client_sent() {
    // A layer before routing may rewrite the path (the `/t/{tenant}` prefix); the same key
    // on two original paths is two requests, not a replay of the other tenant's response.
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(Arc::new(MemoryCache::new(100)), calls.clone());
    for original in ["/t/acme/v1/orders", "/t/globex/v1/orders"] {
        let mut request = keyed("/v1/orders", "k-1", "{}");
        request.extensions_mut().insert(axum::extract::OriginalUri(original.parse().unwrap()));
        assert_eq!(app.clone().oneshot(request).await.unwrap().status(), StatusCode::CREATED);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
