//! [`Auth`]: the identity service the routes and the server use.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use saas_core::{
    cache::{Cache, CacheExt},
    config::{Config, SessionStoreKind},
    db::{Db, TenantScoped},
    error::{Error, FieldError, Result},
    events::{Envelope, outbox},
    id::TenantId,
    tenant::TenantContext,
};
use saas_tenancy::{
    Tenant,
    signup::{OwnerRegistrar, OwnerSignup, PreparedOwner},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::{
    api_keys::ApiKeys,
    audit::AuditLog,
    email_tokens, events,
    keys::random,
    keys::{KeyEncryptionKey, SigningKeys},
    mail::{Email, FileMailer, Mailer},
    mfa,
    password::Passwords,
    principal::AuthLayer,
    principal::Principal,
    rbac,
    session::{SessionStore, Sessions, SqlSessionStore},
    throttle::LoginThrottle,
    token::AccessTokens,
    users::User,
};

/// A successful login.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The access token (JWT; EdDSA unless `auth.token_algorithm` says otherwise).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque refresh token: trade it at `POST /v1/auth/refresh` for new tokens (once).
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
}

/// Passwords, users, sessions and tokens; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    db: Db,
    passwords: Passwords,
    keys: SigningKeys,
    tokens: AccessTokens,
    sessions: Sessions,
    throttle: LoginThrottle,
    api_keys: ApiKeys,
    cache: Arc<dyn Cache>,
    issuer: Arc<str>,
    mailer: Arc<dyn Mailer>,
    audit: AuditLog,
}

/// What a correct password leads to: tokens, or (with MFA on) a challenge to answer with a
/// code at `POST /v1/auth/mfa/verify`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum LoginOutcome {
    /// Signed in.
    Tokens(TokenResponse),
    /// A code is needed.
    MfaRequired {
        /// Always `true`.
        mfa_required: bool,
        /// Answer it with a code within `expires_in` seconds; single use.
        mfa_token: String,
        /// Seconds the challenge stays open.
        expires_in: u64,
    },
}

/// Seconds an MFA challenge stays open.
const MFA_CHALLENGE_SECS: u64 = 300;

#[derive(Serialize, Deserialize)]
struct MfaChallenge {
    tenant: TenantId,
    user: saas_core::id::UserId,
}

impl Auth {
    /// The service of `config`: its argon2 parameters, token settings and key-encryption
    /// key (or the generated one in `<data_dir>/auth-kek`).
    pub async fn from_config(db: Db, cache: Arc<dyn Cache>, config: &Config) -> Result<Self> {
        let auth = &config.auth;
        let kek = match &auth.key_encryption_key {
            Some(key) => KeyEncryptionKey::from_base64(key.expose_secret())?,
            None => KeyEncryptionKey::load_or_create(&config.data_dir.join("auth-kek"))?,
        };
        let ttl = Duration::from_secs(auth.access_token_ttl_secs);
        let rotation = Duration::from_secs(auth.key_rotation_days * 24 * 3600);
        let keys = SigningKeys::load(db.clone(), kek, auth.token_algorithm, rotation, ttl).await?;
        let tokens = AccessTokens::new(keys.clone(), &auth.issuer, &auth.audience, ttl);
        let sessions = Sessions::new(
            session_store(&db, config).await?,
            db.clone(),
            Duration::from_secs(auth.refresh_token_ttl_secs),
            Duration::from_secs(auth.refresh_reuse_grace_secs),
            Duration::from_secs(auth.session_check_secs),
        );
        let throttle = LoginThrottle::new(cache.clone(), auth);
        let api_keys = ApiKeys::new(db.clone());
        let audit = AuditLog::new(db.clone(), keys.kek().audit_key());
        Ok(Self {
            audit,
            db,
            passwords: Passwords::new(auth)?,
            keys,
            tokens,
            sessions,
            throttle,
            api_keys,
            cache,
            issuer: auth.issuer.as_str().into(),
            mailer: Arc::new(FileMailer::new(config.data_dir.join("mail"))),
        })
    }

