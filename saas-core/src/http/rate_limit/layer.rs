use std::{
    borrow::Cow,
    cell::RefCell,
    net::IpAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use tower::{Layer, Service};

use super::{Decision, Quota, RateLimiter};
use crate::{
    error::Error,
    http::{
        header_value::{self, Inline},
        peer_ip,
    },
};

/// Picks the key a request is counted under; `None` skips limiting for that request.
pub type KeyFn = Arc<dyn Fn(&Request) -> Option<String> + Send + Sync>;

/// The default key: the peer IP address (`ConnectInfo`), or `unknown` without one.
///
/// Behind a proxy, key by a trusted forwarded header instead with
/// [`RateLimitLayer::key_by`].
pub fn client_ip_key(req: &Request) -> Option<String> {
    Some(client_ip(req, &mut Inline::new()).into_owned())
}

/// [`client_ip_key`], written into `buffer` (no allocation) unless the peer is IPv6.
fn client_ip<'b>(req: &Request, buffer: &'b mut Inline<24>) -> Cow<'b, str> {
    let written = match peer_ip(req.extensions()) {
        // By hand: `Display` formats each octet through the general formatter.
        Some(IpAddr::V4(ip)) => ip.octets().into_iter().enumerate().try_for_each(|(i, octet)| {
            buffer.push(if i == 0 { b"ip:" } else { b"." })?;
            let digits = [b'0' + octet / 100, b'0' + octet / 10 % 10, b'0' + octet % 10];
            let start = match octet {
                100.. => 0,
                10..=99 => 1,
                _ => 2,
            };
            buffer.push(&digits[start..])
        }),
        Some(ip) => return format!("ip:{ip}").into(),
        None => buffer.push(b"ip:unknown"),
    };
    // At most 18 ASCII bytes: always written, always UTF-8.
    debug_assert!(written.is_ok());
    Cow::Borrowed(std::str::from_utf8(buffer.as_bytes()).unwrap_or("ip:unknown"))
}

/// How a request's key is found: [`client_ip_key`] (without an allocation for an IPv4
/// peer), or the application's function.
#[derive(Clone)]
enum Key {
    ClientIp,
    Custom(KeyFn),
}

/// Limits requests per key with GCRA; see the [module docs](super).
///
/// When the store fails (e.g. Redis is down) the request is let through and a warning is
/// logged: a rate limiter outage must not become an API outage.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<dyn RateLimiter>,
    quota: Quota,
    key: Key,
    skip: Option<Arc<SkipFn>>,
    // `RateLimit-Policy`, the same on every 429: written once.
    policy: HeaderValue,
}

/// Which requests [`RateLimitLayer::skip`] leaves uncounted.
type SkipFn = dyn Fn(&Request) -> bool + Send + Sync;

impl RateLimitLayer {
    /// Limits each client IP to `quota`.
    pub fn new(limiter: Arc<dyn RateLimiter>, quota: Quota) -> Self {
        Self { limiter, quota, key: Key::ClientIp, skip: None, policy: policy_header(&quota) }
    }

    /// Counts requests under the key `f` returns (tenant, API key, …); `None` leaves a
    /// request uncounted.
    pub fn key_by(mut self, f: impl Fn(&Request) -> Option<String> + Send + Sync + 'static) -> Self {
        self.key = Key::Custom(Arc::new(f));
        self
    }

