//! The edge of every request: request id (and the ids every log line of the request
//! carries, see [`crate::observe::request`]), API version check, body limit, panic catcher,
//! timeout, problem+json for every error, and metrics, in one service.
//!
//! These concerns wrap every request, so they share one service and one future
//! rather than a layer each: on a trivial route each extra layer cost about 5 % of
//! throughput (see the benchmarks chapter of the book).

use std::{
    convert::Infallible,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use tower::{Layer, Service};

use super::{X_REQUEST_ID, api_version, extract, problem};
use crate::{
    error::Error,
    observe::{
        self,
        metrics::RouteTemplates,
        request::{RequestIds, Scoped},
    },
};

/// Applies the edge concerns; see the [module docs](self). Part of
/// [`HttpStack`](super::HttpStack).
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    settings: Arc<Settings>,
}

/// What every request of an [`Edge`] shares: one reference count to touch when the service
/// is cloned for a request.
#[derive(Debug, Clone)]
struct Settings {
    versions: Box<[HeaderValue]>,
    timeout: Duration,
    body_limit: usize,
    routes: RouteTemplates,
}

impl EdgeLayer {
    /// Serves API `versions` (e.g. `["v1"]`), answers 408 after `timeout`, and 413 to
    /// request bodies over 1 MiB (see [`body_limit`](Self::body_limit)); every request is
    /// labelled `unmatched` in the metrics (see [`routes`](Self::routes)).
    pub fn new(versions: impl IntoIterator<Item = impl Into<String>>, timeout: Duration) -> Self {
        // A version that is no header value could not be in a path either.
        let versions = versions.into_iter().filter_map(|v| HeaderValue::try_from(v.into()).ok()).collect();
        let settings = Settings { versions, timeout, body_limit: 1024 * 1024, routes: RouteTemplates::default() };
        Self { settings: Arc::new(settings) }
    }

    /// Sets the largest request body: a larger `Content-Length` is answered 413 at once, a
    /// longer streamed body fails to read (and extractors answer 413).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.settings_mut().body_limit = bytes;
        self
    }

    /// Labels each request's metrics with the one of `templates` its path matches, as axum's
    /// router would match it (a static segment before a parameter, a parameter before a
    /// wildcard), in axum's route syntax: `/v1/tenants/{id}`, `/docs/{*rest}`. Replaces the
    /// templates given before; [`HttpStack::routes`](super::HttpStack::routes) collects them.
    ///
    /// # Panics
    /// On a template axum's router would refuse too.
    pub fn routes<'a>(mut self, templates: impl IntoIterator<Item = &'a str>) -> Self {
        self.settings_mut().routes = RouteTemplates::new(templates);
        self
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        observe::metrics::handle();
        Edge { inner, settings: self.settings.clone() }
    }
}

