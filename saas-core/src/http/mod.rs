//! HTTP building blocks: problem+json extractors, and the layer stack every saas-rs API
//! runs behind.
//!
//! [`HttpStack`] applies, outermost first: request id (`X-Request-Id`, kept when the client
//! sends one), tracing span, metrics, problem+json for every error, panic catcher, timeout,
//! API version check, body limit, then around each route rate limit and `Idempotency-Key`.
//!
//! ```
//! use axum::{Router, routing::get};
//! use saas_core::http::HttpStack;
//!
//! let app: Router = HttpStack::new().apply(Router::new().route("/v1/hello", get(|| async { "hi" })));
//! ```

pub mod api_version;
pub mod extract;
pub mod idempotency;
pub mod problem;
pub mod rate_limit;

use std::time::Duration;

use axum::{Router, extract::DefaultBodyLimit};
use http::{HeaderName, StatusCode};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId as RequestIdHeader, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    timeout::TimeoutLayer,
};

pub use extract::{Json, Path, Query, TypedHeader};
pub use idempotency::IdempotencyLayer;
pub use rate_limit::RateLimitLayer;

use crate::{id::RequestId, observe};

/// The request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Makes `req_…` ids for requests that arrive without `X-Request-Id`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeTypedRequestId;

impl MakeRequestId for MakeTypedRequestId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestIdHeader> {
        http::HeaderValue::from_str(&RequestId::new().to_string()).ok().map(RequestIdHeader::new)
    }
}

/// The layer stack of a saas-rs API; see the [module docs](self).
#[derive(Clone)]
pub struct HttpStack {
    body_limit: usize,
    timeout: Duration,
    api_versions: Vec<String>,
    rate_limit: Option<RateLimitLayer>,
    idempotency: Option<IdempotencyLayer>,
}

impl Default for HttpStack {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpStack {
    /// 1 MiB bodies, 30 s timeout, API version `v1`, no rate limit, no idempotency.
    pub fn new() -> Self {
        Self {
            body_limit: 1024 * 1024,
            timeout: Duration::from_secs(30),
            api_versions: vec!["v1".into()],
            rate_limit: None,
            idempotency: None,
        }
    }

    /// Sets the largest accepted request body.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sets the request timeout (answered 408).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the API versions served under `/vN/`.
    pub fn api_versions(mut self, versions: &[&str]) -> Self {
        self.api_versions = versions.iter().map(|v| v.to_string()).collect();
        self
    }

    /// Adds rate limiting.
    pub fn rate_limit(mut self, layer: RateLimitLayer) -> Self {
        self.rate_limit = Some(layer);
        self
    }

    /// Adds `Idempotency-Key` handling.
    pub fn idempotency(mut self, layer: IdempotencyLayer) -> Self {
        self.idempotency = Some(layer);
        self
    }

    /// Wraps `router` in the stack and makes unknown routes answer 404 problem+json.
    pub fn apply(self, router: Router) -> Router {
        // `Router::layer` wraps each route (and the fallback), after routing: layers see the
        // matched route, and need not clone the router per request.
        let router = router.fallback(problem::route_not_found);
        let idempotency = self.idempotency.map(|layer| layer.with_body_limit(self.body_limit));
        let inner = ServiceBuilder::new().option_layer(self.rate_limit).option_layer(idempotency);
        let outer = ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([http::header::AUTHORIZATION, http::header::COOKIE]))
            .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeTypedRequestId))
            .layer(observe::trace_layer())
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
            .layer(observe::metrics::MetricsLayer)
            .layer(problem::ProblemJsonLayer)
            .layer(CatchPanicLayer::custom(|_| {
                axum::response::IntoResponse::into_response(crate::error::Error::internal(anyhow::anyhow!(
                    "handler panicked"
                )))
            }))
            .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, self.timeout))
            .layer(api_version::ApiVersionLayer::new(self.api_versions))
            .layer(DefaultBodyLimit::max(self.body_limit))
            // Innermost: it changes the request body type, which the router accepts.
            .layer(RequestBodyLimitLayer::new(self.body_limit));
        router.layer(inner).layer(outer)
    }
}