    /// Sends e-mail through `mailer` instead of files under `<data_dir>/mail`.
    pub fn with_mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.mailer = mailer;
        self
    }

    /// Sends the signed-in user a link (token) proving their e-mail address.
    pub async fn request_email_verification(&self, actor: &Principal) -> Result<()> {
        if actor.api_key.is_some() {
            return Err(Error::bad_request("not_a_session", "an API key has no e-mail address"));
        }
        let user = self.user(actor.tenant, actor.user).await?;
        let mut tx = self.db.tenant_tx(actor.tenant).await?;
        let token = email_tokens::issue(&mut tx, actor.tenant, user.id, email_tokens::Purpose::VerifyEmail).await?;
        tx.commit().await?;
        self.mailer.send(&verification_email(&user, &token)).await
    }

    /// Subscribes to `UserRegistered` (consumer group `saas-auth.email-verification`): each
    /// new user whose address is not proven yet gets the verification code at once, as
    /// `POST /v1/auth/email/verification` sends it. Once per user (the inbox); a failed send
    /// rolls back and is retried by the bus. The server subscribes unless
    /// `auth.send_verification_on_signup` is false.
    pub async fn send_verification_on_registration(
        &self,
        bus: &Arc<dyn saas_core::events::EventBus>,
    ) -> Result<saas_core::events::Subscription> {
        let group = "saas-auth.email-verification";
        let inbox = saas_core::events::Inbox::new(self.db.clone(), group);
        let auth = self.clone();
        let handler = move |event: Envelope| {
            let (inbox, auth) = (inbox.clone(), auth.clone());
            async move {
                let Some(registered) = event.decode::<events::UserRegistered>() else { return Ok(()) };
                let registered = registered.map_err(Error::into_cause)?;
                // Invited users prove their address with the invitation's code.
                if registered.invited_by.is_some() {
                    return Ok(());
                }
                let tenant = registered.tenant_id;
                let user = match auth.user(tenant, registered.user_id).await {
                    Ok(user) if user.email_verified_at.is_none() => user,
                    Ok(_) => return Ok(()), // proven already
                    Err(e) if e.status() == http::StatusCode::NOT_FOUND => return Ok(()), // deleted since
                    Err(e) => return Err(e.into_cause()), // the database: retried by the bus
                };
                let Some(mut tx) = inbox.begin(&event).await.map_err(Error::into_cause)? else { return Ok(()) };
                let token = email_tokens::issue(&mut tx, tenant, user.id, email_tokens::Purpose::VerifyEmail)
                    .await
                    .map_err(Error::into_cause)?;
                // Committed before sending: no write lock is held while the mail goes out.
                tx.commit().await?;
                if let Err(e) = auth.mailer.send(&verification_email(&user, &token)).await {
                    // Not sent: handle the event again on its next delivery (a new code).
                    inbox.forget(&event).await.map_err(Error::into_cause)?;
                    return Err(e.into_cause());
                }
                anyhow::Ok(())
            }
        };
        bus.subscribe(group, &["auth"], Arc::new(handler)).await
    }

    /// Marks the address of the token's user as proven.
    pub async fn verify_email(&self, tenant: TenantId, token: &str) -> Result<()> {
        let mut tx = self.db.tenant_tx(tenant).await?;
        let user = email_tokens::redeem(&mut tx, token, email_tokens::Purpose::VerifyEmail).await?;
        sqlx::query("UPDATE users SET email_verified_at = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .bind(saas_core::db::now_millis())
            .execute(&mut *tx)
            .await?;
        let event = Envelope::of(&events::EmailVerified { tenant_id: tenant, user_id: user })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await
    }

    /// Sends a password-reset code to `email` if it is an account of `tenant`; answers the
    /// same either way, so nothing tells whether the account exists.
    pub async fn request_password_reset(&self, tenant: TenantId, email: &str) -> Result<()> {
        let mut tx = self.db.tenant_tx(tenant).await?;
        let Some(user) = User::by_email(&mut tx, email).await? else { return Ok(()) };
        let token = email_tokens::issue(&mut tx, tenant, user.id, email_tokens::Purpose::ResetPassword).await?;
        tx.commit().await?;
        let text = format!(
            "Someone asked to reset your password. If it was you, use this code within an hour:\n\n{token}\n\nIf not, ignore this message.\n"
        );
        if let Err(e) = self.mailer.send(&Email { to: user.email, subject: "Reset your password".into(), text }).await {
            // Failing here would tell the caller the account exists.
            tracing::error!(error = %e.into_cause(), "cannot send a password-reset e-mail");
        }
        Ok(())
    }

    /// Sets a new password with a reset code, signs out every session of the user, and
    /// lifts the login throttle of the account.
    pub async fn reset_password(&self, tenant: TenantId, token: &str, new: &SecretString) -> Result<()> {
        Passwords::check_new(new).map_err(|e| {
            Error::validation(
                e.field_errors().iter().map(|f| FieldError::new("new_password", f.code.clone(), f.message.clone())),
            )
        })?;
        let hash = self.passwords.hash(new).await?;
        let mut tx = self.db.tenant_tx(tenant).await?;
        let user = email_tokens::redeem(&mut tx, token, email_tokens::Purpose::ResetPassword).await?;
        // The code came by e-mail: redeeming it proves the address too.
        sqlx::query(
            "UPDATE users SET password_hash = $3, email_verified_at = COALESCE(email_verified_at, $4) \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.to_string())
        .bind(user.to_string())
        .bind(hash)
        .bind(saas_core::db::now_millis())
        .execute(&mut *tx)
        .await?;
        let event = Envelope::of(&events::PasswordReset { tenant_id: tenant, user_id: user })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        self.sessions.revoke_others(tenant, user, "").await?;
        let email = self.user(tenant, user).await?.email;
        if let Err(e) = self.throttle.clear(tenant, &email).await {
            tracing::warn!(error = %e.into_cause(), "cannot clear the login throttle");
        }
        Ok(())
    }

    /// The signing keys.
    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// The audit log, its checkpoints signed under a key derived from the key-encryption key.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The password hasher.
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// The access tokens.
    pub fn tokens(&self) -> &AccessTokens {
        &self.tokens
    }

    /// The sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The layer that verifies bearer tokens (and that their session is not revoked).
    pub fn layer(&self) -> AuthLayer {
        AuthLayer::new(self.tokens.clone(), self.sessions.clone(), self.api_keys.clone())
    }

    /// The API keys.
    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    /// Creates a user of `tenant` with `password` (checked for length) and `roles`.
    pub async fn create_user(
        &self,
        tenant: TenantId,
        email: &str,
        name: Option<String>,
        password: &SecretString,
        roles: &[&str],
    ) -> Result<User> {
        Passwords::check_new(password)?;
        crate::users::normalise_email(email)?;
        let user = User::new(tenant, email, name, self.passwords.hash(password).await?, roles)?;
        let mut tx = self.db.tenant_tx(tenant).await?;
        insert_user(&mut tx, &user).await?;
        let event = Envelope::of(&registered(&user, None))?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Invites `email` to the actor's tenant with `roles`: creates the user without a usable
    /// password and mails a code (valid 7 days) to set one at `POST /v1/auth/password/reset`,
    /// which also proves the address. The actor needs `users:write` (checked by the route)
    /// and everything `roles` grant; only an owner invites an owner.
    pub async fn invite_user(
        &self,
        actor: &Principal,
        email: &str,
        name: Option<String>,
        roles: &[String],
    ) -> Result<User> {
        let tenant = actor.tenant;
        let defined = self.defined_roles(tenant, roles).await?;
        self.may_give_or_take(actor, &defined, roles.iter(), "give").await?;
        crate::users::normalise_email(email)?;
        // Nobody knows this password: the user sets one with the mailed code.
        let unusable = SecretString::from(base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            random::<32>()?,
        ));
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let user = User::new(tenant, email, name, self.passwords.hash(&unusable).await?, &roles)?;
        let mut tx = self.db.tenant_tx(tenant).await?;
        insert_user(&mut tx, &user).await?;
        let token = email_tokens::issue_for(
            &mut tx,
            tenant,
            user.id,
            email_tokens::Purpose::ResetPassword,
            email_tokens::INVITATION_MS,
        )
        .await?;
        let event = Envelope::of(&registered(&user, Some(actor.user)))?;
        outbox::append(&mut tx, &event).await?;
        // Sent before the commit: a user who cannot be told is not created.
        let text = format!(
            "You have been invited. Choose your password with this code (valid 7 days) at POST /v1/auth/password/reset:\n\n{token}\n"
        );
        self.mailer.send(&Email { to: user.email.clone(), subject: "You are invited".into(), text }).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// The permissions `roles` grant in `tenant`: built-in roles from code, custom ones from
    /// `auth_roles`.
    pub async fn permissions_of(&self, tenant: TenantId, roles: &[String]) -> Result<Vec<String>> {
        let mut tx = self.db.tenant_read(tenant).await?;
        let permissions = rbac::permissions_of(&mut tx, roles).await?;
        tx.rollback().await?;
        Ok(permissions)
    }

    /// What `actor` may grant now: a user's permissions as its roles stand in the database
    /// (not as its possibly older token says). API keys manage nothing.
    pub(crate) async fn current_permissions(&self, actor: &Principal) -> Result<Vec<String>> {
        if actor.api_key.is_some() {
            return Err(Error::forbidden("permission_denied", "API keys cannot manage roles, users or keys"));
        }
        let user = self.user(actor.tenant, actor.user).await?;
        self.permissions_of(actor.tenant, &user.role_list()).await
    }

    /// Defines (or redefines) the custom role `name` of the actor's tenant as granting
    /// `permissions`, each of which the actor must have itself (nobody grants more than they
    /// hold).
    pub async fn set_role(&self, actor: &Principal, name: &str, permissions: &[String]) -> Result<()> {
        let tenant = actor.tenant;
        let valid_name = (1..=40).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid_name || rbac::builtin_role(name).is_some() {
            return Err(Error::validation([FieldError::new(
                "name",
                "invalid",
                "expected 1 to 40 of a-z, 0-9, `_`, `-`, and not a built-in role (owner, admin, member)",
            )]));
        }
        if permissions.len() > rbac::MAX_ROLE_PERMISSIONS {
            return Err(Error::validation([FieldError::new(
                "permissions",
                "too_many",
                format!("at most {}", rbac::MAX_ROLE_PERMISSIONS),
            )]));
        }
        if let Some((i, bad)) = permissions.iter().enumerate().find(|(_, p)| !rbac::is_valid_grant(p)) {
            return Err(Error::validation([FieldError::new(
                format!("permissions[{i}]"),
                "format",
                format!("`{bad}` is not `resource:action` (either may be `*`)"),
            )]));
        }
        let held = self.current_permissions(actor).await?;
        if let Some(missing) = permissions.iter().find(|p| !rbac::covers_all(&held, p)) {
            return Err(Error::forbidden(
                "permission_denied",
                format!("you cannot grant `{missing}`: you do not have it"),
            ));
        }
        let mut tx = self.db.tenant_tx(tenant).await?;
        sqlx::query(
            "INSERT INTO auth_roles (tenant_id, name, permissions, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET permissions = excluded.permissions, updated_at = excluded.updated_at",
        )
        .bind(tenant.to_string())
        .bind(name)
        .bind(permissions.join(","))
        .bind(saas_core::db::now_millis())
        .execute(&mut *tx)
        .await?;
        let event = Envelope::of(&events::PermissionGranted {
            tenant_id: tenant,
            role: name.to_owned(),
            permissions: permissions.to_vec(),
        })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await
    }

    /// The roles of `tenant`: built-in and custom, with what they grant.
    pub async fn roles(&self, tenant: TenantId) -> Result<Vec<(String, Vec<String>)>> {
        let mut roles: Vec<(String, Vec<String>)> = ["owner", "admin", "member"]
            .iter()
            .map(|r| {
                ((*r).to_owned(), rbac::builtin_role(r).unwrap_or_default().iter().map(|p| (*p).to_owned()).collect())
            })
            .collect();
        let mut tx = self.db.tenant_read(tenant).await?;
        let custom: Vec<(String, String)> =
            sqlx::query_as("SELECT name, permissions FROM auth_roles WHERE tenant_id = $1 ORDER BY name")
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await?;
        tx.rollback().await?;
        roles.extend(
            custom.into_iter().map(|(n, p)| (n, p.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())),
        );
        Ok(roles)
    }

    /// Gives user `user` of the actor's tenant exactly `roles` (built-in or defined custom
    /// ones). The actor must hold every permission of each role it adds or removes; only an
    /// owner adds or removes `owner`, and the last owner keeps it.
    pub async fn assign_roles(&self, actor: &Principal, user: saas_core::id::UserId, roles: &[String]) -> Result<User> {
        let tenant = actor.tenant;
        let defined = self.defined_roles(tenant, roles).await?;
        let before = self.user(tenant, user).await?.role_list();
        let changed = roles.iter().filter(|r| !before.contains(r)).chain(before.iter().filter(|r| !roles.contains(r)));
        self.may_give_or_take(actor, &defined, changed, "give or take").await?;
        let mut tx = self.db.tenant_tx(tenant).await?;
        // Locked until the commit: the checks above hold for the roles this changes.
        let current: Option<String> = sqlx::query_scalar(&format!(
            "SELECT roles FROM users WHERE tenant_id = $1 AND id = $2{}",
            self.db.backend().for_update()
        ))
        .bind(tenant.to_string())
        .bind(user.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(current) = current else { return Err(Error::not_found("user_not_found", "no such user")) };
        if current != before.join(",") {
            return Err(Error::conflict(
                "roles_changed",
                "the user's roles changed meanwhile; read them again and retry",
            ));
        }
        if before.iter().any(|r| r == "owner") && !roles.iter().any(|r| r == "owner") {
            // Every owner row locked: two owners demoting each other at once cannot both pass.
            let holders: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT roles FROM users WHERE tenant_id = $1 AND roles LIKE '%owner%'{}",
                self.db.backend().for_update()
            ))
            .bind(tenant.to_string())
            .fetch_all(&mut *tx)
            .await?;
            let owners = holders.iter().filter(|r| r.split(',').any(|r| r == "owner")).count();
            if owners <= 1 {
                return Err(Error::conflict("last_owner", "the tenant's last owner keeps the owner role"));
            }
        }
        let done = sqlx::query("UPDATE users SET roles = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .bind(roles.join(","))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("user_not_found", "no such user"));
        }
        let event = Envelope::of(&events::RoleAssigned { tenant_id: tenant, user_id: user, roles: roles.to_vec() })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        self.user(tenant, user).await
    }

    /// The tenant's roles (name, permissions), after checking that `wanted` names at most
    /// [`rbac::MAX_USER_ROLES`] of them, all defined (422 otherwise).
    async fn defined_roles(&self, tenant: TenantId, wanted: &[String]) -> Result<Vec<(String, Vec<String>)>> {
        if wanted.len() > rbac::MAX_USER_ROLES {
            return Err(Error::validation([FieldError::new(
                "roles",
                "too_many",
                format!("at most {}", rbac::MAX_USER_ROLES),
            )]));
        }
        let defined = self.roles(tenant).await?;
        if let Some((i, bad)) = wanted.iter().enumerate().find(|(_, r)| !defined.iter().any(|(n, _)| n == *r)) {
            return Err(Error::validation([FieldError::new(
                format!("roles[{i}]"),
                "unknown",
                format!("no role `{bad}`"),
            )]));
        }
        Ok(defined)
    }

    /// Checks that `actor` holds everything each of `roles` grants (and is an owner, for
    /// `owner`): nobody gives, takes or overrides more than they hold themselves.
    async fn may_give_or_take(
        &self,
        actor: &Principal,
        defined: &[(String, Vec<String>)],
        roles: impl Iterator<Item = &String>,
        what: &str,
    ) -> Result<()> {
        let held = self.current_permissions(actor).await?;
        let actor_roles = self.user(actor.tenant, actor.user).await?.role_list();
        for role in roles {
            if role == "owner" && !actor_roles.iter().any(|r| r == "owner") {
                return Err(Error::forbidden("permission_denied", format!("only an owner may {what} an owner")));
            }
            let grants = defined.iter().find(|(n, _)| n == role).map(|(_, p)| p.clone()).unwrap_or_default();
            if let Some(missing) = grants.iter().find(|p| !rbac::covers_all(&held, p)) {
                return Err(Error::forbidden(
                    "permission_denied",
                    format!("you cannot {what} `{role}`: it grants `{missing}`, which you do not have"),
                ));
            }
        }
        Ok(())
    }

    /// Turns MFA off for another user of the tenant who lost their authenticator (and their
    /// recovery codes), and signs out all of their sessions. The actor needs `users:write`
    /// (checked by the route) and everything the user's roles grant; only an owner resets an
    /// owner, and nobody their own (that takes a code). Nothing to reset is not an error.
    pub async fn reset_mfa(&self, actor: &Principal, user: saas_core::id::UserId) -> Result<()> {
        let tenant = actor.tenant;
        if user == actor.user {
            // Otherwise a stolen session of an admin could drop the admin's second factor.
            return Err(Error::forbidden(
                "permission_denied",
                "turn your own MFA off with a current code: POST /v1/auth/mfa/disable",
            ));
        }
        let target = self.user(tenant, user).await?;
        let defined = self.roles(tenant).await?;
        self.may_give_or_take(actor, &defined, target.role_list().iter(), "reset the MFA of").await?;
        let mut tx = self.db.tenant_tx(tenant).await?;
        let removed = sqlx::query("DELETE FROM auth_mfa WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed > 0 {
            let event =
                Envelope::of(&events::MfaDisabled { tenant_id: tenant, user_id: user, reset_by: Some(actor.user) })?;
            outbox::append(&mut tx, &event).await?;
        }
        tx.commit().await?;
        self.sessions.revoke_others(tenant, user, "").await?;
        tracing::info!(tenant_id = %tenant, user_id = %user, by = %actor.user, "MFA reset by an administrator");
        Ok(())
    }

    /// Changes the signed-in user's password after checking the current one, and signs out
    /// every other session of the user (this one stays). A wrong current password is 401
    /// `invalid_credentials` and counts as a failed login.
    pub async fn change_password(
        &self,
        actor: &Principal,
        current: &SecretString,
        new: &SecretString,
        client: Option<&str>,
    ) -> Result<u64> {
        if actor.api_key.is_some() {
            return Err(Error::bad_request("not_a_session", "an API key has no password"));
        }
        Passwords::check_new(new).map_err(|e| {
            Error::validation(
                e.field_errors().iter().map(|f| FieldError::new("new_password", f.code.clone(), f.message.clone())),
            )
        })?;
        let user = self.user(actor.tenant, actor.user).await?;
        self.throttle.check(actor.tenant, &user.email, client).await?;
        if !self.passwords.verify(Some(&user.password_hash), current).await? {
            self.throttle.failed(actor.tenant, &user.email, client).await;
            return Err(Error::unauthorized("invalid_credentials", "the current password is wrong"));
        }
        let hash = self.passwords.hash(new).await?;
        let mut tx = self.db.tenant_tx(actor.tenant).await?;
        sqlx::query("UPDATE users SET password_hash = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(actor.tenant.to_string())
            .bind(actor.user.to_string())
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        let event = Envelope::of(&events::PasswordChanged { tenant_id: actor.tenant, user_id: actor.user })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        self.sessions.revoke_others(actor.tenant, actor.user, &actor.session).await
    }

    /// Lifts the login back-off or lock-out of `email` in `tenant` (platform admins).
    pub async fn unlock(&self, tenant: TenantId, email: &str) -> Result<()> {
        self.throttle.clear(tenant, email).await?;
        let mut tx = self.db.tenant_tx(tenant).await?;
        let event = Envelope::of(&events::AccountUnlocked { tenant_id: tenant, email: email.to_owned() })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await
    }

    /// Trades a refresh token for new tokens (see [`Sessions::refresh`]).
    pub async fn refresh(&self, tenant: &TenantContext, refresh_token: &str) -> Result<TokenResponse> {
        let refreshed = self.sessions.refresh(tenant.id, refresh_token).await?;
        let user = self.user(tenant.id, refreshed.user).await?;
        let permissions = self.permissions_of(tenant.id, &user.role_list()).await?;
        self.tokens_with(&user, &refreshed.session, refreshed.refresh_token, permissions).await
    }

    /// Ends the session `session` of `tenant`: its refresh tokens stop at once, its access
    /// tokens within `auth.session_check_secs` on other servers.
    pub async fn logout(&self, tenant: TenantId, user: saas_core::id::UserId, session: &str) -> Result<()> {
        self.sessions.revoke(tenant, session).await?;
        let mut tx = self.db.tenant_tx(tenant).await?;
        let event =
            Envelope::of(&events::UserSignedOut { tenant_id: tenant, user_id: user, session: session.to_owned() })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await
    }

    /// The tokens of `session`, the access token carrying `permissions`.
    async fn tokens_with(
        &self,
        user: &User,
        session: &str,
        refresh_token: String,
        permissions: Vec<String>,
    ) -> Result<TokenResponse> {
        let access_token = self.tokens.issue(user.id, user.tenant_id, session, user.role_list(), permissions).await?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: self.tokens.ttl().as_secs(),
            refresh_token,
            refresh_expires_in: self.sessions.refresh_ttl().as_secs(),
        })
    }

    /// Signs `email` in to `tenant`: a new session and its access token, or 401
    /// `invalid_credentials`, the same answer and about the same time whether the account
    /// exists or not.
    /// `client` is the caller's address, for the per-address throttle. Too many failures
    /// answer 429 `login_throttled` (see [`LoginThrottle`]).
    pub async fn login(
        &self,
        tenant: &TenantContext,
        email: &str,
        password: &SecretString,
        client: Option<&str>,
    ) -> Result<TokenResponse> {
        match self.begin_login(tenant, email, password, client).await? {
            LoginOutcome::Tokens(tokens) => Ok(tokens),
            LoginOutcome::MfaRequired { .. } => {
                Err(Error::unauthorized("mfa_required", "this account has MFA on: use begin_login and verify_mfa"))
            }
        }
    }

    /// Checks the password (as [`login`](Self::login)) and answers tokens, or, when the
    /// user has MFA on, a challenge for [`verify_mfa`](Self::verify_mfa).
    pub async fn begin_login(
        &self,
        tenant: &TenantContext,
        email: &str,
        password: &SecretString,
        client: Option<&str>,
    ) -> Result<LoginOutcome> {
        // Before any other work, the throttle's lookups too (four cache reads, Redis round
        // trips when the cache is Redis): under a flood, a refused login must cost next to
        // nothing.
        let slot = self.passwords.reserve()?;
        self.throttle.check(tenant.id, email, client).await?;
        // Whether MFA is on is read with the user, and told only once the password is right.
        let mut tx = self.db.tenant_read(tenant.id).await?;
        let user = User::by_email_with_mfa(&mut tx, email).await?;
        tx.rollback().await?;
        let matches = slot.verify(user.as_ref().map(|(u, _)| u.password_hash.as_str()), password).await?;
        let (user, mfa) = match (user, matches) {
            (Some(user), true) => user,
            _ => {
                self.throttle.failed(tenant.id, email, client).await;
                return Err(Error::unauthorized("invalid_credentials", "the e-mail address or the password is wrong"));
            }
        };
        if self.passwords.needs_rehash(&user.password_hash) {
            // Best effort: a busy hasher must not fail a login whose password was right.
            match self.passwords.hash(password).await {
                Ok(hash) => {
                    let mut tx = self.db.tenant_tx(tenant.id).await?;
                    sqlx::query("UPDATE users SET password_hash = $3 WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.id.to_string())
                        .bind(user.id.to_string())
                        .bind(hash)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
                Err(e) => tracing::info!(error = %e.into_cause(), "password re-hash put off to a later login"),
            }
        }
        if mfa {
            // The password was right, but the account's failures stay until the code is.
            use base64::Engine;
            let token = format!("mfa_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<24>()?));
            let challenge = MfaChallenge { tenant: tenant.id, user: user.id };
            self.cache
                .set_json(&format!("auth:mfa:{token}"), &challenge, Duration::from_secs(MFA_CHALLENGE_SECS))
                .await?;
            return Ok(LoginOutcome::MfaRequired {
                mfa_required: true,
                mfa_token: token,
                expires_in: MFA_CHALLENGE_SECS,
            });
        }
        if let Err(e) = self.throttle.clear(tenant.id, email).await {
            tracing::warn!(error = %e.into_cause(), "cannot clear the login throttle");
        }
        Ok(LoginOutcome::Tokens(self.open_session(&user).await?))
    }

    /// Answers an MFA challenge with a TOTP code or a recovery code: tokens, or 401
    /// `invalid_mfa_code` (counted as a failed login). The challenge is used up either way.
    pub async fn verify_mfa(
        &self,
        tenant: &TenantContext,
        mfa_token: &str,
        code: &str,
        client: Option<&str>,
    ) -> Result<TokenResponse> {
        let key = format!("auth:mfa:{mfa_token}");
        let challenge: Option<MfaChallenge> = match mfa_token.len() <= 64 && mfa_token.starts_with("mfa_") {
            true => self.cache.get_json(&key).await?,
            false => None,
        };
        let challenge = challenge.filter(|c| c.tenant == tenant.id).ok_or_else(|| {
            Error::unauthorized("invalid_mfa_token", "the MFA challenge is unknown or expired; sign in again")
        })?;
        self.cache.delete(&key).await?;
        let user = self.user(tenant.id, challenge.user).await?;
        self.throttle.check(tenant.id, &user.email, client).await?;
        let mut tx = self.db.tenant_tx(tenant.id).await?;
        match mfa::check(&mut tx, self.keys.kek(), user.id, code, false).await {
            Ok(_) => tx.commit().await?,
            Err(e) => {
                drop(tx);
                self.throttle.failed(tenant.id, &user.email, client).await;
                return Err(e);
            }
        }
        if let Err(e) = self.throttle.clear(tenant.id, &user.email).await {
            tracing::warn!(error = %e.into_cause(), "cannot clear the login throttle");
        }
        self.open_session(&user).await
    }

    /// Starts MFA enrolment for the signed-in user.
    pub async fn enroll_mfa(&self, actor: &Principal) -> Result<mfa::Enrolment> {
        if actor.api_key.is_some() {
            return Err(Error::bad_request("not_a_session", "API keys have no MFA"));
        }
        let user = self.user(actor.tenant, actor.user).await?;
        let mut tx = self.db.tenant_tx(actor.tenant).await?;
        let enrolment = mfa::enroll(&mut tx, self.keys.kek(), user.id, &self.issuer, &user.email).await?;
        tx.commit().await?;
        Ok(enrolment)
    }

    /// Confirms enrolment with a first code: MFA is on, and the 10 recovery codes are
    /// returned (shown once).
    pub async fn confirm_mfa(&self, actor: &Principal, code: &str) -> Result<Vec<String>> {
        let mut tx = self.db.tenant_tx(actor.tenant).await?;
        let codes = mfa::check(&mut tx, self.keys.kek(), actor.user, code, true).await?.unwrap_or_default();
        let event = Envelope::of(&events::MfaEnabled { tenant_id: actor.tenant, user_id: actor.user })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// Turns MFA off for the signed-in user, proven with a current code (TOTP or recovery).
    pub async fn disable_mfa(&self, actor: &Principal, code: &str) -> Result<()> {
        if actor.api_key.is_some() {
            return Err(Error::bad_request("not_a_session", "API keys have no MFA"));
        }
        let mut tx = self.db.tenant_tx(actor.tenant).await?;
        mfa::disable(&mut tx, self.keys.kek(), actor.user, code).await?;
        let event =
            Envelope::of(&events::MfaDisabled { tenant_id: actor.tenant, user_id: actor.user, reset_by: None })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await
    }

    /// Opens a session for `user`: its tokens.
    async fn open_session(&self, user: &User) -> Result<TokenResponse> {
        // One transaction: the session and its event commit together (with the SQL store),
        // and the permissions its token carries are read in it, after the writes (on SQLite
        // a transaction that reads first cannot take the write lock while another writes).
        let mut tx = self.db.tenant_tx(user.tenant_id).await?;
        let (session, refresh_token) = self.sessions.open(&mut tx, user.tenant_id, user.id).await?;
        let event = Envelope::of(&events::UserAuthenticated {
            tenant_id: user.tenant_id,
            user_id: user.id,
            session: session.clone(),
        })?;
        outbox::append(&mut tx, &event).await?;
        let permissions = rbac::permissions_of(&mut tx, &user.role_list()).await?;
        tx.commit().await?;
        self.tokens_with(user, &session, refresh_token, permissions).await
    }

    /// The user `id` of `tenant`.
    pub async fn user(&self, tenant: TenantId, id: saas_core::id::UserId) -> Result<User> {
        let mut tx = self.db.tenant_read(tenant).await?;
        let user = User::get(&mut tx, &id).await?;
        tx.rollback().await?;
        user.ok_or_else(|| Error::not_found("user_not_found", "no such user"))
    }

    /// What saas-tenancy's sign-up calls to create the tenant's first owner.
    pub fn owner_registrar(&self) -> Arc<dyn OwnerRegistrar> {
        Arc::new(self.clone())
    }
}

#[async_trait]
impl OwnerRegistrar for Auth {
    async fn prepare_owner(&self, owner: OwnerSignup) -> Result<PreparedOwner> {
        Passwords::check_new(&owner.password).map_err(|e| prefix_fields(e, "owner"))?;
        // The name and the address, checked in `User::new`'s order, before a hash is spent.
        let name = crate::users::normalise_name(owner.name).map_err(|e| prefix_fields(e, "owner"))?;
        let email = crate::users::normalise_email(&owner.email).map_err(|e| prefix_fields(e, "owner"))?;
        let password_hash = self.passwords.hash(&owner.password).await?;
        Ok(PreparedOwner { email, name, password_hash })
    }

    async fn register_owner(
        &self,
        conn: &mut AnyConnection,
        tenant: &Tenant,
        owner: PreparedOwner,
    ) -> Result<serde_json::Value> {
        let user = User::new(tenant.id, &owner.email, owner.name, owner.password_hash, &["owner"])?;
        // The sign-up transaction was begun without a tenant: bind it before writing the
        // tenant's first row, for row-level security.
        self.db.bind_tenant(conn, tenant.id).await?;
        User::insert_on(conn, tenant.id, &user).await?;
        let event = Envelope::of(&registered(&user, None))?;
        outbox::append(conn, &event).await?;
        serde_json::to_value(user.view()).map_err(Error::internal)
    }
}

/// Inserts a new user; 409 `email_taken` when the tenant has the address already.
async fn insert_user(tx: &mut saas_core::db::TenantTx, user: &User) -> Result<()> {
    match User::insert(tx, user).await {
        Err(e) if e.code() == "already_exists" => {
            Err(Error::conflict("email_taken", "a user of this tenant has this e-mail address"))
        }
        other => other,
    }
}

/// The event of a new user, invited by `invited_by` if anyone.
fn registered(user: &User, invited_by: Option<saas_core::id::UserId>) -> events::UserRegistered {
    events::UserRegistered {
        tenant_id: user.tenant_id,
        user_id: user.id,
        email: user.email.clone(),
        roles: user.role_list(),
        invited_by,
    }
}

/// The message carrying a verification code.
fn verification_email(user: &User, token: &str) -> Email {
    let text = format!("Confirm your e-mail address with this code (valid 24 hours):\n\n{token}\n");
    Email { to: user.email.clone(), subject: "Confirm your e-mail address".into(), text }
}

/// Names the fields of a validation error as members of `parent` (`owner.password`).
fn prefix_fields(error: Error, parent: &str) -> Error {
    if error.field_errors().is_empty() {
        return error;
    }
    Error::validation(
        error.field_errors().iter().map(|f| {
            saas_core::error::FieldError::new(format!("{parent}.{}", f.field), f.code.clone(), f.message.clone())
        }),
    )
}

/// The session store `auth.session_store` names.
async fn session_store(db: &Db, config: &Config) -> Result<Arc<dyn SessionStore>> {
    match config.auth.session_store {
        SessionStoreKind::Sql => Ok(Arc::new(SqlSessionStore::new(db.clone()))),
        #[cfg(feature = "redis")]
        SessionStoreKind::Redis => Ok(Arc::new(crate::session::RedisSessionStore::connect(&config.cache_url()).await?)),
        #[cfg(not(feature = "redis"))]
        SessionStoreKind::Redis => {
            Err(Error::internal(anyhow::anyhow!("auth.session_store = \"redis\" needs saas-auth's `redis` feature")))
        }
    }
}

/// Subscribes saas-auth to tenant deletions: erases the tenant's users, sessions (in
/// whichever store holds them), roles, API keys, MFA secrets and e-mail codes.
pub async fn erase_auth_rows(
    bus: &Arc<dyn saas_core::events::EventBus>,
    auth: &Auth,
) -> Result<saas_core::events::Subscription> {
    let sessions = auth.sessions.store().clone();
    saas_tenancy::purge::on_tenant_deleted(bus, auth.db.clone(), "saas-auth", move |conn, tenant| {
        let sessions = sessions.clone();
        Box::pin(async move {
            sessions.erase_tenant(conn, tenant).await?;
            for table in ["auth_api_keys", "auth_roles", "auth_mfa", "auth_email_tokens", "users"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                    .bind(tenant.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    })
    .await
}
