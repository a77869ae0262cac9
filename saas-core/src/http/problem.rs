//! Makes every error response problem+json, including those axum and tower-http produce
//! themselves (unknown route, wrong method, body too large, timeout, panic).

use axum::response::Response;
use http::{StatusCode, header};

use crate::error::{Error, PROBLEM_JSON, Problem, problem_response};

/// Rewrites an error response without a JSON body (axum's and tower-http's empty or
/// plain-text ones) into problem+json, keeping its status and headers such as `Allow` and
/// `Retry-After`. JSON error bodies a handler chose (e.g. `/health/ready`'s 503 report)
/// are left as they are.
pub(crate) fn to_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || has_json_body(&response) {
        return response;
    }
    let (code, detail) = describe(status);
    let (parts, _) = response.into_parts();
    let mut rebuilt = problem_response(&Problem::new(status, code, Some(detail.to_owned())));
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().append(name.clone(), value.clone());
        }
    }
    rebuilt
}

fn has_json_body(response: &Response) -> bool {
    let Some(content_type) =
        super::first_header(response.headers(), &header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(PROBLEM_JSON) || essence.eq_ignore_ascii_case("application/json")
}

fn describe(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("bad_request", "the request is malformed"),
        401 => ("unauthorized", "authentication is required"),
        403 => ("forbidden", "not allowed"),
        404 => ("route_not_found", "no route matches this path"),
        405 => ("method_not_allowed", "this path does not accept this method; see the Allow header"),
        408 => ("request_timeout", "the request took longer than the server allows"),
        413 => ("payload_too_large", "the request body is larger than the server accepts"),
        415 => ("unsupported_media_type", "the request body has an unsupported content type"),
        429 => ("rate_limited", "too many requests"),
        503 => ("service_unavailable", "the service is temporarily unavailable"),
        s if s >= 500 => {
            ("internal_error", "an internal error occurred; quote the X-Request-Id response header when reporting it")
        }
        _ => ("client_error", "the request cannot be processed"),
    }
}

/// Fallback handler for unknown routes: 404 `route_not_found`.
pub async fn route_not_found() -> Error {
    Error::not_found("route_not_found", "no route matches this path")
}
