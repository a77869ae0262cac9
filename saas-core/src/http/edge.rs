//! The edge of every request: request id (and the ids every log line of the request
//! carries, see [`crate::observe::request`]), API version check, body limit, panic catcher,
//! timeout, problem+json for every error, and metrics, in one service.
//!
//! These concerns wrap every request, so they share one service and one boxed future
//! rather than a layer each: on a trivial route each extra layer cost about 5 % of
//! throughput (see the benchmarks chapter of the book).

use std::{
    convert::Infallible,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use futures::{FutureExt, future::BoxFuture};
use http::{HeaderValue, StatusCode, header};
use tower::{Layer, Service};
use tracing::Instrument;

use super::{X_REQUEST_ID, api_version, extract, problem};
use crate::{
    error::Error,
    observe::{self, request::RequestIds},
};

/// Applies the edge concerns; see the [module docs](self). Part of
/// [`HttpStack`](super::HttpStack).
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    versions: Arc<[HeaderValue]>,
    timeout: Duration,
    body_limit: usize,
}

impl EdgeLayer {
    /// Serves API `versions` (e.g. `["v1"]`), answers 408 after `timeout`, and 413 to
    /// request bodies over 1 MiB (see [`body_limit`](Self::body_limit)).
    pub fn new(versions: impl IntoIterator<Item = impl Into<String>>, timeout: Duration) -> Self {
        // A version that is no header value could not be in a path either.
        let versions = versions.into_iter().filter_map(|v| HeaderValue::try_from(v.into()).ok()).collect();
        Self { versions, timeout, body_limit: 1024 * 1024 }
    }

    /// Sets the largest request body: a larger `Content-Length` is answered 413 at once, a
    /// longer streamed body fails to read (and extractors answer 413).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        observe::metrics::handle();
        Edge { inner, versions: self.versions.clone(), timeout: self.timeout, body_limit: self.body_limit }
    }
}

/// The service of [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    versions: Arc<[HeaderValue]>,
    timeout: Duration,
    body_limit: usize,
}

impl<S, ResBody> Service<http::Request<Body>> for Edge<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>, Error = Infallible>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let start = Instant::now();
        for name in [header::AUTHORIZATION, header::COOKIE] {
            if let Some(value) = req.headers_mut().get_mut(&name) {
                value.set_sensitive(true);
            }
        }
        // Log lines carry the ids through a task-local (see `observe::request`); the span is
        // for tracing consumers, at DEBUG as tower-http has it, and costs nothing when off.
        let given = req.headers().get(&X_REQUEST_ID).filter(|id| acceptable_request_id(id)).cloned();
        let ids = RequestIds::new(given, start);
        let span = tracing::debug_span!("request", method = %req.method(), path = req.uri().path());
        let labels = observe::metrics::RequestLabels::of(&req);
        // For the access log and errors only. Both clones share the request's buffers: no
        // allocation on the hot path.
        let (method, uri) = (req.method().clone(), req.uri().clone());

        let handling = match (api_version::check(&self.versions, req.uri().path()), limit_body(req, self.body_limit)) {
            (Err(error), _) | (_, Err(error)) => Err(error.into_response()),
            (Ok(version), Ok(req)) => {
                let _entered = span.enter();
                match ids.enter(|| std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)))) {
                    Ok(future) => Ok((future, version)),
                    Err(_) => Err(panicked()),
                }
            }
        };
        let timeout = self.timeout;
        Box::pin(ids.scope(async move {
            let (response, version) = match handling {
                Err(response) => (response, None),
                Ok((future, version)) => {
                    let guarded = lazy_timeout(start + timeout, AssertUnwindSafe(future).catch_unwind());
                    let response = match guarded.instrument(span.clone()).await {
                        Ok(Ok(Ok(response))) => response.map(Body::new),
                        Ok(Ok(Err(never))) => match never {},
                        Ok(Err(_)) => panicked(),
                        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
                    };
                    (response, version)
                }
            };
            let mut response = problem::to_problem(response);
            if let Some(id) = RequestIds::current_header_value() {
                response.headers_mut().insert(X_REQUEST_ID, id);
            }
            if let Some(version) = version {
                response.headers_mut().insert(api_version::API_VERSION, version);
            }
            let status = response.status();
            span.in_scope(|| {
                // Fields are evaluated only for a line that is written.
                let (path, status_code) = (uri.path(), status.as_u16());
                if status.is_server_error() {
                    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
                    tracing::error!(%method, path, status = status_code, latency_ms, "request failed");
                } else {
                    tracing::debug!(
                        %method,
                        path,
                        status = status_code,
                        latency_ms = start.elapsed().as_secs_f64() * 1000.0,
                        "finished processing request"
                    );
                }
            });
            labels.record(status, start);
            Ok(response)
        }))
    }
}

/// A client's request id is kept when it is 1 to 128 visible ASCII characters: it is echoed
/// and written on every log line of the request, so its size is bounded.
fn acceptable_request_id(id: &HeaderValue) -> bool {
    super::is_visible_ascii(id.as_bytes(), 128)
}

/// `req` with its body limited to `limit` bytes, or the 413 of a larger `Content-Length`.
fn limit_body(req: http::Request<Body>, limit: usize) -> Result<http::Request<Body>, Error> {
    use http_body::Body as _;
    let limit = limit as u64;
    let size = req.body().size_hint();
    if size.lower() > limit {
        return Err(extract::payload_too_large());
    }
    // A body of known length (hyper holds it to its `Content-Length`) within the limit
    // needs no counting; wrapping would cost an allocation per request.
    if size.upper().is_some_and(|upper| upper <= limit) {
        return Ok(req);
    }
    Ok(req.map(|body| Body::new(http_body_util::Limited::new(body, limit as usize))))
}

/// Like `tokio::time::timeout_at`, but registers no timer when the future is ready on its
/// first poll: registering one costs more than a fast handler.
async fn lazy_timeout<F: std::future::Future>(
    deadline: Instant,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut future = std::pin::pin!(future);
    match futures::poll!(future.as_mut()) {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => tokio::time::timeout_at(deadline.into(), future).await,
    }
}

fn panicked() -> Response {
    Error::internal(anyhow::anyhow!("handler panicked")).into_response()
}
