//! Sessions in the database (`auth_sessions`, `auth_refresh_tokens`), under row-level
//! security on PostgreSQL.

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use saas_core::{
    db::{Db, TenantTx, now_millis},
    error::{Error, Result},
    id::{TenantId, UserId},
};
use sqlx::AnyConnection;

use super::{Rotation, SessionStore, StoredRefresh};
use crate::keys::random;

/// Sessions in the database; the default store.
#[derive(Clone)]
pub struct SqlSessionStore {
    db: Db,
}

impl SqlSessionStore {
    /// Sessions in the tables of `db` (created by [`crate::MIGRATIONS`]).
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

async fn insert_refresh(
    conn: &mut AnyConnection,
    tenant: TenantId,
    session: &str,
    refresh: &StoredRefresh,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO auth_refresh_tokens (tenant_id, id, session_id, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.to_string())
    .bind(URL_SAFE_NO_PAD.encode(random::<12>()?))
    .bind(session)
    .bind(&refresh.hash)
    .bind(now_millis())
    .bind(refresh.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn revoke_in(tx: &mut TenantTx, session: &str) -> Result<bool> {
    let now = now_millis();
    let mut revoked = false;
    for statement in [
        "UPDATE auth_sessions SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        "UPDATE auth_refresh_tokens SET revoked_at = $3 WHERE tenant_id = $1 AND session_id = $2 AND revoked_at IS NULL",
    ] {
        let done =
            sqlx::query(statement).bind(tx.tenant().to_string()).bind(session).bind(now).execute(&mut **tx).await?;
        revoked = revoked || done.rows_affected() > 0;
    }
    Ok(revoked)
}

/// A refresh token with its session: session id, user id, expires_at, used_at,
/// token revoked_at, session revoked_at.
type RefreshRow = (String, String, i64, Option<i64>, Option<i64>, Option<i64>);

#[async_trait]
impl SessionStore for SqlSessionStore {
    async fn open(
        &self,
        conn: &mut AnyConnection,
        tenant: TenantId,
        session: &str,
        user: UserId,
        refresh: &StoredRefresh,
    ) -> Result<()> {
        sqlx::query("INSERT INTO auth_sessions (tenant_id, id, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.to_string())
            .bind(session)
            .bind(user.to_string())
            .bind(now_millis())
            .execute(&mut *conn)
            .await?;
        insert_refresh(conn, tenant, session, refresh).await
    }

    async fn rotate(
        &self,
        tenant: TenantId,
        used: &str,
        next: &StoredRefresh,
        now: i64,
        grace_ms: i64,
    ) -> Result<Rotation> {
        let mut tx = self.db.tenant_tx(tenant).await?;
        // Claim the token first: of two concurrent uses exactly one sees `used_at IS NULL`,
        // and writing first takes SQLite's write lock before any read (a read transaction
        // cannot be upgraded while another writes).
        let claimed = sqlx::query(
            "UPDATE auth_refresh_tokens SET used_at = $3 WHERE tenant_id = $1 AND token_hash = $2 AND used_at IS NULL",
        )
        .bind(tenant.to_string())
        .bind(used)
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
        .bind(used)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((session, user, expires_at, used_at, token_revoked, session_revoked)) = row else {
            return Ok(Rotation::Invalid);
        };
        if expires_at <= now || token_revoked.is_some() || session_revoked.is_some() {
            return Ok(Rotation::Invalid); // the claim rolls back with the transaction
        }
        let user: UserId = user.parse().map_err(Error::internal)?;
        if !claimed && used_at.is_none_or(|used| now - used > grace_ms) {
            revoke_in(&mut tx, &session).await?;
            tx.commit().await?;
            return Ok(Rotation::Reused { session, user });
        }
        insert_refresh(&mut tx, tenant, &session, next).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { session, user })
    }

    async fn revoke(&self, tenant: TenantId, session: &str) -> Result<bool> {
        let mut tx = self.db.tenant_tx(tenant).await?;
        let revoked = revoke_in(&mut tx, session).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn revoke_user(&self, tenant: TenantId, user: UserId, keep: &str) -> Result<Vec<String>> {
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
            revoke_in(&mut tx, session).await?;
        }
        tx.commit().await?;
        Ok(sessions)
    }

    async fn is_revoked(&self, tenant: TenantId, session: &str) -> Result<bool> {
        let mut tx = self.db.tenant_read(tenant).await?;
        let row: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM auth_sessions WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.to_string())
                .bind(session)
                .fetch_optional(&mut *tx)
                .await?;
        tx.rollback().await?;
        Ok(!matches!(row, Some(None)))
    }

    async fn erase_tenant(&self, conn: &mut AnyConnection, tenant: TenantId) -> Result<()> {
        for table in ["auth_refresh_tokens", "auth_sessions"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(tenant.to_string())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "sql"
    }
}
