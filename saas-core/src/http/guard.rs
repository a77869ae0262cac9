//! Request guards: a check that runs before the handler and either lets the request
//! through (possibly adding extensions) or answers with a problem.
//!
//! Tenant resolution, `RequireFeature` and `RequireQuota` are guards. Implement [`Guard`]
//! for a type and make it a layer with [`GuardService`]:
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::request::Parts;
//! use saas_core::{Error, http::guard::{Guard, GuardService}};
//!
//! #[derive(Clone)]
//! struct RequireHeader(&'static str);
//!
//! impl Guard for RequireHeader {
//!     async fn check(&self, parts: &mut Parts) -> Result<(), Error> {
//!         match parts.headers.contains_key(self.0) {
//!             true => Ok(()),
//!             false => Err(Error::bad_request("header_required", format!("send `{}`", self.0))),
//!         }
//!     }
//! }
//!
//! impl<S> tower::Layer<S> for RequireHeader {
//!     type Service = GuardService<Self, S>;
//!     fn layer(&self, inner: S) -> Self::Service {
//!         GuardService::new(self.clone(), inner)
//!     }
//! }
//!
//! let app: Router = Router::new().route("/v1/x", get(|| async { "ok" })).route_layer(RequireHeader("x-api-client"));
//! ```

use std::{
    convert::Infallible,
    future::Future,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use futures::future::{BoxFuture, Either};
use http::{Request, request::Parts};
use tower::{Layer as _, Service};

use crate::{
    error::Error,
    http::rate_limit::{Admission, AdmitNow, RateLimitLayer, Remaining},
};

/// A check before the handler; see the [module docs](self).
pub trait Guard: Clone + Send + Sync + 'static {
    /// Lets the request through (`Ok`, after changing `parts` if need be) or refuses it.
    fn check(&self, parts: &mut Parts) -> impl Future<Output = Result<(), Error>> + Send;

    /// The same decision without waiting, when the guard can make it from what it holds
    /// in memory (a cached token, tenant or key); `None` (the default) means "call
    /// [`check`](Self::check)". A guard that waits costs its future a heap allocation and
    /// the request parts two moves; most requests need neither.
    ///
    /// Must decide as `check` would, and change `parts` only when it returns `Some`.
    fn check_now(&self, _parts: &mut Parts) -> Option<Result<(), Error>> {
        None
    }
}

/// Runs guard `G` before service `S`: the [`Layer`](tower::Layer) service of a single guard.
pub struct GuardService<G, S> {
    guarded: Guarded<S>,
    _guard: PhantomData<fn() -> G>,
}

impl<G, S: Clone> Clone for GuardService<G, S> {
    fn clone(&self) -> Self {
        Self { guarded: self.guarded.clone(), _guard: PhantomData }
    }
}

impl<G: Guard, S> GuardService<G, S> {
    /// Guards `inner` with `guard`.
    pub fn new(guard: G, inner: S) -> Self {
        Self { guarded: Guards::default().and(guard).layer(inner), _guard: PhantomData }
    }
}

impl<G, S> Service<Request<Body>> for GuardService<G, S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.guarded.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.guarded.call(req)
    }
}

/// Guards run one after the other, as one layer: what
/// [`HttpStack::guard`](super::HttpStack::guard) runs before every route. Each layer is one
/// more service to clone, call and move the request through on every request; one list of
/// guards is one.
///
/// A rate limit can go first in the same layer, for a service without the
/// [`HttpStack`](super::HttpStack) (which puts its limiter there itself, unless an
/// idempotency store has to come between):
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::get};
/// use saas_core::http::{guard::Guards, rate_limit::{MemoryRateLimiter, Quota, RateLimitLayer}};
/// use tower::Layer;
///
/// let limit = RateLimitLayer::new(Arc::new(MemoryRateLimiter::new()), Quota::per_second(50).burst(100));
/// let routes: Router = Router::new().route("/v1/hello", get(|| async { "hi" }));
/// let app = Guards::default().rate_limit(limit).layer(routes);
/// ```
#[derive(Clone, Default)]
pub struct Guards {
    // One reference count to touch when the service is cloned for a request.
    shared: Arc<GuardList>,
}

