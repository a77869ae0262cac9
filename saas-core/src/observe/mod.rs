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
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_target(true)
                    .fmt_fields(AppendingJsonFields::default()),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())))
            .try_init(),
    };
}

/// JSON span fields as tracing-subscriber's `JsonFields` writes them, except that a field
/// recorded later (`tenant_id`, `user_id` on the request span) is appended to the span's
/// rendered fields; `JsonFields` parses and writes them all again, on every request.
/// A field recorded twice appears twice; the last one wins where the line is read.
#[derive(Debug, Default)]
pub struct AppendingJsonFields {
    json: fmt::format::JsonFields,
}

impl<'writer> fmt::FormatFields<'writer> for AppendingJsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        self.json.format_fields(writer, fields)
    }

    fn add_fields(
        &self,
        current: &'writer mut fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut added = String::new();
        self.json.format_fields(fmt::format::Writer::new(&mut added), fields)?;
        let (Some(new_fields), true) = (added.strip_prefix('{').and_then(|a| a.strip_suffix('}')), added.len() > 2)
        else {
            return Ok(());
        };
        let rendered = &mut current.fields;
        if rendered.len() < 2 {
            *rendered = added;
            return Ok(());
        }
        rendered.pop(); // the closing brace
        if rendered.len() > 1 {
            rendered.push(',');
        }
        rendered.push_str(new_fields);
        rendered.push('}');
        Ok(())
    }
}

/// Span for one request: `request_id`, and empty `tenant_id` and `user_id` for later
/// layers to record. Method and path go on the request's own log lines instead: the JSON
/// formatter renders every span field when the span opens, on every request.
pub fn request_span<B>(req: &http::Request<B>) -> Span {
    let request_id = req.headers().get(crate::http::X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", request_id, tenant_id = tracing::field::Empty, user_id = tracing::field::Empty)
}

#[cfg(test)]
mod appending_fields_tests {
    use std::sync::{Arc, Mutex};

    use super::AppendingJsonFields;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fields_recorded_later_appear_on_the_lines_of_the_span() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(AppendingJsonFields::default())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "r-1",
                tenant_id = tracing::field::Empty,
                user_id = tracing::field::Empty
            );
            let _entered = span.enter();
            tracing::info!("before");
            span.record("tenant_id", "ten_1");
            span.record("user_id", "usr_\"q\"");
            tracing::info!("after");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["span"], serde_json::json!({"name": "request", "request_id": "r-1"}));
        assert_eq!(
            lines[1]["span"],
            serde_json::json!({"name": "request", "request_id": "r-1", "tenant_id": "ten_1", "user_id": "usr_\"q\""})
        );
    }
}
