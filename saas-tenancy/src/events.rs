//! Events of the tenant lifecycle, published through the outbox on topic `tenancy`.
//!
//! Each event is a type deriving `DomainEvent` (saas-macros): its `data` is the type's JSON,
//! its envelope carries the tenant id (also the subject). The constants are the versioned
//! types, for consumers that match on `Envelope::event_type`. [`catalog`] lists them all
//! with their JSON Schemas (committed under `schemas/`).

use saas_core::{
    events::EventSchema,
    id::{TenantId, UserId},
};
use saas_macros::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tenant was provisioned: [`TenantProvisioned`].
pub const TENANT_PROVISIONED: &str = "tenancy.tenant_provisioned.v1";
/// A tenant's name or plan changed: [`TenantUpdated`].
pub const TENANT_UPDATED: &str = "tenancy.tenant_updated.v1";
/// A tenant was suspended: [`TenantSuspended`].
pub const TENANT_SUSPENDED: &str = "tenancy.tenant_suspended.v1";
/// A suspended tenant was reactivated: [`TenantReactivated`].
pub const TENANT_REACTIVATED: &str = "tenancy.tenant_reactivated.v1";
/// A tenant was deleted: [`TenantDeleted`]. Every domain erases the tenant's rows when it
/// sees this event (see [`crate::purge`]).
pub const TENANT_DELETED: &str = "tenancy.tenant_deleted.v1";
/// A platform admin set or removed a tenant's quota override: [`ResourceQuotaUpdated`].
pub const RESOURCE_QUOTA_UPDATED: &str = "tenancy.resource_quota_updated.v1";
/// A flag override set to `true`: [`FeatureEnabled`].
pub const FEATURE_ENABLED: &str = "tenancy.feature_enabled.v1";
/// A flag override set to `false`: [`FeatureDisabled`].
pub const FEATURE_DISABLED: &str = "tenancy.feature_disabled.v1";
/// A flag override set to a number or variant, or removed: [`FeatureChanged`].
pub const FEATURE_CHANGED: &str = "tenancy.feature_changed.v1";
/// A platform-admin token was created: [`PlatformAdminTokenCreated`].
pub const PLATFORM_ADMIN_TOKEN_CREATED: &str = "tenancy.platform_admin_token_created.v1";

/// A tenant was provisioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.tenant_provisioned", version = 1)]
pub struct TenantProvisioned {
    /// The new tenant.
    #[event(tenant, subject)]
    pub tenant_id: TenantId,
    /// Its slug.
    pub slug: String,
    /// Its display name.
    pub name: String,
    /// Its plan.
    pub plan: String,
    /// `signup` or `admin`.
    pub via: String,
}

/// A tenant's name or plan changed: the new values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.tenant_updated", version = 1)]
pub struct TenantUpdated {
    /// The tenant.
    #[event(tenant, subject)]
    pub tenant_id: TenantId,
    /// Display name.
    pub name: String,
    /// Plan.
    pub plan: String,
}

/// A tenant was suspended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.tenant_suspended", version = 1)]
pub struct TenantSuspended {
    /// The tenant.
    #[event(tenant, subject)]
    pub tenant_id: TenantId,
    /// Why, as the administrator wrote it.
    pub reason: String,
}

/// A suspended tenant was reactivated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.tenant_reactivated", version = 1)]
pub struct TenantReactivated {
    /// The tenant.
    #[event(tenant, subject)]
    pub tenant_id: TenantId,
}

/// A tenant was deleted; every domain erases its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.tenant_deleted", version = 1)]
pub struct TenantDeleted {
    /// The tenant.
    #[event(tenant, subject)]
    pub tenant_id: TenantId,
}

/// A platform admin set or removed a tenant's quota override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.resource_quota_updated", version = 1)]
pub struct ResourceQuotaUpdated {
    /// The tenant.
    #[event(tenant, subject)]
    pub tenant_id: TenantId,
    /// The quota's name.
    pub quota: String,
    /// The new override; `None` when removed (the plan's limit applies again).
    pub limit: Option<u64>,
}

/// A flag override set to `true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.feature_enabled", version = 1)]
pub struct FeatureEnabled {
    /// The tenant.
    #[event(tenant, subject)]
    pub tenant_id: TenantId,
    /// The flag's name.
    pub feature: String,
    /// The user the override is for; `None` for the whole tenant.
    pub user: Option<UserId>,
}

/// A flag override set to `false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.feature_disabled", version = 1)]
pub struct FeatureDisabled {
    /// The tenant.
    #[event(tenant, subject)]
    pub tenant_id: TenantId,
    /// The flag's name.
    pub feature: String,
    /// The user the override is for; `None` for the whole tenant.
    pub user: Option<UserId>,
}

/// A flag override set to a number or a variant, or removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.feature_changed", version = 1)]
pub struct FeatureChanged {
    /// The tenant.
    #[event(tenant, subject)]
    pub tenant_id: TenantId,
    /// The flag's name.
    pub feature: String,
    /// The user the override is for; `None` for the whole tenant.
    pub user: Option<UserId>,
    /// The new override; `None` when removed.
    pub value: Option<serde_json::Value>,
}

/// A platform-admin token was created (`saas admin bootstrap`). A platform event: it has no
/// tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, DomainEvent)]
#[event(name = "tenancy.platform_admin_token_created", version = 1)]
pub struct PlatformAdminTokenCreated {
    /// The token's name (also the subject); never the token.
    #[event(subject)]
    pub name: String,
}

/// Every event of saas-tenancy with its JSON Schema.
pub fn catalog() -> Vec<EventSchema> {
    vec![
        EventSchema::of::<TenantProvisioned>(),
        EventSchema::of::<TenantUpdated>(),
        EventSchema::of::<TenantSuspended>(),
        EventSchema::of::<TenantReactivated>(),
        EventSchema::of::<TenantDeleted>(),
        EventSchema::of::<ResourceQuotaUpdated>(),
        EventSchema::of::<FeatureEnabled>(),
        EventSchema::of::<FeatureDisabled>(),
        EventSchema::of::<FeatureChanged>(),
        EventSchema::of::<PlatformAdminTokenCreated>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_the_types_of_the_catalog() {
        let types: Vec<String> = catalog().into_iter().map(|e| e.event_type).collect();
        assert_eq!(
            types,
            [
                TENANT_PROVISIONED,
                TENANT_UPDATED,
                TENANT_SUSPENDED,
                TENANT_REACTIVATED,
                TENANT_DELETED,
                RESOURCE_QUOTA_UPDATED,
                FEATURE_ENABLED,
                FEATURE_DISABLED,
                FEATURE_CHANGED,
                PLATFORM_ADMIN_TOKEN_CREATED
            ]
        );
    }
}
