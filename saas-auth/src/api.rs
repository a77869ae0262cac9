//! HTTP routes: `POST /v1/auth/login`, `GET /v1/auth/me`, `GET /.well-known/jwks.json`.

use axum::extract::{FromRef, State};
use saas_core::{
    error::{Problem, Result},
    http::Json,
    tenant::TenantContext,
};
use saas_tenancy::admin::{PlatformAdmin, PlatformAdmins};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    keys::Jwks,
    principal::Principal,
    service::{Auth, TokenResponse},
    users::UserView,
};

#[derive(OpenApi)]
#[openapi(tags((name = "auth", description = "Sign-in, the signed-in user, and the token keys")))]
struct AuthDoc;

/// What the identity routes need.
#[derive(Clone)]
pub struct AuthState {
    /// The identity service.
    pub auth: Auth,
    /// Platform-admin token verification (for unlocking accounts).
    pub admins: PlatformAdmins,
}

impl FromRef<AuthState> for PlatformAdmins {
    fn from_ref(state: &AuthState) -> Self {
        state.admins.clone()
    }
}

impl FromRef<AuthState> for Auth {
    fn from_ref(state: &AuthState) -> Self {
        state.auth.clone()
    }
}

/// The identity routes, documented.
pub fn router(auth: Auth, admins: PlatformAdmins) -> OpenApiRouter {
    OpenApiRouter::with_openapi(AuthDoc::openapi())
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(unlock))
        .routes(routes!(jwks))
        .with_state(AuthState { auth, admins })
}

/// `POST /v1/auth/unlock` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UnlockRequest {
    /// The account's e-mail address.
    email: String,
}

/// Lifts the login back-off or lock-out of an account of the request's tenant.
#[utoipa::path(
    post, path = "/v1/auth/unlock", tag = "auth", security(("platform_admin" = [])),
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug")),
    request_body = UnlockRequest,
    responses(
        (status = 204, description = "Unlocked (also when the account was not locked or does not exist)"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn unlock(
    _: PlatformAdmin,
    State(auth): State<Auth>,
    tenant: TenantContext,
    Json(body): Json<UnlockRequest>,
) -> Result<axum::http::StatusCode> {
    auth.unlock(tenant.id, &body.email).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    /// E-mail address.
    #[schema(example = "ada@acme.example")]
    email: String,
    /// Password.
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

/// Signs in to the request's tenant.
#[utoipa::path(
    post, path = "/v1/auth/login", tag = "auth",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug (or use the subdomain or `/t/{tenant}` prefix)")),
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "No tenant named", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong e-mail address or password (one answer for both)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`login_throttled`: too many failures for this account or address; `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`login_throttled`: too many failures for this account or address; `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins at once; `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    State(auth): State<Auth>,
    tenant: TenantContext,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    Json(body): Json<LoginRequest>,
) -> Result<Json<TokenResponse>> {
    let client = client.map(|c| c.0.0.ip().to_string());
    Ok(Json(auth.login(&tenant, &body.email, &body.password, client.as_deref()).await?))
}

/// `POST /v1/auth/refresh` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    /// The refresh token of the last login or refresh; it is used up.
    refresh_token: String,
}

/// Trades a refresh token for a new access token and a new refresh token.
#[utoipa::path(
    post, path = "/v1/auth/refresh", tag = "auth",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug (or use the subdomain or `/t/{tenant}` prefix)")),
    request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "`invalid_refresh_token`, or `refresh_token_reused` (the session is revoked)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn refresh(
    State(auth): State<Auth>,
    tenant: TenantContext,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>> {
    Ok(Json(auth.refresh(&tenant, &body.refresh_token).await?))
}

/// Ends the current session: its refresh tokens stop at once, its access tokens within
/// `auth.session_check_secs`.
#[utoipa::path(
    post, path = "/v1/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn logout(State(auth): State<Auth>, principal: Principal) -> Result<axum::http::StatusCode> {
    auth.logout(principal.tenant, principal.user, &principal.session).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(
    get, path = "/v1/auth/me", tag = "auth",
    responses(
        (status = 200, body = UserView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn me(State(auth): State<Auth>, principal: Principal) -> Result<Json<UserView>> {
    Ok(Json(auth.user(principal.tenant, principal.user).await?.view()))
}

/// The public keys that verify access tokens (RFC 7517, Ed25519 keys as in RFC 8037).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", responses((status = 200, body = Jwks)))]
async fn jwks(State(auth): State<Auth>) -> Json<Jwks> {
    Json(auth.keys().jwks().await)
}
