//! Observability: JSON logs, Prometheus metrics, health endpoints.
//!
//! - [`init_tracing`]: JSON (or pretty) logs; every line inside a request carries its
//!   `request_id`, method and path, and `tenant_id`/`user_id` once the tenancy and auth
//!   layers record them on the span.
//! - [`metrics`]: `http_requests_total` and `http_request_duration_seconds` per route,
//!   rendered at `/metrics`.
//! - [`health`]: `/health/live` and `/health/ready` with the state of each component.

pub mod health;
pub mod metrics;

use axum::extract::Request;
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::{Level, Span};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};

/// Installs the global log subscriber. `RUST_LOG` overrides `log.level`. Calling it twice is
/// harmless (the first call wins), so tests can call it freely.
pub fn init_tracing(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_current_span(true).with_span_list(false).with_target(true))
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())))
            .try_init(),
    };
}

/// Span for one request: `request_id`, `method`, `path`, and empty `tenant_id` and
/// `user_id` for later layers to record.
pub fn request_span(req: &Request) -> Span {
    let request_id = req.headers().get(crate::http::X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!(
        "request",
        request_id,
        method = %req.method(),
        path = req.uri().path(),
        tenant_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
    )
}

type MakeSpan = fn(&Request) -> Span;

/// The tracing layer of [`HttpStack`](crate::http::HttpStack).
pub fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, MakeSpan, (), DefaultOnResponse> {
    TraceLayer::new_for_http()
        .make_span_with(request_span as MakeSpan)
        .on_request(())
        // One line per request costs more than the rest of the stack together, so the access
        // log is opt-in: `log.level = "info,tower_http=debug"`. 5xx are logged at ERROR.
        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
}
