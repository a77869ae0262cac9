//! CPU cost of the saas-core layer stack per request, without the network: the same route
//! called through bare axum and through `HttpStack`, in one run.
//!
//! `cargo bench -p saas-core --bench stack`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::{sync::Arc, time::Duration};

use axum::{Json, Router, body::Body, response::Response, routing::get};
use criterion::{Criterion, criterion_group, criterion_main, measurement::WallTime};
use http::Request;
use saas_core::http::{
    HttpService, HttpStack, IdempotencyLayer, RateLimitLayer,
    rate_limit::{MemoryRateLimiter, Quota},
};
use tower::{Service, ServiceExt};

async fn ping() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true, "service": "saas", "n": 42 }))
}

fn bare() -> Router {
    Router::new().route("/v1/ping", get(ping))
}

fn stack(rate_limit: bool) -> HttpService {
    let mut stack = HttpStack::new().routes(["/v1/ping"]).idempotency(IdempotencyLayer::new(
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
    // As `axum::serve` has it: handlers turned into routes once; a router called as it is
    // does that on every request (`HttpStack::apply` does it too).
    call(&mut group, &rt, "bare", bare().with_state(()));
    call(&mut group, &rt, "stack_without_rate_limit", stack(false));
    call(&mut group, &rt, "stack", stack(true));
    group.finish();
}

/// Measures a call of `GET /v1/ping` on `app`.
fn call<App>(group: &mut criterion::BenchmarkGroup<'_, WallTime>, rt: &tokio::runtime::Runtime, name: &str, app: App)
where
    App: Service<Request<Body>, Response = Response, Error = std::convert::Infallible> + Clone + 'static,
{
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| {
            let app = app.clone();
            async move {
                let response = app.oneshot(Request::get("/v1/ping").body(Body::empty()).unwrap()).await.unwrap();
                http_body_util::BodyExt::collect(response.into_body()).await.unwrap()
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
