//! Sessions and refresh tokens.
//!
//! A login opens a session and hands out a refresh token: opaque (`srt_` and 32 random
//! bytes), stored only as its SHA-256, living `auth.refresh_token_ttl_secs`. Every refresh
//! uses the token up and hands out a new one in the same session. A token used again within
//! `auth.refresh_reuse_grace_secs` (two concurrent refreshes of one client) still works; used
//! again later, it has been stolen or replayed, and the whole session is revoked.
//!
//! A revoked session's access tokens stop working: on the server that revoked it at once,
//! on the others within `auth.session_check_secs` (each server re-checks a session that often).

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use saas_core::{
    db::{Db, TenantTx, now_millis},
    error::{Error, Result},
    events::{Envelope, outbox},
    id::{TenantId, UserId},
};
use sha2::{Digest, Sha256};

use crate::{events, keys::random};

/// What a refresh resolved to: whose session it is, and its new refresh token.
#[derive(Debug)]
pub struct Refreshed {
    /// The session's user.
    pub user: UserId,
    /// The session.
    pub session: String,
    /// The new refresh token.
    pub refresh_token: String,
}

/// Sessions of all tenants; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    db: Db,
    refresh_ttl: Duration,
    grace: Duration,
    /// Whether a session is revoked, as last read.
    revoked: moka::sync::Cache<(TenantId, Arc<str>), bool>,
}

impl Sessions {
    /// Sessions in `db`; refresh tokens live `refresh_ttl`, may be reused within `grace`;
    /// revocations by other servers are seen within `check`.
    pub fn new(db: Db, refresh_ttl: Duration, grace: Duration, check: Duration) -> Self {
        Self {
            db,
            refresh_ttl,
            grace,
            revoked: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(check).build(),
        }
    }

