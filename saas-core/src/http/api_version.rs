//! Path-based API versions: `/v1/…`.
//!
//! A request to `/vN/…` with a version the server does not serve answers 404
//! `unsupported_api_version` listing the served ones; responses to versioned paths carry
//! `API-Version: vN`. Paths outside the versioned API (`/health/…`, `/metrics`) pass.

use std::sync::Arc;

use std::task::{Context, Poll};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use futures::future::BoxFuture;
use http::HeaderValue;
use tower::{Layer, Service};

use crate::error::Error;

/// Serves the API versions it is given; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ApiVersionLayer {
    versions: Arc<[String]>,
}

impl ApiVersionLayer {
    /// Serves `versions`, e.g. `["v1"]`.
    pub fn new(versions: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { versions: versions.into_iter().map(Into::into).collect() }
    }
}

impl<S> Layer<S> for ApiVersionLayer {
    type Service = ApiVersion<S>;

    fn layer(&self, inner: S) -> ApiVersion<S> {
        ApiVersion { inner, versions: self.versions.clone() }
    }
}

/// The service of [`ApiVersionLayer`].
#[derive(Debug, Clone)]
pub struct ApiVersion<S> {
    inner: S,
    versions: Arc<[String]>,
}

/// The version segment of a path, if it is `/v<digits>` or `/v<digits>/…`.
fn version_of(path: &str) -> Option<&str> {
    let segment = path.strip_prefix('/')?.split('/').next()?;
    let digits = segment.strip_prefix('v')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(segment)
}

impl<S, B, ResBody> Service<http::Request<B>> for ApiVersion<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(version) = version_of(req.uri().path()) else {
            let future = self.inner.call(req);
            return Box::pin(async move { Ok(future.await?.map(Body::new)) });
        };
        if !self.versions.iter().any(|v| v == version) {
            let error = Error::not_found(
                "unsupported_api_version",
                format!("API version `{version}` is not served; served versions: {}", self.versions.join(", ")),
            );
            return Box::pin(std::future::ready(Ok(error.into_response())));
        }
        let label = HeaderValue::from_str(version).ok();
        let future = self.inner.call(req);
        Box::pin(async move {
            let mut response = future.await?.map(Body::new);
            if let Some(label) = label {
                response.headers_mut().insert("api-version", label);
            }
            Ok(response)
        })
    }
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