/// The service of [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    settings: Arc<Settings>,
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
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let start = Instant::now();
        let given = read_headers(req.headers_mut());
        // Log lines carry the ids through the request's future (see `observe::request`); the
        // span is for tracing consumers, at DEBUG as tower-http has it, and costs nothing
        // when off.
        let ids = RequestIds::new(given, start);
        let span = tracing::debug_span!("request", method = %req.method(), path = req.uri().path());
        let labels = observe::metrics::RequestLabels::of(&req, &self.settings.routes);
        // For the access log and errors only. Both clones share the request's buffers: no
        // allocation on the hot path.
        let (method, uri) = (req.method().clone(), req.uri().clone());

        let checked = api_version::check(&self.settings.versions, req.uri().path())
            .and_then(|version| limit_body(&mut req, self.settings.body_limit).map(|()| version));
        let (state, version) = match checked {
            Err(error) => (State::Answered { response: Some(error.into_response()) }, None),
            Ok(version) => {
                let _entered = span.enter();
                match ids.enter(|| std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)))) {
                    Ok(future) => (State::Running { future, timer: None }, version),
                    Err(_) => (State::Answered { response: Some(panicked()) }, version),
                }
            }
        };
        let finish = Finish { start, timeout: self.settings.timeout, span, labels, method, uri, version };
        EdgeFuture { handling: ids.scope(Handling { state, finish: Some(finish) }) }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Edge`]: the inner service's future, run as part of the request (its
    /// ids on every log line), under the timeout and the panic catcher, and its response
    /// finished (problem+json, `X-Request-Id`, `API-Version`, metrics, access log).
    ///
    /// Named rather than boxed: axum boxes each route's future already, and a second box was
    /// one more allocation per request.
    pub struct EdgeFuture<F> {
        #[pin]
        handling: Scoped<Handling<F>>,
    }
}

impl<F> Future for EdgeFuture<F>
where
    Handling<F>: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().handling.poll(cx)
    }
}

pin_project_lite::pin_project! {
    struct Handling<F> {
        #[pin]
        state: State<F>,
        // Taken when the response is ready.
        finish: Option<Finish>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<F> {
        // Answered by the edge itself (bad version, body too large, a panic in `call`).
        Answered { response: Option<Response> },
        // The inner service's future; the timer is set only if it is not ready at once:
        // registering one costs more than a fast handler.
        Running { #[pin] future: F, timer: Option<Pin<Box<tokio::time::Sleep>>> },
    }
}

/// What the edge needs once the response is there.
struct Finish {
    start: Instant,
    // Not the deadline: adding it up is needed only for a request not answered at once.
    timeout: Duration,
    span: tracing::Span,
    labels: observe::metrics::RequestLabels,
    method: http::Method,
    uri: http::Uri,
    version: Option<HeaderValue>,
}

impl<F, ResBody> Future for Handling<F>
where
    F: Future<Output = Result<http::Response<ResBody>, Infallible>>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(finish) = this.finish.as_ref() else { return Poll::Pending };
        let response = match this.state.project() {
            StateProjection::Answered { response } => response.take().unwrap_or_else(panicked),
            StateProjection::Running { future, timer } => {
                let _entered = finish.span.enter();
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Ready(Ok(response))) => response.map(Body::new),
                    Ok(Poll::Ready(Err(never))) => match never {},
                    Err(_) => panicked(),
                    Ok(Poll::Pending) => {
                        let deadline = (finish.start + finish.timeout).into();
                        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                        match timer.as_mut().poll(cx) {
                            Poll::Ready(()) => StatusCode::REQUEST_TIMEOUT.into_response(),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                }
            }
        };
        let finish = this.finish.take().expect("checked above");
        Poll::Ready(Ok(finish.respond(response)))
    }
}

impl Finish {
    /// `response` as the client gets it, counted and logged.
    fn respond(self, response: Response) -> Response {
        let mut response = problem::to_problem(response);
        if let Some(id) = RequestIds::current_header_value() {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        if let Some(version) = self.version {
            response.headers_mut().insert(api_version::API_VERSION, version);
        }
        let status = response.status();
        let failed = status.is_server_error() && response.extensions().get::<crate::error::Shed>().is_none();
        self.span.in_scope(|| {
            // Fields are evaluated only for a line that is written.
            let (method, path, status_code) = (&self.method, self.uri.path(), status.as_u16());
            if failed {
                let latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
                tracing::error!(%method, path, status = status_code, latency_ms, "request failed");
            } else {
                tracing::debug!(
                    %method,
                    path,
                    status = status_code,
                    latency_ms = self.start.elapsed().as_secs_f64() * 1000.0,
                    "finished processing request"
                );
            }
        });
        self.labels.record(status, self.start);
        response
    }
}

/// Marks every `Authorization` and `Cookie` value sensitive (`Debug` prints `Sensitive`
/// instead), and returns the client's request id: the first `X-Request-Id`, when it is
/// acceptable.
///
/// One pass over the headers: for the handful an API client sends, cheaper than a hashed
/// lookup of each of the three names, and it marks repeated `Cookie` headers too, where a
/// lookup found only the first.
fn read_headers(headers: &mut http::HeaderMap) -> Option<HeaderValue> {
    let mut given = None;
    for (name, value) in headers.iter_mut() {
        if name == header::AUTHORIZATION || name == header::COOKIE {
            value.set_sensitive(true);
        } else if name == X_REQUEST_ID && given.is_none() {
            given = Some(acceptable_request_id(value).then(|| value.clone()));
        }
    }
    given.flatten()
}

/// A client's request id is kept when it is 1 to 128 visible ASCII characters: it is echoed
/// and written on every log line of the request, so its size is bounded.
fn acceptable_request_id(id: &HeaderValue) -> bool {
    super::is_visible_ascii(id.as_bytes(), 128)
}

/// Limits `req`'s body to `limit` bytes, or answers the 413 of a larger `Content-Length`. In
/// place: moving the request in and out cost two copies of it on every request.
fn limit_body(req: &mut http::Request<Body>, limit: usize) -> Result<(), Error> {
    use http_body::Body as _;
    let limit = limit as u64;
    let size = req.body().size_hint();
    if size.lower() > limit {
        return Err(extract::payload_too_large());
    }
    // A body of known length (hyper holds it to its `Content-Length`) within the limit
    // needs no counting; wrapping would cost an allocation per request.
    if size.upper().is_some_and(|upper| upper <= limit) {
        return Ok(());
    }
    let body = std::mem::take(req.body_mut());
    *req.body_mut() = Body::new(http_body_util::Limited::new(body, limit as usize));
    Ok(())
}

fn panicked() -> Response {
    Error::internal(anyhow::anyhow!("handler panicked")).into_response()
}
