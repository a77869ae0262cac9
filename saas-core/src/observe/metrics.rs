//! Prometheus metrics.
//!
//! The recorder is installed once per process by [`handle`]; every crate records with the
//! `metrics` macros. HTTP metrics are labelled by route template (`/v1/tenants/{id}`), never
//! by raw path, so label cardinality stays bounded.

use std::{sync::OnceLock, time::Instant};

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
    method: SharedString,
    route: SharedString,
}

impl RequestLabels {
    pub(crate) fn of<B>(req: &http::Request<B>) -> Self {
        let route = match req.extensions().get::<MatchedPath>() {
            Some(path) => path.as_str().to_owned().into(),
            None => SharedString::const_str("unmatched"),
        };
        Self { method: method_label(req.method()), route }
    }

    /// Counts the request and records its duration.
    pub(crate) fn record(self, status: http::StatusCode, start: Instant) {
        let status: SharedString = status.as_str().to_owned().into();
        metrics::counter!("http_requests_total", "method" => self.method.clone(), "route" => self.route.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("http_request_duration_seconds", "method" => self.method, "route" => self.route)
            .record(start.elapsed().as_secs_f64());
    }
}

fn method_label(method: &http::Method) -> SharedString {
    const KNOWN: [&str; 9] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT"];
    match KNOWN.iter().find(|m| **m == method.as_str()) {
        Some(m) => SharedString::const_str(m),
        // Arbitrary extension methods would be unbounded label values.
        None => SharedString::const_str("OTHER"),
    }
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
