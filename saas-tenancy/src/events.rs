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

/// A platform admin set or removed a tenant's quota override. Data: [`ResourceQuotaUpdated`].
pub const RESOURCE_QUOTA_UPDATED: &str = "tenancy.resource_quota_updated.v1";

/// Data of [`RESOURCE_QUOTA_UPDATED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceQuotaUpdated {
    /// The quota's name.
    pub quota: String,
    /// The new override; `None` when removed (the plan's limit applies again).
    pub limit: Option<u64>,
}

/// A flag override set to `true`. Data: [`FeatureChanged`].
pub const FEATURE_ENABLED: &str = "tenancy.feature_enabled.v1";
/// A flag override set to `false`. Data: [`FeatureChanged`].
pub const FEATURE_DISABLED: &str = "tenancy.feature_disabled.v1";
/// A flag override set to a number or variant, or removed. Data: [`FeatureChanged`].
pub const FEATURE_CHANGED: &str = "tenancy.feature_changed.v1";

/// Data of the feature events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureChanged {
    /// The flag's name.
    pub feature: String,
    /// The user the override is for; `None` for the whole tenant.
    pub user: Option<saas_core::id::UserId>,
    /// The new override; `None` when removed.
    pub value: Option<serde_json::Value>,
}
