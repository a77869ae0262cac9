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
    task::{Context, Poll},
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use futures::future::BoxFuture;
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
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone serves the next request; this call takes the one that was made ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            match guard.check(&mut parts).await {
                Ok(()) => inner.call(Request::from_parts(parts, body)).await,
                Err(error) => Ok(error.into_response()),
            }
        })
    }
}
