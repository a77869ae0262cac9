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
