//! One error type for every crate, rendered as RFC 9457 `application/problem+json`.
//!
//! Domain crates keep their own error enums and convert into [`Error`] in one place. An
//! [`Error`] carries an HTTP status, a stable machine `code` (clients switch on it; it never
//! changes once published), a human `detail`, optional field errors, and for 5xx an internal
//! cause that is logged with the request id and never sent.
//!
//! ```
//! use saas_core::error::{Error, FieldError};
//!
//! let e = Error::not_found("tenant_not_found", "no tenant `acme`");
//! assert_eq!(e.status(), http::StatusCode::NOT_FOUND);
//!
//! let e = Error::validation([FieldError::new("slug", "too_short", "at least 3 characters")]);
//! assert_eq!(e.code(), "validation_failed");
//! ```

use std::{borrow::Cow, time::Duration};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `owner.email` or `items[2].quantity`.
    pub field: String,
    /// Stable machine code, e.g. `required`, `invalid_type`, `too_long`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), code: code.into(), message: message.into() }
    }
}

/// The body of every error response (RFC 9457 problem details plus `code` and `errors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI reference naming the problem type: `/problems/{code}`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the problem type (the HTTP reason phrase).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation of this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine code.
    pub code: String,
    /// Field errors of a `validation_failed` problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem body for `status` with `code`.
    pub fn new(status: StatusCode, code: &str, detail: Option<String>) -> Self {
        Self {
            type_uri: format!("/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            errors: Vec::new(),
        }
    }
}

/// An error that becomes a problem+json response.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {detail}")]
pub struct Error {
    status: StatusCode,
    code: Cow<'static, str>,
    detail: String,
    errors: Vec<FieldError>,
    retry_after: Option<Duration>,
    #[source]
    source: Option<anyhow::Error>,
}

impl Error {
    /// An error with any status; prefer the named constructors.
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self { status, code: code.into(), detail: detail.into(), errors: Vec::new(), retry_after: None, source: None }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401: missing or invalid credentials.
    pub fn unauthorized(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }

    /// 404: no such resource (also used to avoid confirming that another tenant's exists).
    pub fn not_found(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// 422 `validation_failed` listing every invalid field.
    pub fn validation(errors: impl IntoIterator<Item = FieldError>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "the request has invalid fields");
        e.errors = errors.into_iter().collect();
        e
    }

    /// 429 `rate_limited`, with `Retry-After`.
    pub fn too_many_requests(retry_after: Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; retry after the time in Retry-After",
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 503: a dependency is down or the server is shedding load.
    pub fn unavailable(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }

    /// 500 with an internal cause that is logged, never sent.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; quote the X-Request-Id response header when reporting it",
        );
        e.source = Some(cause.into());
        e
    }

    /// Whether this is the server declining work on purpose rather than failing: a 503
    /// with `Retry-After` and no internal cause (`auth_busy` during a login flood, say). A
    /// 503 for a dependency that is down carries its cause, and is a failure.
    pub fn is_shed(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE && self.retry_after.is_some() && self.source.is_none()
    }

    /// Adds a `Retry-After` header to the response.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Attaches an internal cause (logged, never sent).
    pub fn with_source(mut self, cause: impl Into<anyhow::Error>) -> Self {
        self.source = Some(cause.into());
        self
    }

    /// How long the client should wait (`Retry-After`), when set.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable machine code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The field errors of a validation error.
    pub fn field_errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// The internal cause if there is one, else this error: for command-line tools, which
    /// show operators the cause a client is never sent.
    pub fn into_cause(self) -> anyhow::Error {
        match self.source {
            Some(cause) => cause,
            None => anyhow::Error::new(self),
        }
    }

    /// The problem body this error renders as.
    pub fn to_problem(&self) -> Problem {
        let mut p = Problem::new(self.status, &self.code, Some(self.detail.clone()));
        p.errors = self.errors.clone();
        p
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if unreachable(&e) {
            Self::unavailable("database_unavailable", "the database is not reachable")
                .with_retry_after(Duration::from_secs(1))
                .with_source(e)
        } else {
            Self::internal(e)
        }
    }
}

/// Whether `e` says the database cannot be reached now and a retry may succeed: no free
/// connection in time, the pool closed, or the connection lost (see [`connection_lost`]).
fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| connection_lost(&code)),
        _ => false,
    }
}

/// Whether a database error's SQLSTATE says the connection is gone: class 08 (connection
/// exception) except `08007` (the transaction's outcome is unknown, so a retry could do
/// its writes twice), an operator or the server ending the session (`57P01`, `57P02`,
/// `57P05`: idle too long) or a server still starting (`57P03`).
fn connection_lost(sqlstate: &str) -> bool {
    (sqlstate.starts_with("08") && sqlstate != "08007") || matches!(sqlstate, "57P01" | "57P02" | "57P03" | "57P05")
}

/// A response extension on the 503s a server answers when it declines work on purpose
/// ([`Error::is_shed`]): the stack's edge logs them at DEBUG, with the access log, rather
/// than as failures, so that a flood does not flood the log too. Metrics count them by
/// status as any other.
#[derive(Debug, Clone, Copy)]
pub struct Shed;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let shed = self.is_shed();
        if self.status.is_server_error() && !shed {
            match &self.source {
                // `{:#}` prints the whole cause chain on one line.
                Some(cause) => tracing::error!(code = %self.code, error = format!("{cause:#}"), "request failed"),
                None => tracing::error!(code = %self.code, detail = %self.detail, "request failed"),
            }
        }
        let mut response = problem_response(&self.to_problem());
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if shed {
            response.extensions_mut().insert(Shed);
        }
        response
    }
}

/// Renders a problem body with its status and `Content-Type: application/problem+json`.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(e: Error) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let r = e.into_response();
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let cause = anyhow::anyhow!("connection to 10.0.0.7:5432 refused").context("SELECT * FROM users");
        let (status, headers, json) = body(Error::internal(cause)).await;
        assert_eq!(status, 500);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
        let text = json.to_string();
        assert!(!text.contains("10.0.0.7") && !text.contains("SELECT"), "{text}");
        assert_eq!(json["code"], "internal_error");
        assert_eq!(json["type"], "/problems/internal_error");
    }

    #[tokio::test]
    async fn validation_lists_fields_and_rate_limit_sets_retry_after() {
        let (status, _, json) = body(Error::validation([FieldError::new("slug", "too_short", "min 3")])).await;
        assert_eq!(status, 422);
        assert_eq!(json["errors"][0]["field"], "slug");
        assert_eq!(json["title"], "Unprocessable Entity");

        let (status, headers, _) = body(Error::too_many_requests(Duration::from_millis(1500))).await;
        assert_eq!(status, 429);
        assert_eq!(headers[header::RETRY_AFTER], "2");
    }

    #[tokio::test]
    async fn a_lost_database_connection_is_a_retryable_503() {
        let lost = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let (status, headers, json) = body(Error::from(lost)).await;
        assert_eq!(status, 503);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(json["code"], "database_unavailable");

        for sqlstate in ["08006", "08003", "57P01", "57P02", "57P03", "57P05"] {
            assert!(connection_lost(sqlstate), "{sqlstate}");
        }
        // A constraint or a syntax error is no reason to retry, nor a commit whose outcome
        // is unknown.
        for sqlstate in ["23505", "42601", "57014", "08007"] {
            assert!(!connection_lost(sqlstate), "{sqlstate}");
        }
        let (status, _, _) = body(Error::from(sqlx::Error::RowNotFound)).await;
        assert_eq!(status, 500);
    }
}
