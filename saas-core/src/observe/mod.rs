//! Observability: JSON logs, Prometheus metrics, health endpoints.
//!
//! - [`init_tracing`]: JSON (or pretty) logs; every line inside a request carries its
//!   `request_id` (and `tenant_id`/`user_id` once the tenancy and auth layers record them,
//!   see [`request`]); the request's own lines add method, path, status and latency.
//! - [`metrics`]: `http_requests_total` and `http_request_duration_seconds` per route,
//!   rendered at `/metrics`.
//! - [`health`]: `/health/live` and `/health/ready` with the state of each component.

pub mod health;
pub mod metrics;
pub mod request;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};

/// Installs the global log subscriber. `RUST_LOG` overrides `log.level`. Calling it twice is
/// harmless (the first call wins), so tests can call it freely.
pub fn init_tracing(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_target(true)
                    .with_writer(request::RequestIdsWriter::json(std::io::stdout)),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .compact()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                    .with_writer(request::RequestIdsWriter::text(std::io::stdout)),
            )
            .try_init(),
    };
}
