//! CPU cost of the saas-core layer stack per request, without the network: the same route
//! called through bare axum and through `HttpStack`, in one run.
//!
//! `cargo bench -p saas-core --bench stack`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::{sync::Arc, time::Duration};

use axum::{Json, Router, body::Body, routing::get};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use saas_core::http::{
    HttpStack, IdempotencyLayer, RateLimitLayer,
    rate_limit::{MemoryRateLimiter, Quota},
};
use tower::ServiceExt;

async fn ping() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true, "service": "saas", "n": 42 }))
}

fn bare() -> Router {
    Router::new().route("/v1/ping", get(ping))
}

fn stack(rate_limit: bool) -> Router {
    let mut stack = HttpStack::new().idempotency(IdempotencyLayer::new(
        Arc::new(saas_core::cache::MemoryCache::new(1000)),
        Duration::from_secs(60),
    ));
    if rate_limit {
        let quota = Quota::per_second(1_000_000_000).burst(1_000_000_000);
        stack = stack.rate_limit(RateLimitLayer::new(Arc::new(MemoryRateLimiter::new()), quota));
    }
    stack.apply(bare())
}

fn bench(c: &mut Criterion) {
    tracing_subscriber::fmt()
        .json()
        .with_writer(saas_core::observe::request::RequestIdsWriter::json(std::io::sink))
        .with_max_level(tracing::Level::INFO)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("request");
    for (name, router) in [("bare", bare()), ("stack_without_rate_limit", stack(false)), ("stack", stack(true))] {
        // As `axum::serve` has it: handlers turned into routes (and layers applied) once;
        // a router called as it is does that on every request.
        let router: Router = router.with_state(());
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let router = router.clone();
                async move {
                    let response = router.oneshot(Request::get("/v1/ping").body(Body::empty()).unwrap()).await.unwrap();
                    http_body_util::BodyExt::collect(response.into_body()).await.unwrap()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
