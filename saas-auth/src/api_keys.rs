//! API keys: per tenant, scoped to permissions, shown once, stored as a hash.
//!
//! A key reads `sak_<tenant id>_<secret>`: recognisable by secret scanners, and carrying
//! its tenant so it can be looked up under row-level security. Only the SHA-256 of the
//! secret is stored. A key grants the permissions it was created with, as far as its
//! creator still holds them (a demoted or deleted creator takes them from the key), until it
//! expires or is revoked; `Authorization: Bearer sak_…` makes it
//! the request's [`Principal`]. Verified keys are cached for
//! [`KEY_CACHE_SECS`], which bounds how long a revoked key keeps working on other servers
//! (on the server that revoked it, it stops at once).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use saas_core::{
    cache::{CredentialCache, LocalCache},
    db::{Db, now_millis},
    error::{Error, FieldError, Result},
    events::{Envelope, outbox},
    id::{TenantId, UserId},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{keys::random, principal::Principal, rbac};

/// Seconds a verified key is trusted without reading it again.
pub const KEY_CACHE_SECS: u64 = 30;

/// An API key as listed (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    /// The key's id.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// The start of the key, to recognise it.
    pub prefix: String,
    /// What it may do.
    pub permissions: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; `null`: never.
    pub expires_at: Option<i64>,
    /// Unix milliseconds of the last use (updated at most once a minute); `null`: never used.
    pub last_used_at: Option<i64>,
    /// Unix milliseconds; `null` while valid.
    pub revoked_at: Option<i64>,
}

