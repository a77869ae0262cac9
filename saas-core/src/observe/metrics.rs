//! Prometheus metrics.
//!
//! The recorder is installed once per process by [`handle`]; every crate records with the
//! `metrics` macros. HTTP metrics are labelled by route template (`/v1/tenants/{id}`), never
//! by raw path, so label cardinality stays bounded.

use std::{
    collections::HashMap,
    sync::{OnceLock, RwLock},
    time::Instant,
};

use axum::{extract::MatchedPath, response::IntoResponse};
use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const DURATION_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The process's Prometheus recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("http_request_duration_seconds".into()), &DURATION_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by the application); then its
        // metrics go there and this handle renders only what it saw.
        let _ = metrics::set_global_recorder(recorder);
        // Histogram samples queue up until drained into their buckets; without this they
        // would grow with every request between scrapes (or forever, with no scraper).
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        });
        handle
    })
}

/// The method and route labels of one request.
pub(crate) struct RequestLabels {
    method: &'static str,
    route: Option<MatchedPath>,
}

impl RequestLabels {
    pub(crate) fn of<B>(req: &http::Request<B>) -> Self {
        Self { method: method_label(req.method()), route: req.extensions().get::<MatchedPath>().cloned() }
    }

    /// Counts the request and records its duration.
    pub(crate) fn record(self, status: http::StatusCode, start: Instant) {
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        with_handles(self.method, status.as_u16(), route, |(requests, duration)| {
            requests.increment(1);
            duration.record(start.elapsed().as_secs_f64());
        });
    }
}

/// The request counter and the duration histogram of a method, status and route.
type Handles = (metrics::Counter, metrics::Histogram);

/// Runs `f` with the handles of `(method, status, route)`, registered on first use. Kept
/// per process: building the labelled keys and looking them up in the recorder's registry
/// on every request cost more than the rest of the metrics.
fn with_handles(method: &'static str, status: u16, route: &str, f: impl FnOnce(&Handles)) {
    type ByRoute = HashMap<Box<str>, Handles>;
    static HANDLES: OnceLock<RwLock<HashMap<(&'static str, u16), ByRoute>>> = OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    if let Some(found) =
        handles.read().unwrap_or_else(|p| p.into_inner()).get(&(method, status)).and_then(|by| by.get(route))
    {
        return f(found);
    }
    let (method_label, route_label) = (SharedString::const_str(method), SharedString::from(route.to_owned()));
    let status_label = SharedString::from(status.to_string());
    let made = (
        metrics::counter!("http_requests_total", "method" => method_label.clone(), "route" => route_label.clone(), "status" => status_label),
        metrics::histogram!("http_request_duration_seconds", "method" => method_label, "route" => route_label),
    );
    f(&made);
    handles.write().unwrap_or_else(|p| p.into_inner()).entry((method, status)).or_default().insert(route.into(), made);
}

fn method_label(method: &http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT"];
    // Arbitrary extension methods would be unbounded label values.
    KNOWN.iter().find(|m| **m == method.as_str()).copied().unwrap_or("OTHER")
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
pub async fn render() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle().render())
}
