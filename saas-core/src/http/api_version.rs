//! Path-based API versions: `/v1/…`.
//!
//! A request to `/vN/…` with a version the server does not serve answers 404
//! `unsupported_api_version` listing the served ones; responses to versioned paths carry
//! `API-Version: vN`. Paths outside the versioned API (`/health/…`, `/metrics`) pass.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::HeaderValue;

use crate::error::Error;

/// The served versions.
#[derive(Debug, Clone)]
pub struct ApiVersions(Arc<Vec<String>>);

impl ApiVersions {
    /// Serves `versions`, e.g. `["v1"]`.
    pub fn new(versions: Vec<String>) -> Self {
        Self(Arc::new(versions))
    }
}

/// The version segment of a path, if it is `/v<digits>` or `/v<digits>/…`.
fn version_of(path: &str) -> Option<&str> {
    let segment = path.strip_prefix('/')?.split('/').next()?;
    let digits = segment.strip_prefix('v')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(segment)
}

/// Middleware: refuses unknown versions, labels responses with the version.
pub async fn check_version(State(versions): State<ApiVersions>, req: Request, next: Next) -> Response {
    let Some(version) = version_of(req.uri().path()).map(str::to_owned) else {
        return next.run(req).await;
    };
    if !versions.0.contains(&version) {
        return Error::not_found(
            "unsupported_api_version",
            format!("API version `{version}` is not served; served versions: {}", versions.0.join(", ")),
        )
        .into_response();
    }
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&version) {
        response.headers_mut().insert("api-version", v);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_version_segments() {
        assert_eq!(super::version_of("/v1/tenants"), Some("v1"));
        assert_eq!(super::version_of("/v12"), Some("v12"));
        assert_eq!(super::version_of("/vx/tenants"), None);
        assert_eq!(super::version_of("/health/live"), None);
        assert_eq!(super::version_of("/v/"), None);
    }
}