    /// Seconds a refresh token lives.
    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// Opens a session for `user` in `tx` and returns its id and first refresh token.
    pub async fn open(&self, tx: &mut TenantTx, user: UserId) -> Result<(String, String)> {
        let session = format!("ses_{}", URL_SAFE_NO_PAD.encode(random::<16>()?));
        sqlx::query("INSERT INTO auth_sessions (tenant_id, id, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tx.tenant().to_string())
            .bind(&session)
            .bind(user.to_string())
            .bind(now_millis())
            .execute(&mut **tx)
            .await?;
        let refresh = self.issue_refresh(tx, &session).await?;
        Ok((session, refresh))
    }

    async fn issue_refresh(&self, tx: &mut TenantTx, session: &str) -> Result<String> {
        let token = format!("srt_{}", URL_SAFE_NO_PAD.encode(random::<32>()?));
        let now = now_millis();
        sqlx::query(
            "INSERT INTO auth_refresh_tokens (tenant_id, id, session_id, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tx.tenant().to_string())
        .bind(URL_SAFE_NO_PAD.encode(random::<12>()?))
        .bind(session)
        .bind(hash(&token))
        .bind(now)
        .bind(now + self.refresh_ttl.as_millis() as i64)
        .execute(&mut **tx)
        .await?;
        Ok(token)
    }

    /// Uses `token` up for a new one in the same session; see the [module docs](self) for
    /// reuse. 401 `invalid_refresh_token` for an unknown, expired or revoked token or session,
    /// 401 `refresh_token_reused` when reuse revoked the session.
    pub async fn refresh(&self, tenant: TenantId, token: &str) -> Result<Refreshed> {
        let invalid =
            || Error::unauthorized("invalid_refresh_token", "the refresh token is invalid, expired or revoked");
        if !token.starts_with("srt_") || token.len() > 100 {
            return Err(invalid());
        }
        let now = now_millis();
        let mut tx = self.db.tenant_tx(tenant).await?;
        // Claim the token first: of two concurrent uses exactly one sees `used_at IS NULL`,
        // and writing first takes SQLite's write lock before any read (a read transaction
        // cannot be upgraded while another writes).
        let claimed = sqlx::query(
            "UPDATE auth_refresh_tokens SET used_at = $3 WHERE tenant_id = $1 AND token_hash = $2 AND used_at IS NULL",
        )
        .bind(tenant.to_string())
        .bind(hash(token))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let row: Option<RefreshRow> = sqlx::query_as(
            "SELECT r.session_id, s.user_id, r.expires_at, r.used_at, r.revoked_at, s.revoked_at \
             FROM auth_refresh_tokens r JOIN auth_sessions s ON s.tenant_id = r.tenant_id AND s.id = r.session_id \
             WHERE r.tenant_id = $1 AND r.token_hash = $2",
        )
        .bind(tenant.to_string())
        .bind(hash(token))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((session, user, expires_at, used_at, token_revoked, session_revoked)) = row else {
            return Err(invalid());
        };
        if expires_at <= now || token_revoked.is_some() || session_revoked.is_some() {
            return Err(invalid()); // the claim rolls back with the transaction
        }
        if !claimed && used_at.is_none_or(|used| now - used > self.grace.as_millis() as i64) {
            let user: UserId = user.parse().map_err(Error::internal)?;
            self.revoke_in(&mut tx, &session).await?;
            let event =
                Envelope::new(events::REFRESH_TOKEN_REUSED, Some(tenant), serde_json::json!({ "session": session }))
                    .with_subject(user.to_string());
            outbox::append(&mut tx, &event).await?;
            tx.commit().await?;
            self.revoked.insert((tenant, session.into()), true);
            tracing::warn!(tenant_id = %tenant, "a used refresh token was presented again; its session is revoked");
            return Err(Error::unauthorized(
                "refresh_token_reused",
                "this refresh token was used already; the session is revoked, sign in again",
            ));
        }
        let refresh_token = self.issue_refresh(&mut tx, &session).await?;
        tx.commit().await?;
        Ok(Refreshed { user: user.parse().map_err(Error::internal)?, session, refresh_token })
    }

    /// Revokes `session` of `tenant` and its refresh tokens.
    pub async fn revoke(&self, tenant: TenantId, session: &str) -> Result<()> {
        let mut tx = self.db.tenant_tx(tenant).await?;
        self.revoke_in(&mut tx, session).await?;
        tx.commit().await?;
        self.revoked.insert((tenant, session.into()), true);
        Ok(())
    }

    async fn revoke_in(&self, tx: &mut TenantTx, session: &str) -> Result<()> {
        let now = now_millis();
        for statement in [
            "UPDATE auth_sessions SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
            "UPDATE auth_refresh_tokens SET revoked_at = $3 WHERE tenant_id = $1 AND session_id = $2 AND revoked_at IS NULL",
        ] {
            sqlx::query(statement).bind(tx.tenant().to_string()).bind(session).bind(now).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Revokes every session of `user` but `keep` (after a password change), with their
    /// refresh tokens. Returns how many were revoked.
    pub async fn revoke_others(&self, tenant: TenantId, user: UserId, keep: &str) -> Result<u64> {
        let mut tx = self.db.tenant_tx(tenant).await?;
        let sessions: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM auth_sessions WHERE tenant_id = $1 AND user_id = $2 AND id <> $3 AND revoked_at IS NULL",
        )
        .bind(tenant.to_string())
        .bind(user.to_string())
        .bind(keep)
        .fetch_all(&mut *tx)
        .await?;
        for session in &sessions {
            self.revoke_in(&mut tx, session).await?;
        }
        tx.commit().await?;
        for session in &sessions {
            self.revoked.insert((tenant, session.as_str().into()), true);
        }
        Ok(sessions.len() as u64)
    }

    /// Whether `session` of `tenant` is revoked (or unknown), as read at most
    /// `auth.session_check_secs` ago.
    pub async fn is_revoked(&self, tenant: TenantId, session: &str) -> Result<bool> {
        let key = (tenant, Arc::<str>::from(session));
        if let Some(revoked) = self.revoked.get(&key) {
            return Ok(revoked);
        }
        let mut tx = self.db.tenant_tx(tenant).await?;
        let row: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM auth_sessions WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.to_string())
                .bind(session)
                .fetch_optional(&mut *tx)
                .await?;
        tx.rollback().await?;
        let revoked = !matches!(row, Some(None));
        // Only if absent: a revocation made meanwhile has written `true`, which a read that
        // began before it must not replace.
        let entry = self.revoked.entry(key).or_insert(revoked);
        Ok(*entry.value())
    }
}

/// A refresh token with its session: session id, user id, expires_at, used_at,
/// token revoked_at, session revoked_at.
type RefreshRow = (String, String, i64, Option<i64>, Option<i64>, Option<i64>);

fn hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}
