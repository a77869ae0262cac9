//! The tenant a request acts for, as every crate sees it.
//!
//! `saas-tenancy`'s resolution layer puts a [`TenantContext`] into the request extensions
//! after it has checked that the tenant exists and is active. Handlers of any crate take it
//! as an extractor; they never read a tenant from client input themselves.
//!
//! ```
//! use saas_core::tenant::TenantContext;
//!
//! async fn handler(tenant: TenantContext) -> String {
//!     format!("hello, {}", tenant.slug)
//! }
//! # let _ = axum::Router::<()>::new().route("/v1/hello", axum::routing::get(handler));
//! ```
//!
//! `Option<TenantContext>` is `None` when the request names no tenant (platform routes).

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{error::Error, id::TenantId};

/// The resolved, active tenant of the current request.
///
/// Cheap to clone (the slug and plan are shared), as tenant resolution hands one to every
/// request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantContext {
    /// The tenant's id.
    pub id: TenantId,
    /// The tenant's slug (its subdomain).
    pub slug: Arc<str>,
    /// The tenant's plan, which selects quota and feature defaults.
    pub plan: Arc<str>,
}

impl TenantContext {
    /// The tenant resolved for the request `parts` belong to, or 400 `tenant_required`.
    pub fn of(parts: &Parts) -> Result<Self, Error> {
        parts.extensions.get::<TenantContext>().cloned().ok_or_else(|| {
            Error::bad_request(
                "tenant_required",
                "this route acts for a tenant: name it with the `X-Tenant-ID` header (id or slug), \
                 the tenant's subdomain or the `/t/{tenant}` path prefix",
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantContext {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        Self::of(parts)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for TenantContext {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Error> {
        Ok(parts.extensions.get::<TenantContext>().cloned())
    }
}
