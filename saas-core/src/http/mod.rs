//! HTTP building blocks: problem+json extractors, and the layer stack every saas-rs API
//! runs behind.
//!
//! [`HttpStack`] applies, outermost first: the [`edge`] (request id in `X-Request-Id`, kept
//! when the client sends one, on every log line of the request; API version check; body
//! limit; panic catcher; timeout; problem+json for every error; metrics), then rate limit,
//! `Idempotency-Key` and the [guards](HttpStack::guard), around the whole router: what
//! [`apply`](HttpStack::apply) returns is an [`HttpService`], served as a router is.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use saas_core::http::HttpStack;
//!
//! # async fn run() -> std::io::Result<()> {
//! let routes = Router::new().route("/v1/hello", get(|| async { "hi" }));
//! let app = HttpStack::new().routes(["/v1/hello"]).apply(routes);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

pub mod api_version;
pub mod edge;
pub mod extract;
pub mod guard;
pub(crate) mod header_value;
pub mod idempotency;
pub mod problem;
pub mod rate_limit;

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::DefaultBodyLimit, response::Response, routing::Router, serve::IncomingStream};
use http::{HeaderName, HeaderValue, Request};
use tower::{Layer, Service, util::Either};

pub use extract::{Json, Path, Query, TypedHeader};
pub use idempotency::IdempotencyLayer;
pub use rate_limit::RateLimitLayer;

/// The credential of an `Authorization: Bearer <credential>` header (scheme in any case),
/// trimmed; `None` without one, or when it is not ASCII.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    // ASCII only, as `to_str` has it (header values hold no control bytes), but checked a
    // word at a time: `to_str` goes byte by byte, which shows on every request with a
    // kilobyte-long access token.
    let credential = bearer_bytes(headers)?;
    std::str::from_utf8(credential).ok().filter(|_| credential.is_ascii())
}

/// The credential of an `Authorization: Bearer <credential>` header as [`bearer_token`]
/// finds it, but its bytes unchecked: for comparing with a credential known to be valid
/// (a cached token), where any bad byte is a mismatch anyway. Checking a kilobyte-long
/// access token for ASCII costs more than the comparison; use [`bearer_token`] for
/// anything else.
pub fn bearer_bytes(headers: &http::HeaderMap) -> Option<&[u8]> {
    let value = first_header(headers, &http::header::AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, credential) = (&value[..space], value[space + 1..].trim_ascii());
    (scheme.eq_ignore_ascii_case(b"bearer") && !credential.is_empty()).then_some(credential)
}

/// The first value of header `name`, as `HeaderMap::get` finds it. The handful of headers
/// an API request or response carries are walked, which costs less than hashing the name
/// (and, for a name of the application's own, hashing its bytes) as a lookup does; a map
/// of more is looked up.
///
/// ```
/// use http::{HeaderMap, HeaderName, HeaderValue};
///
/// const TENANT: HeaderName = HeaderName::from_static("x-tenant-id");
/// let mut headers = HeaderMap::new();
/// headers.append(TENANT, HeaderValue::from_static("acme"));
/// headers.append(TENANT, HeaderValue::from_static("globex"));
/// assert_eq!(saas_core::http::first_header(&headers, &TENANT), headers.get(TENANT));
/// ```
pub fn first_header<'a>(headers: &'a http::HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    const WALKED: usize = 8;
    if headers.keys_len() > WALKED {
        return headers.get(name);
    }
    headers.iter().find_map(|(key, value)| (key == name).then_some(value))
}

/// Whether `value` is 1 to `max_len` visible ASCII characters (no space): what a client may
/// send as an id or key that the server echoes, logs or stores.
pub(crate) fn is_visible_ascii(value: &[u8], max_len: usize) -> bool {
    (1..=max_len).contains(&value.len()) && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The TCP peer's address, when the server was started with `ConnectInfo<SocketAddr>`
/// (`into_make_service_with_connect_info`); `None` otherwise. What the rate limiter and the
/// login throttle key by.
///
/// ```
/// use std::net::SocketAddr;
/// use axum::extract::ConnectInfo;
///
/// let mut req = http::Request::new(());
/// assert_eq!(saas_core::http::peer_ip(req.extensions()), None);
/// req.extensions_mut().insert(ConnectInfo("10.0.0.7:4000".parse::<SocketAddr>().unwrap()));
/// assert_eq!(saas_core::http::peer_ip(req.extensions()), Some([10, 0, 0, 7].into()));
/// ```
pub fn peer_ip(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|connected| connected.0.ip())
}

/// The service that was polled ready, for a future that calls it later; a clone of it serves
/// the next request (a `tower` service may only be called once it is ready).
pub(crate) fn take_ready<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}

