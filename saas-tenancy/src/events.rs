//! Events of the tenant lifecycle, published through the outbox on topic `tenancy`.
//!
//! Each payload is the `data` of an [`Envelope`](saas_core::events::Envelope) whose type is
//! the constant next to it; the envelope carries the tenant id.

use serde::{Deserialize, Serialize};

/// A tenant was provisioned. Data: [`TenantProvisioned`].
pub const TENANT_PROVISIONED: &str = "tenancy.tenant_provisioned.v1";
/// A tenant's name or plan changed. Data: [`TenantUpdated`].
pub const TENANT_UPDATED: &str = "tenancy.tenant_updated.v1";
/// A tenant was suspended. Data: [`TenantSuspended`].
pub const TENANT_SUSPENDED: &str = "tenancy.tenant_suspended.v1";
/// A suspended tenant was reactivated. Data: `{}`.
pub const TENANT_REACTIVATED: &str = "tenancy.tenant_reactivated.v1";
/// A tenant was deleted: every domain erases the tenant's rows when it sees this event
/// (see [`crate::purge`]). Data: `{}`.
pub const TENANT_DELETED: &str = "tenancy.tenant_deleted.v1";

/// Data of [`TENANT_PROVISIONED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantProvisioned {
    /// The new tenant's slug.
    pub slug: String,
    /// Its display name.
    pub name: String,
    /// Its plan.
    pub plan: String,
    /// `signup` or `admin`.
    pub via: String,
}

/// Data of [`TENANT_UPDATED`]: the new values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantUpdated {
    /// Display name.
    pub name: String,
    /// Plan.
    pub plan: String,
}

/// Data of [`TENANT_SUSPENDED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSuspended {
    /// Why, as the administrator wrote it.
    pub reason: String,
}