#[derive(Default)]
struct GuardList {
    limit: Option<RateLimitLayer>,
    guards: Vec<Arc<dyn ErasedGuard>>,
}

impl Guards {
    /// These guards, then `guard`.
    pub fn and(self, guard: impl Guard) -> Self {
        let mut guards = self.shared.guards.clone();
        guards.push(Arc::new(guard));
        Self { shared: Arc::new(GuardList { limit: self.shared.limit.clone(), guards }) }
    }

    /// Counts each request against `limit` before any guard runs, as a
    /// [`RateLimitLayer`] outside these guards would (a refused request answers 429 and
    /// reaches no guard; the response to a request let through, a guard's refusal
    /// included, gets the `RateLimit` header), without that layer's own service and
    /// future on every request. Replaces a limit set before.
    pub fn rate_limit(self, limit: RateLimitLayer) -> Self {
        Self { shared: Arc::new(GuardList { limit: Some(limit), guards: self.shared.guards.clone() }) }
    }

    /// Whether there are none, and no rate limit.
    pub fn is_empty(&self) -> bool {
        self.shared.limit.is_none() && self.shared.guards.is_empty()
    }
}

impl<S> tower::Layer<S> for Guards {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { guards: self.clone(), inner }
    }
}

/// A check with its type erased, owning the request parts it checks (so that a check that
/// waits can finish in the returned future).
trait ErasedGuard: Send + Sync + 'static {
    fn check_now(&self, parts: &mut Parts) -> Option<Result<(), Error>>;
    fn check_owned(self: Arc<Self>, parts: Parts) -> BoxFuture<'static, (Result<(), Error>, Parts)>;
}

impl<G: Guard> ErasedGuard for G {
    fn check_now(&self, parts: &mut Parts) -> Option<Result<(), Error>> {
        Guard::check_now(self, parts)
    }

    fn check_owned(self: Arc<Self>, mut parts: Parts) -> BoxFuture<'static, (Result<(), Error>, Parts)> {
        Box::pin(async move {
            let checked = self.check(&mut parts).await;
            (checked, parts)
        })
    }
}

/// The service of [`Guards`].
#[derive(Clone)]
pub struct Guarded<S> {
    guards: Guards,
    inner: S,
}

pin_project_lite::pin_project! {
    /// The future of [`Guarded`]: when the rate limit and every check finished at once,
    /// the inner service's future, unboxed.
    pub struct GuardedFuture<F> {
        #[pin]
        inner: Either<F, BoxFuture<'static, Result<Response, Infallible>>>,
        // The rate limit's `RateLimit` header for a request it let through.
        allowed: Option<Remaining>,
    }
}

impl<F> GuardedFuture<F> {
    fn passed(inner: F, allowed: Option<Remaining>) -> Self {
        Self { inner: Either::Left(inner), allowed }
    }

    fn boxed(
        inner: impl Future<Output = Result<Response, Infallible>> + Send + 'static,
        allowed: Option<Remaining>,
    ) -> Self {
        Self { inner: Either::Right(Box::pin(inner)), allowed }
    }

