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
    sync::Arc,
    task::{Context, Poll, Waker},
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use futures::future::{BoxFuture, Either};
use http::{Request, request::Parts};
use tower::Service;

use crate::error::Error;

/// A check before the handler; see the [module docs](self).
pub trait Guard: Clone + Send + Sync + 'static {
    /// Lets the request through (`Ok`, after changing `parts` if need be) or refuses it.
    fn check(&self, parts: &mut Parts) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Runs guard `G` before service `S`.
pub struct GuardService<G, S> {
    // Shared: the service is cloned for every request, and a guard may hold many handles
    // (caches, pools) whose clones would each cost atomic operations.
    guard: Arc<G>,
    inner: S,
}

impl<G, S: Clone> Clone for GuardService<G, S> {
    fn clone(&self) -> Self {
        Self { guard: self.guard.clone(), inner: self.inner.clone() }
    }
}

impl<G, S> GuardService<G, S> {
    /// Guards `inner` with `guard`.
    pub fn new(guard: G, inner: S) -> Self {
        Self { guard: Arc::new(guard), inner }
    }
}

impl<G, S> Service<Request<Body>> for GuardService<G, S>
where
    G: Guard,
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    /// A check that finished at once leaves the inner service's future unboxed.
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let guard = self.guard.clone();
        let mut check = Box::pin(async move {
            let mut parts = parts;
            let checked = guard.check(&mut parts).await;
            (checked, parts)
        });
        // Most checks finish without waiting (a cached token, tenant or key): then the
        // service made ready is called here, uncloned. Cloning it clones every layer below,
        // one allocation each, on every request. A check that waits is polled again, with
        // the task's waker, by the future returned below.
        match check.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready((Ok(()), parts)) => Either::Left(self.inner.call(Request::from_parts(parts, body))),
            Poll::Ready((Err(error), _)) => Either::Right(Box::pin(std::future::ready(Ok(error.into_response())))),
            Poll::Pending => {
                // The clone serves the next request; this call takes the one made ready.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Either::Right(Box::pin(async move {
                    match check.await {
                        (Ok(()), parts) => inner.call(Request::from_parts(parts, body)).await,
                        (Err(error), _) => Ok(error.into_response()),
                    }
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Extension, Router, routing::get};
    use tower::ServiceExt;

    use super::*;

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
}
