//! Observability: JSON logs, Prometheus metrics, health endpoints.
//!
//! - [`init_tracing`]: JSON (or pretty) logs; every line inside a request carries its
//!   `request_id` (and `tenant_id`/`user_id` once the tenancy and auth layers record them
//!   on the span); the request's own lines add method, path, status and latency.
//! - [`metrics`]: `http_requests_total` and `http_request_duration_seconds` per route,
//!   rendered at `/metrics`.
//! - [`health`]: `/health/live` and `/health/ready` with the state of each component.

pub mod health;
pub mod metrics;

use tracing::Span;
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

/// Span for one request: `request_id`, and empty `tenant_id` and `user_id` for later
/// layers to record. Method and path go on the request's own log lines instead: the JSON
/// formatter renders every span field when the span opens, on every request.
pub fn request_span<B>(req: &http::Request<B>) -> Span {
    let request_id = req.headers().get(crate::http::X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", request_id, tenant_id = tracing::field::Empty, user_id = tracing::field::Empty)
}