    fn answer(response: Response, allowed: Option<Remaining>) -> Self {
        Self::boxed(std::future::ready(Ok(response)), allowed)
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for GuardedFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(remaining) = this.allowed.take() {
            remaining.add_to(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

impl<S> Service<Request<Body>> for Guarded<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // A stack without guards: the request is not taken apart and put together again.
        if self.guards.is_empty() {
            return GuardedFuture::passed(self.inner.call(req), None);
        }
        // Without the edge, the limit's and the guards' expiry checks take one clock
        // reading between them.
        let _moment = crate::observe::request::one_moment();
        let allowed = match self.guards.shared.limit.as_ref().map(|limit| limit.admit_now(&req)) {
            None | Some(AdmitNow::Decided(Admission::Uncounted)) => None,
            Some(AdmitNow::Decided(Admission::Allowed(remaining))) => Some(remaining),
            Some(AdmitNow::Decided(Admission::Refused(refused))) => return GuardedFuture::answer(refused, None),
            Some(AdmitNow::Ask(key)) => return self.ask_then_check(key, req),
        };
        self.check(req, allowed)
    }
}

impl<S> Guarded<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// The guards, then the inner service; `allowed` is the rate limit's decision.
    fn check(&mut self, req: Request<Body>, allowed: Option<Remaining>) -> GuardedFuture<S::Future> {
        if self.guards.shared.guards.is_empty() {
            return GuardedFuture::passed(self.inner.call(req), allowed);
        }
        let (mut parts, body) = req.into_parts();
        for (i, guard) in self.guards.shared.guards.iter().enumerate() {
            match guard.check_now(&mut parts) {
                Some(Ok(())) => continue,
                Some(Err(error)) => return GuardedFuture::answer(error.into_response(), allowed),
                None => {}
            }
            let mut check = guard.clone().check_owned(parts);
            // Most checks finish without waiting (a cached token, tenant or key): then the
            // service made ready is called here, uncloned. Cloning it clones every layer
            // below, one allocation each, on every request. A check that waits is polled
            // again, with the task's waker, by the future returned below.
            match check.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready((Ok(()), checked)) => parts = checked,
                Poll::Ready((Err(error), _)) => return GuardedFuture::answer(error.into_response(), allowed),
                Poll::Pending => {
                    let mut inner = crate::http::take_ready(&mut self.inner);
                    let guards = self.guards.clone();
                    let checked_then_called = async move {
                        let (mut checked, mut parts) = check.await;
                        for guard in &guards.shared.guards[i + 1..] {
                            if checked.is_err() {
                                break;
                            }
                            (checked, parts) = guard.clone().check_owned(parts).await;
                        }
                        match checked {
                            Ok(()) => inner.call(Request::from_parts(parts, body)).await,
                            Err(error) => Ok(error.into_response()),
                        }
                    };
                    return GuardedFuture::boxed(checked_then_called, allowed);
                }
            }
        }
        GuardedFuture::passed(self.inner.call(Request::from_parts(parts, body)), allowed)
    }

