//! HTTP routes: `POST /v1/signup`, the tenant's own `GET /v1/tenant`, and the platform
//! administration under `/v1/tenants` (platform-admin bearer token).

use std::sync::Arc;

use axum::{
    extract::{FromRef, State},
    http::StatusCode,
};
use saas_core::{
    error::{Error, FieldError, Problem, Result},
    http::{Json, Path, Query},
    id::{TenantId, UserId},
    page::{Page, PageQuery},
    tenant::TenantContext,
};
use serde::Deserialize;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    admin::{PlatformAdmin, PlatformAdmins},
    feature::Features,
    quota::{QuotaUsage, Quotas},
    service::{NewTenant, TenantPatch, Tenants},
    signup::{OwnerRegistrar, SignupRequest, SignupResponse},
    tenant::{Tenant, TenantStatus, TenantView},
};

/// What the tenancy routes need.
#[derive(Clone)]
pub struct TenancyState {
    /// The tenant lifecycle.
    pub tenants: Tenants,
    /// Platform-admin token verification.
    pub admins: PlatformAdmins,
    /// Creates the owner at sign-up (saas-auth); `None` refuses sign-ups with an owner.
    pub owners: Option<Arc<dyn OwnerRegistrar>>,
    /// Quota limits and usage.
    pub quotas: Quotas,
    /// Feature flags.
    pub features: Features,
    /// Tells members of a tenant (saas-auth); without it only platform admins read a
    /// tenant's own routes.
    pub members: Option<Arc<dyn TenantMembership>>,
}

/// Decides whether a request comes from a signed-in member of its tenant; saas-auth
/// implements it.
pub trait TenantMembership: Send + Sync + 'static {
    /// Whether the request `parts` belong to was made by a member of `tenant`.
    fn is_member(&self, parts: &http::request::Parts, tenant: &TenantContext) -> bool;
}

/// The tenant of a request made by one of its members or by a platform admin; anyone else
/// gets 401 `unauthorized` (and a request naming no tenant 400 `tenant_required`).
struct TenantReader(TenantContext);

impl axum::extract::FromRequestParts<TenancyState> for TenantReader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &TenancyState) -> Result<Self> {
        let tenant = TenantContext::of(parts)?;
        if state.members.as_ref().is_some_and(|m| m.is_member(parts, &tenant)) {
            return Ok(Self(tenant));
        }
        match PlatformAdmin::from_request_parts(parts, state).await {
            Ok(PlatformAdmin) => Ok(Self(tenant)),
            Err(_) => Err(Error::unauthorized(
                "unauthorized",
                "sign in as a member of this tenant, or use a platform-admin bearer token",
            )),
        }
    }
}

impl FromRef<TenancyState> for PlatformAdmins {
    fn from_ref(state: &TenancyState) -> Self {
        state.admins.clone()
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&PlatformAdminScheme),
    tags((name = "tenancy", description = "Sign-up, the current tenant, and platform administration of tenants"))
)]
struct TenancyDoc;

struct PlatformAdminScheme;

impl Modify for PlatformAdminScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "platform_admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from `saas admin bootstrap` or `tenancy.platform_admin_token`"))
                    .build(),
            ),
        );
    }
}

/// The tenancy routes, documented.
pub fn router(state: TenancyState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(TenancyDoc::openapi())
        .routes(routes!(signup))
        .routes(routes!(current_tenant))
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant, update_tenant, delete_tenant))
        .routes(routes!(suspend_tenant))
        .routes(routes!(reactivate_tenant))
        .routes(routes!(own_quotas))
        .routes(routes!(own_features))
        .routes(routes!(tenant_quotas))
        .routes(routes!(set_quota_override))
        .routes(routes!(tenant_features))
        .routes(routes!(set_feature_override))
        .with_state(state)
}

/// Signs up: creates a tenant and, through the owner registrar, its first owner, in one
/// transaction.
#[utoipa::path(
    post, path = "/v1/signup", tag = "tenancy",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "The tenant (and owner) were created", body = SignupResponse),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn signup(
    State(state): State<TenancyState>,
    Json(request): Json<SignupRequest>,
) -> Result<(StatusCode, Json<SignupResponse>)> {
    if request.owner.is_some() && state.owners.is_none() {
        return Err(Error::validation([FieldError::new(
            "owner",
            "unsupported",
            "this server creates no user accounts (saas-auth is not installed); sign up without `owner`",
        )]));
    }
    // Hashed before the transaction: it would hold its locks for the length of a hash.
    let owner = match (request.owner, &state.owners) {
        (Some(owner), Some(registrar)) => Some((registrar, registrar.prepare_owner(owner).await?)),
        _ => None,
    };
    let new = NewTenant { slug: request.slug, name: request.name, plan: None };
    let mut tx = state.tenants.db().begin().await?;
    let tenant = state.tenants.provision_in(&mut tx, new, "signup").await?;
    let owner = match owner {
        Some((registrar, owner)) => Some(registrar.register_owner(&mut tx, &tenant, owner).await?),
        None => None,
    };
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(SignupResponse { tenant: tenant.into(), owner })))
}

