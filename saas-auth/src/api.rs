//! HTTP routes: `POST /v1/auth/login`, `GET /v1/auth/me`, `GET /.well-known/jwks.json`.

use axum::extract::State;
use saas_core::{
    error::{Problem, Result},
    http::Json,
    tenant::TenantContext,
};
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

/// The identity routes, documented.
pub fn router(auth: Auth) -> OpenApiRouter {
    OpenApiRouter::with_openapi(AuthDoc::openapi())
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(jwks))
        .with_state(auth)
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
        (status = 503, description = "Too many sign-ins at once; `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    State(auth): State<Auth>,
    tenant: TenantContext,
    Json(body): Json<LoginRequest>,
) -> Result<Json<TokenResponse>> {
    Ok(Json(auth.login(&tenant, &body.email, &body.password).await?))
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