    /// Asks the rate limit's store (which answers after a wait) about `key`, then checks.
    fn ask_then_check(&mut self, key: String, req: Request<Body>) -> GuardedFuture<S::Future> {
        let mut guarded = Guarded { guards: self.guards.clone(), inner: crate::http::take_ready(&mut self.inner) };
        let asked_then_checked = async move {
            let admission = match &guarded.guards.shared.limit {
                Some(limit) => limit.admit(&key).await,
                None => Admission::Uncounted,
            };
            let allowed = match admission {
                Admission::Allowed(remaining) => Some(remaining),
                Admission::Refused(refused) => return Ok(refused),
                Admission::Uncounted => None,
            };
            // Not held across an await: the moment belongs to the thread, not the task.
            let checked = {
                let _moment = crate::observe::request::one_moment();
                guarded.check(req, allowed)
            };
            checked.await
        };
        GuardedFuture::boxed(asked_then_checked, None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Extension, Router, routing::get};
    use tower::ServiceExt;

    use super::*;
    use crate::http::rate_limit::{Decision, Quota};

    /// Lets requests with `?ok` through after `wait`, naming the guard in an extension.
    #[derive(Clone)]
    struct Gate {
        wait: Duration,
    }

    impl Guard for Gate {
        async fn check(&self, parts: &mut Parts) -> Result<(), Error> {
            if !self.wait.is_zero() {
                tokio::time::sleep(self.wait).await;
            }
            if parts.uri.query() != Some("ok") {
                return Err(Error::forbidden("gate_closed", "the gate is closed"));
            }
            parts.extensions.insert(format!("waited {:?}", self.wait));
            Ok(())
        }
    }

    impl<S> tower::Layer<S> for Gate {
        type Service = GuardService<Self, S>;
        fn layer(&self, inner: S) -> Self::Service {
            GuardService::new(self.clone(), inner)
        }
    }

    async fn answer(app: &Router, uri: &str) -> (u16, String) {
        let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn guards_that_finish_at_once_and_guards_that_wait_behave_alike() {
        for wait in [Duration::ZERO, Duration::from_millis(20)] {
            let app = Router::new()
                .route("/x", get(|Extension(note): Extension<String>| async move { note }))
                .route_layer(Gate { wait });
            for _ in 0..3 {
                assert_eq!(answer(&app, "/x?ok").await, (200, format!("waited {wait:?}")));
                let (status, body) = answer(&app, "/x").await;
                assert_eq!(status, 403, "{wait:?}");
                assert!(body.contains("gate_closed"), "{body}");
            }
        }
    }

    /// Records its name, then lets requests through unless it is `refuse`.
    #[derive(Clone)]
    struct Named {
        name: &'static str,
        wait: Duration,
        seen: Arc<std::sync::Mutex<Vec<&'static str>>>,
    }

    impl Guard for Named {
        async fn check(&self, _: &mut Parts) -> Result<(), Error> {
            if !self.wait.is_zero() {
                tokio::time::sleep(self.wait).await;
            }
            self.seen.lock().unwrap().push(self.name);
            match self.name {
                "refuse" => Err(Error::forbidden("refused", "refused")),
                _ => Ok(()),
            }
        }
    }

    #[tokio::test]
    async fn a_list_of_guards_runs_in_order_and_stops_at_the_first_refusal() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let guard = |name, millis| Named { name, wait: Duration::from_millis(millis), seen: seen.clone() };
        for (middle_wait, last) in [(0, "last"), (20, "last"), (0, "refuse"), (20, "refuse")] {
            seen.lock().unwrap().clear();
            let guards = Guards::default()
                .and(guard("first", 0))
                .and(guard("waits", middle_wait))
                .and(guard(last, 0))
                .and(guard("after", 0));
            let app = Router::new().route("/x", get(|| async { "ok" })).layer(guards);
            let (status, _) = answer(&app, "/x").await;
            let label = format!("{middle_wait} ms, {last}");
            match last {
                "last" => {
                    assert_eq!(status, 200, "{label}");
                    assert_eq!(*seen.lock().unwrap(), ["first", "waits", "last", "after"], "{label}");
                }
                _ => {
                    assert_eq!(status, 403, "{label}");
                    assert_eq!(*seen.lock().unwrap(), ["first", "waits", "refuse"], "{label}: none after a refusal");
                }
            }
        }
    }

    /// Decides without waiting for `?now=ok` / `?now=no`, leaves others to `check` (which
    /// lets everything through), and counts what it ran.
    #[derive(Clone, Default)]
    struct Cached {
        ran: Arc<std::sync::Mutex<Vec<&'static str>>>,
    }

    impl Guard for Cached {
        async fn check(&self, parts: &mut Parts) -> Result<(), Error> {
            self.ran.lock().unwrap().push("check");
            parts.extensions.insert(String::from("checked"));
            Ok(())
        }

        fn check_now(&self, parts: &mut Parts) -> Option<Result<(), Error>> {
            let decision = match parts.uri.query()? {
                "now=ok" => Ok(()),
                "now=no" => Err(Error::forbidden("refused_now", "refused at once")),
                _ => return None,
            };
            self.ran.lock().unwrap().push("check_now");
            parts.extensions.insert(String::from("decided at once"));
            Some(decision)
        }
    }

    #[tokio::test]
    async fn a_guard_that_decides_at_once_is_not_checked_again() {
        let guard = Cached::default();
        let app = Router::new()
            .route("/x", get(|Extension(note): Extension<String>| async move { note }))
            .layer(Guards::default().and(guard.clone()));
        assert_eq!(answer(&app, "/x?now=ok").await, (200, "decided at once".to_owned()));
        let (status, body) = answer(&app, "/x?now=no").await;
        assert!(status == 403 && body.contains("refused_now"), "{status} {body}");
        assert_eq!(answer(&app, "/x?later").await, (200, "checked".to_owned()));
        assert_eq!(*guard.ran.lock().unwrap(), ["check_now", "check_now", "check"]);
    }

    /// A store in this process that answers only after a wait, as Redis does, or (`down`)
    /// fails as Redis does when it is down.
    #[derive(Default)]
    struct Remote {
        store: crate::http::rate_limit::MemoryRateLimiter,
        down: bool,
    }

    #[async_trait::async_trait]
    impl crate::http::rate_limit::RateLimiter for Remote {
        async fn check(&self, key: &str, quota: &Quota) -> crate::Result<Decision> {
            tokio::time::sleep(Duration::from_millis(5)).await;
            match self.down {
                true => Err(Error::unavailable("store_down", "the store is down")),
                false => self.store.check(key, quota).await,
            }
        }
    }

    #[tokio::test]
    async fn a_rate_limit_in_the_guards_layer_counts_before_any_guard() {
        use crate::http::rate_limit::{MemoryRateLimiter, RateLimiter};
        for store in ["memory", "remote", "down"] {
            for (guard, wait) in [("pass", 0), ("pass", 20), ("refuse", 0), ("refuse", 20)] {
                let label = format!("{store} store, {guard} after {wait} ms");
                let limiter: Arc<dyn RateLimiter> = match store {
                    "memory" => Arc::new(MemoryRateLimiter::new()),
                    _ => Arc::new(Remote { down: store == "down", ..Default::default() }),
                };
                let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
                let limit = RateLimitLayer::new(limiter, Quota::per_minute(3))
                    .key_by(|req| req.uri().query().map(str::to_owned))
                    .skip(|req| req.uri().query() == Some("free"));
                let guards = Guards::default().rate_limit(limit).and(Named {
                    name: guard,
                    wait: Duration::from_millis(wait),
                    seen: seen.clone(),
                });
                let app = Router::new().route("/x", get(|| async { "ok" })).layer(guards);
                let call =
                    |query: &str| app.clone().oneshot(Request::get(format!("/x?{query}")).body(Body::empty()).unwrap());
                let status = if guard == "pass" { 200 } else { 403 };
                for left in [2, 1, 0] {
                    let response = call("a").await.unwrap();
                    assert_eq!(response.status(), status, "{label}");
                    let header = response.headers().get("ratelimit");
                    match store {
                        "down" => assert!(header.is_none(), "{label}: let through uncounted"),
                        _ => assert_eq!(header.unwrap(), &format!("\"default\";r={left};t={}", (3 - left) * 20)),
                    }
                }
                let fourth = call("a").await.unwrap();
                let guarded = seen.lock().unwrap().len();
                if store == "down" {
                    assert_eq!(fourth.status(), status, "{label}: a store outage is no API outage");
                    assert_eq!(guarded, 4, "{label}");
                    continue;
                }
                assert_eq!(fourth.status(), 429, "{label}");
                assert_eq!(fourth.headers()["ratelimit-policy"], "\"default\";q=3;w=60");
                assert_eq!(guarded, 3, "{label}: a refused request reaches no guard");
                assert_eq!(call("b").await.unwrap().status(), status, "{label}: another key has its own allowance");
                let free = call("free").await.unwrap();
                assert_eq!(free.status(), status, "{label}");
                assert!(!free.headers().contains_key("ratelimit"), "{label}: skipped, no header");
            }
        }
    }
}
