//! Platform administration credentials: who may call `/v1/tenants`.
//!
//! A platform admin presents `Authorization: Bearer <token>`. Tokens come from
//! `saas admin bootstrap`, which stores only their SHA-256 and prints the token once, or
//! from the `tenancy.platform_admin_token` secret. Comparisons are constant-time.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::request::Parts;
use saas_core::{
    db::{Db, now_millis},
    error::{Error, Result},
    events::{Envelope, outbox},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of platform-admin tokens, so a leaked one is recognisable (e.g. by secret scanners).
pub const TOKEN_PREFIX: &str = "sap_";

/// Verifies platform-admin tokens.
#[derive(Clone)]
pub struct PlatformAdmins {
    db: Db,
    configured: Option<Arc<[u8; 32]>>,
}

impl PlatformAdmins {
    /// Tokens stored in `db`, plus `configured` (`tenancy.platform_admin_token`) if set.
    pub fn new(db: Db, configured: Option<&SecretString>) -> Self {
        Self { db, configured: configured.map(|t| Arc::new(digest(t.expose_secret()))) }
    }

    /// Creates a platform-admin token named `name` and returns it; only its hash is stored.
    /// Refuses when one exists already, unless `force`: bootstrapping is for the first admin.
    pub async fn bootstrap(&self, name: &str, force: bool) -> Result<SecretString> {
        let mut tx = self.db.begin().await?;
        let existing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM platform_admin_tokens").fetch_one(&mut *tx).await?;
        if existing > 0 && !force {
            return Err(Error::conflict(
                "already_bootstrapped",
                format!("{existing} platform-admin token(s) exist already; pass --force to add another"),
            ));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::internal(anyhow::anyhow!("no randomness: {e}")))?;
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        sqlx::query("INSERT INTO platform_admin_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(name)
            .bind(hex::encode(digest(&token)))
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        let event = Envelope::of(&crate::events::PlatformAdminTokenCreated { name: name.to_owned() })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(SecretString::from(token))
    }

    /// Whether `token` is a platform-admin token.
    pub async fn verify(&self, token: &str) -> Result<bool> {
        let given = digest(token);
        if let Some(configured) = &self.configured {
            if bool::from(given.ct_eq(configured.as_ref())) {
                return Ok(true);
            }
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(false);
        }
        // Looking up by hash leaks nothing useful through timing: finding a token from
        // partial matches of its SHA-256 is as hard as finding it outright.
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM platform_admin_tokens WHERE token_hash = $1")
            .bind(hex::encode(given))
            .fetch_optional(self.db.pool())
            .await?;
        Ok(found.is_some())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Extractor that lets only platform admins through; anyone else gets 401 `unauthorized`.
#[derive(Debug, Clone, Copy)]
pub struct PlatformAdmin;

impl<S> FromRequestParts<S> for PlatformAdmin
where
    S: Send + Sync,
    PlatformAdmins: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let denied = || Error::unauthorized("unauthorized", "a platform-admin bearer token is required");
        let token = saas_core::http::bearer_token(&parts.headers).filter(|t| t.len() <= 512).ok_or_else(denied)?;
        if PlatformAdmins::from_ref(state).verify(token).await? { Ok(PlatformAdmin) } else { Err(denied()) }
    }
}
