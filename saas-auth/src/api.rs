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
    api_keys::ApiKeyView,
    keys::Jwks,
    mfa::Enrolment,
    principal::Principal,
    service::{Auth, LoginOutcome, TokenResponse},
    users::UserView,
};

/// The caller's address (the TCP peer), for the login throttle; `None` without one.
struct ClientAddress(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> std::result::Result<Self, Self::Rejection> {
        Ok(Self(saas_core::http::peer_ip(&parts.extensions).map(|ip| ip.to_string())))
    }
}

#[derive(OpenApi)]
#[openapi(tags(
    (name = "auth", description = "Sign-in, the signed-in user, and the token keys"),
    (name = "audit", description = "The tenant's tamper-evident audit log: its entries, and whether the chain is intact")
))]
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
        .routes(routes!(change_password))
        .routes(routes!(enroll_mfa))
        .routes(routes!(confirm_mfa))
        .routes(routes!(verify_mfa))
        .routes(routes!(disable_mfa))
        .routes(routes!(request_email_verification))
        .routes(routes!(verify_email))
        .routes(routes!(request_password_reset))
        .routes(routes!(reset_password))
        .routes(routes!(me))
        .routes(routes!(unlock))
        .routes(routes!(list_roles))
        .routes(routes!(set_role))
        .routes(routes!(assign_roles))
        .routes(routes!(invite_user))
        .routes(routes!(reset_mfa))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(jwks))
        .routes(routes!(verify_audit))
        .routes(routes!(list_audit_entries))
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
        (status = 200, description = "Tokens, or with MFA on `{mfa_required, mfa_token, expires_in}`", body = LoginOutcome),
        (status = 400, description = "No tenant named", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong e-mail address or password (one answer for both)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`login_throttled`: too many failures for this account or address; `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins at once; `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    State(auth): State<Auth>,
    tenant: TenantContext,
    ClientAddress(client): ClientAddress,
    Json(body): Json<LoginRequest>,
) -> Result<Json<LoginOutcome>> {
    Ok(Json(auth.begin_login(&tenant, &body.email, &body.password, client.as_deref()).await?))
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
    if principal.api_key.is_some() {
        return Err(saas_core::Error::bad_request(
            "not_a_session",
            "an API key has no session to end; revoke the key instead",
        ));
    }
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

/// A role and what it grants.
#[derive(Debug, serde::Serialize, Deserialize, utoipa::ToSchema)]
struct RoleView {
    /// The role's name.
    name: String,
    /// Permissions and patterns (`*`, `invoices:*`, `*:read`).
    permissions: Vec<String>,
    /// Whether it is built in (owner, admin, member).
    builtin: bool,
}

/// The tenant's roles, built-in and custom.
#[utoipa::path(
    get, path = "/v1/auth/roles", tag = "auth",
    responses(
        (status = 200, body = Vec<RoleView>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `roles:read`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("roles:read")]
async fn list_roles(State(auth): State<Auth>, principal: Principal) -> Result<Json<Vec<RoleView>>> {
    let roles = auth.roles(principal.tenant).await?;
    Ok(Json(
        roles
            .into_iter()
            .map(|(name, permissions)| RoleView {
                builtin: crate::rbac::builtin_role(&name).is_some(),
                name,
                permissions,
            })
            .collect(),
    ))
}

/// `PUT /v1/auth/roles/{name}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RoleDefinition {
    /// What the role grants: `resource:action`, or patterns with `*`.
    #[schema(example = json!(["invoices:read", "invoices:write"]))]
    permissions: Vec<String>,
}

/// Defines or changes a custom role of the tenant.
#[utoipa::path(
    put, path = "/v1/auth/roles/{name}", tag = "auth",
    params(("name" = String, Path, description = "Role name (not owner, admin or member)")),
    request_body = RoleDefinition,
    responses(
        (status = 204, description = "Defined; users get it with their next token"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `roles:write`", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("roles:write")]
async fn set_role(
    State(auth): State<Auth>,
    principal: Principal,
    saas_core::http::Path(name): saas_core::http::Path<String>,
    Json(body): Json<RoleDefinition>,
) -> Result<axum::http::StatusCode> {
    if body.permissions.len() > 200 {
        return Err(saas_core::Error::validation([saas_core::error::FieldError::new(
            "permissions",
            "too_many",
            "at most 200",
        )]));
    }
    auth.set_role(&principal, &name, &body.permissions).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `PUT /v1/auth/users/{id}/roles` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RoleAssignment {
    /// The user's roles from now on.
    #[schema(example = json!(["member", "billing"]))]
    roles: Vec<String>,
}

/// Sets the roles of a user of the tenant.
#[utoipa::path(
    put, path = "/v1/auth/users/{id}/roles", tag = "auth",
    params(("id" = String, Path, description = "User id")),
    request_body = RoleAssignment,
    responses(
        (status = 200, body = UserView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `users:write`", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`last_owner`: the tenant's last owner keeps the role; `roles_changed`: changed meanwhile, retry", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("users:write")]
async fn assign_roles(
    State(auth): State<Auth>,
    principal: Principal,
    saas_core::http::Path(user): saas_core::http::Path<saas_core::id::UserId>,
    Json(body): Json<RoleAssignment>,
) -> Result<Json<UserView>> {
    Ok(Json(auth.assign_roles(&principal, user, &body.roles).await?.view()))
}

/// `POST /v1/auth/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Invitation {
    /// The new user's e-mail address; the invitation goes there.
    #[schema(example = "grace@acme.test")]
    email: String,
    /// Display name, at most 200 characters.
    #[serde(default)]
    name: Option<String>,
    /// Roles (default `["member"]`); you must hold everything they grant.
    #[serde(default = "default_roles")]
    roles: Vec<String>,
}

fn default_roles() -> Vec<String> {
    vec!["member".into()]
}

/// Invites a user to the tenant: the account is created without a usable password, and a
/// code (valid 7 days) to choose one at `POST /v1/auth/password/reset` is mailed to them.
#[utoipa::path(
    post, path = "/v1/auth/users", tag = "auth",
    request_body = Invitation,
    responses(
        (status = 201, body = UserView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `users:write` and everything the roles grant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`email_taken`", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("users:write")]
async fn invite_user(
    State(auth): State<Auth>,
    principal: Principal,
    Json(body): Json<Invitation>,
) -> Result<(axum::http::StatusCode, Json<UserView>)> {
    let user = auth.invite_user(&principal, &body.email, body.name, &body.roles).await?;
    Ok((axum::http::StatusCode::CREATED, Json(user.view())))
}

/// Turns MFA off for a user who lost their authenticator, and signs out all of their
/// sessions; they sign in with their password alone and may enrol again.
#[utoipa::path(
    delete, path = "/v1/auth/users/{id}/mfa", tag = "auth",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "MFA is off for the user (or was never on)"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `users:write` and everything the user's roles grant; only an owner resets an owner; nobody resets their own", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("users:write")]
async fn reset_mfa(
    State(auth): State<Auth>,
    principal: Principal,
    saas_core::http::Path(user): saas_core::http::Path<saas_core::id::UserId>,
) -> Result<axum::http::StatusCode> {
    auth.reset_mfa(&principal, user).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/api-keys` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewApiKey {
    /// A name for people, 1 to 100 characters.
    #[schema(example = "CI deploys")]
    name: String,
    /// What the key may do; each must be a permission you have.
    #[schema(example = json!(["invoices:read"]))]
    permissions: Vec<String>,
    /// Days until it expires (1 to 3650); absent: never.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// A new API key: `key` is shown only in this answer.
#[derive(Debug, serde::Serialize, Deserialize, utoipa::ToSchema)]
struct CreatedApiKey {
    /// The key: send it as `Authorization: Bearer <key>`. Not shown again.
    key: String,
    /// Its listing.
    #[serde(flatten)]
    listing: ApiKeyView,
}

/// Creates an API key of the tenant, scoped to permissions you have.
#[utoipa::path(
    post, path = "/v1/auth/api-keys", tag = "auth",
    request_body = NewApiKey,
    responses(
        (status = 201, body = CreatedApiKey),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `api_keys:write`, and every permission granted", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("api_keys:write")]
async fn create_api_key(
    State(auth): State<Auth>,
    principal: Principal,
    Json(body): Json<NewApiKey>,
) -> Result<(axum::http::StatusCode, Json<CreatedApiKey>)> {
    // What the creator holds now, not what its (up to 15 min old) token says.
    let held = auth.current_permissions(&principal).await?;
    let expires_in = match body.expires_in_days {
        None => None,
        Some(days @ 1..=3650) => Some(std::time::Duration::from_secs(u64::from(days) * 86_400)),
        Some(_) => {
            return Err(saas_core::Error::validation([saas_core::error::FieldError::new(
                "expires_in_days",
                "out_of_range",
                "expected 1 to 3650",
            )]));
        }
    };
    let (key, listing) = auth
        .api_keys()
        .create(principal.tenant, principal.user, &held, &body.name, &body.permissions, expires_in)
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(CreatedApiKey { key, listing })))
}

/// The tenant's API keys (never their secrets).
#[utoipa::path(
    get, path = "/v1/auth/api-keys", tag = "auth",
    responses(
        (status = 200, body = Vec<ApiKeyView>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `api_keys:read`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("api_keys:read")]
async fn list_api_keys(State(auth): State<Auth>, principal: Principal) -> Result<Json<Vec<ApiKeyView>>> {
    Ok(Json(auth.api_keys().list(principal.tenant).await?))
}

/// Revokes an API key of the tenant.
#[utoipa::path(
    delete, path = "/v1/auth/api-keys/{id}", tag = "auth",
    params(("id" = String, Path, description = "Key id (`key_…`)")),
    responses(
        (status = 204, description = "Revoked: it stops at once on this server, within 30 s on the others"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `api_keys:write`", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("api_keys:write")]
async fn revoke_api_key(
    State(auth): State<Auth>,
    principal: Principal,
    saas_core::http::Path(id): saas_core::http::Path<String>,
) -> Result<axum::http::StatusCode> {
    auth.api_keys().revoke(principal.tenant, &id, principal.user).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/password` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    /// The password now.
    #[schema(value_type = String, format = Password)]
    current_password: SecretString,
    /// The new password, 8 characters to 1024 bytes.
    #[schema(value_type = String, format = Password)]
    new_password: SecretString,
}

/// What a password change did.
#[derive(Debug, serde::Serialize, Deserialize, utoipa::ToSchema)]
struct PasswordChanged {
    /// How many other sessions were signed out.
    other_sessions_signed_out: u64,
}

/// Changes the signed-in user's password and signs out their other sessions.
#[utoipa::path(
    post, path = "/v1/auth/password", tag = "auth",
    request_body = PasswordChange,
    responses(
        (status = 200, body = PasswordChanged),
        (status = 401, description = "Not signed in, or the current password is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The new password is too short or too long", body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn change_password(
    State(auth): State<Auth>,
    principal: Principal,
    ClientAddress(client): ClientAddress,
    Json(body): Json<PasswordChange>,
) -> Result<Json<PasswordChanged>> {
    let signed_out =
        auth.change_password(&principal, &body.current_password, &body.new_password, client.as_deref()).await?;
    Ok(Json(PasswordChanged { other_sessions_signed_out: signed_out }))
}

/// Starts MFA enrolment: a TOTP secret, as text, `otpauth://` URI and SVG QR code.
#[utoipa::path(
    post, path = "/v1/auth/mfa/enroll", tag = "auth",
    responses(
        (status = 200, body = Enrolment),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA is on already", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn enroll_mfa(State(auth): State<Auth>, principal: Principal) -> Result<Json<Enrolment>> {
    Ok(Json(auth.enroll_mfa(&principal).await?))
}

/// A TOTP code (six digits), or at `/v1/auth/mfa/verify` a recovery code.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MfaCode {
    /// The code.
    #[schema(example = "123456")]
    code: String,
}

/// The recovery codes, shown once.
#[derive(Debug, serde::Serialize, Deserialize, utoipa::ToSchema)]
struct RecoveryCodes {
    /// Ten single-use codes for when the authenticator is lost.
    recovery_codes: Vec<String>,
}

/// Confirms enrolment with a first code: MFA is on.
#[utoipa::path(
    post, path = "/v1/auth/mfa/confirm", tag = "auth",
    request_body = MfaCode,
    responses(
        (status = 200, body = RecoveryCodes),
        (status = 401, description = "Not signed in, or `invalid_mfa_code`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enrolled, or on already", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn confirm_mfa(
    State(auth): State<Auth>,
    principal: Principal,
    Json(body): Json<MfaCode>,
) -> Result<Json<RecoveryCodes>> {
    Ok(Json(RecoveryCodes { recovery_codes: auth.confirm_mfa(&principal, &body.code).await? }))
}

/// `POST /v1/auth/mfa/verify` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MfaAnswer {
    /// The `mfa_token` of the login.
    mfa_token: String,
    /// A TOTP code, or a recovery code.
    code: String,
}

/// Answers the login's MFA challenge: tokens.
#[utoipa::path(
    post, path = "/v1/auth/mfa/verify", tag = "auth",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug (or use the subdomain or `/t/{tenant}` prefix)")),
    request_body = MfaAnswer,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "`invalid_mfa_token` or `invalid_mfa_code` (sign in again)", body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn verify_mfa(
    State(auth): State<Auth>,
    tenant: TenantContext,
    ClientAddress(client): ClientAddress,
    Json(body): Json<MfaAnswer>,
) -> Result<Json<TokenResponse>> {
    Ok(Json(auth.verify_mfa(&tenant, &body.mfa_token, &body.code, client.as_deref()).await?))
}

/// Sends the signed-in user a code proving their e-mail address.
#[utoipa::path(
    post, path = "/v1/auth/email/verification", tag = "auth",
    responses(
        (status = 202, description = "Sent"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn request_email_verification(State(auth): State<Auth>, principal: Principal) -> Result<axum::http::StatusCode> {
    auth.request_email_verification(&principal).await?;
    Ok(axum::http::StatusCode::ACCEPTED)
}

/// A code sent by e-mail.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EmailCode {
    /// The `emt_…` code from the message.
    token: String,
}

/// Proves an e-mail address with the code sent to it.
#[utoipa::path(
    post, path = "/v1/auth/email/verify", tag = "auth",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug (or use the subdomain or `/t/{tenant}` prefix)")),
    request_body = EmailCode,
    responses(
        (status = 204, description = "Verified"),
        (status = 400, description = "`invalid_email_token`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn verify_email(
    State(auth): State<Auth>,
    tenant: TenantContext,
    Json(body): Json<EmailCode>,
) -> Result<axum::http::StatusCode> {
    auth.verify_email(tenant.id, &body.token).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/password/reset-request` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    /// The account's e-mail address.
    email: String,
}

/// Sends a password-reset code if the address is an account of the tenant; answers 202
/// either way.
#[utoipa::path(
    post, path = "/v1/auth/password/reset-request", tag = "auth",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug (or use the subdomain or `/t/{tenant}` prefix)")),
    request_body = ResetRequest,
    responses((status = 202, description = "Sent if the account exists"))
)]
async fn request_password_reset(
    State(auth): State<Auth>,
    tenant: TenantContext,
    Json(body): Json<ResetRequest>,
) -> Result<axum::http::StatusCode> {
    auth.request_password_reset(tenant.id, &body.email).await?;
    Ok(axum::http::StatusCode::ACCEPTED)
}

/// `POST /v1/auth/password/reset` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordReset {
    /// The `emt_…` code from the message.
    token: String,
    /// The new password.
    #[schema(value_type = String, format = Password)]
    new_password: SecretString,
}

/// Sets a new password with a reset code; every session of the user is signed out.
#[utoipa::path(
    post, path = "/v1/auth/password/reset", tag = "auth",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant id or slug (or use the subdomain or `/t/{tenant}` prefix)")),
    request_body = PasswordReset,
    responses(
        (status = 204, description = "Password set"),
        (status = 400, description = "`invalid_email_token`", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn reset_password(
    State(auth): State<Auth>,
    tenant: TenantContext,
    Json(body): Json<PasswordReset>,
) -> Result<axum::http::StatusCode> {
    auth.reset_password(tenant.id, &body.token, &body.new_password).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Turns MFA off, proven with a current code (TOTP or recovery).
#[utoipa::path(
    post, path = "/v1/auth/mfa/disable", tag = "auth",
    request_body = MfaCode,
    responses(
        (status = 204, description = "MFA is off"),
        (status = 401, description = "Not signed in, or `invalid_mfa_code`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA is not on", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn disable_mfa(
    State(auth): State<Auth>,
    principal: Principal,
    Json(body): Json<MfaCode>,
) -> Result<axum::http::StatusCode> {
    auth.disable_mfa(&principal, &body.code).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Verifies the tenant's audit chain from its first entry: whether it is intact and, if not,
/// the first entry that is altered or missing. Reads the whole chain: poll it rarely.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    responses(
        (status = 200, body = crate::audit::ChainReport),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `audit:inspect` (owners and admins; `*:read` does not grant it)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("audit:inspect")]
async fn verify_audit(State(auth): State<Auth>, principal: Principal) -> Result<Json<crate::audit::ChainReport>> {
    Ok(Json(auth.audit().verify(Some(principal.tenant)).await?))
}

/// Lists the tenant's audit entries, oldest first.
#[utoipa::path(
    get, path = "/v1/audit/entries", tag = "audit",
    params(saas_core::page::PageQuery),
    responses(
        (status = 200, body = saas_core::page::Page<crate::audit::AuditEntry>),
        (status = 400, description = "`invalid_cursor`", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs `audit:inspect`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit` out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
#[saas_macros::require_permission("audit:inspect")]
async fn list_audit_entries(
    State(auth): State<Auth>,
    principal: Principal,
    saas_core::http::Query(page): saas_core::http::Query<saas_core::page::PageQuery>,
) -> Result<Json<saas_core::page::Page<crate::audit::AuditEntry>>> {
    let limit = page.limit()?;
    let after = match page.after()? {
        None => 0,
        Some(seq) => seq.parse::<i64>().map_err(|_| {
            saas_core::error::Error::bad_request("invalid_cursor", "`cursor` must be a `next_cursor` this API returned")
        })?,
    };
    let entries = auth.audit().entries(principal.tenant, after, limit + 1).await?;
    Ok(Json(saas_core::page::Page::from_overfetch(entries, limit, |e| e.seq.to_string())))
}
