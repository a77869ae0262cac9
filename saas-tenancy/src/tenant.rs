//! The Tenant aggregate: one customer organisation.

use saas_core::{error::Error, id::TenantId, tenant::TenantContext};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where a tenant is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Serving requests.
    Active,
    /// Refused with 403 until reactivated; data is kept.
    Suspended,
    /// Soft-deleted: answers 404 like an unknown tenant; its data is being (or has been)
    /// erased. The slug stays taken.
    Deleted,
}

impl TenantStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "deleted" => Ok(Self::Deleted),
            other => Err(Error::internal(anyhow::anyhow!("unknown tenant status `{other}` in the database"))),
        }
    }
}

/// A tenant as the platform administration sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    /// The tenant's id.
    #[schema(value_type = String, example = "ten_01jdq3zbm6e8x9t0d8m0a7y7qk")]
    pub id: TenantId,
    /// Unique, URL-safe name; the tenant's subdomain.
    #[schema(example = "acme")]
    pub slug: String,
    /// Display name.
    #[schema(example = "Acme Corporation")]
    pub name: String,
    /// Plan, which selects quota and feature defaults.
    #[schema(example = "free")]
    pub plan: String,
    /// Lifecycle state.
    pub status: TenantStatus,
    /// Why the tenant is suspended, for platform administrators (never shown to the tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_reason: Option<String>,
    /// When the tenant was provisioned.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When the tenant last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl Tenant {
    /// What the request pipeline carries for this tenant.
    pub fn context(&self) -> TenantContext {
        TenantContext { id: self.id, slug: self.slug.as_str().into(), plan: self.plan.as_str().into() }
    }
}

/// The tenant's own view of itself (`GET /v1/tenant`): no administrative fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantView {
    /// The tenant's id.
    #[schema(value_type = String)]
    pub id: TenantId,
    /// The tenant's slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Plan.
    pub plan: String,
    /// When the tenant was provisioned.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self { id: t.id, slug: t.slug, name: t.name, plan: t.plan, created_at: t.created_at }
    }
}

/// How a client names a tenant: its id (`ten_…`) or its slug.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TenantRef {
    /// By id.
    Id(TenantId),
    /// By slug (not validated: an invalid slug simply matches no tenant).
    Slug(String),
}

impl TenantRef {
    /// Reads `ten_…` as an id and anything else as a slug.
    pub fn parse(text: &str) -> Self {
        match text.parse::<TenantId>() {
            Ok(id) => Self::Id(id),
            Err(_) => Self::Slug(text.to_ascii_lowercase()),
        }
    }
}