/// API keys of all tenants; cheap to clone.
#[derive(Clone)]
pub struct ApiKeys {
    db: Db,
    /// Verified keys (found by the whole key, which is short).
    verified: Arc<CredentialCache<VerifiedKey>>,
    /// Keys whose last use was written within the last minute.
    last_used_written: Arc<LocalCache<String, ()>>,
    /// Bumped by every revocation: a verification that began before one must not cache.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

/// Far above a real key's length (`sak_`, a 30-character tenant id, `_`, 43 characters):
/// nothing longer is hashed.
const MAX_KEY_BYTES: usize = 204;

/// A verified key's principal and expiry (Unix ms).
type VerifiedKey = (Arc<Principal>, Option<i64>);

/// id, created_by, permissions, name, expires_at, revoked_at.
type KeyRow = (String, String, String, String, Option<i64>, Option<i64>);
/// id, name, prefix, permissions, created_at, expires_at, last_used_at, revoked_at.
type ListRow = (String, String, String, String, i64, Option<i64>, Option<i64>, Option<i64>);

impl ApiKeys {
    /// Keys stored in `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            verified: Arc::new(CredentialCache::new(100_000, Duration::from_secs(KEY_CACHE_SECS))),
            last_used_written: Arc::new(LocalCache::new(100_000, Duration::from_secs(60))),
            generation: Default::default(),
        }
    }

    /// Creates a key of `tenant` for `creator`, granting `permissions` (each must be covered
    /// by `creator_permissions`), expiring after `expires_in` if given. Returns the key,
    /// which is never shown again, and its listing.
    pub async fn create(
        &self,
        tenant: TenantId,
        creator: UserId,
        creator_permissions: &[String],
        name: &str,
        permissions: &[String],
        expires_in: Option<Duration>,
    ) -> Result<(String, ApiKeyView)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::validation([FieldError::new("name", "length", "expected 1 to 100 characters")]));
        }
        if permissions.is_empty() || permissions.len() > 100 {
            return Err(Error::validation([FieldError::new("permissions", "length", "expected 1 to 100 permissions")]));
        }
        for (i, permission) in permissions.iter().enumerate() {
            if !rbac::is_valid_grant(permission) {
                return Err(Error::validation([FieldError::new(
                    format!("permissions[{i}]"),
                    "format",
                    "expected `resource:action`",
                )]));
            }
            // A key never grants more than its creator has.
            if !rbac::covers_all(creator_permissions, permission) {
                return Err(Error::forbidden(
                    "permission_denied",
                    format!("you cannot grant `{permission}`: you do not have it"),
                ));
            }
        }
        let secret = URL_SAFE_NO_PAD.encode(random::<32>()?);
        let key = format!("sak_{tenant}_{secret}");
        let now = now_millis();
        let view = ApiKeyView {
            id: format!("key_{}", URL_SAFE_NO_PAD.encode(random::<12>()?)),
            name: name.to_owned(),
            prefix: key[..key.len().min(16 + 26)].chars().take(38).collect(),
            permissions: permissions.to_vec(),
            created_at: now,
            expires_at: expires_in.map(|d| now + d.as_millis() as i64),
            last_used_at: None,
            revoked_at: None,
        };
        let mut tx = self.db.tenant_tx(tenant).await?;
        sqlx::query(
            "INSERT INTO auth_api_keys (tenant_id, id, name, prefix, token_hash, permissions, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant.to_string())
        .bind(&view.id)
        .bind(&view.name)
        .bind(&view.prefix)
        .bind(hash(&secret))
        .bind(permissions.join(","))
        .bind(creator.to_string())
        .bind(now)
        .bind(view.expires_at)
        .execute(&mut *tx)
        .await?;
        let event = Envelope::of(&crate::events::ApiKeyCreated {
            tenant_id: tenant,
            key_id: view.id.clone(),
            name: view.name.clone(),
            permissions: view.permissions.clone(),
            created_by: creator,
            expires_at: view.expires_at,
        })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        Ok((key, view))
    }

    /// The principal a key stands for when it was verified within the cache's time and has
    /// not expired; `None` when it must be verified (or is invalid). Never waits: for
    /// deciding a request at once. `key` may be any bytes (the header's, unchecked): only a
    /// key verified before is found, compared in constant time (see [`CredentialCache`]),
    /// so the lookup leaks nothing about it.
    pub fn verify_cached(&self, key: impl AsRef<[u8]>) -> Option<Arc<Principal>> {
        let key = key.as_ref();
        if key.len() > MAX_KEY_BYTES {
            return None;
        }
        let at = saas_core::observe::request::arrival_or_now();
        let (principal, expires_at) = self.verified.read_at(key, key, at, VerifiedKey::clone)?;
        expires_at.is_none_or(|e| e > now_millis()).then_some(principal)
    }

    /// The principal a key stands for, or `None` for an unknown, expired or revoked key.
    pub async fn verify(&self, key: &str) -> Result<Option<Arc<Principal>>> {
        let Some((tenant, secret)) = parse(key) else { return Ok(None) };
        let now = now_millis();
        let found = self.verified.read_at(key.as_bytes(), key.as_bytes(), Instant::now(), VerifiedKey::clone);
        if let Some((principal, expires_at)) = found {
            if expires_at.is_none_or(|e| e > now) {
                return Ok(Some(principal));
            }
            self.verified.invalidate(key.as_bytes());
            return Ok(None);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut tx = self.db.tenant_tx(tenant).await?;
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT id, created_by, permissions, name, expires_at, revoked_at FROM auth_api_keys \
             WHERE tenant_id = $1 AND token_hash = $2",
        )
        .bind(tenant.to_string())
        .bind(hash(secret))
        .fetch_optional(&mut *tx)
        .await?;
        let mut expiry = None;
        let principal = match row {
            Some((id, creator, permissions, _, expires_at, None)) if expires_at.is_none_or(|e| e > now) => {
                expiry = expires_at;
                if self.last_used_written.get(&id).is_none() {
                    sqlx::query("UPDATE auth_api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(&id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    self.last_used_written.insert(id.clone(), ());
                }
                // A key never does more than its creator can do now: a creator who lost a
                // permission (or the account) takes it from the key too.
                let roles: Option<String> =
                    sqlx::query_scalar("SELECT roles FROM users WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(&creator)
                        .fetch_optional(&mut *tx)
                        .await?;
                match roles {
                    None => None,
                    Some(roles) => {
                        let roles: Vec<String> =
                            roles.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect();
                        let held = rbac::permissions_of(&mut tx, &roles).await?;
                        let permissions: Arc<[String]> = permissions
                            .split(',')
                            .filter(|p| !p.is_empty() && rbac::covers_all(&held, p))
                            .map(str::to_owned)
                            .collect();
                        Some(Arc::new(Principal {
                            user: creator.parse().map_err(Error::internal)?,
                            tenant,
                            session: id.as_str().into(),
                            roles: Arc::new([]),
                            permissions,
                            api_key: Some(id.into()),
                        }))
                    }
                }
            }
            _ => None,
        };
        tx.commit().await?;
        // The expiry is checked on every cache hit, so an expiring key stops on time.
        if let Some(principal) = &principal {
            if self.generation.load(std::sync::atomic::Ordering::Acquire) == generation {
                self.verified.insert(key.as_bytes(), key.as_bytes(), (principal.clone(), expiry));
            }
        }
        Ok(principal)
    }

    /// The keys of `tenant`, newest first.
    pub async fn list(&self, tenant: TenantId) -> Result<Vec<ApiKeyView>> {
        let mut tx = self.db.tenant_read(tenant).await?;
        let rows: Vec<ListRow> = sqlx::query_as(
            "SELECT id, name, prefix, permissions, created_at, expires_at, last_used_at, revoked_at FROM auth_api_keys \
             WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 1000",
        )
        .bind(tenant.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, prefix, permissions, created_at, expires_at, last_used_at, revoked_at)| ApiKeyView {
                id,
                name,
                prefix,
                permissions: permissions.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect(),
                created_at,
                expires_at,
                last_used_at,
                revoked_at,
            })
            .collect())
    }

    /// Revokes key `id` of `tenant` on behalf of `by`; 404 `api_key_not_found` when there
    /// is none.
    pub async fn revoke(&self, tenant: TenantId, id: &str, by: UserId) -> Result<()> {
        let mut tx = self.db.tenant_tx(tenant).await?;
        let done = sqlx::query(
            "UPDATE auth_api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant.to_string())
        .bind(id)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("api_key_not_found", "no such active API key"));
        }
        let event =
            Envelope::of(&crate::events::ApiKeyRevoked { tenant_id: tenant, key_id: id.to_owned(), revoked_by: by })?;
        outbox::append(&mut tx, &event).await?;
        tx.commit().await?;
        // This server forgets it at once; the others within KEY_CACHE_SECS.
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.verified.clear();
        Ok(())
    }
}

/// `sak_<tenant id>_<secret>` → (tenant, secret).
fn parse(key: &str) -> Option<(TenantId, &str)> {
    if key.len() > MAX_KEY_BYTES {
        return None;
    }
    let rest = key.strip_prefix("sak_")?;
    // The tenant id is `ten_` and 26 characters.
    let (tenant, secret) = (rest.get(..30)?, rest.get(30..)?.strip_prefix('_')?);
    Some((tenant.parse().ok()?, secret))
}

fn hash(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}