/// The body limit axum's extractors (`Json`, `Bytes`, …) apply without `DefaultBodyLimit`.
const AXUM_DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The layer stack of a saas-rs API; see the [module docs](self).
#[derive(Clone)]
pub struct HttpStack {
    body_limit: usize,
    timeout: Duration,
    api_versions: Vec<String>,
    rate_limit: Option<RateLimitLayer>,
    idempotency: Option<IdempotencyLayer>,
    guards: guard::Guards,
    routes: Vec<String>,
}

impl Default for HttpStack {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpStack {
    /// 1 MiB bodies, 30 s timeout, API version `v1`, no rate limit, no idempotency, no
    /// guards, and no route templates (every request labelled `unmatched` in the metrics).
    pub fn new() -> Self {
        Self {
            body_limit: 1024 * 1024,
            timeout: Duration::from_secs(30),
            api_versions: vec!["v1".into()],
            rate_limit: None,
            idempotency: None,
            guards: guard::Guards::default(),
            routes: Vec::new(),
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

    /// Runs `guard` before every route (and the fallback), after the rate limit and
    /// `Idempotency-Key`; guards run in the order they are added, and the first refusal
    /// answers. Authentication and tenant resolution belong here (`saas serve` has
    /// `.guard(auth.layer()).guard(tenant_layer)`).
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use http::request::Parts;
    /// use saas_core::{Error, http::{HttpStack, guard::Guard}};
    ///
    /// #[derive(Clone)]
    /// struct RequireClient;
    ///
    /// impl Guard for RequireClient {
    ///     async fn check(&self, parts: &mut Parts) -> Result<(), Error> {
    ///         match parts.headers.contains_key("x-api-client") {
    ///             true => Ok(()),
    ///             false => Err(Error::bad_request("client_required", "send `X-Api-Client`")),
    ///         }
    ///     }
    /// }
    ///
    /// let routes = Router::new().route("/v1/hello", get(|| async { "hi" }));
    /// let app = HttpStack::new().guard(RequireClient).apply(routes);
    /// ```
    ///
    /// All the guards are one service: each layer is one more service to clone and call
    /// on every request, which on a fast route is a measurable share of its time.
    pub fn guard(mut self, guard: impl guard::Guard) -> Self {
        self.guards = self.guards.and(guard);
        self
    }

    /// Labels each request's metrics (`route="/v1/tenants/{id}"`) with the template its
    /// path matches, in axum's route syntax; a request that matches none is labelled
    /// `unmatched`. Give the templates of every route the router serves: the stack runs
    /// before the router has matched the request, so it cannot ask the router. Can be
    /// called more than once; without it, [`apply`](Self::apply) logs a warning.
    ///
    /// With utoipa, the document lists them ([`crate::openapi::route_templates`]):
    ///
    /// ```
    /// use saas_core::{http::HttpStack, observe::health::{self, Health}, openapi};
    /// use utoipa_axum::router::OpenApiRouter;
    ///
    /// let (routes, api) = OpenApiRouter::new().merge(health::router(Health::new())).split_for_parts();
    /// let app = HttpStack::new().routes(openapi::route_templates(&api)).apply(openapi::serve_docs(routes, api));
    /// ```
    ///
    /// # Panics
    /// [`apply`](Self::apply) panics on a template axum's router would refuse too (bad
    /// syntax, a conflict with another template), as `Router::route` does.
    pub fn routes(mut self, templates: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.routes.extend(templates.into_iter().map(|t| t.as_ref().to_owned()));
        self
    }

    /// Wraps `router` in the stack and makes unknown routes answer 404 problem+json.
    ///
    /// The stack runs around the whole router, not around each route: `Router::layer`
    /// would box the layered route and clone that box on every request, which cost about a
    /// sixth of what the stack added to a trivial route (see the benchmarks chapter).
    pub fn apply(self, router: Router) -> HttpService {
        // Handlers become routes once, here, not on every request (as `axum::serve` does for
        // a router it is given).
        let router = router.fallback(problem::route_not_found).with_state(());
        if self.routes.is_empty() {
            tracing::warn!(
                "HttpStack has no route templates: every request is labelled `unmatched` in the metrics; \
                 give the routes' templates to `HttpStack::routes`"
            );
        }
        let idempotency = self.idempotency.map(|layer| layer.with_body_limit(self.body_limit));
        // The edge limits bodies itself; axum's extractors apply their own default limit on
        // top, which must be raised only when ours is larger (the layer costs a request
        // extension each time).
        let raise_extractor_limit =
            (self.body_limit > AXUM_DEFAULT_BODY_LIMIT).then(|| DefaultBodyLimit::max(self.body_limit));
        let edge = edge::EdgeLayer::new(self.api_versions, self.timeout)
            .body_limit(self.body_limit)
            .routes(self.routes.iter().map(String::as_str));
        // The one optional layer left as `Either` of the service with and without it, around
        // the router only (see `Stacked`).
        let routed = match raise_extractor_limit {
            Some(limit) => Either::Left(limit.layer(router)),
            None => Either::Right(router),
        };
        // With no idempotency store between them, the rate limit is counted first in the
        // guards' layer, where its own service would cost a reference count, a dispatch and
        // the wrapping of the future on every request.
        let (guards, rate_limit) = match (&idempotency, self.rate_limit) {
            (None, Some(limit)) => (self.guards.rate_limit(limit), None),
            (_, limit) => (self.guards, limit),
        };
        let guarded = guards.layer(routed);
        let limited =
            rate_limit::RateLimit::optional(rate_limit, idempotency::Idempotency::optional(idempotency, guarded));
        HttpService(edge.layer(limited))
    }
}

/// A router behind the [`HttpStack`], as [`HttpStack::apply`] makes it: a `tower` service of
/// axum requests. Serve it as a router is served: `axum::serve(listener, app)`, or with
/// the peer address, which the rate limiter and the login throttle key by:
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::{Router, routing::get};
/// use saas_core::http::HttpStack;
///
/// # async fn run() -> std::io::Result<()> {
/// let app = HttpStack::new().routes(["/v1/hello"]).apply(Router::new().route("/v1/hello", get(|| async { "hi" })));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
/// # }
/// ```
///
/// In tests, call it with `tower::ServiceExt::oneshot`.
#[derive(Clone)]
pub struct HttpService(Stacked);

impl HttpService {
    /// What `axum::serve` takes, as `Router::into_make_service` makes it.
    pub fn into_make_service(self) -> axum::routing::IntoMakeService<Self> {
        axum::ServiceExt::<Request<Body>>::into_make_service(self)
    }

    /// What `axum::serve` takes to give each request the peer's `ConnectInfo<C>` (a
    /// `SocketAddr`), as `Router::into_make_service_with_connect_info` makes it.
    pub fn into_make_service_with_connect_info<C>(
        self,
    ) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Self, C> {
        axum::ServiceExt::<Request<Body>>::into_make_service_with_connect_info(self)
    }
}

// The stack's service type, layer by layer from the router out. Optional layers are
// present and switched off (no guards, no limiter, no idempotency store) rather than
// `Either` of the service with and without them: each `Either` cost a dispatch and a move of
// the request and of the future below it on every request (169 instructions a request in
// all, measured with every layer on), and inlined a copy of the layers below into each of
// its branches.
type Routed = Either<<DefaultBodyLimit as Layer<Router>>::Service, Router>;
type Stacked = edge::Edge<rate_limit::RateLimit<idempotency::Idempotency<guard::Guarded<Routed>>>>;

impl Service<Request<Body>> for HttpService {
    type Response = Response;
    type Error = Infallible;
    type Future = <Stacked as Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.0.call(req)
    }
}

/// What lets `axum::serve(listener, app)` take the service itself, as it takes a router.
impl<L: axum::serve::Listener> Service<IncomingStream<'_, L>> for HttpService {
    type Response = Self;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _connection: IncomingStream<'_, L>) -> Self::Future {
        std::future::ready(Ok(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_tokens_are_read_in_any_case_and_trimmed() {
        let mut headers = http::HeaderMap::new();
        for (value, token) in
            [("Bearer abc", Some("abc")), ("bearer  abc ", Some("abc")), ("Basic abc", None), ("Bearer ", None)]
        {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(super::bearer_token(&headers), token, "{value}");
            assert_eq!(super::bearer_bytes(&headers), token.map(str::as_bytes), "{value}");
        }
        assert_eq!(super::bearer_token(&http::HeaderMap::new()), None);
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes("Bearer sap_x\u{a0}".as_bytes()).unwrap(),
        );
        assert_eq!(super::bearer_token(&headers), None, "not ASCII");
        assert_eq!(super::bearer_bytes(&headers), Some("sap_x\u{a0}".as_bytes()), "unchecked");
    }

    #[test]
    fn the_first_header_is_found_as_a_lookup_finds_it_in_small_and_large_maps() {
        const TENANT: http::HeaderName = http::HeaderName::from_static("x-tenant-id");
        let mut headers = http::HeaderMap::new();
        for count in 0..20 {
            for name in [TENANT, http::header::AUTHORIZATION, http::header::HOST] {
                let found = super::first_header(&headers, &name);
                assert_eq!(found, headers.get(&name), "{name} among {count} names");
            }
            headers.append(format!("x-extra-{count}").parse::<http::HeaderName>().unwrap(), "1".parse().unwrap());
            if count == 3 {
                headers.append(TENANT, "acme".parse().unwrap());
                headers.append(TENANT, "globex".parse().unwrap());
                headers.append(http::header::AUTHORIZATION, "Bearer x".parse().unwrap());
            }
        }
        assert_eq!(super::first_header(&headers, &TENANT).unwrap(), "acme", "the first of two, as `get` has it");
    }
}