    /// Leaves the requests for which `f` is true uncounted (and without a `RateLimit`
    /// header), whatever their key: health probes and metrics scrapers, which poll from
    /// one address.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use saas_core::http::rate_limit::{MemoryRateLimiter, Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(Arc::new(MemoryRateLimiter::new()), Quota::per_second(50))
    ///     .skip(|req| req.uri().path().starts_with("/health/"));
    /// ```
    pub fn skip(mut self, f: impl Fn(&Request) -> bool + Send + Sync + 'static) -> Self {
        self.skip = Some(Arc::new(f));
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::optional(Some(self.clone()), inner)
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    // One reference count to touch when the service is cloned for a request; `None` in a
    // stack without the layer (see `optional`).
    layer: Option<Arc<RateLimitLayer>>,
}

impl<S> RateLimit<S> {
    /// `inner` behind `layer`, or passed through without one: how
    /// [`HttpStack`](crate::http::HttpStack) leaves the layer out (see `Stacked` there).
    pub(crate) fn optional(layer: Option<RateLimitLayer>, inner: S) -> Self {
        Self { inner, layer: layer.map(Arc::new) }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RateLimit`]. Not boxed when the store decides at once (in memory):
    /// each box is an allocation per request.
    pub struct RateLimitFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = Projected]
    enum State<F, E> {
        // Decided: the inner service's response gets the `RateLimit` header.
        Decided { #[pin] inner: F, remaining: Option<Remaining> },
        // Not counted (no key, or no limiter): the inner service's response as it is.
        Unlimited { #[pin] inner: F },
        // Denied at once, or asking an external store first.
        Other { inner: BoxFuture<'static, Result<Response, E>> },
    }
}

impl<F, E> RateLimitFuture<F, E> {
    fn new(state: State<F, E>) -> Self {
        Self { state }
    }
}

impl<F, E> std::future::Future for RateLimitFuture<F, E>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Projected::Decided { inner, remaining } => {
                let mut response = std::task::ready!(inner.poll(cx))?;
                if let Some(remaining) = remaining.take() {
                    remaining.add_to(&mut response);
                }
                Poll::Ready(Ok(response))
            }
            Projected::Unlimited { inner } => inner.poll(cx),
            Projected::Other { inner } => inner.as_mut().poll(cx),
        }
    }
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Some(layer) = &self.layer else {
            return RateLimitFuture::new(State::Unlimited { inner: self.inner.call(req) });
        };
        // Without the edge, the limiter's decision and the guards' expiry checks below take
        // one clock reading between them.
        let _moment = crate::observe::request::one_moment();
        let key = match layer.admit_now(&req) {
            AdmitNow::Decided(Admission::Uncounted) => {
                return RateLimitFuture::new(State::Unlimited { inner: self.inner.call(req) });
            }
            AdmitNow::Decided(Admission::Allowed(remaining)) => {
                return RateLimitFuture::new(State::Decided {
                    inner: self.inner.call(req),
                    remaining: Some(remaining),
                });
            }
            AdmitNow::Decided(Admission::Refused(refused)) => {
                return RateLimitFuture::new(State::Other { inner: Box::pin(std::future::ready(Ok(refused))) });
            }
            AdmitNow::Ask(key) => key,
        };
        let layer = layer.clone();
        let mut inner = crate::http::take_ready(&mut self.inner);
        RateLimitFuture::new(State::Other {
            inner: Box::pin(async move {
                let remaining = match layer.admit(&key).await {
                    Admission::Allowed(remaining) => remaining,
                    Admission::Refused(refused) => return Ok(refused),
                    Admission::Uncounted => return inner.call(req).await,
                };
                let mut response = inner.call(req).await?;
                remaining.add_to(&mut response);
                Ok(response)
            }),
        })
    }
}

/// What the limiter made of a request.
pub(crate) enum Admission {
    /// Not counted: skipped, or the store is down.
    Uncounted,
    /// Counted and let through; its response gets this `RateLimit` header.
    Allowed(Remaining),
    /// Refused: the 429 to answer.
    Refused(Response),
}

/// What the limiter made of a request without waiting.
pub(crate) enum AdmitNow {
    Decided(Admission),
    /// Only the store can tell, after a wait (Redis): [`admit`](RateLimitLayer::admit) this key.
    Ask(String),
}

impl RateLimitLayer {
    /// Counts `req` if the store decides without waiting (in process).
    pub(crate) fn admit_now(&self, req: &Request) -> AdmitNow {
        if self.skip.as_ref().is_some_and(|skip| skip(req)) {
            return AdmitNow::Decided(Admission::Uncounted);
        }
        let mut buffer = Inline::new();
        let key: Cow<'_, str> = match &self.key {
            // A store in this process keeps the address as it is: nothing to write out.
            Key::ClientIp => match self.limiter.check_peer_now(peer_ip(req.extensions()), &self.quota) {
                Some(decision) => return AdmitNow::Decided(self.admission(decision)),
                None => client_ip(req, &mut buffer),
            },
            Key::Custom(key) => match key(req) {
                Some(key) => key.into(),
                None => return AdmitNow::Decided(Admission::Uncounted),
            },
        };
        match self.limiter.check_now(&key, &self.quota) {
            Some(decision) => AdmitNow::Decided(self.admission(decision)),
            None => AdmitNow::Ask(key.into_owned()),
        }
    }

    /// Counts the request of `key` (as [`admit_now`](Self::admit_now) gave it) in the
    /// store. A store that fails lets the request through, uncounted.
    pub(crate) async fn admit(&self, key: &str) -> Admission {
        match self.limiter.check(key, &self.quota).await {
            Ok(decision) => self.admission(decision),
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; letting the request through");
                Admission::Uncounted
            }
        }
    }

    fn admission(&self, decision: Decision) -> Admission {
        match decision.allowed {
            true => Admission::Allowed(Remaining::of(&decision)),
            false => Admission::Refused(too_many(&decision, &self.policy)),
        }
    }
}

/// The numbers of a `RateLimit` header: requests left, and whole seconds until the full
/// burst is back. Two words: it travels with the future of every request let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remaining {
    left: u32,
    reset_secs: u64,
}

impl Remaining {
    fn of(decision: &Decision) -> Self {
        Self { left: decision.remaining, reset_secs: ceil_secs(decision.reset_after) }
    }

    /// Adds the header to the response of the request let through.
    pub(crate) fn add_to(self, response: &mut Response) {
        response.headers_mut().insert(RATELIMIT, remaining_header(self));
    }
}

fn too_many(decision: &Decision, policy: &HeaderValue) -> Response {
    let mut response = Error::too_many_requests(decision.retry_after).into_response();
    let headers = response.headers_mut();
    headers.insert(RATELIMIT, remaining_header(Remaining::of(decision)));
    headers.insert(RATELIMIT_POLICY, policy.clone());
    response
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

// Constants: `HeaderName::from_static` outside a const context parses the name each time.
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The name of the one quota policy, in both fields.
const POLICY_NAME: &[u8] = b"\"default\"";

/// `RateLimit: "default";r=<requests left>;t=<seconds until the full burst is back>`.
fn remaining_header(remaining: Remaining) -> HeaderValue {
    thread_local! {
        // Clients far from their limit, most of them, get the same value on every answer
        // (the burst less one, the time one request takes to come back): it is written once
        // per thread and cloned, not written for each response. Keeps at most one shared
        // buffer per thread alive (see `header_value`).
        static LAST: RefCell<Option<(Remaining, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((cached, value)) if *cached == remaining => value.clone(),
        _ => last.insert((remaining, write_remaining(remaining))).1.clone(),
    })
}

fn write_remaining(Remaining { left, reset_secs }: Remaining) -> HeaderValue {
    let mut text = Inline::<64>::new();
    let written = (|| {
        text.push(POLICY_NAME)?;
        text.push(b";r=")?;
        text.push_number(u64::from(left))?;
        text.push(b";t=")?;
        text.push_number(reset_secs)
    })();
    // Two numbers of at most 20 digits fit, and digits are valid in a header.
    debug_assert!(written.is_ok());
    header_value::shared(text.as_bytes()).unwrap_or(HeaderValue::from_static("\"default\";r=0"))
}

/// `RateLimit-Policy: "default";q=<burst>;w=<seconds to refill the burst>`.
fn policy_header(quota: &Quota) -> HeaderValue {
    let window = ceil_secs(quota.emission_interval.saturating_mul(quota.burst)).max(1);
    let text = format!("\"default\";q={};w={window}", quota.burst);
    HeaderValue::try_from(text).expect("digits and quotes are valid in a header")
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::extract::ConnectInfo;

    use super::*;

    #[test]
    fn client_ip_keys_write_addresses_as_display_does() {
        for peer in ["0.0.0.0:1", "127.0.0.1:80", "10.20.199.255:443", "[2001:db8::1]:80", "[::ffff:1.2.3.4]:1"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut req = Request::new(axum::body::Body::empty());
            req.extensions_mut().insert(ConnectInfo(peer));
            assert_eq!(client_ip_key(&req).unwrap(), format!("ip:{}", peer.ip()));
        }
        assert_eq!(client_ip_key(&Request::new(axum::body::Body::empty())).unwrap(), "ip:unknown");
    }

    #[test]
    fn the_ratelimit_header_follows_each_decision() {
        let decision = |remaining, reset_ms| Decision {
            allowed: true,
            limit: 10,
            remaining,
            retry_after: Duration::ZERO,
            reset_after: Duration::from_millis(reset_ms),
        };
        for (remaining, reset_ms, expected) in [
            (9, 100, "\"default\";r=9;t=1"),
            (9, 100, "\"default\";r=9;t=1"),
            (8, 100, "\"default\";r=8;t=1"),
            (8, 2_500, "\"default\";r=8;t=3"),
            (9, 100, "\"default\";r=9;t=1"),
        ] {
            assert_eq!(remaining_header(Remaining::of(&decision(remaining, reset_ms))), expected);
        }
    }
}
