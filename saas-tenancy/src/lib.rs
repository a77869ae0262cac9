//! Tenant management for saas-rs (bounded context *Tenant Management*).
//!
//! | piece | what it does |
//! |---|---|
//! | [`Tenants`] | the lifecycle: provision, get, list, update, suspend, reactivate, delete; every change and its [event](events) in one transaction |
//! | [`TenantLayer`] | finds the request's tenant (token claim, subdomain, `X-Tenant-ID`, `/t/{tenant}`) and puts a [`TenantContext`](saas_core::tenant::TenantContext) into the request |
//! | [`api::router`] | `POST /v1/signup`, `GET /v1/tenant`, platform administration under `/v1/tenants` |
//! | [`admin`] | platform-admin tokens (`saas admin bootstrap`) and the [`PlatformAdmin`](admin::PlatformAdmin) extractor |
//! | [`purge`] | erasing a deleted tenant's rows in every domain |
//! | [`quota`] | resource quotas: limits per plan and tenant, atomic consumption, [`RequireQuota`](quota::RequireQuota) |
//! | [`feature`] | feature flags: default < plan < tenant < user, stable rollouts, [`RequireFeature`](feature::RequireFeature) |
//! | [`routing`] | [`TenantRouter`](routing::TenantRouter): a large tenant in a schema or database of its own |
//!
//! Tenant-owned tables of your own get the same isolation with `#[derive(TenantScoped)]`
//! (saas-macros) and [`saas_core::rls_policy!`]; see [`saas_core::db::scoped`].
//!
//! Adding tenancy to an axum app:
//!
//! ```no_run
//! # async fn demo(db: saas_core::db::Db, cache: std::sync::Arc<dyn saas_core::cache::Cache>) {
//! use axum::{Router, routing::get};
//! use saas_core::{config::TenantSource, tenant::TenantContext};
//! use saas_tenancy::{TenantLayer, Tenants};
//!
//! async fn hello(tenant: TenantContext) -> String {
//!     format!("hello, {}", tenant.slug)
//! }
//!
//! let tenants = Tenants::new(db, cache);
//! let app: Router = Router::new()
//!     .route("/v1/hello", get(hello))
//!     .layer(TenantLayer::new(tenants, &[TenantSource::Header, TenantSource::Subdomain], Some("example.com")));
//! # }
//! ```

pub mod admin;
pub mod api;
pub mod events;
pub mod feature;
pub mod purge;
pub mod quota;
pub mod resolve;
pub mod routing;
pub mod signup;
pub mod slug;

mod service;
mod store;
mod tenant;

use saas_core::db::migrate::{Migration, Migrations};

pub use resolve::{PathPrefixStripped, TenantLayer, X_TENANT_ID, strip_path_prefix};
pub use service::{DEFAULT_PLAN, LOCAL_TTL, NewTenant, TenantPatch, Tenants};
pub use tenant::{Tenant, TenantRef, TenantStatus, TenantView};

/// The tenant-owned tables of quotas and flags, one text for both engines (PostgreSQL adds
/// row-level security).
macro_rules! quota_and_feature_tables {
    () => {
        "CREATE TABLE quota_overrides (
            tenant_id TEXT NOT NULL,
            quota TEXT NOT NULL,
            limit_value BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, quota)
        );
        CREATE TABLE quota_usage (
            tenant_id TEXT NOT NULL,
            quota TEXT NOT NULL,
            period_start BIGINT NOT NULL,
            used BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, quota, period_start)
        );
        CREATE TABLE feature_overrides (
            tenant_id TEXT NOT NULL,
            feature TEXT NOT NULL,
            user_id TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, feature, user_id)
        );"
    };
}

/// Tables of saas-tenancy; part of `saas migrate`.
pub static MIGRATIONS: Migrations = Migrations {
    component: "saas-tenancy",
    list: &[
        Migration::portable(
            1,
            "tenants and platform-admin tokens",
            "CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            slug TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            plan TEXT NOT NULL,
            status TEXT NOT NULL,
            suspended_reason TEXT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            deleted_at BIGINT,
            purged_at BIGINT
        );
        CREATE TABLE platform_admin_tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at BIGINT NOT NULL
        );",
        ),
        Migration::per_engine(
            2,
            "quotas and feature overrides",
            quota_and_feature_tables!(),
            concat!(
                quota_and_feature_tables!(),
                saas_core::rls_policy!("quota_overrides"),
                saas_core::rls_policy!("quota_usage"),
                saas_core::rls_policy!("feature_overrides"),
            ),
        ),
        Migration::portable(
            3,
            "tenant placements",
            "CREATE TABLE tenant_placements (
                tenant_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                target TEXT NOT NULL,
                created_at BIGINT NOT NULL
            );",
        ),
    ],
};