/// The tenant this request acts for.
#[utoipa::path(
    get, path = "/v1/tenant", tag = "tenancy",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug (or use the subdomain or `/t/{tenant}` prefix)")),
    responses(
        (status = 200, body = TenantView),
        (status = 401, description = "Not a member of the tenant nor a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "No tenant named, or sources disagree", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is suspended", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn current_tenant(
    State(state): State<TenancyState>,
    TenantReader(tenant): TenantReader,
) -> Result<Json<TenantView>> {
    Ok(Json(state.tenants.get(tenant.id).await?.into()))
}

/// Query of `GET /v1/tenants`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Items per page, 1 to 100 (default 20).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only tenants in this status (deleted ones are listed only this way).
    status: Option<TenantStatus>,
}

/// Lists tenants in creation order.
#[utoipa::path(
    get, path = "/v1/tenants", tag = "tenancy", security(("platform_admin" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = Page<Tenant>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_tenants(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<Tenant>>> {
    let page = PageQuery { limit: query.limit, cursor: query.cursor };
    Ok(Json(state.tenants.list(&page, query.status).await?))
}

/// Provisions a tenant.
#[utoipa::path(
    post, path = "/v1/tenants", tag = "tenancy", security(("platform_admin" = [])),
    request_body = NewTenant,
    responses(
        (status = 201, body = Tenant),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_tenant(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Json(new): Json<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>)> {
    Ok((StatusCode::CREATED, Json(state.tenants.provision(new).await?)))
}

/// Reads a tenant.
#[utoipa::path(
    get, path = "/v1/tenants/{id}", tag = "tenancy", security(("platform_admin" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, body = Tenant),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_tenant(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Path(id): Path<TenantId>,
) -> Result<Json<Tenant>> {
    Ok(Json(state.tenants.get(id).await?))
}

/// Changes a tenant's name or plan.
#[utoipa::path(
    patch, path = "/v1/tenants/{id}", tag = "tenancy", security(("platform_admin" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    request_body = TenantPatch,
    responses(
        (status = 200, body = Tenant),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_tenant(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Path(id): Path<TenantId>,
    Json(patch): Json<TenantPatch>,
) -> Result<Json<Tenant>> {
    Ok(Json(state.tenants.update(id, patch).await?))
}

/// Deletes a tenant: it answers 404 from now on and every domain erases its data.
#[utoipa::path(
    delete, path = "/v1/tenants/{id}", tag = "tenancy", security(("platform_admin" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 204, description = "Deleted; erasure follows"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_tenant(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Path(id): Path<TenantId>,
) -> Result<StatusCode> {
    state.tenants.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/tenants/{id}/suspend` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SuspendRequest {
    /// Why, 1 to 500 characters; shown to platform admins only.
    #[schema(example = "unpaid invoice")]
    reason: String,
}

/// Suspends an active tenant: every request naming it gets 403 until it is reactivated.
#[utoipa::path(
    post, path = "/v1/tenants/{id}/suspend", tag = "tenancy", security(("platform_admin" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    request_body = SuspendRequest,
    responses(
        (status = 200, body = Tenant),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant is not active", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn suspend_tenant(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Path(id): Path<TenantId>,
    Json(request): Json<SuspendRequest>,
) -> Result<Json<Tenant>> {
    Ok(Json(state.tenants.suspend(id, &request.reason).await?))
}

/// Reactivates a suspended tenant.
#[utoipa::path(
    post, path = "/v1/tenants/{id}/reactivate", tag = "tenancy", security(("platform_admin" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, body = Tenant),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant is not suspended", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn reactivate_tenant(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Path(id): Path<TenantId>,
) -> Result<Json<Tenant>> {
    Ok(Json(state.tenants.reactivate(id).await?))
}

/// The current tenant's quotas: limit and usage of each.
#[utoipa::path(
    get, path = "/v1/tenant/quotas", tag = "tenancy",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug (or use the subdomain or `/t/{tenant}` prefix)")),
    responses(
        (status = 200, body = Vec<QuotaUsage>),
        (status = 401, description = "Not a member of the tenant nor a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn own_quotas(
    State(state): State<TenancyState>,
    TenantReader(tenant): TenantReader,
) -> Result<Json<Vec<QuotaUsage>>> {
    Ok(Json(state.quotas.usage(&tenant).await?))
}

/// The current tenant's feature flags, evaluated (for the signed-in user, once saas-auth
/// identifies one).
#[utoipa::path(
    get, path = "/v1/tenant/features", tag = "tenancy",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug (or use the subdomain or `/t/{tenant}` prefix)")),
    responses(
        (status = 200, description = "Flag name to value (boolean, number or variant)", body = Object),
        (status = 401, description = "Not a member of the tenant nor a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn own_features(
    State(state): State<TenancyState>,
    TenantReader(tenant): TenantReader,
    caller: Option<axum::Extension<saas_core::caller::Caller>>,
) -> Result<Json<std::collections::BTreeMap<String, serde_json::Value>>> {
    Ok(Json(state.features.all(&tenant, caller.map(|caller| caller.user)).await?))
}

/// A tenant's quotas: limit and usage of each.
#[utoipa::path(
    get, path = "/v1/tenants/{id}/quotas", tag = "tenancy", security(("platform_admin" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, body = Vec<QuotaUsage>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn tenant_quotas(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Path(id): Path<TenantId>,
) -> Result<Json<Vec<QuotaUsage>>> {
    let tenant = state.tenants.get(id).await?.context();
    Ok(Json(state.quotas.usage(&tenant).await?))
}

/// `PUT /v1/tenants/{id}/quotas/{quota}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct QuotaOverride {
    /// The tenant's own limit; `null` removes the override (the plan's limit applies).
    limit: Option<u64>,
}

/// Sets or removes a tenant's limit of one quota.
#[utoipa::path(
    put, path = "/v1/tenants/{id}/quotas/{quota}", tag = "tenancy", security(("platform_admin" = [])),
    params(("id" = String, Path, description = "Tenant id"), ("quota" = String, Path, description = "Quota name")),
    request_body = QuotaOverride,
    responses(
        (status = 200, description = "The tenant's quotas after the change", body = Vec<QuotaUsage>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant or quota", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn set_quota_override(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Path((id, quota)): Path<(TenantId, String)>,
    Json(body): Json<QuotaOverride>,
) -> Result<Json<Vec<QuotaUsage>>> {
    let tenant = state.tenants.get(id).await?.context();
    state.quotas.set_override(id, &quota, body.limit).await?;
    Ok(Json(state.quotas.usage(&tenant).await?))
}

/// A tenant's feature flags, evaluated for the tenant.
#[utoipa::path(
    get, path = "/v1/tenants/{id}/features", tag = "tenancy", security(("platform_admin" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "Flag name to value", body = Object),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn tenant_features(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Path(id): Path<TenantId>,
) -> Result<Json<std::collections::BTreeMap<String, serde_json::Value>>> {
    let tenant = state.tenants.get(id).await?.context();
    Ok(Json(state.features.all(&tenant, None).await?))
}

/// `PUT /v1/tenants/{id}/features/{feature}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FeatureOverride {
    /// The value (same type as the flag's default); `null` removes the override.
    #[schema(value_type = Object)]
    value: Option<serde_json::Value>,
    /// The override is for this user of the tenant only; absent for the whole tenant.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    user_id: Option<UserId>,
}

/// Sets or removes a tenant's (or one of its users') override of a flag.
#[utoipa::path(
    put, path = "/v1/tenants/{id}/features/{feature}", tag = "tenancy", security(("platform_admin" = [])),
    params(("id" = String, Path, description = "Tenant id"), ("feature" = String, Path, description = "Flag name")),
    request_body = FeatureOverride,
    responses(
        (status = 204, description = "Set"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant or flag", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The value's type differs from the flag's", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn set_feature_override(
    _: PlatformAdmin,
    State(state): State<TenancyState>,
    Path((id, feature)): Path<(TenantId, String)>,
    Json(body): Json<FeatureOverride>,
) -> Result<StatusCode> {
    state.tenants.get(id).await?;
    state.features.set_override(id, body.user_id, &feature, body.value).await?;
    Ok(StatusCode::NO_CONTENT)
}
